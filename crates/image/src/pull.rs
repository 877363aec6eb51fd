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

use std::sync::Arc;
use std::time::Duration;

use podstore_blobstore::{BlobError, BlobStore, OciImageSelector, OciLayout, OciReference};
use podstore_metadata::{
    BigDataItem, Error as StoreError, GoTime, ImageOptions, LayerCreationLock, LayerOptions,
    NamesOp, StagedLayer, Store,
};
use podstore_reference::{Digest, Reference};
use podstore_registry::{
    BlobRef, ManifestKind, ManifestTarget, PlatformSelector, ProgressEvent, PullSource,
    RegistryClient, RegistryError,
};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::{ImageError, Result};
use crate::lookup::STORAGE_TRANSPORT;
use crate::result::{ManifestInfo, parse_manifest};
use crate::service::ImageService;
use crate::stream;

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
    /// Give a layer download up when no bytes arrived for this long
    /// ([`ImageError::PullStalled`]; nothing of the layer is left behind). `None` leaves it to
    /// the registry client's own stall timeout.
    pub stall_timeout: Option<Duration>,
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
            let signed = serde_json::from_slice::<serde_json::Value>(&manifest_bytes)
                .ok()
                .is_some_and(|v| v.get("signatures").is_some());
            return Err(ImageError::Schema1Unsupported {
                source_name: source_name.clone(),
                media_type: if signed {
                    "application/vnd.docker.distribution.manifest.v1+prettyjws"
                } else {
                    "application/vnd.docker.distribution.manifest.v1+json"
                }
                .to_owned(),
            });
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

    /// Creates the missing layers: one job per layer takes the layer's creation lock, streams
    /// the blob once through verify → decompress → apply into a staging directory (no store
    /// lock held), then commits it under a short `layers.lock` once its parent is committed.
    /// Overlay layers stage in parallel (bounded); vfs layers one after the other (a vfs layer
    /// starts from a copy of its parent). Returns how many layers were reused.
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
        for (index, id) in ids.iter().enumerate() {
            if present[index] {
                send(
                    options,
                    PullEvent::LayerReused {
                        index,
                        layer_id: id.clone(),
                    },
                );
            }
        }
        if present.iter().all(|p| *p) {
            return Ok(ids.len());
        }

        // Where a blob may already be as a file: the layout, or the kept-blobs store.
        let (blob_store, fetch) = match &src.fetcher {
            Fetcher::Layout(layout) => (layout.blobs().clone(), None),
            Fetcher::Registry { client, repository } => {
                let root = store.graph_root().join(BLOB_DIR);
                let blobs = tokio::task::spawn_blocking(move || BlobStore::open(root))
                    .await
                    .map_err(|e| task_err("opening the blob store", input, e))?
                    .map_err(blob_err(input))?;
                (blobs, Some((Arc::clone(client), repository.clone())))
            }
        };
        let in_parallel = !store.driver().staging_needs_parent();
        let permits = Arc::new(Semaphore::new(if in_parallel {
            self.options.max_concurrent_downloads.max(1)
        } else {
            1
        }));
        let mut done_senders = Vec::with_capacity(ids.len());
        let mut done_receivers = Vec::with_capacity(ids.len());
        for &p in &present {
            let (tx, rx) = watch::channel(p.then_some(true));
            done_senders.push(tx);
            done_receivers.push(rx);
        }
        // Set when a layer failed: the other jobs stop and are awaited, so that none of their
        // staging work outlives the pull.
        let (cancel, cancelled) = watch::channel(false);
        let mut handles: Vec<Option<JoinHandle<Result<bool>>>> = Vec::with_capacity(ids.len());
        for (index, done) in done_senders.into_iter().enumerate() {
            if present[index] {
                handles.push(None);
                continue;
            }
            let (digest, size, _) = src.manifest.layers[index].clone();
            let job = LayerJob {
                index,
                input: input.to_owned(),
                id: ids[index].clone(),
                parent: index.checked_sub(1).map(|p| ids[p].clone()),
                diff_id: diff_ids[index].clone(),
                blob: BlobRef {
                    digest,
                    size: Some(size),
                },
                store: Arc::clone(&store),
                blob_store: blob_store.clone(),
                fetch: fetch.clone(),
                keep_blobs: self.options.keep_compressed_blobs,
                progress: options.progress.clone(),
                stall_timeout: options.stall_timeout,
                parent_done: index.checked_sub(1).map(|p| done_receivers[p].clone()),
                parent_before_staging: !in_parallel,
                permits: Arc::clone(&permits),
                cancelled: cancelled.clone(),
            };
            handles.push(Some(tokio::spawn(async move {
                let result = job.run().await;
                let _ = done.send(Some(result.is_ok()));
                result
            })));
        }
        let mut reused = present.iter().filter(|p| **p).count();
        let mut failure = None;
        for handle in handles.iter_mut() {
            let Some(h) = handle.take() else { continue };
            match h.await {
                Ok(Ok(was_reused)) => reused += usize::from(was_reused),
                Ok(Err(e)) => {
                    failure = Some(e);
                    break;
                }
                Err(e) => {
                    failure = Some(task_err("layer pull", input, e));
                    break;
                }
            }
        }
        if let Some(e) = failure {
            // Not `abort`: an aborted job would leave its blocking apply (and its staging
            // directory) running after the pull returned.
            let _ = cancel.send(true);
            for h in handles.iter_mut().filter_map(Option::take) {
                let _ = h.await;
            }
            return Err(e);
        }
        Ok(reused)
    }
}

