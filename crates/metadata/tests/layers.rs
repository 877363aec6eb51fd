//! Layers created by podstore through the real vfs and overlay drivers: records identical to
//! skopeo's (except the creation time), tar-split that rebuilds the original tar (and that
//! skopeo can export from), the incomplete-flag protocol under a crash, and the cost of
//! holding `layers.lock` during extraction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::{Scratch, TestImage, have, run, test_image, write_oci_layout};
use podstore_layer::MountOptions;
use podstore_metadata::records::{Record, decode_records};
use podstore_metadata::{
    BigDataItem, ContainerOptions, Error, GoTime, ImageOptions, Layer, LayerOptions, NamesOp, Store,
};
use podstore_reference::Digest;

/// Pulls `img` into `store` the way containers/image 5.23 commits an image.
fn pull_like_c_image(store: &Store, img: &TestImage, name: &str) {
    let ids = img.layer_ids();
    for (i, l) in img.layers.iter().enumerate() {
        if store.layer_exists(&ids[i]).unwrap() {
            continue;
        }
        let (layer, _) = store
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
        assert_eq!(layer.id, ids[i]);
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
                    key: format!("manifest-{}", img.manifest_digest),
                    data: img.manifest.clone(),
                    digest: Some(img.manifest_digest.clone()),
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
}

fn without_created(mut l: Layer) -> String {
    l.created = GoTime::default();
    let mut out = Vec::new();
    l.write_json(&mut out);
    String::from_utf8(out).unwrap()
}

fn same_layers_as_skopeo(driver: &'static str) {
    if !have("skopeo") || !have("podman") {
        return;
    }
    let img = test_image("layers");
    let theirs = Scratch::new(driver);
    let oci = theirs.dir.path().join("oci");
    write_oci_layout(&oci, &[("t", &img)]);
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &format!("oci:{}:t", oci.display()),
        &theirs.store_ref("example.com/l:1"),
    ]));
    let ours = Scratch::new(driver);
    let store = ours.open();
    pull_like_c_image(&store, &img, "example.com/l:1");

    let their_layers: Vec<Layer> = decode_records(
        &fs::read(theirs.root().join(format!("{driver}-layers/layers.json"))).unwrap(),
    )
    .unwrap();
    let our_layers = store.layers().unwrap();
    assert_eq!(
        our_layers
            .iter()
            .cloned()
            .map(without_created)
            .collect::<Vec<_>>(),
        their_layers
            .iter()
            .cloned()
            .map(without_created)
            .collect::<Vec<_>>(),
        "layer records differ from containers/storage's"
    );
    // Our tar-split rebuilds the original tar, and so does containers/storage's.
    let their_store = theirs.open();
    for (l, id) in img.layers.iter().zip(img.layer_ids()) {
        let mut rebuilt = Vec::new();
        assert_eq!(store.diff(&id, &mut rebuilt).unwrap(), l.tar.len() as u64);
        assert_eq!(rebuilt, l.tar, "podstore tar-split");
        let mut rebuilt = Vec::new();
        their_store.diff(&id, &mut rebuilt).unwrap();
        assert_eq!(
            rebuilt, l.tar,
            "containers/storage tar-split read by podstore"
        );
    }
    drop(their_store);
    // skopeo exports from our store: it re-reads every layer through our tar-split and
    // checks it against diff-digest.
    let out = ours.dir.path().join("export");
    run(Command::new("skopeo").args([
        "copy",
        "-q",
        &ours.store_ref("example.com/l:1"),
        &format!("oci:{}:x", out.display()),
    ]));
    // podman sees the image and its size.
    let listed = common::run_stdout(ours.podman().args([
        "images",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]));
    assert!(
        listed.contains(&format!("{} example.com/l:1", &img.id()[..12])),
        "{listed}"
    );

    // A container on top: mount it and see the image's files; podman lists it.
    let c = store
        .create_container(ContainerOptions {
            names: vec!["ctr".into()],
            image: "example.com/l:1".into(),
            ..ContainerOptions::default()
        })
        .unwrap();
    let root = store.mount("ctr", &MountOptions::default()).unwrap();
    assert_eq!(
        fs::read_to_string(root.join("etc/hello")).unwrap(),
        "hello layers\n"
    );
    assert_eq!(fs::read(root.join("data/y")).unwrap(), b"layers");
    fs::write(root.join("new-file"), b"rw").unwrap();
    assert!(!store.unmount("ctr", false).unwrap());
    let ps = common::run_stdout(ours.podman().args([
        "ps",
        "-a",
        "--external",
        "--format",
        "{{.Names}}",
    ]));
    assert!(ps.contains("ctr"), "{ps}");
    store.delete_container(&c.id).unwrap();
    // Deleting the image deletes its whole layer chain.
    let deleted = store.delete_image("example.com/l:1", true).unwrap();
    assert_eq!(deleted.len(), 2);
    assert!(store.layers().unwrap().is_empty());
    assert!(
        !ours
            .root()
            .join(format!(
                "{driver}-layers/{}.tar-split.gz",
                img.layer_ids()[0]
            ))
            .exists()
    );
    let cs = common::cs_json(&ours, &["layers", "-j"]);
    assert!(cs.as_array().unwrap().is_empty());
}

