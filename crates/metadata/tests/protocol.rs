//! The store's safety protocol without the peer tools: garbage records are typed errors and
//! are never overwritten, JSON files are never observed half-written, a reader in another
//! process sees a write immediately (token protocol), and the lock files exclude other
//! processes' fcntl locks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::{Scratch, have};
use podstore_metadata::lockfile::LockFile;
use podstore_metadata::{ContainerOptions, Error, ImageOptions, NamesOp, RecordKind};

#[test]
fn garbage_records_are_typed_errors_and_left_untouched() {
    for file in [
        "vfs-layers/layers.json",
        "vfs-images/images.json",
        "vfs-containers/containers.json",
    ] {
        for garbage in [
            &b"[{\"id\":\"a\","[..],
            b"\x00\x01garbage",
            b"{\"id\":\"x\"}",
            b"[{\"id\":1}]",
        ] {
            let s = Scratch::new("vfs");
            drop(s.open());
            let path = s.root().join(file);
            fs::write(&path, garbage).unwrap();
            let err = podstore_metadata::Store::open(&s.options()).unwrap_err();
            match err {
                Error::Corrupt { path: p, .. } => assert_eq!(p, path),
                other => panic!("{file}: expected Corrupt, got {other}"),
            }
            assert_eq!(
                fs::read(&path).unwrap(),
                garbage,
                "{file} must not be overwritten"
            );
        }
    }
}

#[test]
fn invalid_manifest_digest_is_fatal_like_podman() {
    let s = Scratch::new("vfs");
    drop(s.open());
    let path = s.root().join("vfs-images/images.json");
    fs::write(
        &path,
        r#"[{"id":"i","big-data-names":["manifest"],"big-data-digests":{"manifest":"sha256:XYZ"},"created":"2024-01-01T00:00:00Z"}]"#,
    )
    .unwrap();
    let err = podstore_metadata::Store::open(&s.options()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

#[test]
fn lookups_and_typed_errors() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let mk = |id: &str, name: &str| {
        store
            .create_image(ImageOptions {
                id: Some(id.to_owned()),
                names: vec![name.to_owned()],
                metadata: "{}".into(),
                ..ImageOptions::default()
            })
            .unwrap()
    };
    mk(&format!("abc1{}", "0".repeat(60)), "one");
    mk(&format!("abc2{}", "0".repeat(60)), "two");
    assert_eq!(
        store.image("one").unwrap().id,
        format!("abc1{}", "0".repeat(60))
    );
    assert_eq!(store.image("abc2").unwrap().names, vec!["two"]);
    assert!(matches!(
        store.image("abc"),
        Err(Error::AmbiguousPrefix {
            kind: RecordKind::Image,
            ..
        })
    ));
    match store.image("nope") {
        Err(e @ Error::ImageUnknown { .. }) => assert!(e.to_string().contains("nope")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.create_image(ImageOptions {
            id: Some(format!("abc1{}", "0".repeat(60))),
            ..ImageOptions::default()
        }),
        Err(Error::IdInUse { .. })
    ));
    assert!(matches!(
        store.create_image(ImageOptions {
            names: vec!["one".into()],
            ..ImageOptions::default()
        }),
        Err(Error::NameInUse { .. })
    ));
    assert!(matches!(
        store.create_image(ImageOptions {
            id: Some("a b".into()),
            ..ImageOptions::default()
        }),
        Err(Error::InvalidId { .. })
    ));
    assert!(matches!(
        store.create_image(ImageOptions {
            metadata: "not json".into(),
            ..ImageOptions::default()
        }),
        Err(Error::InvalidMetadata { .. })
    ));
    assert!(matches!(
        store.create_image(ImageOptions {
            top_layer: Some("missing".into()),
            ..ImageOptions::default()
        }),
        Err(Error::LayerUnknown { .. })
    ));
    assert!(matches!(
        store.container("x"),
        Err(Error::ContainerUnknown { .. })
    ));
    assert!(matches!(store.layer("x"), Err(Error::LayerUnknown { .. })));
    assert!(matches!(
        store.create_container(ContainerOptions {
            image: "nope".into(),
            ..ContainerOptions::default()
        }),
        Err(Error::ImageUnknown { .. })
    ));
    assert!(matches!(
        store.image_big_data("one", "manifest"),
        Err(Error::BigDataUnknown { .. })
    ));
    assert!(matches!(
        store.set_image_big_data("one", "", b"x", None),
        Err(Error::InvalidBigDataKey { .. })
    ));
    // Nothing failed left a trace: only the two images exist.
    assert_eq!(store.images().unwrap().len(), 2);
    let dirs = fs::read_dir(s.root().join("vfs-images")).unwrap().count();
    assert_eq!(
        dirs, 2,
        "images.json, images.lock and no image directories (no big data yet)"
    );
}

#[test]
fn big_data_sizes_digests_and_image_digest() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let img = store
        .create_image(ImageOptions {
            metadata: "{}".into(),
            ..ImageOptions::default()
        })
        .unwrap();
    assert_eq!(img.digest, "");
    let list_digest = podstore_reference::Digest::sha256_of(b"list");
    store
        .set_image_big_data(&img.id, "sha256:conf", b"config", None)
        .unwrap();
    store
        .set_image_big_data(
            &img.id,
            &format!("manifest-{list_digest}"),
            b"list",
            Some(&list_digest),
        )
        .unwrap();
    store
        .set_image_big_data(&img.id, "manifest", b"inst", None)
        .unwrap();
    let rec = store.image(&img.id).unwrap();
    assert_eq!(
        rec.digest,
        list_digest.to_string(),
        "first manifest item becomes the digest"
    );
    assert_eq!(rec.big_data_sizes["sha256:conf"], 6);
    assert_eq!(
        rec.big_data_digests["manifest"],
        podstore_reference::Digest::sha256_of(b"inst").to_string()
    );
    assert_eq!(rec.digests().len(), 2);
    assert_eq!(store.image_big_data(&img.id, "manifest").unwrap(), b"inst");
    let file = s
        .root()
        .join(format!("vfs-images/{}/=c2hhMjU2OmNvbmY=", img.id));
    assert_eq!(fs::read(file).unwrap(), b"config");
    assert_eq!(store.images_by_digest(&list_digest).unwrap().len(), 1);
}

