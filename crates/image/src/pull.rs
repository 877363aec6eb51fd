//! `pull_image`: copies an image from a `docker://` registry or an `oci:` layout into the
//! store, recording it exactly as containers/image's storage destination does
//! (containers-storage-format §3): image ID = config digest hex; layer IDs `hex(diffID)` then
//! `sha256(parent + "+" + hex(diffID))`; `compressed-diff-digest`/`diff-digest` filled so
//! podman reuses the layers; big data `sha256:<config>`, `manifest-<top digest>` (list pulls),
//! `manifest-<digest>`, `manifest` and an empty `signature-<hex>`; metadata `{"signatures-sizes":{"<digest>":[]}}` as
//! containers/image 5.23 writes it; the `digest` field is the top-level
//! manifest digest; the name added with add-names.
//!
//! Pipeline: layers already in the store are reused without download; the missing layer
//! blobs download concurrently (bounded by [`crate::ImageServiceOptions::max_concurrent_downloads`]
//! and the registry's request semaphore) into a resumable, verified, cross-process singleflight
//! blob store under `<graphroot>/podstore-blobs`; each layer is applied (decompressed and
//! unpacked through the driver) as soon as its blob and its parent are there, while later blobs
//! keep downloading; the image record is committed only after every layer. Compressed blobs
//! are deleted once their layer is committed unless configured to keep them.

use std::fs::File;
use std::sync::Arc;

use podstore_blobstore::{BlobError, BlobStore, OciImageSelector, OciLayout, OciReference};
use podstore_metadata::{
    BigDataItem, Error as StoreError, GoTime, ImageOptions, LayerOptions, NamesOp, Store,
};
use podstore_reference::{Digest, Reference};
use podstore_registry::{
    BlobRef, ManifestKind, ManifestTarget, PlatformSelector, ProgressEvent, PullSource,
    RegistryClient, RegistryError,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::error::{ImageError, Result};
use crate::lookup::STORAGE_TRANSPORT;
use crate::result::{ManifestInfo, parse_manifest};
use crate::service::ImageService;

/// Largest manifest or config accepted from a source.
const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;

/// Directory under the graph root holding downloaded compressed blobs.
pub const BLOB_DIR: &str = "podstore-blobs";

/// How to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// The platform to choose from an index; `None` is this host.
    pub platform: Option<PlatformSelector>,
    /// The name to record for a source that has no registry name (an `oci:` layout); `None`
    /// leaves such an image unnamed. Ignored for `docker://` sources.
    pub destination_name: Option<String>,
    /// Where to send progress events (advisory; a full channel drops events).
    pub progress: Option<mpsc::Sender<PullEvent>>,
}

/// A progress event of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PullEvent {
    /// A layer blob download made progress.
    Download(ProgressEvent),
    /// Layer `index` (manifest order) was already in the store.
    LayerReused {
        /// Position in the manifest.
        index: usize,
        /// The store layer ID.
        layer_id: String,
    },
    /// Layer `index` was applied and committed.
    LayerApplied {
        /// Position in the manifest.
        index: usize,
        /// The store layer ID.
        layer_id: String,
    },
}

/// What a pull produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image ID (the config digest's hex).
    pub id: String,
    /// The name recorded (`docker.io/library/busybox:latest`, `…@sha256:…`), if any.
    pub name: Option<String>,
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// The top-level manifest's digest (the index's when the source was an index).
    pub top_digest: Digest,
    /// Store layer IDs, bottom first.
    pub layer_ids: Vec<String>,
    /// How many layers were already present.
    pub layers_reused: usize,
    /// Whether the image record already existed (only names and big data were updated).
    pub image_existed: bool,
}

