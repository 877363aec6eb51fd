//! End-to-end tests of the `podstore` binary: pulls from the testkit OCI layout and from the
//! real `docker-registry` on 127.0.0.1 into vfs stores under /dev/shm, then `images`,
//! `inspect`, `resolve` and `untag`, and the error and exit-status conventions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{Env, busybox_id, last_line};
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::e2e_drivers;
use podstore_testkit::registry::{RegistryMode, RegistrySet};

/// podman's size format (decimal units, three significant digits), written independently of
/// the CLI's own: `512 B`, `4.27 MB`, `12.3 MB`, `123 MB`.
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    let text = format!("{value:.3}");
    // three significant digits, trailing zeros dropped
    let digits_before_point = text.split('.').next().unwrap().len();
    let decimals = 3usize.saturating_sub(digits_before_point);
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text} {}", units[unit])
}

#[test]
fn layout_pull_then_images_inspect_and_untag() {
    for driver in e2e_drivers() {
        eprintln!("== layout_pull_then_images_inspect_and_untag on {driver}");
        layout_pull_then_images_inspect_and_untag_on(driver);
    }
}

fn layout_pull_then_images_inspect_and_untag_on(driver: &'static str) {
    let env = Env::new(driver);
    let fixtures = FixtureSet::shared().unwrap();
    let busybox = fixtures.image("busybox").unwrap();
    let id = busybox_id();

    let out = env.ok(&["pull", &fixtures.oci_reference("busybox")]);
    assert_eq!(last_line(&out), id, "stdout: {out}");

    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["ID"], id.as_str());
    assert_eq!(
        listed[0]["RepoTags"],
        serde_json::json!(["localhost/busybox:latest"])
    );

    let table = env.ok(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let columns = |line: &str| -> Vec<String> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        columns(lines[0]),
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    );
    let row = columns(lines[1]);
    assert_eq!(
        row[..3],
        ["localhost/busybox", "latest", &id[..12]],
        "{table}"
    );
    // CREATED is the image config's date (the fixtures are made on 2020-01-01)
    assert!(
        row[3].ends_with(" years ago") && row[3] != "0 years ago",
        "{table}"
    );
    let size = listed[0]["Size"].as_u64().unwrap();
    assert_eq!(row[4], human_size(size), "{table}");

    // by name, by ID prefix, and filtered listing agree
    for name in ["localhost/busybox:latest", &id[..12]] {
        let status: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", name])).unwrap();
        let keys: Vec<&str> = status
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "ID",
                "Name",
                "RepoTags",
                "RepoDigests",
                "Size",
                "Digest",
                "ConfigDigest",
                "User",
                "PreviousName",
                "Labels",
                "OCIConfig"
            ]
        );
        assert_eq!(status["ID"], id.as_str());
        assert_eq!(
            status["ConfigDigest"],
            busybox.config_digest.as_deref().unwrap()
        );
        assert_eq!(status["Digest"], busybox.manifest_digest.as_str());
        assert_eq!(status["Name"], "localhost/busybox:latest");
    }
    let filtered: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json", &id[..12]])).unwrap();
    assert_eq!(filtered.as_array().unwrap().len(), 1);

    // untag removes the only name, so the image goes
    assert_eq!(env.ok(&["untag", "localhost/busybox:latest"]), "");
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(listed, serde_json::json!([]));
    let out = env.run(&["inspect", &id]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn registry_pull_quiet_prints_only_the_id() {
    let env = Env::new("vfs");
    let plain = RegistrySet::shared().unwrap().get(RegistryMode::Plain);
    let reference = plain.docker_reference("testkit/busybox:latest");
    let id = busybox_id();

    let out = env.run(&["pull", "--quiet", &reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{id}\n"));
    assert_eq!(String::from_utf8(out.stderr).unwrap(), "");

    let status: serde_json::Value = serde_json::from_str(&env.ok(&["inspect", &id])).unwrap();
    let name = plain.image_reference("testkit/busybox:latest");
    assert_eq!(status["RepoTags"], serde_json::json!([name]));
    let digests = status["RepoDigests"].as_array().unwrap();
    assert!(!digests.is_empty(), "{status}");
}

#[test]
fn registry_pull_plain_mode_reports_layers_and_ends_with_the_id() {
    for driver in e2e_drivers() {
        eprintln!("== registry_pull_plain_mode_reports_layers_and_ends_with_the_id on {driver}");
        registry_pull_plain_mode_on(driver);
    }
}

fn registry_pull_plain_mode_on(driver: &'static str) {
    let env = Env::new(driver);
    let plain = RegistrySet::shared().unwrap().get(RegistryMode::Plain);
    // no transport: the default docker:// is prepended
    let reference = plain.image_reference("testkit/busybox:latest");
    let fixtures = FixtureSet::shared().unwrap();
    let layer = &fixtures.image("busybox").unwrap().layers[0];

    let out = env.run(&["pull", &reference]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(last_line(&stdout), busybox_id());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("Downloaded blob {}", layer.digest)),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("Applied layer 1/1 {}", layer.digest)),
        "{stderr}"
    );

    // a second pull reuses the layer
    let out = env.run(&["pull", &reference]);
    assert!(out.status.success());
    assert_eq!(
        last_line(&String::from_utf8(out.stdout).unwrap()),
        busybox_id()
    );
}

#[test]
fn resolve_uses_the_registries_conf_search_list() {
    let env = Env::new("vfs");
    let conf = env.path().join("registries.conf");
    std::fs::write(
        &conf,
        "unqualified-search-registries = [\"registry.example:5000\", \"docker.io\"]\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    // CRI-O's ResolveNames adds no tag (crio-storage-behavior §4, catalogue I6–I9).
    let table = [
        (
            "busybox",
            "registry.example:5000/busybox\ndocker.io/library/busybox\n",
        ),
        (
            "team/app:v1",
            "registry.example:5000/team/app:v1\ndocker.io/team/app:v1\n",
        ),
        ("quay.io/podman/hello", "quay.io/podman/hello\n"),
    ];
    for (name, expected) in table {
        assert_eq!(
            env.ok(&["--registries-conf", conf, "resolve", name]),
            expected,
            "{name}"
        );
    }
    // without any search registry a short name cannot be resolved
    let empty = env.path().join("empty.conf");
    std::fs::write(&empty, "").unwrap();
    let out = env.run(&[
        "--registries-conf",
        empty.to_str().unwrap(),
        "resolve",
        "busybox",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("podstore: ") && stderr.contains("\"busybox\""),
        "{stderr}"
    );
}

#[test]
fn errors_name_the_input_on_one_line_with_status_one() {
    let env = Env::new("vfs");
    let plain = RegistrySet::shared().unwrap().get(RegistryMode::Plain);
    let missing = plain.docker_reference("testkit/no-such-image:latest");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["inspect", "no-such-image:v9"], "no-such-image:v9"),
        (vec!["untag", "no-such-image:v9"], "no-such-image:v9"),
        (vec!["pull", "--quiet", &missing], "no-such-image"),
        (
            vec!["pull", "oci:/dev/shm/podstore-cli-no-layout:x"],
            "podstore-cli-no-layout",
        ),
    ];
    for (args, named) in cases {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.starts_with("podstore: "), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    // the failed pulls left no image behind
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["images", "--format", "json"])).unwrap();
    assert_eq!(listed, serde_json::json!([]));
}

