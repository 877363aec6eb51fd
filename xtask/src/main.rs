//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Commands:
//! - `deps`: installs the Debian packages and cargo tools the tests use, when missing;
//! - `ci`: `deps`, then every gate CI runs, in order (fmt, clippy, test, doc, deny, layering);
//! - `layering`: fails when a crate depends on a crate of the same or a higher tier;
//! - `fuzz --time SECONDS`: runs every cargo-fuzz target of the workspace for that long;
//! - `demo [--keep] [--driver D]`: podstore end to end against a real registry (see `demo.rs`);
//! - `e2e [--list] [--package P]...`: the end-to-end tests of every crate on both drivers (see `e2e.rs`);
//! - `crash [--quick]`: crash injection (SIGKILL at named points and offsets), see `crash.rs`;
//! - `soak [--minutes M]`: concurrent load on one store, see `soak.rs`;
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
         ci                   deps, then fmt, clippy, test, doc, deny and layering, in that order\n  \
         layering             check that crates depend only on lower tiers\n  \
         fuzz [--time SECS]   run every cargo-fuzz target for SECS seconds (default 30)\n  \
         demo [--keep] [--driver overlay|vfs]\n                       \
         registry, sample image, podstore pull/pod/container/mount, podman; cleans up\n  \
         e2e [--list] [--package P]...\n                       \
         end-to-end tests of every crate (or P's) on both drivers, real registry\n  \
         crash [--quick]      SIGKILL pull/create/rm/untag at every crash point; check, repair, peers\n  \
         soak [--minutes M]   4 podstore processes and podman on one store; check and verify results\n  \
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
    test.args(["test", "--workspace"]);
    for (key, value) in e2e::test_environment() {
        test.env(key, value);
    }
    let (passed, failed, ignored) = run_tests(test)?;

    // Short crash injection and soak (under a minute each).
    crash::crash(&["--quick".to_owned()])?;
    soak::soak(&["--seconds".to_owned(), "30".to_owned()])?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("doc", doc)?;

    let mut deny = cargo();
    deny.args(["deny", "check", "bans", "licenses", "sources"]);
    run("deny", deny)?;

    layering_cmd()?;
    eprintln!("==> ci: all gates passed");
    println!("ci: {passed} passed, {failed} failed, {ignored} skipped");
    Ok(())
}

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
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--time" => {
                let v = it.next().context("--time needs a number of seconds")?;
                seconds = v
                    .parse()
                    .with_context(|| format!("--time takes whole seconds, not {v:?}"))?;
            }
            other => bail!("unknown fuzz argument {other:?}"),
        }
    }
    let have_cargo_fuzz = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have_cargo_fuzz {
        let mut install = cargo();
        install.args(["install", "--locked", "cargo-fuzz"]);
        run("install cargo-fuzz", install)?;
    }
    let root = workspace_root();
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
    let mut ran = 0;
    for dir in fuzz_dirs {
        let list = Command::new("cargo")
            .args(["fuzz", "list"])
            .current_dir(&dir)
            .env("RUSTC_BOOTSTRAP", "1")
            .output()
            .with_context(|| format!("cargo fuzz list in {}", dir.display()))?;
        let names = String::from_utf8_lossy(&list.stdout).to_string();
        for target in names.lines().map(str::trim).filter(|l| !l.is_empty()) {
            // libFuzzer writes new inputs into the first corpus directory: keep the committed
            // seed corpus read-only and collect the run's inputs under the (ignored) target dir.
            let seeds = dir.join("corpus").join(target);
            let work = dir.join("target").join("corpus-work").join(target);
            std::fs::create_dir_all(&seeds)?;
            std::fs::create_dir_all(&work)?;
            let mut cmd = Command::new("cargo");
            cmd.current_dir(&dir)
                .env("RUSTC_BOOTSTRAP", "1")
                .args(["fuzz", "run", target])
                .arg(&work)
                .arg(&seeds)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                .arg("-rss_limit_mb=2048");
            run(&format!("fuzz {target}"), cmd)?;
            ran += 1;
        }
    }
    eprintln!("==> fuzz: {ran} target(s) ran for {seconds}s each without a finding");
    Ok(())
}
