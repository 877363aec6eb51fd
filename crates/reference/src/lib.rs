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