fn send(options: &PullOptions, event: PullEvent) {
    if let Some(tx) = &options.progress {
        let _ = tx.try_send(event);
    }
}

fn send_to(progress: Option<&mpsc::Sender<PullEvent>>, event: PullEvent) {
    if let Some(tx) = progress {
        let _ = tx.try_send(event);
    }
}

/// Waits until the layer behind `rx` exists (`true`) or its job failed (`false`).
async fn wait_done(mut rx: watch::Receiver<Option<bool>>) -> bool {
    loop {
        if let Some(done) = *rx.borrow_and_update() {
            return done;
        }
        if rx.changed().await.is_err() {
            return rx.borrow().unwrap_or(false);
        }
    }
}

/// Waits until `rx` turns `true` (never, if its sender goes away first).
async fn until_cancelled(mut rx: watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs a blocking store call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    input: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| task_err(what, input, e))?
}

/// One missing layer of a pull.
struct LayerJob {
    index: usize,
    input: String,
    id: String,
    parent: Option<String>,
    diff_id: Digest,
    blob: BlobRef,
    store: Arc<Store>,
    blob_store: BlobStore,
    /// The registry to stream the blob from; `None` for a layout (the blob is a file).
    fetch: Option<(Arc<RegistryClient>, String)>,
    keep_blobs: bool,
    progress: Option<mpsc::Sender<PullEvent>>,
    stall_timeout: Option<Duration>,
    parent_done: Option<watch::Receiver<Option<bool>>>,
    /// Wait for the parent before staging (vfs), not only before committing.
    parent_before_staging: bool,
    permits: Arc<Semaphore>,
    /// Becomes `true` when another layer of the pull failed.
    cancelled: watch::Receiver<bool>,
}

impl LayerJob {
    fn cancelled_err(&self) -> ImageError {
        ImageError::Task {
            what: "layer pull",
            input: self.input.clone(),
            reason: format!("layer {} cancelled: another layer failed", self.id),
        }
    }

    fn parent_failed(&self) -> ImageError {
        ImageError::BadSource {
            source_name: self.input.clone(),
            reason: format!("the parent of layer {} could not be created", self.id),
        }
    }

    /// A store failure while creating this layer, as [`ImageError::Layer`] naming the image,
    /// the layer and its blob; other errors unchanged.
    fn layer_err(&self, e: ImageError) -> ImageError {
        match e {
            ImageError::Store(source) => ImageError::Layer {
                input: self.input.clone(),
                layer: self.id.clone(),
                blob: self.blob.digest.to_string(),
                source: Box::new(source),
            },
            other => other,
        }
    }

