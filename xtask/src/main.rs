//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Commands:
//! - `deps`: installs the Debian packages and cargo tools the tests use, when missing;
//! - `ci`: `deps`, then every gate CI runs, in order (fmt, clippy, test, doc, deny, layering,
//!   a short run of every fuzz target);
//! - `layering`: fails when a crate depends on a crate of the same or a higher tier;
//! - `fuzz [--time SECONDS] [--target NAME]...`: runs every cargo-fuzz target of the workspace
//!   (or the named ones) for that long and prints the executions per target;
//! - `demo [--keep] [--driver D]`: podstore end to end against a real registry (see `demo.rs`);
//! - `e2e [--list] [--package P]...`: the end-to-end tests of every crate on both drivers (see `e2e.rs`);
//! - `crash [--quick]`: crash injection (SIGKILL at named points and offsets), see `crash.rs`;
//! - `soak [--minutes M] [--driver vfs|overlay|both]`: concurrent load on one store, see `soak.rs`;
//! - `bench [--runs N] [--quick] [--only M] [--out FILE]`: podstore against skopeo, podman,
//!   the containers-storage CLI and the physical limits; writes docs/BENCHMARKS.md.

mod bench;
mod bench_exec;
mod bench_measures;
mod bench_report;
mod bench_stats;
mod crash;
mod demo;
mod e2e;
mod layering;
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => ("help", &[][..]),
    };
    match cmd {
        "ci" => ci(),
        "deps" => deps(),
        "layering" => layering_cmd(),
        "fuzz" => fuzz(rest),
        "demo" => demo::run(rest),
        "e2e" => e2e::run(rest),
        "crash" => crash::crash(rest),
        "soak" => soak::soak(rest),
        "bench" => bench::run(rest),
        "help" | "--help" | "-h" => {
            print_help();
            Ok(())
        }
        other => {
            print_help();
            bail!("unknown xtask command {other:?}")
        }
    }
}

fn print_help() {
    eprintln!(
        "usage: cargo xtask <command>\n\n\
         commands:\n  \
         deps                 install the Debian packages and cargo tools the tests use\n  \
         ci                   deps, then fmt, clippy, test, doc, deny, layering and a short fuzz\n  \
         layering             check that crates depend only on lower tiers\n  \
         fuzz [--time SECS] [--target NAME]...\n                       \
         run every (or each named) cargo-fuzz target for SECS seconds (default 30)\n  \
         demo [--keep] [--driver overlay|vfs]\n                       \
         registry, sample image, podstore pull/pod/container/mount, podman; cleans up\n  \
         e2e [--list] [--package P]...\n                       \
         end-to-end tests of every crate (or P's) on both drivers, real registry\n  \
         crash [--quick]      SIGKILL pull/create/rm/untag at every crash point; check, repair, peers\n  \
         soak [--minutes M | --seconds S] [--driver vfs|overlay|both]\n                       \
         4 podstore processes and podman on one store; check and verify results\n  \
         bench [--quick] [--runs N] [--only M,..] [--out FILE]\n                       \
         measure podstore against skopeo/podman/limits; writes docs/BENCHMARKS.md\n"
    );
}

/// The workspace root (the parent of this crate's manifest directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

