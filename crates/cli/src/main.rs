//! The `podstore` command line: operators' access to the image service over a
//! containers/storage store (pull, images, inspect, resolve, untag).
//!
//! Every failure prints one line on stderr, `podstore: <message>` (the message names the
//! input), and exits with status 1; usage errors exit with status 2 (clap's convention).

mod args;
mod output;
mod progress;

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use podstore_image::{ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{Store, StoreOptions};
use podstore_registry::PlatformSelector;

use crate::args::{Cli, Command, Format, GlobalOptions};
use crate::progress::{ProgressMode, ProgressReporter, manifest_layers};

fn main() {
    let cli = Cli::parse();
    init_logging();
    if let Err(error) = run(cli) {
        eprintln!("podstore: {}", one_line(&error));
        std::process::exit(1);
    }
}

/// Library diagnostics (tracing events) go to stderr only when `PODSTORE_LOG` is set, e.g.
/// `PODSTORE_LOG=debug` or `PODSTORE_LOG=podstore_image=trace`.
fn init_logging() {
    let Ok(filter) = std::env::var("PODSTORE_LOG") else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// The error and its causes on one line, joined by ": "; a cause whose text the message
/// already contains (library errors often print their source) is not repeated.
fn one_line(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    drop_repeated_tail(&message.replace(['\n', '\r'], " "))
}

/// Removes a trailing run of `": "`-separated parts that repeats the run just before it
/// (`a: b: c: b: c` → `a: b: c`), which nested library messages sometimes produce.
fn drop_repeated_tail(message: &str) -> String {
    let mut parts: Vec<&str> = message.split(": ").collect();
    'shrink: loop {
        for run in 1..=parts.len() / 2 {
            let n = parts.len();
            if parts[n - run..] == parts[n - 2 * run..n - run] {
                parts.truncate(n - run);
                continue 'shrink;
            }
        }
        break;
    }
    parts.join(": ")
}

/// The store options: storage.conf as podman reads it, then the command-line overrides.
fn store_options(global: &GlobalOptions) -> Result<StoreOptions> {
    let mut options =
        StoreOptions::from_environment().context("reading the storage configuration")?;
    if let Some(root) = &global.root {
        options.graph_root = root.clone();
    }
    if let Some(runroot) = &global.runroot {
        options.run_root = runroot.clone();
    }
    if let Some(driver) = &global.storage_driver {
        options.driver_name = driver.clone();
    }
    if !global.storage_opt.is_empty() {
        options.driver_options = global.storage_opt.clone();
    }
    Ok(options)
}

/// Opens the store and builds the image service from the global flags.
fn image_service(global: &GlobalOptions) -> Result<ImageService> {
    let options = store_options(global)?;
    let store = Store::open(&options)
        .with_context(|| format!("opening the store at {}", options.graph_root.display()))?;
    let service_options = ImageServiceOptions {
        default_transport: global.default_transport.clone(),
        insecure_registries: global.insecure_registry.clone(),
        registries_conf: global.registries_conf.clone(),
        auth_file: global.authfile.clone(),
        cert_dir: global.cert_dir.clone(),
        ..ImageServiceOptions::default()
    };
    Ok(ImageService::new(Arc::new(store), service_options)?)
}

fn run(cli: Cli) -> Result<()> {
    let service = image_service(&cli.global)?;
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Pull {
            platform,
            quiet,
            image,
        } => {
            let selector = platform
                .map(|p| PlatformSelector::for_platform(&p.os, &p.architecture, &p.variant));
            let mode = if quiet {
                ProgressMode::Quiet
            } else if std::io::stderr().is_terminal() {
                ProgressMode::Bars
            } else {
                ProgressMode::Plain
            };
            let id = pull(&service, &image, selector, mode)?;
            writeln!(stdout, "{id}")?;
        }
        Command::Images { format, filter } => {
            let images = service.list_images(filter.as_deref().unwrap_or(""))?;
            match format {
                Format::Table => write!(stdout, "{}", output::image_table(&images))?,
                Format::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&images)?)?,
            }
        }
        Command::Inspect { image } => {
            let status = service.image_status(&image)?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&status)?)?;
        }
        Command::Resolve { name } => {
            for candidate in service.resolve_names(&name)? {
                writeln!(stdout, "{candidate}")?;
            }
        }
        Command::Untag { image } => {
            service.untag_image(&image)?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Pulls `image`, showing progress in `mode`, and returns the image ID.
fn pull(
    service: &ImageService,
    image: &str,
    platform: Option<PlatformSelector>,
    mode: ProgressMode,
) -> Result<String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .with_context(|| format!("starting the runtime to pull {image:?}"))?;
    let destination_name = output::oci_destination_name(image);
    runtime.block_on(async {
        let mut options = PullOptions {
            platform,
            destination_name,
            ..PullOptions::default()
        };
        if mode == ProgressMode::Quiet {
            return Ok(service.pull_image(image, &options).await?.id);
        }
        // The manifest tells which layers there are, so each gets its line or bar up front.
        let prepared = service.prepare_image(image, &options).await?;
        let reporter = ProgressReporter::new(mode, manifest_layers(&prepared.manifest));
        let (sender, mut receiver) = tokio::sync::mpsc::channel(1024);
        options.progress = Some(sender);
        let pulling = async move {
            let result = service.pull_image(image, &options).await;
            drop(options); // closes the channel, ending the reporting loop
            result
        };
        let reporting = async {
            while let Some(event) = receiver.recv().await {
                reporter.handle(&event);
            }
        };
        let (result, ()) = tokio::join!(pulling, reporting);
        reporter.finish();
        Ok(result?.id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_tails_are_dropped() {
        for (input, expected) in [
            ("image not known: \"x\"", "image not known: \"x\""),
            ("a: b: c: b: c", "a: b: c"),
            ("a: b: b", "a: b"),
            (
                "\"oci:/l:x\": /l/oci-layout: not valid: missing: /l/oci-layout: not valid: missing",
                "\"oci:/l:x\": /l/oci-layout: not valid: missing",
            ),
            ("a: b: c", "a: b: c"),
            ("", ""),
        ] {
            assert_eq!(drop_repeated_tail(input), expected, "{input}");
        }
        let chained = anyhow::anyhow!("inner: detail").context("outer \"input\"");
        assert_eq!(one_line(&chained), "outer \"input\": inner: detail");
    }
}