#[test]
fn names_history_matches_containers_storage_rules() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let i1 = store
        .create_image(ImageOptions {
            names: vec!["n1".into(), "n2".into()],
            ..ImageOptions::default()
        })
        .unwrap();
    let i2 = store
        .create_image(ImageOptions {
            names: vec!["v1".into()],
            ..ImageOptions::default()
        })
        .unwrap();
    assert!(
        i1.names_history.is_empty(),
        "create does not record history"
    );
    // Table of (op, names, expected names, expected history) on i1, as observed with
    // containers-storage 1.43 and podman 4.3 on this machine.
    type Step<'a> = (NamesOp, &'a [&'a str], &'a [&'a str], &'a [&'a str]);
    let steps: &[Step] = &[
        (
            NamesOp::Add,
            &["n3", "v1"],
            &["n1", "n2", "n3", "v1"],
            &["v1", "n3", "n2", "n1"],
        ),
        (NamesOp::Set, &["z"], &["z"], &["z", "v1", "n3", "n2", "n1"]),
        (
            NamesOp::Add,
            &["y"],
            &["z", "y"],
            &["y", "z", "v1", "n3", "n2", "n1"],
        ),
        (
            NamesOp::Remove,
            &["z"],
            &["y"],
            &["y", "z", "v1", "n3", "n2", "n1"],
        ),
    ];
    for (op, names, want, hist) in steps {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let r = store.update_image_names(&i1.id, &names, *op).unwrap();
        assert_eq!(r.names, *want, "{op:?} {names:?}");
        assert_eq!(r.names_history, *hist, "{op:?} {names:?}");
    }
    assert!(
        store.image(&i2.id).unwrap().names.is_empty(),
        "v1 moved away from i2"
    );
}

#[test]
fn json_files_are_never_observed_half_written() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let img = store.create_image(ImageOptions::default()).unwrap();
    let path = s.root().join("vfs-images/images.json");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || reads < 10 {
                // No lock on purpose: even an unlocked reader must see a whole file.
                let data = fs::read(&path).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_else(|e| {
                    panic!("half-written images.json ({} bytes): {e}", data.len())
                });
                assert!(v.is_array());
                reads += 1;
            }
            reads
        });
        for i in 0..200 {
            let big = format!(
                "{{\"pad\":\"{}\",\"i\":{i}}}",
                "x".repeat(64 * 1024 + i * 97)
            );
            store.set_image_metadata(&img.id, &big).unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() >= 10);
    });
    let tmp: Vec<_> = fs::read_dir(s.root().join("vfs-images"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
}

/// Child half of `a_reader_in_another_process_sees_a_write_immediately`: opens the store,
/// caches images, then for every line on stdin prints the names it now sees.
#[test]
#[ignore = "helper process for the token test"]
fn child_reader() {
    let Ok(root) = std::env::var("PODSTORE_CHILD_ROOT") else {
        return;
    };
    let s =
        podstore_metadata::StoreOptions::new(format!("{root}/root"), format!("{root}/run"), "vfs");
    let store = common::open_store(&s);
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "READY {}", store.images().unwrap().len()).unwrap();
    out.flush().unwrap();
    for line in stdin.lock().lines() {
        let id = line.unwrap();
        if id.is_empty() {
            break;
        }
        let names = store
            .image(&id)
            .map(|i| i.names.join(","))
            .unwrap_or_else(|e| format!("ERR {e}"));
        writeln!(out, "NAMES {names}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_reader_in_another_process_sees_a_write_immediately() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let img = store
        .create_image(ImageOptions {
            names: vec!["first".into()],
            ..ImageOptions::default()
        })
        .unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_reader",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("PODSTORE_CHILD_ROOT", s.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || loop {
        let l = lines.next().unwrap().unwrap();
        if l.starts_with("READY") || l.starts_with("NAMES") {
            return l;
        }
    };
    assert_eq!(next(), "READY 1");
    for (i, name) in ["second", "third", "fourth"].iter().enumerate() {
        store
            .update_image_names(&img.id, &[name.to_string()], NamesOp::Set)
            .unwrap();
        writeln!(stdin, "{}", img.id).unwrap();
        stdin.flush().unwrap();
        assert_eq!(
            next(),
            format!("NAMES {name}"),
            "round {i}: the child used stale cached state"
        );
    }
    writeln!(stdin).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn lock_files_exclude_other_processes_fcntl_locks() {
    if !have("python3") {
        return;
    }
    let s = Scratch::new("vfs");
    drop(s.open());
    let lock_path = s.root().join("vfs-layers/layers.lock");
    let probe = |path: &std::path::Path| -> String {
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,sys\nf=open(sys.argv[1],'r+')\ntry:\n fcntl.lockf(f,fcntl.LOCK_SH|fcntl.LOCK_NB)\n print('free')\nexcept OSError:\n print('busy')",
            )
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let lf = LockFile::open(&lock_path).unwrap();
    assert_eq!(probe(&lock_path), "free");
    let w = lf.write().unwrap();
    assert_eq!(
        probe(&lock_path),
        "busy",
        "a POSIX read lock elsewhere must be refused"
    );
    drop(w);
    assert_eq!(probe(&lock_path), "free");
    let r = lf.read().unwrap();
    assert_eq!(probe(&lock_path), "free", "readers share");
    drop(r);
}

#[test]
fn in_process_stores_see_each_others_writes() {
    let s = Scratch::new("vfs");
    let a = s.open();
    let b = s.open();
    assert!(a.images().unwrap().is_empty());
    let img = b
        .create_image(ImageOptions {
            names: vec!["n".into()],
            ..ImageOptions::default()
        })
        .unwrap();
    assert_eq!(a.image("n").unwrap().id, img.id);
    let c = a
        .create_container(ContainerOptions {
            image: "n".into(),
            ..ContainerOptions::default()
        })
        .unwrap();
    assert_eq!(b.container(&c.id).unwrap().layer, c.layer);
    assert_eq!(b.layer(&c.layer).unwrap().id, c.layer);
    assert!(matches!(
        a.create_layer(
            podstore_metadata::LayerOptions {
                parent: Some(c.layer.clone()),
                ..Default::default()
            },
            None
        ),
        Err(Error::ParentIsContainer { .. })
    ));
    // Names on layers are unique too.
    let (l1, _) = a
        .create_layer(
            podstore_metadata::LayerOptions {
                names: vec!["ln".into()],
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert!(matches!(
        b.create_layer(
            podstore_metadata::LayerOptions {
                names: vec!["ln".into()],
                ..Default::default()
            },
            None
        ),
        Err(Error::NameInUse {
            kind: RecordKind::Layer,
            ..
        })
    ));
    assert!(matches!(
        b.delete_layer(&c.layer),
        Err(Error::LayerInUse { .. })
    ));
    b.set_layer_big_data("ln", "some-key", b"layer data")
        .unwrap();
    assert_eq!(a.layer_big_data(&l1.id, "some-key").unwrap(), b"layer data");
    assert_eq!(a.layer("ln").unwrap().big_data_names, vec!["some-key"]);
    let big_dir = s.root().join(format!("vfs-layers/{}", l1.id));
    assert!(big_dir.join("=c29tZS1rZXk=").is_file());
    b.delete_layer("ln").unwrap();
    assert!(
        !big_dir.exists(),
        "layer big data is removed with the layer"
    );
    assert!(matches!(a.layer(&l1.id), Err(Error::LayerUnknown { .. })));
}

#[test]
fn store_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<podstore_metadata::Store>();
    let s = Scratch::new("vfs");
    let store = s.open();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = &store;
            scope.spawn(move || {
                for i in 0..10 {
                    store
                        .create_image(ImageOptions {
                            names: vec![format!("t{t}-{i}")],
                            ..ImageOptions::default()
                        })
                        .unwrap();
                    store.images().unwrap();
                }
            });
        }
    });
    assert_eq!(store.images().unwrap().len(), 40);
}

