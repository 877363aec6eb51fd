//! CRI-O's `ResolveNames`: turning the image string a user typed into the ordered list of
//! fully-qualified candidate references to look up or pull.
//!
//! Semantics (crio-storage-behavior §4, naming spec §2.10–2.11), with the upstream bugs of
//! crio-storage-behavior §10 fixed:
//!
//! * a full image ID (64 lowercase hex) is refused with [`ResolveError::CannotParseImageId`]; the
//!   local ID / ID-prefix short-circuit needs the store and is the caller's job (use
//!   [`crate::is_id_prefix_candidate`]);
//! * the input must parse with [`Reference::parse_normalized`]; its error is returned otherwise;
//! * a qualified name (first component contains `.` or `:`, or is `localhost`, and is followed
//!   by `/`) gives one candidate, the input itself; with both a tag and a digest the tag is
//!   dropped;
//! * a short name is looked up in the short-name aliases first (alias cache, then
//!   `[aliases]`; the key is the input without tag and digest, as typed); an alias gives one
//!   candidate carrying the input's tag and digest. Aliases apply in every short-name mode,
//!   as in containers/image;
//! * otherwise one candidate per search registry — the caller's own list
//!   ([`ResolveOptions::search_registries`], CRI-O's `registries` option) followed by
//!   `unqualified-search-registries` — with `library/` added only for `docker.io`, tag and digest
//!   carried over verbatim (tag dropped when a digest is present), **no `:latest` added** and
//!   **duplicates removed** (CRI-O db3f22b4c3 listed registries.conf entries twice);
//! * no search registries at all → [`ResolveError::NoRegistriesConfigured`], whose message is
//!   CRI-O's `ErrNoRegistriesConfigured` text;
//! * blocked registries (registries.conf `blocked = true`): a blocked qualified name or alias is an
//!   error naming the blocking prefix; blocked search registries are skipped, and if all are
//!   blocked the error names them. CRI-O later stopped enforcing `blocked` here because it broke
//!   status and removal of local images (crio-storage-behavior §10.6): callers doing local
//!   lookups set [`ResolveOptions::enforce_blocked`] to `false`; pulls still check each endpoint
//!   ([`crate::RegistriesConfig::pull_sources`]);
//! * with more than one candidate, [`ShortNameMode::Enforcing`] is an error (there is never a
//!   TTY to prompt on); `Disabled` and `Permissive` return every candidate.
//!
//! Candidates are [`Reference`]s: a qualified input comes back normalised (`docker.io/busybox`
//! is `docker.io/library/busybox`), which denotes the same image CRI-O's unchanged string does.

use crate::reference::{Reference, ReferenceError, is_full_image_id, is_registry_domain};
use crate::registries::{RegistriesConfig, ShortNameMode};

/// CRI-O's `ErrNoRegistriesConfigured` message.
pub const NO_REGISTRIES_CONFIGURED: &str = "no registries configured while trying to pull an unqualified image, add at least one in either /etc/crio/crio.conf or /etc/containers/registries.conf";

/// How [`resolve_names`] behaves beyond the registries configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOptions {
    /// Search registries configured in the service itself, tried before
    /// `unqualified-search-registries` (CRI-O's deprecated `registries` option).
    pub search_registries: Vec<String>,
    /// The short-name mode; `None` uses the configured one. Defaults to
    /// `Some(ShortNameMode::Disabled)`, what CRI-O forced from 2021 on.
    pub short_name_mode: Option<ShortNameMode>,
    /// Refuse blocked registries (default `true`); see the module docs.
    pub enforce_blocked: bool,
}

impl Default for ResolveOptions {
    fn default() -> Self {
        ResolveOptions {
            search_registries: Vec::new(),
            short_name_mode: Some(ShortNameMode::Disabled),
            enforce_blocked: true,
        }
    }
}

/// How the candidates were found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolvedVia {
    /// The input was fully qualified.
    Qualified,
    /// A short-name alias, defined in this file.
    Alias {
        /// The file that defined the alias.
        origin: std::path::PathBuf,
    },
    /// The search registries.
    SearchRegistries,
}

/// The outcome of [`resolve_names`]: never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Candidates in the order to try them.
    pub candidates: Vec<Reference>,
    /// How they were found.
    pub via: ResolvedVia,
}

