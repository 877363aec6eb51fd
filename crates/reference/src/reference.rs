//! Image references (`[domain/]path[:tag][@digest]`) exactly as containers/image's fork of
//! docker/distribution's `reference` package parses them, and the image-ID helpers CRI-O uses.
//!
//! Two parsers exist, as upstream:
//!
//! * [`Reference::parse_normalized`] (also [`FromStr`]) is the one for user input
//!   (`ParseNormalizedNamed`): it refuses a bare 64-hex string, detects the registry domain (the
//!   first component is a domain only if it contains `.` or `:` or is exactly `localhost`),
//!   defaults to `docker.io`, rewrites `index.docker.io`, adds `library/` for one-component Docker
//!   Hub names, requires the repository path to be lowercase, and counts the 255-character name
//!   limit after normalisation.
//! * [`Reference::parse`] is the raw grammar parser (`Parse`): the first component is a domain
//!   whenever it is syntactically `host[:port]` and followed by `/`; no default domain.
//!
//! One deliberate difference from containers/image: a normalising parse whose detected domain is
//! not a valid `host[:port]` (`foo_bar.com/x`) is refused with
//! [`ReferenceErrorKind::InvalidFormat`], where containers/image silently returns a reference
//! with an empty domain that no registry operation can use.
//!
//! Digests inside references are validated with the semantic rules (only sha256, sha384 and
//! sha512, exact length, lowercase hex) after the grammar has matched, so the error precedence is
//! the upstream one: grammar, then name length, then digest.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The default registry domain (Docker Hub) of unqualified names.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy Docker Hub domain rewritten to [`DEFAULT_DOMAIN`] by normalisation.
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace Docker Hub official images live in.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The host the registry API of [`DEFAULT_DOMAIN`] is served from.
pub const DEFAULT_API_HOST: &str = "registry-1.docker.io";
/// The tag [`Reference::tag_or_latest`] adds.
pub const DEFAULT_TAG: &str = "latest";
/// Maximum length of a repository name (domain + `/` + path).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;
/// Maximum length of a tag.
pub const TAG_LENGTH_MAX: usize = 128;
/// Length of a full image ID (lowercase hex).
pub const IMAGE_ID_LENGTH: usize = 64;
/// Minimum length of an image-ID prefix CRI-O and containers/storage look up.
pub const MIN_ID_PREFIX_LENGTH: usize = 3;

/// What went wrong, without the input: lets tests and callers match on the kind of error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReferenceErrorKind {
    /// The input is empty (raw parser only).
    NameEmpty,
    /// The input does not match the reference grammar.
    InvalidFormat,
    /// The repository path has upper-case letters.
    NameNotLowercase,
    /// The name is longer than [`NAME_TOTAL_LENGTH_MAX`] characters.
    NameTooLong,
    /// The input is a 64-character hex string, which could be confused with an image ID.
    HexadecimalName,
    /// The digest part is well-formed but not a valid digest.
    InvalidDigest,
    /// A tag given to [`Reference::with_tag`] does not match the tag grammar.
    InvalidTag,
    /// [`Reference::parse_named`]: the input is valid but not in its fully-qualified form.
    NotCanonical,
}

/// Why a string is not a valid image reference. Every variant names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Empty input to the raw parser.
    #[error("repository name must have at least one component: {input:?}")]
    NameEmpty {
        /// The offending input.
        input: String,
    },
    /// The input does not match the grammar.
    #[error("invalid reference format: {input:?}")]
    InvalidFormat {
        /// The offending input.
        input: String,
    },
    /// Upper-case letters in the repository path.
    #[error("invalid reference format: repository name must be lowercase: {input:?}")]
    NameNotLowercase {
        /// The offending input.
        input: String,
    },
    /// The name is too long (counted after normalisation).
    #[error(
        "repository name must not be more than 255 characters: {input:?} has a {length}-character name"
    )]
    NameTooLong {
        /// The offending input.
        input: String,
        /// Length of its (normalised) name.
        length: usize,
    },
    /// A bare 64-character hex string.
    #[error("invalid repository name ({input}), cannot specify 64-byte hexadecimal strings")]
    HexadecimalName {
        /// The offending input.
        input: String,
    },
    /// The digest does not validate.
    #[error("invalid digest in reference {input:?}: {source}")]
    InvalidDigest {
        /// The offending input.
        input: String,
        /// Why the digest is invalid.
        source: DigestError,
    },
    /// A tag outside the tag grammar.
    #[error("invalid tag format: {input:?}")]
    InvalidTag {
        /// The offending tag.
        input: String,
    },
    /// Not the fully-qualified form of the reference it denotes.
    #[error("repository name must be canonical: {input:?} (canonical form {canonical:?})")]
    NotCanonical {
        /// The offending input.
        input: String,
        /// The canonical form of the same reference.
        canonical: String,
    },
}

