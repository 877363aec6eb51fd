//! registries.conf (containers-registries.conf(5), v2 format): loading the main file and its
//! `registries.conf.d` drop-ins, short-name aliases, and the ordered pull sources (mirrors, then
//! the primary location) of a reference.
//!
//! Files read by [`RegistriesConfig::load`] (naming spec §2.1):
//!
//! 1. main file: the explicit path if one is given (a missing file is an error; `load_system`
//!    takes it from `CONTAINERS_REGISTRIES_CONF`), else `$HOME/.config/containers/registries.conf`
//!    if it exists (then the system file and system drop-in directory are not read at all), else
//!    `/etc/containers/registries.conf` if it exists, else an empty configuration;
//! 2. drop-in directories: the explicit one only, if given; else `/etc/containers/registries.conf.d`
//!    then `$HOME/.config/containers/registries.conf.d`. Missing directories are skipped. Only
//!    `*.conf` entries that are not directories, in byte order of their names;
//! 3. the short-name alias cache (`short-name-aliases.conf`), consulted before the configured
//!    aliases. podstore only reads it (CRI-O never writes it either) and takes no lock on it.
//!
//! Merging (§2.4): a drop-in `[[registry]]` with an existing prefix replaces the whole table;
//! `unqualified-search-registries` and `credential-helpers` are replaced when the key is present
//! (an explicit `[]` clears); `short-name-mode` when set; `[aliases]` key by key, an empty value
//! removing an earlier alias. Within one file the first table of a prefix wins.
//!
//! **v1 files** (`[registries.search]`, `[registries.insecure]`, `[registries.block]`) are read
//! and converted as containers/image does when they are the main file: search → unqualified-search
//! registries, insecure/block → `[[registry]]` tables. A file mixing v1 and v2 keys, or a v1
//! drop-in, is an error.
//!
//! Matching a reference to a `[[registry]]` table uses its repository name (no tag or digest):
//! the longest configured prefix wins; `example.com` also matches `example.com:5000/…` (an
//! upstream quirk kept for compatibility); `*.example.com` matches any subdomain but not
//! `example.com` itself.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::{Reference, ReferenceError, is_domain, is_registry_domain};

/// Default path of the system registries.conf.
pub const SYSTEM_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
/// Default system drop-in directory.
pub const SYSTEM_REGISTRIES_CONF_DIR: &str = "/etc/containers/registries.conf.d";
/// Path of the root user's short-name alias cache.
pub const SYSTEM_ALIAS_CACHE: &str = "/var/cache/containers/short-name-aliases.conf";
/// Environment variable naming an explicit registries.conf.
pub const REGISTRIES_CONF_ENV: &str = "CONTAINERS_REGISTRIES_CONF";
/// The credential helper used when none is configured.
pub const DEFAULT_CREDENTIAL_HELPER: &str = "containers-auth.json";

/// How short (unqualified) names are resolved when several candidates exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShortNameMode {
    /// Use every search registry in order.
    Disabled,
    /// Prompt on a TTY, else use every search registry in order (the default when unset).
    #[default]
    Permissive,
    /// Prompt on a TTY, else refuse ambiguous names.
    Enforcing,
}

impl ShortNameMode {
    /// Parses the configuration value; `None` for anything else.
    pub fn from_name(name: &str) -> Option<ShortNameMode> {
        match name {
            "disabled" => Some(ShortNameMode::Disabled),
            "permissive" => Some(ShortNameMode::Permissive),
            "enforcing" => Some(ShortNameMode::Enforcing),
            _ => None,
        }
    }

    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShortNameMode::Disabled => "disabled",
            ShortNameMode::Permissive => "permissive",
            ShortNameMode::Enforcing => "enforcing",
        }
    }
}

impl fmt::Display for ShortNameMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which pulls a mirror serves (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PullFromMirror {
    /// Tag and digest pulls (`all` or unset).
    #[default]
    All,
    /// Digest pulls only.
    DigestOnly,
    /// Tag pulls only.
    TagOnly,
}

/// A `[[registry.mirror]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Physical location `host[:port][/path]`.
    pub location: String,
    /// Plain HTTP and unverified TLS allowed for this mirror (not inherited from the registry).
    pub insecure: bool,
    /// Which pulls this mirror serves.
    pub pull_from_mirror: PullFromMirror,
}

