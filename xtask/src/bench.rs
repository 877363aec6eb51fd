//! `cargo xtask bench`: podstore measured against skopeo, podman, the `containers-storage` CLI
//! and the physical limits of the same data, in the same run, on disk (ext4) and on tmpfs;
//! writes `docs/BENCHMARKS.md` (see [`crate::bench_report`]).
//!
//! Flow: build the release `podstore` and re-run this command from a release build of xtask
//! (the in-process set-up through the Store API must not be timed in a debug build); build the
//! testkit fixtures (deterministic, cached under /dev/shm), start the real `docker-registry` on
//! 127.0.0.1 and push them; then run the measures ([`crate::bench_measures`]), saving every
//! sample to `results.json` as it goes, and write the report. Timings never gate anything: the
//! command fails only when a tool fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use podstore_testkit::fixtures::{FixtureOptions, FixtureSet};
use podstore_testkit::registry::{Registry, RegistryMode};

use crate::bench_exec::{Cmd, Runner};
use crate::bench_stats::{Key, Sample, Series};

/// The measures `--only` accepts.
pub const MEASURES: &[&str] = &["pull", "lifecycle", "images", "limits", "micro", "profile"];

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs of every measure.
    pub runs: usize,
    /// Small, fast settings for a smoke run.
    pub quick: bool,
    /// Measures to run (all of [`MEASURES`] when empty).
    pub only: Vec<String>,
    /// Report path.
    pub out: PathBuf,
    /// Size of `big`, percent of ~300 MiB.
    pub big_percent: u32,
    /// Containers per lifecycle round.
    pub containers: usize,
    /// Images in the large listing store.
    pub images: usize,
    /// Filesystems to run file-writing measures on (`ext4` = the disk, `tmpfs`).
    pub filesystems: Vec<FsKind>,
    /// Regenerate the report from this results file instead of measuring.
    pub from_json: Option<PathBuf>,
    /// Runs of the slowest case, the vfs pull of `big` on the disk (default: `runs`).
    pub heavy_runs: Option<usize>,
    /// Keep the previous run's results (`results.json`) for the measures not run now.
    pub append: bool,
}

/// Where file-writing measures put their stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    /// The root disk (`/var/tmp/podstore-bench`).
    Disk,
    /// tmpfs (`/dev/shm/podstore-bench`).
    Tmpfs,
}

impl FsKind {
    /// The scratch root on this filesystem.
    pub fn root(self) -> PathBuf {
        match self {
            FsKind::Disk => PathBuf::from("/var/tmp/podstore-bench"),
            FsKind::Tmpfs => PathBuf::from("/dev/shm/podstore-bench"),
        }
    }
}

const USAGE: &str = "usage: cargo xtask bench [--runs N] [--quick] [--only M[,M…]] [--out FILE]
                         [--big-percent P] [--containers N] [--images N] [--fs ext4|tmpfs|both]
                         [--from-json FILE] [--append] [--heavy-runs N]
measures: pull lifecycle images limits micro profile (default: all)
--quick: 1 run, big at 5 %, 3 containers, 50 images, micro-benchmarks very short, no profile,
         report to /var/tmp/podstore-bench/BENCHMARKS-quick.md unless --out is given
--append: keep the previous results.json's measures that this run does not redo (run the
          measures one by one, e.g. --only pull, then --only limits,lifecycle --append)
--heavy-runs N: runs of the vfs pull of big on the disk (~30 s per pull; default --runs)
--from-json FILE: only rewrite the report from a saved results.json";