#[test]
fn usage_errors_exit_two_and_version_and_help_work() {
    let env = Env::new("vfs");
    for args in [
        vec!["pull"],
        vec!["pull", "--platform", "linux", "busybox"],
        vec!["images", "--format", "yaml"],
        vec!["frobnicate"],
    ] {
        assert_eq!(env.run(&args).status.code(), Some(2), "{args:?}");
    }
    let version = env.ok(&["--version"]);
    assert_eq!(version, format!("podstore {}\n", env!("CARGO_PKG_VERSION")));
    for command in ["pull", "images", "inspect", "resolve", "untag"] {
        let help = env.ok(&[command, "--help"]);
        assert!(
            help.contains(&format!("Examples:\n  podstore {command}")),
            "{command}: {help}"
        );
    }
}

#[test]
fn platform_flag_chooses_the_index_instance() {
    let fixtures = FixtureSet::shared().unwrap();
    let multiarch = fixtures.image("multiarch").unwrap();
    let source = fixtures.oci_reference("multiarch");
    assert!(multiarch.manifests.len() >= 2);
    for instance in &multiarch.manifests {
        let platform = instance.platform.as_ref().unwrap();
        let mut spec = format!("{}/{}", platform.os, platform.architecture);
        if let Some(variant) = &platform.variant {
            spec = format!("{spec}/{variant}");
        }
        let env = Env::new("vfs");
        let out = env.ok(&["pull", "--quiet", "--platform", &spec, &source]);
        assert_eq!(out, format!("{}\n", instance.image_id().unwrap()), "{spec}");
        let status: serde_json::Value =
            serde_json::from_str(&env.ok(&["inspect", "localhost/multiarch:latest"])).unwrap();
        assert_eq!(
            status["OCIConfig"]["architecture"],
            platform.architecture.as_str()
        );
    }
}