impl ReferenceError {
    /// The kind of error, for matching.
    pub fn kind(&self) -> ReferenceErrorKind {
        match self {
            ReferenceError::NameEmpty { .. } => ReferenceErrorKind::NameEmpty,
            ReferenceError::InvalidFormat { .. } => ReferenceErrorKind::InvalidFormat,
            ReferenceError::NameNotLowercase { .. } => ReferenceErrorKind::NameNotLowercase,
            ReferenceError::NameTooLong { .. } => ReferenceErrorKind::NameTooLong,
            ReferenceError::HexadecimalName { .. } => ReferenceErrorKind::HexadecimalName,
            ReferenceError::InvalidDigest { .. } => ReferenceErrorKind::InvalidDigest,
            ReferenceError::InvalidTag { .. } => ReferenceErrorKind::InvalidTag,
            ReferenceError::NotCanonical { .. } => ReferenceErrorKind::NotCanonical,
        }
    }

    /// The input the error is about.
    pub fn input(&self) -> &str {
        match self {
            ReferenceError::NameEmpty { input }
            | ReferenceError::InvalidFormat { input }
            | ReferenceError::NameNotLowercase { input }
            | ReferenceError::NameTooLong { input, .. }
            | ReferenceError::HexadecimalName { input }
            | ReferenceError::InvalidDigest { input, .. }
            | ReferenceError::InvalidTag { input }
            | ReferenceError::NotCanonical { input, .. } => input,
        }
    }
}