pub(crate) fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("==> {step}: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

/// Debian packages the test suites use: the real registry, the peers used as interop
/// validators, and the tools fixtures and tests call.
const DEBIAN_PACKAGES: &[&str] = &[
    "docker-registry",
    "skopeo",
    "podman",
    "buildah",
    "containers-storage",
    "crun",
    "runc",
    "conmon",
    "busybox-static",
    "apache2-utils",
    "openssl",
    "ca-certificates",
    "zstd",
    "jq",
    "attr",
    "curl",
    "python3",
    // the crash suite's power-cut run: a loop device (losetup, mount), mkfs.ext4 and e2fsck
    "mount",
    "e2fsprogs",
];

fn package_installed(name: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", name])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn deps() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!(
            "==> deps: all {} Debian packages present",
            DEBIAN_PACKAGES.len()
        );
    } else {
        eprintln!("==> deps: installing {}", missing.join(" "));
        run("apt-get update", {
            let mut c = Command::new("apt-get");
            c.arg("update");
            c
        })?;
        let mut c = Command::new("apt-get");
        c.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing);
        run("apt-get install", c)?;
    }
    let have_deny = cargo()
        .args(["deny", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_deny {
        let mut c = cargo();
        c.args(["install", "--locked", "cargo-deny"]);
        run("install cargo-deny", c)?;
    }
    ensure_cargo_fuzz()?;
    Ok(())
}

/// Runs `cargo test` with its output passed through, and returns the summed counts of its
/// `test result:` lines (passed, failed, ignored).
pub(crate) fn run_tests(mut cmd: Command) -> Result<(u64, u64, u64)> {
    use std::io::{BufRead, BufReader};
    eprintln!("==> test: {cmd:?}");
    cmd.stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(label), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match label {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    "ignored" => ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("test failed ({status}): {passed} passed, {failed} failed");
    }
    Ok((passed, failed, ignored))
}

fn ci() -> Result<()> {
    deps()?;

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("fmt", fmt)?;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("clippy", clippy)?;

    // The end-to-end tests run here, once, on both drivers (what `cargo xtask e2e` runs alone).
    let mut test = cargo();
    test.args(["test", "--workspace", "--no-fail-fast"]);
    for (key, value) in e2e::test_environment() {
        test.env(key, value);
    }
    let (passed, failed, ignored) = run_tests(test)?;

    // Short crash injection and soak (under a minute each).
    crash::crash(&["--quick".to_owned()])?;
    // 15 s per driver: overlay (real mounts, what production uses) and vfs.
    soak::soak(&[
        "--seconds".to_owned(),
        "30".to_owned(),
        "--driver".to_owned(),
        "both".to_owned(),
    ])?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("doc", doc)?;

    let mut deny = cargo();
    deny.args(["deny", "check", "bans", "licenses", "sources"]);
    run("deny", deny)?;

    layering_cmd()?;

    // every fuzz target briefly, from its committed seed corpus (the long runs are
    // `cargo xtask fuzz --time SECONDS`, figures in docs/RELIABILITY.md)
    let fuzzed = fuzz_all(CI_FUZZ_SECONDS, &[])?;
    eprintln!(
        "==> fuzz: {} target(s) ran {CI_FUZZ_SECONDS}s each without a finding",
        fuzzed.len()
    );
    eprintln!("==> ci: all gates passed");
    println!("ci: {passed} passed, {failed} failed, {ignored} skipped");
    Ok(())
}

/// Seconds each fuzz target runs in `cargo xtask ci`.
const CI_FUZZ_SECONDS: u64 = 10;

fn layering_cmd() -> Result<()> {
    eprintln!("==> layering: cargo metadata");
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata output")?;
    let violations = layering::check_metadata(&json)?;
    if violations.is_empty() {
        eprintln!("==> layering: every dependency points down");
        return Ok(());
    }
    for v in &violations {
        eprintln!("layering violation: {v}");
    }
    bail!("{} layering violation(s)", violations.len())
}

fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 30;
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                let v = it.next().context("--time needs a number of seconds")?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--time takes whole seconds, not {v:?}"))?;
            }
            "--target" => only.push(
                it.next()
                    .context("--target needs a fuzz target name")?
                    .clone(),
            ),
            other => bail!("unknown fuzz argument {other:?}"),
        }
    }
    let results = fuzz_all(seconds, &only)?;
    eprintln!(
        "==> fuzz: {} target(s), {seconds}s each, no finding",
        results.len()
    );
    println!(
        "{:<20} {:>12} {:>8} {:>10}",
        "target", "executions", "seconds", "exec/s"
    );
    for r in &results {
        println!(
            "{:<20} {:>12} {:>8} {:>10}",
            r.target,
            r.runs,
            r.seconds,
            r.runs / r.seconds.max(1)
        );
    }
    Ok(())
}

