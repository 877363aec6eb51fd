//! Criterion micro-benchmarks of the record store: decoding and encoding `layers.json` and
//! `images.json` with 1,000 records (the containers/storage 1.43 JSON), and through the
//! [`Store`] on tmpfs: opening a store and listing its 1,000 images (a fresh process's cost),
//! and one image save (a full `images.json` rewrite under the lock).
//! `cargo xtask bench --only micro` runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use podstore_metadata::records::{decode_records, encode_records};
use podstore_metadata::{Image, Layer, Store, StoreOptions};

const COUNT: usize = 1000;

fn hex(i: usize, salt: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt.len() as u64;
    while out.len() < 64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = write!(out, "{x:016x}");
    }
    out.truncate(64);
    out
}

/// `layers.json` as containers/storage 1.43 writes it: a chain of `COUNT` layers.
fn layers_json() -> String {
    let items: Vec<String> = (0..COUNT)
        .map(|i| {
            let parent = if i == 0 {
                String::new()
            } else {
                format!(r#""parent":"{}","#, hex(i - 1, "layer"))
            };
            format!(
                r#"{{"id":"{}",{parent}"created":"2026-11-28T03:00:00.123456789Z","compressed-diff-digest":"sha256:{}","compressed-size":{},"diff-digest":"sha256:{}","diff-size":{},"compression":2,"uidset":[0],"gidset":[0]}}"#,
                hex(i, "layer"),
                hex(i, "compressed"),
                1000 + i,
                hex(i, "diff"),
                3000 + i
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// `images.json` with `COUNT` images, each with a name, manifest and config big data.
fn images_json() -> String {
    let items: Vec<String> = (0..COUNT)
        .map(|i| {
            let (id, m) = (hex(i, "image"), hex(i, "manifest"));
            format!(
                r#"{{"id":"{id}","digest":"sha256:{m}","names":["localhost/bench/image-{i:04}:latest"],"layer":"{}","metadata":"{{\"signatures-sizes\":{{\"sha256:{m}\":[]}}}}","big-data-names":["sha256:{id}","manifest-sha256:{m}","manifest"],"big-data-sizes":{{"manifest":600,"manifest-sha256:{m}":600,"sha256:{id}":1500}},"big-data-digests":{{"manifest":"sha256:{m}","manifest-sha256:{m}":"sha256:{m}","sha256:{id}":"sha256:{id}"}},"created":"2026-11-28T03:00:00Z"}}"#,
                hex(i % 10, "layer")
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

fn bench_records(c: &mut Criterion) {
    let layers = layers_json();
    let images = images_json();
    let mut group = c.benchmark_group("records");
    group.throughput(Throughput::Bytes(layers.len() as u64));
    group.bench_function("decode layers.json (1000)", |b| {
        b.iter(|| decode_records::<Layer>(layers.as_bytes()).unwrap());
    });
    let decoded_layers = decode_records::<Layer>(layers.as_bytes()).unwrap();
    group.bench_function("encode layers.json (1000)", |b| {
        b.iter(|| encode_records(&decoded_layers));
    });
    group.throughput(Throughput::Bytes(images.len() as u64));
    group.bench_function("decode images.json (1000)", |b| {
        b.iter(|| decode_records::<Image>(images.as_bytes()).unwrap());
    });
    let decoded_images = decode_records::<Image>(images.as_bytes()).unwrap();
    group.bench_function("encode images.json (1000)", |b| {
        b.iter(|| encode_records(&decoded_images));
    });
    group.finish();

    // Through the Store, on tmpfs: a store whose images.json holds the 1,000 images.
    let dir = tempfile::Builder::new()
        .prefix("podstore-bench-records-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let options = StoreOptions::new(dir.path().join("root"), dir.path().join("run"), "vfs");
    drop(Store::open(&options).unwrap());
    std::fs::write(
        dir.path().join("root/vfs-images/images.json"),
        images.as_bytes(),
    )
    .unwrap();
    let mut group = c.benchmark_group("store");
    group.sample_size(20);
    group.bench_function("open + images() (1000 images, tmpfs)", |b| {
        b.iter(|| {
            let store = Store::open(&options).unwrap();
            store.images().unwrap().len()
        });
    });
    let store = Store::open(&options).unwrap();
    let first = hex(0, "image");
    group.bench_function("save images.json (1000 images, tmpfs)", |b| {
        b.iter_batched(
            || (),
            |()| store.set_image_metadata(&first, "{}").unwrap(),
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, bench_records);
criterion_main!(benches);
