//! The measures of `cargo xtask bench`: cold, warm and 3-of-4-layers pulls, the container
//! lifecycle, image listing (21 and ~1000 images), the physical limits on the same data,
//! the criterion micro-benchmarks and callgrind profiles. Each records [`Series`] samples in
//! the run's results; tools alternate within every run (their order rotates run by run).
//!
//! [`Series`]: crate::bench_stats::Series

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use podstore_metadata::{BigDataItem, ImageOptions, Store, StoreOptions};
use podstore_testkit::fixtures::{FixtureSet, ImageFixture, media_types};
use podstore_testkit::http::Body;
use podstore_testkit::peers::{ContainersStorage, Podman, Skopeo};
use podstore_testkit::registry::Registry;
use sha2::{Digest as _, Sha256};

use crate::bench::{Bench, FsKind, wipe};
use crate::bench_exec::Cmd;
use crate::bench_stats::{Key, Sample};

/// The tag under which `big`'s first three layers are pushed (for the 3-of-4 pull).
pub const FIRST3_REFERENCE: &str = "testkit/big:first3";

/// Runs every measure the options select, saving results after each.
pub fn run_all(b: &mut Bench) -> Result<()> {
    if b.options.wants("pull") {
        pulls(b)?;
        b.checkpoint()?;
    }
    if b.options.wants("limits") {
        limits(b)?;
        b.checkpoint()?;
    }
    if b.options.wants("lifecycle") {
        lifecycle(b)?;
        b.checkpoint()?;
    }
    if b.options.wants("images") {
        listing(b)?;
        b.checkpoint()?;
    }
    if b.options.wants("micro") {
        if let Err(error) = micro(b) {
            b.results
                .notes
                .push(format!("micro: the criterion run failed: {error:#}"));
        }
        b.checkpoint()?;
    }
    if b.options.wants("profile") && !b.options.quick {
        profile(b)?;
        b.checkpoint()?;
    }
    Ok(())
}

/// The filesystem type of a scratch root (`ext4`, `tmpfs`), from findmnt.
pub fn fs_label(kind: FsKind) -> String {
    Cmd::new(["findmnt", "-n", "-o", "FSTYPE", "-T"])
        .args([kind.root()])
        .run()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .map(|l| l.trim().to_owned())
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| match kind {
            FsKind::Disk => "disk".to_owned(),
            FsKind::Tmpfs => "tmpfs".to_owned(),
        })
}

fn rotated<T: Copy>(items: &[T], run: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if !v.is_empty() {
        let n = run % v.len();
        v.rotate_left(n);
    }
    v
}

/// A store's directories: `<dir>/root`, `<dir>/run`, `<dir>/tmp`.
struct StoreDir {
    dir: PathBuf,
}

