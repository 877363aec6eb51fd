//! One conformance suite run against both drivers: a five-layer image (pax with `./` names,
//! hardlinks across directories, FIFO, devices, xattrs, a file capability, long names and
//! paths, setuid/setgid/sticky, owners, sub-second mtimes; whiteouts of files and directories,
//! type changes; an opaque directory; an empty tar; GNU long names and link targets), applied
//! from gzip, zstd and plain blobs; the mounted tree is compared with the expected tree, and
//! every layer's tar-split is checked by rebuilding the exact tar.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Entry, Format, Kind, Node, TarWriter, gzip, sha256, shm_tempdir, snapshot, zstd};
use podstore_layer::{
    ApplyOptions, Compression, CreateOptions, Driver, MountOptions, Overlay, OverlayOptions, Vfs,
    reassemble,
};

const CAP_NET_BIND_SERVICE: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const LONG_NAME_LEN: usize = 255;

fn deep_dirs() -> Vec<String> {
    let mut dirs = Vec::new();
    let mut path = String::from("deep");
    for i in 1..=40 {
        path.push_str(&format!("/directory-level-{i:02}"));
        dirs.push(path.clone());
    }
    dirs
}

fn gnu_dir() -> String {
    format!("gnu/dir-{}", "x".repeat(120))
}

fn gnu_file() -> String {
    format!("{}/file-{}", gnu_dir(), "y".repeat(150))
}

struct Layer {
    tar: Vec<u8>,
    blob: Vec<u8>,
    compression: Compression,
    uids: Vec<u32>,
}

fn layer1() -> Vec<u8> {
    let mut w = TarWriter::new(Format::Pax);
    let d = |n: &str| Entry::dir(&format!("./{n}/"));
    let f = |n: &str, data: &str| Entry::file(&format!("./{n}"), data.as_bytes());
    w.add(Entry::dir("./"));
    w.add(d("data"));
    w.add(d("data/a").xattr("user.bench.dir", b"yes"));
    w.add(f("data/a/file1", "file1 content\n"));
    w.add(f("data/a/file2", "file2 v1\n"));
    w.add(Entry::hardlink("./data/a/hardlink1", "./data/a/file1"));
    w.add(d("data/b"));
    w.add(f("data/b/file", "to be whited out\n"));
    w.add(Entry::hardlink(
        "./data/b/hardlink-crossdir",
        "./data/a/file1",
    ));
    w.add(f("data/b/keep", "stays\n"));
    w.add(d("data/c"));
    w.add(d("data/c/x"));
    w.add(d("data/c/x/y"));
    w.add(f("data/c/x/y/z", "deep in removed dir\n"));
    w.add(Entry::chardev("./data/dev-null", 1, 3));
    w.add(Entry::blockdev("./data/loop0", 7, 0));
    w.add(f("data/empty-file", ""));
    w.add(Entry::fifo("./data/fifo"));
    w.add(f("data/mode0000", "secret\n").mode(0));
    w.add(d("data/private-dir").mode(0o700));
    w.add(
        f("data/xattr-file", "xattr carrier\n")
            .xattr("user.bench.color", b"blue")
            .xattr("user.bench.binary", &[0, 0xff, 0, 0xff]),
    );
    w.add(d("deep"));
    let dirs = deep_dirs();
    for dir in &dirs {
        w.add(d(dir));
    }
    w.add(f(&format!("{}/file", dirs[dirs.len() - 1]), "deep\n"));
    w.add(d("etc"));
    w.add(f("etc/app.conf", "version=1\n"));
    w.add(d("links"));
    w.add(Entry::symlink("./links/abs", "/data/a/file1"));
    w.add(Entry::symlink("./links/dangling", "/nonexistent/target"));
    w.add(Entry::symlink("./links/dir", "../data"));
    w.add(Entry::symlink("./links/loop-a", "loop-b"));
    w.add(Entry::symlink("./links/loop-b", "loop-a"));
    w.add(Entry::symlink("./links/rel", "../data/a/file1"));
    w.add(d("mtime"));
    w.add(f("mtime/precise", "precise\n").pax_mtime("1234567890.123456789"));
    w.add(d("names"));
    w.add(f("names/-leading-dash", "dash\n"));
    w.add(f(&format!("names/{}", "L".repeat(LONG_NAME_LEN)), "long\n"));
    w.add(f("names/unicode-ü-日本語", "unicode\n"));
    w.add(f("names/with space", "space\n"));
    w.add(d("opt"));
    w.add(d("opt/keep"));
    w.add(f("opt/keep/lower-file", "hidden by opaque dir\n"));
    w.add(d("opt/keep/sub"));
    w.add(f("opt/keep/sub/lower-nested", "hidden too\n"));
    w.add(d("owned"));
    w.add(f("owned/by-1000", "owned by 1000\n").owner(1000, 1000));
    w.add(f("owned/by-65534", "owned by nobody\n").owner(65534, 65534));
    w.add(d("owned/dir-1000").mode(0o750).owner(1000, 1000));
    w.add(d("replace"));
    w.add(d("replace/dir-to-file"));
    w.add(f("replace/dir-to-file/child", "child\n"));
    w.add(f("replace/file-to-dir", "was a file\n"));
    w.add(f("replace/file-to-symlink", "was a file\n"));
    w.add(Entry::symlink("./replace/symlink-to-file", "somewhere"));
    w.add(d("srv"));
    w.add(d("srv/shared").mode(0o1777));
    w.add(d("usr"));
    w.add(d("usr/bin"));
    w.add(
        f("usr/bin/cap-tool", "#!/bin/sh\necho cap\n")
            .mode(0o755)
            .xattr("security.capability", &CAP_NET_BIND_SERVICE),
    );
    w.add(f("usr/bin/sgid-tool", "#!/bin/sh\necho sgid\n").mode(0o2755));
    w.add(f("usr/bin/suid-tool", "#!/bin/sh\necho suid\n").mode(0o4755));
    w.finish()
}

