//! `docs/BENCHMARKS.md` from a run's results: the issue's targets with met/missed, ratio tables
//! (podstore / peer, podstore / limit), peak RSS, the limits, the criterion medians, profiles,
//! machine details, versions and the commands to reproduce.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use podstore_testkit::fixtures::FixtureSet;

use crate::bench::{FsKind, Options, Results};
use crate::bench_exec::Cmd;
use crate::bench_stats::{Goal, Key, format_ms, format_ratio, format_summary, meets, ratio};

/// Records machine details, versions, fixture sizes and the command line in `results`.
pub fn collect_facts(
    options: &Options,
    podstore: &Path,
    fixtures: &FixtureSet,
    results: &mut Results,
) {
    let first_line = |cmd: Cmd| -> String {
        cmd.run()
            .map(|o| {
                String::from_utf8_lossy(&o)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_else(|e| format!("unknown ({e})"))
    };
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    results.set_fact(
        "date",
        first_line(Cmd::new(["date", "-u", "+%Y-%m-%d %H:%M UTC"])),
    );
    let command = match results.fact("command") {
        Some(previous) if options.append => format!("{previous}; {}", command_line(options)),
        _ => command_line(options),
    };
    results.set_fact("command", command);
    results.set_fact(
        "commit",
        first_line(
            Cmd::new(["git", "-C"])
                .args([crate::workspace_root()])
                .args(["log", "-1", "--format=%h"]),
        ),
    );
    results.set_fact(
        "nproc",
        std::thread::available_parallelism()
            .map_or(0, |n| n.get())
            .to_string(),
    );
    results.set_fact(
        "cpu",
        read("/proc/cpuinfo")
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_default(),
    );
    results.set_fact(
        "memory",
        read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or_else(String::new, |kib| format!("{:.1} GiB", kib / 1048576.0)),
    );
    results.set_fact(
        "kernel",
        read("/proc/sys/kernel/osrelease").trim().to_owned(),
    );
    for kind in [FsKind::Disk, FsKind::Tmpfs] {
        let info = first_line(
            Cmd::new(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", "-T"]).args([kind.root()]),
        );
        results.set_fact(&format!("fs {}", kind.root().display()), info);
    }
    results.set_fact("fs.disk", crate::bench_measures::fs_label(FsKind::Disk));
    results.set_fact("fs.tmpfs", crate::bench_measures::fs_label(FsKind::Tmpfs));
    results.set_fact(
        "podstore",
        first_line(Cmd::new([podstore.as_os_str()]).args(["--version"])),
    );
    results.set_fact("rustc", first_line(Cmd::new(["rustc", "--version"])));
    let perf = Cmd::new(["perf", "stat", "-x", ",", "-e", "instructions", "true"])
        .run_with_stderr()
        .map(|text| {
            if text.contains("not supported") || text.contains("<not counted>") {
                "`perf stat -e instructions true`: not supported (no hardware counters)".to_owned()
            } else {
                "`perf stat -e instructions true`: works".to_owned()
            }
        })
        .unwrap_or_else(|e| format!("perf: unavailable ({e})"));
    results.set_fact("perf", perf);
    for package in [
        "skopeo",
        "podman",
        "containers-storage",
        "docker-registry",
        "gzip",
        "zstd",
        "tar",
        "openssl",
        "coreutils",
        "valgrind",
    ] {
        let version = first_line(Cmd::new(["dpkg-query", "-W", "-f=${Version}", package]));
        results.set_fact(&format!("version {package}"), version);
    }
    if let Ok(big) = fixtures.image("big") {
        let tar: u64 = big.layers.iter().map(|l| l.uncompressed_size).sum();
        results.set_fact(
            "big",
            format!(
                "{} layers, {:.1} MiB gzip, {:.1} MiB tar ({} % of the full size)",
                big.layers.len(),
                big.layers_size() as f64 / 1048576.0,
                tar as f64 / 1048576.0,
                options.big_percent
            ),
        );
        let sizes: Vec<String> = big
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                format!(
                    "layer {}: {:.1} MiB gzip / {:.1} MiB tar",
                    i + 1,
                    l.size as f64 / 1048576.0,
                    l.uncompressed_size as f64 / 1048576.0
                )
            })
            .collect();
        results.set_fact("big layers", sizes.join("; "));
    }
    if let Ok(zstd) = fixtures.image("big-zstd") {
        results.set_fact(
            "big-zstd",
            format!("{:.1} MiB zstd", zstd.layers_size() as f64 / 1048576.0),
        );
    }
}

fn command_line(options: &Options) -> String {
    let mut words = vec!["cargo xtask bench".to_owned()];
    if options.quick {
        words.push("--quick".to_owned());
    }
    words.push(format!("--runs {}", options.runs));
    words.push(format!("--big-percent {}", options.big_percent));
    words.push(format!("--containers {}", options.containers));
    words.push(format!("--images {}", options.images));
    if !options.only.is_empty() {
        words.push(format!("--only {}", options.only.join(",")));
    }
    if let Some(n) = options.heavy_runs {
        words.push(format!("--heavy-runs {n}"));
    }
    if options.append {
        words.push("--append".to_owned());
    }
    if options.filesystems != [FsKind::Disk, FsKind::Tmpfs] {
        let names: Vec<&str> = options
            .filesystems
            .iter()
            .map(|f| if *f == FsKind::Tmpfs { "tmpfs" } else { "ext4" })
            .collect();
        words.push(format!("--fs {}", names.join(",")));
    }
    words.join(" ")
}

/// One of the issue's targets, evaluated.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// What is compared.
    pub what: String,
    /// The measured value (ratio or MiB).
    pub value: Option<f64>,
    /// How it must compare.
    pub goal: Goal,
    /// The bound.
    pub bound: f64,
    /// Whether the value is a ratio (`×`) or MiB.
    pub unit: &'static str,
    /// The numbers behind the value.
    pub detail: String,
}

