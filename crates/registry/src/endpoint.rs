//! Pull sources and the client factory: [`ImageLocation`] (registry, repository, tag or digest),
//! [`PullSource`] (one mirror or the primary, with its insecure/blocked flags), and
//! [`Registries`], which builds per-endpoint clients (certs.d TLS, credentials from auth files,
//! a request semaphore shared per registry host) and tries mirrors in order, then the primary.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use podstore_reference::{Endpoint, Reference};
use tokio::sync::Semaphore;

use crate::auth::Credentials;
use crate::client::{
    ClientOptions, EndpointConfig, Manifest, ManifestTarget, RegistryClient, validate_registry,
    validate_repository,
};
use crate::credentials::AuthFiles;
use crate::error::{RegistryError, Result};
use crate::platform::PlatformSelector;
use crate::tls::CertDirs;

/// Where an image lives on one registry: what a physical reference names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageLocation {
    /// `host[:port]` as written in references (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path without the registry (`library/busybox`).
    pub repository: String,
    /// Tag or digest.
    pub target: ManifestTarget,
}

impl ImageLocation {
    /// Builds a location, validating registry and repository.
    pub fn new(registry: &str, repository: &str, target: ManifestTarget) -> Result<ImageLocation> {
        validate_registry(registry)?;
        validate_repository(repository)?;
        Ok(ImageLocation {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            target,
        })
    }

    /// The location a podstore [`Reference`] names: its domain and path, and its digest when
    /// it has one (a `name:tag@digest` is pulled by digest), else its tag, else `latest`.
    pub fn from_reference(reference: &Reference) -> Result<ImageLocation> {
        let target = match (reference.digest(), reference.tag()) {
            (Some(d), _) => ManifestTarget::Digest(d.clone()),
            (None, Some(t)) => ManifestTarget::Tag(t.to_owned()),
            (None, None) => ManifestTarget::Tag("latest".to_owned()),
        };
        ImageLocation::new(reference.domain(), reference.path(), target)
    }

    /// `registry/repository`, the key used for credential lookup.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl TryFrom<&Endpoint> for PullSource {
    type Error = RegistryError;
    fn try_from(endpoint: &Endpoint) -> Result<PullSource> {
        PullSource::from_endpoint(endpoint)
    }
}

impl fmt::Display for ImageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            ManifestTarget::Tag(t) => write!(f, "{}/{}:{t}", self.registry, self.repository),
            ManifestTarget::Digest(d) => write!(f, "{}/{}@{d}", self.registry, self.repository),
        }
    }
}

/// One place to pull from: a mirror or the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    /// The physical location on this endpoint.
    pub location: ImageLocation,
    /// Skip TLS verification and allow the plain-HTTP fallback.
    pub insecure: bool,
    /// Blocked in registries.conf: skipped.
    pub blocked: bool,
    /// Whether this is a mirror (for logs and error texts).
    pub is_mirror: bool,
}

impl TryFrom<&Reference> for ImageLocation {
    type Error = RegistryError;
    fn try_from(reference: &Reference) -> Result<ImageLocation> {
        ImageLocation::from_reference(reference)
    }
}

impl PullSource {
    /// The pull source for one registries.conf endpoint (its physical reference and flags).
    pub fn from_endpoint(endpoint: &Endpoint) -> Result<PullSource> {
        Ok(PullSource {
            location: ImageLocation::from_reference(&endpoint.reference)?,
            insecure: endpoint.insecure,
            blocked: endpoint.blocked,
            is_mirror: endpoint.is_mirror,
        })
    }

    /// The pull sources for `podstore_reference::RegistriesConfig::pull_sources(reference)`, in order.
    pub fn from_endpoints(endpoints: &[Endpoint]) -> Result<Vec<PullSource>> {
        endpoints.iter().map(PullSource::from_endpoint).collect()
    }

    /// The primary source for `location` (secure, not blocked).
    pub fn primary(location: ImageLocation) -> PullSource {
        PullSource {
            location,
            insecure: false,
            blocked: false,
            is_mirror: false,
        }
    }
}

/// Configuration of a [`Registries`] factory.
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    /// Client tunables.
    pub options: ClientOptions,
    /// Where certs.d directories are.
    pub cert_dirs: CertDirs,
    /// Auth files to search.
    pub auth_files: AuthFiles,
    /// Explicit credentials for one registry host (CRI `AuthConfig`): used as-is for that host,
    /// never sent to other hosts (mirrors look theirs up in the auth files).
    pub explicit_credentials: Option<(String, Credentials)>,
}

