//! CRI-O's RuntimeServer: pod sandboxes and containers created from images, CRI-O's per-container
//! metadata JSON, root filesystem mounts, and per-container work and run directories.
//!
//! Built so far: [`RuntimeContainerMetadata`], CRI-O's metadata record with its exact encoding
//! and decoding rules. The service itself is issue 7.

pub mod container_metadata;

pub use container_metadata::{MetadataDecodeError, RuntimeContainerMetadata};
