//! Set-up shared by the `podstore` binary's end-to-end tests (cli.rs, report_cli.rs,
//! runtime_cli.rs, soak.rs): a scratch store in a tempdir with its own `storage.conf` (the machine's
//! must not leak into the tests; podman and the containers-storage CLI read this one too), the
//! `podstore` command with the store's global flags, the peers on the same store, and the
//! fixture IDs the tests compare with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::{ContainersStorage, Podman, StoreGuard, shm_tempdir};

/// The pod sandbox ID the tests create.
pub const POD_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
/// The container ID the tests create.
pub const CONTAINER_ID: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// Writes `dir/storage.conf` naming `dir/root` and `dir/runroot` with `driver`.
pub fn write_storage_conf(dir: &Path, driver: &str) {
    std::fs::write(
        dir.join("storage.conf"),
        format!(
            "[storage]\ndriver = \"{driver}\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("root").display(),
            dir.join("runroot").display()
        ),
    )
    .unwrap();
}

/// A scratch store: `root/` and `runroot/` in a tempdir, with `storage.conf` naming them.
pub struct Env {
    /// Overlay stores: shut down and unmounted before `dir` is removed (fields drop in order).
    _guard: Option<StoreGuard>,
    /// The tempdir holding the store.
    pub dir: tempfile::TempDir,
    /// `vfs` or `overlay`.
    pub driver: &'static str,
}

impl Env {
    /// An empty store in a fresh /dev/shm tempdir.
    pub fn new(driver: &'static str) -> Env {
        Env::in_dir(driver, shm_tempdir("podstore-cli-"))
    }

    /// An empty store in `dir`.
    pub fn in_dir(driver: &'static str, dir: tempfile::TempDir) -> Env {
        write_storage_conf(dir.path(), driver);
        let _guard = (driver == "overlay")
            .then(|| StoreGuard::overlay(dir.path().join("root"), dir.path().join("runroot")));
        Env {
            _guard,
            dir,
            driver,
        }
    }

    /// A store holding the testkit busybox image (pulled from the OCI layout).
    pub fn with_busybox(driver: &'static str) -> Env {
        let env = Env::new(driver);
        env.pull("busybox");
        env
    }

    /// The tempdir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The graph root.
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// The run root.
    pub fn runroot(&self) -> PathBuf {
        self.path().join("runroot")
    }

    /// The store's `storage.conf`.
    pub fn storage_conf(&self) -> PathBuf {
        self.path().join("storage.conf")
    }

    /// `podstore` with this store's global flags followed by `args`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_podstore"));
        command
            .arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.runroot())
            .args(["--storage-driver", self.driver])
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", self.storage_conf());
        command
    }

    /// Runs `podstore args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and asserts success, returning stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podstore {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs, asserts success and parses stdout as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// `pull --quiet` of a testkit fixture from the OCI layout; returns the image ID.
    pub fn pull(&self, tag: &str) -> String {
        let fixtures = FixtureSet::shared().unwrap();
        self.ok(&["pull", "--quiet", &fixtures.oci_reference(tag)])
            .trim()
            .to_owned()
    }

    /// `podman create --network none --name NAME IMAGE` on the store; the new container's ID.
    pub fn podman_create(&self, name: &str, image: &str) -> String {
        let out = self.peer(
            "podman",
            &["create", "--network", "none", "--name", name, image],
        );
        first_line(&out).to_owned()
    }

    /// `tool` (podman or containers-storage) on this store, with `args`; asserts success and
    /// returns stdout.
    pub fn peer(&self, tool: &str, args: &[&str]) -> String {
        let mut command = if tool == "podman" {
            Podman::new(self.root(), self.runroot(), self.driver)
                .with_tmpdir(self.path().join("podman-tmp"))
                .command()
        } else {
            ContainersStorage::new(self.root(), self.runroot(), self.driver).command()
        };
        let out = command
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", self.storage_conf())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The store's layer records as containers/storage writes them (none before the first
    /// layer).
    pub fn layer_records(&self) -> Vec<serde_json::Value> {
        let path = self
            .root()
            .join(format!("{}-layers/layers.json", self.driver));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| "[]".to_owned());
        serde_json::from_str::<serde_json::Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The first line of a command's output.
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// The last line of a command's output.
pub fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or("")
}

/// The testkit busybox image's ID.
pub fn busybox_id() -> String {
    FixtureSet::shared()
        .unwrap()
        .image("busybox")
        .unwrap()
        .image_id()
        .unwrap()
        .to_owned()
}