impl StoreDir {
    fn fresh(dir: PathBuf) -> Result<StoreDir> {
        wipe(&dir)?;
        std::fs::create_dir_all(dir.join("tmp"))
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(StoreDir { dir })
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn podman(&self, driver: &str) -> Podman {
        Podman::new(self.root(), self.run(), driver).with_tmpdir(self.dir.join("tmp"))
    }
    fn cs(&self, driver: &str) -> ContainersStorage {
        ContainersStorage::new(self.root(), self.run(), driver)
    }
}

/// `podstore --root … --runroot … --storage-driver D args…`.
fn podstore(b: &Bench, store: &StoreDir, driver: &str) -> Cmd {
    Cmd::new([b.podstore.as_os_str()]).args([
        "--root".as_ref(),
        store.root().as_os_str(),
        "--runroot".as_ref(),
        store.run().as_os_str(),
        "--storage-driver".as_ref(),
        std::ffi::OsStr::new(driver),
    ])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PullTool {
    Podstore,
    Skopeo,
    Podman,
}

impl PullTool {
    fn name(self) -> &'static str {
        match self {
            PullTool::Podstore => "podstore",
            PullTool::Skopeo => "skopeo",
            PullTool::Podman => "podman",
        }
    }
}

/// The pull of `reference` (`testkit/big:latest`) into `store` by `tool`.
fn pull_cmd(b: &Bench, tool: PullTool, store: &StoreDir, driver: &str, reference: &str) -> Cmd {
    let host = b.registry.host_port();
    match tool {
        PullTool::Podstore => podstore(b, store, driver).args([
            "pull".to_owned(),
            "-q".to_owned(),
            format!("docker://{host}/{reference}"),
        ]),
        PullTool::Skopeo => Cmd::from_command(&Skopeo.command()).args([
            "copy".to_owned(),
            "-q".to_owned(),
            "--src-tls-verify=false".to_owned(),
            format!("docker://{host}/{reference}"),
            Skopeo::store_reference(&store.root(), &store.run(), driver, reference),
        ]),
        PullTool::Podman => Cmd::from_command(&store.podman(driver).command()).args([
            "pull".to_owned(),
            "-q".to_owned(),
            "--tls-verify=false".to_owned(),
            format!("{host}/{reference}"),
        ]),
    }
}

struct PullCase {
    image: &'static str,
    driver: &'static str,
    warm: bool,
    first3: bool,
}

fn pulls(b: &mut Bench) -> Result<()> {
    // The cases behind the targets first, each on every filesystem before the next case, so a
    // run cut short still has them on both.
    let cases = [
        PullCase {
            image: "big:latest",
            driver: "overlay",
            warm: true,
            first3: true,
        },
        PullCase {
            image: "busybox:latest",
            driver: "overlay",
            warm: true,
            first3: false,
        },
        PullCase {
            image: "multilayer:latest",
            driver: "overlay",
            warm: false,
            first3: false,
        },
        PullCase {
            image: "big:zstd",
            driver: "overlay",
            warm: false,
            first3: false,
        },
        PullCase {
            image: "busybox:latest",
            driver: "vfs",
            warm: false,
            first3: false,
        },
        PullCase {
            image: "big:latest",
            driver: "vfs",
            warm: false,
            first3: false,
        },
    ];
    let tools = [PullTool::Podstore, PullTool::Skopeo, PullTool::Podman];
    for case in &cases {
        for fs in b.options.filesystems.clone() {
            let label = fs_label(fs);
            let reference = format!("testkit/{}", case.image);
            let name = format!("{} {}", case.image, case.driver);
            let heavy = fs == FsKind::Disk && case.driver == "vfs" && case.image.starts_with("big");
            let runs = match b.options.heavy_runs {
                Some(n) if heavy => {
                    if n != b.options.runs {
                        b.results.notes.push(format!(
                            "pull: {name} on {label} ran {n} time(s) (--heavy-runs), the other cases {}.",
                            b.options.runs
                        ));
                    }
                    n
                }
                _ => b.options.runs,
            };
            eprintln!("==> bench pull: {name} on {label}, {runs} runs");
            for run in 0..runs {
                for tool in rotated(&tools, run) {
                    let store = StoreDir::fresh(fs.root().join(format!("pull-{}", tool.name())))?;
                    let cmd = pull_cmd(b, tool, &store, case.driver, &reference);
                    b.measure(Key::new("pull-cold", &name, &label, tool.name()), &cmd)?;
                    if case.warm {
                        b.measure(Key::new("pull-warm", &name, &label, tool.name()), &cmd)?;
                    }
                    if case.first3 {
                        let store =
                            StoreDir::fresh(fs.root().join(format!("pull-{}", tool.name())))?;
                        pull_cmd(b, tool, &store, case.driver, FIRST3_REFERENCE).run()?;
                        rustix::fs::sync();
                        let cmd = pull_cmd(b, tool, &store, case.driver, &reference);
                        b.measure(Key::new("pull-3of4", &name, &label, tool.name()), &cmd)?;
                    }
                    wipe(&store.dir)?;
                }
            }
            b.checkpoint()?;
        }
    }
    Ok(())
}

/// Pushes `big`'s first three layers as [`FIRST3_REFERENCE`] (same repository, so the
/// registry already links the layer blobs; only the config and manifest are new).
pub fn push_big_first3(fixtures: &FixtureSet, registry: &Registry) -> Result<()> {
    let big = fixtures.image("big")?;
    let layers = &big.layers[..3.min(big.layers.len())];
    let config = serde_json::json!({
        "architecture": big.platform.as_ref().map_or("amd64", |p| p.architecture.as_str()),
        "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Labels": {"testkit.image": "big-first3"}},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "bench: a layer of big"})).collect::<Vec<_>>(),
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(&config_bytes)));
    upload_blob(registry, "testkit/big", &config_digest, &config_bytes)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": {"mediaType": media_types::OCI_CONFIG, "digest": config_digest, "size": config_bytes.len()},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let response = registry.request(
        "PUT",
        "/v2/testkit/big/manifests/first3",
        &[("Content-Type", media_types::OCI_MANIFEST)],
        Body::Bytes(&manifest_bytes),
    )?;
    if response.status != 201 {
        bail!(
            "PUT testkit/big:first3: {} {}",
            response.status,
            response.text()
        );
    }
    Ok(())
}