#[test]
fn vfs_layers_match_skopeo_and_export() {
    same_layers_as_skopeo("vfs");
}

#[test]
fn overlay_layers_match_skopeo_and_export() {
    if !fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .contains("overlay")
    {
        eprintln!("SKIP: kernel has no overlay");
        return;
    }
    same_layers_as_skopeo("overlay");
}

#[test]
fn failed_layer_creation_leaves_nothing() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let img = test_image("fail");
    let l = &img.layers[0];
    let wrong = Digest::sha256_of(b"something else");
    let err = store
        .create_layer(
            LayerOptions {
                uncompressed_digest: Some(wrong),
                no_sync: true,
                ..LayerOptions::default()
            },
            Some(&mut &l.gz[..]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::DiffDigestMismatch { .. }), "{err}");
    let garbage = vec![0x1fu8, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
    let err = store
        .create_layer(
            LayerOptions {
                id: Some("g".repeat(64)),
                ..LayerOptions::default()
            },
            Some(&mut &garbage[..]),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Driver(_)), "{err}");
    assert!(store.layers().unwrap().is_empty());
    assert_eq!(
        fs::read_to_string(s.root().join("vfs-layers/layers.json")).unwrap(),
        "[]"
    );
    let leftovers: Vec<_> = fs::read_dir(s.root().join("vfs-layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "layers.json" && n != "layers.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(fs::read_dir(s.root().join("vfs/dir")).unwrap().count(), 0);
}

#[test]
fn staged_blob_records_its_digest() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let img = test_image("staged");
    let staged = store.stage_blob(&mut &img.layers[0].gz[..]).unwrap();
    assert_eq!(staged.digest(), &img.layers[0].blob);
    let path = staged.path().to_path_buf();
    let (layer, _) = store
        .create_layer_from_staged(
            LayerOptions {
                id: Some(img.layer_ids()[0].clone()),
                ..LayerOptions::default()
            },
            &staged,
        )
        .unwrap();
    assert_eq!(layer.compressed_digest, img.layers[0].blob.to_string());
    assert_eq!(layer.uncompressed_digest, img.layers[0].diff_id.to_string());
    drop(staged);
    assert!(!path.exists());
    assert_eq!(
        store
            .layers_by_compressed_digest(&img.layers[0].blob)
            .unwrap()
            .len(),
        1
    );
}

/// A deterministic, poorly compressible stream.
struct Noise(u64, usize);
impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1);
        for b in &mut buf[..n] {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
        self.1 -= n;
        Ok(n)
    }
}

fn big_layer_tar(mib: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..mib {
        let mut data = Vec::new();
        Noise(0x9e37_79b9_7f4a_7c15 + i as u64, 1 << 20)
            .read_to_end(&mut data)
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("big/{i}")).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// Measures (prints, does not assert) how long `layers.lock` is held while a layer is
/// extracted, and shows that a containers-storage reader waits for it.
#[test]
fn layers_lock_hold_during_extraction_is_measured() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let tar = big_layer_tar(16);
    let started = std::time::Instant::now();
    let (layer, stats, reader_wait) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            store
                .create_layer(
                    LayerOptions {
                        no_sync: true,
                        ..LayerOptions::default()
                    },
                    Some(&mut &tar[..]),
                )
                .unwrap()
        });
        // A containers-storage reader started during the extraction waits for layers.lock.
        let reader_wait = if have("containers-storage") {
            while !fs::read_to_string(s.root().join("vfs-layers/layers.json"))
                .unwrap_or_default()
                .contains("incomplete")
                && !writer.is_finished()
            {
                std::thread::yield_now();
            }
            let t = std::time::Instant::now();
            let listed = common::cs_json(&s, &["layers", "-j"]);
            assert_eq!(
                listed.as_array().unwrap().len(),
                1,
                "the reader sees the finished layer"
            );
            assert!(listed[0].get("flags").is_none());
            Some(t.elapsed())
        } else {
            None
        };
        let (layer, stats) = writer.join().unwrap();
        (layer, stats, reader_wait)
    });
    let total = started.elapsed();
    eprintln!("MEASURE: a containers-storage `layers` started mid-extraction took {reader_wait:?}");
    assert_eq!(layer.uncompressed_size, tar.len() as i64);
    eprintln!(
        "MEASURE: 16 MiB plain layer on tmpfs (vfs): layers.lock held {:?} of {:?} total",
        stats.layers_lock_held, total
    );
    store.delete_layer(&layer.id).unwrap();
    let staged = store.stage_blob(&mut &tar[..]).unwrap();
    let (_, stats2) = store
        .create_layer_from_staged(
            LayerOptions {
                no_sync: true,
                ..LayerOptions::default()
            },
            &staged,
        )
        .unwrap();
    eprintln!(
        "MEASURE: same layer from a staged blob: layers.lock held {:?}",
        stats2.layers_lock_held
    );
}