impl Options {
    /// Parses the arguments after `bench`.
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut runs = None;
        let mut quick = false;
        let mut only = Vec::new();
        let mut out = None;
        let mut big_percent = None;
        let mut containers = None;
        let mut images = None;
        let mut filesystems = vec![FsKind::Disk, FsKind::Tmpfs];
        let mut from_json = None;
        let mut append = false;
        let mut heavy_runs = None;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value\n{USAGE}"))
            };
            let number = |name: &str, text: String| -> Result<usize> {
                text.parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("{name} takes a positive number, not {text:?}"))
            };
            match arg.as_str() {
                "--runs" => runs = Some(number("--runs", value("--runs")?)?),
                "--quick" => quick = true,
                "--only" => {
                    for m in value("--only")?.split(',').filter(|m| !m.is_empty()) {
                        if !MEASURES.contains(&m) {
                            bail!("unknown measure {m:?} in --only\n{USAGE}");
                        }
                        only.push(m.to_owned());
                    }
                }
                "--out" => out = Some(PathBuf::from(value("--out")?)),
                "--big-percent" => {
                    let p = number("--big-percent", value("--big-percent")?)?;
                    if p > 1000 {
                        bail!("--big-percent {p} is above 1000");
                    }
                    big_percent = Some(p as u32);
                }
                "--containers" => {
                    containers = Some(number("--containers", value("--containers")?)?)
                }
                "--images" => images = Some(number("--images", value("--images")?)?),
                "--fs" => {
                    filesystems = Vec::new();
                    for fs in value("--fs")?.split(',') {
                        match fs {
                            "ext4" | "disk" => filesystems.push(FsKind::Disk),
                            "tmpfs" => filesystems.push(FsKind::Tmpfs),
                            "both" => filesystems.extend([FsKind::Disk, FsKind::Tmpfs]),
                            other => bail!(
                                "--fs takes ext4, tmpfs, both or a list such as tmpfs,ext4, not {other:?}"
                            ),
                        }
                    }
                }
                "--from-json" => from_json = Some(PathBuf::from(value("--from-json")?)),
                "--append" => append = true,
                "--heavy-runs" => {
                    heavy_runs = Some(number("--heavy-runs", value("--heavy-runs")?)?)
                }
                "-h" | "--help" => bail!("{USAGE}"),
                other => bail!("unknown bench argument {other:?}\n{USAGE}"),
            }
        }
        let out = out.unwrap_or_else(|| {
            if quick {
                FsKind::Disk.root().join("BENCHMARKS-quick.md")
            } else {
                crate::workspace_root().join("docs").join("BENCHMARKS.md")
            }
        });
        Ok(Options {
            runs: runs.unwrap_or(if quick { 1 } else { 3 }),
            quick,
            only,
            out,
            big_percent: big_percent.unwrap_or(if quick { 5 } else { 100 }),
            containers: containers.unwrap_or(if quick { 3 } else { 10 }),
            images: images.unwrap_or(if quick { 50 } else { 1000 }),
            filesystems,
            from_json,
            append,
            heavy_runs,
        })
    }

    /// Whether measure `m` runs.
    pub fn wants(&self, m: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == m)
    }
}

/// Entry point of `cargo xtask bench ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("--exec-child") {
        return crate::bench_exec::exec_child(&args[1..]);
    }
    let options = Options::parse(args)?;
    if let Some(json) = &options.from_json {
        let results = Results::load(json)?;
        return crate::bench_report::write(&options, &results);
    }
    if std::env::var_os("PODSTORE_BENCH_INNER").is_none() {
        return reexec_release(args);
    }
    let mut bench = Bench::start(options)?;
    let outcome = crate::bench_measures::run_all(&mut bench);
    bench.results.save(&bench.results_path)?;
    if let Err(error) = &outcome {
        bench
            .results
            .notes
            .push(format!("The run stopped early: {error:#}"));
    }
    crate::bench_report::write(&bench.options, &bench.results)?;
    outcome
}

/// The target directory cargo builds into.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => crate::workspace_root().join(dir),
        None => crate::workspace_root().join("target"),
    }
}

