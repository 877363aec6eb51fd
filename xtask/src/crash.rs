//! `cargo xtask crash [--quick] [--drivers vfs,overlay] [--results FILE]`: crash injection.
//! Runs the ignored `crash` test of the podstore CLI, which kills `podstore pull`, `create`,
//! `rm` and `untag` with SIGKILL at every named crash point and at time-based offsets and
//! verifies the store after each kill (see `crates/cli/tests/crash.rs`); prints and writes the
//! number of kill points survived.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Parses the arguments and runs the harness.
pub fn crash(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut drivers: Option<String> = None;
    let mut results = crate::workspace_root().join("target/xtask/crash.json");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--drivers" => {
                drivers = Some(it.next().context("--drivers needs vfs,overlay")?.clone())
            }
            "--results" => results = PathBuf::from(it.next().context("--results needs a file")?),
            other => bail!("unknown crash argument {other:?}"),
        }
    }
    let powercut = results.with_file_name("powercut.json");
    let mut env = vec![
        (
            "PODSTORE_CRASH_RESULTS".to_owned(),
            results.display().to_string(),
        ),
        (
            "PODSTORE_POWERCUT_RESULTS".to_owned(),
            powercut.display().to_string(),
        ),
    ];
    if quick {
        env.push(("PODSTORE_CRASH_QUICK".to_owned(), "1".to_owned()));
    }
    if let Some(drivers) = drivers {
        env.push(("PODSTORE_CRASH_DRIVERS".to_owned(), drivers));
    }
    // The power-cut simulation needs loop devices and changes writeback sysctls for a few
    // seconds: only in the full run.
    let filter = quick.then_some("sigkill_at_every_point");
    run_ignored_test("crash", filter, &env, &results)?;
    if !quick {
        print_results("powercut", &powercut)?;
    }
    Ok(())
}

/// Runs the ignored integration test `test` of podstore-cli with `env` set, then prints the
/// JSON summary it wrote to `results`.
pub fn run_ignored_test(
    test: &str,
    filter: Option<&str>,
    env: &[(String, String)],
    results: &Path,
) -> Result<()> {
    if let Some(dir) = results.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(results);
    let mut cmd = crate::cargo();
    cmd.args(["test", "-p", "podstore-cli", "--test", test, "--"])
        .args(filter)
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .envs(env.iter().map(|(k, v)| (k, v)));
    crate::run(test, cmd)?;
    print_results(test, results)
}

fn print_results(test: &str, results: &Path) -> Result<()> {
    let summary = std::fs::read_to_string(results).with_context(|| {
        format!(
            "{test}: the harness wrote no results to {}",
            results.display()
        )
    })?;
    println!("{test}: {}", summary.trim());
    eprintln!("==> {test}: results in {}", results.display());
    Ok(())
}