/// A pull source opened without pulling (CRI-O's `PrepareImage`): its manifests and config,
/// fetched and verified, so that the config digest can be compared with a local image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedImage {
    /// The name a pull would record (`None` for a layout without a destination name).
    pub name: Option<String>,
    /// The top-level manifest (an index for multi-arch images) digest.
    pub top_digest: Digest,
    /// The chosen image manifest's digest.
    pub manifest_digest: Digest,
    /// The image manifest's bytes.
    pub manifest: Vec<u8>,
    /// The config digest (its hex is the image ID a pull would create).
    pub config_digest: Digest,
    /// The config bytes.
    pub config: Vec<u8>,
}

/// A parsed pull source.
#[derive(Debug, Clone)]
enum SourceRef {
    Docker(Reference),
    Layout(OciReference),
}

/// Where the bytes come from once the manifest is chosen.
enum Fetcher {
    Registry {
        client: Arc<RegistryClient>,
        repository: String,
    },
    Layout(OciLayout),
}

/// Everything known about the image before layers are written.
struct SourceImage {
    source_name: String,
    top_bytes: Vec<u8>,
    top_digest: Digest,
    manifest_bytes: Vec<u8>,
    manifest_digest: Digest,
    manifest: ManifestInfo,
    config_digest: Digest,
    config_bytes: Vec<u8>,
    fetcher: Fetcher,
}

fn blob_err(input: &str) -> impl Fn(BlobError) -> ImageError + '_ {
    move |source| ImageError::Blob {
        input: input.to_owned(),
        source: Box::new(source),
    }
}

fn registry_err(input: &str) -> impl Fn(RegistryError) -> ImageError + '_ {
    move |source| ImageError::Registry {
        input: input.to_owned(),
        source: Box::new(source),
    }
}

fn task_err(what: &'static str, input: &str, e: tokio::task::JoinError) -> ImageError {
    ImageError::Task {
        what,
        input: input.to_owned(),
        reason: e.to_string(),
    }
}

/// Reads a blob of a layout, at most `limit` bytes, verified against `digest`.
fn read_layout_blob(
    layout: &OciLayout,
    digest: &Digest,
    limit: u64,
    input: &str,
) -> Result<Vec<u8>> {
    use std::io::Read;
    let file = layout.blobs().open_blob(digest).map_err(blob_err(input))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::BadSource {
            source_name: input.to_owned(),
            reason: format!("reading blob {digest}: {e}"),
        })?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::BadSource {
            source_name: input.to_owned(),
            reason: format!("blob {digest} is larger than {limit} bytes"),
        });
    }
    let actual = Digest::of(digest.algorithm(), &bytes);
    if &actual != digest {
        return Err(ImageError::BadSource {
            source_name: input.to_owned(),
            reason: format!("blob {digest} has digest {actual}"),
        });
    }
    Ok(bytes)
}

/// The media type of a manifest document (from its `mediaType`, else its shape).
fn manifest_kind(bytes: &[u8]) -> Option<ManifestKind> {
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(mt) = json.get("mediaType").and_then(serde_json::Value::as_str)
        && let Some(kind) = ManifestKind::from_media_type(mt)
    {
        return Some(kind);
    }
    if json.get("manifests").is_some() {
        Some(ManifestKind::from_media_type(
            podstore_registry::media::OCI_INDEX,
        )?)
    } else {
        Some(ManifestKind::from_media_type(
            podstore_registry::media::OCI_MANIFEST,
        )?)
    }
}

/// containers/storage layer IDs: `hex(d0)`, then `sha256(parent + "+" + hex(d))`.
pub fn layer_ids(diff_ids: &[Digest]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let id = match out.last() {
            None => d.hex().to_owned(),
            Some(parent) => Digest::sha256_of(format!("{parent}+{}", d.hex()).as_bytes())
                .hex()
                .to_owned(),
        };
        out.push(id);
    }
    out
}

