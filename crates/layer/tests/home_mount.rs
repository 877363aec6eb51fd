//! The overlay driver home's private bind mount (containers/storage's `MakePrivate` at driver
//! init and `Cleanup`): `prepare_home` binds the home onto itself once and marks it private,
//! `cleanup` unmounts it; and `unmount` removes a layer mount that a later bind mount of the
//! home covers (what podman's driver init did to podstore's mounts before podstore kept the
//! home mounted itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::shm_tempdir;
use podstore_layer::{CreateOptions, Driver, HomeMount, MountOptions, Overlay, OverlayOptions};

/// (mount point, optional fields) of each mount at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let end = fields.iter().position(|f| *f == "-")?;
            Some((fields[4].to_owned(), fields[6..end].join(" ")))
        })
        .filter(|(mount_point, _)| Path::new(mount_point).starts_with(dir))
        .collect()
}

fn mount_points_under(dir: &Path) -> Vec<String> {
    mounts_under(dir).into_iter().map(|(m, _)| m).collect()
}

#[test]
fn prepare_home_binds_once_and_cleanup_unmounts() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let driver = Overlay::new(&home, OverlayOptions::default()).unwrap();
    // constructing the driver mounts nothing
    assert_eq!(mount_points_under(tmp.path()), Vec::<String>::new());
    assert_eq!(driver.prepare_home().unwrap(), HomeMount::Bound);
    let mounts = mounts_under(tmp.path());
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0].0, home.display().to_string());
    // private: no `shared:`/`master:` propagation tags
    assert_eq!(mounts[0].1, "", "{mounts:?}");
    assert_eq!(driver.prepare_home().unwrap(), HomeMount::AlreadyMounted);
    assert_eq!(mounts_under(tmp.path()).len(), 1);
    assert!(driver.cleanup().unwrap());
    assert_eq!(mount_points_under(tmp.path()), Vec::<String>::new());
    assert!(!driver.cleanup().unwrap());
}

#[test]
fn skip_mount_home_never_mounts() {
    let tmp = shm_tempdir();
    let options = OverlayOptions {
        skip_mount_home: true,
        ..OverlayOptions::default()
    };
    let driver = Overlay::new(tmp.path().join("overlay"), options).unwrap();
    assert_eq!(driver.prepare_home().unwrap(), HomeMount::NotNeeded);
    assert_eq!(mount_points_under(tmp.path()), Vec::<String>::new());
    assert!(!driver.cleanup().unwrap());
}

#[test]
fn unmount_removes_a_layer_mount_covered_by_a_later_home_bind() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let driver = Overlay::new(&home, OverlayOptions::default()).unwrap();
    let id = "a".repeat(64);
    driver.create(&id, None, &CreateOptions::default()).unwrap();
    // mounted while the home is not a mount point...
    let merged = driver.mount(&id, &MountOptions::default()).unwrap();
    assert_ne!(
        std::fs::metadata(&merged).unwrap().dev(),
        std::fs::metadata(&home).unwrap().dev()
    );
    // ...then covered, as podman's driver init does it
    assert_eq!(driver.prepare_home().unwrap(), HomeMount::Bound);
    assert_eq!(mounts_under(tmp.path()).len(), 2);
    // the path now reaches the bind mount's plain directory, not the overlay
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_eq!(dev(&merged), dev(&home));
    driver.unmount(&id).unwrap();
    assert_eq!(
        mount_points_under(tmp.path()),
        vec![home.display().to_string()]
    );
    assert!(!merged.exists());
    assert!(driver.cleanup().unwrap());
    driver.remove(&id).unwrap();
    assert_eq!(mount_points_under(tmp.path()), Vec::<String>::new());
}

#[test]
fn unmount_inside_the_private_home_leaves_the_home_mounted() {
    let tmp = shm_tempdir();
    let home = tmp.path().join("overlay");
    let driver = Overlay::new(&home, OverlayOptions::default()).unwrap();
    let id = "b".repeat(64);
    driver.create(&id, None, &CreateOptions::default()).unwrap();
    driver.prepare_home().unwrap();
    let merged = driver.mount(&id, &MountOptions::default()).unwrap();
    assert_eq!(
        mount_points_under(tmp.path()),
        vec![home.display().to_string(), merged.display().to_string()]
    );
    driver.unmount(&id).unwrap();
    assert_eq!(
        mount_points_under(tmp.path()),
        vec![home.display().to_string()]
    );
    assert!(driver.cleanup().unwrap());
}