/// Builds the release `podstore` and xtask, then runs this command again from the release
/// xtask with `PODSTORE_BENCH_INNER=1` and `PODSTORE_BENCH_CLI` set.
fn reexec_release(args: &[String]) -> Result<()> {
    let mut build = crate::cargo();
    build.args(["build", "--release", "-p", "podstore-cli", "-p", "xtask"]);
    crate::run("bench: build release podstore and xtask", build)?;
    let release = target_dir().join("release");
    let status = Command::new(release.join("xtask"))
        .arg("bench")
        .args(args)
        .env("PODSTORE_BENCH_INNER", "1")
        .env("PODSTORE_BENCH_CLI", release.join("podstore"))
        .current_dir(crate::workspace_root())
        .status()
        .context("starting the release xtask")?;
    if !status.success() {
        bail!("bench failed ({status})");
    }
    Ok(())
}

/// Everything the run collected; saved as JSON after every measure.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Results {
    /// Every series, in the order first measured.
    pub series: Vec<Series>,
    /// `name → value` facts: machine, versions, fixture sizes, the command line.
    pub facts: Vec<(String, String)>,
    /// Warnings and remarks for the report.
    pub notes: Vec<String>,
    /// Criterion results: (benchmark id, median ns, bytes per iteration if any).
    pub micro: Vec<(String, f64, Option<u64>)>,
    /// Profile excerpts: (title, command, top entries).
    pub profiles: Vec<(String, String, String)>,
}

impl Results {
    /// Appends a sample to the series `key` (created with `command` when new).
    pub fn add(&mut self, key: Key, command: &Cmd, sample: Sample) {
        if let Some(series) = self.series.iter_mut().find(|s| s.key == key) {
            series.samples.push(sample);
        } else {
            self.series.push(Series {
                key,
                command: command.display(),
                samples: vec![sample],
            });
        }
    }

