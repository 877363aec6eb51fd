//! `Store::check` and `Store::repair` on real vfs and overlay stores: every kind of damage is
//! constructed, reported as a typed finding naming the record or path, repaired, and a second
//! check is clean; the valid image and container are untouched and podman and the
//! containers-storage CLI still read the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Scratch, TestImage, have, run, test_image};
use podstore_layer::MountOptions;
use podstore_metadata::{
    BigDataItem, CheckOptions, ContainerOptions, Finding, GoTime, ImageOptions, LayerOptions,
    NamesOp, RecordKind, Store,
};

fn options(blob_store: &Path) -> CheckOptions {
    CheckOptions {
        layer_contents: true,
        stale_after: Duration::ZERO,
        blob_stores: vec![blob_store.to_path_buf()],
    }
}

/// Creates `img` as containers/image commits it; returns its layer IDs.
fn add_image(store: &Store, img: &TestImage, name: &str) -> Vec<String> {
    let ids = img.layer_ids();
    for (i, l) in img.layers.iter().enumerate() {
        store
            .create_layer(
                LayerOptions {
                    id: Some(ids[i].clone()),
                    parent: i.checked_sub(1).map(|p| ids[p].clone()),
                    compressed_digest: Some(l.blob.clone()),
                    uncompressed_digest: Some(l.diff_id.clone()),
                    no_sync: true,
                    ..LayerOptions::default()
                },
                Some(&mut &l.gz[..]),
            )
            .unwrap();
    }
    store
        .create_image(ImageOptions {
            id: Some(img.id()),
            top_layer: Some(ids.last().unwrap().clone()),
            metadata: "{}".into(),
            created: Some(GoTime::parse("2023-11-14T22:13:20Z").unwrap()),
            big_data: vec![
                BigDataItem {
                    key: img.config_digest.to_string(),
                    data: img.config.clone(),
                    digest: None,
                },
                BigDataItem {
                    key: "manifest".into(),
                    data: img.manifest.clone(),
                    digest: Some(img.manifest_digest.clone()),
                },
            ],
            ..ImageOptions::default()
        })
        .unwrap();
    store
        .update_image_names(&img.id(), &[name.to_owned()], NamesOp::Add)
        .unwrap();
    ids
}

/// Rewrites a records file through a JSON edit (as a crash or a careless tool would leave it).
fn edit_records(path: &Path, edit: impl FnOnce(&mut Vec<serde_json::Value>)) {
    let mut records: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut records);
    fs::write(path, serde_json::to_vec(&records).unwrap()).unwrap();
}

fn layer_dir(scratch: &Scratch, id: &str) -> PathBuf {
    match scratch.driver {
        "vfs" => scratch.root().join("vfs/dir").join(id),
        _ => scratch.root().join("overlay").join(id),
    }
}

/// The file of the layer's own content at `rel` (vfs layers hold a full copy).
fn layer_file(scratch: &Scratch, id: &str, rel: &str) -> PathBuf {
    match scratch.driver {
        "vfs" => layer_dir(scratch, id).join(rel),
        _ => layer_dir(scratch, id).join("diff").join(rel),
    }
}