fn layer2() -> Vec<u8> {
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::dir("data/"));
    w.add(Entry::file("data/.wh.c", b""));
    w.add(Entry::dir("data/a/"));
    w.add(Entry::file("data/a/file2", b"file2 v2\n"));
    w.add(Entry::dir("data/b/"));
    w.add(Entry::file("data/b/.wh.file", b""));
    w.add(Entry::dir("etc/"));
    w.add(Entry::file("etc/app.conf", b"version=2\n"));
    w.add(Entry::dir("new/"));
    w.add(Entry::file("new/h1", b"three links\n"));
    w.add(Entry::hardlink("new/h2", "new/h1"));
    w.add(Entry::hardlink("new/h3", "new/h1"));
    w.add(Entry::dir("replace/"));
    w.add(Entry::file("replace/dir-to-file", b"now a file\n"));
    w.add(Entry::dir("replace/file-to-dir/"));
    w.add(Entry::file("replace/file-to-dir/child", b"now a dir\n"));
    w.add(Entry::symlink("replace/file-to-symlink", "../etc/app.conf"));
    w.add(Entry::file("replace/symlink-to-file", b"now a file\n"));
    w.finish()
}

fn layer3() -> Vec<u8> {
    let mut w = TarWriter::new(Format::Pax);
    w.add(Entry::dir("data/"));
    w.add(Entry::dir("data/a/"));
    w.add(Entry::file("data/a/.wh.hardlink1", b""));
    w.add(Entry::dir("opt/"));
    w.add(Entry::dir("opt/keep/"));
    w.add(Entry::file("opt/keep/.wh..wh..opq", b""));
    w.add(Entry::file("opt/keep/upper-file", b"only this survives\n"));
    w.finish()
}

fn layer5() -> Vec<u8> {
    let mut w = TarWriter::new(Format::Gnu);
    w.add(Entry::dir("gnu/"));
    w.add(Entry::dir(&format!("{}/", gnu_dir())));
    w.add(Entry::file(&gnu_file(), b"gnu long name\n"));
    w.add(Entry::hardlink("gnu/hardlink-to-long", &gnu_file()));
    w.add(Entry::symlink(
        "gnu/symlink-long-target",
        &format!("/{}", gnu_file()),
    ));
    w.finish()
}