    /// Creates the layer unless it exists; returns whether it was reused.
    async fn run(self) -> Result<bool> {
        if self.parent_before_staging
            && let Some(rx) = &self.parent_done
            && !wait_done(rx.clone()).await
        {
            return Err(self.parent_failed());
        }
        let permit = tokio::select! {
            permit = Arc::clone(&self.permits).acquire_owned() => {
                permit.map_err(|e| ImageError::Task {
                    what: "layer permit",
                    input: self.input.clone(),
                    reason: e.to_string(),
                })?
            }
            () = until_cancelled(self.cancelled.clone()) => return Err(self.cancelled_err()),
        };
        if *self.cancelled.borrow() {
            return Err(self.cancelled_err());
        }
        let lock = {
            let (store, id) = (Arc::clone(&self.store), self.id.clone());
            Arc::new(
                blocking("layer lock", &self.input, move || {
                    Ok(store.lock_layer_creation(&id)?)
                })
                .await?,
            )
        };
        // The holder before us (another pull, here or in another process) may have made it.
        let exists = {
            let (store, id) = (Arc::clone(&self.store), self.id.clone());
            blocking("layer lookup", &self.input, move || {
                Ok(store.layer_exists(&id)?)
            })
            .await?
        };
        if exists {
            send_to(
                self.progress.as_ref(),
                PullEvent::LayerReused {
                    index: self.index,
                    layer_id: self.id.clone(),
                },
            );
            return Ok(true);
        }
        let (staged, from_file) = self.stage(&lock).await.map_err(|e| self.layer_err(e))?;
        drop(permit);
        if staged.compressed_digest() != &self.blob.digest {
            return Err(ImageError::BadSource {
                source_name: self.input.clone(),
                reason: format!(
                    "layer blob {} has digest {}",
                    self.blob.digest,
                    staged.compressed_digest()
                ),
            });
        }
        let staging_took = staged.staging_took();
        if let Some(rx) = &self.parent_done
            && !wait_done(rx.clone()).await
        {
            return Err(self.parent_failed());
        }
        let committed = {
            let (store, lock) = (Arc::clone(&self.store), Arc::clone(&lock));
            blocking("layer commit", &self.input, move || {
                match store.commit_staged_layer(&lock, staged) {
                    Ok((_, stats)) => Ok(Some(stats)),
                    // Made meanwhile by a writer that does not take creation locks (podman).
                    Err(StoreError::IdInUse { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            })
            .await
            .map_err(|e| self.layer_err(e))?
        };
        drop(lock);
        if let Some(stats) = committed {
            tracing::debug!(
                layer = %self.id,
                staging_ms = staging_took.as_millis() as u64,
                layers_lock_held_us = stats.layers_lock_held.as_micros() as u64,
                "layer committed"
            );
        }
        if from_file && self.fetch.is_some() && !self.keep_blobs {
            let _ = self.blob_store.delete(&self.blob.digest);
        }
        send_to(
            self.progress.as_ref(),
            PullEvent::LayerApplied {
                index: self.index,
                layer_id: self.id.clone(),
            },
        );
        Ok(committed.is_none())
    }

    /// Stages the layer from the blob's file when there is one (a layout, a kept blob), else
    /// from the registry stream. Returns the staged layer and whether it came from a file.
    async fn stage(&self, lock: &Arc<LayerCreationLock>) -> Result<(StagedLayer, bool)> {
        let layer_options = LayerOptions {
            id: Some(self.id.clone()),
            parent: self.parent.clone(),
            uncompressed_digest: Some(self.diff_id.clone()),
            ..LayerOptions::default()
        };
        let store = Arc::clone(&self.store);
        let lock = Arc::clone(lock);
        let from_file = self.fetch.is_none() || self.blob_store.exists(&self.blob.digest);
        if from_file {
            let (blobs, digest, input) = (
                self.blob_store.clone(),
                self.blob.digest.clone(),
                self.input.clone(),
            );
            let staged = blocking("layer apply", &self.input, move || {
                let mut file = blobs.open_blob(&digest).map_err(blob_err(&input))?;
                Ok(store.stage_layer(&lock, layer_options, &mut file)?)
            })
            .await?;
            return Ok((staged, true));
        }
        // The stream reaches end of file only after the client verified the digest, so the
        // applier need not hash the blob again.
        let layer_options = LayerOptions {
            compressed_digest: Some(self.blob.digest.clone()),
            ..layer_options
        };
        let tee = self.keep_blobs.then(|| self.blob_store.clone());
        let (sink, mut reader) = stream::stream(&self.blob.digest, tee);
        let staging = tokio::task::spawn_blocking(move || {
            store.stage_layer(&lock, layer_options, &mut reader)
        });
        // On cancellation the download (and with it the sink) is dropped, so the applier reads
        // an error and removes its staging directory; the staging task is awaited either way.
        let downloading = async {
            tokio::select! {
                downloaded = self.download(sink) => downloaded,
                () = until_cancelled(self.cancelled.clone()) => Err(self.cancelled_err()),
            }
        };
        let (downloaded, staged) = tokio::join!(downloading, staging);
        let staged = staged
            .map_err(|e| task_err("layer apply", &self.input, e))
            .and_then(|r| r.map_err(ImageError::from));
        match (downloaded, staged) {
            (Ok(()), staged) => staged.map(|s| (s, false)),
            // The applier stopped reading (a bad tar): its error is the cause.
            (Err(ImageError::Registry { source, .. }), Err(applying))
                if matches!(*source, RegistryError::Store { .. }) =>
            {
                Err(applying)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Streams the blob into `sink`, forwarding progress, and gives up after
    /// [`PullOptions::stall_timeout`] without any progress.
    async fn download(&self, sink: stream::StreamSink) -> Result<()> {
        let Some((client, repository)) = &self.fetch else {
            return Ok(());
        };
        let (tx, mut rx) = mpsc::channel::<ProgressEvent>(64);
        let timeout = self
            .stall_timeout
            .unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let pull = client.pull_blob(repository, &self.blob, &sink, Some(&tx));
        tokio::pin!(pull);
        let mut last_progress = tokio::time::Instant::now();
        loop {
            tokio::select! {
                pulled = &mut pull => {
                    while let Ok(event) = rx.try_recv() {
                        send_to(self.progress.as_ref(), PullEvent::Download(event));
                    }
                    return pulled.map(|_| ()).map_err(registry_err(&self.input));
                }
                Some(event) = rx.recv() => {
                    last_progress = tokio::time::Instant::now();
                    send_to(self.progress.as_ref(), PullEvent::Download(event));
                }
                () = tokio::time::sleep_until(last_progress + timeout) => {
                    return Err(ImageError::PullStalled {
                        input: self.input.clone(),
                        layer: self.id.clone(),
                        blob: self.blob.digest.to_string(),
                        seconds: timeout.as_secs(),
                    });
                }
            }
        }
    }
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
