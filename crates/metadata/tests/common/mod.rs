//! Shared helpers for the metadata integration tests: a tiny deterministic OCI layout, the real
//! tools (skipped with a printed reason when absent), and scratch stores.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use podstore_metadata::{Store, StoreOptions};
use podstore_reference::Digest;
use podstore_testkit::peers::{ContainersStorage, Podman, Skopeo};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether a tool is on PATH; prints the skip reason when it is not.
pub use podstore_testkit::peers::tool_available as have;

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).unwrap()
}

/// A scratch store directory on /dev/shm (or on disk), cleaned up (after `shutdown`) on drop.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub driver: &'static str,
}

impl Scratch {
    pub fn new(driver: &'static str) -> Scratch {
        Scratch::new_in("/dev/shm", driver)
    }
    pub fn new_in(base: &str, driver: &'static str) -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("podstore-meta-")
                .tempdir_in(base)
                .unwrap(),
            driver,
        }
    }
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn run_root(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn options(&self) -> StoreOptions {
        StoreOptions::new(self.root(), self.run_root(), self.driver)
    }
    pub fn cs(&self) -> Command {
        ContainersStorage::new(self.root(), self.run_root(), self.driver).command()
    }
    pub fn podman(&self) -> Command {
        Podman::new(self.root(), self.run_root(), self.driver)
            .with_tmpdir(self.dir.path().join("tmp"))
            .command()
    }
    pub fn store_ref(&self, name: &str) -> String {
        Skopeo::store_reference(&self.root(), &self.run_root(), self.driver, name)
    }
    pub fn open(&self) -> Store {
        open_store(&self.options())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.driver == "overlay" {
            let home = self.root().join("overlay");
            // Drop overlay's self bind-mount and any layer mounts left by the tools.
            let _ = self.cs().arg("shutdown").output();
            if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
                let mut mps: Vec<&str> = info
                    .lines()
                    .filter_map(|l| l.split(' ').nth(4))
                    .filter(|m| m.starts_with(&*self.dir.path().to_string_lossy()))
                    .collect();
                mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
                for m in mps {
                    let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
                }
            }
            let _ = rustix::mount::unmount(&home, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// Opens a store with the layer crate's real driver.
pub fn open_store(options: &StoreOptions) -> Store {
    Store::open(options).unwrap()
}

/// One layer of the test image.
pub struct TestLayer {
    pub tar: Vec<u8>,
    pub gz: Vec<u8>,
    pub diff_id: Digest,
    pub blob: Digest,
}

/// A tiny deterministic OCI image, written as an OCI layout.
pub struct TestImage {
    pub layers: Vec<TestLayer>,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

impl TestImage {
    /// Image ID as containers/image computes it (config digest hex).
    pub fn id(&self) -> String {
        self.config_digest.hex().to_owned()
    }
    /// Layer IDs as containers/image computes them.
    pub fn layer_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for l in &self.layers {
            let id = match ids.last() {
                None => l.diff_id.hex().to_owned(),
                Some(p) => Digest::sha256_of(format!("{p}+{}", l.diff_id.hex()).as_bytes())
                    .hex()
                    .to_owned(),
            };
            ids.push(id);
        }
        ids
    }
}

fn make_tar(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, uid) in files {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(u64::from(*uid));
        h.set_gid(u64::from(*uid));
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Builds the test image; `tag_seed` changes the content so several distinct images exist.
pub fn test_image(seed: &str) -> TestImage {
    let l1 = make_tar(&[("etc/hello", format!("hello {seed}\n").as_bytes(), 0)]);
    let l2 = make_tar(&[("data/x", b"xx", 1000), ("data/y", seed.as_bytes(), 0)]);
    let layers: Vec<TestLayer> = [l1, l2]
        .into_iter()
        .map(|tar| {
            let gz = gzip(&tar);
            TestLayer {
                diff_id: Digest::sha256_of(&tar),
                blob: Digest::sha256_of(&gz),
                tar,
                gz,
            }
        })
        .collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["sh"]}},"created":"2023-11-14T22:13:20Z","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
        layers[0].diff_id, layers[1].diff_id
    )
    .into_bytes();
    let config_digest = Digest::sha256_of(&config);
    let layer_descs: Vec<String> = layers
        .iter()
        .map(|l| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}"#,
                l.blob,
                l.gz.len()
            )
        })
        .collect();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{}]}}"#,
        config_digest,
        config.len(),
        layer_descs.join(",")
    )
    .into_bytes();
    let manifest_digest = Digest::sha256_of(&manifest);
    TestImage {
        layers,
        config,
        config_digest,
        manifest,
        manifest_digest,
    }
}

/// Writes images into an OCI layout at `dir`, tagged with the given tags.
pub fn write_oci_layout(dir: &Path, images: &[(&str, &TestImage)]) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |d: &Digest, data: &[u8]| std::fs::write(blobs.join(d.hex()), data).unwrap();
    let mut manifests = Vec::new();
    for (tag, img) in images {
        for l in &img.layers {
            put(&l.blob, &l.gz);
        }
        put(&img.config_digest, &img.config);
        put(&img.manifest_digest, &img.manifest);
        manifests.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"{}"}}}}"#,
            img.manifest_digest,
            img.manifest.len(),
            tag
        ));
    }
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            manifests.join(",")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// `containers-storage <args> -j`-style JSON output parsed.
pub fn cs_json(scratch: &Scratch, args: &[&str]) -> serde_json::Value {
    let out = run_stdout(scratch.cs().args(args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("parsing {args:?} output {out:?}: {e}"))
}
