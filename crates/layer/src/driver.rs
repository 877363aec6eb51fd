//! The one boundary every storage backend implements: the [`Driver`] trait, its options and the
//! report of an applied layer diff.
//!
//! CONTRACT (shared with the metadata crate, which is written against it): change it only
//! together with its callers.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use podstore_reference::Digest;

pub use crate::home_mount::HomeMount;

/// One range of an ID mapping, as containers/storage records it (`container_id`, `host_id`,
/// `size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdMap {
    /// First ID inside the container.
    pub container_id: u32,
    /// First ID on the host.
    pub host_id: u32,
    /// Number of IDs mapped.
    pub size: u32,
}

/// UID and GID mappings; empty means identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct IdMappings {
    /// UID ranges.
    pub uid: Vec<IdMap>,
    /// GID ranges.
    pub gid: Vec<IdMap>,
}

/// How a layer blob was compressed, numbered as containers/storage's `compression` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar (0; the field is omitted).
    None = 0,
    /// bzip2 (1); recognised, not decoded.
    Bzip2 = 1,
    /// gzip (2).
    Gzip = 2,
    /// xz (3); recognised, not decoded.
    Xz = 3,
    /// zstd (4).
    Zstd = 4,
}

/// Options for creating a layer.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// A container's writable layer rather than an image layer.
    pub read_write: bool,
    /// ID mappings of the layer's owner (the layer root is owned by the mapped root).
    pub id_mappings: IdMappings,
}

/// Options for applying a layer diff.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Owners in the tar are shifted through these mappings while applying.
    pub id_mappings: IdMappings,
    /// Skip the final syncfs (tests on tmpfs, benchmarks of the sync cost).
    pub no_sync: bool,
    /// The blob's digest when the caller verifies it itself as the bytes are read (a streamed
    /// download whose reader only reaches end of file after verification): the applier then
    /// reports it instead of hashing the blob a second time. Never set it for unverified input.
    pub verified_compressed_digest: Option<Digest>,
}

/// Options for mounting a layer.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Mount options; empty means the driver's configured `mountopt`.
    pub options: Vec<String>,
    /// SELinux mount label, passed as `context="…"`.
    pub mount_label: Option<String>,
    /// Mount read-only (image layers).
    pub read_only: bool,
}

/// What applying a diff found, computed in the same pass that wrote the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Digest of the blob exactly as read (`compressed-diff-digest`).
    pub compressed_digest: Digest,
    /// Bytes of the blob read (`compressed-size`).
    pub compressed_size: u64,
    /// Digest of the uncompressed tar, the DiffID (`diff-digest`).
    pub diff_digest: Digest,
    /// Length of the uncompressed tar (`diff-size`).
    pub diff_size: u64,
    /// Compression detected from the first bytes.
    pub compression: Compression,
    /// UIDs of every entry whose base name does not start with `.wh.` (before mapping).
    pub uids: BTreeSet<u32>,
    /// GIDs likewise.
    pub gids: BTreeSet<u32>,
}

/// A layer driver failure; every variant names the layer or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// The layer does not exist in this driver.
    #[error("layer {id} does not exist in the {driver} driver")]
    NotFound {
        /// Layer ID.
        id: String,
        /// Driver name.
        driver: &'static str,
    },
    /// An I/O error at a path.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Applying a layer diff failed (bad or hostile tar, I/O); names the layer, and the
    /// source names the entry.
    #[error("applying the diff of layer {id}: {source}")]
    Apply {
        /// Layer ID.
        id: String,
        /// What went wrong, naming the tar entry.
        #[source]
        source: crate::apply::ApplyError,
    },
    /// A layer ID that cannot name a directory (empty, `.`, `..`, containing `/` or NUL).
    #[error("invalid layer ID {id:?}")]
    InvalidId {
        /// The ID given.
        id: String,
    },
    /// A request the driver refuses (unsupported mount options, too many lower layers...).
    #[error("layer {id}: {reason}")]
    Invalid {
        /// Layer ID.
        id: String,
        /// Why.
        reason: String,
    },
    /// The mount system call(s) failed.
    #[error("mounting layer {id} on {target}: {source} (options {data})")]
    Mount {
        /// Layer ID.
        id: String,
        /// Mount point.
        target: PathBuf,
        /// The overlay mount data that was passed.
        data: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Shifting the owners of a layer's files to other ID mappings failed; names the layer,
    /// and the source names the file.
    #[error("shifting the ID mappings of layer {id}: {source}")]
    IdShift {
        /// Layer ID.
        id: String,
        /// What went wrong, naming the file.
        #[source]
        source: crate::idshift::ShiftError,
    },
    /// The overlay mount data reaches a page even with paths relative to the driver home, and
    /// the new mount API is disabled or not supported by the kernel (containers/storage:
    /// `cannot mount layer, mount label too large`).
    #[error(
        "cannot mount layer {id}, mount label too large: {length} bytes of mount data with \
         relative paths, the page size is {page_size}, and the new mount API is unavailable"
    )]
    MountDataTooLarge {
        /// Layer ID.
        id: String,
        /// Length of the relative-path mount data.
        length: usize,
        /// The page size it must stay below.
        page_size: usize,
    },
}

