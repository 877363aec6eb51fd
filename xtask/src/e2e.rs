//! `cargo xtask e2e`: the end-to-end suite — every crate's integration tests that talk to the
//! real `docker-registry` or use podman, skopeo or the `containers-storage` CLI as validators —
//! on both storage drivers.
//!
//! First a preflight: the validators must be installed, and the three registry modes the
//! tests use (plain, htpasswd basic auth, TLS with a test CA) are started here with the
//! testkit's fixtures pushed, and each is checked to answer as its mode should. Then the test
//! targets run with `PODSTORE_E2E_DRIVERS` (default `overlay,vfs`; the tests read it through
//! `podstore_testkit::peers::e2e_drivers`) and `PODSTORE_REQUIRE_TOOLS=1` (a missing validator
//! fails a test instead of skipping it). Each test binary starts its own registries through
//! `RegistrySet::shared` and stops them when it exits; the preflight's registries are stopped
//! before the tests start. Nothing else is stopped.
//!
//! `cargo xtask ci` runs these same tests once, inside its `cargo test --workspace` (with the
//! same two variables), not a second time.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::http::Body;
use podstore_testkit::registry::{RegistryMode, RegistrySet};

/// The tools the end-to-end tests validate against.
const VALIDATORS: &[&str] = &["docker-registry", "podman", "skopeo", "containers-storage"];

/// What an integration test file must mention (case-insensitively) to count as end-to-end:
/// the real registry or a peer tool.
const E2E_MARKERS: &[&str] = &[
    "registryset",
    "registry::start",
    "podman",
    "skopeo",
    "containers-storage",
    "containersstorage",
    "tool_available",
];

/// The environment the end-to-end tests run with: both drivers unless the caller chose, and
/// missing validators are failures.
pub fn test_environment() -> Vec<(&'static str, String)> {
    let drivers =
        std::env::var("PODSTORE_E2E_DRIVERS").unwrap_or_else(|_| "overlay,vfs".to_owned());
    vec![
        ("PODSTORE_E2E_DRIVERS", drivers),
        ("PODSTORE_REQUIRE_TOOLS", "1".to_owned()),
    ]
}

