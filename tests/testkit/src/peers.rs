//! The real peer tools the interop tests compare podstore with — `podman`, `skopeo` and the
//! `containers-storage` CLI — run on a given store (root, runroot, driver) with this machine's
//! flags, plus the scaffolding around them: a tool-presence check, scratch directories under
//! `/dev/shm` ([`shm_tempdir`], [`StoreDirs`]), and a guard that shuts an overlay store down and unmounts it on drop.
//!
//! These helpers are for tests: `run` and `json` panic with the tool's stderr when the tool
//! fails, so a test reads as a list of steps.
//!
//! Debian packages needed at run time: `podman`, `skopeo`, `containers-storage`.
//!
//! ```no_run
//! use podstore_testkit::peers::{Podman, shm_tempdir};
//!
//! let dir = shm_tempdir("podstore-example-");
//! let podman = Podman::new(dir.path().join("root"), dir.path().join("run"), "vfs");
//! let images = podman.json(&["images", "--format", "json"]);
//! assert!(images.as_array().is_some_and(Vec::is_empty));
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Whether a file named `tool` is in a `PATH` directory; prints `SKIP: <tool> is not
/// installed` when it is not, so a test can `return` early with a visible reason.
///
/// # Panics
///
/// When the tool is missing and `PODSTORE_REQUIRE_TOOLS=1` (set by `cargo xtask ci` and
/// `cargo xtask e2e`): there a skipped validator is a failure, not a silent pass.
pub fn tool_available(tool: &str) -> bool {
    let found = tool_installed(tool);
    if !found {
        assert!(
            std::env::var("PODSTORE_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "{tool} is not installed and PODSTORE_REQUIRE_TOOLS=1: run `cargo xtask deps`"
        );
        eprintln!("SKIP: {tool} is not installed");
    }
    found
}

/// Whether a file named `tool` is in a `PATH` directory: the plain look-up behind
/// [`tool_available`], without its skip message or its `PODSTORE_REQUIRE_TOOLS` check.
pub fn tool_installed(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The storage drivers the end-to-end tests run on: `PODSTORE_E2E_DRIVERS`, a comma-separated
/// list of `overlay` and `vfs` (default: both, overlay first). Unknown names panic, naming
/// the value. `overlay` is left out, with a `SKIP:` line, when the kernel has no overlayfs
/// (and `PODSTORE_REQUIRE_TOOLS=1` makes that a failure too).
///
/// ```
/// // an end-to-end test body runs once per driver
/// for driver in podstore_testkit::peers::e2e_drivers() {
///     assert!(driver == "overlay" || driver == "vfs");
/// }
/// ```
pub fn e2e_drivers() -> Vec<&'static str> {
    let text = std::env::var("PODSTORE_E2E_DRIVERS").unwrap_or_default();
    let chosen = parse_drivers(&text);
    let has_overlay = std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    });
    chosen
        .into_iter()
        .filter(|driver| {
            if *driver == "overlay" && !has_overlay {
                assert!(
                    std::env::var("PODSTORE_REQUIRE_TOOLS").as_deref() != Ok("1"),
                    "the kernel has no overlayfs and PODSTORE_REQUIRE_TOOLS=1"
                );
                eprintln!("SKIP: the kernel has no overlayfs; end-to-end tests run on vfs only");
                return false;
            }
            true
        })
        .collect()
}

/// Parses a `PODSTORE_E2E_DRIVERS` value (empty: both).
fn parse_drivers(text: &str) -> Vec<&'static str> {
    let mut drivers = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let driver = match name {
            "overlay" => "overlay",
            "vfs" => "vfs",
            other => panic!("PODSTORE_E2E_DRIVERS: unknown driver {other:?} in {text:?}"),
        };
        if !drivers.contains(&driver) {
            drivers.push(driver);
        }
    }
    if drivers.is_empty() {
        drivers = vec!["overlay", "vfs"];
    }
    drivers
}

/// A fresh directory under `/dev/shm` (tmpfs) whose name starts with `prefix`, removed on drop.
///
/// # Panics
///
/// When `/dev/shm` is not writable.
pub fn shm_tempdir(prefix: &str) -> tempfile::TempDir {
    match tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/dev/shm")
    {
        Ok(dir) => dir,
        Err(error) => panic!("creating a tempdir {prefix}* in /dev/shm: {error}"),
    }
}

