//! CRI-O's RuntimeServer: pod sandboxes and containers created from images, CRI-O's per-container
//! metadata JSON, root filesystem mounts, and per-container work and run directories.
//!
//! [`RuntimeService`] is the seed's `RuntimeServer` (built from an image service, as
//! `GetRuntimeService`), with the later CRI-O fixes: idempotent delete, tolerant forced stop,
//! the caller's image ID used as given, the pause image looked up by its canonical reference
//! after a pull, atomic layer-name updates. [`RuntimeContainerMetadata`] is CRI-O's metadata
//! record with its exact encoding and decoding rules.
//!
//! Per-container UID/GID maps are passed to the store, which puts the container's layer on an
//! ID-shifted copy of the image's top layer (containers/storage's mapped top layers).
//!
//! # Example
//!
//! A pod sandbox (its infra container) and a container in it, mounted and removed:
//!
//! ```no_run
//! use std::sync::Arc;
//! use podstore_image::{ImageService, ImageServiceOptions};
//! use podstore_metadata::{Store, StoreOptions};
//! use podstore_runtime::{ContainerRequest, PodSandboxRequest, RuntimeService};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(&StoreOptions::new("/var/lib/containers/storage", "/run/containers/storage", "overlay"))?;
//! let runtime = RuntimeService::new(ImageService::new(Arc::new(store), ImageServiceOptions::default())?);
//! let pod_id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
//! // the pause image is pulled when absent
//! runtime.create_pod_sandbox(&PodSandboxRequest {
//!     pod_name: "web".into(),
//!     pod_id: pod_id.into(),
//!     image_name: "registry.k8s.io/pause:3.9".into(),
//!     container_name: "web-infra".into(),
//!     ..PodSandboxRequest::default()
//! })?;
//! let app = runtime.create_container(&ContainerRequest {
//!     pod_name: "web".into(),
//!     pod_id: pod_id.into(),
//!     image_name: "docker.io/library/busybox:latest".into(),
//!     container_name: "web-app".into(),
//!     container_id: "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210".into(),
//!     metadata_name: "app".into(),
//!     ..ContainerRequest::default()
//! })?;
//! let rootfs = runtime.start_container(&app.id)?;
//! println!("{} at {}, work dir {}", app.id, rootfs.display(), runtime.get_work_dir(&app.id)?.display());
//! runtime.stop_container(&app.id)?;
//! runtime.delete_container(&app.id)?;
//! runtime.remove_pod_sandbox(pod_id)?;
//! # Ok(())
//! # }
//! ```

pub mod container_metadata;
pub mod error;
pub mod labels;
pub mod service;

pub use container_metadata::{MetadataDecodeError, RuntimeContainerMetadata};
pub use error::{Result, RuntimeError};
pub use labels::Labels;
pub use podstore_layer::{IdMap, IdMappings};
pub use service::{ContainerInfo, ContainerRequest, PodSandboxRequest, RuntimeService};

/// The README's Rust examples, compiled as doctests of this crate (they use the image,
/// metadata and runtime crates, all dependencies of this one).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
