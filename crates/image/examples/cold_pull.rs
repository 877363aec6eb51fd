//! Cold pull of the testkit `big` image (four layers, ~300 MiB uncompressed at 100 %) from the
//! real docker-registry on 127.0.0.1 into a fresh overlay store on disk: podstore's
//! `pull_image` next to `skopeo copy` into containers-storage, measured in the same run.
//!
//! `cargo run --release -p podstore-image --example cold_pull -- [PERCENT] [BASE_DIR]`
//! (defaults: 100, /var/tmp/podstore-cold-pull). Needs docker-registry, skopeo and the
//! containers-storage CLI (to drop overlay's self bind-mount afterwards).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use podstore_image::{ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{Store, StoreOptions};
use podstore_testkit::fixtures::{FixtureOptions, FixtureSet};
use podstore_testkit::registry::{RegistryMode, RegistrySet};

fn cleanup(root: &Path, run: &Path) {
    let _ = Command::new("containers-storage")
        .arg("--graph")
        .arg(root)
        .arg("--run")
        .arg(run)
        .args(["--storage-driver", "overlay", "shutdown"])
        .output();
    let _ = Command::new("umount").arg(root.join("overlay")).output();
    let _ = std::fs::remove_dir_all(root.parent().unwrap());
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let percent: u32 = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(100);
    let base = PathBuf::from(
        args.get(2)
            .cloned()
            .unwrap_or_else(|| "/var/tmp/podstore-cold-pull".into()),
    );
    let started = Instant::now();
    let fixtures = FixtureSet::cached(
        &FixtureOptions::default()
            .with_big(percent)
            .with_small_count(1),
    )
    .unwrap();
    let big = fixtures.image("big").unwrap();
    println!(
        "fixtures ready in {:.1}s: big = {} layers, {:.1} MiB compressed, {:.1} MiB uncompressed",
        started.elapsed().as_secs_f64(),
        big.layers.len(),
        big.layers_size() as f64 / 1048576.0,
        big.layers.iter().map(|l| l.uncompressed_size).sum::<u64>() as f64 / 1048576.0
    );
    let registries = RegistrySet::start(&fixtures).unwrap();
    let plain = registries.get(RegistryMode::Plain);
    let reference = plain.image_reference(&big.registry_reference());

    // skopeo copy into containers-storage
    let dir = base.join("skopeo");
    let (root, run) = (dir.join("root"), dir.join("run"));
    std::fs::create_dir_all(&dir).unwrap();
    let t = Instant::now();
    let out = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{reference}"))
        .arg(format!(
            "containers-storage:[overlay@{}+{}]{reference}",
            root.display(),
            run.display()
        ))
        .output()
        .unwrap();
    let skopeo = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cleanup(&root, &run);

    // podstore pull_image
    let dir = base.join("podstore");
    let (root, run) = (dir.join("root"), dir.join("run"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let t = Instant::now();
    {
        let store = Arc::new(Store::open(&StoreOptions::new(&root, &run, "overlay")).unwrap());
        let svc = ImageService::new(
            store,
            ImageServiceOptions {
                registries_conf: Some(conf),
                auth_file: Some(dir.join("none.json")),
                ..ImageServiceOptions::default()
            },
        )
        .unwrap();
        let pulled = svc
            .pull_image_blocking(&reference, &PullOptions::default())
            .unwrap();
        assert_eq!(pulled.id, big.image_id().unwrap());
    }
    let podstore = t.elapsed();
    cleanup(&root, &run);
    println!(
        "cold pull of {reference} into an overlay store under {}:",
        base.display()
    );
    println!("  skopeo copy : {:.2}s", skopeo.as_secs_f64());
    println!("  podstore    : {:.2}s", podstore.as_secs_f64());
}