fn upload_blob(registry: &Registry, repository: &str, digest: &str, bytes: &[u8]) -> Result<()> {
    let start = registry.request(
        "POST",
        &format!("/v2/{repository}/blobs/uploads/"),
        &[],
        Body::Empty,
    )?;
    let location = match (start.status, start.header("Location")) {
        (202, Some(l)) => l.to_owned(),
        _ => bail!(
            "starting an upload to {repository}: {} {}",
            start.status,
            start.text()
        ),
    };
    let separator = if location.contains('?') { '&' } else { '?' };
    let url = format!("{location}{separator}digest={}", digest.replace(':', "%3A"));
    let put = registry.request(
        "PUT",
        &url,
        &[("Content-Type", "application/octet-stream")],
        Body::Bytes(bytes),
    )?;
    if put.status != 201 {
        bail!(
            "uploading {digest} to {repository}: {} {}",
            put.status,
            put.text()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LifeTool {
    Podstore,
    Podman,
    ContainersStorage,
}

impl LifeTool {
    fn name(self) -> &'static str {
        match self {
            LifeTool::Podstore => "podstore",
            LifeTool::Podman => "podman",
            LifeTool::ContainersStorage => "containers-storage",
        }
    }
}

fn hex_id(seed: &str) -> String {
    hex::encode(Sha256::digest(seed.as_bytes()))
}

fn lifecycle(b: &mut Bench) -> Result<()> {
    let tools = [
        LifeTool::Podstore,
        LifeTool::Podman,
        LifeTool::ContainersStorage,
    ];
    let busybox = b.fixtures.image("busybox")?.clone();
    let image_id = busybox
        .image_id()
        .context("busybox has no image ID")?
        .to_owned();
    let image_name = format!(
        "{}/{}",
        b.registry.host_port(),
        busybox.registry_reference()
    );
    let n = b.options.containers;
    for fs in b.options.filesystems.clone() {
        let label = fs_label(fs);
        for driver in ["overlay", "vfs"] {
            eprintln!(
                "==> bench lifecycle: {driver} on {label}, {} runs x {n} containers",
                b.options.runs
            );
            let store = StoreDir::fresh(fs.root().join(format!("life-{driver}")))?;
            Cmd::from_command(&store.podman(driver).command())
                .args(["pull", "-q", "--tls-verify=false", &image_name])
                .run()?;
            rustix::fs::sync();
            for run in 0..b.options.runs {
                for tool in rotated(&tools, run) {
                    for i in 0..n {
                        let name = format!("bench-{run}-{i}");
                        let steps = lifecycle_steps(
                            b,
                            tool,
                            &store,
                            driver,
                            &image_id,
                            &image_name,
                            &name,
                        )?;
                        let mut total = Sample {
                            wall_ms: 0.0,
                            max_rss_kib: 0,
                        };
                        let mut id = String::new();
                        for (op, cmd) in steps {
                            let cmd = match cmd {
                                Some(cmd) => cmd,
                                None => later_step(b, tool, &store, driver, op, &id),
                            };
                            let (sample, stdout) = b.runner.measure(&cmd)?;
                            b.results.add(
                                Key::new(
                                    "lifecycle",
                                    &format!("{driver} {op}"),
                                    &label,
                                    tool.name(),
                                ),
                                &cmd,
                                sample,
                            );
                            total.wall_ms += sample.wall_ms;
                            total.max_rss_kib = total.max_rss_kib.max(sample.max_rss_kib);
                            if op == "create" {
                                id = created_id(tool, &stdout, &name);
                            }
                        }
                        b.results.add(
                            Key::new(
                                "lifecycle",
                                &format!("{driver} per container"),
                                &label,
                                tool.name(),
                            ),
                            &Cmd::new(["create", "+", "mount", "+", "unmount", "+", "delete"]),
                            total,
                        );
                    }
                }
            }
            wipe(&store.dir)?;
            b.checkpoint()?;
        }
    }
    Ok(())
}

/// The ID a create printed: podstore's is the one we chose (`name`'s hash), podman prints the
/// ID, containers-storage prints `ID` as its last word.
fn created_id(tool: LifeTool, stdout: &[u8], name: &str) -> String {
    match tool {
        LifeTool::Podstore => hex_id(name),
        LifeTool::Podman | LifeTool::ContainersStorage => String::from_utf8_lossy(stdout)
            .split_whitespace()
            .last()
            .unwrap_or_default()
            .to_owned(),
    }
}

type Step = (&'static str, Option<Cmd>);

/// The four steps; only `create` is known up front (the others need the created ID).
fn lifecycle_steps(
    b: &Bench,
    tool: LifeTool,
    store: &StoreDir,
    driver: &str,
    image_id: &str,
    image_name: &str,
    name: &str,
) -> Result<Vec<Step>> {
    let create = match tool {
        LifeTool::Podstore => podstore(b, store, driver).args([
            "create",
            "--pod-name",
            "benchpod",
            "--pod-id",
            &hex_id("benchpod"),
            "--image-id",
            image_id,
            "--name",
            name,
            "--id",
            &hex_id(name),
            "--metadata-name",
            name,
        ]),
        LifeTool::Podman => Cmd::from_command(&store.podman(driver).command()).args([
            "create",
            "-q",
            "--network",
            "none",
            "--name",
            name,
            image_name,
            "true",
        ]),
        LifeTool::ContainersStorage => {
            Cmd::from_command(&store.cs(driver).command()).args(["create-container", image_id])
        }
    };
    Ok(vec![
        ("create", Some(create)),
        ("mount", None),
        ("unmount", None),
        ("delete", None),
    ])
}

fn later_step(
    b: &Bench,
    tool: LifeTool,
    store: &StoreDir,
    driver: &str,
    op: &str,
    id: &str,
) -> Cmd {
    match tool {
        LifeTool::Podstore => {
            let verb = match op {
                "delete" => "rm",
                other => other,
            };
            podstore(b, store, driver).args([verb, id])
        }
        LifeTool::Podman => {
            let verb = match op {
                "unmount" => "umount",
                "delete" => "rm",
                other => other,
            };
            Cmd::from_command(&store.podman(driver).command()).args([verb, id])
        }
        LifeTool::ContainersStorage => {
            let verb = match op {
                "delete" => "delete-container",
                other => other,
            };
            Cmd::from_command(&store.cs(driver).command()).args([verb, id])
        }
    }
}

fn listing(b: &mut Bench) -> Result<()> {
    // Listing writes nothing: it runs on tmpfs when selected (else on the disk).
    let fs = if b.options.filesystems.contains(&FsKind::Tmpfs) {
        FsKind::Tmpfs
    } else {
        FsKind::Disk
    };
    let label = fs_label(fs);
    let host = b.registry.host_port();
    let store = StoreDir::fresh(fs.root().join("list"))?;
    let driver = "overlay";
    eprintln!("==> bench images: store with busybox + 20 small images");
    let mut names = vec!["testkit/busybox:latest".to_owned()];
    names.extend(
        b.fixtures
            .small_images()
            .iter()
            .map(|i| i.registry_reference()),
    );
    for name in &names {
        podstore(b, &store, driver)
            .args(["pull", "-q", &format!("docker://{host}/{name}")])
            .run()?;
    }
    measure_listing(
        b,
        &store,
        driver,
        &format!("{} images", names.len()),
        &label,
    )?;
    eprintln!("==> bench images: store with {} images", b.options.images);
    let big_store = StoreDir::fresh(fs.root().join("list-many"))?;
    podstore(b, &big_store, driver)
        .args([
            "pull",
            "-q",
            &format!("docker://{host}/testkit/busybox:latest"),
        ])
        .run()?;
    let busybox = b.fixtures.image("busybox")?.clone();
    add_images(b, &big_store, driver, &busybox, b.options.images)?;
    let last = format!("localhost/bench/listing-{:04}:latest", b.options.images - 1);
    Cmd::from_command(&big_store.podman(driver).command())
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "localhost/bench/listing-0001:latest",
            &last,
        ])
        .run()
        .context("podman reading the generated listing store")?;
    let listed = Cmd::from_command(&big_store.cs(driver).command())
        .args(["images", "-j"])
        .run()?;
    let count = serde_json::from_slice::<serde_json::Value>(&listed)?
        .as_array()
        .map_or(0, Vec::len);
    b.results.notes.push(format!(
        "images: the {}-image listing store was made through podstore's Store API (one pulled \
         busybox image plus {} images with their own config and manifest on its layer); \
         `containers-storage images` lists {count} images and `podman image inspect` reads the \
         first and the last generated one.",
        b.options.images,
        b.options.images - 1
    ));
    measure_listing(
        b,
        &big_store,
        driver,
        &format!("{} images", b.options.images),
        &label,
    )?;
    wipe(&store.dir)?;
    wipe(&big_store.dir)?;
    Ok(())
}

fn measure_listing(
    b: &mut Bench,
    store: &StoreDir,
    driver: &str,
    case: &str,
    label: &str,
) -> Result<()> {
    let tools = ["podstore", "podman", "containers-storage"];
    let commands: Vec<Cmd> = vec![
        podstore(b, store, driver).args(["images"]),
        Cmd::from_command(&store.podman(driver).command()).args(["images"]),
        Cmd::from_command(&store.cs(driver).command()).args(["images"]),
    ];
    let slow_podman = store.dir.ends_with("list-many");
    for (i, cmd) in commands.iter().enumerate() {
        if !(i == 1 && slow_podman) {
            cmd.run()?; // warm-up
        }
    }
    for run in 0..b.options.runs * 3 {
        for i in rotated(&[0, 1, 2], run) {
            if i == 1 && slow_podman {
                continue;
            }
            b.measure(Key::new("images", case, label, tools[i]), &commands[i])?;
        }
    }
    if slow_podman {
        // podman's listing grows faster than linearly (seconds at 50 images): one call, 60 s bound
        let bounded = Cmd::new(["timeout", "60"]).args(commands[1].argv.iter().cloned());
        if let Err(error) = b.measure(Key::new("images", case, label, tools[1]), &bounded) {
            b.results.notes.push(format!(
                "images: podman images on the {case} store did not finish within 60 s: {error:#}"
            ));
        }
    }
    Ok(())
}

/// Adds `total - 1` images to a store holding `base`: each has its own config (a label with
/// its number), so its own ID, and a manifest naming base's layers; big data and metadata as
/// containers/image 5.23 records a pull.
fn add_images(
    b: &Bench,
    store: &StoreDir,
    driver: &str,
    base: &ImageFixture,
    total: usize,
) -> Result<()> {
    let store = Store::open(&StoreOptions::new(store.root(), store.run(), driver))?;
    let store = Arc::new(store);
    let base_id = base.image_id().context("busybox has no ID")?;
    let top_layer = store.image(base_id)?.layer;
    let config_digest = base
        .config_digest
        .clone()
        .context("busybox has no config")?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&b.fixtures.read_blob(&config_digest)?)?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&b.fixtures.read_blob(&base.manifest_digest)?)?;
    for k in 1..total {
        config["config"]["Labels"]["bench.listing"] = serde_json::Value::String(format!("{k}"));
        let config_bytes = serde_json::to_vec(&config)?;
        let config_hex = hex::encode(Sha256::digest(&config_bytes));
        manifest["config"]["digest"] = serde_json::Value::String(format!("sha256:{config_hex}"));
        manifest["config"]["size"] = serde_json::Value::from(config_bytes.len());
        let manifest_bytes = serde_json::to_vec(&manifest)?;
        let manifest_digest = podstore_reference::Digest::sha256_of(&manifest_bytes);
        store.create_image(ImageOptions {
            id: Some(config_hex.clone()),
            top_layer: Some(top_layer.clone()),
            names: vec![format!("localhost/bench/listing-{k:04}:latest")],
            metadata: format!(r#"{{"signatures-sizes":{{"{manifest_digest}":[]}}}}"#),
            created: None,
            digest: Some(manifest_digest.clone()),
            big_data: vec![
                BigDataItem {
                    key: format!("sha256:{config_hex}"),
                    data: config_bytes,
                    digest: None,
                },
                BigDataItem {
                    key: format!("manifest-{manifest_digest}"),
                    data: manifest_bytes.clone(),
                    digest: Some(manifest_digest.clone()),
                },
                BigDataItem {
                    key: "manifest".to_owned(),
                    data: manifest_bytes,
                    digest: Some(manifest_digest.clone()),
                },
                BigDataItem {
                    key: format!("signature-{}", manifest_digest.hex()),
                    data: Vec::new(),
                    digest: None,
                },
            ],
        })?;
    }
    Ok(())
}

