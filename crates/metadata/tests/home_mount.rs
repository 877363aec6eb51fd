//! The overlay driver home's private bind mount through the Store, as containers/storage keeps
//! it: made before the first layer mount, kept while a layer is mounted, and dropped by
//! `shutdown` (and by a Store that mounted or unmounted, when it is dropped with nothing left
//! mounted); `skip_mount_home` leaves the home alone; podman's `containers-storage shutdown`
//! respects podstore's mount counts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Scratch, have};
use podstore_layer::MountOptions;
use podstore_metadata::{Error, LayerOptions, Store, StoreOptions};

/// Mount points at or below `dir`, as this process sees them.
fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_owned)
        .collect()
}

fn storage_lock_token(scratch: &Scratch) -> Vec<u8> {
    std::fs::read(scratch.root().join("storage.lock")).unwrap()
}

/// A store with one empty layer; returns the layer ID.
fn store_with_a_layer(scratch: &Scratch) -> String {
    let store = scratch.open();
    let (layer, _) = store
        .create_layer(
            LayerOptions {
                no_sync: true,
                ..LayerOptions::default()
            },
            None,
        )
        .unwrap();
    layer.id
}

#[test]
fn shutdown_drops_the_home_mount_only_when_no_layer_is_mounted() {
    let scratch = Scratch::new("overlay");
    let dir = scratch.dir.path().to_owned();
    let id = store_with_a_layer(&scratch);
    let home = scratch.root().join("overlay").display().to_string();
    // opening and creating layers mount nothing
    assert_eq!(mounts_under(&dir), Vec::<String>::new());

    let store = scratch.open();
    let merged = store.mount(&id, &MountOptions::default()).unwrap();
    let merged = merged.display().to_string();
    assert_eq!(mounts_under(&dir), vec![home.clone(), merged.clone()]);

    // without force: refused, naming the layer, and nothing changes
    let before = storage_lock_token(&scratch);
    match store.shutdown(false) {
        Err(Error::LayersMounted { ids }) => assert_eq!(ids, vec![id.clone()]),
        other => panic!("expected LayersMounted, got {other:?}"),
    }
    assert_eq!(mounts_under(&dir), vec![home.clone(), merged.clone()]);
    assert_eq!(storage_lock_token(&scratch), before);

    // a second Store that mounted nothing leaves everything as it is when dropped
    drop(scratch.open());
    assert_eq!(mounts_under(&dir), vec![home.clone(), merged.clone()]);

    // with force: the layer is unmounted, then the home; storage.lock's token moves so that
    // other processes re-check the home before their next mount
    assert_eq!(store.shutdown(true).unwrap(), vec![id.clone()]);
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    assert_eq!(store.mount_count(&id).unwrap(), 0);
    assert_ne!(storage_lock_token(&scratch), before);
    assert!(!Path::new(&merged).exists());

    // the same Store mounts again: the home is made a mount point again first
    let again = store.mount(&id, &MountOptions::default()).unwrap();
    assert_eq!(
        mounts_under(&dir),
        vec![home.clone(), again.display().to_string()]
    );
    store.unmount(&id, false).unwrap();
    assert_eq!(mounts_under(&dir), vec![home.clone()]);
    // nothing mounted: a plain shutdown drops the home, and a second one has nothing to do
    assert_eq!(store.shutdown(false).unwrap(), Vec::<String>::new());
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    assert_eq!(store.shutdown(false).unwrap(), Vec::<String>::new());
}

#[test]
fn a_dropped_store_releases_the_home_unless_a_layer_stays_mounted() {
    let scratch = Scratch::new("overlay");
    let dir = scratch.dir.path().to_owned();
    let id = store_with_a_layer(&scratch);
    let home = scratch.root().join("overlay").display().to_string();

    // mounted and unmounted by one Store: nothing is left once it is dropped
    {
        let store = scratch.open();
        store.mount(&id, &MountOptions::default()).unwrap();
        store.unmount(&id, false).unwrap();
    }
    assert_eq!(mounts_under(&dir), Vec::<String>::new());

    // mounted by one Store (kept past its drop), unmounted by another
    let merged = {
        let store = scratch.open();
        store.mount(&id, &MountOptions::default()).unwrap()
    };
    assert_eq!(
        mounts_under(&dir),
        vec![home.clone(), merged.display().to_string()]
    );
    {
        let store = scratch.open();
        assert_eq!(store.mount_count(&id).unwrap(), 1);
        assert!(!store.unmount(&id, false).unwrap());
    }
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
}

#[test]
fn skip_mount_home_leaves_the_home_alone() {
    let scratch = Scratch::new("overlay");
    let dir = scratch.dir.path().to_owned();
    let id = store_with_a_layer(&scratch);
    let mut options: StoreOptions = scratch.options();
    options.driver_options = vec!["overlay.skip_mount_home=true".into()];
    let store = Store::open(&options).unwrap();
    let merged = store.mount(&id, &MountOptions::default()).unwrap();
    assert_eq!(mounts_under(&dir), vec![merged.display().to_string()]);
    assert_eq!(store.shutdown(true).unwrap(), vec![id]);
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
}

/// containers/storage reads podstore's mount counts: its `shutdown` refuses while podstore
/// has a layer mounted, so the home mount (and the layer mount inside it) stays.
#[test]
fn containers_storage_shutdown_respects_podstore_mounts() {
    if !have("containers-storage") {
        return;
    }
    let scratch = Scratch::new("overlay");
    let dir = scratch.dir.path().to_owned();
    let id = store_with_a_layer(&scratch);
    let home = scratch.root().join("overlay").display().to_string();
    let store = scratch.open();
    let merged = store.mount(&id, &MountOptions::default()).unwrap();
    let merged = merged.display().to_string();
    let out = scratch.cs().arg("shutdown").output().unwrap();
    assert!(
        !out.status.success(),
        "containers-storage shutdown succeeded"
    );
    assert_eq!(mounts_under(&dir), vec![home.clone(), merged]);
    store.unmount(&id, false).unwrap();
    common::run(scratch.cs().arg("shutdown"));
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
}