/// An image reference: a repository name (`domain/path`) with an optional tag and an optional
/// digest.
///
/// Values built by [`Reference::parse_normalized`] always have a non-empty domain; only
/// [`Reference::parse`] can produce an empty one.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses user input the way `ParseNormalizedNamed` does (see the module docs).
    pub fn parse_normalized(input: &str) -> Result<Reference, ReferenceError> {
        if is_full_image_id(input) {
            return Err(ReferenceError::HexadecimalName {
                input: input.to_owned(),
            });
        }
        let (mut domain, mut remainder) = match input.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                (first.to_owned(), rest.to_owned())
            }
            _ => (DEFAULT_DOMAIN.to_owned(), input.to_owned()),
        };
        if domain == LEGACY_DEFAULT_DOMAIN {
            domain = DEFAULT_DOMAIN.to_owned();
        }
        if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
            remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
        }
        let remote_name = remainder.split(':').next().unwrap_or_default();
        if remote_name.to_lowercase() != remote_name {
            return Err(ReferenceError::NameNotLowercase {
                input: input.to_owned(),
            });
        }
        let full = format!("{domain}/{remainder}");
        let parsed = parse_raw(&full, input)?;
        if parsed.domain.is_empty() {
            // containers/image would return a domain-less reference here; see the module docs.
            return Err(ReferenceError::InvalidFormat {
                input: input.to_owned(),
            });
        }
        Ok(parsed)
    }

    /// Parses with the raw grammar (`Parse`): no default domain, no `library/`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        parse_raw(input, input)
    }

    /// `ParseNamed`: [`Reference::parse_normalized`], and the input must already be in the
    /// fully-qualified form ([`Display`](fmt::Display)) of the result. Used for mirror rewriting.
    pub fn parse_named(input: &str) -> Result<Reference, ReferenceError> {
        let parsed = Reference::parse_normalized(input)?;
        let canonical = parsed.to_string();
        if canonical != input {
            return Err(ReferenceError::NotCanonical {
                input: input.to_owned(),
                canonical,
            });
        }
        Ok(parsed)
    }

    /// `ParseDockerRef` (kubelet and containerd semantics): normalise; with both a tag and a
    /// digest keep only the digest; with neither add `:latest`.
    pub fn parse_docker_ref(input: &str) -> Result<Reference, ReferenceError> {
        Ok(Reference::parse_normalized(input)?
            .without_tag_if_digested()
            .tag_or_latest())
    }

    /// The registry domain (`host[:port]`), e.g. `docker.io`; empty only for raw-parsed input.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path without the domain, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository name, `domain/path` (just the path if the domain is empty).
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// True when the reference has neither a tag nor a digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The host the registry API is served from: the domain, except `docker.io`, whose API
    /// lives on `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        if self.domain == DEFAULT_DOMAIN {
            DEFAULT_API_HOST
        } else {
            &self.domain
        }
    }

    /// The same reference with `tag` (validated against the tag grammar); an existing digest is
    /// kept.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag {
                input: tag.to_owned(),
            });
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            ..self.clone()
        })
    }

    /// The same reference with `digest`; an existing tag is kept.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference without its tag.
    pub fn without_tag(&self) -> Reference {
        Reference {
            tag: None,
            ..self.clone()
        }
    }

    /// The same reference without its digest.
    pub fn without_digest(&self) -> Reference {
        Reference {
            digest: None,
            ..self.clone()
        }
    }

    /// The repository alone, without tag and digest (`TrimNamed`).
    pub fn trimmed(&self) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    /// `name:tag@digest` becomes `name@digest`, as CRI-O does with every reference it uses;
    /// anything else is returned unchanged.
    pub fn without_tag_if_digested(&self) -> Reference {
        if self.digest.is_some() {
            self.without_tag()
        } else {
            self.clone()
        }
    }

    /// `TagNameOnly`: adds the tag `latest` when there is neither a tag nor a digest.
    pub fn tag_or_latest(&self) -> Reference {
        if self.is_name_only() {
            Reference {
                tag: Some(DEFAULT_TAG.to_owned()),
                ..self.clone()
            }
        } else {
            self.clone()
        }
    }

    /// The familiar name: `docker.io/` dropped, and `library/` dropped from two-component paths.
    pub fn familiar_name(&self) -> String {
        if self.domain != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_owned(),
            _ => self.path.clone(),
        }
    }

    /// The familiar string: [`Reference::familiar_name`] with the tag and digest suffixes, for
    /// display only (`busybox:latest`).
    pub fn familiar(&self) -> String {
        let mut out = self.familiar_name();
        self.push_suffixes(&mut out);
        out
    }

    fn push_suffixes(&self, out: &mut String) {
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(&digest.to_string());
        }
    }
}

impl fmt::Display for Reference {
    /// The fully-qualified form `domain/path[:tag][@digest]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = self.name();
        self.push_suffixes(&mut out);
        f.write_str(&out)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    /// Same as [`Reference::parse_normalized`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse_normalized(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Reference::parse_normalized(&s).map_err(serde::de::Error::custom)
    }
}

/// True when `s` is a full image ID: exactly 64 lowercase hex characters.
pub fn is_full_image_id(s: &str) -> bool {
    s.len() == IMAGE_ID_LENGTH && is_lower_hex(s)
}

