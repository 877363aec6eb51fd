//! The command-line grammar (clap derive): global store and registry flags, the subcommands,
//! and the parsers of their values (`--platform OS/ARCH[/VARIANT]`, `--format table|json`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Exit statuses, documented in `--help`.
const EXIT_CODES: &str = "Exit status: 0 on success, 1 when the command failed (one line on \
stderr, `podstore: <message>`, naming the input), 2 on a usage error.
Environment: PODSTORE_LOG=debug (tracing filter) prints library diagnostics on stderr; \
CONTAINERS_STORAGE_CONF, STORAGE_DRIVER and STORAGE_OPTS as for podman.";

/// `podstore`: pull, list, inspect and untag images in a containers/storage store.
#[derive(Debug, Parser)]
#[command(name = "podstore", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Store and registry settings shared by every command.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command. Store defaults come from storage.conf as podman reads it
/// (`$CONTAINERS_STORAGE_CONF`, `/etc/containers/storage.conf`,
/// `/usr/share/containers/storage.conf`; `STORAGE_DRIVER`, `STORAGE_OPTS`).
#[derive(Debug, clap::Args)]
pub struct GlobalOptions {
    /// Store graph root (persistent data); default from storage.conf.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Store run root (state that goes away at reboot); default from storage.conf.
    #[arg(long, global = true, value_name = "DIR")]
    pub runroot: Option<PathBuf>,
    /// Storage driver (`overlay` or `vfs`); default from storage.conf, else auto-detected.
    #[arg(long, global = true, value_name = "DRIVER")]
    pub storage_driver: Option<String>,
    /// Storage driver option such as `overlay.mountopt=nodev` (repeatable; replaces the
    /// storage.conf options when given).
    #[arg(long, global = true, value_name = "OPTION")]
    pub storage_opt: Vec<String>,
    /// registries.conf to use instead of the system configuration (the file must exist).
    #[arg(long, global = true, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Auth file with registry credentials (podman's auth.json format).
    #[arg(long, global = true, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Registry to reach over plain HTTP or unverified TLS: `host[:port]` or a CIDR network
    /// (repeatable; 127.0.0.0/8 and ::1 are always insecure).
    #[arg(long, global = true, value_name = "REGISTRY")]
    pub insecure_registry: Vec<String>,
    /// Transport prepended to a pull source that names none.
    #[arg(
        long,
        global = true,
        value_name = "TRANSPORT",
        default_value = "docker://"
    )]
    pub default_transport: String,
    /// Directory of certificates (`*.crt` CAs, `*.cert`/`*.key` client pairs) used for every
    /// registry instead of the certs.d directories.
    #[arg(long, global = true, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image into the store; prints the image ID as the last line of stdout.
    #[command(after_help = "Examples:
  podstore pull docker.io/library/busybox:latest
  podstore pull --platform linux/arm64/v8 --quiet quay.io/podman/hello
  podstore pull oci:/srv/layout:busybox      (recorded as localhost/busybox:latest)")]
    Pull {
        /// Platform to choose from a multi-arch image: `OS/ARCH[/VARIANT]` (default: this host).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platform: Option<Platform>,
        /// Print nothing but the image ID.
        #[arg(long, short)]
        quiet: bool,
        /// `docker://REF`, `oci:PATH[:NAME]`, or a reference (the default transport is added).
        image: String,
    },
    /// List the images in the store (all of them, or the one FILTER names).
    #[command(after_help = "Examples:
  podstore images
  podstore images --format json
  podstore images busybox:latest")]
    Images {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// A name, ID or unique ID prefix; lists only that image.
        filter: Option<String>,
    },
    /// Show one image's status (the seed's ImageResult) as JSON.
    #[command(after_help = "Examples:
  podstore inspect docker.io/library/busybox:latest
  podstore inspect 3f57d9401f8d")]
    Inspect {
        /// A name, ID or unique ID prefix.
        image: String,
    },
    /// Print the names a short name resolves to, one per line (a local ID prefix gives the ID).
    #[command(after_help = "Examples:
  podstore resolve busybox
  podstore --registries-conf ./registries.conf resolve library/alpine:3.19")]
    Resolve {
        /// The name to resolve.
        name: String,
    },
    /// Remove one name from an image; the image is deleted when no name remains (or when
    /// given by ID).
    #[command(after_help = "Examples:
  podstore untag docker.io/library/busybox:latest
  podstore untag 3f57d9401f8d")]
    Untag {
        /// A name, ID or unique ID prefix.
        image: String,
    },
}

/// Output format of lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// A JSON array with the seed's keys.
    Json,
}

/// A `--platform` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `amd64`.
    pub architecture: String,
    /// e.g. `v8`, or empty.
    pub variant: String,
}

/// Parses `OS/ARCH[/VARIANT]`; every present part must be non-empty.
pub fn parse_platform(text: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = text.split('/').collect();
    let bad = || format!("invalid platform {text:?}: expected OS/ARCH[/VARIANT]");
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(bad());
    }
    if parts.iter().any(|p| p.chars().any(char::is_whitespace)) {
        return Err(bad());
    }
    Ok(Platform {
        os: parts[0].to_owned(),
        architecture: parts[1].to_owned(),
        variant: parts.get(2).map(|v| (*v).to_owned()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn platform_table() {
        let ok = [
            ("linux/amd64", ("linux", "amd64", "")),
            ("linux/arm64/v8", ("linux", "arm64", "v8")),
            ("linux/arm/v7", ("linux", "arm", "v7")),
            ("windows/amd64", ("windows", "amd64", "")),
        ];
        for (input, (os, arch, variant)) in ok {
            let p = parse_platform(input).unwrap();
            assert_eq!(
                (p.os.as_str(), p.architecture.as_str(), p.variant.as_str()),
                (os, arch, variant),
                "{input}"
            );
        }
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/v7/x",
            "linux//v7",
            "linux/ amd64",
        ] {
            let err = parse_platform(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
