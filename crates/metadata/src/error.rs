//! The store's error type, with containers/storage's meanings (`ErrImageUnknown`,
//! `ErrNameInUse`, …); every variant names the input it is about.

use std::path::{Path, PathBuf};

use podstore_layer::DriverError;

/// Which kind of record an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// A layer.
    Layer,
    /// An image.
    Image,
    /// A container.
    Container,
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordKind::Layer => "layer",
            RecordKind::Image => "image",
            RecordKind::Container => "container",
        })
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No layer has this ID, name or ID prefix (`ErrLayerUnknown`).
    #[error("layer not known: {id:?}")]
    LayerUnknown {
        /// What was looked up.
        id: String,
    },
    /// No image has this ID, name or ID prefix (`ErrImageUnknown`).
    #[error("image not known: {id:?}")]
    ImageUnknown {
        /// What was looked up.
        id: String,
    },
    /// No container has this ID, name, ID prefix or layer ID (`ErrContainerUnknown`).
    #[error("container not known: {id:?}")]
    ContainerUnknown {
        /// What was looked up.
        id: String,
    },
    /// A name is already used by another record of the same kind (`ErrDuplicateName`).
    #[error("{kind} name {name:?} is already in use by {owner}")]
    NameInUse {
        /// Record kind.
        kind: RecordKind,
        /// The name.
        name: String,
        /// ID of the record holding it.
        owner: String,
    },
    /// An ID is already used (`ErrDuplicateID`, `ErrLayerExists`, …).
    #[error("{kind} ID {id:?} is already in use")]
    IdInUse {
        /// Record kind.
        kind: RecordKind,
        /// The ID.
        id: String,
    },
    /// An ID prefix matches more than one record.
    #[error("{kind} ID prefix {prefix:?} is ambiguous")]
    AmbiguousPrefix {
        /// Record kind.
        kind: RecordKind,
        /// The prefix.
        prefix: String,
    },
    /// An ID is empty or contains characters containers/storage forbids.
    #[error("invalid {kind} ID {id:?}: {reason}")]
    InvalidId {
        /// Record kind.
        kind: RecordKind,
        /// The ID.
        id: String,
        /// Why.
        reason: &'static str,
    },
    /// An ID map with an empty range or a range past the last ID.
    #[error("invalid ID map {map:?}: range {range:?} is empty or runs past the last ID")]
    InvalidIdMap {
        /// The whole map given.
        map: Vec<podstore_layer::IdMap>,
        /// The offending range.
        range: podstore_layer::IdMap,
    },
    /// A layer still has child layers (`ErrLayerHasChildren`).
    #[error("layer {id} has child layers {children:?}")]
    LayerHasChildren {
        /// The layer.
        id: String,
        /// Its children.
        children: Vec<String>,
    },
    /// A layer is the top layer of images or the layer of containers (`ErrLayerUsedByImage`,
    /// `ErrLayerUsedByContainer`).
    #[error("layer {id} is in use by {users:?}")]
    LayerInUse {
        /// The layer.
        id: String,
        /// Images or containers using it.
        users: Vec<String>,
    },
    /// A layer's parent would be a container's read-write layer (`ErrParentIsContainer`).
    #[error("layer {parent} is the layer of container {container} and cannot be a parent")]
    ParentIsContainer {
        /// The requested parent layer.
        parent: String,
        /// The container owning it.
        container: String,
    },
    /// An image is used by containers (`ErrImageUsedByContainer`).
    #[error("image {id} is in use by containers {containers:?}")]
    ImageInUse {
        /// The image.
        id: String,
        /// Containers using it.
        containers: Vec<String>,
    },
    /// A layer is still mounted (`ErrLayerMounted`-like refusals).
    #[error("layer {id} is mounted ({count} references)")]
    LayerMounted {
        /// The layer.
        id: String,
        /// Its mount count.
        count: i64,
    },
    /// `shutdown` without `force` found layers still mounted (containers/storage's
    /// `ErrLayerUsedByContainer`, "a layer is mounted"); the driver home stays as it is.
    #[error("a layer is mounted: {ids:?}")]
    LayersMounted {
        /// The mounted layers.
        ids: Vec<String>,
    },
    /// No big-data item with this key.
    #[error("{kind} {id} has no big-data item {key:?}")]
    BigDataUnknown {
        /// Record kind.
        kind: RecordKind,
        /// Record ID.
        id: String,
        /// The key.
        key: String,
    },
    /// A big-data key cannot be stored as a file.
    #[error("invalid big-data key {key:?}: {reason}")]
    InvalidBigDataKey {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A value that must be a valid digest is not.
    #[error("invalid digest for {what}: {source}")]
    InvalidDigest {
        /// What the digest was for.
        what: String,
        /// The parse error.
        #[source]
        source: podstore_reference::DigestError,
    },
    /// The layer's content did not hash to the digest the caller expected.
    #[error("layer {id}: expected uncompressed digest {expected}, got {actual}")]
    DiffDigestMismatch {
        /// The layer.
        id: String,
        /// What the caller said.
        expected: String,
        /// What the content hashed to.
        actual: String,
    },
    /// Image metadata must be JSON (containers/image unmarshals it).
    #[error("metadata for image {id} is not JSON: {reason}")]
    InvalidMetadata {
        /// The image.
        id: String,
        /// The parse error.
        reason: String,
    },
    /// A records file exists but cannot be decoded. It is left untouched.
    #[error("loading {path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Two records of a kind share a name, found without a write lock to repair it.
    #[error("{kind} name {name:?} is used by more than one record in {path}")]
    DuplicateNames {
        /// Record kind.
        kind: RecordKind,
        /// The name.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// The layer has no tar-split data, so its original tar cannot be rebuilt.
    #[error("layer {id} has no tar-split data at {path}")]
    NoTarSplit {
        /// The layer.
        id: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// Rebuilding a layer's tar from its tar-split failed.
    #[error("rebuilding the diff of layer {id}: {reason}")]
    Diff {
        /// The layer.
        id: String,
        /// What failed.
        reason: String,
    },
    /// The driver is not one podstore implements, or not available yet.
    #[error("storage driver {name:?} is not supported")]
    UnsupportedDriver {
        /// The driver name.
        name: String,
    },
    /// storage.conf could not be read or parsed.
    #[error("storage configuration {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A token write was attempted without the write lock (a bug in the caller).
    #[error("lock {path} is not held for writing")]
    LockNotHeldForWrite {
        /// The lock file.
        path: PathBuf,
    },
    /// A layer driver failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
    /// A file-system operation failed.
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
}

/// Shorthand for an [`Error::Io`].
pub(crate) fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A store result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