/// One fuzz target's run, from libFuzzer's final `Done N runs in S second(s)` line.
struct FuzzRun {
    target: String,
    runs: u64,
    seconds: u64,
}

/// Installs cargo-fuzz when it is missing (the install is idempotent and uses the lock file).
fn ensure_cargo_fuzz() -> Result<()> {
    let have_cargo_fuzz = cargo()
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_cargo_fuzz {
        let mut install = cargo();
        install.args(["install", "--locked", "cargo-fuzz"]);
        run("install cargo-fuzz", install)?;
    }
    Ok(())
}

/// Runs every cargo-fuzz target under `crates/*/fuzz` (or only those named in `only`) for
/// `seconds` each, from the committed seed corpus. Fuzzing needs nightly flags: stable rustc
/// accepts them with `RUSTC_BOOTSTRAP=1`. Targets are built without a sanitizer (podstore's own
/// code has no `unsafe` outside one quarantined module, and the build is half the time) but
/// with debug assertions, so integer overflows panic. All fuzz crates share one target
/// directory (`$CARGO_TARGET_DIR` or `target/`), so their common dependencies build once.
fn fuzz_all(seconds: u64, only: &[String]) -> Result<Vec<FuzzRun>> {
    use std::io::{BufRead, BufReader};
    ensure_cargo_fuzz()?;
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut fuzz_dirs = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).context("listing crates/")? {
        let dir = entry?.path().join("fuzz");
        if dir.join("Cargo.toml").is_file() {
            fuzz_dirs.push(dir);
        }
    }
    fuzz_dirs.sort();
    if fuzz_dirs.is_empty() {
        bail!("no fuzz/ directories found under crates/");
    }
    let mut results = Vec::new();
    for dir in fuzz_dirs {
        let list = cargo()
            .args(["fuzz", "list"])
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .output()
            .with_context(|| format!("cargo fuzz list in {}", dir.display()))?;
        if !list.status.success() {
            bail!(
                "cargo fuzz list in {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&list.stderr)
            );
        }
        let names = String::from_utf8_lossy(&list.stdout).to_string();
        for target in names.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if !only.is_empty() && !only.iter().any(|o| o == target) {
                continue;
            }
            // libFuzzer writes new inputs into the first corpus directory: keep the committed
            // seed corpus read-only and collect the run's inputs under the target dir.
            let seeds = dir.join("corpus").join(target);
            let work = target_dir.join("fuzz-corpus").join(target);
            std::fs::create_dir_all(&seeds)?;
            std::fs::create_dir_all(&work)?;
            let mut cmd = cargo();
            cmd.current_dir(&dir)
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_DIR", &target_dir)
                .args([
                    "fuzz",
                    "run",
                    "--sanitizer",
                    "none",
                    "--debug-assertions",
                    target,
                ])
                .arg(&work)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-rss_limit_mb=2048")
                .arg("-print_final_stats=1")
                .stderr(std::process::Stdio::piped());
            eprintln!("==> fuzz {target}: {cmd:?}");
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting cargo fuzz run {target}"))?;
            let stderr = child.stderr.take().context("cargo fuzz stderr")?;
            let mut done: Option<(u64, u64)> = None;
            for line in BufReader::new(stderr).lines() {
                let line = line?;
                eprintln!("{line}");
                // "Done 123456 runs in 30 second(s)"
                if let Some(rest) = line.strip_prefix("Done ") {
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    if let (Some(runs), Some(secs)) = (words.first(), words.get(3)) {
                        done = runs.parse().ok().zip(secs.parse().ok());
                    }
                }
            }
            let status = child.wait()?;
            if !status.success() {
                bail!(
                    "fuzz target {target} failed ({status}): the crashing input is under {}",
                    dir.join("artifacts").join(target).display()
                );
            }
            let (runs, seconds) = done.unwrap_or((0, seconds));
            results.push(FuzzRun {
                target: target.to_owned(),
                runs,
                seconds,
            });
        }
    }
    Ok(results)
}
