//! The `podstore` command line: operators' access to the image service (pull, images,
//! inspect, resolve, untag) and the CRI-O runtime service (pod create/rm, create, rm, mount,
//! unmount, metadata, workdir, rundir, ps), plus `info`, `df` and `completion`, over a
//! containers/storage store.
//!
//! Every failure prints one line on stderr, `podstore: <message>` (the message names the
//! input), and exits with status 1 (a panic too); usage errors exit with status 2 (clap's
//! convention).

mod args;
mod check;
mod output;
mod progress;
mod report;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use podstore_image::{ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{GoTime, Store, StoreOptions};
use podstore_registry::PlatformSelector;

use podstore_runtime::{
    ContainerRequest, PodSandboxRequest, RuntimeContainerMetadata, RuntimeError, RuntimeService,
};

use crate::args::{Cli, Command, Format, GlobalOptions, PodCommand, ProgressChoice};
use crate::progress::{ProgressMode, ProgressReporter, manifest_layers};

fn main() {
    let cli = Cli::parse();
    // A bug must still honour the documented exit status: one `podstore:` line, status 1.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "podstore: internal error: {}",
            info.to_string().replace('\n', " ")
        );
        std::process::exit(1);
    }));
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
        keep_compressed_blobs: global.keep_compressed_blobs,
        ..ImageServiceOptions::default()
    };
    Ok(ImageService::new(Arc::new(store), service_options)?)
}

fn run(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    if let Command::Completion { shell } = cli.command {
        // Needs no store: works before podstore was ever configured.
        clap_complete::generate(shell, &mut Cli::command(), "podstore", &mut stdout);
        stdout.flush()?;
        return Ok(());
    }
    let service = image_service(&cli.global)?;
    match cli.command {
        Command::Pull {
            platform,
            quiet,
            progress,
            image,
        } => {
            let selector = platform
                .map(|p| PlatformSelector::for_platform(&p.os, &p.architecture, &p.variant));
            let mode = match progress {
                _ if quiet => ProgressMode::Quiet,
                ProgressChoice::None => ProgressMode::Quiet,
                ProgressChoice::Plain => ProgressMode::Plain,
                ProgressChoice::Bars => ProgressMode::Bars,
                ProgressChoice::Auto if std::io::stderr().is_terminal() => ProgressMode::Bars,
                ProgressChoice::Auto => ProgressMode::Plain,
            };
            let id = pull(&service, &image, selector, mode)?;
            writeln!(stdout, "{id}")?;
        }
        Command::Images { format, filter } => {
            let images = service.list_images(filter.as_deref().unwrap_or(""))?;
            match format {
                Format::Table => {
                    // One read of the records for every image's creation time.
                    let snapshot = service.store().image_snapshot()?;
                    let record_created: HashMap<&str, GoTime> = snapshot
                        .images()
                        .iter()
                        .map(|record| (record.id.as_str(), record.created))
                        .collect();
                    let created: Vec<_> = images
                        .iter()
                        .map(|image| {
                            let record = record_created.get(image.id.as_str()).copied();
                            output::image_created(image, record)
                        })
                        .collect();
                    let table = output::image_table(&images, &created, GoTime::now_utc());
                    write!(stdout, "{table}")?;
                    stdout.flush()?;
                    // The process ends right after: freeing a large listing one allocation at
                    // a time is wasted work (the snapshot's read locks go with the process).
                    std::mem::forget(table);
                    std::mem::forget(created);
                    std::mem::forget(record_created);
                    std::mem::forget(snapshot);
                }
                Format::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&images)?)?,
            }
            stdout.flush()?;
            // As above: `images` changed nothing, and the service holds no mount.
            std::mem::forget(images);
            std::mem::forget(service);
            return Ok(());
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
        Command::Info { format } => {
            let options = store_options(&cli.global)?;
            let info = report::Info::gather(
                service.store(),
                &options.driver_options,
                StoreOptions::config_file(),
            )?;
            match format {
                Format::Table => write!(stdout, "{}", info.to_text())?,
                Format::Json => {
                    writeln!(stdout, "{}", serde_json::to_string_pretty(&info.to_json())?)?
                }
            }
        }
        Command::Df { format } => {
            let usage = report::DiskUsage::gather(service.store())?;
            match format {
                Format::Table => write!(stdout, "{}", usage.to_text())?,
                Format::Json => writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&usage.to_json())?
                )?,
            }
        }
        Command::Check(args) => check::run(service.store(), &args, &mut stdout)?,
        Command::Shutdown { force } => {
            for id in service.store().shutdown(force)? {
                writeln!(stdout, "{id}")?;
            }
        }
        command => run_runtime(
            RuntimeService::new(service),
            command,
            cli.global.authfile,
            &mut stdout,
        )?,
    }
    stdout.flush()?;
    Ok(())
}

