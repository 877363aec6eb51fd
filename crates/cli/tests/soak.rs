//! Concurrent load (`cargo xtask soak` runs this ignored test): 4 worker threads each run
//! `podstore` processes doing pull, create, mount, unmount, rm and untag on one store while
//! a fifth runs podman pull, create, rm and rmi on the same store, for
//! `PODSTORE_SOAK_SECONDS` (default 30). Every process logs what it completed. Afterwards:
//! `check` is clean, no completed operation lost its result (each container ends as its
//! owner's log says; each image whose last operation did not overlap another ends as that
//! operation left it), and every surviving image runs with podman.
//!
//! `PODSTORE_SOAK_DRIVER` (default vfs), `PODSTORE_SOAK_RESULTS=<file>` (JSON summary).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use podstore_testkit::peers::{Podman, shm_tempdir};
use podstore_testkit::registry::RegistrySet;

const POD_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const WORKERS: usize = 4;

#[derive(Clone)]
struct Store {
    dir: PathBuf,
    driver: String,
}

impl Store {
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn runroot(&self) -> PathBuf {
        self.dir.join("runroot")
    }
    fn podstore(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_podstore"))
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.runroot())
            .args(["--storage-driver", &self.driver])
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
    fn podman(&self) -> Command {
        let mut c = Podman::new(self.root(), self.runroot(), &self.driver)
            .with_tmpdir(self.dir.join("podman-tmp"))
            .command();
        c.env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .stdin(Stdio::null());
        c
    }
}

/// One completed (or failed) operation.
#[derive(Debug, Clone)]
struct Entry {
    who: String,
    op: &'static str,
    target: String,
    start: Duration,
    end: Duration,
    ok: bool,
    /// The last line of stderr of a failed operation.
    error: String,
}