/// A validated `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Which logical names the table applies to (`host[:port][/path]` or `*.domain`).
    pub prefix: String,
    /// Where the prefix maps to; empty only for wildcard prefixes (no rewriting).
    pub location: String,
    /// Plain HTTP and unverified TLS allowed for the primary location.
    pub insecure: bool,
    /// Contacting this registry is refused.
    pub blocked: bool,
    /// Mirrors serve digest pulls only.
    pub mirror_by_digest_only: bool,
    /// Mirrors, tried in order before the primary location.
    pub mirrors: Vec<Mirror>,
}

/// A short-name alias target and the file that defined it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The normalised, fully-qualified repository (no tag, no digest).
    pub target: Reference,
    /// The file that defined the alias.
    pub origin: PathBuf,
}

/// One problem with an `[aliases]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasProblem {
    /// The alias name (left side).
    pub name: String,
    /// The alias value (right side).
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for AliasProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "alias {:?} = {:?}: {}",
            self.name, self.value, self.reason
        )
    }
}

fn join_problems(problems: &[AliasProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a registries.conf (or drop-in, or alias cache) could not be loaded. Every variant names
/// the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistriesConfError {
    /// An explicitly configured file does not exist.
    #[error("error loading registries configuration {path:?}: file does not exist")]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// Reading a file or directory failed.
    #[error("error loading registries configuration {path:?}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is not valid TOML or has a key of the wrong type.
    #[error("error loading registries configuration {path:?}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message.
        message: String,
    },
    /// A location, prefix or search registry uses a URI scheme.
    #[error("{path:?}: invalid location '{value}': URI schemes are not supported")]
    SchemeNotSupported {
        /// The file.
        path: PathBuf,
        /// The offending value.
        value: String,
    },
    /// A `[[registry]]` table has neither prefix nor location.
    #[error("{path:?}: invalid condition: both location and prefix are unset")]
    PrefixAndLocationUnset {
        /// The file.
        path: PathBuf,
    },
    /// A non-wildcard prefix has no location.
    #[error(
        "{path:?}: invalid condition: location is unset and prefix {prefix:?} is not in the format: *.example.com"
    )]
    LocationUnset {
        /// The file.
        path: PathBuf,
        /// The table's prefix.
        prefix: String,
    },
    /// A mirror has no location.
    #[error("{path:?}: invalid condition: mirror location is unset (registry {prefix:?})")]
    MirrorLocationUnset {
        /// The file.
        path: PathBuf,
        /// The table's prefix.
        prefix: String,
    },
    /// `pull-from-mirror` set on a registry table.
    #[error("{path:?}: pull-from-mirror must not be set for a non-mirror registry {prefix:?}")]
    PullFromMirrorOnRegistry {
        /// The file.
        path: PathBuf,
        /// The table's prefix.
        prefix: String,
    },
    /// `pull-from-mirror` set on a mirror of a `mirror-by-digest-only` table.
    #[error(
        "{path:?}: mirror {mirror:?} of registry {prefix:?} sets pull-from-mirror although mirror-by-digest-only is set"
    )]
    PullFromMirrorWithDigestOnly {
        /// The file.
        path: PathBuf,
        /// The table's prefix.
        prefix: String,
        /// The mirror's location.
        mirror: String,
    },
    /// An unknown `pull-from-mirror` value.
    #[error(
        "{path:?}: unsupported pull-from-mirror value {value:?} for mirror {mirror:?} (expected all, digest-only or tag-only)"
    )]
    InvalidPullFromMirror {
        /// The file.
        path: PathBuf,
        /// The mirror's location.
        mirror: String,
        /// The offending value.
        value: String,
    },
    /// Two tables for the same location disagree on `insecure` or `blocked`.
    #[error(
        "{path:?}: registry '{location}' is defined multiple times with conflicting '{setting}' setting"
    )]
    ConflictingSetting {
        /// The file.
        path: PathBuf,
        /// The location.
        location: String,
        /// `insecure` or `blocked`.
        setting: &'static str,
    },
    /// A wildcard prefix not of the form `*.example.com`.
    #[error("{path:?}: wildcarded prefix {prefix:?} should be in the format: *.example.com")]
    InvalidWildcard {
        /// The file.
        path: PathBuf,
        /// The offending prefix.
        prefix: String,
    },
    /// An `unqualified-search-registries` entry that is not `host[:port]`.
    #[error("{path:?}: invalid unqualified-search-registries entry {value:?}")]
    InvalidSearchRegistry {
        /// The file.
        path: PathBuf,
        /// The offending entry.
        value: String,
    },
    /// An unknown `short-name-mode`.
    #[error(
        "{path:?}: invalid short-name mode {value:?} (expected enforcing, permissive or disabled)"
    )]
    InvalidShortNameMode {
        /// The file.
        path: PathBuf,
        /// The offending value.
        value: String,
    },
    /// One or more invalid `[aliases]` entries (all are reported).
    #[error("{path:?}: invalid aliases: {}", join_problems(.problems))]
    InvalidAliases {
        /// The file.
        path: PathBuf,
        /// Every bad entry.
        problems: Vec<AliasProblem>,
    },
    /// A drop-in uses the v1 format.
    #[error("{path:?}: registry must be in v2 format but is in v1")]
    V1DropIn {
        /// The file.
        path: PathBuf,
    },
    /// A file mixes v1 and v2 keys.
    #[error("{path:?}: mixing sysregistry v1/v2 is not supported")]
    MixedV1V2 {
        /// The file.
        path: PathBuf,
    },
}

