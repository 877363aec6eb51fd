//! `cargo xtask soak [--minutes M | --seconds S] [--driver vfs|overlay|both] [--results FILE]`:
//! concurrent load. Runs the ignored `soak` test of the podstore CLI: 4 podstore processes pull,
//! create, mount, unmount, remove and untag on one store while podman does the same; afterwards
//! `check` is clean, every completed operation's result is in the store, and every surviving
//! image runs with podman (see `crates/cli/tests/soak.rs`).
//!
//! `--driver both` (the default) runs overlay, then vfs, splitting the time between them, with
//! results in `<results stem>-overlay.json` and `<results stem>-vfs.json`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// Parses the arguments and runs the soak.
pub fn soak(args: &[String]) -> Result<()> {
    let mut seconds: u64 = 60;
    let mut driver = "both".to_owned();
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
                driver = it
                    .next()
                    .context("--driver needs vfs, overlay or both")?
                    .clone()
            }
            "--results" => results = PathBuf::from(it.next().context("--results needs a file")?),
            other => bail!("unknown soak argument {other:?}"),
        }
    }
    let drivers: &[&str] = match driver.as_str() {
        "both" => &["overlay", "vfs"],
        "overlay" => &["overlay"],
        "vfs" => &["vfs"],
        other => bail!("--driver takes vfs, overlay or both, not {other:?}"),
    };
    let each = (seconds / drivers.len() as u64).max(1);
    for driver in drivers {
        let results = if drivers.len() > 1 {
            let stem = results
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "soak".to_owned());
            results.with_file_name(format!("{stem}-{driver}.json"))
        } else {
            results.clone()
        };
        let env = vec![
            (
                "PODSTORE_SOAK_RESULTS".to_owned(),
                results.display().to_string(),
            ),
            ("PODSTORE_SOAK_SECONDS".to_owned(), each.to_string()),
            ("PODSTORE_SOAK_DRIVER".to_owned(), (*driver).to_owned()),
        ];
        crate::crash::run_ignored_test("soak", None, &env, &results)?;
    }
    Ok(())
}
