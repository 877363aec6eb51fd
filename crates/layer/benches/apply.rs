//! Criterion micro-benchmarks of the streaming tar applier (`apply_tar`): many small files and
//! one large file, plain and gzip, unpacked into a fresh tmpfs directory with the overlay
//! whiteout format and no final sync (so the numbers are the applier's CPU cost, not the
//! disk's). `cargo xtask bench --only micro` runs them and reports the medians.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use podstore_layer::{ApplyOptions, WhiteoutFormat, apply_tar};
use podstore_testkit::tarball::{TarBuilder, TarEntry, TarFormat};

/// Deterministic bytes (xorshift64*), `text` ones compress like prose-ish data.
fn content(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if text {
                b"etaoin shrdlu\n"[(v >> 59) as usize % 14]
            } else {
                (v >> 56) as u8
            }
        })
        .collect()
}

/// 2,000 files of 16 B to 8 KiB (half text, half random) in 50 directories.
fn small_files_tar() -> Vec<u8> {
    let mut tar = TarBuilder::new(Vec::new(), TarFormat::Pax);
    for d in 0..50 {
        tar.append(&TarEntry::dir(format!("d{d:02}"), 0o755))
            .unwrap();
        for f in 0..40u64 {
            let i = d * 40 + f;
            let len = 16 + (i * 7919 % 8176) as usize;
            tar.append(&TarEntry::file(
                format!("d{d:02}/f{f:03}"),
                0o644,
                content(i, len, i % 2 == 0),
            ))
            .unwrap();
        }
    }
    tar.finish().unwrap()
}

/// One 32 MiB file of random bytes.
fn large_file_tar() -> Vec<u8> {
    let mut tar = TarBuilder::new(Vec::new(), TarFormat::Pax);
    tar.append(&TarEntry::file(
        "big.bin",
        0o644,
        content(7, 32 << 20, false),
    ))
    .unwrap();
    tar.finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn fresh_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("podstore-bench-apply-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

fn bench_apply(c: &mut Criterion) {
    let small = small_files_tar();
    let large = large_file_tar();
    let inputs = [
        ("small-files/tar", small.clone(), small.len()),
        ("small-files/gzip", gzip(&small), small.len()),
        ("large-file/tar", large.clone(), large.len()),
        ("large-file/gzip", gzip(&large), large.len()),
    ];
    let mut group = c.benchmark_group("apply_tar");
    group.sample_size(10);
    let opts = ApplyOptions {
        no_sync: true,
        ..ApplyOptions::default()
    };
    for (name, blob, tar_len) in &inputs {
        group.throughput(Throughput::Bytes(*tar_len as u64));
        group.bench_function(*name, |b| {
            b.iter_batched(
                fresh_dir,
                |dir| {
                    let mut split = Vec::new();
                    let report = apply_tar(
                        dir.path(),
                        &mut &blob[..],
                        &mut split,
                        WhiteoutFormat::Overlay,
                        &opts,
                    )
                    .unwrap();
                    std::hint::black_box(report);
                    dir // removed outside the measurement
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