fn damage_is_reported_repaired_and_valid_records_survive(driver: &'static str) {
    let scratch = Scratch::new(driver);
    let store = scratch.open();
    let d = driver;
    let blob_store = scratch.root().join("podstore-blobs");

    // The valid part: image A and container CA on it (mounted, so repair must not unmount it).
    let image_a = test_image(&format!("{d}-a"));
    let layers_a = add_image(&store, &image_a, "localhost/a:latest");
    let ca = store
        .create_container(ContainerOptions {
            names: vec!["ca".into()],
            image: image_a.id(),
            metadata: "{}".into(),
            ..ContainerOptions::default()
        })
        .unwrap();
    store
        .set_container_big_data(&ca.id, "config.json", b"{\"valid\":true}")
        .unwrap();
    let ca_mount = store.mount(&ca.id, &MountOptions::default()).unwrap();
    let clean = store.check(&options(&blob_store)).unwrap();
    assert!(clean.is_clean(), "{:#?}", clean.findings);
    assert_eq!((clean.images, clean.containers), (1, 1));

    // B: its top layer's driver directory is gone.
    let image_b = test_image(&format!("{d}-b"));
    let layers_b = add_image(&store, &image_b, "localhost/b:latest");
    fs::remove_dir_all(layer_dir(&scratch, &layers_b[1])).unwrap();
    // C: a big-data file has the wrong length.
    let image_c = test_image(&format!("{d}-c"));
    add_image(&store, &image_c, "localhost/c:latest");
    let c_manifest = scratch
        .root()
        .join(format!("{d}-images"))
        .join(image_c.id())
        .join("manifest");
    fs::write(&c_manifest, b"{}").unwrap();
    // D: a file of its top layer was changed in place (same length, other bytes).
    let image_d = test_image(&format!("{d}-d"));
    let layers_d = add_image(&store, &image_d, "localhost/d:latest");
    fs::write(layer_file(&scratch, &layers_d[1], "data/x"), b"yy").unwrap();
    // E: its top layer's record is gone (data left behind).
    let image_e = test_image(&format!("{d}-e"));
    let layers_e = add_image(&store, &image_e, "localhost/e:latest");
    let layers_json = scratch.root().join(format!("{d}-layers/layers.json"));
    // An unreferenced read-write layer (what a SIGKILL during create leaves).
    let (rw_orphan, _) = store
        .create_layer(
            LayerOptions {
                parent: Some(layers_a[1].clone()),
                read_write: true,
                no_sync: true,
                ..LayerOptions::default()
            },
            None,
        )
        .unwrap();
    // A container whose image record is gone.
    let cb = store
        .create_container(ContainerOptions {
            names: vec!["cb".into()],
            image: image_a.id(),
            ..ContainerOptions::default()
        })
        .unwrap();
    let containers_json = scratch
        .root()
        .join(format!("{d}-containers/containers.json"));
    edit_records(&containers_json, |r| {
        for c in r.iter_mut() {
            if c["id"] == cb.id.as_str() {
                c["image"] = serde_json::json!("0badimage");
            }
        }
    });
    // containers.json is re-read only when its lock's token changes: reopen the store.
    drop(store);
    let store = scratch.open();
    edit_records(&layers_json, |r| {
        r.retain(|l| l["id"] != layers_e[1].as_str())
    });
    // An incomplete layer and a layer whose parent record is gone.
    let (incomplete, _) = store.create_layer(LayerOptions::default(), None).unwrap();
    let (orphan_child, _) = store.create_layer(LayerOptions::default(), None).unwrap();
    edit_records(&layers_json, |r| {
        for l in r.iter_mut() {
            if l["id"] == incomplete.id.as_str() {
                l["flags"] = serde_json::json!({"incomplete": true});
            }
            if l["id"] == orphan_child.id.as_str() {
                l["parent"] = serde_json::json!("0badparent");
            }
        }
    });
    // Filesystem leftovers.
    let orphan_dir = layer_dir(&scratch, "0orphan");
    fs::create_dir_all(orphan_dir.join("diff")).unwrap();
    let orphan_tar_split = scratch
        .root()
        .join(format!("{d}-layers/0orphan.tar-split.gz"));
    fs::write(&orphan_tar_split, b"").unwrap();
    let orphan_image_dir = scratch.root().join(format!("{d}-images/0orphan"));
    fs::create_dir_all(&orphan_image_dir).unwrap();
    let orphan_container_dir = scratch.root().join(format!("{d}-containers/0orphan"));
    fs::create_dir_all(orphan_container_dir.join("userdata")).unwrap();
    let orphan_run_dir = scratch.run_root().join(format!("{d}-containers/0orphan"));
    fs::create_dir_all(&orphan_run_dir).unwrap();
    let stale_temp = scratch
        .root()
        .join(format!("{d}-images/.tmp-images.json1234"));
    fs::write(&stale_temp, b"[").unwrap();
    let staging = scratch.root().join("tmp/staged-blob-0orphan");
    fs::write(&staging, b"partial").unwrap();
    let ingest = blob_store.join("ingest/sha256-0orphan");
    fs::create_dir_all(&ingest).unwrap();
    fs::write(ingest.join("data"), b"partial").unwrap();
    fs::write(ingest.join("lock"), b"").unwrap();
    // Overlay only: a dangling link, a missing link, a stale mount record, an unrecorded mount.
    let mut overlay_expected = Vec::new();
    if driver == "overlay" {
        let home = scratch.root().join("overlay");
        let dangling = home.join("l/AAAAAAAAAAAAAAAAAAAAAAAAAA");
        std::os::unix::fs::symlink("../0gone/diff", &dangling).unwrap();
        let link = fs::read_to_string(home.join(&layers_a[0]).join("link")).unwrap();
        let missing_link = home.join("l").join(link.trim());
        fs::remove_file(&missing_link).unwrap();
        // An image layer mounted behind the store's back...
        let unrecorded = store
            .driver()
            .mount(&layers_b[0], &MountOptions::default())
            .unwrap();
        // ... and the container's mount gone behind its back: its record goes stale.
        rustix::mount::unmount(&ca_mount, rustix::mount::UnmountFlags::DETACH).unwrap();
        overlay_expected = vec![
            Finding::DanglingLink {
                path: dangling,
                target: PathBuf::from("../0gone/diff"),
            },
            Finding::LayerLinkMissing {
                layer: layers_a[0].clone(),
                path: missing_link,
            },
            Finding::MountUnrecorded {
                layer: layers_b[0].clone(),
                path: unrecorded,
            },
            Finding::MountNotMounted {
                layer: ca.layer.clone(),
                path: ca_mount.clone(),
                count: 1,
            },
        ];
    }

    let report = store.check(&options(&blob_store)).unwrap();
    let mut expected = vec![
        Finding::LayerDataMissing {
            layer: layers_b[1].clone(),
            path: layer_dir(&scratch, &layers_b[1]),
        },
        Finding::BigDataSizeMismatch {
            kind: RecordKind::Image,
            id: image_c.id(),
            key: "manifest".into(),
            recorded: i64::try_from(image_c.manifest.len()).unwrap(),
            actual: 2,
        },
        Finding::ImageLayerMissing {
            image: image_e.id(),
            layer: layers_e[1].clone(),
        },
        Finding::IncompleteLayer {
            layer: incomplete.id.clone(),
        },
        Finding::LayerParentMissing {
            layer: orphan_child.id.clone(),
            parent: "0badparent".into(),
        },
        Finding::LayerUnreferenced {
            layer: rw_orphan.id.clone(),
            read_write: true,
        },
        Finding::ContainerImageMissing {
            container: cb.id.clone(),
            image: "0badimage".into(),
        },
        Finding::OrphanLayerDirectory {
            path: orphan_dir.clone(),
        },
        Finding::OrphanLayerDirectory {
            path: layer_dir(&scratch, &layers_e[1]),
        },
        Finding::OrphanLayerFile {
            path: orphan_tar_split.clone(),
        },
        Finding::OrphanLayerFile {
            path: scratch
                .root()
                .join(format!("{d}-layers/{}.tar-split.gz", layers_e[1])),
        },
        Finding::OrphanImageDirectory {
            path: orphan_image_dir.clone(),
        },
        Finding::OrphanContainerDirectory {
            path: orphan_container_dir.clone(),
        },
        Finding::OrphanContainerDirectory {
            path: orphan_run_dir.clone(),
        },
        Finding::StaleTempFile {
            path: stale_temp.clone(),
        },
        Finding::StaleStaging {
            path: staging.clone(),
        },
        Finding::StaleIngest {
            path: ingest.clone(),
        },
    ];
    expected.extend(overlay_expected);
    for want in &expected {
        assert!(
            report.findings.contains(want),
            "{driver}: missing {want:?} in {:#?}",
            report.findings
        );
    }
    // D's damage is found by re-reading its contents.
    assert!(
        report.findings.iter().any(|f| match f {
            // The tar-split's per-file CRC-64 catches the change while rebuilding.
            Finding::LayerDiffUnreadable { layer, reason } => {
                *layer == layers_d[1] && reason.contains("checksum") && reason.contains("data/x")
            }
            Finding::LayerDiffMismatch { layer, .. } => *layer == layers_d[1],
            _ => false,
        }),
        "{driver}: {:#?}",
        report.findings
    );
    // Nothing about the valid image or container.
    let valid: BTreeSet<String> = [image_a.id(), ca.id.clone(), ca.layer.clone()]
        .into_iter()
        .chain(layers_a.iter().cloned())
        .collect();
    for f in &report.findings {
        if let Some(id) = f.id() {
            let allowed = matches!(
                f,
                Finding::LayerLinkMissing { .. } | Finding::MountNotMounted { .. }
            );
            assert!(allowed || !valid.contains(id), "{driver}: {f:?}");
        }
    }

    let a_before = store.image(&image_a.id()).unwrap();
    let ca_before = store.container(&ca.id).unwrap();
    let repaired = store.repair(&options(&blob_store)).unwrap();
    assert!(
        repaired.after.is_clean(),
        "{driver}: after repair {:#?}",
        repaired.after.findings
    );
    let second = store.check(&options(&blob_store)).unwrap();
    assert!(second.is_clean(), "{driver}: {:#?}", second.findings);
    let removed_images: BTreeSet<String> = repaired.removed_images.iter().cloned().collect();
    let want_removed: BTreeSet<String> = [&image_b, &image_c, &image_d, &image_e]
        .iter()
        .map(|i| i.id())
        .collect();
    assert_eq!(removed_images, want_removed, "{driver}");
    assert_eq!(repaired.removed_containers, vec![cb.id.clone()], "{driver}");
    for gone in [&rw_orphan.id, &incomplete.id, &orphan_child.id, &cb.layer] {
        assert!(repaired.removed_layers.contains(gone), "{driver}: {gone}");
    }
    for path in [
        &orphan_dir,
        &orphan_tar_split,
        &orphan_image_dir,
        &orphan_container_dir,
        &orphan_run_dir,
        &stale_temp,
        &staging,
        &ingest,
    ] {
        assert!(!path.exists(), "{driver}: {} still exists", path.display());
    }

    // The valid records are untouched; the store holds exactly them.
    assert_eq!(store.image(&image_a.id()).unwrap(), a_before);
    assert_eq!(store.container(&ca.id).unwrap(), ca_before);
    assert_eq!(store.images().unwrap().len(), 1);
    assert_eq!(store.containers().unwrap().len(), 1);
    let mut left: Vec<String> = store.layers().unwrap().into_iter().map(|l| l.id).collect();
    left.sort();
    let mut want_left = layers_a.clone();
    want_left.push(ca.layer.clone());
    want_left.sort();
    assert_eq!(left, want_left, "{driver}");
    assert_eq!(
        store.container_big_data(&ca.id, "config.json").unwrap(),
        b"{\"valid\":true}"
    );
    // The image still reads back and still mounts (the re-created link works on overlay).
    let mut diff = Vec::new();
    store.diff(&layers_a[1], &mut diff).unwrap();
    let mounted = store.mount(&ca.id, &MountOptions::default()).unwrap();
    assert!(mounted.join("data/x").is_file(), "{driver}");
    store.unmount(&ca.id, true).unwrap();

    // The peers read the store.
    if have("podman") {
        let images = run_json(scratch.podman().args(["images", "--format", "json"]));
        let ids: Vec<&str> = images
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["Id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![image_a.id().as_str()], "{driver}");
    }
    if have("containers-storage") {
        let out = run(scratch.cs().args(["containers"]));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&ca.id));
    }
    drop(store);
}

