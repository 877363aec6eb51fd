//! Concurrent pulls in one process: 8 overlapping images (`small-01`..`small-08` share the
//! busybox layer) pulled at once through one service; every image lands, every layer exists
//! once, and the shared blob is downloaded by exactly one of them (the blob store's
//! singleflight; the others find it present or the layer already committed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use podstore_image::{ImageService, ImageServiceOptions, PullEvent, PullOptions};
use podstore_metadata::{Store, StoreOptions};
use podstore_registry::ProgressState;
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::registry::{RegistryMode, RegistrySet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_parallel_pulls_of_overlapping_images() {
    let dir = tempfile::Builder::new()
        .prefix("podstore-image-conc-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let conf = dir.path().join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let store = Arc::new(
        Store::open(&StoreOptions::new(
            dir.path().join("root"),
            dir.path().join("run"),
            "vfs",
        ))
        .unwrap(),
    );
    let svc = Arc::new(
        ImageService::new(
            Arc::clone(&store),
            ImageServiceOptions {
                registries_conf: Some(conf),
                auth_file: Some(dir.path().join("none.json")),
                keep_compressed_blobs: true,
                ..ImageServiceOptions::default()
            },
        )
        .unwrap(),
    );
    let fixtures = FixtureSet::shared().unwrap();
    let plain = RegistrySet::shared().unwrap().get(RegistryMode::Plain);
    let smalls: Vec<_> = fixtures.small_images().into_iter().take(8).collect();
    assert_eq!(smalls.len(), 8);
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
    let mut tasks = Vec::new();
    for fx in &smalls {
        let svc = Arc::clone(&svc);
        let input = format!(
            "docker://{}",
            plain.image_reference(&fx.registry_reference())
        );
        let options = PullOptions {
            progress: Some(tx.clone()),
            ..PullOptions::default()
        };
        tasks.push(tokio::spawn(async move {
            svc.pull_image(&input, &options).await
        }));
    }
    drop(tx);
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().id);
    }
    for (id, fx) in ids.iter().zip(&smalls) {
        assert_eq!(id, fx.image_id().unwrap());
    }
    assert_eq!(store.images().unwrap().len(), 8);
    // the shared base layer + one unique layer per image
    let shared = &smalls[0].layers[0];
    assert!(smalls.iter().all(|f| f.layers[0].diff_id == shared.diff_id));
    assert_eq!(store.layers().unwrap().len(), 1 + 8);
    let mut committed = 0;
    while let Some(event) = rx.recv().await {
        if let PullEvent::Download(e) = event
            && e.digest.to_string() == shared.digest
            && e.state == ProgressState::Committed
        {
            committed += 1;
        }
    }
    assert_eq!(
        committed, 1,
        "the shared blob was downloaded more than once"
    );
    // podstore's own listing agrees
    assert_eq!(svc.list_images("").unwrap().len(), 8);
}