/// Builds registry clients and resolves pull sources.
#[derive(Debug)]
pub struct Registries {
    config: AccessConfig,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The endpoint whose manifest GET succeeded first: use its client for everything else.
#[derive(Debug)]
pub struct Resolved {
    /// The client for the chosen endpoint.
    pub client: Arc<RegistryClient>,
    /// The chosen source.
    pub source: PullSource,
    /// The manifest it served for the source's target.
    pub manifest: Manifest,
}

impl Resolved {
    /// The image manifest for `selector`: the resolved manifest itself, or, when it is an index,
    /// the chosen instance fetched from the same endpoint and verified by its digest.
    pub async fn image_manifest(&self, selector: &PlatformSelector) -> Result<Manifest> {
        if !self.manifest.kind.is_index() {
            return Ok(self.manifest.clone());
        }
        let entries = self.manifest.index_entries()?;
        let chosen = selector.choose(self.manifest.kind, &entries)?;
        let instance = self
            .client
            .get_manifest(
                &self.source.location.repository,
                &ManifestTarget::Digest(chosen.digest.clone()),
            )
            .await?;
        if instance.kind.is_index() {
            return Err(RegistryError::InvalidManifest {
                reference: format!("{}@{}", self.source.location.name(), chosen.digest),
                reason:
                    "Unexpectedly received a manifest list instead of a manifest for a single image"
                        .to_owned(),
            });
        }
        Ok(instance)
    }
}

impl Registries {
    /// A factory with this configuration.
    pub fn new(config: AccessConfig) -> Registries {
        Registries {
            config,
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AccessConfig {
        &self.config
    }

    fn semaphore(&self, registry: &str) -> Arc<Semaphore> {
        let n = self.config.options.max_concurrent_requests.max(1);
        match self.semaphores.lock() {
            Ok(mut map) => Arc::clone(
                map.entry(registry.to_owned())
                    .or_insert_with(|| Arc::new(Semaphore::new(n))),
            ),
            Err(_) => Arc::new(Semaphore::new(n)),
        }
    }

    /// A client for `location`'s registry: TLS from certs.d, credentials for `location.name()`
    /// (explicit ones only on their own host), the registry's shared request semaphore.
    pub async fn client_for(
        &self,
        location: &ImageLocation,
        insecure: bool,
    ) -> Result<RegistryClient> {
        let tls = self.config.cert_dirs.load(&location.registry)?;
        let credentials = match &self.config.explicit_credentials {
            Some((host, creds)) if host == &location.registry => Some(creds.clone()),
            _ => {
                let files = self.config.auth_files.clone();
                let key = location.name();
                // Auth files and credential helpers are blocking I/O.
                tokio::task::spawn_blocking(move || files.lookup(&key))
                    .await
                    .map_err(|e| RegistryError::Credentials {
                        key: location.name(),
                        message: format!("lookup task failed: {e}"),
                    })??
            }
        };
        RegistryClient::with_semaphore(
            EndpointConfig {
                registry: location.registry.clone(),
                insecure,
                credentials,
                tls,
            },
            self.config.options.clone(),
            self.semaphore(&location.registry),
        )
    }

    /// Tries `sources` in order (mirrors, then the primary; blocked ones skipped): the first
    /// whose manifest GET succeeds wins. With one source its error is returned unchanged;
    /// with several, [`RegistryError::AllSourcesFailed`] lists every attempt.
    pub async fn resolve(&self, sources: &[PullSource]) -> Result<Resolved> {
        let mut failures: Vec<(String, RegistryError)> = Vec::new();
        for source in sources {
            let name = source.location.to_string();
            if source.blocked {
                failures.push((
                    name,
                    RegistryError::Blocked {
                        registry: source.location.registry.clone(),
                    },
                ));
                continue;
            }
            tracing::info!("Trying to access {name:?}");
            let attempt = async {
                let client = self.client_for(&source.location, source.insecure).await?;
                let manifest = client
                    .get_manifest(&source.location.repository, &source.location.target)
                    .await?;
                Ok::<_, RegistryError>((client, manifest))
            };
            match attempt.await {
                Ok((client, manifest)) => {
                    return Ok(Resolved {
                        client: Arc::new(client),
                        source: source.clone(),
                        manifest,
                    });
                }
                Err(e) => failures.push((name, e)),
            }
        }
        let Some((primary, error)) = failures.pop() else {
            return Err(RegistryError::InvalidInput {
                what: "pull sources",
                input: String::new(),
                reason: "no source to pull from".to_owned(),
            });
        };
        if failures.is_empty() {
            return Err(error);
        }
        Err(RegistryError::AllSourcesFailed {
            mirrors: failures,
            primary,
            error: Box::new(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_from_references() {
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let cases = [
            (
                "busybox",
                "docker.io",
                "library/busybox",
                "latest".to_owned(),
            ),
            ("quay.io/ns/img:v1", "quay.io", "ns/img", "v1".to_owned()),
            (
                "127.0.0.1:5000/a/b:t",
                "127.0.0.1:5000",
                "a/b",
                "t".to_owned(),
            ),
            (&format!("quay.io/x:tag@{d}"), "quay.io", "x", d.to_owned()),
        ];
        for (input, registry, repo, target) in cases {
            let r = Reference::parse_normalized(input).unwrap();
            let loc = ImageLocation::from_reference(&r).unwrap();
            assert_eq!(
                (loc.registry.as_str(), loc.repository.as_str()),
                (registry, repo),
                "{input}"
            );
            assert_eq!(loc.target.to_string(), target, "{input}");
        }
        let r = Reference::parse_normalized("quay.io/ns/img:v1").unwrap();
        let endpoint = Endpoint {
            location: "mirror.local:5000/quay".to_owned(),
            reference: Reference::parse_normalized("mirror.local:5000/quay/ns/img:v1").unwrap(),
            insecure: true,
            is_mirror: true,
            blocked: false,
        };
        let source = PullSource::from_endpoint(&endpoint).unwrap();
        assert_eq!(
            source.location.to_string(),
            "mirror.local:5000/quay/ns/img:v1"
        );
        assert!(source.insecure && source.is_mirror && !source.blocked);
        assert_eq!(
            ImageLocation::try_from(&r).unwrap().name(),
            "quay.io/ns/img"
        );
    }
}
