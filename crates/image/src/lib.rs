//! CRI-O's ImageServer: resolve short names, pull images into the store, list them, report their
//! status, untag and remove them.
//!
//! * [`ImageService`] (the seed's `ImageServer`), built from [`ImageServiceOptions`]
//!   (`GetImageService`): [`ImageService::store`], [`ImageService::resolve_names`],
//!   [`ImageService::list_images`], [`ImageService::image_status`],
//!   [`ImageService::untag_image`], [`ImageService::prepare_image`],
//!   [`ImageService::pull_image`];
//! * [`ImageResult`] (every field of the seed's `ImageResult`) and the pure computations behind
//!   it in [`result`];
//! * [`ImageError`]: the seed's error values as typed variants;
//! * [`lookup`]: how a local image string is interpreted.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use podstore_image::{ImageService, ImageServiceOptions, PullOptions};
//! use podstore_metadata::{Store, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(&StoreOptions::new("/var/lib/containers/storage", "/run/containers/storage", "overlay"))?;
//! let images = ImageService::new(Arc::new(store), ImageServiceOptions::default())?;
//! // a short name goes through registries.conf's search list, as CRI-O resolves it
//! let candidates = images.resolve_names("busybox")?;
//! let pulled = images.pull_image_blocking(&candidates[0], &PullOptions::default())?;
//! let status = images.image_status(&pulled.id)?;
//! println!("{} {:?} {:?} bytes, user {:?}", status.id, status.repo_tags, status.size, status.user);
//! images.untag_image(&candidates[0])?; // the last name goes: the image is deleted
//! # Ok(())
//! # }
//! ```
//!
//! Semantics follow crio-storage-behavior §1–§7 with the later fixes of §10: local operations
//! never contact a registry, names are parsed strictly, untag removes exactly one name, the
//! image cache holds only immutable per-ID facts.
//!
//! Invariant: an image record is created only after every one of its layers is committed.
//! Invariant: the cache never holds names, tags or digests; they are recomputed from the
//! current record on every call.

pub mod error;
pub mod lookup;
pub mod pull;
pub mod result;
pub mod service;
mod stream;

pub use error::{ImageError, Result};
pub use lookup::{FoundImage, LocalReference, find_local_image, parse_local_reference};
pub use pull::{PreparedImage, PullEvent, PullOptions, PulledImage, layer_ids};
pub use result::{ImageFacts, ImageResult};
pub use service::{ImageService, ImageServiceOptions};