fn image() -> Vec<Layer> {
    let l1 = layer1();
    let l2 = layer2();
    let l3 = layer3();
    let l4 = vec![0u8; 10240];
    let l5 = layer5();
    vec![
        Layer {
            blob: gzip(&l1),
            tar: l1,
            compression: Compression::Gzip,
            uids: vec![0, 1000, 65534],
        },
        Layer {
            blob: zstd(&l2),
            tar: l2,
            compression: Compression::Zstd,
            uids: vec![0],
        },
        Layer {
            blob: l3.clone(),
            tar: l3,
            compression: Compression::None,
            uids: vec![0],
        },
        Layer {
            blob: gzip(&l4),
            tar: l4,
            compression: Compression::Gzip,
            uids: vec![],
        },
        Layer {
            blob: zstd(&l5),
            tar: l5,
            compression: Compression::Zstd,
            uids: vec![0],
        },
    ]
}

/// kind, mode, uid, gid, link count (non-directories), user/security xattrs.
type Expected = (Kind, u32, u32, u32, u64, Vec<(&'static str, Vec<u8>)>);

/// What the merged tree must hold: path → (kind, mode, uid, gid, nlink for non-dirs, user/
/// security xattrs).
fn expected_tree(driver: &str) -> BTreeMap<String, Expected> {
    let mut t = BTreeMap::new();
    let mut dir = |p: &str, mode: u32| {
        t.insert(p.to_owned(), (Kind::Dir, mode, 0, 0, 0, vec![]));
    };
    for p in [
        "data",
        "data/b",
        "deep",
        "etc",
        "links",
        "mtime",
        "names",
        "new",
        "opt",
        "opt/keep",
        "owned",
        "replace",
        "replace/file-to-dir",
        "srv",
        "usr",
        "usr/bin",
        "gnu",
    ] {
        dir(p, 0o755);
    }
    dir("data/private-dir", 0o700);
    dir("srv/shared", 0o1777);
    for d in deep_dirs() {
        dir(&d, 0o755);
    }
    dir(&gnu_dir(), 0o755);
    // vfs merges the re-added directory onto the old one and keeps its xattr (as
    // containers/storage's vfs does); overlay shows the upper directory, which has none.
    let data_a_xattrs = if driver == "vfs" {
        vec![("user.bench.dir", b"yes".to_vec())]
    } else {
        vec![]
    };
    t.insert("data/a".into(), (Kind::Dir, 0o755, 0, 0, 0, data_a_xattrs));
    t.insert(
        "owned/dir-1000".into(),
        (Kind::Dir, 0o750, 1000, 1000, 0, vec![]),
    );
    let mut file = |p: &str, content: &str, mode: u32, owner: u32, nlink: u64| {
        t.insert(
            p.to_owned(),
            (
                Kind::File(content.as_bytes().to_vec()),
                mode,
                owner,
                owner,
                nlink,
                vec![],
            ),
        );
    };
    // overlay reports the lower inode's link count, which still counts the whited-out name
    let file1_links = if driver == "vfs" { 2 } else { 3 };
    file("data/a/file1", "file1 content\n", 0o644, 0, file1_links);
    file(
        "data/b/hardlink-crossdir",
        "file1 content\n",
        0o644,
        0,
        file1_links,
    );
    file("data/a/file2", "file2 v2\n", 0o644, 0, 1);
    file("data/b/keep", "stays\n", 0o644, 0, 1);
    file("data/empty-file", "", 0o644, 0, 1);
    file("data/mode0000", "secret\n", 0, 0, 1);
    file(&format!("{}/file", deep_dirs()[39]), "deep\n", 0o644, 0, 1);
    file("etc/app.conf", "version=2\n", 0o644, 0, 1);
    file("mtime/precise", "precise\n", 0o644, 0, 1);
    file("names/-leading-dash", "dash\n", 0o644, 0, 1);
    file(
        &format!("names/{}", "L".repeat(LONG_NAME_LEN)),
        "long\n",
        0o644,
        0,
        1,
    );
    file("names/unicode-ü-日本語", "unicode\n", 0o644, 0, 1);
    file("names/with space", "space\n", 0o644, 0, 1);
    file("new/h1", "three links\n", 0o644, 0, 3);
    file("new/h2", "three links\n", 0o644, 0, 3);
    file("new/h3", "three links\n", 0o644, 0, 3);
    file("opt/keep/upper-file", "only this survives\n", 0o644, 0, 1);
    file("owned/by-1000", "owned by 1000\n", 0o644, 1000, 1);
    file("owned/by-65534", "owned by nobody\n", 0o644, 65534, 1);
    file("replace/dir-to-file", "now a file\n", 0o644, 0, 1);
    file("replace/file-to-dir/child", "now a dir\n", 0o644, 0, 1);
    file("replace/symlink-to-file", "now a file\n", 0o644, 0, 1);
    file("usr/bin/sgid-tool", "#!/bin/sh\necho sgid\n", 0o2755, 0, 1);
    file("usr/bin/suid-tool", "#!/bin/sh\necho suid\n", 0o4755, 0, 1);
    file(&gnu_file(), "gnu long name\n", 0o644, 0, 2);
    file("gnu/hardlink-to-long", "gnu long name\n", 0o644, 0, 2);
    t.insert(
        "usr/bin/cap-tool".into(),
        (
            Kind::File(b"#!/bin/sh\necho cap\n".to_vec()),
            0o755,
            0,
            0,
            1,
            vec![("security.capability", CAP_NET_BIND_SERVICE.to_vec())],
        ),
    );
    t.insert(
        "data/xattr-file".into(),
        (
            Kind::File(b"xattr carrier\n".to_vec()),
            0o644,
            0,
            0,
            1,
            vec![
                ("user.bench.binary", vec![0, 0xff, 0, 0xff]),
                ("user.bench.color", b"blue".to_vec()),
            ],
        ),
    );
    let mut special = |p: &str, kind: Kind, mode: u32| {
        t.insert(p.to_owned(), (kind, mode, 0, 0, 1, vec![]));
    };
    special(
        "data/dev-null",
        Kind::Char(rustix::fs::makedev(1, 3)),
        0o666,
    );
    special("data/loop0", Kind::Block(rustix::fs::makedev(7, 0)), 0o660);
    special("data/fifo", Kind::Fifo, 0o644);
    for (p, target) in [
        ("links/abs", "/data/a/file1"),
        ("links/dangling", "/nonexistent/target"),
        ("links/dir", "../data"),
        ("links/loop-a", "loop-b"),
        ("links/loop-b", "loop-a"),
        ("links/rel", "../data/a/file1"),
        ("replace/file-to-symlink", "../etc/app.conf"),
    ] {
        special(p, Kind::Symlink(target.as_bytes().to_vec()), 0o777);
    }
    special(
        "gnu/symlink-long-target",
        Kind::Symlink(format!("/{}", gnu_file()).into_bytes()),
        0o777,
    );
    t
}

fn compare(actual: &BTreeMap<String, Node>, driver: &str) {
    let expected = expected_tree(driver);
    let actual_paths: Vec<&String> = actual.keys().collect();
    let expected_paths: Vec<&String> = expected.keys().collect();
    assert_eq!(actual_paths, expected_paths, "{driver}: paths differ");
    for (path, (kind, mode, uid, gid, nlink, xattrs)) in &expected {
        let node = &actual[path];
        assert_eq!(&node.kind, kind, "{driver}: {path} kind");
        if !matches!(kind, Kind::Symlink(_)) {
            assert_eq!(node.mode, *mode, "{driver}: {path} mode {:o}", node.mode);
        }
        assert_eq!((node.uid, node.gid), (*uid, *gid), "{driver}: {path} owner");
        if *kind != Kind::Dir {
            assert_eq!(node.nlink, *nlink, "{driver}: {path} link count");
        }
        let got: Vec<(&str, Vec<u8>)> = node
            .xattrs
            .iter()
            .filter(|(k, _)| k.starts_with("user.") || k.starts_with("security."))
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let mut want = xattrs.clone();
        want.sort();
        assert_eq!(got, want, "{driver}: {path} xattrs");
    }
    assert_eq!(
        actual["mtime/precise"].mtime,
        (1_234_567_890, 123_456_789),
        "{driver}: sub-second mtime"
    );
    assert_eq!(
        actual["data"].mtime,
        (1_577_836_800, 0),
        "{driver}: directory mtime set last"
    );
    assert_eq!(
        actual["usr/bin/cap-tool"].mtime,
        (1_577_836_800, 0),
        "{driver}: file mtime"
    );
}

fn layer_id(n: usize) -> String {
    format!("{n:064x}")
}

/// Applies the image, checks reports and tar-split, returns the top layer ID.
fn apply_image(driver: &dyn Driver) -> String {
    let mut parent: Option<String> = None;
    for (i, layer) in image().iter().enumerate() {
        let id = layer_id(i + 1);
        driver
            .create(&id, parent.as_deref(), &CreateOptions::default())
            .unwrap();
        let mut split = Vec::new();
        let report = driver
            .apply_diff(
                &id,
                parent.as_deref(),
                &mut &layer.blob[..],
                &mut split,
                &ApplyOptions {
                    no_sync: true,
                    ..Default::default()
                },
            )
            .unwrap_or_else(|e| panic!("{}: layer {}: {e}", driver.name(), i + 1));
        assert_eq!(report.compression, layer.compression, "layer {}", i + 1);
        assert_eq!(report.compressed_digest.to_string(), sha256(&layer.blob));
        assert_eq!(report.compressed_size, layer.blob.len() as u64);
        assert_eq!(report.diff_digest.to_string(), sha256(&layer.tar));
        assert_eq!(report.diff_size, layer.tar.len() as u64);
        assert_eq!(
            report.uids.iter().copied().collect::<Vec<_>>(),
            layer.uids,
            "layer {} uids",
            i + 1
        );
        assert_eq!(
            report.gids.iter().copied().collect::<Vec<_>>(),
            layer.uids,
            "layer {} gids",
            i + 1
        );
        // the tar-split rebuilds the exact tar from the unpacked files
        let mut rebuilt = Vec::new();
        let dirs = driver.lookup_dirs(&id).unwrap();
        reassemble(&dirs, &split[..], &mut rebuilt)
            .unwrap_or_else(|e| panic!("{}: layer {}: {e}", driver.name(), i + 1));
        assert_eq!(
            sha256(&rebuilt),
            report.diff_digest.to_string(),
            "{}: layer {} rebuilt",
            driver.name(),
            i + 1
        );
        assert!(split.ends_with(b"\n"));
        parent = Some(id);
    }
    parent.unwrap()
}

fn conformance(driver: &dyn Driver) {
    let top = apply_image(driver);
    assert!(driver.size(&top).unwrap() > 0);

    let root = driver
        .mount(
            &top,
            &MountOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    compare(&snapshot(&root), driver.name());
    driver.unmount(&top).unwrap();

    // a container layer on top: writable, sees the image, removable
    let ctr = "c".repeat(64);
    driver
        .create(
            &ctr,
            Some(&top),
            &CreateOptions {
                read_write: true,
                ..Default::default()
            },
        )
        .unwrap();
    let root = driver.mount(&ctr, &MountOptions::default()).unwrap();
    std::fs::write(root.join("etc/app.conf"), "container\n").unwrap();
    std::fs::remove_file(root.join("data/b/keep")).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("data/a/file1")).unwrap(),
        "file1 content\n"
    );
    driver.unmount(&ctr).unwrap();
    let root = driver.mount(&ctr, &MountOptions::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        "container\n"
    );
    assert!(!root.join("data/b/keep").exists());
    driver.unmount(&ctr).unwrap();
    // the image is untouched
    let root = driver
        .mount(
            &top,
            &MountOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    compare(&snapshot(&root), driver.name());
    driver.unmount(&top).unwrap();
    driver.remove(&ctr).unwrap();
    assert!(!driver.exists(&ctr));
    assert!(driver.exists(&top));
    for i in (1..=5).rev() {
        driver.remove(&layer_id(i)).unwrap();
        assert!(!driver.exists(&layer_id(i)));
    }
}

fn no_whiteout_names(dir: &Path) {
    for (path, _) in snapshot(dir) {
        let base = path.rsplit('/').next().unwrap();
        assert!(
            !base.starts_with(".wh."),
            "{path} left in {}",
            dir.display()
        );
    }
}

#[test]
fn vfs_conformance() {
    let tmp = shm_tempdir();
    let vfs = Vfs::new(tmp.path().join("vfs")).unwrap();
    let top = apply_image(&vfs);
    // naive whiteouts: real deletions, no device or opaque markers
    let dir = tmp.path().join("vfs/dir").join(&top);
    assert!(!dir.join("data/c").exists() && !dir.join("opt/keep/lower-file").exists());
    no_whiteout_names(&dir);
    let mode = std::fs::metadata(tmp.path().join("vfs/dir").join(layer_id(1)))
        .unwrap()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o555);
    for i in 1..=5 {
        vfs.remove(&layer_id(i)).unwrap();
    }
    assert!(
        vfs.mount(
            &top,
            &MountOptions {
                options: vec!["nodev".into()],
                ..Default::default()
            }
        )
        .is_err()
    );
    conformance(&vfs);
}

#[test]
fn overlay_conformance() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let overlay = Overlay::new(
        &home,
        OverlayOptions {
            mountopt: "nodev".into(),
            ..Default::default()
        },
    )
    .unwrap();
    let top = apply_image(&overlay);

    // on-disk layout of containers/storage 1.43
    let meta = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    assert_eq!(meta(&home.join("l")).mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read_to_string(home.join(".has-mount-program")).unwrap(),
        "false"
    );
    assert_eq!(
        meta(&home.join(".has-mount-program")).mode() & 0o7777,
        0o600
    );
    let mut links = Vec::new();
    for i in 1..=5 {
        let id = layer_id(i);
        let dir = home.join(&id);
        assert_eq!(meta(&dir).mode() & 0o7777, 0o700);
        assert_eq!(
            meta(&dir.join("diff")).mode() & 0o7777,
            0o555,
            "diff mode of layer {i}"
        );
        assert_eq!(meta(&dir.join("work")).mode() & 0o7777, 0o700);
        assert_eq!(meta(&dir.join("merged")).mode() & 0o7777, 0o700);
        let link = std::fs::read_to_string(dir.join("link")).unwrap();
        assert_eq!(link.len(), 26);
        assert!(
            link.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        assert_eq!(meta(&dir.join("link")).mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::read_link(home.join("l").join(&link)).unwrap(),
            Path::new(&format!("../{id}/diff"))
        );
        assert_eq!(dir.join("empty").exists(), i == 1);
        let lower = std::fs::read_to_string(dir.join("lower")).ok();
        let expected_lower = (i > 1).then(|| {
            links
                .iter()
                .rev()
                .map(|l| format!("l/{l}"))
                .collect::<Vec<_>>()
                .join(":")
        });
        assert_eq!(lower, expected_lower, "lower of layer {i}");
        links.push(link);
        no_whiteout_names(&dir.join("diff"));
    }
    // kernel-format whiteouts and the opaque marker
    let l2 = home.join(layer_id(2)).join("diff");
    for p in ["data/b/file", "data/c"] {
        let m = meta(&l2.join(p));
        assert!(
            std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()),
            "{p}"
        );
        assert_eq!(m.rdev(), 0);
    }
    let l3 = home.join(layer_id(3)).join("diff");
    assert_eq!(
        common::xattrs(&l3.join("opt/keep")).get("trusted.overlay.opaque"),
        Some(&b"y".to_vec())
    );
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &meta(&l3.join("data/a/hardlink1")).file_type()
    ));
    assert_eq!(
        overlay.lookup_dirs(&layer_id(3)).unwrap(),
        vec![
            l3.clone(),
            home.join(layer_id(2)).join("diff"),
            home.join(layer_id(1)).join("diff")
        ]
    );

    // mountopt from storage.conf is honoured
    let merged = overlay
        .mount(
            &top,
            &MountOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(merged.to_str().unwrap()))
        .unwrap();
    assert!(line.contains("nodev") && line.contains(" ro,"), "{line}");
    assert!(
        line.contains(&format!(
            "lowerdir={}",
            home.join(layer_id(5)).join("diff").display()
        )),
        "{line}"
    );
    overlay.unmount(&top).unwrap();
    assert!(!merged.exists(), "merged is removed on unmount");
    for i in 1..=5 {
        overlay.remove(&layer_id(i)).unwrap();
    }
    assert_eq!(
        std::fs::read_dir(home.join("l")).unwrap().count(),
        0,
        "links removed with their layers"
    );
    conformance(&overlay);
}

#[test]
fn overlay_new_mount_api_path() {
    let tmp = shm_tempdir();
    let overlay = Overlay::new(
        tmp.path().join("overlay"),
        OverlayOptions {
            mountopt: String::new(),
            force_new_mount_api: true,
            ..Default::default()
        },
    )
    .unwrap();
    conformance(&overlay);
}

#[test]
fn overlay_relative_mount_path() {
    let tmp = shm_tempdir();
    let overlay = Overlay::new(
        tmp.path().join("overlay"),
        OverlayOptions {
            mountopt: "nodev".into(),
            force_relative_mount: true,
            ..Default::default()
        },
    )
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    conformance(&overlay);
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "process cwd unchanged"
    );
}