/// Why the pull sources of a reference cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PullSourceError {
    /// Rewriting the reference onto a location does not give a canonical reference.
    #[error("cannot rewrite {reference} onto location {location:?}: {source}")]
    Rewrite {
        /// The logical reference.
        reference: String,
        /// The mirror or primary location.
        location: String,
        /// Why the rewritten name is invalid.
        source: Box<ReferenceError>,
    },
    /// Every endpoint is blocked.
    #[error("cannot pull {reference}: registry {} is blocked in {}", .registries.join(", "), display_paths(.origins))]
    Blocked {
        /// The logical reference.
        reference: String,
        /// Prefixes of the blocking `[[registry]]` tables.
        registries: Vec<String>,
        /// The configuration files read.
        origins: Vec<PathBuf>,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "registries.conf".to_owned();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One place to pull a reference from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The configured location, `host[:port][/path]` (the reference's name when no
    /// `[[registry]]` table matches, or for a wildcard table without location).
    pub location: String,
    /// The reference rewritten onto this location (the physical reference to request).
    pub reference: Reference,
    /// Plain HTTP and unverified TLS allowed.
    pub insecure: bool,
    /// This is a mirror, not the primary location.
    pub is_mirror: bool,
    /// The `[[registry]]` table matching the physical reference is blocked.
    pub blocked: bool,
}

/// Where [`RegistriesConfig::load`] looks. [`LoadOptions::default`] gives the system paths
/// without `$HOME`, the explicit file or the alias cache; [`LoadOptions::system`] adds those
/// from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Explicit main file; a missing file is an error.
    pub file: Option<PathBuf>,
    /// Explicit drop-in directory; when set it is the only one read.
    pub drop_in_dir: Option<PathBuf>,
    /// The home directory whose `.config/containers` is consulted.
    pub home: Option<PathBuf>,
    /// The system main file.
    pub system_file: PathBuf,
    /// The system drop-in directory.
    pub system_drop_in_dir: PathBuf,
    /// The short-name alias cache, read if it exists.
    pub alias_cache: Option<PathBuf>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            file: None,
            drop_in_dir: None,
            home: None,
            system_file: PathBuf::from(SYSTEM_REGISTRIES_CONF),
            system_drop_in_dir: PathBuf::from(SYSTEM_REGISTRIES_CONF_DIR),
            alias_cache: None,
        }
    }
}

impl LoadOptions {
    /// The paths containers/image uses for a root process: `CONTAINERS_REGISTRIES_CONF` as the
    /// explicit file if set, `$HOME`, the system paths and the root alias cache.
    pub fn system() -> LoadOptions {
        LoadOptions::from_env(|name| std::env::var_os(name))
    }

    /// [`LoadOptions::system`] with the environment read through `var` (for tests): the explicit
    /// file from `CONTAINERS_REGISTRIES_CONF` and the home directory from `HOME`; empty values
    /// count as unset.
    pub fn from_env<F>(var: F) -> LoadOptions
    where
        F: Fn(&str) -> Option<std::ffi::OsString>,
    {
        let non_empty = |name: &str| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        LoadOptions {
            file: non_empty(REGISTRIES_CONF_ENV),
            home: non_empty("HOME"),
            alias_cache: Some(PathBuf::from(SYSTEM_ALIAS_CACHE)),
            ..LoadOptions::default()
        }
    }
}

