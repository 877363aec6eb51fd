//! The command-line grammar (clap derive): global store and registry flags, the subcommands,
//! and the parsers of their values (`--platform OS/ARCH[/VARIANT]`, `--format table|json`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use podstore_runtime::{IdMap, IdMappings};

/// Exit statuses, documented in `--help`.
const EXIT_CODES: &str = "Examples:
  podstore pull docker.io/library/busybox:latest
  podstore images
  podstore --root /var/lib/containers/storage --storage-driver overlay df
  podstore completion bash > /etc/bash_completion.d/podstore

Exit status: 0 on success, 1 when the command failed (one line on \
stderr, `podstore: <message>`, naming the input), 2 on a usage error.
Environment: PODSTORE_LOG=debug (tracing filter) prints library diagnostics on stderr; \
CONTAINERS_STORAGE_CONF, STORAGE_DRIVER and STORAGE_OPTS as for podman.";

/// `podstore`: pull, list, inspect and untag images, and create, mount and remove CRI-O pod
/// sandboxes and containers, in a containers/storage store.
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
    /// Keep the compressed layer blobs a pull downloads (under `<graphroot>/podstore-blobs`)
    /// after their layers are committed; a later pull that misses such a layer applies it from
    /// the kept file instead of downloading it again.
    #[arg(long, global = true)]
    pub keep_compressed_blobs: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image into the store; prints the image ID as the last line of stdout.
    #[command(after_help = "Examples:
  podstore pull docker.io/library/busybox:latest
  podstore pull --platform linux/arm64/v8 --quiet quay.io/podman/hello
  podstore pull --progress plain 127.0.0.1:5000/team/app:v1 2>pull.log
  podstore pull oci:/srv/layout:busybox      (recorded as localhost/busybox:latest)")]
    Pull {
        /// Platform to choose from a multi-arch image: `OS/ARCH[/VARIANT]` (default: this host).
        #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
        platform: Option<Platform>,
        /// Print nothing but the image ID (same as `--progress none`).
        #[arg(long, short)]
        quiet: bool,
        /// How to show progress on stderr: `auto` (bars on a terminal, plain lines
        /// otherwise), `bars`, `plain` (one line per layer step, for logs and scripts) or
        /// `none`.
        #[arg(long, value_enum, default_value_t = ProgressChoice::Auto, value_name = "MODE")]
        progress: ProgressChoice,
        /// `docker://REF`, `oci:PATH[:NAME]`, or a reference (the default transport is added).
        image: String,
    },
    /// List the images in the store (all of them, or the one FILTER names); the table shows
    /// REPOSITORY, TAG, IMAGE ID, CREATED (the image config's date) and SIZE.
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
    /// Check the store against itself, the mount table and the filesystem; `--repair` removes
    /// what is broken or unreachable. Exits 1 while problems remain.
    #[command(after_help = "Examples:
  podstore check
  podstore check --repair --stale-after 0 --format json")]
    Check(crate::check::CheckArgs),
    /// Shut the store's driver down as containers/storage's `Shutdown` does: when no layer is
    /// mounted, unmount the overlay driver's own bind mount of its home; `--force` unmounts
    /// every mounted layer first. Prints the layers that were mounted; exits 1, naming them,
    /// when some are mounted and `--force` is not given.
    #[command(after_help = "Examples:
  podstore shutdown
  podstore shutdown --force")]
    Shutdown {
        /// Unmount every mounted layer (whatever its mount count) first.
        #[arg(long)]
        force: bool,
    },
    /// Pod sandboxes: create or remove a pod's infra container.
    #[command(subcommand)]
    Pod(PodCommand),
    /// Create a container in a pod from a local image (never pulled); prints its
    /// ContainerInfo (ID, Dir, RunDir, Config, ProcessLabel, MountLabel) as JSON.
    #[command(after_help = "Examples:
  podstore create --pod-name web --pod-id 0123abcd --image localhost/busybox:latest \\
      --name web-app --id 4567cdef --metadata-name app
  podstore create --pod-name web --pod-id 0123abcd --image-id 3f57d9401f8d... \\
      --name web-app2 --id 89abcdef --metadata-name app --attempt 1 --label-opt level:s0")]
    Create {
        /// The pod the container belongs to.
        #[command(flatten)]
        pod: PodIdentity,
        /// The image: by name (`--image`) or by ID (`--image-id`).
        #[command(flatten)]
        image: ImageChoice,
        /// The container's name (unique in the store).
        #[arg(long, value_name = "NAME")]
        name: String,
        /// The container's ID (64 hex digits recommended).
        #[arg(long, value_name = "ID")]
        id: String,
        /// The CRI metadata name.
        #[arg(long, value_name = "NAME")]
        metadata_name: String,
        /// Container settings shared with `pod create`.
        #[command(flatten)]
        settings: ContainerSettings,
    },
    /// Remove a container (its record, layer and directories; unmounted first).
    #[command(after_help = "Examples:
  podstore rm web-app
  podstore rm 4567cdef")]
    Rm {
        /// Container ID, name or unique ID prefix.
        id: String,
    },
    /// Mount a container's root filesystem (counted) and print its path.
    #[command(after_help = "Examples:
  podstore mount web-app")]
    Mount {
        /// Container ID, name or unique ID prefix.
        id: String,
    },
    /// Unmount a container's root filesystem, whatever its mount count.
    #[command(after_help = "Examples:
  podstore unmount web-app")]
    Unmount {
        /// Container ID, name or unique ID prefix.
        id: String,
    },
    /// Print a container's CRI-O metadata as JSON, or replace it with `--set`.
    #[command(after_help = r#"Examples:
  podstore metadata web-app
  podstore metadata web-app --set '{"pod-name":"web","pod-id":"0123abcd","name":"web-app"}'"#)]
    Metadata {
        /// Container ID, name or unique ID prefix.
        id: String,
        /// New metadata (CRI-O's JSON keys); printed back in CRI-O's encoding.
        #[arg(long, value_name = "JSON")]
        set: Option<String>,
    },
    /// Print (creating it if missing) a container's persistent work directory.
    #[command(after_help = "Examples:
  podstore workdir web-app")]
    Workdir {
        /// Container ID, name or unique ID prefix.
        id: String,
    },
    /// Print (creating it if missing) a container's volatile run directory.
    #[command(after_help = "Examples:
  podstore rundir web-app")]
    Rundir {
        /// Container ID, name or unique ID prefix.
        id: String,
    },
    /// List the store's containers: ID, names, image, pod name, whether CRI-O's (its
    /// metadata names a pod name and a pod ID) and when it was created.
    #[command(after_help = "Examples:
  podstore ps
  podstore ps --format json")]
    Ps {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the store: its paths and driver, how many layers, images and containers it
    /// holds, this podstore's version and the formats it reads and writes.
    #[command(after_help = "Examples:
  podstore info
  podstore --root /var/lib/containers/storage info --format json | jq .Store.Driver")]
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show disk use: per image (its layers, split into those shared with other images and
    /// those only it uses), per container (its writable layer), and totals. Sizes are the
    /// apparent sizes of the layers' files on this driver, hard links counted once.
    #[command(after_help = "Examples:
  podstore df
  podstore df --format json | jq .Totals.Total")]
    Df {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(after_help = "Examples:
  podstore completion bash > /etc/bash_completion.d/podstore
  podstore completion zsh > ~/.zfunc/_podstore   (with fpath+=(~/.zfunc) in ~/.zshrc)
  podstore completion fish > ~/.config/fish/completions/podstore.fish")]
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `pull --progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressChoice {
    /// Bars when stderr is a terminal, plain lines otherwise.
    Auto,
    /// Progress bars (even when stderr is not a terminal).
    Bars,
    /// One line per layer step.
    Plain,
    /// Nothing.
    None,
}

/// `podstore pod ...`.
// Parsed once per process: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Create a pod sandbox's infra container (ID = the pod ID, names = the container name
    /// and the pod name); the image is pulled when absent (it must then be fully qualified;
    /// the global `--authfile` is used). Prints its ContainerInfo as JSON.
    #[command(after_help = "Examples:
  podstore pod create --pod-name web --pod-id 0123abcd --image localhost/pause:latest
  podstore --authfile auth.json pod create --pod-name web --pod-id 0123abcd \\
      --image registry.k8s.io/pause:3.9 --namespace default --uid 42 --attempt 1
The infra container is named `<pod-name>-infra` unless --container-name is given; the
metadata name defaults to the container name.")]
    Create {
        /// The pod.
        #[command(flatten)]
        pod: PodIdentity,
        /// The image: by name (`--image`) or by ID (`--image-id`).
        #[command(flatten)]
        image: ImageChoice,
        /// The infra container's name (default `<pod-name>-infra`; must differ from the pod
        /// name, which is the container's second name).
        #[arg(long, value_name = "NAME")]
        container_name: Option<String>,
        /// The CRI metadata name (default: the container name).
        #[arg(
            long,
            value_name = "NAME",
            default_value = "",
            hide_default_value = true
        )]
        metadata_name: String,
        /// The pod's UID (recorded in the metadata).
        #[arg(
            long,
            value_name = "UID",
            default_value = "",
            hide_default_value = true
        )]
        uid: String,
        /// The pod's namespace (recorded in the metadata).
        #[arg(
            long,
            value_name = "NAMESPACE",
            default_value = "",
            hide_default_value = true
        )]
        namespace: String,
        /// Container settings shared with `create`.
        #[command(flatten)]
        settings: ContainerSettings,
    },
    /// Remove a pod sandbox's infra container.
    #[command(after_help = "Examples:
  podstore pod rm 0123abcd")]
    Rm {
        /// Pod ID (the infra container's ID), a name or unique ID prefix.
        id: String,
    },
}

/// The pod a container belongs to.
#[derive(Debug, clap::Args)]
pub struct PodIdentity {
    /// The pod's name.
    #[arg(long, value_name = "NAME")]
    pub pod_name: String,
    /// The pod's ID.
    #[arg(long, value_name = "ID")]
    pub pod_id: String,
}

/// The image a container is made from: exactly one of name and ID.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ImageChoice {
    /// The image by name (or unique ID prefix).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// The image by its full ID (used as given, not resolved).
    #[arg(long, value_name = "ID")]
    pub image_id: Option<String>,
}

/// Settings shared by `create` and `pod create`.
#[derive(Debug, clap::Args)]
pub struct ContainerSettings {
    /// The CRI attempt number.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub attempt: u32,
    /// UID map `CONTAINER:HOST:SIZE` (repeatable; default: the image's).
    #[arg(long, value_name = "C:H:S", value_parser = parse_id_map)]
    pub uidmap: Vec<IdMap>,
    /// GID map `CONTAINER:HOST:SIZE` (repeatable; default: the image's).
    #[arg(long, value_name = "C:H:S", value_parser = parse_id_map)]
    pub gidmap: Vec<IdMap>,
    /// SELinux label option such as `level:s0:c1,c2` or `disable` (repeatable).
    #[arg(long, value_name = "OPT")]
    pub label_opt: Vec<String>,
    /// Record the container as privileged.
    #[arg(long)]
    pub privileged: bool,
}

impl ContainerSettings {
    /// The requested ID maps: `None` when no map was given (the store's defaults).
    pub fn id_mappings(&self) -> Option<IdMappings> {
        if self.uidmap.is_empty() && self.gidmap.is_empty() {
            return None;
        }
        Some(IdMappings {
            uid: self.uidmap.clone(),
            gid: self.gidmap.clone(),
        })
    }
}

/// Parses `CONTAINER:HOST:SIZE` (decimal u32 each, size at least 1).
pub fn parse_id_map(text: &str) -> Result<IdMap, String> {
    let bad = || format!("invalid ID map {text:?}: expected CONTAINER:HOST:SIZE");
    let parts: Vec<&str> = text.split(':').collect();
    let [container, host, size] = parts[..] else {
        return Err(bad());
    };
    let number = |part: &str| {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<u32>().map_err(|_| bad())
    };
    let map = IdMap {
        container_id: number(container)?,
        host_id: number(host)?,
        size: number(size)?,
    };
    if map.size == 0 {
        return Err(bad());
    }
    Ok(map)
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
    fn id_map_table() {
        for (input, (c, h, s)) in [
            ("0:100000:65536", (0, 100_000, 65536)),
            ("1:1:1", (1, 1, 1)),
            ("0:0:4294967295", (0, 0, u32::MAX)),
        ] {
            let map = parse_id_map(input).unwrap();
            assert_eq!(
                (map.container_id, map.host_id, map.size),
                (c, h, s),
                "{input}"
            );
        }
        for bad in [
            "",
            "0:0",
            "0:0:0",
            "0:0:1:1",
            "a:0:1",
            "-1:0:1",
            "+1:0:1",
            "0::1",
            "0:0:4294967296",
            " 0:0:1",
        ] {
            let err = parse_id_map(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