/// `cargo xtask e2e [--list] [--package P]...`.
pub fn run(args: &[String]) -> Result<()> {
    let mut list_only = false;
    let mut packages: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => list_only = true,
            "--package" | "-p" => {
                packages.push(it.next().context("--package needs a package name")?.clone())
            }
            other => bail!("unknown e2e argument {other:?} (expected --list, --package P)"),
        }
    }
    let mut targets = e2e_targets(&crate::workspace_root())?;
    if !packages.is_empty() {
        for package in &packages {
            if !targets.iter().any(|(p, _)| p == package) {
                bail!("{package:?} has no end-to-end tests (see `cargo xtask e2e --list`)");
            }
        }
        targets.retain(|(p, _)| packages.contains(p));
    }
    if list_only {
        for (package, tests) in &targets {
            println!("{package}: {}", tests.join(" "));
        }
        return Ok(());
    }
    let started = Instant::now();
    preflight()?;
    let environment = test_environment();
    eprintln!(
        "==> e2e: {} test targets in {} packages, {}",
        targets.iter().map(|(_, t)| t.len()).sum::<usize>(),
        targets.len(),
        environment
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    for (package, tests) in &targets {
        let mut cargo = crate::cargo();
        cargo.args(["test", "--package", package]);
        for test in tests {
            cargo.args(["--test", test]);
        }
        for (key, value) in &environment {
            cargo.env(key, value);
        }
        let (p, f, i) = crate::run_tests(cargo)?;
        passed += p;
        failed += f;
        ignored += i;
    }
    eprintln!(
        "==> e2e: {passed} passed, {failed} failed, {ignored} ignored in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The validators are installed, and the three registry modes start and answer as they
/// should (plain: 200; basic auth: 401 without and 200 with the credentials; TLS: 400 to
/// plain HTTP, and the test CA is written). The registries stop when this returns.
fn preflight() -> Result<()> {
    let missing: Vec<&str> = VALIDATORS
        .iter()
        .copied()
        .filter(|tool| !podstore_testkit::peers::tool_available(tool))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the end-to-end validators {} are not installed: run `cargo xtask deps`",
            missing.join(", ")
        );
    }
    let start = Instant::now();
    let fixtures = FixtureSet::shared().context("building the testkit fixtures")?;
    let registries = RegistrySet::start(fixtures).context("starting the three registries")?;
    let plain = registries.get(RegistryMode::Plain);
    let auth = registries.get(RegistryMode::BasicAuth);
    let tls = registries.get(RegistryMode::Tls);
    let status = |url: String, headers: &[(&str, &str)]| -> Result<u16> {
        Ok(podstore_testkit::http::request("GET", &url, headers, Body::Empty)?.status)
    };
    let checks = [
        (
            "plain /v2/",
            status(format!("{}/v2/", plain.url()), &[])?,
            200,
        ),
        (
            "basic auth /v2/ without credentials",
            status(format!("http://{}/v2/", auth.host_port()), &[])?,
            401,
        ),
        (
            "TLS port spoken to in plain HTTP",
            status(format!("http://{}/v2/", tls.host_port()), &[])?,
            400,
        ),
    ];
    for (what, got, want) in checks {
        if got != want {
            bail!("registry preflight: {what} answered {got}, expected {want}");
        }
    }
    let with_credentials = auth.request("GET", "/v2/", &[], Body::Empty)?.status;
    if with_credentials != 200 {
        bail!("registry preflight: basic auth with the credentials answered {with_credentials}");
    }
    let ca = tls.ca_cert_path().context("the TLS registry has no CA")?;
    if !ca.is_file() {
        bail!("registry preflight: TLS CA {} missing", ca.display());
    }
    eprintln!(
        "==> e2e preflight: registries plain {}, auth {}, tls {} (CA {}), {} images pushed, \
         validators {} present ({:.1} s)",
        plain.host_port(),
        auth.host_port(),
        tls.host_port(),
        ca.display(),
        registries.pushed().len(),
        VALIDATORS.join(", "),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `(package, [test target])` for every integration test file under `crates/*/tests` that
/// uses the real registry or a peer tool, sorted.
fn e2e_targets(root: &Path) -> Result<Vec<(String, Vec<String>)>> {
    let mut targets = Vec::new();
    let crates = root.join("crates");
    let mut dirs: Vec<_> = std::fs::read_dir(&crates)
        .with_context(|| format!("listing {}", crates.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join("tests")) else {
            continue;
        };
        let mut tests: Vec<String> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .filter(|p| {
                std::fs::read_to_string(p).is_ok_and(|text| {
                    let text = text.to_lowercase();
                    E2E_MARKERS.iter().any(|m| text.contains(m))
                })
            })
            .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .collect();
        if tests.is_empty() {
            continue;
        }
        tests.sort();
        targets.push((package_name(&dir.join("Cargo.toml"))?, tests));
    }
    Ok(targets)
}

/// The `name = "..."` of a Cargo.toml's `[package]`.
fn package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("name")?.trim_start();
            let value = rest.strip_prefix('=')?.trim();
            Some(value.trim_matches('"').to_owned())
        })
        .with_context(|| format!("no package name in {}", manifest.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_workspace_e2e_targets() {
        let targets = e2e_targets(&crate::workspace_root()).unwrap();
        let cli = targets
            .iter()
            .find(|(p, _)| p == "podstore-cli")
            .expect("the cli has end-to-end tests");
        assert!(cli.1.contains(&"cli".to_owned()), "{targets:?}");
        // found through `dir.podman(...)`, not a type name
        let runtime = targets
            .iter()
            .find(|(p, _)| p == "podstore-runtime")
            .unwrap();
        assert!(
            runtime.1.contains(&"podman_interop".to_owned()),
            "{targets:?}"
        );
        // every named target exists as a file
        for (package, tests) in &targets {
            let dir = package.strip_prefix("podstore-").unwrap();
            for test in tests {
                let path = crate::workspace_root()
                    .join("crates")
                    .join(dir)
                    .join("tests")
                    .join(format!("{test}.rs"));
                assert!(path.is_file(), "{}", path.display());
            }
        }
    }

    #[test]
    fn package_name_reads_the_package_section() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(
            &manifest,
            "[package]\nname = \"podstore-x\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        assert_eq!(package_name(&manifest).unwrap(), "podstore-x");
        std::fs::write(&manifest, "[package]\nversion = \"0.1.0\"\n").unwrap();
        assert!(package_name(&manifest).is_err());
    }
}