/// The merged registries configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistriesConfig {
    registries: Vec<Registry>,
    search_registries: Vec<String>,
    search_registries_origin: Option<PathBuf>,
    short_name_mode: Option<ShortNameMode>,
    credential_helpers: Vec<String>,
    aliases: BTreeMap<String, Alias>,
    cache_aliases: BTreeMap<String, Alias>,
    files: Vec<PathBuf>,
}

impl RegistriesConfig {
    /// An empty configuration: no tables, no search registries, no aliases.
    pub fn empty() -> RegistriesConfig {
        RegistriesConfig::default()
    }

    /// Loads with [`LoadOptions::system`].
    pub fn load_system() -> Result<RegistriesConfig, RegistriesConfError> {
        RegistriesConfig::load(&LoadOptions::system())
    }

    /// Loads the main file, the drop-ins and the alias cache chosen by `options` (see the
    /// module docs).
    pub fn load(options: &LoadOptions) -> Result<RegistriesConfig, RegistriesConfError> {
        let mut config = RegistriesConfig::empty();
        let user_file = options
            .home
            .as_ref()
            .map(|h| h.join(".config/containers/registries.conf"));
        let user_dir = options
            .home
            .as_ref()
            .map(|h| h.join(".config/containers/registries.conf.d"));
        let mut user_mode = false;
        if let Some(file) = &options.file {
            match read_optional(file)? {
                Some(text) => config.merge_file(&text, file, false)?,
                None => return Err(RegistriesConfError::NotFound { path: file.clone() }),
            }
        } else if let Some(text) = match &user_file {
            Some(f) => read_optional(f)?,
            None => None,
        } {
            user_mode = true;
            if let Some(f) = &user_file {
                config.merge_file(&text, f, false)?;
            }
        } else if let Some(text) = read_optional(&options.system_file)? {
            config.merge_file(&text, &options.system_file, false)?;
        }
        let dirs: Vec<&Path> = match (&options.drop_in_dir, user_mode) {
            (Some(dir), _) => vec![dir],
            (None, true) => user_dir.iter().map(PathBuf::as_path).collect(),
            (None, false) => std::iter::once(options.system_drop_in_dir.as_path())
                .chain(user_dir.iter().map(PathBuf::as_path))
                .collect(),
        };
        for dir in dirs {
            for file in drop_in_files(dir)? {
                if let Some(text) = read_optional(&file)? {
                    config.merge_drop_in(&text, &file)?;
                }
            }
        }
        if let Some(cache) = &options.alias_cache {
            if let Some(text) = read_optional(cache)? {
                config.set_alias_cache(&text, cache)?;
            }
        }
        Ok(config)
    }

