//! `cargo xtask demo`: podstore end to end on this machine, as a new user would see it.
//!
//! Installs what it needs when missing (Debian's `docker-registry`, `busybox-static` for the
//! sample image), builds the `podstore` binary, builds a sample image offline with the
//! testkit's deterministic fixture builder, starts a real `docker-registry` on 127.0.0.1 (a
//! free port), pushes the image, pulls it with `podstore` into a fresh store, creates a pod
//! sandbox and a container, mounts the container and shows its root filesystem, shows
//! `podman images` / `podman ps --external` reading the same store when podman is installed,
//! then cleans up everything it started: the registry (its own process group, stopped through
//! the testkit's watchdog pipe even if this process dies), every mount under the demo
//! directory, and the directory itself — on success, on failure and on Ctrl-C. Each step is
//! timed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use podstore_testkit::fixtures::{FixtureOptions, FixtureSet};
use podstore_testkit::peers::{Podman, tool_available};
use podstore_testkit::registry::{Registry, RegistryMode};

/// Debian packages the demo cannot run without.
const REQUIRED_PACKAGES: &[(&str, &str)] = &[
    ("docker-registry", "/usr/bin/docker-registry"),
    ("busybox-static", "/bin/busybox"),
];

/// The pod and container the demo creates (IDs are 64 hex digits, as CRI-O's).
const POD_NAME: &str = "demo-pod";
const POD_ID: &str = "d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0";
const CONTAINER_NAME: &str = "demo-app";
const CONTAINER_ID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// Runs the demo; `args` may hold `--keep` (leave the store for inspection; the registry is
/// still stopped) and `--driver overlay|vfs`.
pub fn run(args: &[String]) -> Result<()> {
    let mut keep = false;
    let mut driver = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--keep" => keep = true,
            "--driver" => {
                let value = it.next().context("--driver needs overlay or vfs")?;
                if value != "overlay" && value != "vfs" {
                    bail!("--driver takes overlay or vfs, not {value:?}");
                }
                driver = Some(value.clone());
            }
            other => bail!("unknown demo argument {other:?} (expected --keep, --driver D)"),
        }
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = Arc::clone(&interrupted);
        // Ctrl-C also reaches the step's child process (same process group), which ends it;
        // the flag makes the demo stop before the next step, and the guards clean up.
        ctrlc::set_handler(move || {
            flag.store(true, Ordering::SeqCst);
            eprintln!("\n==> demo: interrupted, cleaning up");
        })
        .context("installing the Ctrl-C handler")?;
    }
    let mut demo = Demo {
        steps: Vec::new(),
        interrupted,
        started: Instant::now(),
    };
    let outcome = demo.run_steps(driver, keep);
    demo.print_timings();
    match &outcome {
        Ok(()) => eprintln!("==> demo: done, everything it started is cleaned up"),
        Err(_) if demo.interrupted.load(Ordering::SeqCst) => {
            eprintln!("==> demo: interrupted; everything it started is cleaned up");
        }
        Err(_) => eprintln!("==> demo: FAILED; everything it started is cleaned up"),
    }
    outcome
}

struct Demo {
    steps: Vec<(String, Duration)>,
    interrupted: Arc<AtomicBool>,
    started: Instant,
}

