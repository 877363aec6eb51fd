//! Interop with a real tar writer: trees packed by GNU tar (pax format with xattrs, and GNU
//! format with long names) are applied by the vfs driver, the unpacked tree must equal the
//! source tree (types, modes, owners, contents, link counts, xattrs, mtimes), and the
//! tar-split must rebuild GNU tar's exact bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{Kind, shm_tempdir, snapshot};
use podstore_layer::{ApplyOptions, CreateOptions, Driver, Vfs, reassemble};

fn build_source(dir: &Path) {
    let deep = (1..=30).fold(dir.join("deep"), |p, i| {
        p.join(format!("level-{i:02}-padding"))
    });
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("file"), "deep\n").unwrap();
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/file"), "content\n").unwrap();
    std::fs::hard_link(dir.join("a/file"), dir.join("a/b/link")).unwrap();
    std::os::unix::fs::symlink("../file", dir.join("a/b/sym")).unwrap();
    std::os::unix::fs::symlink("/absolute/dangling", dir.join("a/dangling")).unwrap();
    std::fs::write(dir.join("a/suid"), "suid\n").unwrap();
    std::os::unix::fs::chown(dir.join("a/suid"), Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(dir.join("a/suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::create_dir(dir.join("sticky")).unwrap();
    std::fs::set_permissions(dir.join("sticky"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let long = format!("{}-{}", "n".repeat(120), "m".repeat(120));
    std::fs::write(dir.join(&long), "long\n").unwrap();
    std::fs::write(dir.join("xattr"), "x\n").unwrap();
    rustix::fs::setxattr(
        dir.join("xattr"),
        "user.color",
        b"blue",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let mut big = vec![0u8; 3 << 20];
    for (i, b) in big.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    std::fs::write(dir.join("a/big"), big).unwrap();
    // fixed times everywhere, as image builders do
    let status = Command::new("find")
        .arg(dir)
        .args(["-exec", "touch", "-h", "-d", "@1577836800", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn gnu_tar_layers_unpack_exactly() {
    let tmp = shm_tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_source(&src);
    let expected = snapshot(&src);
    let vfs = Vfs::new(tmp.path().join("vfs")).unwrap();
    for (n, format) in ["pax", "gnu"].into_iter().enumerate() {
        let tar_path = tmp.path().join(format!("{format}.tar"));
        let mut cmd = Command::new("tar");
        cmd.args([
            "-C",
            src.to_str().unwrap(),
            "--sort=name",
            "--numeric-owner",
            &format!("--format={format}"),
        ]);
        if format == "pax" {
            cmd.args([
                "--xattrs",
                "--xattrs-include=user.*",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            ]);
        }
        let status = cmd
            .args(["-cf", tar_path.to_str().unwrap(), "."])
            .status()
            .unwrap();
        assert!(status.success());
        let tar = std::fs::read(&tar_path).unwrap();
        let id = format!("{:064x}", n + 1);
        vfs.create(&id, None, &CreateOptions::default()).unwrap();
        let mut split = Vec::new();
        let blob = common::gzip(&tar);
        let report = vfs
            .apply_diff(
                &id,
                None,
                &mut &blob[..],
                &mut split,
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(report.diff_digest.to_string(), common::sha256(&tar));
        assert_eq!(
            report.uids.iter().copied().collect::<Vec<_>>(),
            vec![0, 1000]
        );
        let root = vfs.lookup_dirs(&id).unwrap().remove(0);
        let actual = snapshot(&root);
        assert_eq!(
            actual.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{format}"
        );
        for (path, want) in &expected {
            let got = &actual[path];
            assert_eq!(got.kind, want.kind, "{format}: {path}");
            assert_eq!(
                (got.mode, got.uid, got.gid),
                (want.mode, want.uid, want.gid),
                "{format}: {path}"
            );
            if want.kind != Kind::Dir {
                assert_eq!(got.nlink, want.nlink, "{format}: {path} links");
            }
            assert_eq!(got.mtime.0, want.mtime.0, "{format}: {path} mtime");
            if format == "pax" {
                let user = |n: &common::Node| {
                    n.xattrs
                        .iter()
                        .filter(|(k, _)| k.starts_with("user."))
                        .count()
                };
                assert_eq!(user(got), user(want), "{format}: {path} xattrs");
                assert_eq!(got.xattrs.get("user.color"), want.xattrs.get("user.color"));
            }
        }
        let mut rebuilt = Vec::new();
        reassemble(&[root], &split[..], &mut rebuilt).unwrap();
        assert!(
            rebuilt == tar,
            "{format}: tar-split did not rebuild GNU tar's bytes"
        );
    }
}
