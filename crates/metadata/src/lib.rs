//! The Store: the layer, image and container records of a containers/storage graph root, their
//! lock protocol, and the operations the image and runtime services need.
//!
//! Byte-compatible with containers/storage 1.43 (podman 4.3, skopeo 1.9): the same files, JSON
//! bytes, lock files, last-writer tokens and incomplete-layer protocol, so podman and podstore
//! can share a store while both are running.
//!
//! # What of the containers/storage 1.43 format is supported
//!
//! Supported (tested against skopeo 1.9, podman 4.3 and the `containers-storage` 1.43 CLI):
//! - `layers.json`, `images.json`, `containers.json`, `mountpoints.json`: every 1.43 key, in
//!   Go's order, omitempty rules, `created` always written, RFC 3339 nano times, sorted maps,
//!   `<>&` escaped, compact without trailing newline; files written by the tools re-save byte
//!   for byte. Readers accept missing keys, `null`s and any key case; unknown keys (HEAD's
//!   `toc-digest`, …) are kept and written back after the known keys.
//! - Lock files (`storage.lock`, `layers.lock`, `mountpoints.lock`, `images.lock`,
//!   `containers.lock`, `userns.lock` created): whole-file fcntl record locks, order storage <
//!   layers < images < containers with mountpoints innermost; the 64-byte 1.43 token written
//!   before every JSON save and checked (plus the `layers.json` mtime) before cached records
//!   are used.
//! - Atomic writes `.tmp-<base><digits>` + fdatasync + chmod 0600 + rename; big-data file
//!   names (`[.0-9a-z]` or `=`+base64); tar-split files written gzip'd and atomically.
//! - Incomplete-flag protocol for layer creation and deletion; recovery on open (incomplete
//!   layers and stale `.tmp-*` next to the records files removed under the owning lock, a
//!   record directory's `.tmp-*` when it is next written or by `repair`, duplicate names
//!   repaired under the write lock); undecodable JSON is a typed error and is never overwritten.
//! - Image digest rules (`digest`, manifest-key digests validated, `Digests` recomputed),
//!   names moving between records, names-history as 1.43 (AddNames appends), mount counts
//!   shared with podman, lookups by ID, name, unique prefix and container-by-layer.
//! - storage.conf lookup and keys for root (driver, graphroot, runroot, mountopt, remap-*).
//!
//! Not supported yet: per-container ID mappings and auto-userns (only store-wide maps are
//! recorded); `mapped-layers` creation; additional
//! (read-only) image stores; `Volatile`/`MountOpts` container flags at mount time; HEAD's
//! volatile/transient files; rootless storage.conf paths; layers from a template or diffs of
//! container layers without tar-split (`Diff` needs tar-split); the overlay driver's
//! self bind-mount and `Shutdown` (driver matters, see the layer crate).
//!
//! # Example
//!
//! Open the store podman uses (storage.conf as podman reads it) and list what it holds:
//!
//! ```no_run
//! use podstore_metadata::{Store, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(&StoreOptions::from_environment()?)?;
//! println!("{} on {}", store.graph_root().display(), store.driver_name());
//! for image in store.images()? {
//!     println!("image {} {:?} top layer {}", image.id, image.names, image.layer);
//! }
//! for container in store.containers()? {
//!     println!("container {} from image {}", container.id, container.image);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: every records file is written atomically under its lock's write side, with a
//! fresh 64-byte token written first; cached records are used only after the token (and for
//! `layers.json` the mtime) has been re-checked under the lock. A records file that cannot be
//! decoded is an error and is never overwritten.

pub mod check;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod gotime;
mod json;
pub mod lockfile;
mod recordfile;
pub mod records;
pub mod store;

pub use check::{CheckOptions, CheckReport, Finding, RepairReport};
pub use config::StoreOptions;
pub use error::{Error, RecordKind, Result};
pub use gotime::GoTime;
pub use json::write_string as write_go_json_string;
pub use records::{Container, Image, Layer, Mountpoint, is_manifest_key};
pub use store::{
    BigDataItem, ContainerOptions, IdMappingOptions, ImageOptions, ImageSnapshot, LayerCreateStats,
    LayerCreationLock, LayerOptions, NamesOp, RecordLoadCounts, STAGING_DIR, StagedBlob,
    StagedLayer, Store,
};