/// Runs `command`, asserting that it started and exited successfully; `what` names it in the
/// panic message, which carries the tool's stderr.
fn run_checked(mut command: Command, what: &str) -> Output {
    succeeded(command.output(), what)
}

/// The output of a finished command, asserting that it started and exited successfully.
fn succeeded(out: std::io::Result<Output>, what: &str) -> Output {
    let out = match out {
        Ok(out) => out,
        Err(error) => panic!("running {what}: {error}"),
    };
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Parses a tool's stdout as JSON; `what` names the command in the panic message.
fn parse_json(stdout: &[u8], what: &str) -> serde_json::Value {
    match serde_json::from_slice(stdout) {
        Ok(value) => value,
        Err(error) => panic!(
            "parsing the output of {what} ({:?}): {error}",
            String::from_utf8_lossy(stdout)
        ),
    }
}

/// `podman` on one store: `--root R --runroot RR [--tmpdir T] --storage-driver D
/// --cgroup-manager cgroupfs --events-backend none`.
#[derive(Debug, Clone)]
pub struct Podman {
    root: PathBuf,
    runroot: PathBuf,
    driver: String,
    tmpdir: Option<PathBuf>,
}

impl Podman {
    /// Podman on the store at `root` / `runroot` with storage driver `driver`.
    pub fn new(root: impl Into<PathBuf>, runroot: impl Into<PathBuf>, driver: &str) -> Podman {
        Podman {
            root: root.into(),
            runroot: runroot.into(),
            driver: driver.to_owned(),
            tmpdir: None,
        }
    }

    /// The same, also passing `--tmpdir tmpdir` (podman's own scratch directory).
    #[must_use]
    pub fn with_tmpdir(mut self, tmpdir: impl Into<PathBuf>) -> Podman {
        self.tmpdir = Some(tmpdir.into());
        self
    }

    /// A `podman` command with the store's global flags, ready for its arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot);
        if let Some(tmpdir) = &self.tmpdir {
            command.arg("--tmpdir").arg(tmpdir);
        }
        command.args([
            "--storage-driver",
            &self.driver,
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "none",
        ]);
        command
    }

    /// Runs `podman <flags> args`, asserting success; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        run_checked(command, &format!("podman {args:?}"))
    }

    /// Runs `podman <flags> args`, asserting success; returns its stdout as UTF-8 text.
    pub fn stdout(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.run(args).stdout).into_owned()
    }

    /// Runs `podman <flags> args` (e.g. `images --format json`), asserting success; returns its
    /// stdout parsed as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        parse_json(&self.run(args).stdout, &format!("podman {args:?}"))
    }
}

/// The `containers-storage` CLI on one store: `--graph R --run RR --storage-driver D`.
#[derive(Debug, Clone)]
pub struct ContainersStorage {
    root: PathBuf,
    runroot: PathBuf,
    driver: String,
}

impl ContainersStorage {
    /// The CLI on the store at `root` / `runroot` with storage driver `driver`.
    pub fn new(
        root: impl Into<PathBuf>,
        runroot: impl Into<PathBuf>,
        driver: &str,
    ) -> ContainersStorage {
        ContainersStorage {
            root: root.into(),
            runroot: runroot.into(),
            driver: driver.to_owned(),
        }
    }

    /// A `containers-storage` command with the store's global flags, ready for its arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new("containers-storage");
        command
            .arg("--graph")
            .arg(&self.root)
            .arg("--run")
            .arg(&self.runroot)
            .args(["--storage-driver", &self.driver]);
        command
    }

    /// Runs `containers-storage <flags> args`, asserting success; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        run_checked(command, &format!("containers-storage {args:?}"))
    }

    /// Runs `containers-storage <flags> args` (e.g. `import-layer`) with `input` on its stdin,
    /// asserting success; returns its output.
    pub fn run_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let what = format!("containers-storage {args:?}");
        let mut command = self.command();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => panic!("running {what}: {error}"),
        };
        if let Some(mut stdin) = child.stdin.take()
            && let Err(error) = stdin.write_all(input)
        {
            panic!("writing the input of {what}: {error}");
        }
        succeeded(child.wait_with_output(), &what)
    }

    /// Runs `containers-storage <flags> args` (e.g. `containers --json`), asserting success;
    /// returns its stdout parsed as JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        parse_json(
            &self.run(args).stdout,
            &format!("containers-storage {args:?}"),
        )
    }
}

/// `skopeo --insecure-policy` (no `policy.json` needed).
#[derive(Debug, Clone, Default)]
pub struct Skopeo;