/// Layer blob paths of a fixture image.
fn blobs(fixtures: &FixtureSet, tag: &str) -> Result<Vec<PathBuf>> {
    Ok(fixtures
        .image(tag)?
        .layers
        .iter()
        .map(|l| fixtures.blob_path(&l.digest))
        .collect())
}

fn q(p: &Path) -> String {
    crate::bench_exec::shell_quote(&p.to_string_lossy())
}

fn limits(b: &mut Bench) -> Result<()> {
    let gz = blobs(&b.fixtures, "big")?;
    let zs = blobs(&b.fixtures, "big-zstd")?;
    let runs = b.options.runs;
    eprintln!("==> bench limits: sha256 of the big blobs");
    let sha = Cmd::new(["openssl", "dgst", "-sha256"]).args(gz.iter());
    for _ in 0..runs {
        b.measure(
            Key::new("limits", "openssl sha256 of the 4 gzip blobs", "-", "limit"),
            &sha,
        )?;
    }
    let sha_tar = Cmd::shell(&format!(
        "for b in {}; do gzip -dc $b; done | openssl dgst -sha256",
        gz.iter().map(|p| q(p)).collect::<Vec<_>>().join(" ")
    ));
    for _ in 0..runs {
        b.measure(
            Key::new(
                "limits",
                "gzip -dc | openssl sha256 (all layers)",
                "-",
                "limit",
            ),
            &sha_tar,
        )?;
    }
    for fs in b.options.filesystems.clone() {
        let label = fs_label(fs);
        eprintln!("==> bench limits on {label}");
        let x = fs.root().join("limits-x");
        for (kind, list, decompress) in [("gzip", &gz, "gzip -dc"), ("zstd", &zs, "zstd -qdc")] {
            for (i, blob) in list.iter().enumerate() {
                let cmd = Cmd::new(["taskset", "-c", "0", "sh", "-c"]).args([format!(
                    "{decompress} {} | tar -x -C {}",
                    q(blob),
                    q(&x)
                )]);
                for _ in 0..runs {
                    wipe(&x)?;
                    std::fs::create_dir_all(&x)?;
                    b.measure(
                        Key::new(
                            "limits",
                            &format!("{kind} -dc | tar -x, layer {}", i + 1),
                            &label,
                            "limit",
                        ),
                        &cmd,
                    )?;
                }
            }
        }
        let tree = fs.root().join("limits-tree");
        wipe(&tree)?;
        std::fs::create_dir_all(&tree)?;
        for blob in &gz {
            Cmd::shell(&format!("gzip -dc {} | tar -x -C {}", q(blob), q(&tree))).run()?;
        }
        let cp = Cmd::new(["cp", "-a"]).args([&tree, &x]);
        for _ in 0..runs {
            wipe(&x)?;
            b.measure(
                Key::new("limits", "cp -a of the unpacked big tree", &label, "limit"),
                &cp,
            )?;
        }
        let sync = Cmd::new(["sync", "-f"]).args([&x]);
        for _ in 0..runs {
            wipe(&x)?;
            std::fs::create_dir_all(&x)?;
            for blob in &gz {
                Cmd::shell(&format!("gzip -dc {} | tar -x -C {}", q(blob), q(&x))).run()?;
            }
            b.measure(
                Key::new(
                    "limits",
                    "syncfs after unpacking all big layers",
                    &label,
                    "limit",
                ),
                &sync,
            )?;
        }
        wipe(&x)?;
        wipe(&tree)?;
    }
    Ok(())
}