fn run_json(cmd: &mut std::process::Command) -> serde_json::Value {
    serde_json::from_slice(&run(cmd).stdout).unwrap()
}

#[test]
fn vfs_damage_is_reported_repaired_and_valid_records_survive() {
    damage_is_reported_repaired_and_valid_records_survive("vfs");
}

#[test]
fn overlay_damage_is_reported_repaired_and_valid_records_survive() {
    damage_is_reported_repaired_and_valid_records_survive("overlay");
}

#[test]
fn young_leftovers_of_a_concurrent_pull_are_not_reported() {
    let scratch = Scratch::new("vfs");
    let store = scratch.open();
    let img = test_image("young");
    let ids = img.layer_ids();
    // A pull in progress: a committed base layer, no image yet, a staged blob.
    store
        .create_layer(
            LayerOptions {
                id: Some(ids[0].clone()),
                no_sync: true,
                ..LayerOptions::default()
            },
            Some(&mut &img.layers[0].gz[..]),
        )
        .unwrap();
    fs::write(scratch.root().join("tmp/staged-blob-x"), b"partial").unwrap();
    let patient = CheckOptions {
        stale_after: Duration::from_secs(3600),
        ..CheckOptions::default()
    };
    let report = store.check(&patient).unwrap();
    assert!(report.is_clean(), "{:#?}", report.findings);
    let repaired = store.repair(&patient).unwrap();
    assert!(repaired.removed_layers.is_empty());
    assert!(store.layer_exists(&ids[0]).unwrap());
    // With nobody else using the store they are leftovers.
    let now = CheckOptions {
        stale_after: Duration::ZERO,
        ..CheckOptions::default()
    };
    let report = store.check(&now).unwrap();
    assert_eq!(report.findings.len(), 2, "{:#?}", report.findings);
    let repaired = store.repair(&now).unwrap();
    assert_eq!(repaired.removed_layers, vec![ids[0].clone()]);
    assert!(repaired.after.is_clean());
}
