//! Hostile tars, against both drivers: each must fail with its typed error naming the entry,
//! and nothing outside the layer may change (the host tree next to the store is snapshotted
//! before and after; absolute targets are checked not to exist).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Entry, Format, TarWriter, shm_tempdir, snapshot};
use podstore_layer::{
    ApplyError, ApplyOptions, CreateOptions, Driver, DriverError, Overlay, OverlayOptions,
    TarError, Vfs,
};

/// Which error a case must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Breakout,
    HardlinkOutside,
    Duplicate,
    Unsupported,
    /// A filesystem error on the named entry (ENOENT, ELOOP, ENAMETOOLONG...).
    EntryError,
    Truncated,
    BadHeader,
    Compression,
}

fn matches(err: &ApplyError, want: Want, entry: &str) -> bool {
    match (err, want) {
        (ApplyError::Breakout { entry: e }, Want::Breakout) => e == entry,
        (ApplyError::HardlinkOutside { entry: e, .. }, Want::HardlinkOutside) => e == entry,
        (ApplyError::DuplicateEntry { entry: e }, Want::Duplicate) => e == entry,
        (ApplyError::UnsupportedEntry { entry: e, .. }, Want::Unsupported) => e == entry,
        (ApplyError::Entry { entry: e, .. }, Want::EntryError) => e == entry,
        (ApplyError::Tar(TarError::Truncated { .. }), Want::Truncated) => true,
        (ApplyError::Tar(TarError::BadHeader { .. }), Want::BadHeader) => true,
        (ApplyError::UnsupportedCompression { .. }, Want::Compression) => true,
        _ => false,
    }
}

/// (case name, tar bytes, expected error, entry it must name)
fn cases(host: &Path) -> Vec<(&'static str, Vec<u8>, Want, String)> {
    let host_str = host.to_str().unwrap().to_owned();
    let tar = |entries: Vec<Entry>| {
        let mut w = TarWriter::new(Format::Pax);
        for e in entries {
            w.add(e);
        }
        w.finish()
    };
    let deep_name = format!("{}f", "d/".repeat(3000));
    let mut huge = TarWriter::new(Format::Gnu);
    huge.add(Entry::file("huge", b"only a few bytes").declared_size(1 << 40));
    let huge = huge.out.clone();
    let mut bad_checksum = tar(vec![Entry::file("x", b"x")]);
    bad_checksum[0] = b'y';
    vec![
        (
            "dotdot",
            tar(vec![Entry::file("../escape", b"x")]),
            Want::Breakout,
            "../escape".into(),
        ),
        (
            "nested dotdot",
            tar(vec![Entry::file("a/../../escape", b"x")]),
            Want::Breakout,
            "a/../../escape".into(),
        ),
        (
            "whiteout of ..",
            tar(vec![Entry::dir("sub/"), Entry::file(".wh...", b"")]),
            Want::Breakout,
            ".wh...".into(),
        ),
        (
            "absolute symlink then write through it",
            tar(vec![
                Entry::symlink("evil", &host_str),
                Entry::file("evil/pwned", b"x"),
            ]),
            Want::EntryError,
            "evil/pwned".into(),
        ),
        (
            "relative symlink climbing out then write through it",
            tar(vec![
                Entry::symlink("evil", &format!("../../../../../../../..{host_str}")),
                Entry::file("evil/pwned", b"x"),
            ]),
            Want::EntryError,
            "evil/pwned".into(),
        ),
        (
            "symlink then directory through it",
            tar(vec![
                Entry::symlink("evil", &host_str),
                Entry::dir("evil/newdir/"),
            ]),
            Want::EntryError,
            "evil/newdir/".into(),
        ),
        (
            "hardlink to an absolute host file",
            tar(vec![Entry::hardlink("link", &format!("{host_str}/secret"))]),
            Want::EntryError,
            "link".into(),
        ),
        (
            "hardlink climbing out",
            tar(vec![Entry::hardlink(
                "link",
                "../../../../../../../etc/passwd",
            )]),
            Want::HardlinkOutside,
            "link".into(),
        ),
        (
            "hardlink through a symlink to the host",
            tar(vec![
                Entry::symlink("evil", &host_str),
                Entry::hardlink("link", "evil/secret"),
            ]),
            Want::EntryError,
            "link".into(),
        ),
        (
            "symlink loop",
            tar(vec![
                Entry::symlink("loop-a", "loop-b"),
                Entry::symlink("loop-b", "loop-a"),
                Entry::file("loop-a/x", b"x"),
            ]),
            Want::EntryError,
            "loop-a/x".into(),
        ),
        (
            "very deep path",
            tar(vec![Entry::file(&deep_name, b"x")]),
            Want::EntryError,
            deep_name.clone(),
        ),
        ("huge declared size", huge, Want::Truncated, String::new()),
        (
            "duplicate entry",
            tar(vec![Entry::file("a", b"1"), Entry::file("./a", b"2")]),
            Want::Duplicate,
            "./a".into(),
        ),
        (
            "header-only entry with data",
            tar(vec![Entry::symlink("s", "t").declared_size(5)]),
            Want::Unsupported,
            "s".into(),
        ),
        ("bad checksum", bad_checksum, Want::BadHeader, String::new()),
        (
            "bzip2",
            b"BZh91AY&SY".to_vec(),
            Want::Compression,
            String::new(),
        ),
    ]
}

