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

pub mod container_metadata;
pub mod error;
pub mod labels;
pub mod service;

pub use container_metadata::{MetadataDecodeError, RuntimeContainerMetadata};
pub use error::{Result, RuntimeError};
pub use labels::Labels;
pub use podstore_layer::{IdMap, IdMappings};
pub use service::{ContainerInfo, ContainerRequest, PodSandboxRequest, RuntimeService};