/// Removes the demo directory on drop, after unmounting everything mounted under it (deepest
/// first); with `keep`, only unmounts.
struct DemoDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        unmount_everything_under(&self.path);
        if self.keep {
            eprintln!("==> demo: kept {} (--keep)", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("==> demo: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Mount points at or below `dir`, from /proc/self/mountinfo, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn unmount_everything_under(dir: &Path) {
    // A path can be mounted over more than once: repeat until nothing is left (bounded).
    for _ in 0..8 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&mount)
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Demo {
    /// Starts a step: prints its title, fails if Ctrl-C was pressed.
    fn step<T>(&mut self, title: &str, body: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.interrupted.load(Ordering::SeqCst) {
            bail!("interrupted before {title:?}");
        }
        eprintln!("\n==> {title}");
        let start = Instant::now();
        let result = body(self);
        let took = start.elapsed();
        eprintln!("    ({})", seconds(took));
        self.steps.push((title.to_owned(), took));
        if result.is_err() && self.interrupted.load(Ordering::SeqCst) {
            bail!("interrupted during {title:?}");
        }
        result.with_context(|| format!("demo step {title:?}"))
    }

    fn print_timings(&self) {
        let mut table = String::from("\n==> timings\n");
        let width = self.steps.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
        for (title, took) in &self.steps {
            let _ = writeln!(table, "    {title:<width$}  {:>8}", seconds(*took));
        }
        let _ = writeln!(
            table,
            "    {:<width$}  {:>8}",
            "total",
            seconds(self.started.elapsed())
        );
        eprint!("{table}");
    }

    fn run_steps(&mut self, driver: Option<String>, keep: bool) -> Result<()> {
        self.step("check the machine and install what is missing", |_| {
            install_missing()
        })?;
        let podstore = self.step("build the podstore binary (cargo build)", |_| {
            build_podstore()
        })?;

        let base = PathBuf::from("/var/tmp");
        let dir = tempfile::Builder::new()
            .prefix("podstore-demo-")
            .tempdir_in(&base)
            .with_context(|| format!("creating a demo directory in {}", base.display()))?
            .keep();
        let demo_dir = DemoDir {
            path: dir.clone(),
            keep,
        };
        let driver = driver.unwrap_or_else(|| {
            if kernel_has_overlay() {
                "overlay".to_owned()
            } else {
                "vfs".to_owned()
            }
        });
        let conf = dir.join("storage.conf");
        std::fs::write(
            &conf,
            format!(
                "[storage]\ndriver = \"{driver}\"\ngraphroot = \"{root}\"\nrunroot = \"{run}\"\n",
                root = dir.join("root").display(),
                run = dir.join("run").display(),
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        std::fs::create_dir_all(dir.join("podman-tmp"))?;
        eprintln!(
            "\n==> the demo works in {} (removed at the end)",
            dir.display()
        );
        eprintln!(
            "    export CONTAINERS_STORAGE_CONF={}   # graphroot, runroot, driver = {driver}",
            conf.display()
        );
        let shell = Shell {
            podstore,
            conf: conf.clone(),
        };

        let fixtures = self.step("build the sample image offline (testkit fixtures)", |_| {
            let set = FixtureSet::build(
                &dir.join("oci-layout"),
                &FixtureOptions::default().with_small_count(0),
            )?;
            let busybox = set.image("busybox")?;
            eprintln!(
                "    OCI layout {}: {} images; sample `busybox`: {} layer(s), {} bytes, \
                 config {}",
                set.dir().display(),
                set.images().len(),
                busybox.layers.len(),
                busybox.layers_size(),
                busybox.config_digest.as_deref().unwrap_or("?"),
            );
            Ok(set)
        })?;

        let registry = self.step("start docker-registry on 127.0.0.1", |_| {
            let registry = Registry::start(RegistryMode::Plain)?;
            eprintln!(
                "    docker-registry pid {} serving {} (storage {})",
                registry.pid(),
                registry.url(),
                registry.storage_dir().display()
            );
            Ok(registry)
        })?;
        let reference = registry.image_reference("demo/busybox:latest");

        self.step("push the sample image to the registry", |_| {
            let digest = registry.push(&fixtures, "busybox", "demo/busybox:latest")?;
            eprintln!("    pushed {reference} ({digest})");
            Ok(())
        })?;

        let image_id = self.step("pull it with podstore into a fresh store", |_| {
            let out = shell.run_inherit_stderr(&["pull", &reference])?;
            Ok(out.lines().last().unwrap_or_default().to_owned())
        })?;
        self.step("list the store's images", |_| {
            shell.show(&["images"])?;
            Ok(())
        })?;

        self.step("create a pod sandbox and a container", |_| {
            let pod = shell.run(&[
                "pod",
                "create",
                "--pod-name",
                POD_NAME,
                "--pod-id",
                POD_ID,
                "--image",
                &reference,
            ])?;
            eprintln!("    pod sandbox {}", json_field(&pod, "ID"));
            let container = shell.run(&[
                "create",
                "--pod-name",
                POD_NAME,
                "--pod-id",
                POD_ID,
                "--image-id",
                &image_id,
                "--name",
                CONTAINER_NAME,
                "--id",
                CONTAINER_ID,
                "--metadata-name",
                "app",
            ])?;
            eprintln!("    container {}", json_field(&container, "ID"));
            shell.show(&["ps"])?;
            Ok(())
        })?;

        self.step("mount the container and show its root filesystem", |_| {
            let mountpoint = shell.run(&["mount", CONTAINER_NAME])?.trim().to_owned();
            eprintln!("    mounted at {mountpoint}");
            show_command(
                &format!("ls -l {mountpoint}"),
                Command::new("ls").args(["-l", "--color=never", &mountpoint]),
                12,
            )?;
            show_command(
                &format!("cat {mountpoint}/etc/passwd"),
                Command::new("cat").arg(format!("{mountpoint}/etc/passwd")),
                6,
            )?;
            show_command(
                &format!("chroot {mountpoint} /bin/busybox echo hello from the container"),
                Command::new("chroot").args([
                    &mountpoint,
                    "/bin/busybox",
                    "echo",
                    "hello from the container's busybox",
                ]),
                2,
            )?;
            Ok(())
        })?;

        // podman runs while the container is mounted: podstore keeps the overlay home a private
        // mount point as containers/storage does, so podman's driver init covers nothing and
        // the unmount below still works (docs/COMPATIBILITY.md).
        if tool_available("podman") {
            self.step("podman reads the same store", |_| {
                let podman = Podman::new(dir.join("root"), dir.join("run"), &driver)
                    .with_tmpdir(dir.join("podman-tmp"));
                for args in [&["images"][..], &["ps", "--all", "--external"][..]] {
                    let mut command = podman.command();
                    command
                        .args(args)
                        .env("CONTAINERS_STORAGE_CONF", &shell.conf);
                    show_command(&format!("podman {}", args.join(" ")), &mut command, 12)?;
                }
                Ok(())
            })?;
        } else {
            eprintln!("\n==> podman is not installed: skipping `podman images`");
        }

        self.step("disk use and store info", |_| {
            shell.show(&["df"])?;
            shell.show(&["info"])?;
            Ok(())
        })?;

        self.step("unmount and remove the container and the pod", |_| {
            shell.run(&["unmount", CONTAINER_NAME])?;
            shell.run(&["rm", CONTAINER_NAME])?;
            shell.run(&["pod", "rm", POD_ID])?;
            shell.show(&["ps"])?;
            Ok(())
        })?;

        self.step("stop the registry and remove the demo directory", |_| {
            let pid = registry.pid();
            drop(registry);
            drop(demo_dir);
            if Path::new(&format!("/proc/{pid}")).exists() && process_alive(pid) {
                bail!("the registry (pid {pid}) is still running");
            }
            let left = mounts_under(&dir);
            if !left.is_empty() {
                bail!("mounts left under {}: {left:?}", dir.display());
            }
            if !keep && dir.exists() {
                bail!("{} still exists", dir.display());
            }
            eprintln!("    registry pid {pid} stopped; no mounts left; demo directory removed");
            Ok(())
        })?;
        Ok(())
    }
}

/// `podstore` run as a user would, with the demo's storage.conf.
struct Shell {
    podstore: PathBuf,
    conf: PathBuf,
}

impl Shell {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.podstore);
        command
            .args(args)
            .env("CONTAINERS_STORAGE_CONF", &self.conf);
        command
    }

    /// Runs `podstore args`, echoing the command line; returns stdout (stderr captured and
    /// reported on failure).
    fn run(&self, args: &[&str]) -> Result<String> {
        eprintln!("    $ podstore {}", args.join(" "));
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("starting {}", self.podstore.display()))?;
        if !out.status.success() {
            bail!(
                "podstore {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Like [`Shell::run`], but stderr (progress bars) goes to the terminal.
    fn run_inherit_stderr(&self, args: &[&str]) -> Result<String> {
        eprintln!("    $ podstore {}", args.join(" "));
        let out = self
            .command(args)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("starting {}", self.podstore.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("podstore {} failed ({})", args.join(" "), out.status);
        }
        for line in stdout.lines() {
            eprintln!("    {line}");
        }
        Ok(stdout)
    }

    /// Runs and prints stdout, indented.
    fn show(&self, args: &[&str]) -> Result<()> {
        let out = self.run(args)?;
        for line in out.lines() {
            eprintln!("    {line}");
        }
        Ok(())
    }
}

/// Runs `command`, printing `shown` as the command line and at most `max_lines` lines of its
/// output.
fn show_command(shown: &str, command: &mut Command, max_lines: usize) -> Result<()> {
    eprintln!("    $ {shown}");
    let out = command
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    for line in lines.iter().take(max_lines) {
        eprintln!("    {line}");
    }
    if lines.len() > max_lines {
        eprintln!("    ... ({} more lines)", lines.len() - max_lines);
    }
    Ok(())
}

fn json_field(text: &str, key: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get(key).and_then(|k| k.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn seconds(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn kernel_has_overlay() -> bool {
    if std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| t.contains("\toverlay\n")) {
        return true;
    }
    // The module may not be loaded yet.
    Command::new("modprobe")
        .arg("overlay")
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn process_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Installs the required Debian packages that are missing (root only).
fn install_missing() -> Result<()> {
    let missing: Vec<&str> = REQUIRED_PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        eprintln!(
            "    present: {}",
            REQUIRED_PACKAGES
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        if !rustix::process::geteuid().is_root() {
            bail!(
                "missing Debian packages {}: run as root (apt-get install {})",
                missing.join(" "),
                missing.join(" ")
            );
        }
        eprintln!("    installing {}", missing.join(" "));
        crate::run("apt-get update", {
            let mut c = Command::new("apt-get");
            c.arg("update").arg("-q");
            c
        })?;
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing);
        crate::run("apt-get install", c)?;
    }
    if !rustix::process::geteuid().is_root() {
        bail!("the demo mounts a container's root filesystem: run it as root");
    }
    if tool_available("podman") {
        eprintln!("    podman found: the demo will show it reading podstore's store");
    }
    Ok(())
}

/// `cargo build` of the `podstore` binary; returns its path (from cargo's JSON messages).
fn build_podstore() -> Result<PathBuf> {
    let mut cargo = crate::cargo();
    cargo
        .args([
            "build",
            "--package",
            "podstore-cli",
            "--bin",
            "podstore",
            "--message-format",
            "json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
    eprintln!("    $ cargo build --package podstore-cli --bin podstore");
    let out = cargo
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        bail!("cargo build of podstore failed ({})", out.status);
    }
    let mut executable = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "podstore" {
            if let Some(path) = message["executable"].as_str() {
                executable = Some(PathBuf::from(path));
            }
        }
    }
    let path = executable.context("cargo build reported no podstore executable")?;
    eprintln!("    {}", path.display());
    Ok(path)
}
