//! `cargo xtask soak [--minutes M | --seconds S] [--driver vfs|overlay] [--results FILE]`:
//! concurrent load. Runs the ignored `soak` test of the podstore CLI: 4 podstore processes pull,
//! create, mount, unmount, remove and untag on one store while podman does the same; afterwards
//! `check` is clean, every completed operation's result is in the store, and every surviving
//! image runs with podman (see `crates/cli/tests/soak.rs`).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Parses the arguments and runs the soak.
pub fn soak(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut driver: Option<String> = None;
    let mut results = crate::workspace_root().join("target/xtask/soak.json");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut number = |flag: &str| -> Result<u64> {
            let v = it
                .next()
                .with_context(|| format!("{flag} needs a number"))?;
            v.parse()
                .with_context(|| format!("{flag} takes a whole number, not {v:?}"))
        };
        match a.as_str() {
            "--minutes" => seconds = number("--minutes")? * 60,
            "--seconds" => seconds = number("--seconds")?,
            "--driver" => {
                driver = Some(it.next().context("--driver needs vfs or overlay")?.clone())
            }
            "--results" => results = PathBuf::from(it.next().context("--results needs a file")?),
            other => bail!("unknown soak argument {other:?}"),
        }
    }
    let mut env = vec![
        (
            "PODSTORE_SOAK_RESULTS".to_owned(),
            results.display().to_string(),
        ),
        (
            "PODSTORE_SOAK_SECONDS".to_owned(),
            seconds.max(1).to_string(),
        ),
    ];
    if let Some(driver) = driver {
        env.push(("PODSTORE_SOAK_DRIVER".to_owned(), driver));
    }
    crate::crash::run_ignored_test("soak", None, &env, &results)
}