impl Skopeo {
    /// A `skopeo --insecure-policy` command, ready for its arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new("skopeo");
        command.arg("--insecure-policy");
        command
    }

    /// Runs `skopeo --insecure-policy args`, asserting success; returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = self.command();
        command.args(args);
        run_checked(command, &format!("skopeo {args:?}"))
    }

    /// The `containers-storage:[driver@root+runroot]name` transport reference naming `name`
    /// in that store, as skopeo and podman spell it.
    pub fn store_reference(root: &Path, runroot: &Path, driver: &str, name: &str) -> String {
        format!(
            "containers-storage:[{driver}@{}+{}]{name}",
            root.display(),
            runroot.display()
        )
    }
}

/// On drop, runs `containers-storage ... --storage-driver overlay shutdown` on the store (which
/// drops overlay's self bind-mount) and then `umount <root>/overlay`; failures are ignored, as
/// the store may never have been created. Declare it after the tempdir holding the store so it
/// drops first.
#[derive(Debug)]
pub struct StoreGuard {
    root: PathBuf,
    runroot: PathBuf,
}

impl StoreGuard {
    /// Guards the overlay store at `root` / `runroot`.
    pub fn overlay(root: impl Into<PathBuf>, runroot: impl Into<PathBuf>) -> StoreGuard {
        StoreGuard {
            root: root.into(),
            runroot: runroot.into(),
        }
    }
}

impl Drop for StoreGuard {
    fn drop(&mut self) {
        let _ = ContainersStorage::new(&self.root, &self.runroot, "overlay")
            .command()
            .arg("shutdown")
            .output();
        let _ = Command::new("umount")
            .arg(self.root.join("overlay"))
            .output();
    }
}

/// A scratch store's directories in a fresh `/dev/shm` tempdir, removed on drop: `root` and
/// `run` (left for the store to create) and `tmp` (created, for podman's `--tmpdir`).
#[derive(Debug)]
pub struct StoreDirs {
    dir: tempfile::TempDir,
}

impl StoreDirs {
    /// A fresh tempdir named `prefix*` under `/dev/shm`, with `tmp/` created.
    ///
    /// # Panics
    ///
    /// When `/dev/shm` is not writable.
    pub fn new(prefix: &str) -> StoreDirs {
        let dirs = StoreDirs {
            dir: shm_tempdir(prefix),
        };
        if let Err(error) = std::fs::create_dir_all(dirs.tmpdir()) {
            panic!("creating {}: {error}", dirs.tmpdir().display());
        }
        dirs
    }

    /// The tempdir itself.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The store's root (graph root): `<tempdir>/root`.
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// The store's run root: `<tempdir>/run`.
    pub fn runroot(&self) -> PathBuf {
        self.path().join("run")
    }

    /// Podman's scratch directory: `<tempdir>/tmp` (exists).
    pub fn tmpdir(&self) -> PathBuf {
        self.path().join("tmp")
    }

    /// Writes an empty file `name` in the tempdir (e.g. a `registries.conf` that names no
    /// registry) and returns its path.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn empty_file(&self, name: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Err(error) = std::fs::write(&path, "") {
            panic!("writing {}: {error}", path.display());
        }
        path
    }

    /// Podman on this store with `driver`, its `--tmpdir` set to [`StoreDirs::tmpdir`].
    pub fn podman(&self, driver: &str) -> Podman {
        Podman::new(self.root(), self.runroot(), driver).with_tmpdir(self.tmpdir())
    }

    /// The containers-storage CLI on this store with `driver`.
    pub fn containers_storage(&self, driver: &str) -> ContainersStorage {
        ContainersStorage::new(self.root(), self.runroot(), driver)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_drivers;

    #[test]
    fn drivers_table() {
        for (text, expected) in [
            ("", vec!["overlay", "vfs"]),
            (" , ", vec!["overlay", "vfs"]),
            ("vfs", vec!["vfs"]),
            ("overlay", vec!["overlay"]),
            ("vfs,overlay", vec!["vfs", "overlay"]),
            ("overlay, vfs ,overlay", vec!["overlay", "vfs"]),
        ] {
            assert_eq!(parse_drivers(text), expected, "{text:?}");
        }
        for bad in ["btrfs", "vfs,zfs", "Overlay"] {
            let panicked = std::panic::catch_unwind(|| parse_drivers(bad));
            assert!(panicked.is_err(), "{bad:?} was accepted");
        }
    }
}
