//! A manual measurement, not a CI test (`#[ignore]`; issue 9's `cargo xtask bench` is the
//! benchmark): cold pulls of the `big` fixture (`PODSTORE_BIG_PERCENT`, default 100: four
//! layers, ~300 MiB uncompressed) from a real docker-registry on 127.0.0.1 into a fresh overlay
//! store on tmpfs, by `skopeo copy … containers-storage:` and by podstore, alternating, with
//! each layer's single-core decompress + unpack (podstore's own applier, one layer at a time,
//! into a scratch directory) as the floor. Run with
//! `cargo test --release -p podstore-image --test big_pull -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use podstore_image::{ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{Store, StoreOptions};
use podstore_testkit::fixtures::{FixtureOptions, FixtureSet};
use podstore_testkit::peers::{Skopeo, StoreGuard, shm_tempdir};
use podstore_testkit::registry::{Registry, RegistryMode};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "manual measurement: cold pull of the big fixture against skopeo"]
fn cold_pull_of_big_against_skopeo() {
    let percent: u32 = std::env::var("PODSTORE_BIG_PERCENT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    let rounds: usize = std::env::var("PODSTORE_ROUNDS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3);
    let fixtures = FixtureSet::cached(
        &FixtureOptions::default()
            .with_small_count(0)
            .with_big(percent),
    )
    .unwrap();
    let registry = Registry::start(RegistryMode::Plain).unwrap();
    let mut report = Vec::new();
    for tag in ["big", "big-zstd"] {
        registry
            .push(&fixtures, tag, &format!("bench/{tag}:latest"))
            .unwrap();
        let reference = registry.image_reference(&format!("bench/{tag}:latest"));
        let fx = fixtures.image(tag).unwrap();

        // the floor: each layer decompressed and unpacked on one core, one after the other
        let mut floors = Vec::new();
        for layer in &fx.layers {
            let dir = shm_tempdir("podstore-big-floor-");
            let blob = std::fs::File::open(fixtures.blob_path(&layer.digest)).unwrap();
            let started = Instant::now();
            podstore_layer::apply_tar(
                dir.path(),
                &mut std::io::BufReader::with_capacity(1 << 20, blob),
                &mut std::io::sink(),
                podstore_layer::WhiteoutFormat::Overlay,
                &podstore_layer::ApplyOptions {
                    no_sync: true,
                    ..podstore_layer::ApplyOptions::default()
                },
            )
            .unwrap();
            floors.push(started.elapsed());
        }

        let (mut skopeo, mut podstore) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let dir = shm_tempdir("podstore-big-skopeo-");
            let (root, run) = (dir.path().join("root"), dir.path().join("run"));
            let _guard = StoreGuard::overlay(&root, &run);
            let dest = Skopeo::store_reference(&root, &run, "overlay", "bench/big:latest");
            let started = Instant::now();
            Skopeo.run(&[
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                &format!("docker://{reference}"),
                &dest,
            ]);
            skopeo.push(started.elapsed());

            let dir = shm_tempdir("podstore-big-pull-");
            let (root, run) = (dir.path().join("root"), dir.path().join("run"));
            let _guard = StoreGuard::overlay(&root, &run);
            std::fs::write(dir.path().join("registries.conf"), "").unwrap();
            let started = Instant::now();
            let store = Arc::new(Store::open(&StoreOptions::new(&root, &run, "overlay")).unwrap());
            let svc = ImageService::new(
                store,
                ImageServiceOptions {
                    registries_conf: Some(dir.path().join("registries.conf")),
                    auth_file: Some(dir.path().join("none.json")),
                    ..ImageServiceOptions::default()
                },
            )
            .unwrap();
            svc.pull_image_blocking(&format!("docker://{reference}"), &PullOptions::default())
                .unwrap();
            podstore.push(started.elapsed());
        }
        let slowest = floors.iter().max().copied().unwrap_or_default();
        report.push(format!(
            "MEASURE {tag} ({percent}%): floors per layer {floors:?} (sum {:?}); skopeo median \
             {:?} of {skopeo:?}; podstore median {:?} of {podstore:?}; podstore/skopeo {:.2}, \
             podstore/slowest layer {:.2}",
            floors.iter().sum::<Duration>(),
            median(skopeo.clone()),
            median(podstore.clone()),
            median(podstore.clone()).as_secs_f64() / median(skopeo.clone()).as_secs_f64(),
            median(podstore.clone()).as_secs_f64() / slowest.as_secs_f64(),
        ));
        eprintln!("{}", report.last().unwrap());
    }
    for line in report {
        eprintln!("{line}");
    }
}