/// The config's `rootfs.diff_ids` and `created`.
fn parse_config(bytes: &[u8], source_name: &str) -> Result<(Vec<Digest>, Option<GoTime>)> {
    let bad = |reason: String| ImageError::BadSource {
        source_name: source_name.to_owned(),
        reason,
    };
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("config is not JSON: {e}")))?;
    let diff_ids = json
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("config has no rootfs.diff_ids".to_owned()))?
        .iter()
        .map(|v| {
            v.as_str()
                .ok_or_else(|| bad("a diff_id is not a string".to_owned()))
                .and_then(|s| Digest::parse(s).map_err(|e| bad(format!("diff_id: {e}"))))
        })
        .collect::<Result<Vec<_>>>()?;
    let created = json
        .get("created")
        .and_then(serde_json::Value::as_str)
        .and_then(GoTime::parse);
    Ok((diff_ids, created))
}

impl ImageService {
    fn parse_source(&self, input: &str) -> Result<(SourceRef, Option<String>)> {
        if input.is_empty() {
            return Err(ImageError::InvalidImageName {
                input: String::new(),
                reason: "empty image name".to_owned(),
            });
        }
        if input.starts_with("oci:") {
            let r = OciReference::parse(input).map_err(blob_err(input))?;
            return Ok((SourceRef::Layout(r), None));
        }
        if let Some(rest) = input.strip_prefix("docker://") {
            let reference = Reference::parse_normalized(rest).map_err(|source| {
                ImageError::InvalidReference {
                    input: input.to_owned(),
                    source: Box::new(source),
                }
            })?;
            // `name:tag@digest` is pulled by digest and recorded as `name@digest`, as podman does
            // (containers/image's docker transport itself refuses it).
            let reference = reference.without_tag_if_digested().tag_or_latest();
            let name = reference.to_string();
            return Ok((SourceRef::Docker(reference), Some(name)));
        }
        if input.starts_with(STORAGE_TRANSPORT) {
            return Err(ImageError::UnsupportedTransport {
                input: input.to_owned(),
                transport: "containers-storage".to_owned(),
            });
        }
        if let Some((transport, _)) = input.split_once(':')
            && [
                "docker",
                "docker-archive",
                "docker-daemon",
                "oci-archive",
                "dir",
                "tarball",
                "atomic",
                "ostree",
            ]
            .contains(&transport)
        {
            return Err(ImageError::UnsupportedTransport {
                input: input.to_owned(),
                transport: transport.to_owned(),
            });
        }
        let default = &self.options.default_transport;
        if default.is_empty() || input.starts_with(default.as_str()) {
            return Err(ImageError::InvalidImageName {
                input: input.to_owned(),
                reason: "no transport and no default transport".to_owned(),
            });
        }
        self.parse_source(&format!("{default}{input}"))
    }

