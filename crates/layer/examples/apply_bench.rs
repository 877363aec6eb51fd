//! Apply throughput of a ~100 MiB gzip (and zstd) layer against `gzip -dc | tar -x` (and
//! `zstd -dc | tar -x`) on the same layer, both on /dev/shm, and the cost of the final syncfs
//! on disk (/var/tmp). Prints figures; asserts nothing about time.
//!
//! `cargo run --release -p podstore-layer --example apply_bench [--scale PERCENT]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use podstore_layer::{ApplyOptions, WhiteoutFormat, apply_tar};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn text(&mut self, len: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "alpha",
            "bravo",
            "layer",
            "overlay",
            "mount",
            "digest",
            "registry",
            "INFO",
            "WARN",
            "component=",
            "req=",
            "took=",
            "blob",
            "pull",
            "push",
            "kernel",
            "cgroup",
        ];
        let mut out = Vec::with_capacity(len + 64);
        while out.len() < len {
            let n = self.next();
            out.extend_from_slice(WORDS[(n % WORDS.len() as u64) as usize].as_bytes());
            out.extend_from_slice(format!("{:08x}", n >> 32).as_bytes());
            out.push(if n % 11 == 0 { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out
    }
}

fn build_tree(dir: &Path, scale: u64) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let small = 3000 * scale / 100;
    for i in 0..small {
        let sub = dir.join(format!(
            "usr/share/files/d{:02}/e{:02}",
            i % 40,
            (i / 40) % 25
        ));
        std::fs::create_dir_all(&sub).unwrap();
        let size = 16usize << (rng.next() % 12); // 16 B .. 32 KiB
        if i % 2 == 0 {
            std::fs::write(sub.join(format!("f-{i:05}.txt")), rng.text(size)).unwrap();
        } else {
            let mut buf = vec![0u8; size];
            rng.fill(&mut buf);
            std::fs::write(sub.join(format!("f-{i:05}.bin")), buf).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("opt/blobs")).unwrap();
    for (name, mib) in [
        ("random-32M", 32),
        ("random-16M", 16),
        ("random-8M", 8),
        ("random-8M-b", 8),
    ] {
        let mut buf = vec![0u8; (mib << 20) * scale as usize / 100];
        rng.fill(&mut buf);
        std::fs::write(dir.join("opt/blobs").join(name), buf).unwrap();
    }
    std::fs::create_dir_all(dir.join("var/log")).unwrap();
    std::fs::write(
        dir.join("var/log/app.log"),
        rng.text((48 << 20) * scale as usize / 100),
    )
    .unwrap();
}

fn sh(script: &str) {
    let status = Command::new("sh").arg("-c").arg(script).status().unwrap();
    assert!(status.success(), "{script}");
}

/// CPU seconds (user+system) of this process and of its waited-for children, from
/// /proc/self/stat (clock ticks of 10 ms).
fn cpu_times() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // after the state field (index 0): utime=11, stime=12, cutime=13, cstime=14
    (
        (fields[11] + fields[12]) / 100.0,
        (fields[13] + fields[14]) / 100.0,
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fresh(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ours(base: &Path, blob: &Path, no_sync: bool) -> Duration {
    let dir = fresh(base, "ours");
    let mut file = std::fs::File::open(blob).unwrap();
    let start = Instant::now();
    let mut split = std::io::sink();
    apply_tar(
        &dir,
        &mut file,
        &mut split,
        WhiteoutFormat::Overlay,
        &ApplyOptions {
            no_sync,
            ..Default::default()
        },
    )
    .unwrap();
    start.elapsed()
}

fn tool(base: &Path, blob: &Path, decompress: &str) -> Duration {
    let dir = fresh(base, "tool");
    let start = Instant::now();
    sh(&format!(
        "{decompress} -dc {} | tar -x -C {}",
        blob.display(),
        dir.display()
    ));
    start.elapsed()
}

fn mib_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let scale: u64 = args
        .iter()
        .position(|a| a == "--scale")
        .map_or(100, |i| args[i + 1].parse().unwrap());
    let runs = 3;
    let shm = tempfile::Builder::new()
        .prefix("apply-bench-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let src = shm.path().join("src");
    build_tree(&src, scale);
    let tar = shm.path().join("layer.tar");
    sh(&format!(
        "tar -C {} --sort=name --numeric-owner -cf {} .",
        src.display(),
        tar.display()
    ));
    std::fs::remove_dir_all(&src).unwrap();
    sh(&format!(
        "gzip -n -6 -k -c {0} > {0}.gz && zstd -q -3 -k -c {0} > {0}.zst",
        tar.display()
    ));
    let tar_size = std::fs::metadata(&tar).unwrap().len();
    let gz = tar.with_extension("tar.gz");
    let zst = tar.with_extension("tar.zst");
    let gz_size = std::fs::metadata(&gz).unwrap().len();
    let zst_size = std::fs::metadata(&zst).unwrap().len();
    println!(
        "layer: {:.1} MiB tar, {:.1} MiB gzip, {:.1} MiB zstd; {runs} runs each, median, /dev/shm",
        tar_size as f64 / 1048576.0,
        gz_size as f64 / 1048576.0,
        zst_size as f64 / 1048576.0
    );
    let mut out = std::io::stdout();
    for (label, blob, size, decompress) in [
        ("gzip", &gz, gz_size, "gzip"),
        ("zstd", &zst, zst_size, "zstd -q"),
    ] {
        let c0 = cpu_times();
        let t_tool = median(
            (0..runs)
                .map(|_| tool(shm.path(), blob, decompress))
                .collect(),
        );
        let c1 = cpu_times();
        let t_ours = median((0..runs).map(|_| ours(shm.path(), blob, true)).collect());
        let c2 = cpu_times();
        println!(
            "{label}: CPU seconds per run (user+sys, all threads/processes): tool pipeline {:.2}, podstore {:.2}",
            (c1.1 - c0.1) / runs as f64,
            (c2.0 - c1.0) / runs as f64
        );
        writeln!(
            out,
            "{label}: {decompress} -dc | tar -x: {:>7.0} ms ({:.0} MiB/s of tar)   podstore apply_tar: {:>7.0} ms ({:.0} MiB/s)   ratio {:.2}  (compressed {:.0} MiB/s)",
            t_tool.as_secs_f64() * 1000.0,
            mib_s(tar_size, t_tool),
            t_ours.as_secs_f64() * 1000.0,
            mib_s(tar_size, t_ours),
            t_ours.as_secs_f64() / t_tool.as_secs_f64(),
            mib_s(size, t_ours),
        )
        .unwrap();
    }
    // syncfs cost on disk (ext4 here): the same apply with and without the final syncfs
    let disk = tempfile::Builder::new()
        .prefix("apply-bench-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let disk_blob = disk.path().join("layer.tar.gz");
    std::fs::copy(&gz, &disk_blob).unwrap();
    sh("sync");
    let mut nosync = Vec::new();
    let mut withsync = Vec::new();
    for _ in 0..runs {
        nosync.push(ours(disk.path(), &disk_blob, true));
        sh("sync");
        withsync.push(ours(disk.path(), &disk_blob, false));
        sh("sync");
    }
    let (a, b) = (median(nosync), median(withsync));
    println!(
        "disk (/var/tmp): apply without syncfs {:.0} ms, with syncfs {:.0} ms: syncfs costs {:.0} ms ({:.0}%)",
        a.as_secs_f64() * 1000.0,
        b.as_secs_f64() * 1000.0,
        (b.as_secs_f64() - a.as_secs_f64()) * 1000.0,
        (b.as_secs_f64() / a.as_secs_f64() - 1.0) * 100.0
    );
    let t = Instant::now();
    let dir = disk.path().join("ours");
    let fd = std::fs::File::open(&dir).unwrap();
    rustix::fs::syncfs(&fd).unwrap();
    println!(
        "a second syncfs right after (nothing dirty): {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
}
