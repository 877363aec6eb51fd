//! OCI distribution / Docker registry v2 client: authentication, manifests and indexes, and
//! resumable, verified blob downloads into the blob store.
//!
//! * [`RegistryClient`] talks to one registry endpoint: `/v2/` ping and scheme detection (HTTPS,
//!   plain-HTTP fallback only for insecure endpoints), Basic and bearer-token auth (token cache
//!   per scope with a 60 s minimum lifetime, identity tokens), retries of connection errors,
//!   5xx and 429 (`Retry-After`), redirects that drop `Authorization` on a host change, and a
//!   semaphore bounding concurrent requests per registry.
//! * Manifests: [`RegistryClient::get_manifest`] (4 MiB cap, type from `Content-Type`, digest
//!   verified for by-digest fetches, schema1 refused) and
//!   [`RegistryClient::get_image_manifest`] (platform selection from an index, §3.6).
//! * Blobs: [`RegistryClient::pull_blob`] streams into a [`BlobSink`] through a fixed buffer,
//!   verifies size and digest before commit, resumes with `Range`, reports [`ProgressEvent`]s and
//!   fails with [`RegistryError::Stalled`] when no bytes arrive for the stall timeout.
//! * [`Registries`] builds clients with certs.d TLS ([`CertDirs`]) and auth-file credentials
//!   ([`AuthFiles`]) and tries pull sources (mirrors, then the primary) in order.
//!
//! Invariant: no blob becomes visible in a sink unless its size and digest were verified.
//! Invariant: secrets ([`Secret`]) never appear in `Debug` output, errors or logs.
//!
//! # Example: pull a manifest and one blob
//!
//! ```no_run
//! use podstore_registry::{
//!     BlobRef, ManifestTarget, MemorySink, PlatformSelector, RegistryClient, EndpointConfig,
//!     ClientOptions,
//! };
//!
//! # async fn run() -> Result<(), podstore_registry::RegistryError> {
//! let client = RegistryClient::new(
//!     EndpointConfig { registry: "127.0.0.1:5000".into(), insecure: true, ..Default::default() },
//!     ClientOptions::default(),
//! )?;
//! let target = ManifestTarget::Tag("latest".into());
//! let (_top, manifest) = client
//!     .get_image_manifest("bench/busybox", &target, &PlatformSelector::host())
//!     .await?;
//! println!("{} {}", manifest.media_type(), manifest.digest);
//!
//! // The config blob's digest, from the manifest JSON.
//! let json: serde_json::Value = serde_json::from_slice(&manifest.bytes).unwrap_or_default();
//! let digest = json["config"]["digest"].as_str().unwrap_or_default().parse().map_err(|e| {
//!     podstore_registry::RegistryError::InvalidManifest {
//!         reference: manifest.digest.to_string(),
//!         reason: format!("{e}"),
//!     }
//! })?;
//! let size = json["config"]["size"].as_u64();
//! let sink = MemorySink::new();
//! let (tx, mut rx) = tokio::sync::mpsc::channel(64);
//! let pulled = client
//!     .pull_blob("bench/busybox", &BlobRef { digest, size }, &sink, Some(&tx))
//!     .await?;
//! drop(tx);
//! while let Some(event) = rx.recv().await {
//!     println!("{:?} {}/{:?}", event.state, event.done, event.total);
//! }
//! println!("stored {} ({} bytes)", pulled.digest, pulled.size);
//! # Ok(())
//! # }
//! ```

// `RegistryError` names registry, repository and digests in its variants (about 150 bytes);
// errors are off the hot path, so the size is accepted rather than boxing every field.
#![allow(clippy::result_large_err)]

pub mod auth;
pub mod blob;
pub mod client;
pub mod credentials;
pub mod endpoint;
pub mod error;
pub mod media;
pub mod platform;
pub mod secret;
pub mod sink;
pub mod store;
pub mod tls;

pub use auth::{BearerToken, Challenge, Credentials};
pub use blob::{BlobRef, ProgressEvent, ProgressState, PulledBlob};
pub use client::{
    ClientOptions, EndpointConfig, Manifest, ManifestTarget, RegistryClient, RetryPolicy,
};
pub use credentials::AuthFiles;
pub use endpoint::{AccessConfig, ImageLocation, PullSource, Registries, Resolved};
pub use error::{RegistryError, Result};
pub use media::ManifestKind;
pub use platform::{IndexEntry, Platform, PlatformSelector};
pub use secret::Secret;
pub use sink::{BlobIngest, BlobSink, MemoryIngest, MemorySink, SinkBegin, SinkError};
pub use tls::{CertDirs, TlsMaterial};