/// The runtime commands (pods and containers).
fn run_runtime(
    runtime: RuntimeService,
    command: Command,
    authfile: Option<std::path::PathBuf>,
    stdout: &mut impl Write,
) -> Result<()> {
    match command {
        Command::Pod(PodCommand::Create {
            pod,
            image,
            container_name,
            metadata_name,
            uid,
            namespace,
            settings,
        }) => {
            let container_name =
                container_name.unwrap_or_else(|| format!("{}-infra", pod.pod_name));
            let info = runtime.create_pod_sandbox(&PodSandboxRequest {
                image_name: image.image.unwrap_or_default(),
                image_id: image.image_id.unwrap_or_default(),
                image_auth_file: authfile,
                container_name,
                metadata_name,
                uid,
                namespace,
                attempt: settings.attempt,
                id_mappings: settings.id_mappings(),
                label_options: settings.label_opt,
                privileged: settings.privileged,
                pod_name: pod.pod_name,
                pod_id: pod.pod_id,
            })?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&info)?)?;
        }
        Command::Pod(PodCommand::Rm { id }) => runtime.remove_pod_sandbox(&id)?,
        Command::Create {
            pod,
            image,
            name,
            id,
            metadata_name,
            settings,
        } => {
            let info = runtime.create_container(&ContainerRequest {
                pod_name: pod.pod_name,
                pod_id: pod.pod_id,
                image_name: image.image.unwrap_or_default(),
                image_id: image.image_id.unwrap_or_default(),
                container_name: name,
                container_id: id,
                metadata_name,
                attempt: settings.attempt,
                id_mappings: settings.id_mappings(),
                label_options: settings.label_opt,
                privileged: settings.privileged,
            })?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&info)?)?;
        }
        Command::Rm { id } => {
            // The library's delete is idempotent (CRI-O's fix); an operator naming a container
            // that does not exist is told so.
            require_container(&runtime, &id)?;
            runtime.delete_container(&id)?;
        }
        Command::Mount { id } => {
            let path = runtime.start_container(&id)?;
            writeln!(stdout, "{}", path.display())?;
        }
        Command::Unmount { id } => {
            require_container(&runtime, &id)?;
            runtime.stop_container(&id)?;
        }
        Command::Metadata { id, set } => {
            let metadata = match set {
                Some(json) => {
                    let metadata = RuntimeContainerMetadata::from_json(&json)
                        .with_context(|| format!("metadata for container {id:?}"))?;
                    runtime.set_container_metadata(&id, &metadata)?;
                    runtime.get_container_metadata(&id)?
                }
                None => runtime.get_container_metadata(&id)?,
            };
            writeln!(stdout, "{}", metadata.to_json())?;
        }
        Command::Workdir { id } => {
            writeln!(stdout, "{}", runtime.get_work_dir(&id)?.display())?;
        }
        Command::Rundir { id } => {
            writeln!(stdout, "{}", runtime.get_run_dir(&id)?.display())?;
        }
        Command::Ps { format } => {
            let containers = runtime.store().containers()?;
            let rows = output::container_rows(&containers);
            match format {
                Format::Table => write!(
                    stdout,
                    "{}",
                    output::container_table(&rows, GoTime::now_utc())
                )?,
                Format::Json => writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&output::container_json(&rows))?
                )?,
            }
        }
        Command::Pull { .. }
        | Command::Images { .. }
        | Command::Inspect { .. }
        | Command::Resolve { .. }
        | Command::Untag { .. }
        | Command::Info { .. }
        | Command::Df { .. }
        | Command::Completion { .. }
        | Command::Check(..)
        | Command::Shutdown { .. } => {}
    }
    Ok(())
}

/// Fails with [`RuntimeError::InvalidContainerId`] unless the container exists.
fn require_container(runtime: &RuntimeService, id: &str) -> Result<()> {
    match runtime.store().container(id) {
        Ok(_) => Ok(()),
        Err(podstore_metadata::Error::ContainerUnknown { .. }) => {
            Err(RuntimeError::InvalidContainerId { id: id.to_owned() }.into())
        }
        Err(e) => Err(e.into()),
    }
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
