//! Driver behaviour beyond the shared suite: ID mappings while applying, overlay depth limits
//! (an image of 128 layers mounts, read-only and under a container layer), the overlay mount
//! methods (absolute, relative-path fallback, new mount API, too-large data), the syncfs path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Entry, Format, TarWriter, shm_tempdir};
use podstore_layer::{
    ApplyError, ApplyOptions, CreateOptions, Driver, DriverError, IdMap, IdMappings, MountMethod,
    MountOptions, Overlay, OverlayOptions, Vfs,
};

fn mappings() -> IdMappings {
    let range = vec![IdMap {
        container_id: 0,
        host_id: 100_000,
        size: 65_536,
    }];
    IdMappings {
        uid: range.clone(),
        gid: range,
    }
}

#[test]
fn owners_are_shifted_through_id_mappings() {
    let tmp = shm_tempdir();
    for driver in [
        Box::new(Vfs::new(tmp.path().join("vfs")).unwrap()) as Box<dyn Driver>,
        Box::new(Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap()),
    ] {
        let mut w = TarWriter::new(Format::Pax);
        w.add(Entry::dir("home/").owner(0, 0));
        w.add(Entry::file("home/user-file", b"x").owner(1000, 1001));
        w.add(Entry::symlink("home/link", "user-file").owner(5, 6));
        w.add(Entry::fifo("home/fifo").owner(7, 8));
        w.add(Entry::file("implicit/parent/file", b"y").owner(0, 0));
        w.add(Entry::file("home/.wh.gone", b"").owner(9, 9));
        let tar = w.finish();
        let id = "a".repeat(64);
        let create = CreateOptions {
            id_mappings: mappings(),
            ..Default::default()
        };
        driver.create(&id, None, &create).unwrap();
        let opts = ApplyOptions {
            id_mappings: mappings(),
            no_sync: true,
            ..ApplyOptions::default()
        };
        let report = driver
            .apply_diff(&id, None, &mut &tar[..], &mut Vec::new(), &opts)
            .unwrap();
        // the report keeps the IDs of the tar (before mapping), whiteouts excluded
        assert_eq!(
            report.uids.into_iter().collect::<Vec<_>>(),
            vec![0, 5, 7, 1000]
        );
        assert_eq!(
            report.gids.into_iter().collect::<Vec<_>>(),
            vec![0, 6, 8, 1001]
        );
        let root = driver.lookup_dirs(&id).unwrap().remove(0);
        let owner = |p: &str| {
            let m = std::fs::symlink_metadata(root.join(p)).unwrap();
            (m.uid(), m.gid())
        };
        assert_eq!(
            owner(""),
            (100_000, 100_000),
            "{}: layer root owned by the mapped root",
            driver.name()
        );
        assert_eq!(owner("home"), (100_000, 100_000));
        assert_eq!(owner("home/user-file"), (101_000, 101_001));
        assert_eq!(owner("home/link"), (100_005, 100_006));
        assert_eq!(owner("home/fifo"), (100_007, 100_008));
        assert_eq!(
            owner("implicit"),
            (100_000, 100_000),
            "implicit parents owned by the mapped root"
        );
        if driver.name() == "overlay" {
            assert_eq!(
                owner("home/gone"),
                (100_009, 100_009),
                "whiteout device chowned"
            );
        }

        // an owner outside the mapping is refused, naming the entry
        let mut w = TarWriter::new(Format::Pax);
        w.add(Entry::file("outside", b"x").owner(70_000, 0));
        let tar = w.finish();
        let id2 = "b".repeat(64);
        driver.create(&id2, None, &create).unwrap();
        let err = driver
            .apply_diff(&id2, None, &mut &tar[..], &mut Vec::new(), &opts)
            .unwrap_err();
        assert!(
            matches!(&err, DriverError::Apply { source: ApplyError::UnmappedId { entry, id: 70_000, .. }, .. } if entry == "outside"),
            "{err}"
        );
    }
}

fn one_file_layer(n: usize) -> Vec<u8> {
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::dir("layers/"));
    w.add(Entry::file(
        &format!("layers/{n:03}"),
        format!("{n}\n").as_bytes(),
    ));
    w.finish()
}

/// Creates `count` stacked one-file layers (layer n holds `layers/<n>`); returns the top ID.
fn stack_of_layers(overlay: &Overlay, count: usize) -> String {
    let mut parent: Option<String> = None;
    for n in 1..=count {
        let id = format!("{n:064x}");
        overlay
            .create(&id, parent.as_deref(), &CreateOptions::default())
            .unwrap();
        let tar = one_file_layer(n);
        overlay
            .apply_diff(
                &id,
                parent.as_deref(),
                &mut &tar[..],
                &mut Vec::new(),
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            )
            .unwrap();
        parent = Some(id);
    }
    parent.unwrap()
}

fn check_stack(root: &std::path::Path, count: usize) {
    for n in 1..=count {
        assert_eq!(
            std::fs::read_to_string(root.join(format!("layers/{n:03}"))).unwrap(),
            format!("{n}\n")
        );
    }
}