    /// Reads exactly one main file (v1 or v2): no drop-ins, no alias cache. A missing file is
    /// an error. Handy for tests and for callers that manage their own configuration.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RegistriesConfig, RegistriesConfError> {
        let path = path.as_ref();
        match read_optional(path)? {
            Some(text) => RegistriesConfig::parse(&text, path),
            None => Err(RegistriesConfError::NotFound {
                path: path.to_owned(),
            }),
        }
    }

    /// Parses one main file's text (v1 or v2); `origin` names it in errors.
    pub fn parse(
        text: &str,
        origin: impl AsRef<Path>,
    ) -> Result<RegistriesConfig, RegistriesConfError> {
        let mut config = RegistriesConfig::empty();
        config.merge_file(text, origin.as_ref(), false)?;
        Ok(config)
    }

    /// Merges a drop-in file's text (v2 only) over this configuration.
    pub fn merge_drop_in(
        &mut self,
        text: &str,
        origin: impl AsRef<Path>,
    ) -> Result<(), RegistriesConfError> {
        self.merge_file(text, origin.as_ref(), true)
    }

    /// Replaces the short-name alias cache with the `[aliases]` of `text` (consulted before
    /// the configured aliases).
    pub fn set_alias_cache(
        &mut self,
        text: &str,
        origin: impl AsRef<Path>,
    ) -> Result<(), RegistriesConfError> {
        let origin = origin.as_ref();
        let file = parse_file(text, origin, true)?;
        self.cache_aliases.clear();
        for (name, target) in file.aliases {
            if let Some(target) = target {
                self.cache_aliases.insert(
                    name,
                    Alias {
                        target,
                        origin: origin.to_owned(),
                    },
                );
            }
        }
        Ok(())
    }

    fn merge_file(
        &mut self,
        text: &str,
        origin: &Path,
        drop_in: bool,
    ) -> Result<(), RegistriesConfError> {
        let file = parse_file(text, origin, drop_in)?;
        self.files.push(origin.to_owned());
        for table in file.registries {
            match self
                .registries
                .iter_mut()
                .find(|r| r.prefix == table.prefix)
            {
                Some(existing) => *existing = table,
                None => self.registries.push(table),
            }
        }
        self.registries.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        if let Some(search) = file.search_registries {
            self.search_registries = search;
            self.search_registries_origin = Some(origin.to_owned());
        }
        if let Some(helpers) = file.credential_helpers {
            self.credential_helpers = helpers;
        }
        if let Some(mode) = file.short_name_mode {
            self.short_name_mode = Some(mode);
        }
        for (name, target) in file.aliases {
            match target {
                Some(target) => {
                    self.aliases.insert(
                        name,
                        Alias {
                            target,
                            origin: origin.to_owned(),
                        },
                    );
                }
                None => {
                    self.aliases.remove(&name);
                }
            }
        }
        Ok(())
    }

    /// The `[[registry]]` tables, sorted by prefix.
    pub fn registries(&self) -> &[Registry] {
        &self.registries
    }

    /// `unqualified-search-registries`, in order.
    pub fn search_registries(&self) -> &[String] {
        &self.search_registries
    }

    /// The file that last set `unqualified-search-registries`, if any.
    pub fn search_registries_origin(&self) -> Option<&Path> {
        self.search_registries_origin.as_deref()
    }

    /// The configured `short-name-mode`, if any file set one.
    pub fn configured_short_name_mode(&self) -> Option<ShortNameMode> {
        self.short_name_mode
    }

    /// The configured mode, [`ShortNameMode::Permissive`] when unset.
    pub fn short_name_mode(&self) -> ShortNameMode {
        self.short_name_mode.unwrap_or_default()
    }

    /// `credential-helpers`; `["containers-auth.json"]` when none is configured.
    pub fn credential_helpers(&self) -> Vec<String> {
        if self.credential_helpers.is_empty() {
            vec![DEFAULT_CREDENTIAL_HELPER.to_owned()]
        } else {
            self.credential_helpers.clone()
        }
    }

    /// The configuration files that were read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The configured aliases (not including the cache).
    pub fn aliases(&self) -> &BTreeMap<String, Alias> {
        &self.aliases
    }

    /// The alias for `name` (a short name without tag or digest, matched as typed): the alias
    /// cache first, then the configuration.
    pub fn alias(&self, name: &str) -> Option<&Alias> {
        self.cache_aliases
            .get(name)
            .or_else(|| self.aliases.get(name))
    }

    /// The `[[registry]]` table with the longest prefix matching the repository name `name`
    /// (`domain/path`, without tag or digest).
    pub fn find_registry(&self, name: &str) -> Option<&Registry> {
        let mut best: Option<&Registry> = None;
        for table in &self.registries {
            if prefix_match_len(name, &table.prefix).is_some()
                && best.is_none_or(|b| table.prefix.len() > b.prefix.len())
            {
                best = Some(table);
            }
        }
        best
    }

    /// The table blocking the repository name `name`, if it is blocked.
    pub fn blocking_registry(&self, name: &str) -> Option<&Registry> {
        self.find_registry(name).filter(|r| r.blocked)
    }

    /// Every endpoint for `reference` in the order to try them (mirrors, then the primary),
    /// blocked ones included and flagged.
    ///
    /// The logical reference is first made pullable: `name:tag@digest` loses its tag and a
    /// name-only reference gets `:latest`. Any rewrite error aborts the whole computation.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>, PullSourceError> {
        let logical = reference.without_tag_if_digested().tag_or_latest();
        let name = logical.name();
        let full = logical.to_string();
        let Some(table) = self.find_registry(&name) else {
            return Ok(vec![Endpoint {
                location: name,
                reference: logical,
                insecure: false,
                is_mirror: false,
                blocked: false,
            }]);
        };
        let digested = logical.digest().is_some();
        let mut sources: Vec<(&str, bool, bool)> = Vec::new();
        if table.mirror_by_digest_only {
            if digested {
                sources.extend(
                    table
                        .mirrors
                        .iter()
                        .map(|m| (m.location.as_str(), m.insecure, true)),
                );
            }
        } else {
            for m in &table.mirrors {
                let serves = match m.pull_from_mirror {
                    PullFromMirror::All => true,
                    PullFromMirror::DigestOnly => digested,
                    PullFromMirror::TagOnly => !digested,
                };
                if serves {
                    sources.push((m.location.as_str(), m.insecure, true));
                }
            }
        }
        sources.push((table.location.as_str(), table.insecure, false));
        let matched = prefix_match_len(&name, &table.prefix).unwrap_or(name.len());
        let rest = full.get(matched..).unwrap_or_default();
        let mut endpoints = Vec::with_capacity(sources.len());
        for (location, insecure, is_mirror) in sources {
            let (location, physical) = if location.is_empty() {
                (name.clone(), logical.clone())
            } else {
                let rewritten = format!("{location}{rest}");
                let physical = Reference::parse_named(&rewritten).map_err(|source| {
                    PullSourceError::Rewrite {
                        reference: full.clone(),
                        location: location.to_owned(),
                        source: Box::new(source),
                    }
                })?;
                (location.to_owned(), physical)
            };
            let blocked = self.blocking_registry(&physical.name()).is_some();
            endpoints.push(Endpoint {
                location,
                reference: physical,
                insecure,
                is_mirror,
                blocked,
            });
        }
        Ok(endpoints)
    }

    /// The endpoints to try for `reference`, in order, without the blocked ones; an error naming
    /// the blocking tables when every endpoint is blocked. See [`RegistriesConfig::endpoints`].
    pub fn pull_sources(&self, reference: &Reference) -> Result<Vec<Endpoint>, PullSourceError> {
        let all = self.endpoints(reference)?;
        if all.iter().all(|e| e.blocked) {
            let mut registries: Vec<String> = Vec::new();
            for e in &all {
                let blocking = self.blocking_registry(&e.reference.name());
                if let Some(r) = blocking.filter(|r| !registries.contains(&r.prefix)) {
                    registries.push(r.prefix.clone());
                }
            }
            return Err(PullSourceError::Blocked {
                reference: reference.to_string(),
                registries,
                origins: self.files.clone(),
            });
        }
        Ok(all.into_iter().filter(|e| !e.blocked).collect())
    }
}