/// Child half of the crash test: creates a layer from stdin (which the parent never finishes).
#[test]
#[ignore = "helper process for the crash test"]
fn child_layer_writer() {
    let Ok(root) = std::env::var("PODSTORE_CHILD_ROOT") else {
        return;
    };
    let opts =
        podstore_metadata::StoreOptions::new(format!("{root}/root"), format!("{root}/run"), "vfs");
    let store = common::open_store(&opts);
    let _ = store.create_layer(
        LayerOptions {
            id: Some("c".repeat(64)),
            ..LayerOptions::default()
        },
        Some(&mut std::io::stdin().lock()),
    );
}

#[test]
fn a_crash_mid_extraction_is_cleaned_up_by_podstore_and_by_containers_storage() {
    for cleaner in ["podstore", "containers-storage"] {
        if cleaner == "containers-storage" && !have("containers-storage") {
            continue;
        }
        let s = Scratch::new("vfs");
        drop(s.open());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_layer_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env("PODSTORE_CHILD_ROOT", s.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // Half a layer: a header and part of a file.
        let tar = big_layer_tar(2);
        stdin.write_all(&tar[..(1 << 20)]).unwrap();
        stdin.flush().unwrap();
        let layers_json = s.root().join("vfs-layers/layers.json");
        let id = "c".repeat(64);
        let mut seen = false;
        for _ in 0..2000 {
            let text = fs::read_to_string(&layers_json).unwrap_or_default();
            if text.contains(&id)
                && text.contains("\"incomplete\":true")
                && s.root().join(format!("vfs/dir/{id}/big")).exists()
            {
                seen = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(seen, "the child never wrote the incomplete record");
        child.kill().unwrap();
        child.wait().unwrap();
        drop(stdin);
        if cleaner == "podstore" {
            let store = s.open();
            assert!(matches!(store.layer(&id), Err(Error::LayerUnknown { .. })));
        } else {
            let listed = common::cs_json(&s, &["layers", "-j"]);
            assert!(listed.as_array().unwrap().is_empty(), "{listed}");
        }
        assert_eq!(fs::read_to_string(&layers_json).unwrap(), "[]", "{cleaner}");
        assert!(
            !s.root().join(format!("vfs/dir/{id}")).exists(),
            "{cleaner} left the layer dir"
        );
        let tmp: Vec<_> = fs::read_dir(s.root().join("vfs-layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect();
        // containers-storage 1.43 ignores stale temp files; podstore removes them.
        if cleaner == "podstore" {
            assert!(tmp.is_empty(), "{tmp:?}");
        }
    }
}

#[test]
fn reader_in_layers_json_sees_complete_records_only_via_public_api() {
    // A layer being created is invisible to readers through the API (they wait for the lock);
    // an incomplete record found under a read lock is crash debris and hidden.
    let s = Scratch::new("vfs");
    let store = s.open();
    let img = test_image("vis");
    pull_like_c_image(&store, &img, "v:1");
    let text = fs::read_to_string(s.root().join("vfs-layers/layers.json")).unwrap();
    let patched = text.replacen(
        "\"uidset\"",
        "\"flags\":{\"incomplete\":true},\"uidset\"",
        1,
    );
    // Write it through a second path that bypasses the store (simulating another writer's
    // crash) and bump the token so the cache is invalidated.
    fs::write(s.root().join("vfs-layers/layers.json"), &patched).unwrap();
    let lf = podstore_metadata::lockfile::LockFile::open(&s.root().join("vfs-layers/layers.lock"))
        .unwrap();
    lf.write().unwrap().record_write().unwrap();
    let visible = store.layers().unwrap();
    assert_eq!(
        visible.len(),
        1,
        "the incomplete layer is hidden from readers"
    );
}
