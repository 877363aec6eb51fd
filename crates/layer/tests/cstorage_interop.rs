//! Byte-compatibility with containers/storage itself: the same layer is imported by the
//! `containers-storage` CLI (c/storage 1.43, vfs driver) and applied by podstore; the tar-split
//! JSON lines must be identical, and the digests, sizes and uid/gid sets must match the
//! `layers.json` record c/storage wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

use common::{Entry, Format, TarWriter, shm_tempdir};
use podstore_layer::{ApplyOptions, CreateOptions, Driver, Vfs};

fn cstorage_import(root: &std::path::Path, blob: &[u8]) -> (Vec<u8>, serde_json::Value) {
    let mut child = Command::new("containers-storage")
        .args([
            "--graph",
            root.join("graph").to_str().unwrap(),
            "--run",
            root.join("run").to_str().unwrap(),
        ])
        .args(["--storage-driver", "vfs", "import-layer"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("containers-storage CLI (Debian package containers-storage)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), blob).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    if Command::new("containers-storage")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("containers-storage CLI not installed: skipping");
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
