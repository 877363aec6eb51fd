//! Byte-compatibility with containers/storage itself: the same layer is imported by the
//! `containers-storage` CLI (c/storage 1.43, vfs driver) and applied by podstore; the tar-split
//! JSON lines must be identical, and the digests, sizes and uid/gid sets must match the
//! `layers.json` record c/storage wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;

use common::{Entry, Format, TarWriter, shm_tempdir};
use podstore_layer::{ApplyOptions, CreateOptions, Driver, Vfs};
use podstore_testkit::peers::{ContainersStorage, StoreGuard, tool_available};

fn cstorage_import(root: &std::path::Path, blob: &[u8]) -> (Vec<u8>, serde_json::Value) {
    ContainersStorage::new(root.join("graph"), root.join("run"), "vfs")
        .run_with_input(&["import-layer"], blob);
    let layers: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("graph/vfs-layers/layers.json")).unwrap())
            .unwrap();
    let record = layers.as_array().unwrap().last().unwrap().clone();
    let id = record["id"].as_str().unwrap();
    let gz = std::fs::read(root.join(format!("graph/vfs-layers/{id}.tar-split.gz"))).unwrap();
    let mut split = Vec::new();
    flate2::read::MultiGzDecoder::new(&gz[..])
        .read_to_end(&mut split)
        .unwrap();
    (split, record)
}

fn layer() -> Vec<u8> {
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::dir("./"));
    w.add(Entry::dir("./etc/"));
    w.add(Entry::file("./etc/hello", b"hello\n"));
    w.add(Entry::hardlink("./etc/hello-link", "./etc/hello"));
    w.add(Entry::symlink("./etc/sym", "hello"));
    w.add(Entry::fifo("./etc/fifo"));
    w.add(Entry::file("./etc/.wh.gone", b""));
    w.add(Entry::file(&format!("./long/{}", "n".repeat(150)), b"long name\n").owner(1000, 1001));
    w.add(
        Entry::file("./x<&>", &[0u8; 1500])
            .xattr("user.k", b"v")
            .pax_mtime("1234567890.5"),
    );
    w.add(Entry::file("./empty", b""));
    w.finish()
}

#[test]
fn tar_split_identical_to_containers_storage() {
    if !tool_available("containers-storage") {
        return;
    }
    let tmp = shm_tempdir();
    let tar = layer();
    for (n, blob) in [tar.clone(), common::gzip(&tar)].into_iter().enumerate() {
        let (theirs, record) = cstorage_import(tmp.path(), &blob);
        let vfs = Vfs::new(tmp.path().join("ours")).unwrap();
        let id = format!("{:064x}", n + 1);
        vfs.create(&id, None, &CreateOptions::default()).unwrap();
        let mut ours = Vec::new();
        let report = vfs
            .apply_diff(
                &id,
                None,
                &mut &blob[..],
                &mut ours,
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(
            ours.iter().filter(|&&b| b == b'\n').count() > 20,
            "a real tar-split was produced"
        );
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap(),
            "tar-split lines differ from containers/storage's"
        );
        // the unpacked trees are identical too (types, modes, owners, xattrs, contents, links,
        // mtimes)
        let their_dir = tmp
            .path()
            .join("graph/vfs/dir")
            .join(record["id"].as_str().unwrap());
        let our_dir = vfs.lookup_dirs(&id).unwrap().remove(0);
        let (mut a, mut b) = (common::snapshot(&our_dir), common::snapshot(&their_dir));
        // "long/" has no entry of its own: created implicitly, with the time of creation
        for snap in [&mut a, &mut b] {
            snap.get_mut("long").unwrap().mtime = (0, 0);
        }
        assert_eq!(a, b, "vfs tree differs");
        assert_eq!(record["diff-digest"], report.diff_digest.to_string());
        assert_eq!(record["diff-size"], report.diff_size);
        assert_eq!(
            record["compressed-diff-digest"],
            report.compressed_digest.to_string()
        );
        assert_eq!(record["compressed-size"], report.compressed_size);
        assert_eq!(
            record["compression"].as_u64().unwrap_or(0),
            report.compression as u64
        );
        let ids = |key: &str| -> Vec<u64> {
            record[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect()
        };
        assert_eq!(
            ids("uidset"),
            report
                .uids
                .iter()
                .map(|&u| u64::from(u))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            ids("gidset"),
            report
                .gids
                .iter()
                .map(|&g| u64::from(g))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn overlay_diff_identical_to_containers_storage() {
    if !tool_available("containers-storage") {
        return;
    }
    let tmp = shm_tempdir();
    let _shutdown = StoreGuard::overlay(tmp.path().join("graph"), tmp.path().join("run"));
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::dir("etc/"));
    w.add(Entry::file("etc/.wh.passwd", b"").owner(3, 4));
    w.add(Entry::dir("opt/").mode(0o750));
    w.add(Entry::file("opt/.wh..wh..opq", b""));
    w.add(
        Entry::file("opt/new", b"new\n")
            .mode(0o4711)
            .owner(1000, 1000),
    );
    w.add(Entry::file("implicit/dir/file", b"x\n"));
    w.add(Entry::hardlink("opt/link", "opt/new"));
    w.add(Entry::symlink("opt/sym", "/etc/passwd"));
    w.add(Entry::chardev("dev-null", 1, 3));
    let tar = w.finish();

    ContainersStorage::new(tmp.path().join("graph"), tmp.path().join("run"), "overlay")
        .run_with_input(&["import-layer"], &tar);
    let layers: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("graph/overlay-layers/layers.json")).unwrap(),
    )
    .unwrap();
    let their_id = layers[0]["id"].as_str().unwrap().to_owned();
    let theirs = tmp.path().join("graph/overlay").join(&their_id);

    let overlay =
        podstore_layer::Overlay::new(tmp.path().join("ours/overlay"), Default::default()).unwrap();
    let id = "a".repeat(64);
    overlay
        .create(&id, None, &CreateOptions::default())
        .unwrap();
    overlay
        .apply_diff(
            &id,
            None,
            &mut &tar[..],
            &mut Vec::new(),
            &ApplyOptions {
                no_sync: true,
                ..Default::default()
            },
        )
        .unwrap();
    let ours = tmp.path().join("ours/overlay").join(&id);

    let mut a = common::snapshot(&theirs.join("diff"));
    let mut b = common::snapshot(&ours.join("diff"));
    // containers/storage creates implicit parents with the process umask applied to 0777;
    // compare everything else exactly
    for snap in [&mut a, &mut b] {
        for (_, node) in snap.iter_mut() {
            node.mtime = (0, 0);
        }
    }
    assert_eq!(b, a, "overlay diff/ differs from containers/storage's");
    // per-layer files and modes
    let mode = |p: std::path::PathBuf| {
        std::os::unix::fs::MetadataExt::mode(&std::fs::symlink_metadata(p).unwrap()) & 0o7777
    };
    for name in ["", "diff", "work", "empty", "link"] {
        assert_eq!(
            mode(ours.join(name)),
            mode(theirs.join(name)),
            "mode of {name:?}"
        );
    }
    assert_eq!(
        mode(tmp.path().join("ours/overlay/l")),
        mode(tmp.path().join("graph/overlay/l"))
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("ours/overlay/.has-mount-program")).unwrap(),
        std::fs::read_to_string(tmp.path().join("graph/overlay/.has-mount-program")).unwrap()
    );
}