/// Why a name could not be resolved. Every variant names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The input is a 64-hex image ID (of no local image, or the caller would not ask).
    #[error("cannot parse an image ID ({input})")]
    CannotParseImageId {
        /// The offending input.
        input: String,
    },
    /// The input is not a valid reference.
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),
    /// Unqualified name and no search registries (CRI-O's exact message).
    #[error("{}", NO_REGISTRIES_CONFIGURED)]
    NoRegistriesConfigured {
        /// The offending input.
        input: String,
    },
    /// A qualified name or alias target whose registry is blocked.
    #[error(
        "cannot use {input:?} because it's blocked (registry {registry:?} is blocked in registries.conf)"
    )]
    Blocked {
        /// The offending input.
        input: String,
        /// Prefix of the blocking `[[registry]]` table.
        registry: String,
    },
    /// Every search registry is blocked for this name.
    #[error("all search registries for {input:?} are blocked: {}", .registries.join(", "))]
    AllSearchRegistriesBlocked {
        /// The offending input.
        input: String,
        /// The blocked search registries.
        registries: Vec<String>,
    },
    /// Enforcing short-name mode and several candidates.
    #[error(
        "short name mode is enforcing, but image name {input} returns ambiguous list: {}",
        .candidates.join(", ")
    )]
    Ambiguous {
        /// The offending input.
        input: String,
        /// The candidates found.
        candidates: Vec<String>,
    },
}

/// True when CRI-O considers `input` qualified: it has a `/` and its first component contains
/// `.` or `:` or is `localhost`.
pub fn is_qualified(input: &str) -> bool {
    input
        .split_once('/')
        .is_some_and(|(first, _)| is_registry_domain(first))
}

/// Resolves `input` into candidate references (see the module docs).
pub fn resolve_names(
    input: &str,
    config: &RegistriesConfig,
    options: &ResolveOptions,
) -> Result<Resolution, ResolveError> {
    if is_full_image_id(input) {
        return Err(ResolveError::CannotParseImageId {
            input: input.to_owned(),
        });
    }
    let normalized = Reference::parse_normalized(input)?;

    if is_qualified(input) {
        let candidate = normalized.without_tag_if_digested();
        check_blocked(input, &candidate, config, options)?;
        return Ok(Resolution {
            candidates: vec![candidate],
            via: ResolvedVia::Qualified,
        });
    }

    let raw = Reference::parse(input)?;
    if let Some(alias) = config.alias(&raw.name()) {
        let mut candidate = alias.target.clone();
        if let Some(tag) = raw.tag() {
            candidate = candidate.with_tag(tag)?;
        }
        if let Some(digest) = raw.digest() {
            candidate = candidate.with_digest(digest.clone());
        }
        let candidate = candidate.without_tag_if_digested();
        check_blocked(input, &candidate, config, options)?;
        return Ok(Resolution {
            candidates: vec![candidate],
            via: ResolvedVia::Alias {
                origin: alias.origin.clone(),
            },
        });
    }

    let mut registries: Vec<&str> = Vec::new();
    for registry in options
        .search_registries
        .iter()
        .chain(config.search_registries())
    {
        if !registries.contains(&registry.as_str()) {
            registries.push(registry);
        }
    }
    if registries.is_empty() {
        return Err(ResolveError::NoRegistriesConfigured {
            input: input.to_owned(),
        });
    }

    let mut candidates: Vec<Reference> = Vec::new();
    let mut blocked: Vec<String> = Vec::new();
    for registry in registries {
        let remainder = if registry == "docker.io" && !input.contains('/') {
            format!("library/{input}")
        } else {
            input.to_owned()
        };
        let candidate = Reference::parse_normalized(&format!("{registry}/{remainder}"))?
            .without_tag_if_digested();
        if options.enforce_blocked && config.blocking_registry(&candidate.name()).is_some() {
            blocked.push(registry.to_owned());
            continue;
        }
        if !candidates.contains(&candidate) {
            candidates.push(candidate);
        }
    }
    if candidates.is_empty() {
        return Err(ResolveError::AllSearchRegistriesBlocked {
            input: input.to_owned(),
            registries: blocked,
        });
    }
    let mode = options
        .short_name_mode
        .unwrap_or_else(|| config.short_name_mode());
    if mode == ShortNameMode::Enforcing && candidates.len() > 1 {
        return Err(ResolveError::Ambiguous {
            input: input.to_owned(),
            candidates: candidates.iter().map(ToString::to_string).collect(),
        });
    }
    Ok(Resolution {
        candidates,
        via: ResolvedVia::SearchRegistries,
    })
}

fn check_blocked(
    input: &str,
    candidate: &Reference,
    config: &RegistriesConfig,
    options: &ResolveOptions,
) -> Result<(), ResolveError> {
    if !options.enforce_blocked {
        return Ok(());
    }
    match config.blocking_registry(&candidate.name()) {
        Some(table) => Err(ResolveError::Blocked {
            input: input.to_owned(),
            registry: table.prefix.clone(),
        }),
        None => Ok(()),
    }
}
