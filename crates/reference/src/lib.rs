//! The bottom of podstore: image references (names, tags, digests) as containers/image parses
//! them, content digests, registries.conf and short-name resolution.
//!
//! Invariant: this crate does no I/O beyond reading configuration files, and never touches the
//! network.

pub mod digest;

pub use digest::{Algorithm, Digest, DigestError, DigestMismatch, Digester, DigestingReader, Verifier};