#[test]
fn pull_on_a_terminal_draws_progress_bars() {
    // `script` (util-linux, Debian's essential bsdutils) gives the pull a pseudo-terminal.
    let env = Env::new("vfs");
    let fixtures = FixtureSet::shared().unwrap();
    let multilayer = fixtures.image("multilayer").unwrap();
    let command = format!(
        "{} --root {} --runroot {} --storage-driver vfs pull {}",
        env!("CARGO_BIN_EXE_podstore"),
        env.path().join("root").display(),
        env.path().join("runroot").display(),
        fixtures.oci_reference("multilayer"),
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("CONTAINERS_STORAGE_CONF", env.path().join("storage.conf"))
        .env("TERM", "xterm")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let screen = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    for layer in &multilayer.layers {
        let hex = &layer.digest["sha256:".len()..];
        assert!(
            screen.contains(&format!("layer {} applied", &hex[..12])),
            "no finished bar for {}: {screen}",
            layer.digest
        );
    }
    let last = screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
    assert!(last.ends_with(multilayer.image_id().unwrap()), "{screen}");
}

#[test]
fn authfile_and_cert_dir_flags_reach_the_registry() {
    let registries = RegistrySet::shared().unwrap();
    let id = busybox_id();

    // basic auth: refused without credentials, accepted with --authfile
    let auth = registries.get(RegistryMode::BasicAuth);
    let reference = auth.docker_reference("testkit/busybox:latest");
    let env = Env::new("vfs");
    let empty_auth = env.path().join("empty-auth.json");
    std::fs::write(&empty_auth, "{\"auths\":{}}").unwrap();
    let out = env.run(&[
        "--authfile",
        empty_auth.to_str().unwrap(),
        "pull",
        "--quiet",
        &reference,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("podstore: ") && stderr.contains(&auth.host_port()),
        "{stderr}"
    );
    let auth_file = auth.auth_file().unwrap();
    let out = env.ok(&[
        "--authfile",
        auth_file.to_str().unwrap(),
        "pull",
        "--quiet",
        &reference,
    ]);
    assert_eq!(out, format!("{id}\n"));

    // TLS with the test CA in a certificate directory
    let tls = registries.get(RegistryMode::Tls);
    let cert_dir = tls.cert_dir().unwrap();
    let env = Env::new("vfs");
    let out = env.ok(&[
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "pull",
        "--quiet",
        &tls.docker_reference("testkit/busybox:latest"),
    ]);
    assert_eq!(out, format!("{id}\n"));
}
