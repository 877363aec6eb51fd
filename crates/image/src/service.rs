//! [`ImageService`]: the seed's `ImageServer` over one [`Store`] — construction from
//! [`ImageServiceOptions`] (CRI-O's `GetImageService`), `resolve_names`, `list_images`,
//! `image_status`, `untag_image`, and the image cache of immutable per-ID facts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use podstore_metadata::{Error as StoreError, NamesOp, Store};
use podstore_reference::{
    InsecureRegistries, RegistriesConfig, ResolveError, ResolveOptions, ShortNameMode,
};
use podstore_registry::{AuthFiles, CertDirs, ClientOptions, Registries};

use crate::error::{ImageError, Result};
use crate::lookup::{
    FoundImage, find_local_image, local_id_for, parse_local_reference, resolve_local,
};
use crate::result::{ImageFacts, ImageResult, build_result, facts_from, layers_by_id, load_facts};

/// How to build an [`ImageService`] (CRI-O's `GetImageService` arguments plus the system
/// context's registries.conf, auth file and certificate directory).
#[derive(Debug, Clone)]
pub struct ImageServiceOptions {
    /// Prepended to a pull source that names no transport; CRI-O's default is `docker://`.
    /// Empty means such names are refused.
    pub default_transport: String,
    /// Insecure registries: exact `host[:port]` keys or CIDR networks; `127.0.0.0/8` (and
    /// `::1`) are always added.
    pub insecure_registries: Vec<String>,
    /// The service's own search registries (CRI-O's deprecated `registries`), tried before
    /// registries.conf's `unqualified-search-registries`; duplicates are dropped.
    pub search_registries: Vec<String>,
    /// An explicit registries.conf (it must exist); `None` reads the system configuration
    /// (a missing system file is fine).
    pub registries_conf: Option<PathBuf>,
    /// An explicit auth file (podman's `--authfile`); `None` searches the default auth files.
    pub auth_file: Option<PathBuf>,
    /// A certificate directory used for every registry (skopeo's `--cert-dir`); `None` uses the
    /// certs.d directories.
    pub cert_dir: Option<PathBuf>,
    /// Registry client tunables (concurrency per registry, retries, stall timeout).
    pub client_options: ClientOptions,
    /// How many layer blobs of one pull are downloaded at once.
    pub max_concurrent_downloads: usize,
    /// Keep compressed layer blobs (under `<graphroot>/podstore-blobs`) after their layer is
    /// committed.
    pub keep_compressed_blobs: bool,
}

impl Default for ImageServiceOptions {
    fn default() -> Self {
        ImageServiceOptions {
            default_transport: "docker://".to_owned(),
            insecure_registries: Vec::new(),
            search_registries: Vec::new(),
            registries_conf: None,
            auth_file: None,
            cert_dir: None,
            client_options: ClientOptions::default(),
            max_concurrent_downloads: 3,
            keep_compressed_blobs: false,
        }
    }
}

/// CRI-O's image server over one store. Cheap to share (`&self` everywhere).
#[derive(Debug)]
pub struct ImageService {
    pub(crate) store: Arc<Store>,
    pub(crate) options: ImageServiceOptions,
    pub(crate) search_registries: Vec<String>,
    pub(crate) registries_conf: RegistriesConfig,
    pub(crate) insecure: InsecureRegistries,
    pub(crate) registries: Registries,
    cache: Mutex<HashMap<String, ImageFacts>>,
}

