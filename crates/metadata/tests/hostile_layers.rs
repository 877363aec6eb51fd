//! Hostile layer tars through `Store::create_layer`, on both drivers: each fails with a typed
//! error naming the layer, and afterwards nothing is half-visible (no layer record, no driver
//! directory, no tar-split, nothing in the store's `tmp/`), nothing outside the store changed (a
//! sentinel host tree next to it is compared), and the same store still creates a good layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)]
mod common;

use std::io::Write;
use std::path::Path;

use common::Scratch;
use podstore_layer::{ApplyError, DriverError, TarError};
use podstore_metadata::{Error, LayerOptions, Store};
use podstore_testkit::tarball::{TarBuilder, TarEntry, TarFormat};

fn tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = TarBuilder::new(Vec::new(), TarFormat::Pax);
    for e in entries {
        b.append(e).unwrap();
    }
    b.finish().unwrap()
}

fn gzip_with_zeros(head: &[u8], zeros: usize) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(head).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len());
        enc.write_all(&block[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

/// Every path under `dir`, relative, sorted (empty when `dir` does not exist).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            // records and lock files appear with the first save; they are checked through
            // the Store's API instead
            if name.ends_with(".json") || name.ends_with(".lock") {
                continue;
            }
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// (case, gzip'd or plain tar, check of the apply error)
type Case = (&'static str, Vec<u8>, fn(&ApplyError) -> bool);

fn cases(host: &Path) -> Vec<Case> {
    let host_str = host.to_str().unwrap().to_owned();
    let mut sparse = tar(&[TarEntry::file("sparse", 0o644, b"data".to_vec())]);
    sparse[156] = b'S';
    sparse[148..156].fill(b' ');
    let sum: u64 = sparse[..512].iter().map(|&b| u64::from(b)).sum();
    sparse[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let good = tar(&[TarEntry::file("a", 0o644, b"x".to_vec())]);
    let mut truncated = tar(&[TarEntry::file("t", 0o644, vec![1u8; 5000])]);
    truncated.truncate(2048);
    vec![
        (
            "dotdot traversal",
            tar(&[TarEntry::file("../../escape", 0o644, b"x".to_vec())]),
            |e| matches!(e, ApplyError::Breakout { .. }),
        ),
        (
            "symlink to the host, then a file through it",
            tar(&[
                TarEntry::symlink("evil", host_str.clone()),
                TarEntry::file("evil/pwned", 0o644, b"x".to_vec()),
            ]),
            |e| matches!(e, ApplyError::Entry { entry, .. } if entry == "evil/pwned"),
        ),
        (
            "hardlink climbing out",
            tar(&[TarEntry::hardlink("link", "../../../../etc/passwd", 0o644)]),
            |e| matches!(e, ApplyError::HardlinkOutside { entry, .. } if entry == "link"),
        ),
        (
            "hardlink through a symlink to the host",
            tar(&[
                TarEntry::symlink("out", host_str.clone()),
                TarEntry::hardlink("link", "out/secret", 0o644),
            ]),
            |e| matches!(e, ApplyError::Entry { entry, .. } if entry == "link"),
        ),
        (
            "symlink loop",
            tar(&[
                TarEntry::symlink("a", "b"),
                TarEntry::symlink("b", "a"),
                TarEntry::file("a/x", 0o644, b"x".to_vec()),
            ]),
            |e| matches!(e, ApplyError::Entry { entry, .. } if entry == "a/x"),
        ),
        (
            "path past PATH_MAX",
            tar(&[TarEntry::file(
                vec!["p".repeat(250); 20].join("/"),
                0o644,
                b"x".to_vec(),
            )]),
            |e| matches!(e, ApplyError::Entry { entry, .. } if entry.len() > 4096),
        ),
        (
            "sparse entry",
            sparse,
            |e| matches!(e, ApplyError::UnsupportedEntry { entry, .. } if entry == "sparse"),
        ),
        ("truncated data", truncated, |e| {
            matches!(e, ApplyError::Tar(TarError::Truncated { .. }))
        }),
        (
            "gzip bomb behind a valid archive",
            gzip_with_zeros(&good, 64 << 20),
            |e| matches!(e, ApplyError::Tar(TarError::TrailingData { .. })),
        ),
    ]
}

fn run(driver: &'static str) {
    let scratch = Scratch::new(driver);
    let host = scratch.dir.path().join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    let store: Store = scratch.open();
    let root = scratch.root();
    // what a store with no layers looks like on disk (driver home, layers dir, tmp)
    let empty_store = tree(&root);
    let host_before = tree(&host);
    let top_before = tree(scratch.dir.path())
        .into_iter()
        .filter(|p| !p.starts_with("root") && !p.starts_with("run"))
        .collect::<Vec<_>>();
    for (name, blob, check) in cases(&host) {
        let err = store
            .create_layer(
                LayerOptions {
                    no_sync: true,
                    ..Default::default()
                },
                Some(&mut &blob[..]),
            )
            .expect_err(name);
        let Error::Driver(DriverError::Apply { id, source }) = &err else {
            panic!("{name}: {err}")
        };
        assert!(check(source), "{name}: unexpected error {source}");
        assert!(err.to_string().contains(id.as_str()), "{name}: {err}");
        // nothing half-visible, nothing left behind
        assert!(store.layers().unwrap().is_empty(), "{name}: a layer record");
        assert!(!store.layer_exists(id).unwrap(), "{name}");
        assert_eq!(tree(&root), empty_store, "{name}: files left in the store");
        // nothing outside the store touched
        assert_eq!(tree(&host), host_before, "{name}: host tree changed");
        assert_eq!(
            std::fs::read(host.join("secret")).unwrap(),
            b"host secret\n",
            "{name}"
        );
        let top_now: Vec<_> = tree(scratch.dir.path())
            .into_iter()
            .filter(|p| !p.starts_with("root") && !p.starts_with("run"))
            .collect();
        assert_eq!(top_now, top_before, "{name}: files next to the store");
    }
    assert!(!Path::new("/escape").exists());
    // the store is still usable: a good layer is created and visible
    let good = tar(&[TarEntry::file("ok", 0o644, b"ok".to_vec())]);
    let (layer, _) = store
        .create_layer(
            LayerOptions {
                no_sync: true,
                ..Default::default()
            },
            Some(&mut &good[..]),
        )
        .unwrap();
    assert_eq!(store.layers().unwrap().len(), 1);
    assert!(store.layer_exists(&layer.id).unwrap());
}

#[test]
fn hostile_layers_leave_nothing_vfs() {
    run("vfs");
}

#[test]
fn hostile_layers_leave_nothing_overlay() {
    run("overlay");
}