/// Child half of `storage_conf_is_found_like_podman`: prints the options podman would use.
#[test]
#[ignore = "helper process for the storage.conf test"]
fn child_print_options() {
    if std::env::var_os("PODSTORE_CHILD_PRINT").is_none() {
        return;
    }
    let o = podstore_metadata::StoreOptions::from_environment().unwrap();
    println!(
        "OPTIONS {} {} {} {}",
        o.driver_name,
        o.graph_root.display(),
        o.run_root.display(),
        o.driver_options.join(",")
    );
}

#[test]
fn storage_conf_is_found_like_podman() {
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    let conf = dir.path().join("storage.conf");
    fs::write(
        &conf,
        "[storage]\ndriver = \"overlay2\"\ngraphroot = \"/g\"\nrunroot = \"/r\"\n[storage.options.overlay]\nmountopt = \"nodev\"\n",
    )
    .unwrap();
    let table: &[(&[(&str, &str)], &str)] = &[
        (&[], "OPTIONS overlay /g /r overlay.mountopt=nodev"),
        (
            &[("STORAGE_DRIVER", "vfs")],
            "OPTIONS vfs /g /r overlay.mountopt=nodev",
        ),
        (
            &[("STORAGE_OPTS", "overlay.mountopt=nosuid")],
            "OPTIONS overlay /g /r overlay.mountopt=nosuid",
        ),
    ];
    for (env, want) in table {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "child_print_options",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("PODSTORE_CHILD_PRINT", "1")
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .env_remove("STORAGE_DRIVER")
        .env_remove("STORAGE_OPTS");
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with("OPTIONS"))
            .unwrap_or_default();
        assert_eq!(line, *want, "env {env:?}");
    }
}