    /// Drops what the measures `options` selects will measure again (for `--append`).
    pub fn forget(&mut self, options: &Options) {
        let sections = |measure: &str| -> &'static [&'static str] {
            match measure {
                "pull" => &["pull-cold", "pull-warm", "pull-3of4"],
                "lifecycle" => &["lifecycle"],
                "images" => &["images"],
                "limits" => &["limits"],
                _ => &[],
            }
        };
        self.series.retain(|s| {
            !MEASURES
                .iter()
                .any(|m| options.wants(m) && sections(m).contains(&s.key.section.as_str()))
        });
        if options.wants("micro") {
            self.micro.clear();
        }
        if options.wants("profile") {
            self.profiles.clear();
        }
        self.notes.retain(|n| {
            !n.starts_with("The run stopped early")
                && !MEASURES
                    .iter()
                    .any(|m| options.wants(m) && n.starts_with(&format!("{m}: ")))
        });
    }

    /// The series for `key`.
    pub fn get(&self, key: &Key) -> Option<&Series> {
        self.series.iter().find(|s| &s.key == key)
    }

    /// A fact by name.
    pub fn fact(&self, name: &str) -> Option<&str> {
        self.facts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a fact.
    pub fn set_fact(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.facts.iter_mut().find(|(n, _)| n == name) {
            Some(fact) => fact.1 = value,
            None => self.facts.push((name.to_owned(), value)),
        }
    }

    /// Writes the results as JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Reads results written by [`Results::save`].
    pub fn load(path: &Path) -> Result<Results> {
        let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// A running benchmark: options, fixtures, the registry, the measuring runner, the results.
pub struct Bench {
    /// Options.
    pub options: Options,
    /// The release `podstore` binary.
    pub podstore: PathBuf,
    /// The fixture layout.
    pub fixtures: FixtureSet,
    /// The plain-HTTP registry serving the fixtures.
    pub registry: Registry,
    /// Measuring runner.
    pub runner: Runner,
    /// Results so far.
    pub results: Results,
    /// Where results are saved.
    pub results_path: PathBuf,
}

impl Bench {
    fn start(options: Options) -> Result<Bench> {
        for root in [FsKind::Disk.root(), FsKind::Tmpfs.root()] {
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
        }
        let podstore = std::env::var_os("PODSTORE_BENCH_CLI")
            .map(PathBuf::from)
            .context("PODSTORE_BENCH_CLI is not set (run through `cargo xtask bench`)")?;
        let fixture_options = FixtureOptions::default()
            .with_big(options.big_percent)
            .with_small_count(20);
        eprintln!(
            "==> bench: fixtures (big at {} %; built once, cached under /dev/shm)",
            options.big_percent
        );
        let fixtures = FixtureSet::cached(&fixture_options)?;
        eprintln!("==> bench: docker-registry on 127.0.0.1, pushing the fixtures");
        let registry = Registry::start(RegistryMode::Plain)?;
        for image in fixtures.images() {
            registry.push(&fixtures, &image.tag, &image.registry_reference())?;
        }
        crate::bench_measures::push_big_first3(&fixtures, &registry)?;
        let runner = Runner::new(&FsKind::Disk.root())?;
        let results_path = FsKind::Disk.root().join("results.json");
        let mut results = if options.append && results_path.is_file() {
            let mut previous = Results::load(&results_path)?;
            previous.forget(&options);
            previous
        } else {
            Results::default()
        };
        crate::bench_report::collect_facts(&options, &podstore, &fixtures, &mut results);
        Ok(Bench {
            results_path,
            options,
            podstore,
            fixtures,
            registry,
            runner,
            results,
        })
    }

    /// Runs `cmd` measured and records it under `key`; returns its stdout.
    pub fn measure(&mut self, key: Key, cmd: &Cmd) -> Result<Vec<u8>> {
        let (sample, stdout) = self.runner.measure(cmd)?;
        self.results.add(key, cmd, sample);
        Ok(stdout)
    }

    /// Saves the results so far.
    pub fn checkpoint(&self) -> Result<()> {
        self.results.save(&self.results_path)
    }
}

/// Unmounts everything at or below `dir` (deepest first), removes it, and syncs, so the next
/// timed run does not pay for this one's writeback. Refuses paths outside the scratch roots.
pub fn wipe(dir: &Path) -> Result<()> {
    if ![FsKind::Disk.root(), FsKind::Tmpfs.root()]
        .iter()
        .any(|root| dir.starts_with(root) && dir != root)
    {
        bail!(
            "refusing to wipe {} (not under a bench scratch root)",
            dir.display()
        );
    }
    for _ in 0..8 {
        let mut mounts = mounts_under(dir)?;
        if mounts.is_empty() {
            break;
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            if rustix::mount::unmount(&m, rustix::mount::UnmountFlags::empty()).is_err() {
                let _ = rustix::mount::unmount(&m, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", dir.display())),
    }
    rustix::fs::sync();
    Ok(())
}

/// Mount points at or below `dir`, from /proc/self/mountinfo (octal escapes decoded).
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mount_path(p)))
        .filter(|p| p.starts_with(dir))
        .collect())
}

fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_parse_defaults_quick_and_errors() {
        let o = Options::parse(&[]).unwrap();
        assert_eq!(
            (o.runs, o.big_percent, o.containers, o.images),
            (3, 100, 10, 1000)
        );
        assert!(o.out.ends_with("docs/BENCHMARKS.md"));
        assert!(o.wants("pull") && o.wants("micro"));
        let q = Options::parse(&args("--quick --only pull,limits --runs 2 --fs tmpfs")).unwrap();
        assert_eq!((q.runs, q.big_percent), (2, 5));
        assert_eq!(q.filesystems, vec![FsKind::Tmpfs]);
        assert!(q.wants("pull") && q.wants("limits") && !q.wants("images"));
        for bad in ["--runs 0", "--runs", "--only nope", "--fs ntfs", "--what"] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_paths_unescape() {
        assert_eq!(unescape_mount_path("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/end\\"), "/end\\");
    }
}
