//! End-to-end tests of `podstore info`, `podstore df`, `podstore completion`, the help texts
//! (examples for every command, the exit statuses), the exit statuses themselves and the pull
//! progress modes, on stores under /dev/shm holding testkit fixtures pulled from the OCI
//! layout. `info` and `df` run on every driver of `PODSTORE_E2E_DRIVERS` (default both), and
//! their numbers are checked against the store's own files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{CONTAINER_ID, Env, POD_ID};
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::e2e_drivers;

impl Env {
    /// The directory holding a layer's own files on this driver.
    fn layer_files(&self, id: &str) -> PathBuf {
        match self.driver {
            "overlay" => self.root().join("overlay").join(id).join("diff"),
            _ => self.root().join("vfs/dir").join(id),
        }
    }
}

/// Apparent size of every non-directory under `dir`, hard links once — measured here with
/// std's metadata, independently of the driver's code.
fn measured_size(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                walk(&entry.path(), seen, total);
            } else if seen.insert((meta.dev(), meta.ino())) {
                *total += meta.size();
            }
        }
    }
    let (mut seen, mut total) = (HashSet::new(), 0);
    walk(dir, &mut seen, &mut total);
    total
}

fn create_pod_and_container(env: &Env, image_id: &str) {
    env.ok(&[
        "pod",
        "create",
        "--pod-name",
        "web",
        "--pod-id",
        POD_ID,
        "--image-id",
        image_id,
    ]);
    env.ok(&[
        "create",
        "--pod-name",
        "web",
        "--pod-id",
        POD_ID,
        "--image-id",
        image_id,
        "--name",
        "web-app",
        "--id",
        CONTAINER_ID,
        "--metadata-name",
        "app",
    ]);
}

