//! Setup shared by the runtime integration tests: a store and an image service over it that
//! reads an empty `registries.conf` and no auth file, both kept in the test's scratch directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use podstore_image::{ImageService, ImageServiceOptions};
use podstore_metadata::{Store, StoreOptions};

/// Opens the store at `root` / `run` with `driver` and an image service over it whose
/// `registries.conf` (empty) and absent `no-auth.json` live in `scratch`.
pub fn store_and_images(
    scratch: &Path,
    root: &Path,
    run: &Path,
    driver: &str,
) -> (Arc<Store>, ImageService) {
    let conf = scratch.join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let store = Arc::new(Store::open(&StoreOptions::new(root, run, driver)).unwrap());
    let images = ImageService::new(
        Arc::clone(&store),
        ImageServiceOptions {
            registries_conf: Some(conf),
            auth_file: Some(scratch.join("no-auth.json")),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    (store, images)
}