/// CRI-O's ID-prefix heuristic, the part that needs no store: `s` could be a prefix of an image
/// ID when it is 3 to 64 lowercase hex characters.
///
/// CRI-O then asks the store for `s` and uses the image only if its ID really starts with `s`
/// (so a name that happens to be hex, like `beef`, refers to the image whose ID starts with it
/// when there is one). Image IDs are lowercase hex, so anything else can never be a prefix.
pub fn is_id_prefix_candidate(s: &str) -> bool {
    (MIN_ID_PREFIX_LENGTH..=IMAGE_ID_LENGTH).contains(&s.len()) && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Tag grammar: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    match bytes.first() {
        Some(&first) if is_word(first) => {
            bytes.len() <= TAG_LENGTH_MAX
                && bytes[1..]
                    .iter()
                    .all(|&b| is_word(b) || b == b'.' || b == b'-')
        }
        _ => false,
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Path component: `[a-z0-9]+((\.|_|__|-*)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !is_alnum(first) || !is_alnum(last) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// Host label: `[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]`.
fn is_host_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-')
        }
        _ => false,
    }
}

/// Domain: `host(:port)?` with `host := label(.label)*` and `port := [0-9]+` (no IPv6 form).
pub(crate) fn is_domain(s: &str) -> bool {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && host.split('.').all(is_host_label)
}

/// Digest grammar: `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`.
fn is_digest_grammar(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|comp| {
        let b = comp.as_bytes();
        matches!(b.first(), Some(f) if f.is_ascii_alphabetic())
            && b.iter().all(|c| c.is_ascii_alphanumeric())
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pieces of a reference string that matched the grammar.
struct GrammarMatch<'a> {
    domain: &'a str,
    path: &'a str,
    name_len: usize,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches the whole grammar; `None` when it does not match.
fn match_grammar(s: &str) -> Option<GrammarMatch<'_>> {
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((left, right)) => {
            if !is_digest_grammar(right) {
                return None;
            }
            (left, Some(right))
        }
        None => (s, None),
    };
    // A ':' after the last '/' introduces the tag; any other ':' can only be a port.
    let last_slash = name_and_tag.rfind('/');
    let (name, tag) = match name_and_tag.rfind(':') {
        Some(colon) if last_slash.is_none_or(|slash| colon > slash) => {
            let tag = &name_and_tag[colon + 1..];
            if !is_valid_tag(tag) {
                return None;
            }
            (&name_and_tag[..colon], Some(tag))
        }
        _ => (name_and_tag, None),
    };
    let (domain, path) = match name.split_once('/') {
        Some((first, rest)) if is_domain(first) => (first, rest),
        _ => ("", name),
    };
    if !path.split('/').all(is_path_component) {
        return None;
    }
    Some(GrammarMatch {
        domain,
        path,
        name_len: name.len(),
        tag,
        digest,
    })
}

/// Raw parse of `s`; errors name `original` (the user's input before normalisation).
fn parse_raw(s: &str, original: &str) -> Result<Reference, ReferenceError> {
    let Some(m) = match_grammar(s) else {
        if s.is_empty() {
            return Err(ReferenceError::NameEmpty {
                input: original.to_owned(),
            });
        }
        if match_grammar(&s.to_lowercase()).is_some() {
            return Err(ReferenceError::NameNotLowercase {
                input: original.to_owned(),
            });
        }
        return Err(ReferenceError::InvalidFormat {
            input: original.to_owned(),
        });
    };
    if m.name_len > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::NameTooLong {
            input: original.to_owned(),
            length: m.name_len,
        });
    }
    let digest = match m.digest {
        Some(d) => Some(
            Digest::parse(d).map_err(|source| ReferenceError::InvalidDigest {
                input: original.to_owned(),
                source,
            })?,
        ),
        None => None,
    };
    Ok(Reference {
        domain: m.domain.to_owned(),
        path: m.path.to_owned(),
        tag: m.tag.map(str::to_owned),
        digest,
    })
}

/// True when `input` is a short name in containers/image's sense: it raw-parses and its
/// syntactic domain (if any) contains neither `.` nor `:` and is not `localhost`.
pub fn is_short_name(input: &str) -> Result<bool, ReferenceError> {
    let raw = Reference::parse(input)?;
    Ok(!is_registry_domain(raw.domain()))
}

/// True when a first path component denotes a registry: it contains `.` or `:`, or is
/// `localhost`.
pub fn is_registry_domain(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}