/// Runs the criterion micro-benchmarks and collects their medians.
fn micro(b: &mut Bench) -> Result<()> {
    let target = crate::bench::target_dir();
    let criterion_dir = target.join("criterion");
    let _ = std::fs::remove_dir_all(&criterion_dir);
    let mut cmd = crate::cargo();
    cmd.args([
        "bench",
        "-p",
        "podstore-layer",
        "-p",
        "podstore-reference",
        "-p",
        "podstore-metadata",
        "--bench",
        "apply",
        "--bench",
        "digest",
        "--bench",
        "records",
        "--",
    ]);
    if b.options.quick {
        cmd.args([
            "--warm-up-time",
            "0.2",
            "--measurement-time",
            "0.5",
            "--sample-size",
            "10",
        ]);
    } else {
        cmd.args(["--warm-up-time", "1", "--measurement-time", "3"]);
    }
    cmd.env_remove("PODSTORE_BENCH_INNER")
        .env("CRITERION_HOME", &criterion_dir);
    crate::run("bench: criterion micro-benchmarks", cmd)?;
    let mut found = Vec::new();
    collect_criterion(&criterion_dir, &mut found)?;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    b.results.micro = found;
    Ok(())
}

fn collect_criterion(dir: &Path, out: &mut Vec<(String, f64, Option<u64>)>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        if path.file_name().is_some_and(|n| n == "new") && path.join("estimates.json").is_file() {
            let estimates: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path.join("estimates.json"))?)?;
            let bench: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path.join("benchmark.json"))?)?;
            let id = bench["full_id"].as_str().unwrap_or("?").to_owned();
            let median = estimates["median"]["point_estimate"]
                .as_f64()
                .unwrap_or(f64::NAN);
            let bytes = bench["throughput"]["Bytes"].as_u64();
            out.push((id, median, bytes));
        } else if path.is_dir()
            && path
                .file_name()
                .is_some_and(|n| n != "report" && n != "base")
        {
            collect_criterion(&path, out)?;
        }
    }
    Ok(())
}