/// containers/image's `refMatchingPrefix`: the match length of `prefix` on the reference
/// string `reference`, or `None`.
pub fn prefix_match_len(reference: &str, prefix: &str) -> Option<usize> {
    if let Some(suffix) = prefix.strip_prefix('*').filter(|s| s.starts_with('.')) {
        let index = reference.find(suffix)?;
        if reference[..index].contains('/') {
            return None;
        }
        let end = index + suffix.len();
        return match reference.as_bytes().get(end) {
            None | Some(b':' | b'/' | b'@') => Some(end),
            Some(_) => None,
        };
    }
    if reference == prefix {
        return Some(prefix.len());
    }
    match reference.strip_prefix(prefix)?.as_bytes().first() {
        Some(b':' | b'/' | b'@') => Some(prefix.len()),
        _ => None,
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, RegistriesConfError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RegistriesConfError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `*.conf` entries of `dir` that are not directories, sorted by name; none if `dir` is missing.
fn drop_in_files(dir: &Path) -> Result<Vec<PathBuf>, RegistriesConfError> {
    let io_err = |source| RegistriesConfError::Io {
        path: dir.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        if !name.as_encoded_bytes().ends_with(b".conf") {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => continue,
            Ok(_) => names.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(RegistriesConfError::Io { path, source: e });
            }
        }
    }
    names.sort_by(|a, b| a.as_encoded_bytes().cmp(b.as_encoded_bytes()));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

// ---------------------------------------------------------------------------------------------
// One file: raw TOML shape, then validation.

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    credential_helpers: Option<Vec<String>>,
    aliases: Option<BTreeMap<String, String>>,
    registry: Option<Vec<RawRegistry>>,
    registries: Option<RawV1>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    prefix: Option<String>,
    location: Option<String>,
    insecure: Option<bool>,
    blocked: Option<bool>,
    mirror_by_digest_only: Option<bool>,
    mirror: Option<Vec<RawMirror>>,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    location: Option<String>,
    insecure: Option<bool>,
    pull_from_mirror: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize, Default)]
struct RawV1List {
    registries: Option<Vec<String>>,
}

/// One validated file, with "was the key present" kept for merging.
struct FileConfig {
    registries: Vec<Registry>,
    search_registries: Option<Vec<String>>,
    short_name_mode: Option<ShortNameMode>,
    credential_helpers: Option<Vec<String>>,
    /// `None` target = removal marker (empty value).
    aliases: Vec<(String, Option<Reference>)>,
}

