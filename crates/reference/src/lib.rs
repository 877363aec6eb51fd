//! The bottom of podstore: image references (names, tags, digests) as containers/image parses
//! them, content digests, registries.conf, CRI-O's insecure-registry rule and short-name
//! resolution.
//!
//! * [`digest`]: [`Digest`], streaming [`Digester`] / [`Verifier`] / [`DigestingReader`];
//! * [`reference`](mod@reference): [`Reference`] (`parse_normalized`, familiar and full forms) and the
//!   image-ID helpers [`is_full_image_id`] and [`is_id_prefix_candidate`];
//! * [`registries`]: [`RegistriesConfig`] (registries.conf v2, drop-ins, aliases) and the
//!   ordered pull [`Endpoint`]s of a reference;
//! * [`insecure`]: [`InsecureRegistries`], CRI-O's `host[:port]` / CIDR insecure decision;
//! * [`resolve`]: [`resolve_names`], CRI-O's `ResolveNames`.
//!
//! # Example
//!
//! ```
//! use podstore_reference::{Digest, Reference};
//!
//! let reference = Reference::parse_normalized("busybox:1.36")?;
//! assert_eq!(reference.domain(), "docker.io");
//! assert_eq!(reference.path(), "library/busybox");
//! assert_eq!(reference.tag(), Some("1.36"));
//! assert_eq!(reference.familiar(), "busybox:1.36");
//!
//! let digest = Digest::sha256_of(b"hello");
//! assert_eq!(digest, "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824".parse()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Invariant: this crate does no I/O beyond reading configuration files, and never touches the
//! network (no DNS either).
//!
//! Invariant: no input, however malformed, makes a function of this crate panic.

pub mod digest;
pub mod insecure;
pub mod reference;
pub mod registries;
pub mod resolve;

pub use digest::{
    Algorithm, Digest, DigestError, DigestMismatch, Digester, DigestingReader, Verifier,
};
pub use insecure::{InsecureRegistries, IpNetwork};
pub use reference::{
    Reference, ReferenceError, ReferenceErrorKind, is_full_image_id, is_id_prefix_candidate,
    is_short_name, is_valid_tag,
};
pub use registries::{
    Alias, Endpoint, LoadOptions, Mirror, PullFromMirror, PullSourceError, RegistriesConfError,
    RegistriesConfig, Registry, ShortNameMode,
};
pub use resolve::{
    NO_REGISTRIES_CONFIGURED, Resolution, ResolveError, ResolveOptions, ResolvedVia, is_qualified,
    resolve_names,
};