    async fn open_source(
        &self,
        input: &str,
        source: &SourceRef,
        selector: &PlatformSelector,
    ) -> Result<SourceImage> {
        let source_name = input.to_owned();
        let (top_bytes, top_digest, fetcher) = match source {
            SourceRef::Docker(reference) => {
                let endpoints = self
                    .registries_conf
                    .pull_sources(reference)
                    .map_err(|source| ImageError::PullSource {
                        input: input.to_owned(),
                        source: Box::new(source),
                    })?;
                let mut sources =
                    PullSource::from_endpoints(&endpoints).map_err(registry_err(input))?;
                for s in &mut sources {
                    if self.insecure.is_insecure(&s.location.registry) {
                        s.insecure = true;
                    }
                }
                let resolved = self
                    .registries
                    .resolve(&sources)
                    .await
                    .map_err(registry_err(input))?;
                let repository = resolved.source.location.repository.clone();
                (
                    resolved.manifest.bytes,
                    resolved.manifest.digest,
                    Fetcher::Registry {
                        client: resolved.client,
                        repository,
                    },
                )
            }
            SourceRef::Layout(oci) => {
                let layout = OciLayout::open(&oci.path).map_err(blob_err(input))?;
                let descriptor = match &oci.selector {
                    OciImageSelector::Only => layout.resolve(""),
                    other => layout.resolve_selector(other),
                }
                .map_err(blob_err(input))?;
                let digest = Digest::parse(descriptor.digest().as_ref()).map_err(|e| {
                    ImageError::BadSource {
                        source_name: source_name.clone(),
                        reason: format!("index.json descriptor: {e}"),
                    }
                })?;
                let bytes = read_layout_blob(&layout, &digest, MAX_DOCUMENT_BYTES, input)?;
                (bytes, digest, Fetcher::Layout(layout))
            }
        };
        let bad = |reason: String| ImageError::BadSource {
            source_name: source_name.clone(),
            reason,
        };
        let (manifest_bytes, manifest_digest) = match manifest_kind(&top_bytes) {
            Some(kind) if kind.is_index() => {
                let entries = podstore_registry::platform::parse_index_entries(
                    &top_bytes,
                    &top_digest.to_string(),
                )
                .map_err(registry_err(input))?;
                let chosen = selector
                    .choose(kind, &entries)
                    .map_err(registry_err(input))?;
                let digest = chosen.digest.clone();
                let bytes = self.fetch_document(&fetcher, &digest, true, input).await?;
                (bytes, digest)
            }
            Some(_) => (top_bytes.clone(), top_digest.clone()),
            None => return Err(bad("the manifest is not JSON".to_owned())),
        };
        let manifest = parse_manifest(&manifest_bytes, "manifest").map_err(&bad)?;
        if manifest.schema1 {
            return Err(bad("Docker schema1 manifests are not supported".to_owned()));
        }
        let Some((config_digest, _)) = manifest.config.clone() else {
            return Err(bad("the manifest has no config".to_owned()));
        };
        let config_bytes = self
            .fetch_document(&fetcher, &config_digest, false, input)
            .await?;
        Ok(SourceImage {
            source_name,
            top_bytes,
            top_digest,
            manifest_bytes,
            manifest_digest,
            manifest,
            config_digest,
            config_bytes,
            fetcher,
        })
    }

    /// Fetches a manifest (`is_manifest`) or a config blob by digest, verified.
    async fn fetch_document(
        &self,
        fetcher: &Fetcher,
        digest: &Digest,
        is_manifest: bool,
        input: &str,
    ) -> Result<Vec<u8>> {
        match fetcher {
            Fetcher::Registry { client, repository } => {
                if is_manifest {
                    let m = client
                        .get_manifest(repository, &ManifestTarget::Digest(digest.clone()))
                        .await
                        .map_err(registry_err(input))?;
                    Ok(m.bytes)
                } else {
                    client
                        .fetch_blob_bytes(repository, digest, MAX_DOCUMENT_BYTES)
                        .await
                        .map_err(registry_err(input))
                }
            }
            Fetcher::Layout(layout) => read_layout_blob(layout, digest, MAX_DOCUMENT_BYTES, input),
        }
    }

    /// Opens a pull source without writing anything (CRI-O's `PrepareImage`): resolves `name`
    /// as [`ImageService::pull_image`] does, fetches and verifies the top-level manifest, the
    /// platform's image manifest and the config.
    pub async fn prepare_image(&self, name: &str, options: &PullOptions) -> Result<PreparedImage> {
        let (source, docker_name) = self.parse_source(name)?;
        let selector = options
            .platform
            .clone()
            .unwrap_or_else(PlatformSelector::host);
        let src = self.open_source(name, &source, &selector).await?;
        Ok(PreparedImage {
            name: docker_name.or_else(|| options.destination_name.clone()),
            top_digest: src.top_digest,
            manifest_digest: src.manifest_digest,
            manifest: src.manifest_bytes,
            config_digest: src.config_digest,
            config: src.config_bytes,
        })
    }

