//! The image service's error type: CRI-O's error values (`ErrCannotParseImageID`,
//! `ErrImageMultiplyTagged`, `ErrNoRegistriesConfigured`, `ErrInvalidImageName`) as typed
//! variants, plus "image not known" and the failures of the layers below, each naming the input.

use podstore_reference::NO_REGISTRIES_CONFIGURED;

/// An image-service failure. Every variant names the input it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// CRI-O's `ErrCannotParseImageID`: a 64-hex string that is no local image's ID was given
    /// to `resolve_names`.
    #[error("cannot parse an image ID: {input:?} is not the ID of a local image")]
    CannotParseImageId {
        /// The offending input.
        input: String,
    },
    /// CRI-O's `ErrImageMultiplyTagged`. Kept for API parity: like CRI-O after 2023, no code
    /// path returns it (untagging removes exactly one name, see `untag_image`).
    #[error("image still has multiple names applied: {input:?}")]
    ImageMultiplyTagged {
        /// The offending input.
        input: String,
    },
    /// CRI-O's `ErrNoRegistriesConfigured` (its exact message, then the input).
    #[error("{NO_REGISTRIES_CONFIGURED} (resolving {input:?})")]
    NoRegistriesConfigured {
        /// The unqualified name.
        input: String,
    },
    /// CRI-O's `ErrInvalidImageName`: an empty or otherwise unusable image name.
    #[error("invalid image name {input:?}: {reason}")]
    InvalidImageName {
        /// The offending input.
        input: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No local image has this name, ID or ID prefix (containers/storage's `ErrImageUnknown`).
    #[error("image not known: {input:?}")]
    ImageNotKnown {
        /// What was looked up.
        input: String,
    },
    /// A local operation (status, list filter, untag) was given a remote transport; CRI-O
    /// used to contact the registry here (crio-storage-behavior §10.10).
    #[error(
        "{input:?} names an image in the {transport:?} transport; only local images can be used here"
    )]
    NotLocal {
        /// The offending input.
        input: String,
        /// The transport it names.
        transport: String,
    },
    /// The transport named by the input is unknown or not supported for this operation.
    #[error("unsupported transport {transport:?} in {input:?}")]
    UnsupportedTransport {
        /// The offending input.
        input: String,
        /// The transport.
        transport: String,
    },
    /// The input is not a valid image reference.
    #[error("invalid image reference {input:?}: {source}")]
    InvalidReference {
        /// The offending input.
        input: String,
        /// The parse error.
        #[source]
        source: Box<podstore_reference::ReferenceError>,
    },
    /// Short-name resolution failed (blocked registries, ambiguous short name, …).
    #[error("resolving {input:?}: {source}")]
    Resolve {
        /// The offending input.
        input: String,
        /// The resolution error.
        #[source]
        source: Box<podstore_reference::ResolveError>,
    },
    /// registries.conf could not be loaded.
    #[error("loading registries configuration: {source}")]
    RegistriesConf {
        /// The configuration error (it names the file).
        #[source]
        source: Box<podstore_reference::RegistriesConfError>,
    },
    /// The registries configuration gives no pull source for the reference (all blocked, or a
    /// bad mirror rewrite).
    #[error("no pull source for {input:?}: {source}")]
    PullSource {
        /// The reference.
        input: String,
        /// Why.
        #[source]
        source: Box<podstore_reference::PullSourceError>,
    },
    /// The image is used by containers and cannot be removed.
    #[error("image {id} ({input:?}) is in use by containers {containers:?}")]
    ImageInUse {
        /// What was asked for.
        input: String,
        /// The image ID.
        id: String,
        /// Containers using it.
        containers: Vec<String>,
    },
    /// The image's stored data is inconsistent (bad manifest, config, unknown layer size…).
    #[error("image {id}: {reason}")]
    BadImage {
        /// The image ID.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest or config from a pull source is unusable.
    #[error("image {source_name}: {reason}")]
    BadSource {
        /// The source being pulled.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer download received no bytes for [`crate::PullOptions::stall_timeout`]; the
    /// download was abandoned and its staged layer removed.
    #[error("pulling {input:?}: layer {layer} (blob {blob}) stalled: no data for {seconds} s")]
    PullStalled {
        /// The image being pulled.
        input: String,
        /// The store layer ID.
        layer: String,
        /// The layer blob's digest.
        blob: String,
        /// The timeout, in seconds.
        seconds: u64,
    },
    /// The source's manifest is a Docker schema1 manifest, which is not pulled.
    #[error(
        "image {source_name}: the manifest is a Docker schema1 manifest ({media_type}), which \
         podstore does not pull; push the image with a schema2 or OCI manifest"
    )]
    Schema1Unsupported {
        /// The source being pulled.
        source_name: String,
        /// The manifest's media type.
        media_type: String,
    },
    /// An image with the pulled config's ID exists but has a different top layer.
    #[error(
        "image {id} already exists, but uses a different top layer ({existing:?}, pulled {pulled:?})"
    )]
    DifferentTopLayer {
        /// The image ID.
        id: String,
        /// Its top layer.
        existing: String,
        /// The pulled image's top layer.
        pulled: String,
    },
    /// A layer of a pull could not be created: its blob did not unpack (a bad or hostile tar,
    /// a truncated or corrupt compressed stream, a decompression bomb, an entry escaping the
    /// layer), its DiffID is not the config's, or the store refused it. The staged layer was
    /// removed; nothing of it is visible.
    #[error("pulling {input:?}: layer {layer} (blob {blob}): {source}")]
    Layer {
        /// The image being pulled.
        input: String,
        /// The store layer ID.
        layer: String,
        /// The layer blob's digest.
        blob: String,
        /// The store's error.
        #[source]
        source: Box<podstore_metadata::Error>,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] podstore_metadata::Error),
    /// The registry failed (unknown image, authentication, network, digest mismatch…).
    #[error("pulling {input:?}: {source}")]
    Registry {
        /// The reference being pulled.
        input: String,
        /// The registry error.
        #[source]
        source: Box<podstore_registry::RegistryError>,
    },
    /// The blob store or an OCI layout failed.
    #[error("{input:?}: {source}")]
    Blob {
        /// The source or digest involved.
        input: String,
        /// The blob-store error.
        #[source]
        source: Box<podstore_blobstore::BlobError>,
    },
    /// A background task panicked or was cancelled.
    #[error("{what} for {input:?} failed: {reason}")]
    Task {
        /// What the task did.
        what: &'static str,
        /// The input it worked on.
        input: String,
        /// The join error.
        reason: String,
    },
}

impl ImageError {
    /// Whether this is "image not known".
    pub fn is_image_not_known(&self) -> bool {
        matches!(self, ImageError::ImageNotKnown { .. })
    }
}

/// An image-service result.
pub type Result<T, E = ImageError> = std::result::Result<T, E>;
