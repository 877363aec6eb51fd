//! Content-addressed blob store, modelled on containerd's content store.
//!
//! Owns the `blobs/<alg>/<hex>` tree and the `ingest/` area of writes in progress under one
//! root directory, and OCI image layout directories built on the same format.
//!
//! # Layout
//!
//! ```text
//! <root>/blobs/sha256/<hex>          committed blobs (read-only files, verified)
//! <root>/ingest/sha256-<hex>/data    bytes received so far for a blob being written
//! <root>/ingest/sha256-<hex>/lock    OFD-locked by the one writer of that blob
//! ```
//!
//! # Guarantees
//!
//! - **Never half-visible**: a blob is either absent or complete and verified. Commit flushes
//!   and `fdatasync`s the ingest, checks its size (when announced) and digest, renames it into
//!   `blobs/` and fsyncs the directory. A size or digest mismatch is a typed error
//!   ([`BlobError::SizeMismatch`], [`BlobError::DigestMismatch`]) carrying both values, and the
//!   ingest is removed.
//! - **Resumable**: a writer dropped without commit (a dropped connection, a crash) leaves its
//!   partial `data`; the next [`BlobStore::begin`] for that digest continues from its length
//!   ([`IngestWriter::offset`]) after rehashing the prefix. [`BlobStore::prune_ingests`]
//!   removes abandoned ones.
//! - **Singleflight**: one writer per digest across threads and processes (an exclusive
//!   open-file-description `fcntl` lock on the ingest's lock file; never `flock`). Others block
//!   in `begin` and then get [`Begin::Present`], or take over the ingest if the writer gave up.
//! - **Bounded memory**: writes stream through a fixed buffer; nothing buffers a whole blob.
//!
//! # Example
//!
//! ```
//! use std::io::Write;
//! use podstore_blobstore::{Begin, BlobStore};
//! use podstore_reference::Digest;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::Builder::new().tempdir_in("/dev/shm")?;
//! let store = BlobStore::open(dir.path())?;
//!
//! let content = b"hello, blob";
//! let digest = Digest::sha256_of(content);
//! match store.begin(&digest, Some(content.len() as u64))? {
//!     Begin::Present(info) => println!("already have {}", info.digest),
//!     Begin::Write(mut writer) => {
//!         // Continue after whatever an interrupted earlier attempt left.
//!         let start = writer.offset() as usize;
//!         writer.write_all(&content[start..])?;
//!         let info = writer.commit()?; // size and digest verified, then published
//!         assert_eq!(info.size, content.len() as u64);
//!     }
//! }
//! assert!(store.exists(&digest));
//! assert_eq!(std::fs::read(store.path(&digest))?, content);
//! # Ok(())
//! # }
//! ```

pub mod crash;
mod error;
mod lock;
pub mod oci_layout;
mod store;

pub use crash::crash_point;
pub use error::BlobError;
pub use oci_layout::{OciImageSelector, OciLayout, OciReference};
pub use store::{BLOBS_DIR, Begin, BlobInfo, BlobStore, INGEST_DIR, IngestWriter};