fn parse_file(text: &str, path: &Path, drop_in: bool) -> Result<FileConfig, RegistriesConfError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| RegistriesConfError::Toml {
        path: path.to_owned(),
        message: e.message().to_owned(),
    })?;
    let has_v2 = raw.unqualified_search_registries.is_some()
        || raw.registry.is_some()
        || raw.aliases.is_some()
        || raw.short_name_mode.is_some()
        || raw.credential_helpers.is_some();
    let mut raw = raw;
    if let Some(v1) = raw.registries.take() {
        if drop_in {
            return Err(RegistriesConfError::V1DropIn {
                path: path.to_owned(),
            });
        }
        if has_v2 {
            return Err(RegistriesConfError::MixedV1V2 {
                path: path.to_owned(),
            });
        }
        convert_v1(&mut raw, v1, path)?;
    }

    let mut registries = Vec::new();
    for table in raw.registry.unwrap_or_default() {
        registries.push(validate_registry(table, path)?);
    }
    check_consistency(&registries, path)?;

    let search_registries = match raw.unqualified_search_registries {
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for entry in list {
                let value = normalize_location(&entry, path)?;
                if !is_domain(&value) {
                    return Err(RegistriesConfError::InvalidSearchRegistry {
                        path: path.to_owned(),
                        value: entry,
                    });
                }
                out.push(value);
            }
            Some(out)
        }
        None => None,
    };

    let mut deduplicated: Vec<Registry> = Vec::with_capacity(registries.len());
    for table in registries {
        if !deduplicated.iter().any(|r| r.prefix == table.prefix) {
            deduplicated.push(table);
        }
    }
    deduplicated.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    for table in &deduplicated {
        if table.prefix.starts_with('*')
            && (!table.prefix.starts_with("*.") || table.prefix.contains(['/', '@', ':']))
        {
            return Err(RegistriesConfError::InvalidWildcard {
                path: path.to_owned(),
                prefix: table.prefix.clone(),
            });
        }
    }

    let short_name_mode = match raw.short_name_mode.as_deref() {
        None | Some("") => None,
        Some(value) => Some(ShortNameMode::from_name(value).ok_or_else(|| {
            RegistriesConfError::InvalidShortNameMode {
                path: path.to_owned(),
                value: value.to_owned(),
            }
        })?),
    };

    let mut aliases = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in raw.aliases.unwrap_or_default() {
        match validate_alias(&name, &value) {
            Ok(target) => aliases.push((name, target)),
            Err(reason) => problems.push(AliasProblem {
                name,
                value,
                reason,
            }),
        }
    }
    if !problems.is_empty() {
        return Err(RegistriesConfError::InvalidAliases {
            path: path.to_owned(),
            problems,
        });
    }

    Ok(FileConfig {
        registries: deduplicated,
        search_registries,
        short_name_mode,
        credential_helpers: raw.credential_helpers,
        aliases,
    })
}

