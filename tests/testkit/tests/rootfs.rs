//! The fixtures' root filesystems: applying the layers (GNU tar for extraction, whiteouts and
//! type changes handled here) gives exactly what `multilayer_expectations` and
//! `busybox_expectations` say, busybox runs in a chroot, and the on-disk cache survives
//! concurrent builders.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fixtures::{
    FixtureOptions, FixtureSet, ImageFixture, busybox_expectations, check_rootfs,
    multilayer_expectations,
};
use std::fs;
use std::path::Path;
use std::process::Command;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("testkit-rootfs-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).unwrap(),
        Ok(_) => fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// A minimal overlay-semantics applier: whiteouts, opaque dirs and type changes first, then
/// GNU tar extracts everything else with owners, modes and xattrs.
fn apply_layer(root: &Path, tar_bytes: &[u8], scratch: &Path) {
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let raw = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let rel = raw.trim_start_matches("./").trim_end_matches('/');
        if rel.is_empty() {
            continue;
        }
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        if name == ".wh..wh..opq" {
            for child in fs::read_dir(root.join(dir)).unwrap() {
                remove_any(&child.unwrap().path());
            }
        } else if let Some(target) = name.strip_prefix(".wh.") {
            remove_any(&root.join(dir).join(target));
        } else {
            let path = root.join(rel);
            let is_dir = entry.header().entry_type().is_dir();
            match fs::symlink_metadata(&path) {
                Ok(m) if is_dir && !m.is_dir() => fs::remove_file(&path).unwrap(),
                Ok(_) if !is_dir => remove_any(&path),
                _ => {}
            }
        }
    }
    let file = scratch.join("layer.tar");
    fs::write(&file, tar_bytes).unwrap();
    let out = Command::new("tar")
        .args(["-xpf"])
        .arg(&file)
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--same-owner",
            "--exclude=.wh.*",
            "-C",
        ])
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -x: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unpack(set: &FixtureSet, image: &ImageFixture, dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    fs::create_dir_all(&root).unwrap();
    for layer in &image.layers {
        apply_layer(&root, &set.read_layer_tar(layer).unwrap(), dir);
    }
    root
}

#[test]
fn multilayer_and_its_zstd_twin_unpack_to_the_expected_tree() {
    let set = FixtureSet::shared().unwrap();
    for tag in ["multilayer", "multilayer-zstd"] {
        let dir = tmp();
        let root = unpack(set, set.image(tag).unwrap(), dir.path());
        check_rootfs(&root, &multilayer_expectations()).unwrap();
        // The check can fail: change one file and it names it.
        fs::write(root.join("etc/app.conf"), "version=3\n").unwrap();
        fs::remove_file(root.join("links/rel")).unwrap();
        let err = format!(
            "{:#}",
            check_rootfs(&root, &multilayer_expectations()).unwrap_err()
        );
        assert!(
            err.contains("etc/app.conf") && err.contains("links/rel: missing"),
            "{err}"
        );
    }
}

#[test]
fn busybox_unpacks_to_the_expected_tree_and_runs_in_a_chroot() {
    let set = FixtureSet::shared().unwrap();
    for tag in [
        "busybox",
        "busybox-uncompressed",
        "busybox-zstd",
        "small-07",
    ] {
        let dir = tmp();
        let root = unpack(set, set.image(tag).unwrap(), dir.path());
        check_rootfs(&root, &busybox_expectations().unwrap()).unwrap();
        if tag == "small-07" {
            assert_eq!(
                fs::read_to_string(root.join("etc/testkit-variant")).unwrap(),
                "small-07\n"
            );
        }
    }
    let dir = tmp();
    let root = unpack(set, set.image("busybox").unwrap(), dir.path());
    let out = Command::new("chroot")
        .arg(&root)
        .args([
            "/bin/sh",
            "-c",
            "echo hello from $(id -u) in $(pwd); ls /etc",
        ])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("hello from 0 in /\n"), "{stdout}");
    assert!(stdout.contains("passwd"), "{stdout}");
}

