//! `RegistryError`: every way talking to a registry can fail, each naming the registry,
//! repository, reference or digest involved.

use podstore_reference::Digest;

/// Errors of the registry client. Every variant names what it was working on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The `/v2/` ping failed on every scheme that was allowed.
    #[error("pinging container registry {registry}: {message}")]
    Ping {
        /// Registry host (`host[:port]`).
        registry: String,
        /// What went wrong on the last scheme tried.
        message: String,
    },
    /// The registry or its token server refused the credentials (401/403).
    #[error("unauthorized: access to {registry}/{repository} denied: {message}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository path (empty for requests not tied to one).
        repository: String,
        /// The registry's explanation (error code and message), or the token server's.
        message: String,
    },
    /// The manifest does not exist (404 or `MANIFEST_UNKNOWN`).
    #[error("reading manifest {reference} in {registry}/{repository}: manifest unknown: {message}")]
    ManifestUnknown {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// Tag or digest asked for.
        reference: String,
        /// The registry's message.
        message: String,
    },
    /// The blob does not exist (404 or `BLOB_UNKNOWN`).
    #[error("fetching blob {digest} from {registry}/{repository}: blob unknown: {message}")]
    BlobUnknown {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The blob's digest.
        digest: Digest,
        /// The registry's message.
        message: String,
    },
    /// Content did not hash to the digest it was fetched by; nothing was committed.
    #[error(
        "digest mismatch for {what} from {registry}/{repository}: expected {expected}, got {actual}"
    )]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// `manifest` or `blob`.
        what: &'static str,
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },
    /// A blob had a different size than its descriptor says; nothing was committed.
    #[error(
        "blob size mismatch for {digest} from {registry}/{repository}: expected {expected} bytes, got {actual}"
    )]
    SizeMismatch {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The blob's digest.
        digest: Digest,
        /// Size from the descriptor.
        expected: u64,
        /// Bytes received (or announced by the server).
        actual: u64,
    },
    /// A manifest (or config-sized blob) is larger than the cap.
    #[error(
        "reading {reference} in {registry}/{repository}: exceeded maximum allowed size of {limit} bytes"
    )]
    TooLarge {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// Tag or digest.
        reference: String,
        /// The cap in bytes.
        limit: u64,
    },
    /// The registry served a Docker schema1 manifest, which podstore refuses.
    #[error(
        "unsupported manifest type {media_type:?} for {registry}/{repository}:{reference}: Docker schema1 manifests are not supported (rebuild or re-push the image with a current tool)"
    )]
    UnsupportedSchema1 {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// Tag or digest.
        reference: String,
        /// The Content-Type received.
        media_type: String,
    },
    /// The registry served a manifest with a media type podstore does not handle.
    #[error("unsupported manifest type {media_type:?} for {registry}/{repository}:{reference}")]
    UnsupportedMediaType {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// Tag or digest.
        reference: String,
        /// The Content-Type received (empty when missing).
        media_type: String,
    },
    /// A manifest or index body could not be understood.
    #[error("invalid manifest {reference}: {reason}")]
    InvalidManifest {
        /// Tag or digest (or `registry/repository:ref`).
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No entry of an index matches the wanted platform.
    #[error(
        "no image found in {kind} for architecture {architecture:?}, variant {variant:?}, OS {os:?}"
    )]
    NoMatchingPlatform {
        /// `manifest list` or `image index`.
        kind: &'static str,
        /// Wanted OS.
        os: String,
        /// Wanted architecture.
        architecture: String,
        /// Wanted variant (empty for none).
        variant: String,
    },
    /// No bytes arrived for longer than the stall timeout.
    #[error(
        "download of {what} from {registry}/{repository} stalled: no data for {seconds} s after {bytes} bytes"
    )]
    Stalled {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What was being fetched (digest or reference).
        what: String,
        /// The stall timeout in seconds.
        seconds: u64,
        /// Bytes received before the stall.
        bytes: u64,
    },
    /// A body arrived slower than [`crate::ClientOptions::min_transfer_rate`] over a whole
    /// stall-timeout window (a slowloris).
    #[error(
        "download of {what} from {registry}/{repository} is too slow: {rate} bytes/s after {bytes} bytes"
    )]
    TooSlow {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// What was being fetched (digest or reference).
        what: String,
        /// The rate seen, bytes per second.
        rate: u64,
        /// Bytes received so far.
        bytes: u64,
    },
    /// Retries of a request (connection errors, 5xx, 429) were exhausted.
    #[error("giving up on {url} after {attempts} attempts: {last}")]
    TooManyRetries {
        /// The request URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Resuming an interrupted blob download failed.
    #[error("resuming {digest} from {registry}/{repository} at byte {offset}: {reason}")]
    ResumeFailed {
        /// Registry host.
        registry: String,
        /// Repository path.
        repository: String,
        /// The blob's digest.
        digest: Digest,
        /// The byte offset the resume asked for.
        offset: u64,
        /// Why it failed.
        reason: String,
    },
    /// Every external URL of a descriptor was tried and failed (the registry is not tried then).
    #[error("failed fetching external blob {digest} from all urls: {}", .errors.join("; "))]
    ExternalUrlsFailed {
        /// The blob.
        digest: Digest,
        /// Each URL with its error, in order.
        errors: Vec<String>,
    },
    /// Too many redirects, or a redirect without a usable `Location`.
    #[error("redirect from {url}: {reason}")]
    Redirect {
        /// The URL that redirected.
        url: String,
        /// What was wrong.
        reason: String,
    },
    /// TLS configuration (certs.d) could not be loaded, or the TLS setup failed.
    #[error("TLS configuration for {registry}: {message}")]
    Tls {
        /// Registry host.
        registry: String,
        /// What went wrong (file names included).
        message: String,
    },
    /// An unexpected HTTP status.
    #[error("{method} {url}: unexpected HTTP status {status}: {message}")]
    Http {
        /// Request method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The registry's error text.
        message: String,
    },
    /// A transport error that is not retried (or a body error outside a blob download).
    #[error("{url}: {message}")]
    Transport {
        /// The request URL.
        url: String,
        /// The error chain as text.
        message: String,
    },
    /// Looking up credentials failed (unreadable auth file, failing helper).
    #[error("getting credentials for {key}: {message}")]
    Credentials {
        /// The lookup key (`host/path`).
        key: String,
        /// What went wrong.
        message: String,
    },
    /// The blob sink (blob store) failed to accept, verify or commit the data.
    #[error("storing blob {digest}: {message}")]
    Store {
        /// The blob's digest.
        digest: Digest,
        /// The sink's error.
        message: String,
    },
    /// An input (registry host, repository, URL) is malformed.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidInput {
        /// What kind of input.
        what: &'static str,
        /// The input.
        input: String,
        /// Why.
        reason: String,
    },
    /// The endpoint is blocked in registries.conf.
    #[error("registry {registry} is blocked in registries.conf")]
    Blocked {
        /// The blocked registry host or prefix.
        registry: String,
    },
    /// Every pull source (mirrors, then the primary) failed.
    #[error("(Mirrors also failed: {mirrors}): {primary}: {error}", mirrors = .mirrors.iter().map(|(r, e)| format!("[{r}: {e}]")).collect::<Vec<_>>().join("\n"))]
    AllSourcesFailed {
        /// Each mirror's physical reference and error, in order.
        mirrors: Vec<(String, RegistryError)>,
        /// The primary's physical reference.
        primary: String,
        /// The primary's error.
        #[source]
        error: Box<RegistryError>,
    },
}

impl RegistryError {
    /// Whether this is a "manifest unknown" error (what mirror fallback and sigstore lookups test).
    pub fn is_manifest_unknown(&self) -> bool {
        matches!(self, RegistryError::ManifestUnknown { .. })
    }

    /// Whether this error is an authentication / authorization failure.
    pub fn is_unauthorized(&self) -> bool {
        match self {
            RegistryError::Unauthorized { .. } => true,
            RegistryError::AllSourcesFailed { error, .. } => error.is_unauthorized(),
            _ => false,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