/// Reading N images, their big data and the layers they stand on decodes and checks each
/// records file once, not once per read (the reads were quadratic in the number of images
/// when every read re-decoded, copied and re-checked every record). A write from another
/// Store (another token) makes the next read decode and check once more, and the readers
/// see the write.
#[test]
fn reads_decode_and_check_records_once_per_change() {
    let s = Scratch::new("vfs");
    let writer = s.open();
    let (layer, _) = writer
        .create_layer(
            podstore_metadata::LayerOptions {
                no_sync: true,
                ..Default::default()
            },
            None,
        )
        .unwrap();
    let images = 40;
    for k in 0..images {
        writer
            .create_image(ImageOptions {
                names: vec![format!("localhost/image-{k}:latest")],
                top_layer: Some(layer.id.clone()),
                big_data: vec![podstore_metadata::BigDataItem {
                    key: "manifest".into(),
                    data: format!("{{\"n\":{k}}}").into_bytes(),
                    digest: None,
                }],
                ..ImageOptions::default()
            })
            .unwrap();
    }
    let reader = s.open();
    let counts = |kind| reader.record_load_counts(kind);
    let (images_before, layers_before) = (counts(RecordKind::Image), counts(RecordKind::Layer));
    for k in 0..images {
        let name = format!("localhost/image-{k}:latest");
        let image = reader.image(&name).unwrap();
        assert_eq!(image.layer, layer.id);
        assert_eq!(
            reader.image_big_data(&name, "manifest").unwrap(),
            format!("{{\"n\":{k}}}").into_bytes()
        );
        assert_eq!(reader.layer(&image.layer).unwrap().id, layer.id);
    }
    assert_eq!(reader.images().unwrap().len(), images);
    let snapshot = reader.image_snapshot().unwrap();
    assert_eq!(snapshot.images().len(), images);
    assert_eq!(snapshot.layers().len(), 1);
    for (k, image) in snapshot.images().iter().enumerate() {
        assert_eq!(
            snapshot.big_data(image, "manifest").unwrap(),
            format!("{{\"n\":{k}}}").into_bytes()
        );
    }
    drop(snapshot);
    let (images_after, layers_after) = (counts(RecordKind::Image), counts(RecordKind::Layer));
    // Opening the reader loaded the files already (crash recovery under the write locks);
    // the reads add at most the first view, whatever the number of reads.
    assert_eq!(
        images_after.decoded, images_before.decoded,
        "images.json re-decoded"
    );
    assert_eq!(
        layers_after.decoded, layers_before.decoded,
        "layers.json re-decoded"
    );
    assert!(
        images_after.views_built <= images_before.views_built + 1,
        "{images_before:?} -> {images_after:?}"
    );
    assert!(
        layers_after.views_built <= layers_before.views_built + 1,
        "{layers_before:?} -> {layers_after:?}"
    );

    // Another Store's write bumps the token: the next read decodes and checks once again.
    writer
        .create_image(ImageOptions {
            names: vec!["localhost/late:latest".into()],
            ..ImageOptions::default()
        })
        .unwrap();
    for _ in 0..5 {
        assert_eq!(reader.images().unwrap().len(), images + 1);
        reader.image("localhost/late:latest").unwrap();
    }
    let images_late = counts(RecordKind::Image);
    assert_eq!(images_late.decoded, images_after.decoded + 1);
    assert_eq!(images_late.views_built, images_after.views_built + 1);
}