#[test]
fn multiarch_amd64_is_busybox_plus_a_marker() {
    let set = FixtureSet::shared().unwrap();
    let index = set.image("multiarch").unwrap();
    assert!(index.is_index());
    let [amd64, arm64] = [&index.manifests[0], &index.manifests[1]];
    assert_eq!(amd64.platform.as_ref().unwrap().architecture, "amd64");
    let arm = arm64.platform.as_ref().unwrap();
    assert_eq!(
        (arm.architecture.as_str(), arm.variant.as_deref()),
        ("arm64", Some("v8"))
    );
    assert_eq!(
        amd64.layers[0].digest,
        set.image("busybox").unwrap().layers[0].digest
    );
    assert_eq!(arm64.layers.len(), 1);
    let dir = tmp();
    let root = unpack(set, amd64, dir.path());
    assert_eq!(
        fs::read_to_string(root.join("etc/testkit-arch")).unwrap(),
        "amd64\n"
    );
    assert!(root.join("bin/busybox").is_file());
}

#[test]
fn big_applies_its_whiteout_and_overwrite() {
    let dir = tmp();
    let set = FixtureSet::build(
        &dir.path().join("oci"),
        &FixtureOptions::default().with_small_count(0).with_big(1),
    )
    .unwrap();
    let big = set.image("big").unwrap();
    assert_eq!(big.layers.len(), 4);
    assert_eq!(
        set.image("big-zstd").unwrap().layers[3].diff_id,
        big.layers[3].diff_id
    );
    let root = unpack(&set, big, dir.path());
    let files = root.join("usr/share/files");
    assert!(!files.join("d00").exists(), "d00 whiteout not applied");
    assert!(files.join("d39").is_dir());
    let d01e00: Vec<_> = fs::read_dir(files.join("d01/e00"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let overwritten = d01e00.iter().find(|n| n.starts_with("f-00001.")).unwrap();
    assert_eq!(
        fs::read_to_string(files.join("d01/e00").join(overwritten)).unwrap(),
        "overwritten in layer 4\n"
    );
    // 1 % of 64 MiB of random data, and of 16 MiB of zeros.
    assert_eq!(
        fs::metadata(root.join("opt/blobs/random-64M.bin"))
            .unwrap()
            .len(),
        (64 << 20) / 100
    );
    assert_eq!(
        fs::metadata(root.join("var/lib/zero/zeros-16M"))
            .unwrap()
            .len(),
        (16 << 20) / 100
    );
    // The random layer does not compress; the text layer does.
    let (l2, l3) = (&big.layers[1], &big.layers[2]);
    assert!(l2.size * 100 > l2.uncompressed_size * 95, "{l2:?}");
    assert!(l3.size * 2 < l3.uncompressed_size, "{l3:?}");
}

#[test]
fn concurrent_cached_builds_agree_and_leave_one_complete_copy() {
    let cache = tmp();
    let opts = FixtureOptions::default().with_small_count(2);
    let sets: Vec<FixtureSet> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| FixtureSet::cached_in(cache.path(), &opts).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(sets[0], sets[1]);
    assert_eq!(sets[1], sets[2]);
    let names: Vec<String> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "leftovers: {names:?}");
    // A later call reuses the build (same directory, same content).
    let again = FixtureSet::cached_in(cache.path(), &opts).unwrap();
    assert_eq!(again, sets[0]);
    assert_eq!(again.dir(), sets[0].dir());
}

/// Full-scale `big` (slow: run with `--ignored`): about 300 MiB uncompressed in 4 layers.
#[test]
#[ignore = "builds ~300 MiB; run by hand or from the benchmarks"]
fn big_at_full_scale_is_about_300_mib() {
    let dir = tmp();
    let started = std::time::Instant::now();
    let set = FixtureSet::build(
        &dir.path().join("oci"),
        &FixtureOptions::default().with_small_count(0).with_big(100),
    )
    .unwrap();
    let big = set.image("big").unwrap();
    let total: u64 = big.layers.iter().map(|l| l.uncompressed_size).sum();
    eprintln!(
        "big at 100 %: {} MiB uncompressed, {} MiB gzip, layers {:?}, built (with big-zstd) in {:?}",
        total >> 20,
        big.layers_size() >> 20,
        big.layers
            .iter()
            .map(|l| (l.uncompressed_size >> 20, l.size >> 20))
            .collect::<Vec<_>>(),
        started.elapsed()
    );
    assert!((280 << 20..=330 << 20).contains(&total), "{total}");
}