#[test]
fn info_reports_paths_driver_counts_and_versions() {
    for driver in e2e_drivers() {
        eprintln!("== info on {driver}");
        let env = Env::new(driver);
        let info = env.json(&["info", "--format", "json"]);
        assert_eq!(info["Version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(info["Store"]["GraphRoot"], env.root().to_str().unwrap());
        assert_eq!(
            info["Store"]["RunRoot"],
            env.dir.path().join("runroot").to_str().unwrap()
        );
        assert_eq!(info["Store"]["Driver"], driver);
        assert_eq!(
            info["Store"]["ConfigFile"],
            env.dir.path().join("storage.conf").to_str().unwrap()
        );
        assert_eq!(
            info["Counts"],
            serde_json::json!({"Layers": 0, "Images": 0, "Containers": 0, "MountedContainers": 0})
        );
        assert_eq!(info["Formats"]["ContainersStorage"], "1.43");

        let busybox = env.pull("busybox");
        env.pull("multilayer");
        create_pod_and_container(&env, &busybox);
        env.ok(&["mount", "web-app"]);
        let info = env.json(&["info", "--format", "json"]);
        let layers = env.layer_records().len();
        // busybox 1 + multilayer 5 image layers, plus 2 container layers
        assert_eq!(layers, 8);
        assert_eq!(
            info["Counts"],
            serde_json::json!({
                "Layers": layers, "Images": 2, "Containers": 2, "MountedContainers": 1
            })
        );
        let text = env.ok(&["info"]);
        for line in [
            format!("storage driver:     {driver}"),
            format!("graph root:         {}", env.root().display()),
            format!("layers:             {layers}"),
            "images:             2".to_owned(),
            "containers:         2 (1 mounted)".to_owned(),
            "on-disk format:     containers/storage 1.43".to_owned(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        env.ok(&["unmount", "web-app"]);
    }
}

#[test]
fn df_sizes_match_the_layers_on_disk() {
    for driver in e2e_drivers() {
        eprintln!("== df on {driver}");
        let env = Env::new(driver);
        let empty = env.json(&["df", "--format", "json"]);
        assert_eq!(empty["Totals"]["Total"], 0);
        assert_eq!(empty["Images"], serde_json::json!([]));

        // small-01 = busybox's layer + one layer of its own: one shared layer, one unique
        let busybox = env.pull("busybox");
        let small = env.pull("small-01");
        create_pod_and_container(&env, &busybox);
        let df = env.json(&["df", "--format", "json"]);

        let records = env.layer_records();
        let size_of = |id: &str| measured_size(&env.layer_files(id));
        let image = |id: &str| {
            df["Images"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["ID"] == id)
                .unwrap()
                .clone()
        };
        let (busybox_row, small_row) = (image(&busybox), image(&small));
        let busybox_layers: Vec<String> = busybox_row["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        let small_layers: Vec<String> = small_row["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(busybox_layers.len(), 1, "{df}");
        assert_eq!(small_layers.len(), 2, "{df}");
        assert_eq!(
            small_layers[1], busybox_layers[0],
            "shared base layer: {df}"
        );

        let shared = size_of(&busybox_layers[0]);
        let own = size_of(&small_layers[0]);
        assert!(shared > 0 && own > 0, "{df}");
        assert_eq!(busybox_row["Size"], shared, "{df}");
        assert_eq!(busybox_row["SharedSize"], shared, "{df}");
        assert_eq!(busybox_row["UniqueSize"], 0, "{df}");
        assert_eq!(busybox_row["Containers"], 2, "{df}");
        assert_eq!(small_row["Size"], shared + own, "{df}");
        assert_eq!(small_row["SharedSize"], shared, "{df}");
        assert_eq!(small_row["UniqueSize"], own, "{df}");
        assert_eq!(small_row["Containers"], 0, "{df}");

        // containers: their writable layers, as the driver stores them
        let containers = df["Containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2, "{df}");
        let writable: u64 = containers.iter().map(|c| c["Size"].as_u64().unwrap()).sum();
        let container_layer_ids: Vec<&str> = records
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .filter(|id| *id != busybox_layers[0] && *id != small_layers[0])
            .collect();
        assert_eq!(container_layer_ids.len(), 2);
        let measured_writable: u64 = container_layer_ids.iter().map(|id| size_of(id)).sum();
        assert_eq!(writable, measured_writable, "{df}");
        if driver == "vfs" {
            // vfs copies the image into each container layer
            assert!(writable >= 2 * shared, "{df}");
        }

        let totals = &df["Totals"];
        assert_eq!(
            totals["ImageLayers"],
            serde_json::json!({"Count": 2, "Size": shared + own})
        );
        assert_eq!(
            totals["SharedLayers"],
            serde_json::json!({"Count": 1, "Size": shared})
        );
        assert_eq!(
            totals["ContainerLayers"],
            serde_json::json!({"Count": 2, "Size": measured_writable})
        );
        assert_eq!(
            totals["OtherLayers"],
            serde_json::json!({"Count": 0, "Size": 0})
        );
        let all_layers: u64 = records
            .iter()
            .map(|r| size_of(r["id"].as_str().unwrap()))
            .sum();
        assert_eq!(totals["Total"], all_layers, "{df}");

        // the table shows the same numbers, human-readable
        let table = env.ok(&["df"]);
        let header = table.lines().next().unwrap();
        assert_eq!(
            header.split_whitespace().collect::<Vec<_>>(),
            [
                "IMAGE",
                "ID",
                "NAMES",
                "LAYERS",
                "SIZE",
                "SHARED",
                "UNIQUE",
                "CONTAINERS"
            ]
        );
        let small_line = table.lines().find(|l| l.starts_with(&small[..12])).unwrap();
        assert!(small_line.contains("localhost/small-01:latest"), "{table}");
        assert!(table.contains("CONTAINER ID"), "{table}");
        let total_line = table.lines().find(|l| l.starts_with("total")).unwrap();
        assert_eq!(
            total_line.split_whitespace().nth(1),
            Some("4"),
            "4 layers in all: {table}"
        );
    }
}

#[test]
fn completion_scripts_are_generated_for_each_shell() {
    let env = Env::new("vfs");
    let bash = env.ok(&["completion", "bash"]);
    // bash accepts the script and registers it for podstore
    let out = Command::new("bash")
        .arg("-c")
        .arg("source /dev/stdin; complete -p podstore")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(bash.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{bash}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("podstore"),
        "{out:?}"
    );
    for command in ["pull", "images", "info", "df", "completion", "mount"] {
        assert!(bash.contains(command), "bash script lacks {command}");
    }
    let zsh = env.ok(&["completion", "zsh"]);
    assert!(zsh.starts_with("#compdef podstore"), "{zsh}");
    let fish = env.ok(&["completion", "fish"]);
    assert!(fish.contains("complete -c podstore"), "{fish}");
    // an unknown shell is a usage error
    assert_eq!(env.run(&["completion", "tcsh"]).status.code(), Some(2));
    // the store was not needed, and not created
    assert!(!env.root().exists());
}

#[test]
fn every_command_has_examples_and_the_exit_statuses_are_documented() {
    let env = Env::new("vfs");
    let help = env.ok(&["--help"]);
    assert!(
        help.contains("Exit status: 0 on success, 1 when the command failed"),
        "{help}"
    );
    assert!(help.contains("2 on a usage error"), "{help}");
    // every command listed in the help, and `pod`'s subcommands
    let commands: Vec<String> = help
        .split("Commands:\n")
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .filter(|c| c != "help")
        .collect();
    assert!(commands.len() >= 17, "{commands:?}");
    for command in &commands {
        let invocations: Vec<Vec<&str>> = if command == "pod" {
            vec![vec!["pod", "create"], vec!["pod", "rm"]]
        } else {
            vec![vec![command.as_str()]]
        };
        for words in invocations {
            let mut args = words.clone();
            args.push("--help");
            let text = env.ok(&args);
            assert!(
                text.contains(&format!("Examples:\n  podstore {}", words.join(" "))),
                "{words:?} --help has no example:\n{text}"
            );
        }
    }
}

#[test]
fn exit_statuses_are_zero_one_and_two() {
    let env = Env::new("vfs");
    for (args, status) in [
        (vec!["info"], 0),
        (vec!["df", "--format", "json"], 0),
        (vec!["--help"], 0),
        (vec!["inspect", "no-such-image:v1"], 1),
        (vec!["mount", "no-such-container"], 1),
        (vec!["untag", "no-such-image:v1"], 1),
        (vec!["df", "--format", "yaml"], 2),
        (vec!["info", "extra-argument"], 2),
        (vec!["pull", "--progress", "fancy", "busybox"], 2),
        (vec![], 2),
    ] {
        let out = env.run(&args);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {out:?}");
        if status == 1 {
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert!(stderr.starts_with("podstore: "), "{args:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        }
    }
}

#[test]
fn pull_progress_modes_for_scripts() {
    let fixtures = FixtureSet::shared().unwrap();
    let multilayer = fixtures.image("multilayer").unwrap();
    let source = fixtures.oci_reference("multilayer");
    let id = multilayer.image_id().unwrap();

    // plain: one line per layer step on stderr, the ID alone on stdout
    let env = Env::new("vfs");
    let out = env.run(&["pull", "--progress", "plain", &source]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{id}\n"));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let count = multilayer.layers.len();
    for (index, layer) in multilayer.layers.iter().enumerate() {
        let line = format!("Applied layer {}/{count} {}", index + 1, layer.digest);
        assert!(stderr.lines().any(|l| l == line), "{line}: {stderr}");
    }
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal escapes: {stderr:?}"
    );

    // none and --quiet: nothing on stderr
    for args in [["--progress", "none"], ["--quiet", "--quiet"]] {
        let env = Env::new("vfs");
        let mut all: Vec<&str> = vec!["pull"];
        all.extend(
            args.iter()
                .copied()
                .take(if args[0] == "--quiet" { 1 } else { 2 }),
        );
        all.push(&source);
        let out = env.run(&all);
        assert!(out.status.success(), "{all:?}: {out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{id}\n"));
        assert_eq!(String::from_utf8(out.stderr).unwrap(), "", "{all:?}");
    }
}