fn run(driver: &dyn Driver, tmp: &Path) {
    let host = tmp.join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    std::fs::write(host.join("dir/file"), "host file\n").unwrap();
    let before = snapshot(&host);
    let top_level: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for (i, (name, tar, want, entry)) in cases(&host).into_iter().enumerate() {
        let id = format!("{:064x}", i + 1);
        driver.create(&id, None, &CreateOptions::default()).unwrap();
        let mut split = Vec::new();
        let err = driver
            .apply_diff(
                &id,
                None,
                &mut &tar[..],
                &mut split,
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            )
            .expect_err(name);
        let DriverError::Apply { id: err_id, source } = &err else {
            panic!("{name}: {err}")
        };
        assert_eq!(err_id, &id);
        assert!(
            matches(source, want, &entry),
            "{name}: want {want:?} naming {entry:?}, got {source}"
        );
        assert!(!err.to_string().is_empty());
        // nothing outside the layer changed, nothing named by the tar appeared on the host
        assert_eq!(snapshot(&host), before, "{name}: host tree changed");
        assert!(
            !host.join("pwned").exists() && !host.join("newdir").exists(),
            "{name}"
        );
        let now: Vec<_> = std::fs::read_dir(tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(now, top_level, "{name}: new files next to the store");
        driver.remove(&id).unwrap();
        assert!(!driver.exists(&id), "{name}: layer removable");
    }
    assert!(!Path::new("/escape").exists());
}

#[test]
fn hostile_tars_vfs() {
    let tmp = shm_tempdir();
    let vfs = Vfs::new(tmp.path().join("vfs")).unwrap();
    run(&vfs, tmp.path());
}

#[test]
fn hostile_tars_overlay() {
    let tmp = shm_tempdir();
    let overlay = Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap();
    run(&overlay, tmp.path());
}

#[test]
fn truncated_and_garbage_streams_never_panic() {
    let tmp = shm_tempdir();
    let vfs = Vfs::new(tmp.path().join("vfs")).unwrap();
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::file("a/b", &[7u8; 3000]).xattr("user.x", b"y"));
    w.add(Entry::symlink("a/s", "b"));
    let full = w.finish();
    let gz = common::gzip(&full);
    for (what, blob) in [("plain", &full), ("gzip", &gz)] {
        for cut in (0..blob.len()).step_by(97) {
            let id = format!("{cut:064x}");
            vfs.create(&id, None, &CreateOptions::default()).unwrap();
            let mut split = Vec::new();
            let _ = vfs.apply_diff(
                &id,
                None,
                &mut &blob[..cut],
                &mut split,
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            );
            vfs.remove(&id).unwrap();
            let _ = what;
        }
    }
}

#[test]
fn deep_tree_applies_rebuilds_and_removes() {
    let tmp = shm_tempdir();
    for driver in [
        Box::new(Vfs::new(tmp.path().join("vfs")).unwrap()) as Box<dyn Driver>,
        Box::new(Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap()),
    ] {
        // 1000 nested directories, created implicitly (no directory entries)
        let name = format!("{}file", "d/".repeat(1000));
        let mut w = TarWriter::new(Format::Pax);
        w.add(Entry::file(&name, b"deep\n"));
        let tar = w.finish();
        let id = "e".repeat(64);
        driver.create(&id, None, &CreateOptions::default()).unwrap();
        let mut split = Vec::new();
        let report = driver
            .apply_diff(
                &id,
                None,
                &mut &tar[..],
                &mut split,
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut rebuilt = Vec::new();
        podstore_layer::reassemble(&driver.lookup_dirs(&id).unwrap(), &split[..], &mut rebuilt)
            .unwrap();
        assert_eq!(common::sha256(&rebuilt), report.diff_digest.to_string());
        driver.remove(&id).unwrap();
        assert!(!driver.exists(&id));
    }
}