/// The last non-empty line of a failed command's stderr (empty on success).
fn failure(out: &Output) -> String {
    if out.status.success() {
        return String::new();
    }
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

fn worker(
    store: Store,
    index: usize,
    images: Arc<Vec<(String, String)>>,
    t0: Instant,
    deadline: Instant,
) -> Vec<Entry> {
    let mut log = Vec::new();
    let mut rng = Lcg(0x50a4 + index as u64);
    // The containers this worker owns: name -> mounted.
    let mut mine: BTreeMap<String, bool> = BTreeMap::new();
    let mut serial = 0u32;
    while Instant::now() < deadline {
        let start = t0.elapsed();
        let (op, target, out) = match rng.below(6) {
            0 => {
                let (reference, _) = &images[rng.below(images.len() as u64) as usize];
                (
                    "pull",
                    reference.clone(),
                    store.podstore(&["pull", "--quiet", reference]),
                )
            }
            1 => {
                serial += 1;
                let name = format!("w{index}-c{serial}");
                let id = format!("{:08x}{:056x}", 0x50a4_0000 + index, serial);
                let (_, image) = &images[rng.below(images.len() as u64) as usize];
                let out = store.podstore(&[
                    "create",
                    "--pod-name",
                    "soak",
                    "--pod-id",
                    POD_ID,
                    "--image",
                    image,
                    "--name",
                    &name,
                    "--id",
                    &id,
                    "--metadata-name",
                    &name,
                ]);
                if out.status.success() {
                    mine.insert(name.clone(), false);
                }
                ("create", name, out)
            }
            2 => {
                let Some(name) = mine.iter().find(|(_, m)| !**m).map(|(n, _)| n.clone()) else {
                    continue;
                };
                let out = store.podstore(&["mount", &name]);
                if out.status.success() {
                    mine.insert(name.clone(), true);
                }
                ("mount", name, out)
            }
            3 => {
                let Some(name) = mine.iter().find(|(_, m)| **m).map(|(n, _)| n.clone()) else {
                    continue;
                };
                let out = store.podstore(&["unmount", &name]);
                if out.status.success() {
                    mine.insert(name.clone(), false);
                }
                ("unmount", name, out)
            }
            4 => {
                let Some(name) = mine.keys().next().cloned() else {
                    continue;
                };
                let out = store.podstore(&["rm", &name]);
                if out.status.success() {
                    mine.remove(&name);
                }
                ("rm", name, out)
            }
            _ => {
                let (_, image) = &images[rng.below(images.len() as u64) as usize];
                ("untag", image.clone(), store.podstore(&["untag", image]))
            }
        };
        log.push(Entry {
            who: format!("podstore-{index}"),
            op,
            target,
            start,
            end: t0.elapsed(),
            ok: out.status.success(),
            error: failure(&out),
        });
    }
    // Leave nothing mounted.
    for (name, mounted) in mine {
        if mounted {
            let start = t0.elapsed();
            let out = store.podstore(&["unmount", &name]);
            log.push(Entry {
                who: format!("podstore-{index}"),
                op: "unmount",
                target: name,
                start,
                end: t0.elapsed(),
                ok: out.status.success(),
                error: failure(&out),
            });
        }
    }
    log
}

fn podman_worker(
    store: Store,
    images: Arc<Vec<(String, String)>>,
    t0: Instant,
    deadline: Instant,
) -> Vec<Entry> {
    let mut log = Vec::new();
    let mut rng = Lcg(0x90d);
    let mut serial = 0u32;
    let mut mine: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        let start = t0.elapsed();
        let (_, image) = &images[rng.below(images.len() as u64) as usize];
        let (op, target, out) = match rng.below(4) {
            0 => (
                "pull",
                image.clone(),
                store
                    .podman()
                    .args(["pull", "--quiet", "--tls-verify=false", image])
                    .output()
                    .unwrap(),
            ),
            1 => {
                serial += 1;
                let name = format!("pm-c{serial}");
                let out = store
                    .podman()
                    .args([
                        "create",
                        "--network",
                        "none",
                        "--pull",
                        "never",
                        "--name",
                        &name,
                        image,
                    ])
                    .output()
                    .unwrap();
                if out.status.success() {
                    mine.push(name.clone());
                }
                ("create", name, out)
            }
            2 => {
                let Some(name) = mine.pop() else { continue };
                let out = store.podman().args(["rm", &name]).output().unwrap();
                if !out.status.success() {
                    mine.push(name.clone());
                }
                ("rm", name, out)
            }
            _ => (
                "untag",
                image.clone(),
                store
                    .podman()
                    .args(["untag", image, image])
                    .output()
                    .unwrap(),
            ),
        };
        log.push(Entry {
            who: "podman".into(),
            op,
            target,
            start,
            end: t0.elapsed(),
            ok: out.status.success(),
            error: failure(&out),
        });
    }
    log
}