/// Strips trailing `/` and refuses `http://` / `https://`.
fn normalize_location(value: &str, path: &Path) -> Result<String, RegistriesConfError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        return Err(RegistriesConfError::SchemeNotSupported {
            path: path.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn validate_registry(raw: RawRegistry, path: &Path) -> Result<Registry, RegistriesConfError> {
    let location = normalize_location(raw.location.as_deref().unwrap_or_default(), path)?;
    let prefix = match raw.prefix.as_deref().unwrap_or_default() {
        "" => {
            if location.is_empty() {
                return Err(RegistriesConfError::PrefixAndLocationUnset {
                    path: path.to_owned(),
                });
            }
            location.clone()
        }
        p => {
            let prefix = normalize_location(p, path)?;
            if !prefix.starts_with("*.") && location.is_empty() {
                return Err(RegistriesConfError::LocationUnset {
                    path: path.to_owned(),
                    prefix,
                });
            }
            prefix
        }
    };
    if raw.pull_from_mirror.is_some() {
        return Err(RegistriesConfError::PullFromMirrorOnRegistry {
            path: path.to_owned(),
            prefix,
        });
    }
    let mirror_by_digest_only = raw.mirror_by_digest_only.unwrap_or(false);
    let mut mirrors = Vec::new();
    for m in raw.mirror.unwrap_or_default() {
        let mirror_location = normalize_location(m.location.as_deref().unwrap_or_default(), path)?;
        if mirror_location.is_empty() {
            return Err(RegistriesConfError::MirrorLocationUnset {
                path: path.to_owned(),
                prefix,
            });
        }
        let pull_from_mirror = match m.pull_from_mirror.as_deref() {
            None => PullFromMirror::All,
            Some(value) => {
                if mirror_by_digest_only {
                    return Err(RegistriesConfError::PullFromMirrorWithDigestOnly {
                        path: path.to_owned(),
                        prefix,
                        mirror: mirror_location,
                    });
                }
                match value {
                    "" | "all" => PullFromMirror::All,
                    "digest-only" => PullFromMirror::DigestOnly,
                    "tag-only" => PullFromMirror::TagOnly,
                    other => {
                        return Err(RegistriesConfError::InvalidPullFromMirror {
                            path: path.to_owned(),
                            mirror: mirror_location,
                            value: other.to_owned(),
                        });
                    }
                }
            }
        };
        mirrors.push(Mirror {
            location: mirror_location,
            insecure: m.insecure.unwrap_or(false),
            pull_from_mirror,
        });
    }
    Ok(Registry {
        prefix,
        location,
        insecure: raw.insecure.unwrap_or(false),
        blocked: raw.blocked.unwrap_or(false),
        mirror_by_digest_only,
        mirrors,
    })
}

/// Tables sharing a location (or prefix, when the location is empty) must agree on
/// `insecure` and `blocked`.
fn check_consistency(tables: &[Registry], path: &Path) -> Result<(), RegistriesConfError> {
    let key = |r: &Registry| {
        if r.location.is_empty() {
            r.prefix.clone()
        } else {
            r.location.clone()
        }
    };
    for (i, a) in tables.iter().enumerate() {
        for b in &tables[i + 1..] {
            if key(a) != key(b) {
                continue;
            }
            let setting = if a.insecure != b.insecure {
                "insecure"
            } else if a.blocked != b.blocked {
                "blocked"
            } else {
                continue;
            };
            return Err(RegistriesConfError::ConflictingSetting {
                path: path.to_owned(),
                location: key(a),
                setting,
            });
        }
    }
    Ok(())
}

/// v1 → v2: search list, then one table per blocked/insecure host (block scanned first).
fn convert_v1(raw: &mut RawFile, v1: RawV1, path: &Path) -> Result<(), RegistriesConfError> {
    let list = |l: Option<RawV1List>| l.and_then(|l| l.registries).unwrap_or_default();
    raw.unqualified_search_registries = Some(list(v1.search));
    let mut tables: Vec<RawRegistry> = Vec::new();
    let groups = [(list(v1.block), true), (list(v1.insecure), false)];
    for (hosts, is_block) in groups {
        for host in hosts {
            let location = normalize_location(&host, path)?;
            let index = match tables
                .iter()
                .position(|t| t.location.as_deref() == Some(&location))
            {
                Some(i) => i,
                None => {
                    tables.push(RawRegistry {
                        location: Some(location),
                        ..RawRegistry::default()
                    });
                    tables.len() - 1
                }
            };
            if is_block {
                tables[index].blocked = Some(true);
            } else {
                tables[index].insecure = Some(true);
            }
        }
    }
    raw.registry = Some(tables);
    Ok(())
}

/// Validates one alias; `Ok(None)` for the removal marker (empty value).
fn validate_alias(name: &str, value: &str) -> Result<Option<Reference>, String> {
    let parsed_name = Reference::parse(name).map_err(|e| format!("invalid alias name: {e}"))?;
    if parsed_name.tag().is_some() {
        return Err("alias name must not contain a tag".to_owned());
    }
    if parsed_name.digest().is_some() {
        return Err("alias name must not contain a digest".to_owned());
    }
    if is_registry_domain(parsed_name.domain()) {
        return Err("alias name must not contain registry".to_owned());
    }
    if value.is_empty() {
        return Ok(None);
    }
    let parsed_value = Reference::parse(value).map_err(|e| format!("invalid alias value: {e}"))?;
    if parsed_value.tag().is_some() {
        return Err("alias value must not contain tag".to_owned());
    }
    if parsed_value.digest().is_some() {
        return Err("alias value must not contain digest".to_owned());
    }
    if !is_registry_domain(parsed_value.domain()) {
        return Err("alias value must contain registry and repository".to_owned());
    }
    Reference::parse_normalized(value)
        .map(Some)
        .map_err(|e| format!("invalid alias value: {e}"))
}