/// A layers save whose mount counts did not change leaves `mountpoints.json` and its token
/// alone (it used to be rewritten and synced with every layers save: three times per
/// container create on vfs); a mount still writes it.
#[test]
fn mountpoints_are_saved_only_when_mount_counts_change() {
    let s = Scratch::new("vfs");
    let store = s.open();
    store
        .create_image(ImageOptions {
            names: vec!["img".into()],
            ..ImageOptions::default()
        })
        .unwrap();
    let lock = s.run_root().join("vfs-layers/mountpoints.lock");
    let token = || fs::read(&lock).unwrap();
    let before = token();
    let c = store
        .create_container(ContainerOptions {
            image: "img".into(),
            ..ContainerOptions::default()
        })
        .unwrap();
    assert_eq!(token(), before, "create rewrote mountpoints.json");
    store
        .mount(&c.id, &podstore_layer::MountOptions::default())
        .unwrap();
    let mounted = token();
    assert_ne!(mounted, before, "a mount must save mountpoints.json");
    assert_eq!(store.mount_count(&c.id).unwrap(), 1);
    store.unmount(&c.id, true).unwrap();
    assert_ne!(token(), mounted, "an unmount must save mountpoints.json");
    let unmounted = token();
    store.delete_container(&c.id).unwrap();
    assert_eq!(token(), unmounted, "delete rewrote mountpoints.json");
}
