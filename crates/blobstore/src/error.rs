//! The blob store's error type: every variant names the digest, path or input it is about.

use std::io;
use std::path::PathBuf;

use podstore_reference::{Digest, DigestError};

/// Why a blob store or OCI layout operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The data written for (or stored as) `digest` has a different size than expected.
    /// When raised by a commit, the ingest has been removed and no blob was committed.
    #[error("blob {digest}: size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The digest the data was written for.
        digest: Digest,
        /// The size the caller announced.
        expected: u64,
        /// The size actually found.
        actual: u64,
    },
    /// The data written did not hash to the expected digest. The ingest has been removed and
    /// no blob was committed.
    #[error("blob digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the data should have had.
        expected: Digest,
        /// The digest it actually had.
        actual: Digest,
    },
    /// A write would have grown the ingest of `digest` past its announced size; the write was
    /// refused (nothing of it was stored). Returned inside an [`io::Error`] of kind
    /// [`io::ErrorKind::InvalidData`] by the writer's `write`.
    #[error(
        "blob {digest}: writing {attempted} more bytes at offset {offset} exceeds the expected size of {expected} bytes"
    )]
    SizeExceeded {
        /// The digest being written.
        digest: Digest,
        /// The announced size.
        expected: u64,
        /// Bytes already written.
        offset: u64,
        /// Length of the refused write.
        attempted: u64,
    },
    /// A blob is larger than the caller's limit for it (e.g. a manifest over 4 MiB).
    #[error("blob {digest}: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The blob's digest.
        digest: Digest,
        /// Its (announced) size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// No committed blob has this digest.
    #[error("blob {digest} not found")]
    NotFound {
        /// The digest looked up.
        digest: Digest,
    },
    /// `truncate_to` was asked to grow the ingest instead of shrinking it.
    #[error("ingest of {digest}: cannot truncate to {requested} bytes, only {available} present")]
    InvalidTruncate {
        /// The digest being written.
        digest: Digest,
        /// The length asked for.
        requested: u64,
        /// The length present.
        available: u64,
    },
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"open"`, `"rename"`, `"fsync"`...).
        op: &'static str,
        /// The path it was done on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A digest found in an OCI layout (index.json or a descriptor) is not one podstore accepts.
    #[error("{}: invalid digest {input:?}: {source}", path.display())]
    InvalidDigest {
        /// The file the digest was read from.
        path: PathBuf,
        /// The offending digest text.
        input: String,
        /// Why it was refused.
        #[source]
        source: DigestError,
    },
    /// A directory is not a valid OCI image layout (missing or wrong `oci-layout`, bad index).
    #[error("{}: not a valid OCI image layout: {reason}", path.display())]
    InvalidLayout {
        /// The layout directory or the offending file in it.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file of an OCI layout could not be parsed or written.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// No manifest in the layout's index.json carries this `org.opencontainers.image.ref.name`.
    #[error("OCI layout {}: no image named {name:?}", path.display())]
    ImageNotFound {
        /// The layout directory.
        path: PathBuf,
        /// The name looked up.
        name: String,
    },
    /// The name matches only entries whose media type is not a manifest or index.
    #[error("OCI layout {}: image {name:?} matches unsupported manifest media types {media_types:?}", path.display())]
    UnsupportedMediaType {
        /// The layout directory.
        path: PathBuf,
        /// The name looked up.
        name: String,
        /// The media types of the matching entries.
        media_types: Vec<String>,
    },
    /// No name was given and the layout does not hold exactly one image.
    #[error("OCI layout {}: holds {count} images, a name or @index is needed to choose one", path.display())]
    AmbiguousImage {
        /// The layout directory.
        path: PathBuf,
        /// How many manifests index.json lists.
        count: usize,
    },
    /// An `@N` source index is past the end of index.json's manifests.
    #[error("OCI layout {}: index {index} is too large, only {count} entries available", path.display())]
    IndexOutOfRange {
        /// The layout directory.
        path: PathBuf,
        /// The index asked for.
        index: usize,
        /// How many manifests index.json lists.
        count: usize,
    },
    /// An `oci:` reference or image name does not follow containers/image's rules.
    #[error("invalid OCI layout reference {input:?}: {reason}")]
    InvalidReference {
        /// The offending input.
        input: String,
        /// What is wrong.
        reason: String,
    },
}

impl BlobError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> BlobError {
        BlobError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
