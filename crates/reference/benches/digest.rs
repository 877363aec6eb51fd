//! Criterion micro-benchmarks of the digest code every blob and layer goes through: the
//! streaming `Verifier` and `Digester` over 16 MiB in 64 KiB chunks (as a download feeds
//! them), and `Digest::parse`. `cargo xtask bench --only micro` runs them.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use podstore_reference::digest::{Algorithm, Digest};

fn data() -> Vec<u8> {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    (0..16 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn bench_digest(c: &mut Criterion) {
    let data = data();
    let expected = Digest::sha256_of(&data);
    let mut group = c.benchmark_group("digest");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("verifier/sha256-16MiB", |b| {
        b.iter(|| {
            let mut v = expected.verifier();
            for chunk in data.chunks(64 << 10) {
                v.update(chunk);
            }
            v.verify().unwrap()
        });
    });
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        group.bench_function(format!("digester/{}-16MiB", alg.as_str()), |b| {
            b.iter(|| {
                let mut d = alg.digester();
                for chunk in data.chunks(64 << 10) {
                    d.update(chunk);
                }
                d.finish()
            });
        });
    }
    group.finish();
    let text = expected.to_string();
    c.bench_function("digest/parse", |b| {
        b.iter(|| Digest::parse(std::hint::black_box(&text)).unwrap());
    });
}

criterion_group!(benches, bench_digest);
criterion_main!(benches);