impl ImageService {
    /// Builds the service (CRI-O's `GetImageService`): loads registries.conf (an explicit path
    /// that does not exist is an error), de-duplicates the search registries, classifies the
    /// insecure registries. Nothing is written to the store.
    pub fn new(store: Arc<Store>, options: ImageServiceOptions) -> Result<ImageService> {
        let registries_conf = match &options.registries_conf {
            Some(path) => RegistriesConfig::from_file(path),
            None => RegistriesConfig::load_system(),
        }
        .map_err(|source| ImageError::RegistriesConf {
            source: Box::new(source),
        })?;
        let mut search_registries: Vec<String> = Vec::new();
        for r in &options.search_registries {
            if !search_registries.contains(r) {
                search_registries.push(r.clone());
            }
        }
        let insecure = InsecureRegistries::new(&options.insecure_registries);
        // The access configuration is built field by field (its type is inferred from
        // `Registries::new`), so this code does not depend on the type's name.
        let mut access = Registries::new(Default::default()).config().clone();
        access.options = options.client_options.clone();
        access.cert_dirs = match &options.cert_dir {
            Some(dir) => CertDirs::Fixed(dir.clone()),
            None => CertDirs::default(),
        };
        access.auth_files = match &options.auth_file {
            Some(file) => AuthFiles::explicit(file.clone()),
            None => AuthFiles::from_env(),
        };
        access.explicit_credentials = None;
        let registries = Registries::new(access);
        Ok(ImageService {
            store,
            options,
            search_registries,
            registries_conf,
            insecure,
            registries,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The store the service uses (and pulls into).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The options it was built with.
    pub fn options(&self) -> &ImageServiceOptions {
        &self.options
    }

    /// The service's search registries (de-duplicated, in order).
    pub fn search_registries(&self) -> &[String] {
        &self.search_registries
    }

    /// The loaded registries configuration.
    pub fn registries_config(&self) -> &RegistriesConfig {
        &self.registries_conf
    }

    /// Whether `registry` (`host[:port]`) is insecure (CRI-O's rule without DNS: exact keys,
    /// then IP literals and `localhost` against the insecure networks).
    pub fn is_insecure_registry(&self, registry: &str) -> bool {
        self.insecure.is_insecure(registry)
    }

    /// CRI-O's `ResolveNames`: a local image whose ID starts with `name` (≥ 3 characters) gives
    /// `[its full ID]`; otherwise the candidates of short-name resolution (blocked registries
    /// are not enforced here, §10.6; duplicates are dropped, §10.14).
    pub fn resolve_names(&self, name: &str) -> Result<Vec<String>> {
        if let Some(id) = local_id_for(&self.store, name)? {
            return Ok(vec![id]);
        }
        let options = ResolveOptions {
            search_registries: self.search_registries.clone(),
            short_name_mode: Some(ShortNameMode::Disabled),
            enforce_blocked: false,
        };
        match podstore_reference::resolve_names(name, &self.registries_conf, &options) {
            Ok(resolution) => Ok(resolution
                .candidates
                .iter()
                .map(ToString::to_string)
                .collect()),
            Err(ResolveError::CannotParseImageId { input }) => {
                Err(ImageError::CannotParseImageId { input })
            }
            Err(ResolveError::NoRegistriesConfigured { input }) => {
                Err(ImageError::NoRegistriesConfigured { input })
            }
            Err(ResolveError::InvalidReference(source)) => Err(ImageError::InvalidReference {
                input: name.to_owned(),
                source: Box::new(source),
            }),
            Err(source) => Err(ImageError::Resolve {
                input: name.to_owned(),
                source: Box::new(source),
            }),
        }
    }

    fn cached_facts(&self, id: &str) -> Option<ImageFacts> {
        self.cache.lock().ok().and_then(|c| c.get(id).cloned())
    }

    fn remember_facts(&self, id: &str, facts: &ImageFacts) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(id.to_owned(), facts.clone());
        }
    }

    /// The facts of a found image, from the cache or the store (then cached). A digested
    /// look-up whose own manifest is stored reads that manifest and bypasses the cache.
    fn facts_for(&self, found: &FoundImage) -> Result<ImageFacts> {
        let id = &found.record.id;
        if found.manifest_key == "manifest" {
            if let Some(facts) = self.cached_facts(id) {
                return Ok(facts);
            }
            let facts = load_facts(&self.store, &found.record, "manifest")?;
            self.remember_facts(id, &facts);
            return Ok(facts);
        }
        load_facts(&self.store, &found.record, &found.manifest_key)
    }

    /// Status of one local image (name, ID or unique ID prefix; `containers-storage:` allowed;
    /// remote transports refused). "image not known" names the input. Names, tags and digests
    /// come from the current record; size and config from the cache (§10.2).
    pub fn image_status(&self, name_or_id: &str) -> Result<ImageResult> {
        let found = find_local_image(&self.store, name_or_id)?;
        let facts = self.facts_for(&found)?;
        Ok(build_result(
            &found.record,
            found.requested_digest.as_ref(),
            &facts,
        ))
    }

    /// Lists images. With an empty filter: every complete image in store order (images still
    /// being pulled, i.e. without a `manifest` item, are skipped, §10.1), and the cache is
    /// replaced by the facts of exactly these images. With a filter: the one image it names
    /// (as in [`ImageService::image_status`]), or an empty list when there is none.
    pub fn list_images(&self, filter: &str) -> Result<Vec<ImageResult>> {
        if !filter.is_empty() {
            let reference = parse_local_reference(&self.store, filter)?;
            let Some(found) = resolve_local(&self.store, &reference)? else {
                return Ok(Vec::new());
            };
            let facts = self.facts_for(&found)?;
            return Ok(vec![build_result(
                &found.record,
                found.requested_digest.as_ref(),
                &facts,
            )]);
        }
        // One read of the records (layers, then images, under their read locks until the
        // listing is built) and of each new image's manifest and config: O(images + layers).
        let snapshot = self.store.image_snapshot()?;
        let layers = layers_by_id(snapshot.layers());
        let old = self.cache.lock().map(|c| c.clone()).unwrap_or_default();
        let mut new_cache = HashMap::new();
        let mut results = Vec::with_capacity(snapshot.images().len());
        for record in snapshot.images() {
            if !record.big_data_names.iter().any(|k| k == "manifest") {
                tracing::debug!(
                    "skipping image {} without a manifest (being pulled?)",
                    record.id
                );
                continue;
            }
            let facts = match old.get(&record.id) {
                Some(facts) => facts.clone(),
                None => match facts_from(
                    record,
                    "manifest",
                    |key| snapshot.big_data(record, key),
                    &layers,
                ) {
                    Ok(facts) => facts,
                    // An image whose config item is missing is skipped rather than failing
                    // the whole list (as when it was read while being rewritten).
                    Err(ImageError::Store(
                        StoreError::ImageUnknown { .. } | StoreError::BigDataUnknown { .. },
                    )) => continue,
                    Err(e) => return Err(e),
                },
            };
            results.push(build_result(record, None, &facts));
            new_cache.insert(record.id.clone(), facts);
        }
        drop(snapshot);
        if let Ok(mut cache) = self.cache.lock() {
            *cache = new_cache;
        }
        Ok(results)
    }

    /// Removes one name (CRI-O's `UntagImage` with the fixes of §10.9–10.10): by name, exactly
    /// that name (normalised, or as typed) is removed atomically, and the image is deleted only
    /// when no name remains; by full ID or unique ID prefix, the image is deleted whatever its
    /// names. Deleting also removes its now-unused layers and is refused while a container
    /// uses the image ([`ImageError::ImageInUse`], names unchanged). Remote transports are
    /// refused.
    pub fn untag_image(&self, name_or_id: &str) -> Result<()> {
        let reference = parse_local_reference(&self.store, name_or_id)?;
        let found =
            resolve_local(&self.store, &reference)?.ok_or_else(|| ImageError::ImageNotKnown {
                input: name_or_id.to_owned(),
            })?;
        let id = found.record.id.clone();
        let by_id = reference.name.is_none() && reference.id.is_some();
        if !by_id {
            let mut remove: Vec<String> = vec![name_or_id.to_owned()];
            if let Some(name) = &reference.name {
                remove.push(name.to_string());
            }
            let remaining = found
                .record
                .names
                .iter()
                .filter(|n| !remove.contains(n))
                .count();
            if remaining > 0 {
                let updated = self
                    .store
                    .update_image_names(&id, &remove, NamesOp::Remove)?;
                if !updated.names.is_empty() {
                    return Ok(());
                }
                // Someone removed the other names meanwhile: fall through and delete.
            }
        }
        match self.store.delete_image(&id, true) {
            Ok(_) => {
                if let Ok(mut cache) = self.cache.lock() {
                    cache.remove(&id);
                }
                Ok(())
            }
            Err(StoreError::ImageInUse { id, containers }) => Err(ImageError::ImageInUse {
                input: name_or_id.to_owned(),
                id,
                containers,
            }),
            Err(StoreError::ImageUnknown { .. }) => Err(ImageError::ImageNotKnown {
                input: name_or_id.to_owned(),
            }),
            Err(e) => Err(e.into()),
        }
    }
}
