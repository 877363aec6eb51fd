//! Concurrent pulls in one process: 8 overlapping images (`small-01`..`small-08` share the
//! busybox layer) pulled at once through one service; every image lands, every layer exists
//! once, the shared blob is downloaded and every layer applied by exactly one of them (the
//! per-layer creation lock: the others find the layer committed). Across two processes
//! likewise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use podstore_image::{ImageService, ImageServiceOptions, PullEvent, PullOptions};
use podstore_metadata::{Store, StoreOptions};
use podstore_registry::ProgressState;
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::shm_tempdir;
use podstore_testkit::registry::{RegistryMode, RegistrySet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_parallel_pulls_of_overlapping_images() {
    let dir = shm_tempdir("podstore-image-conc-");
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
    let mut applied = std::collections::BTreeMap::<String, usize>::new();
    while let Some(event) = rx.recv().await {
        match event {
            PullEvent::Download(e)
                if e.digest.to_string() == shared.digest && e.state == ProgressState::Committed =>
            {
                committed += 1;
            }
            PullEvent::LayerApplied { layer_id, .. } => *applied.entry(layer_id).or_default() += 1,
            _ => {}
        }
    }
    // every layer was applied exactly once, by one of the eight pulls
    assert_eq!(applied.len(), 1 + 8, "{applied:?}");
    assert!(applied.values().all(|n| *n == 1), "{applied:?}");
    assert_eq!(
        committed, 1,
        "the shared blob was downloaded more than once"
    );
    // podstore's own listing agrees
    assert_eq!(svc.list_images("").unwrap().len(), 8);
}

/// Child side of [`two_processes_pull_the_same_image`]: runs only when the parent sets
/// `PODSTORE_IMAGE_CHILD_STORE`; pulls `PODSTORE_IMAGE_CHILD_REF` and prints how many blobs it
/// downloaded itself.
#[test]
#[ignore = "run by two_processes_pull_the_same_image"]
fn child_pull() {
    let Ok(root) = std::env::var("PODSTORE_IMAGE_CHILD_STORE") else {
        return;
    };
    let input = std::env::var("PODSTORE_IMAGE_CHILD_REF").unwrap();
    let root = std::path::PathBuf::from(root);
    let store = Arc::new(
        Store::open(&StoreOptions::new(
            root.join("root"),
            root.join("run"),
            "vfs",
        ))
        .unwrap(),
    );
    let svc = ImageService::new(
        store,
        ImageServiceOptions {
            registries_conf: Some(root.join("registries.conf")),
            auth_file: Some(root.join("none.json")),
            keep_compressed_blobs: true,
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1 << 16);
    let pulled = runtime
        .block_on(svc.pull_image(
            &input,
            &PullOptions {
                progress: Some(tx),
                ..PullOptions::default()
            },
        ))
        .unwrap();
    let mut downloaded = 0;
    let mut applied = 0;
    while let Ok(event) = rx.try_recv() {
        match event {
            PullEvent::Download(e) if e.state == ProgressState::Committed => downloaded += 1,
            PullEvent::LayerApplied { .. } => applied += 1,
            _ => {}
        }
    }
    println!("CHILD-RESULT {} {downloaded} {applied}", pulled.id);
}

#[test]
fn two_processes_pull_the_same_image() {
    let dir = shm_tempdir("podstore-image-xproc-");
    std::fs::write(dir.path().join("registries.conf"), "").unwrap();
    // create the store once so both children open an existing one
    drop(
        Store::open(&StoreOptions::new(
            dir.path().join("root"),
            dir.path().join("run"),
            "vfs",
        ))
        .unwrap(),
    );
    let fixtures = FixtureSet::shared().unwrap();
    let plain = RegistrySet::shared().unwrap().get(RegistryMode::Plain);
    let fx = fixtures.image("multilayer").unwrap();
    let input = format!(
        "docker://{}",
        plain.image_reference(&fx.registry_reference())
    );
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_pull", "--ignored", "--nocapture"])
                .env("PODSTORE_IMAGE_CHILD_STORE", dir.path())
                .env("PODSTORE_IMAGE_CHILD_REF", &input)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect::<Vec<_>>();
    // both run at once; collect afterwards
    let children: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut downloaded = 0;
    let mut applied = 0;
    for out in children {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CHILD-RESULT "))
            .unwrap_or_else(|| panic!("no result in {stdout}"));
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields[0], fx.image_id().unwrap());
        downloaded += fields[1].parse::<usize>().unwrap();
        applied += fields[2].parse::<usize>().unwrap();
    }
    // every blob was downloaded, and every layer applied, by exactly one of the two processes
    assert_eq!(downloaded, fx.layers.len());
    assert_eq!(applied, fx.layers.len());
    let store = Store::open(&StoreOptions::new(
        dir.path().join("root"),
        dir.path().join("run"),
        "vfs",
    ))
    .unwrap();
    assert_eq!(store.images().unwrap().len(), 1);
    assert_eq!(store.layers().unwrap().len(), fx.layers.len());
}
