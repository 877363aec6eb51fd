//! `podstore check [--repair] [--format table|json]`: the store verified against itself, the
//! mount table and the filesystem (the metadata crate's `Store::check`), optionally repaired;
//! exits non-zero while problems remain.

use std::io::Write;
use std::time::Duration;

use anyhow::{Result, bail};
use podstore_metadata::{CheckOptions, CheckReport, Store};

use crate::args::Format;

/// `podstore check` flags.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Remove what is broken or unreachable (never anything valid), then check again.
    #[arg(long)]
    pub repair: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Leftovers a running pull may still be using (unreferenced layers, staged blobs,
    /// ingests) count only when at least this many seconds old; 0 when nothing else uses
    /// the store.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub stale_after: u64,
    /// Skip re-reading every layer's files against its recorded diff digest and size.
    #[arg(long)]
    pub quick: bool,
}

/// Runs the check (and repair); fails when problems remain.
pub fn run(store: &Store, args: &CheckArgs, out: &mut impl Write) -> Result<()> {
    let options = CheckOptions {
        layer_contents: !args.quick,
        stale_after: Duration::from_secs(args.stale_after),
        blob_stores: vec![store.graph_root().join(podstore_image::pull::BLOB_DIR)],
    };
    let remaining = if args.repair {
        let repaired = store.repair(&options)?;
        match args.format {
            Format::Json => writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "found": repaired.before.to_json(),
                    "removed": {
                        "layers": repaired.removed_layers,
                        "images": repaired.removed_images,
                        "containers": repaired.removed_containers,
                        "paths": repaired.removed_paths,
                    },
                    "remaining": repaired.after.to_json(),
                }))?
            )?,
            Format::Table => {
                write_table(out, "found", &repaired.before)?;
                for (what, ids) in [
                    ("layer", &repaired.removed_layers),
                    ("image", &repaired.removed_images),
                    ("container", &repaired.removed_containers),
                ] {
                    for id in ids {
                        writeln!(out, "removed {what} {id}")?;
                    }
                }
                for path in &repaired.removed_paths {
                    writeln!(out, "repaired {}", path.display())?;
                }
                write_table(out, "remaining", &repaired.after)?;
            }
        }
        repaired.after
    } else {
        let report = store.check(&options)?;
        match args.format {
            Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report.to_json())?)?,
            Format::Table => write_table(out, "found", &report)?,
        }
        report
    };
    out.flush()?;
    if !remaining.is_clean() {
        bail!(
            "check: {} problem(s) in the store at {}{}",
            remaining.findings.len(),
            store.graph_root().display(),
            if args.repair {
                " remain after repair"
            } else {
                " (podstore check --repair removes them)"
            }
        );
    }
    Ok(())
}

fn write_table(out: &mut impl Write, label: &str, report: &CheckReport) -> Result<()> {
    writeln!(
        out,
        "{label}: {} problem(s) in {} layer(s), {} image(s), {} container(s)",
        report.findings.len(),
        report.layers,
        report.images,
        report.containers
    )?;
    let width = report
        .findings
        .iter()
        .map(|f| f.kind().len())
        .max()
        .unwrap_or(0);
    for finding in &report.findings {
        writeln!(out, "  {:width$}  {}", finding.kind(), finding)?;
    }
    Ok(())
}