fn overlay_with(home: &std::path::Path, options: OverlayOptions) -> Overlay {
    Overlay::new(
        home,
        OverlayOptions {
            mountopt: "nodev".into(),
            ..options
        },
    )
    .unwrap()
}

#[test]
fn overlay_image_of_128_layers_mounts() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let overlay = overlay_with(&home, OverlayOptions::default());
    let top = stack_of_layers(&overlay, 128);
    assert_eq!(overlay.lower_entries(&top).unwrap().len(), 127);
    let cwd = std::env::current_dir().unwrap();

    // read-only: diff + 127 lowers; absolute data is well beyond a page, relative data fits
    let (merged, method) = overlay
        .mount_with_method(
            &top,
            &MountOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(method, MountMethod::Relative);
    check_stack(&merged, 128);
    overlay.unmount(&top).unwrap();

    // a container on top: 128 lowers + upper, still the relative fallback
    let ctr = "c".repeat(64);
    overlay
        .create(
            &ctr,
            Some(&top),
            &CreateOptions {
                read_write: true,
                ..Default::default()
            },
        )
        .unwrap();
    let (merged, method) = overlay
        .mount_with_method(&ctr, &MountOptions::default())
        .unwrap();
    assert_eq!(method, MountMethod::Relative);
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "process cwd unchanged"
    );
    check_stack(&merged, 128);
    std::fs::write(merged.join("layers/new"), "rw\n").unwrap();
    overlay.unmount(&ctr).unwrap();
    assert_eq!(
        std::fs::read_to_string(home.join(&ctr).join("diff/layers/new")).unwrap(),
        "rw\n"
    );

    // the same layers through the new mount API when forced
    let forced_new = overlay_with(
        &home,
        OverlayOptions {
            force_new_mount_api: true,
            ..Default::default()
        },
    );
    let (merged, method) = forced_new
        .mount_with_method(&ctr, &MountOptions::default())
        .unwrap();
    assert_eq!(method, MountMethod::NewApi);
    check_stack(&merged, 128);
    assert_eq!(
        std::fs::read_to_string(merged.join("layers/new")).unwrap(),
        "rw\n"
    );
    forced_new.unmount(&ctr).unwrap();

    // a huge label makes even the relative data reach a page: without the new mount API that
    // is containers/storage's "mount label too large"
    let huge_label = MountOptions {
        mount_label: Some(format!(
            "system_u:object_r:container_file_t:s0:{}",
            "c1,".repeat(200)
        )),
        ..Default::default()
    };
    let no_new_api = overlay_with(
        &home,
        OverlayOptions {
            disable_new_mount_api: true,
            ..Default::default()
        },
    );
    let err = no_new_api.mount_with_method(&ctr, &huge_label).unwrap_err();
    match &err {
        DriverError::MountDataTooLarge {
            id,
            length,
            page_size,
        } => {
            assert_eq!(id, &ctr);
            assert!(length >= page_size, "{length} < {page_size}");
        }
        other => panic!("expected MountDataTooLarge, got {other}"),
    }
    assert!(err.to_string().contains("mount label too large"), "{err}");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&home.join(&ctr).join("merged").display().to_string()),
        "nothing mounted"
    );
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "process cwd unchanged"
    );

    // one more layer would need 129 lowers
    let err = overlay
        .create(&"d".repeat(64), Some(&ctr), &CreateOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("max depth exceeded"), "{err}");
    assert!(
        !overlay.exists(&"d".repeat(64)),
        "failed create leaves nothing"
    );
}

#[test]
fn overlay_mount_methods_of_a_small_stack() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let overlay = overlay_with(&home, OverlayOptions::default());
    let top = stack_of_layers(&overlay, 3);
    let cwd = std::env::current_dir().unwrap();
    let ro = MountOptions {
        read_only: true,
        ..Default::default()
    };
    let table = [
        (OverlayOptions::default(), MountMethod::Absolute),
        (
            OverlayOptions {
                force_relative_mount: true,
                ..Default::default()
            },
            MountMethod::Relative,
        ),
        (
            OverlayOptions {
                force_new_mount_api: true,
                ..Default::default()
            },
            MountMethod::NewApi,
        ),
    ];
    for (options, expected) in table {
        let driver = overlay_with(&home, options);
        let (merged, method) = driver.mount_with_method(&top, &ro).unwrap();
        assert_eq!(method, expected);
        check_stack(&merged, 3);
        assert!(
            std::fs::write(merged.join("layers/x"), "x").is_err(),
            "{expected:?}: read-only"
        );
        driver.unmount(&top).unwrap();
        assert_eq!(std::env::current_dir().unwrap(), cwd, "{expected:?}: cwd");
    }
}