impl TargetRow {
    /// Met, missed or not measured.
    pub fn verdict(&self) -> &'static str {
        match meets(self.value, self.goal, self.bound) {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

fn median(results: &Results, key: &Key) -> Option<f64> {
    results.get(key).and_then(|s| s.time()).map(|s| s.median)
}

/// The slowest layer's median single-core `decompress | tar -x` on `fs`, and which layer.
pub fn slowest_layer(results: &Results, kind: &str, fs: &str) -> Option<(f64, usize)> {
    (1..=16)
        .filter_map(|i| {
            median(
                results,
                &Key::new(
                    "limits",
                    &format!("{kind} -dc | tar -x, layer {i}"),
                    fs,
                    "limit",
                ),
            )
            .map(|m| (m, i))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// The issue's targets evaluated on `results`.
pub fn targets(results: &Results, options: &Options) -> Vec<TargetRow> {
    let disk = results.fact("fs.disk").unwrap_or("ext4").to_owned();
    let tmpfs = results.fact("fs.tmpfs").unwrap_or("tmpfs").to_owned();
    let mut rows = Vec::new();
    let pair = |section: &str, case: &str, fs: &str, a: &str, b: &str| {
        let ma = median(results, &Key::new(section, case, fs, a));
        let mb = median(results, &Key::new(section, case, fs, b));
        let detail = format!(
            "{a} {} ms, {b} {} ms",
            ma.map_or("–".into(), format_ms),
            mb.map_or("–".into(), format_ms)
        );
        (ratio(ma, mb), detail)
    };
    let big = "big:latest overlay";
    let (v, d) = pair("pull-cold", big, &tmpfs, "podstore", "skopeo");
    rows.push(TargetRow {
        what: format!("cold pull of big, overlay, {tmpfs}: podstore / skopeo"),
        value: v,
        goal: Goal::AtMost,
        bound: 0.5,
        unit: "×",
        detail: d,
    });
    let (v, d) = pair("pull-cold", big, &disk, "podstore", "skopeo");
    rows.push(TargetRow {
        what: format!("cold pull of big, overlay, {disk}: podstore / skopeo"),
        value: v,
        goal: Goal::Below,
        bound: 1.0,
        unit: "×",
        detail: d,
    });
    for fs in [&tmpfs, &disk] {
        let pulled = median(results, &Key::new("pull-cold", big, fs, "podstore"));
        let limit = slowest_layer(results, "gzip", fs);
        rows.push(TargetRow {
            what: format!(
                "cold pull of big, overlay, {fs}: podstore / limit (slowest layer's single-core gzip -dc | tar -x)"
            ),
            value: ratio(pulled, limit.map(|l| l.0)),
            goal: Goal::AtMost,
            bound: 1.3,
            unit: "×",
            detail: format!(
                "podstore {} ms, limit {} ms (layer {})",
                pulled.map_or("–".into(), format_ms),
                limit.map_or("–".into(), |l| format_ms(l.0)),
                limit.map_or("–".into(), |l| l.1.to_string())
            ),
        });
    }
    for fs in [&tmpfs, &disk] {
        for driver in ["overlay", "vfs"] {
            let (v, d) = pair(
                "lifecycle",
                &format!("{driver} per container"),
                fs,
                "podstore",
                "podman",
            );
            rows.push(TargetRow {
                what: format!("container lifecycle ({driver}, {fs}): podstore / podman"),
                value: v,
                goal: Goal::AtMost,
                bound: 0.2,
                unit: "×",
                detail: d,
            });
        }
    }
    let listing_fs = if options.filesystems.contains(&FsKind::Tmpfs) {
        &tmpfs
    } else {
        &disk
    };
    let case = format!("{} images", options.images);
    let (v, d) = pair(
        "images",
        &case,
        listing_fs,
        "podstore",
        "containers-storage",
    );
    rows.push(TargetRow {
        what: format!("listing {case}: podstore images / containers-storage images"),
        value: v,
        goal: Goal::AtMost,
        bound: 0.2,
        unit: "×",
        detail: d,
    });
    let rss = results
        .series
        .iter()
        .filter(|s| {
            s.key.tool == "podstore"
                && s.key.section.starts_with("pull")
                && s.key.case.starts_with("big")
        })
        .filter_map(|s| s.rss_mib().map(|r| (r.max, s.key.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    rows.push(TargetRow {
        what: "peak RSS of podstore while pulling big (largest over every big pull)".to_owned(),
        value: rss.as_ref().map(|r| r.0),
        goal: Goal::AtMost,
        bound: 64.0,
        unit: "MiB",
        detail: rss.map_or("–".into(), |(_, k)| {
            format!("{} {} on {}", k.section, k.case, k.fs)
        }),
    });
    rows
}

/// Writes the report to `options.out`.
pub fn write(options: &Options, results: &Results) -> Result<()> {
    let text = render(options, results);
    if let Some(dir) = options.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&options.out, text)
        .with_context(|| format!("writing {}", options.out.display()))?;
    eprintln!("==> bench: wrote {}", options.out.display());
    Ok(())
}

/// Escapes `|` for a Markdown table cell.
fn md(text: &str) -> String {
    text.replace('|', "\\|")
}

fn cell(results: &Results, key: &Key) -> String {
    results
        .get(key)
        .and_then(|s| s.time())
        .map_or("–".to_owned(), |s| format_summary(&s))
}

fn rss_cell(results: &Results, key: &Key) -> String {
    results
        .get(key)
        .and_then(|s| s.rss_mib())
        .map_or("–".to_owned(), |s| format!("{:.0}", s.max))
}

/// (case, fs) rows of a section, in the order first measured.
fn rows_of(results: &Results, section: &str) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    for s in results.series.iter().filter(|s| s.key.section == section) {
        let row = (s.key.case.clone(), s.key.fs.clone());
        if !rows.contains(&row) {
            rows.push(row);
        }
    }
    rows
}

/// A table of one section: a column per tool (median (min–max) ms), podstore / peer ratios
/// and peak RSS per tool.
fn tool_table(out: &mut String, results: &Results, section: &str, tools: &[&str]) {
    let rows = rows_of(results, section);
    if rows.is_empty() {
        out.push_str("_not measured in this run_\n\n");
        return;
    }
    let peers: Vec<&str> = tools.iter().copied().filter(|t| *t != "podstore").collect();
    let _ = write!(out, "| case | fs |");
    for t in tools {
        let _ = write!(out, " {t} ms |");
    }
    for p in &peers {
        let _ = write!(out, " podstore / {p} |");
    }
    let _ = writeln!(out, " peak RSS MiB ({}) |", tools.join(" / "));
    let _ = write!(out, "|---|---|");
    for _ in tools.iter().chain(peers.iter()) {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    for (case, fs) in rows {
        let key = |tool: &str| Key::new(section, &case, &fs, tool);
        let _ = write!(out, "| {} | {fs} |", md(&case));
        for t in tools {
            let _ = write!(out, " {} |", cell(results, &key(t)));
        }
        for p in &peers {
            let r = ratio(median(results, &key("podstore")), median(results, &key(p)));
            let _ = write!(out, " {} |", format_ratio(r));
        }
        let rss: Vec<String> = tools.iter().map(|t| rss_cell(results, &key(t))).collect();
        let _ = writeln!(out, " {} |", rss.join(" / "));
    }
    let widest = results
        .series
        .iter()
        .filter(|s| s.key.section == section)
        .filter_map(|s| s.time().map(|t| (t.spread(), s.key.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((spread, key)) = widest {
        let _ = writeln!(
            out,
            "\nWidest spread (max − min) / median in this table: {:.0} % ({} {} on {}).",
            spread * 100.0,
            key.tool,
            key.case,
            key.fs
        );
    }
    out.push('\n');
}

fn limits_tables(out: &mut String, results: &Results) {
    let rows = rows_of(results, "limits");
    if rows.is_empty() {
        out.push_str("_not measured in this run_\n\n");
        return;
    }
    out.push_str("| limit | fs | median ms (min–max) |\n|---|---|---:|\n");
    for (case, fs) in &rows {
        let _ = writeln!(
            out,
            "| {} | {fs} | {} |",
            md(case),
            cell(results, &Key::new("limits", case, fs, "limit"))
        );
    }
    out.push('\n');
    out.push_str(
        "podstore against the limit: the pull's median over the slowest layer's single-core \
         `decompress | tar -x` (layers are applied in parallel on 2 cores, so the slowest layer \
         bounds a pull), and over the sum of all layers (one core).\n\n",
    );
    out.push_str("| pull | fs | podstore ms | slowest layer ms | podstore / slowest layer | all layers ms (sum) | podstore / sum |\n|---|---|---:|---:|---:|---:|---:|\n");
    let mut fss: Vec<String> = rows
        .iter()
        .map(|r| r.1.clone())
        .filter(|f| f != "-")
        .collect();
    fss.dedup();
    for fs in fss {
        for (image, kind) in [
            ("big:latest overlay", "gzip"),
            ("big:zstd overlay", "zstd"),
            ("big:latest vfs", "gzip"),
        ] {
            let pulled = median(results, &Key::new("pull-cold", image, &fs, "podstore"));
            let slowest = slowest_layer(results, kind, &fs);
            let sum: Option<f64> = {
                let parts: Vec<f64> = (1..=16)
                    .filter_map(|i| {
                        median(
                            results,
                            &Key::new(
                                "limits",
                                &format!("{kind} -dc | tar -x, layer {i}"),
                                &fs,
                                "limit",
                            ),
                        )
                    })
                    .collect();
                (!parts.is_empty()).then(|| parts.iter().sum())
            };
            if pulled.is_none() && slowest.is_none() {
                continue;
            }
            let _ = writeln!(
                out,
                "| {image} ({kind}) | {fs} | {} | {} | {} | {} | {} |",
                pulled.map_or("–".into(), format_ms),
                slowest.map_or("–".into(), |s| format!(
                    "{} (layer {})",
                    format_ms(s.0),
                    s.1
                )),
                format_ratio(ratio(pulled, slowest.map(|s| s.0))),
                sum.map_or("–".into(), format_ms),
                format_ratio(ratio(pulled, sum)),
            );
        }
    }
    out.push('\n');
}

/// The whole Markdown document.
pub fn render(options: &Options, results: &Results) -> String {
    let mut out = String::new();
    let fact = |n: &str| results.fact(n).unwrap_or("?").to_owned();
    out.push_str("# podstore benchmarks\n\n");
    let _ = writeln!(
        out,
        "Generated by `{}` on {} (commit {}). Do not edit by hand: rerun the command(s).\n",
        fact("command"),
        fact("date"),
        fact("commit")
    );
    out.push_str(
        "Every tool pulls from the same real `docker-registry` on 127.0.0.1 (plain HTTP, blobs in \
         the page cache), into an empty store for \"cold\". Runs alternate the tools (their order \
         rotates every run); cells are median (min–max) wall-clock ms over the runs; ratios \
         compare medians. Peak RSS is `ru_maxrss` of the tool's process tree (the largest \
         process), from `getrusage(RUSAGE_CHILDREN)` in a per-command helper. Stores on the disk \
         are under /var/tmp, on tmpfs under /dev/shm; every store is unmounted, removed and \
         `sync`ed between runs. The machine is shared: compare numbers within this run only.\n\n",
    );
    out.push_str("## Targets (issue 9)\n\n| target | measured | goal | verdict | numbers |\n|---|---:|---|---|---|\n");
    let target_rows = targets(results, options);
    for t in &target_rows {
        let value = match (t.value, t.unit) {
            (Some(v), "MiB") => format!("{v:.1} MiB"),
            (v, _) => format_ratio(v),
        };
        let goal = match t.goal {
            Goal::AtMost => format!(
                "≤ {}{}",
                t.bound,
                if t.unit == "MiB" { " MiB" } else { "×" }
            ),
            Goal::Below => format!(
                "< {}{}",
                t.bound,
                if t.unit == "MiB" { " MiB" } else { "×" }
            ),
        };
        let _ = writeln!(
            out,
            "| {} | {value} | {goal} | {} | {} |",
            md(&t.what),
            t.verdict(),
            md(&t.detail)
        );
    }
    out.push('\n');
    out.push_str("## Machine and versions\n\n| | |\n|---|---|\n");
    for (name, value) in &results.facts {
        if name == "command" || name == "date" || name == "commit" {
            continue;
        }
        let _ = writeln!(out, "| {name} | {} |", value.replace('|', "\\|"));
    }
    out.push('\n');
    out.push_str("## Cold pull (empty store)\n\n");
    tool_table(
        &mut out,
        results,
        "pull-cold",
        &["podstore", "skopeo", "podman"],
    );
    out.push_str("## Warm pull (image already present)\n\n");
    tool_table(
        &mut out,
        results,
        "pull-warm",
        &["podstore", "skopeo", "podman"],
    );
    out.push_str(
        "## Pull with 3 of 4 layers present\n\nThe store first got `testkit/big:first3` (big's \
         first three layers, pushed by the harness; not timed), then `big:latest` was pulled.\n\n",
    );
    tool_table(
        &mut out,
        results,
        "pull-3of4",
        &["podstore", "skopeo", "podman"],
    );
    let _ = writeln!(
        out,
        "## Container lifecycle (busybox)\n\nPer container: create, mount, unmount, delete, each \
         a separate CLI call ({} containers per tool per run; podman: `create --network none`, \
         `mount`, `umount`, `rm`; containers-storage: `create-container`, `mount`, `unmount`, \
         `delete-container`; podstore: `create`, `mount`, `unmount`, `rm`), all on one store \
         per driver that podman pulled busybox into.\n",
        options.containers
    );
    tool_table(
        &mut out,
        results,
        "lifecycle",
        &["podstore", "podman", "containers-storage"],
    );
    out.push_str("## Image listing\n\n`podstore images`, `podman images` and `containers-storage images` on the same overlay store (one warm-up call each, then runs × 3 calls).\n\n");
    tool_table(
        &mut out,
        results,
        "images",
        &["podstore", "podman", "containers-storage"],
    );
    out.push_str("## Limits on the same data (`big`)\n\nSingle-core: `taskset -c 0 sh -c 'gzip -dc LAYER | tar -x -C DIR'` (zstd: `zstd -qdc`) into an empty directory; the sync cost is `sync -f DIR` right after unpacking all four layers.\n\n");
    limits_tables(&mut out, results);
    out.push_str("## Micro-benchmarks (criterion)\n\n");
    if results.micro.is_empty() {
        out.push_str("_not run in this run_\n\n");
    } else {
        out.push_str("`cargo bench -p podstore-layer -p podstore-reference -p podstore-metadata --bench apply --bench digest --bench records`\n\n| benchmark | median | throughput |\n|---|---:|---:|\n");
        for (id, ns, bytes) in &results.micro {
            let time = if *ns >= 1e6 {
                format!("{:.2} ms", ns / 1e6)
            } else if *ns >= 1e3 {
                format!("{:.2} µs", ns / 1e3)
            } else {
                format!("{ns:.0} ns")
            };
            let thr = bytes.map_or("".to_owned(), |b| {
                format!("{:.0} MiB/s", b as f64 / 1048576.0 / (ns / 1e9))
            });
            let _ = writeln!(out, "| {id} | {time} | {thr} |");
        }
        out.push('\n');
    }
    if !results.profiles.is_empty() {
        let _ = writeln!(
            out,
            "## Profiles\n\n{}; the pull is profiled with `perf record -e cpu-clock` (software clock samples, self time per symbol: valgrind 3.19 has no openat2, which the applier needs), the rest with valgrind callgrind on smaller inputs (instruction counts, self cost per function, top entries).\n",
            fact("perf")
        );
        for (title, cmd, top) in &results.profiles {
            let _ = writeln!(out, "### {title}\n\n`{cmd}`\n\n```\n{top}\n```\n");
        }
    }
    if !results.notes.is_empty() {
        out.push_str("## Notes\n\n");
        for n in &results.notes {
            let _ = writeln!(out, "- {n}");
        }
        out.push('\n');
    }
    out.push_str("## Commands\n\nOne run of each measured command (store paths of that run).\n\n");
    let mut seen: Vec<(String, String)> = Vec::new();
    for s in &results.series {
        let k = (
            s.key.section.clone(),
            format!("{} {}", s.key.case, s.key.tool),
        );
        if seen.contains(&k) {
            continue;
        }
        seen.push(k);
        let _ = writeln!(
            out,
            "- {} / {} / {}: `{}`",
            s.key.section, s.key.case, s.key.tool, s.command
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench_stats::Sample;

    fn sample(ms: f64, rss_mib: u64) -> Sample {
        Sample {
            wall_ms: ms,
            max_rss_kib: rss_mib * 1024,
        }
    }

    fn results() -> Results {
        let mut r = Results::default();
        r.set_fact("fs.disk", "ext4");
        r.set_fact("fs.tmpfs", "tmpfs");
        let cmd = Cmd::new(["x"]);
        for (fs, podstore, skopeo) in [("tmpfs", 1000.0, 4000.0), ("ext4", 9000.0, 8000.0)] {
            for ms in [podstore, podstore * 1.1, podstore * 0.9] {
                r.add(
                    Key::new("pull-cold", "big:latest overlay", fs, "podstore"),
                    &cmd,
                    sample(ms, 40),
                );
            }
            r.add(
                Key::new("pull-cold", "big:latest overlay", fs, "skopeo"),
                &cmd,
                sample(skopeo, 200),
            );
        }
        for (i, ms) in [500.0, 900.0, 700.0, 100.0].iter().enumerate() {
            r.add(
                Key::new(
                    "limits",
                    &format!("gzip -dc | tar -x, layer {}", i + 1),
                    "tmpfs",
                    "limit",
                ),
                &cmd,
                sample(*ms, 0),
            );
        }
        r.add(
            Key::new("pull-warm", "big:latest overlay", "tmpfs", "podstore"),
            &cmd,
            sample(5.0, 80),
        );
        r
    }

    #[test]
    fn targets_are_evaluated_from_medians() {
        let options = Options::parse(&[]).unwrap();
        let r = results();
        let rows = targets(&r, &options);
        let find = |prefix: &str| rows.iter().find(|t| t.what.starts_with(prefix)).unwrap();
        let tmpfs = find("cold pull of big, overlay, tmpfs: podstore / skopeo");
        assert_eq!(tmpfs.value, Some(0.25));
        assert_eq!(tmpfs.verdict(), "**met**");
        let disk = find("cold pull of big, overlay, ext4: podstore / skopeo");
        assert_eq!(disk.value, Some(9000.0 / 8000.0));
        assert_eq!(disk.verdict(), "**missed**");
        let limit = find("cold pull of big, overlay, tmpfs: podstore / limit");
        assert_eq!(limit.value, Some(1000.0 / 900.0));
        assert!(limit.detail.contains("layer 2"), "{}", limit.detail);
        assert_eq!(limit.verdict(), "**met**");
        assert_eq!(find("listing 1000").verdict(), "not measured");
        // the warm pull's 80 MiB counts: it is a pull of big
        let rss = find("peak RSS");
        assert_eq!(rss.value, Some(80.0));
        assert_eq!(rss.verdict(), "**missed**");
        assert_eq!(slowest_layer(&r, "gzip", "tmpfs"), Some((900.0, 2)));
        assert_eq!(slowest_layer(&r, "zstd", "tmpfs"), None);
    }

    #[test]
    fn report_has_tables_ratios_and_targets() {
        let options = Options::parse(&[]).unwrap();
        let text = render(&options, &results());
        assert!(text.contains("| big:latest overlay | tmpfs | 1,000 (900–1,100) | 4,000 (4,000–4,000) | – | 0.25× | – |"), "{text}");
        assert!(text.contains("## Targets (issue 9)"));
        assert!(
            text.contains("| gzip -dc \\| tar -x, layer 2 | tmpfs | 900 (900–900) |"),
            "{text}"
        );
        assert!(text.contains("_not measured in this run_"));
    }
}