/// Profiles of podstore where a target may be missed: a pull of `big` (tmpfs, overlay) sampled
/// with `perf record`, then under callgrind one container create and `images` on the listing
/// store. Top entries by self cost go into the report.
fn profile(b: &mut Bench) -> Result<()> {
    let store = StoreDir::fresh(FsKind::Tmpfs.root().join("profile"))?;
    // The pull cannot run under valgrind 3.19 (Debian 12): it has no openat2 wrapper, so the
    // applier's RESOLVE_IN_ROOT opens fail with ENOSYS. A sampling profile of the full-size pull
    // with perf's software clock (no hardware counters on this VM) takes its place.
    b.registry
        .push(&b.fixtures, "big", "testkit/big-profile:latest")?;
    let pull = podstore(b, &store, "overlay").args([
        "pull".to_owned(),
        "-q".to_owned(),
        format!(
            "docker://{}/testkit/big-profile:latest",
            b.registry.host_port()
        ),
    ]);
    perf_profile(
        b,
        &format!(
            "podstore pull of big at {} % (overlay, tmpfs; perf cpu-clock samples)",
            b.options.big_percent
        ),
        &pull,
        &FsKind::Disk.root().join("perf.pull.data"),
    );
    wipe(&store.dir)?;
    if !crate::bench_measures::tool_exists("valgrind") {
        b.results
            .notes
            .push("profile: valgrind is not installed, no callgrind profiles.".to_owned());
        return Ok(());
    }
    let store = StoreDir::fresh(FsKind::Tmpfs.root().join("profile"))?;
    // one container lifecycle step that dominates: create (then rm, not profiled)
    let image_id = b
        .fixtures
        .image("busybox")?
        .image_id()
        .context("busybox has no ID")?
        .to_owned();
    podstore(b, &store, "overlay")
        .args([
            "pull".to_owned(),
            "-q".to_owned(),
            format!("docker://{}/testkit/busybox:latest", b.registry.host_port()),
        ])
        .run()?;
    let name = "profile-0";
    let create = lifecycle_steps(
        b,
        LifeTool::Podstore,
        &store,
        "overlay",
        &image_id,
        "",
        name,
    )?
    .into_iter()
    .next()
    .and_then(|(_, cmd)| cmd)
    .context("no create step")?;
    callgrind(
        b,
        "podstore create (busybox, overlay, tmpfs)",
        &create,
        &FsKind::Disk.root().join("callgrind.create.out"),
    )?;
    // listing: the large listing store
    let busybox = b.fixtures.image("busybox")?.clone();
    add_images(b, &store, "overlay", &busybox, b.options.images)?;
    let images = podstore(b, &store, "overlay").args(["images"]);
    callgrind(
        b,
        &format!("podstore images ({} images, tmpfs)", b.options.images),
        &images,
        &FsKind::Disk.root().join("callgrind.images.out"),
    )?;
    wipe(&store.dir)?;
    Ok(())
}

