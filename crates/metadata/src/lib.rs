//! The Store: the layer, image and container records of a containers/storage graph root, their
//! lock protocol, and the operations the image and runtime services need.
//!
//! Byte-compatible with containers/storage 1.43 (podman 4.3, skopeo 1.9): the same files, JSON
//! bytes, lock files, last-writer tokens and incomplete-layer protocol, so podman and podstore
//! can share a store while both are running.
//!
//! Invariant: every records file is written atomically under its lock's write side, with a
//! fresh 64-byte token written first; cached records are used only after the token (and for
//! `layers.json` the mtime) has been re-checked under the lock. A records file that cannot be
//! decoded is an error and is never overwritten.

pub mod config;
pub mod error;
pub mod fsutil;
pub mod gotime;
mod json;
pub mod lockfile;
mod recordfile;
pub mod records;
pub mod store;

pub use config::StoreOptions;
pub use error::{Error, RecordKind, Result};
pub use gotime::GoTime;
pub use records::{Container, Image, Layer, Mountpoint, is_manifest_key};
pub use store::{
    BigDataItem, ContainerOptions, ImageOptions, LayerCreateStats, LayerOptions, NamesOp,
    StagedBlob, Store,
};