/// A storage backend: creates layer directories, applies diffs into them, mounts and removes
/// them. Layer IDs are 64-hex strings chosen by the caller.
pub trait Driver: Send + Sync {
    /// The canonical name (`overlay`, `vfs`), used for the `<name>-layers` directories.
    fn name(&self) -> &'static str;
    /// The driver's home directory (`<graphroot>/overlay`, `<graphroot>/vfs`).
    fn home(&self) -> &Path;
    /// Creates an empty layer on top of `parent`.
    fn create(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOptions,
    ) -> Result<(), DriverError>;
    /// Streams a (possibly compressed) layer tar into the layer, writing containers/storage's
    /// tar-split JSON lines (uncompressed) into `tar_split`.
    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        blob: &mut dyn Read,
        tar_split: &mut dyn Write,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, DriverError>;
    /// Applies a (possibly compressed) layer tar for the future layer `id` into the new
    /// directory `staging` (which must not exist; its parent must be on the driver home's
    /// filesystem), writing tar-split lines into `tar_split`, without touching any layer of the
    /// driver: it can run without the store lock, and several layers can be staged at once.
    /// When [`Driver::staging_needs_parent`] is true, `parent` must already exist.
    #[allow(clippy::too_many_arguments)]
    fn stage_diff(
        &self,
        id: &str,
        staging: &Path,
        parent: Option<&str>,
        blob: &mut dyn Read,
        tar_split: &mut dyn Write,
        create: &CreateOptions,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, DriverError>;
    /// The directory under which staging directories for [`Driver::stage_diff`] must be made
    /// when the driver needs its own: a rename cannot cross mount points, and overlay's home
    /// may be a bind mount of itself (containers/storage keeps it a private mount point), so
    /// overlay stages in `<home>/staging`, the name containers/storage gives its own staging
    /// area. `None`: anywhere on the home's filesystem (the store's `tmp/`).
    fn staging_parent(&self) -> Option<PathBuf> {
        None
    }
    /// Whether [`Driver::stage_diff`] reads the parent's content (vfs copies the parent's tree;
    /// an overlay diff does not depend on its parent, so overlay layers stage in parallel).
    fn staging_needs_parent(&self) -> bool;
    /// Turns a directory staged by [`Driver::stage_diff`] into the layer `id` on top of `parent`
    /// (which must exist now) by renaming it into place: no content is copied. On success
    /// `staging` no longer exists.
    fn commit_staged(
        &self,
        id: &str,
        parent: Option<&str>,
        staging: &Path,
        create: &CreateOptions,
    ) -> Result<(), DriverError>;
    /// Shifts the owner of every file the layer shows (with its parents, as mounted) from the
    /// `from` mappings to the `to` mappings, keeping modes, setuid/setgid bits and
    /// `security.capability` (containers/storage's `UpdateLayerIDMap`). Used on a layer just
    /// created on a template layer, to make an ID-mapped copy of it: overlay copies every file
    /// up into the layer's `diff/`, vfs changes its own full copy in place.
    fn update_id_map(
        &self,
        id: &str,
        from: &IdMappings,
        to: &IdMappings,
        mount_label: Option<&str>,
    ) -> Result<(), DriverError>;
    /// Mounts the layer (with its parents) and returns the root filesystem path.
    fn mount(&self, id: &str, opts: &MountOptions) -> Result<PathBuf, DriverError>;
    /// Unmounts the layer.
    fn unmount(&self, id: &str) -> Result<(), DriverError>;
    /// Removes the layer's directories.
    fn remove(&self, id: &str) -> Result<(), DriverError>;
    /// Whether the layer's directory exists.
    fn exists(&self, id: &str) -> bool;
    /// Disk usage of the layer's own files, in bytes.
    fn size(&self, id: &str) -> Result<u64, DriverError>;
    /// Directories to look a file of this layer up in, nearest first (overlay: its `diff/`
    /// then each lower `diff/`; vfs: the layer directory). Used to rebuild a tar from tar-split.
    fn lookup_dirs(&self, id: &str) -> Result<Vec<PathBuf>, DriverError>;
    /// Makes the driver home a private mount point before layers are mounted under it
    /// (containers/storage's overlay init: `mount.MakePrivate(home)`). The caller serialises
    /// it with other processes (the Store holds `storage.lock`). Drivers that mount nothing
    /// return [`HomeMount::NotNeeded`].
    fn prepare_home(&self) -> Result<HomeMount, DriverError> {
        Ok(HomeMount::NotNeeded)
    }
    /// Drops what [`Driver::prepare_home`] set up (containers/storage's driver `Cleanup`, run
    /// by `Shutdown` when no layer is mounted): overlay lazily unmounts its home when it is a
    /// mount point. Returns whether something was unmounted.
    fn cleanup(&self) -> Result<bool, DriverError> {
        Ok(false)
    }
}