/// A `perf record -e cpu-clock` profile of `cmd` (self time per symbol, top entries); a
/// failure becomes a note.
fn perf_profile(b: &mut Bench, title: &str, cmd: &Cmd, out: &Path) {
    if let Err(error) = perf_profile_inner(b, title, cmd, out) {
        b.results.notes.push(format!(
            "profile: {title} under perf record failed: {error:#}"
        ));
    }
}

fn perf_profile_inner(b: &mut Bench, title: &str, cmd: &Cmd, out: &Path) -> Result<()> {
    if !tool_exists("perf") {
        bail!("perf is not installed");
    }
    eprintln!("==> bench profile: {title}");
    let _ = std::fs::remove_file(out);
    let mut wrapped = Cmd::new([
        "perf".to_owned(),
        "record".to_owned(),
        "-q".to_owned(),
        "-e".to_owned(),
        "cpu-clock".to_owned(),
        "-F".to_owned(),
        "999".to_owned(),
        "-o".to_owned(),
        out.display().to_string(),
        "--".to_owned(),
    ]);
    wrapped.argv.extend(cmd.argv.iter().cloned());
    wrapped.run()?;
    let report = Cmd::new([
        "perf",
        "report",
        "--stdio",
        "--no-children",
        "--sort",
        "symbol",
        "--percent-limit",
        "0.5",
        "-i",
    ])
    .args([out])
    .run()?;
    let text = String::from_utf8_lossy(&report);
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# Samples") || l.starts_with("# Event count"))
        .collect();
    let top: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .take(20)
        .collect();
    b.results.profiles.push((
        title.to_owned(),
        wrapped.display(),
        format!("{}\n{}", samples.join("\n"), top.join("\n")),
    ));
    Ok(())
}

fn callgrind(b: &mut Bench, title: &str, cmd: &Cmd, out: &Path) -> Result<()> {
    if let Err(error) = callgrind_inner(b, title, cmd, out) {
        b.results.notes.push(format!(
            "profile: {title} under callgrind failed: {error:#}"
        ));
    }
    Ok(())
}

fn callgrind_inner(b: &mut Bench, title: &str, cmd: &Cmd, out: &Path) -> Result<()> {
    eprintln!("==> bench profile: {title}");
    let _ = std::fs::remove_file(out);
    let mut wrapped = Cmd::new([
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ]);
    wrapped.argv.extend(cmd.argv.iter().cloned());
    wrapped.run()?;
    let annotated = Cmd::new(["callgrind_annotate", "--threshold=99"])
        .args([out])
        .run()?;
    let text = String::from_utf8_lossy(&annotated);
    let top: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .take(22)
        .collect();
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("PROGRAM TOTALS"))
        .collect();
    b.results.profiles.push((
        title.to_owned(),
        wrapped.display(),
        format!("{}\n{}", summary.join("\n"), top.join("\n")),
    ));
    Ok(())
}

/// Whether `tool` is on PATH.
pub fn tool_exists(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}