#[test]
#[ignore = "concurrent load: run by `cargo xtask soak`"]
fn four_podstores_and_podman_on_one_store_lose_nothing() {
    let seconds: u64 = std::env::var("PODSTORE_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let driver = std::env::var("PODSTORE_SOAK_DRIVER").unwrap_or_else(|_| "vfs".into());
    let registries = RegistrySet::shared().unwrap();
    let plain = &registries.plain;
    // Busybox in four encodings: the same layer content, so pulls share layers.
    let images: Arc<Vec<(String, String)>> = Arc::new(
        ["latest", "zstd", "uncompressed", "v2s2"]
            .iter()
            .map(|t| {
                let r = format!("testkit/busybox:{t}");
                (plain.image_reference(&r), plain.image_reference(&r))
            })
            .collect(),
    );
    let dir = shm_tempdir("podstore-soak-");
    common::write_storage_conf(dir.path(), &driver);
    let store = Store {
        dir: dir.path().to_path_buf(),
        driver: driver.clone(),
    };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for index in 0..WORKERS {
        let (store, images) = (store.clone(), Arc::clone(&images));
        handles.push(std::thread::spawn(move || {
            worker(store, index, images, t0, deadline)
        }));
    }
    {
        let (store, images) = (store.clone(), Arc::clone(&images));
        handles.push(std::thread::spawn(move || {
            podman_worker(store, images, t0, deadline)
        }));
    }
    let mut log: Vec<Entry> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    log.sort_by_key(|e| e.end);

    // check is clean (nothing else uses the store now).
    let out = store.podstore(&["check", "--stale-after", "0"]);
    assert!(
        out.status.success(),
        "check after the soak: {}{}\nfailed operations:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log.iter()
            .filter(|e| !e.ok)
            .map(|e| format!(
                "  {:?}-{:?} {} {} {}: {}",
                e.start, e.end, e.who, e.op, e.target, e.error
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Containers: each ends as its owner's log says.
    let ps: serde_json::Value =
        serde_json::from_slice(&store.podstore(&["ps", "--format", "json"]).stdout).unwrap();
    let names: Vec<String> = ps
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["Names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let mut expected: BTreeMap<String, bool> = BTreeMap::new();
    for e in log.iter().filter(|e| e.ok) {
        match e.op {
            "create" => {
                expected.insert(e.target.clone(), true);
            }
            "rm" => {
                expected.insert(e.target.clone(), false);
            }
            _ => {}
        }
    }
    let mut containers_verified = 0;
    for (name, present) in &expected {
        assert_eq!(
            names.contains(name),
            *present,
            "container {name}: the log says {}",
            if *present { "created" } else { "removed" }
        );
        containers_verified += 1;
    }

    // Images: the last completed operation on a name decides, unless another overlapped it.
    let listed: serde_json::Value =
        serde_json::from_slice(&store.podstore(&["images", "--format", "json"]).stdout).unwrap();
    let tags: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| i["RepoTags"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let mut images_verified = 0;
    let mut images_ambiguous = 0;
    for (_, name) in images.iter() {
        let ops: Vec<&Entry> = log
            .iter()
            .filter(|e| e.ok && (e.op == "pull" || e.op == "untag"))
            .filter(|e| {
                e.target == *name || images.iter().any(|(r, n)| n == name && *r == e.target)
            })
            .collect();
        let Some(last) = ops.last() else { continue };
        let overlapped = log
            .iter()
            .filter(|e| e.op == "pull" || e.op == "untag")
            .filter(|e| {
                e.target == *name || images.iter().any(|(r, n)| n == name && *r == e.target)
            })
            .any(|e| !std::ptr::eq(e, *last) && e.end > last.start);
        if overlapped {
            images_ambiguous += 1;
            continue;
        }
        assert_eq!(
            tags.contains(name),
            last.op == "pull",
            "image {name}: the last operation was {} by {}",
            last.op,
            last.who
        );
        images_verified += 1;
    }

    // Every surviving image runs with podman.
    let mut runs = 0;
    for name in &tags {
        let out = store
            .podman()
            .args([
                "--runtime",
                "runc",
                "run",
                "--rm",
                "--network",
                "none",
                "--pull",
                "never",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
                name,
                "true",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "podman run {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        runs += 1;
    }

    let completed = log.iter().filter(|e| e.ok).count();
    let mut by_op: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for e in &log {
        let slot = by_op
            .entry(format!(
                "{} {}",
                if e.who == "podman" {
                    "podman"
                } else {
                    "podstore"
                },
                e.op
            ))
            .or_default();
        if e.ok {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }
    // The first failure of each kind of operation, to tell expected refusals from damage.
    let mut first_failures: BTreeMap<String, String> = BTreeMap::new();
    for e in log.iter().filter(|e| !e.ok) {
        let who = if e.who == "podman" {
            "podman"
        } else {
            "podstore"
        };
        first_failures
            .entry(format!("{who} {}", e.op))
            .or_insert_with(|| e.error.clone());
    }
    let summary = serde_json::json!({
        "seconds": seconds,
        "driver": driver,
        "operations": log.len(),
        "completed": completed,
        "by_operation_completed_failed": by_op,
        "containers_verified": containers_verified,
        "images_verified": images_verified,
        "images_ambiguous": images_ambiguous,
        "podman_runs": runs,
        "first_failures": first_failures,
        "check": "clean",
    });
    println!("soak: {summary}");
    if let Ok(path) = std::env::var("PODSTORE_SOAK_RESULTS") {
        std::fs::write(path, serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    }
    // Leave no podman state mounted.
    let _ = store.podman().args(["rm", "--all", "--force"]).output();
    let _ = Command::new("umount")
        .arg("-l")
        .arg(store.root().join("overlay"))
        .output();
}
