//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! Commands:
//! - `ci`: every gate CI runs, in order (fmt, clippy, test, doc, deny, layering);
//! - `layering`: fails when a crate depends on a crate of the same or a higher tier;
//! - `fuzz --time SECONDS`: runs every cargo-fuzz target of the workspace for that long.

mod layering;

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
        "layering" => layering_cmd(),
        "fuzz" => fuzz(rest),
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
         ci                   fmt, clippy, test, doc, deny and layering, in that order\n  \
         layering             check that crates depend only on lower tiers\n  \
         fuzz [--time SECS]   run every cargo-fuzz target for SECS seconds (default 30)\n"
    );
}

/// The workspace root (the parent of this crate's manifest directory).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn run(step: &str, mut cmd: Command) -> Result<()> {
    eprintln!("==> {step}: {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("{step}: could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn ci() -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("fmt", fmt)?;

    let mut clippy = cargo();
    clippy.args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]);
    run("clippy", clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run("test", test)?;

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("doc", doc)?;

    let mut deny = cargo();
    deny.args(["deny", "check", "bans", "licenses", "sources"]);
    run("deny", deny)?;

    layering_cmd()?;
    eprintln!("==> ci: all gates passed");
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
            let corpus = dir.join("corpus").join(target);
            std::fs::create_dir_all(&corpus)?;
            let mut cmd = Command::new("cargo");
            cmd.current_dir(&dir)
                .env("RUSTC_BOOTSTRAP", "1")
                .args(["fuzz", "run", target])
                .arg(&corpus)
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