    /// Pulls `name` into the store (CRI-O's `PullImage`): `docker://REF`, `oci:PATH[:NAME]`, or a
    /// name without transport, which gets the default transport. See the module docs for what
    /// is recorded. On failure the store holds no new image record (layers committed before the
    /// failure stay, as with containers/image, and are reused by the next pull).
    pub async fn pull_image(&self, name: &str, options: &PullOptions) -> Result<PulledImage> {
        let (source, docker_name) = self.parse_source(name)?;
        let destination_name = docker_name.or_else(|| options.destination_name.clone());
        let selector = options
            .platform
            .clone()
            .unwrap_or_else(PlatformSelector::host);
        let src = self.open_source(name, &source, &selector).await?;
        let (diff_ids, created) = parse_config(&src.config_bytes, &src.source_name)?;
        if diff_ids.len() != src.manifest.layers.len() {
            return Err(ImageError::BadSource {
                source_name: src.source_name.clone(),
                reason: format!(
                    "the manifest has {} layers but the config {} diff_ids",
                    src.manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        let ids = layer_ids(&diff_ids);
        let image_id = src.config_digest.hex().to_owned();
        let top_layer = ids.last().cloned();

        let store = Arc::clone(&self.store);
        let existing = {
            let store = Arc::clone(&store);
            let id = image_id.clone();
            tokio::task::spawn_blocking(move || match store.image(&id) {
                Ok(image) if image.id == id => Ok(Some(image)),
                Ok(_)
                | Err(StoreError::ImageUnknown { .. } | StoreError::AmbiguousPrefix { .. }) => {
                    Ok(None)
                }
                Err(e) => Err(ImageError::from(e)),
            })
            .await
            .map_err(|e| task_err("image lookup", name, e))??
        };
        if let Some(image) = &existing {
            let pulled_top = top_layer.clone().unwrap_or_default();
            if image.layer != pulled_top {
                return Err(ImageError::DifferentTopLayer {
                    id: image_id,
                    existing: image.layer.clone(),
                    pulled: pulled_top,
                });
            }
        }

        let layers_reused = if existing.is_some() {
            ids.len()
        } else {
            self.write_layers(name, &src, &diff_ids, &ids, options)
                .await?
        };

        let mut big_data = vec![BigDataItem {
            key: src.config_digest.to_string(),
            data: src.config_bytes.clone(),
            digest: None,
        }];
        if src.top_digest != src.manifest_digest {
            big_data.push(BigDataItem {
                key: format!("manifest-{}", src.top_digest),
                data: src.top_bytes.clone(),
                digest: Some(src.top_digest.clone()),
            });
        }
        big_data.push(BigDataItem {
            key: format!("manifest-{}", src.manifest_digest),
            data: src.manifest_bytes.clone(),
            digest: Some(src.manifest_digest.clone()),
        });
        big_data.push(BigDataItem {
            key: "manifest".to_owned(),
            data: src.manifest_bytes.clone(),
            digest: Some(src.manifest_digest.clone()),
        });
        // containers/image 5.23 stores the (empty) signatures of the instance too.
        big_data.push(BigDataItem {
            key: format!("signature-{}", src.manifest_digest.hex()),
            data: Vec::new(),
            digest: None,
        });
        let image_existed = {
            let store = Arc::clone(&store);
            let image_id = image_id.clone();
            let top_digest = src.top_digest.clone();
            let manifest_digest = src.manifest_digest.clone();
            let destination_name = destination_name.clone();
            let top_layer = top_layer.clone();
            tokio::task::spawn_blocking(move || {
                commit_image(
                    &store,
                    &image_id,
                    top_layer,
                    created,
                    top_digest,
                    manifest_digest,
                    big_data,
                    destination_name,
                )
            })
            .await
            .map_err(|e| task_err("committing the image", name, e))??
        };
        Ok(PulledImage {
            id: image_id,
            name: destination_name,
            manifest_digest: src.manifest_digest,
            top_digest: src.top_digest,
            layer_ids: ids,
            layers_reused,
            image_existed: image_existed || existing.is_some(),
        })
    }

    /// A blocking [`ImageService::pull_image`] on a private multi-threaded runtime (for callers
    /// without one; do not call it from inside a tokio runtime).
    pub fn pull_image_blocking(&self, name: &str, options: &PullOptions) -> Result<PulledImage> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ImageError::Task {
                what: "starting the pull runtime",
                input: name.to_owned(),
                reason: e.to_string(),
            })?;
        runtime.block_on(self.pull_image(name, options))
    }

    /// Creates the missing layers, downloading their blobs concurrently and applying each in
    /// order as soon as it is there. Returns how many layers were reused.
    async fn write_layers(
        &self,
        input: &str,
        src: &SourceImage,
        diff_ids: &[Digest],
        ids: &[String],
        options: &PullOptions,
    ) -> Result<usize> {
        let store = Arc::clone(&self.store);
        let present: Vec<bool> = {
            let store = Arc::clone(&store);
            let ids = ids.to_vec();
            tokio::task::spawn_blocking(move || {
                ids.iter()
                    .map(|id| store.layer_exists(id))
                    .collect::<std::result::Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| task_err("layer lookup", input, e))??
        };
        let reused = present.iter().filter(|p| **p).count();
        if reused == ids.len() {
            for (index, id) in ids.iter().enumerate() {
                send(
                    options,
                    PullEvent::LayerReused {
                        index,
                        layer_id: id.clone(),
                    },
                );
            }
            return Ok(reused);
        }

        // Where each missing blob will be read from.
        let blob_store = match &src.fetcher {
            Fetcher::Layout(layout) => layout.blobs().clone(),
            Fetcher::Registry { .. } => {
                let root = store.graph_root().join(BLOB_DIR);
                tokio::task::spawn_blocking(move || BlobStore::open(root))
                    .await
                    .map_err(|e| task_err("opening the blob store", input, e))?
                    .map_err(blob_err(input))?
            }
        };
        let downloads = self.start_downloads(input, src, ids, &present, &blob_store, options);
        let result = self
            .apply_layers(
                input,
                src,
                diff_ids,
                ids,
                &present,
                &blob_store,
                downloads,
                options,
            )
            .await;
        result.map(|()| reused)
    }

    /// Starts one bounded download task per missing layer (registry sources only).
    fn start_downloads(
        &self,
        input: &str,
        src: &SourceImage,
        src_layer_ids: &[String],
        present: &[bool],
        blob_store: &BlobStore,
        options: &PullOptions,
    ) -> Vec<Option<JoinHandle<Result<()>>>> {
        let Fetcher::Registry { client, repository } = &src.fetcher else {
            return present.iter().map(|_| None).collect();
        };
        let permits = Arc::new(Semaphore::new(self.options.max_concurrent_downloads.max(1)));
        let mut handles = Vec::with_capacity(present.len());
        for (i, (digest, size, _)) in src.manifest.layers.iter().enumerate() {
            if present[i] {
                handles.push(None);
                continue;
            }
            let client = Arc::clone(client);
            let store = Arc::clone(&self.store);
            let layer_id = src_layer_ids[i].clone();
            let repository = repository.clone();
            let blob = BlobRef {
                digest: digest.clone(),
                size: Some(*size),
            };
            let sink = blob_store.clone();
            let permits = Arc::clone(&permits);
            let input = input.to_owned();
            let progress = options.progress.clone();
            handles.push(Some(tokio::spawn(async move {
                let _permit = permits
                    .acquire_owned()
                    .await
                    .map_err(|e| ImageError::Task {
                        what: "download permit",
                        input: input.clone(),
                        reason: e.to_string(),
                    })?;
                // A concurrent pull may have committed the layer while we waited.
                let exists = {
                    let store = Arc::clone(&store);
                    tokio::task::spawn_blocking(move || store.layer_exists(&layer_id))
                        .await
                        .map_err(|e| task_err("layer lookup", &input, e))??
                };
                if exists {
                    return Ok(());
                }
                let (tx, forwarder) = match progress {
                    Some(out) => {
                        let (tx, mut rx) = mpsc::channel::<ProgressEvent>(64);
                        let forwarder = tokio::spawn(async move {
                            while let Some(event) = rx.recv().await {
                                let _ = out.try_send(PullEvent::Download(event));
                            }
                        });
                        (Some(tx), Some(forwarder))
                    }
                    None => (None, None),
                };
                let pulled = client
                    .pull_blob(&repository, &blob, &sink, tx.as_ref())
                    .await
                    .map_err(registry_err(&input));
                drop(tx);
                if let Some(f) = forwarder {
                    let _ = f.await;
                }
                pulled.map(|_| ())
            })));
        }
        handles
    }

    #[allow(clippy::too_many_arguments)]
    async fn apply_layers(
        &self,
        input: &str,
        src: &SourceImage,
        diff_ids: &[Digest],
        ids: &[String],
        present: &[bool],
        blob_store: &BlobStore,
        mut downloads: Vec<Option<JoinHandle<Result<()>>>>,
        options: &PullOptions,
    ) -> Result<()> {
        let abort_all = |downloads: &mut Vec<Option<JoinHandle<Result<()>>>>| {
            for h in downloads.iter().flatten() {
                h.abort();
            }
        };
        let is_registry = matches!(src.fetcher, Fetcher::Registry { .. });
        for (index, id) in ids.iter().enumerate() {
            if present[index] {
                send(
                    options,
                    PullEvent::LayerReused {
                        index,
                        layer_id: id.clone(),
                    },
                );
                continue;
            }
            if let Some(handle) = downloads.get_mut(index).and_then(Option::take) {
                let outcome = match handle.await {
                    Ok(r) => r,
                    Err(e) => Err(task_err("layer download", input, e)),
                };
                if let Err(e) = outcome {
                    abort_all(&mut downloads);
                    return Err(e);
                }
            }
            let (blob_digest, _, _) = src.manifest.layers[index].clone();
            let store = Arc::clone(&self.store);
            let blobs = blob_store.clone();
            let layer = LayerOptions {
                id: Some(id.clone()),
                parent: index.checked_sub(1).map(|p| ids[p].clone()),
                uncompressed_digest: Some(diff_ids[index].clone()),
                ..LayerOptions::default()
            };
            let drop_blob = is_registry && !self.options.keep_compressed_blobs;
            let owned_input = input.to_owned();
            let applied = tokio::task::spawn_blocking(move || {
                apply_one(&store, &blobs, layer, &blob_digest, drop_blob, &owned_input)
            })
            .await
            .map_err(|e| task_err("layer apply", input, e))
            .and_then(|r| r);
            if let Err(e) = applied {
                abort_all(&mut downloads);
                return Err(e);
            }
            send(
                options,
                PullEvent::LayerApplied {
                    index,
                    layer_id: id.clone(),
                },
            );
        }
        Ok(())
    }
}

fn send(options: &PullOptions, event: PullEvent) {
    if let Some(tx) = &options.progress {
        let _ = tx.try_send(event);
    }
}

/// Creates one layer from its blob (blocking), verifying the blob digest it recorded, and drops
/// the blob afterwards when asked. A layer that a concurrent pull created meanwhile is reused.
fn apply_one(
    store: &Store,
    blobs: &BlobStore,
    options: LayerOptions,
    blob_digest: &Digest,
    drop_blob: bool,
    input: &str,
) -> Result<()> {
    let id = options.id.clone().unwrap_or_default();
    if store.layer_exists(&id)? {
        return Ok(());
    }
    let mut file: File = match blobs.open_blob(blob_digest) {
        Ok(file) => file,
        // A concurrent pull of the same layer committed it and dropped the blob meanwhile.
        Err(BlobError::NotFound { .. }) if store.layer_exists(&id)? => return Ok(()),
        Err(e) => return Err(blob_err(input)(e)),
    };
    match store.create_layer(options, Some(&mut file)) {
        Ok((layer, _)) => {
            if layer.compressed_digest != blob_digest.to_string() {
                let _ = store.delete_layer(&layer.id);
                return Err(ImageError::BadSource {
                    source_name: input.to_owned(),
                    reason: format!(
                        "layer blob {blob_digest} has digest {}",
                        layer.compressed_digest
                    ),
                });
            }
        }
        Err(StoreError::IdInUse { .. }) if store.layer_exists(&id)? => {}
        Err(e) => return Err(e.into()),
    }
    if drop_blob {
        let _ = blobs.delete(blob_digest);
    }
    Ok(())
}

/// Creates the image record with its big data (or, if a concurrent pull created it, re-sets the
/// big data), then adds the name. Returns whether the record already existed.
#[allow(clippy::too_many_arguments)]
fn commit_image(
    store: &Store,
    image_id: &str,
    top_layer: Option<String>,
    created: Option<GoTime>,
    top_digest: Digest,
    manifest_digest: Digest,
    big_data: Vec<BigDataItem>,
    name: Option<String>,
) -> Result<bool> {
    let options = ImageOptions {
        id: Some(image_id.to_owned()),
        top_layer,
        names: Vec::new(),
        // containers/image 5.23 (skopeo 1.9, podman 4.3) records an empty signature list for the
        // instance manifest; the spec's `{}` is older c/image.
        metadata: format!(r#"{{"signatures-sizes":{{"{manifest_digest}":[]}}}}"#),
        created,
        digest: Some(top_digest),
        big_data: big_data.clone(),
    };
    let existed = match store.create_image(options) {
        Ok(_) => false,
        Err(StoreError::IdInUse { .. }) => {
            for item in &big_data {
                store.set_image_big_data(image_id, &item.key, &item.data, item.digest.as_ref())?;
            }
            true
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(name) = name {
        if let Err(e) = store.update_image_names(image_id, &[name], NamesOp::Add) {
            if !existed {
                let _ = store.delete_image(image_id, false);
            }
            return Err(e.into());
        }
    }
    Ok(existed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_containers_image() {
        // containers-storage-format §3.3 worked example.
        let d1 = Digest::parse(
            "sha256:3a7c8ac71e38a9e6f3b65765d160098c6ce67fc531d7952a5d685a8668143d87",
        )
        .unwrap();
        let d2 = Digest::parse(
            "sha256:e9f324d5fa15a55c2db4c09ec73b6bf0f80979e048a24b57338d924957f2c5a3",
        )
        .unwrap();
        assert_eq!(
            layer_ids(&[d1.clone(), d2]),
            vec![
                d1.hex().to_owned(),
                "ca03266631b931654b305686e74d9518884db4b1060b2e39798018dadf1c47ed".to_owned()
            ]
        );
        assert!(layer_ids(&[]).is_empty());
    }

    #[test]
    fn config_parsing() {
        let d = "sha256:3a7c8ac71e38a9e6f3b65765d160098c6ce67fc531d7952a5d685a8668143d87";
        let ok = format!(
            r#"{{"created":"2020-01-01T00:00:00Z","rootfs":{{"type":"layers","diff_ids":["{d}"]}}}}"#
        );
        let (ids, created) = parse_config(ok.as_bytes(), "s").unwrap();
        assert_eq!(ids.len(), 1);
        assert!(created.is_some());
        for bad in [
            r#"{}"#,
            r#"{"rootfs":{"diff_ids":[1]}}"#,
            r#"{"rootfs":{"diff_ids":["sha256:00"]}}"#,
            "x",
        ] {
            assert!(parse_config(bad.as_bytes(), "s").is_err(), "{bad}");
        }
    }
}