#[test]
fn overlay_relative_mounts_from_several_threads() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let overlay = overlay_with(
        &home,
        OverlayOptions {
            force_relative_mount: true,
            ..Default::default()
        },
    );
    let top = stack_of_layers(&overlay, 4);
    let containers: Vec<String> = (0..6).map(|n| format!("c{n:063x}")).collect();
    for ctr in &containers {
        overlay
            .create(
                ctr,
                Some(&top),
                &CreateOptions {
                    read_write: true,
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let cwd = std::env::current_dir().unwrap();
    std::thread::scope(|s| {
        for (n, ctr) in containers.iter().enumerate() {
            let overlay = &overlay;
            s.spawn(move || {
                let (merged, method) = overlay
                    .mount_with_method(ctr, &MountOptions::default())
                    .unwrap();
                assert_eq!(method, MountMethod::Relative);
                check_stack(&merged, 4);
                std::fs::write(merged.join("mine"), format!("{n}")).unwrap();
            });
        }
    });
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "process cwd unchanged"
    );
    for (n, ctr) in containers.iter().enumerate() {
        overlay.unmount(ctr).unwrap();
        assert_eq!(
            std::fs::read_to_string(home.join(ctr).join("diff/mine")).unwrap(),
            format!("{n}")
        );
    }
}

#[test]
fn apply_with_syncfs_and_missing_layers() {
    let tmp = shm_tempdir();
    let vfs = Vfs::new(tmp.path().join("vfs")).unwrap();
    let id = "f".repeat(64);
    let tar = one_file_layer(1);
    assert!(matches!(
        vfs.apply_diff(
            &id,
            None,
            &mut &tar[..],
            &mut Vec::new(),
            &ApplyOptions::default()
        ),
        Err(DriverError::NotFound { .. })
    ));
    vfs.create(&id, None, &CreateOptions::default()).unwrap();
    vfs.apply_diff(
        &id,
        None,
        &mut &tar[..],
        &mut Vec::new(),
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(vfs.size(&id).unwrap(), 2);
    assert!(matches!(
        vfs.create("../x", None, &CreateOptions::default()),
        Err(DriverError::InvalidId { .. })
    ));
}

#[test]
fn independent_overlay_layers_apply_in_parallel() {
    let tmp = shm_tempdir();
    let overlay = Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap();
    let ids: Vec<String> = (1..=4).map(|n| format!("{n:064x}")).collect();
    for id in &ids {
        overlay.create(id, None, &CreateOptions::default()).unwrap();
    }
    let driver: &dyn Driver = &overlay;
    std::thread::scope(|s| {
        for (n, id) in ids.iter().enumerate() {
            s.spawn(move || {
                let mut w = TarWriter::new(Format::Pax);
                for i in 0..200 {
                    w.add(Entry::file(
                        &format!("dir-{n}/file-{i}"),
                        format!("{n}:{i}\n").as_bytes(),
                    ));
                }
                let blob = common::gzip(&w.finish());
                let opts = ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                };
                driver
                    .apply_diff(id, None, &mut &blob[..], &mut Vec::new(), &opts)
                    .unwrap();
            });
        }
    });
    for (n, id) in ids.iter().enumerate() {
        let diff = overlay.lookup_dirs(id).unwrap().remove(0);
        assert_eq!(
            std::fs::read_dir(diff.join(format!("dir-{n}")))
                .unwrap()
                .count(),
            200
        );
        assert_eq!(
            std::fs::read_to_string(diff.join(format!("dir-{n}/file-7"))).unwrap(),
            format!("{n}:7\n")
        );
    }
}

#[test]
fn overlay_on_disk_with_sync() {
    // the same driver on the root filesystem (ext4 here), with the syncfs path enabled
    let tmp = tempfile::Builder::new()
        .prefix("podstore-layer-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let overlay = Overlay::new(
        tmp.path().join("overlay"),
        OverlayOptions {
            mountopt: "nodev".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let base = "1".repeat(64);
    let ctr = "2".repeat(64);
    overlay
        .create(&base, None, &CreateOptions::default())
        .unwrap();
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::dir("etc/"));
    w.add(Entry::file("etc/os-release", b"ID=podstore\n"));
    w.add(Entry::fifo("etc/fifo"));
    let tar = w.finish();
    overlay
        .apply_diff(
            &base,
            None,
            &mut &tar[..],
            &mut Vec::new(),
            &ApplyOptions::default(),
        )
        .unwrap();
    overlay
        .create(
            &ctr,
            Some(&base),
            &CreateOptions {
                read_write: true,
                ..Default::default()
            },
        )
        .unwrap();
    let merged = overlay.mount(&ctr, &MountOptions::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(merged.join("etc/os-release")).unwrap(),
        "ID=podstore\n"
    );
    std::fs::write(merged.join("etc/new"), "x").unwrap();
    std::fs::remove_file(merged.join("etc/fifo")).unwrap();
    overlay.unmount(&ctr).unwrap();
    let diff = overlay.lookup_dirs(&ctr).unwrap().remove(0);
    assert!(diff.join("etc/new").exists());
    let whiteout = std::fs::symlink_metadata(diff.join("etc/fifo")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_char_device(&whiteout.file_type()),
        "kernel whiteout"
    );
    overlay.remove(&ctr).unwrap();
    overlay.remove(&base).unwrap();
}
