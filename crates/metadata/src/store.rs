//! The [`Store`]: opens a containers/storage graph root and run root, and performs every
//! record operation under containers/storage's locks, in its order (storage < layers < images <
//! containers; mountpoints innermost), saving with a fresh last-writer token and an atomic
//! JSON write.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use podstore_layer::{ApplyOptions, CreateOptions, Driver, IdMap, IdMappings, MountOptions};
use podstore_reference::Digest;
use serde_json::Value;

use crate::config::StoreOptions;
use crate::error::{Error, RecordKind, Result, io_err};
use crate::fsutil::{
    AtomicFile, big_data_file_name, mkdir_all, random_id, read_or_empty, remove_dir_all_if_exists,
    remove_file_if_exists, remove_stale_temp_files, sync_filesystem, write_atomic,
};
use crate::gotime::GoTime;
use crate::lockfile::{LockFile, LockGuard};
use crate::recordfile::RecordFile;
pub use crate::recordfile::RecordLoadCounts;
use crate::records::{Container, INCOMPLETE_FLAG, Image, Layer, Mountpoint, is_manifest_key};

/// How to create a layer.
#[derive(Debug, Clone, Default)]
pub struct LayerOptions {
    /// The layer ID; random when `None`.
    pub id: Option<String>,
    /// Parent layer (ID, name or unique prefix).
    pub parent: Option<String>,
    /// Names for the layer (unique across layers).
    pub names: Vec<String>,
    /// SELinux mount label.
    pub mount_label: String,
    /// A container's writable layer.
    pub read_write: bool,
    /// The blob's digest as the caller knows it (containers/image passes the manifest's blob
    /// digest); recorded as `compressed-diff-digest` instead of the computed one.
    pub compressed_digest: Option<Digest>,
    /// The expected DiffID; creation fails (and is undone) if the content differs.
    pub uncompressed_digest: Option<Digest>,
    /// Skip the driver's final sync (tests on tmpfs).
    pub no_sync: bool,
}

/// One big-data item to store with a new image.
#[derive(Debug, Clone)]
pub struct BigDataItem {
    /// The key (`sha256:<config>`, `manifest`, `manifest-<digest>`, …).
    pub key: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// The digest to record for a manifest key (containers/image's `manifest.Digest`, which
    /// strips schema1 signatures); `None` means sha256 of the bytes.
    pub digest: Option<Digest>,
}

/// How to create an image.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// Image ID; random when `None`.
    pub id: Option<String>,
    /// Top layer (ID, name or unique prefix); `None` for an image without layers.
    pub top_layer: Option<String>,
    /// Names; each must not be used by another image.
    pub names: Vec<String>,
    /// Metadata; must be JSON when not empty (containers/image writes `{}`).
    pub metadata: String,
    /// Creation time; now when `None`.
    pub created: Option<GoTime>,
    /// The searchable digest; derived from the first manifest item when `None`.
    pub digest: Option<Digest>,
    /// Big data stored in the same critical section as the record.
    pub big_data: Vec<BigDataItem>,
}

/// The ID mappings a container asks for (containers/storage's `IDMappingOptions`, without
/// automatic user namespaces).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMappingOptions {
    /// Use the host's UIDs unmapped, whatever `uid_map` says.
    pub host_uid_mapping: bool,
    /// Use the host's GIDs unmapped, whatever `gid_map` says.
    pub host_gid_mapping: bool,
    /// The UID map; empty means the image top layer's (or, without an image, the store's).
    pub uid_map: Vec<IdMap>,
    /// The GID map; empty means the image top layer's (or, without an image, the store's).
    pub gid_map: Vec<IdMap>,
}

impl IdMappingOptions {
    /// Whether the caller asked for anything but the defaults.
    pub fn is_requested(&self) -> bool {
        self.host_uid_mapping
            || self.host_gid_mapping
            || !self.uid_map.is_empty()
            || !self.gid_map.is_empty()
    }

    /// The maps a container gets: the host's (none) when asked, else the given ones, else
    /// `default`'s.
    fn resolve(&self, default: &IdMappings) -> IdMappings {
        let pick = |host: bool, given: &[IdMap], fallback: &[IdMap]| -> Vec<IdMap> {
            if host {
                Vec::new()
            } else if !given.is_empty() {
                given.to_vec()
            } else {
                fallback.to_vec()
            }
        };
        IdMappings {
            uid: pick(self.host_uid_mapping, &self.uid_map, &default.uid),
            gid: pick(self.host_gid_mapping, &self.gid_map, &default.gid),
        }
    }
}

/// Refuses a map with an empty range or a range that runs past the last ID.
fn validate_id_map(map: &[IdMap]) -> Result<()> {
    for range in map {
        // The range ends before u32::MAX (-1, never a valid ID).
        let end_ok = |start: u32| start.checked_add(range.size).is_some();
        if range.size == 0 || !end_ok(range.container_id) || !end_ok(range.host_id) {
            return Err(Error::InvalidIdMap {
                map: map.to_vec(),
                range: *range,
            });
        }
    }
    Ok(())
}

/// How to create a container.
#[derive(Debug, Clone, Default)]
pub struct ContainerOptions {
    /// Container ID; random when `None`.
    pub id: Option<String>,
    /// Names (unique across containers).
    pub names: Vec<String>,
    /// Image (ID, name or unique prefix); empty for a container without an image.
    pub image: String,
    /// Caller metadata.
    pub metadata: String,
    /// Names for the container's layer.
    pub layer_names: Vec<String>,
    /// SELinux mount label (`flags.MountLabel`).
    pub mount_label: String,
    /// SELinux process label (`flags.ProcessLabel`).
    pub process_label: String,
    /// Extra flags (`MountOpts`, `Volatile`, …).
    pub flags: BTreeMap<String, Value>,
    /// The container's UID/GID maps. When they differ from the image top layer's, the
    /// container's layer sits on an ID-shifted copy of that layer (a mapped top layer,
    /// recorded in the image and reused by later containers with the same maps).
    pub id_mappings: IdMappingOptions,
}

/// What creating a layer cost, for measuring the time `layers.lock` is held.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerCreateStats {
    /// Time from taking `layers.lock` (write) to releasing it.
    pub layers_lock_held: Duration,
}

/// A compressed blob staged under `<graphroot>/tmp` without any store lock, so that the
/// network-bound copy does not hold `layers.lock`. Removed on drop.
#[derive(Debug)]
pub struct StagedBlob {
    path: PathBuf,
    digest: Digest,
    size: u64,
}

impl StagedBlob {
    /// Digest of the staged bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// Number of staged bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Where the bytes are.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedBlob {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Directory under `<graphroot>/tmp` holding the per-layer creation lock files
/// (`<layer-id>.lock`) and the staging directories of layers being created
/// (`<layer-id>-<random>/`, holding `layer/` for the driver and `tar-split.gz`).
pub const STAGING_DIR: &str = "podstore-staging";

/// The exclusive right to create one layer ID, across threads and processes: an fcntl write
/// lock on `<graphroot>/tmp/podstore-staging/<layer-id>.lock`, released on drop. Taken around
/// [`Store::stage_layer`] and [`Store::commit_staged_layer`] so that two pulls of the same
/// layer do the work once (the second finds the layer committed after taking the lock).
///
/// The lock file is deleted on drop, while still locked, so that one empty file per layer
/// ever pulled does not pile up. That is safe because every locker re-checks, once it holds
/// the lock, that the path still names the file it locked, and otherwise lets go and locks
/// the file now at the path: a waiter on a deleted file never works
/// beside the holder of its replacement.
#[derive(Debug)]
pub struct LayerCreationLock {
    id: String,
    path: PathBuf,
    _guard: LockGuard,
}

impl Drop for LayerCreationLock {
    fn drop(&mut self) {
        // Still locked here (the guard is released after this): later lockers of the old file
        // see it gone and move to a new one.
        let _ = fs::remove_file(&self.path);
    }
}

/// Locks the creation lock file at `path` for writing, waiting while it is held: opens it,
/// locks it, and checks that `path` still names the locked file (a holder deletes it before
/// releasing), retrying on the new file otherwise.
fn wait_for_staging_lock(path: &Path) -> Result<LockGuard> {
    loop {
        let lock = LockFile::open(path)?;
        let guard = lock.write()?;
        if lock.is_at(path)? {
            return Ok(guard);
        }
    }
}

/// [`wait_for_staging_lock`] without waiting: `None` when the lock is held.
pub(crate) fn try_staging_lock(path: &Path) -> Result<Option<LockGuard>> {
    loop {
        let lock = LockFile::open(path)?;
        let Some(guard) = lock.try_write()? else {
            return Ok(None);
        };
        if lock.is_at(path)? {
            return Ok(Some(guard));
        }
    }
}

impl LayerCreationLock {
    /// The layer ID this lock is for.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A layer diff applied into a staging directory by [`Store::stage_layer`], not yet part of the
/// store; [`Store::commit_staged_layer`] makes it a layer. Dropping it removes the staging
/// directory.
#[derive(Debug)]
pub struct StagedLayer {
    id: String,
    dir: PathBuf,
    /// Where the driver stages the layer's data: `dir/layer`, or a directory of the same name
    /// as `dir` under the driver's own staging directory ([`Driver::staging_parent`]).
    layer_dir: PathBuf,
    options: LayerOptions,
    report: podstore_layer::ApplyReport,
    staging_took: Duration,
}

impl StagedLayer {
    /// The layer ID.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Digest of the blob as it was read (before decompression).
    pub fn compressed_digest(&self) -> &Digest {
        &self.report.compressed_digest
    }
    /// Digest of the uncompressed tar (the DiffID).
    pub fn diff_digest(&self) -> &Digest {
        &self.report.diff_digest
    }
    /// How long staging (decompressing and unpacking, no store lock held) took.
    pub fn staging_took(&self) -> Duration {
        self.staging_took
    }
}

impl Drop for StagedLayer {
    fn drop(&mut self) {
        if !self.layer_dir.as_os_str().is_empty() {
            let _ = remove_dir_all_if_exists(&self.layer_dir);
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = remove_dir_all_if_exists(&self.dir);
        }
    }
}

/// Every image and the layers they stand on, read under `layers.lock` and `images.lock`
/// (both held for reading until dropped); made by [`Store::image_snapshot`].
pub struct ImageSnapshot<'a> {
    store: &'a Store,
    layers: Arc<Vec<Layer>>,
    images: Arc<Vec<Image>>,
    _images_guard: LockGuard,
    _layers_guard: LockGuard,
}

impl std::fmt::Debug for ImageSnapshot<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageSnapshot")
            .field("images", &self.images.len())
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl ImageSnapshot<'_> {
    /// The images, in store order (as [`Store::images`] returns them).
    pub fn images(&self) -> &[Image] {
        &self.images
    }

    /// The complete layers (as [`Store::layers`] returns them).
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Reads big-data item `item_key` of `image`, a record of this snapshot, without looking
    /// the image up again ([`Store::image_big_data`] without the load and the search).
    pub fn big_data(&self, image: &Image, item_key: &str) -> Result<Vec<u8>> {
        self.store.read_image_big_data(image, item_key)
    }
}

trait Named {
    fn id(&self) -> &str;
    fn names(&self) -> &[String];
    fn names_mut(&mut self) -> &mut Vec<String>;
}

macro_rules! named {
    ($t:ty) => {
        impl Named for $t {
            fn id(&self) -> &str {
                &self.id
            }
            fn names(&self) -> &[String] {
                &self.names
            }
            fn names_mut(&mut self) -> &mut Vec<String> {
                &mut self.names
            }
        }
    };
}
named!(Layer);
named!(Image);
named!(Container);

/// Finds a record by exact ID, then by name, then by unique ID prefix (containers/storage's
/// lookup order).
fn find_index<R: Named>(records: &[R], key: &str, kind: RecordKind) -> Result<usize> {
    if let Some(i) = records.iter().position(|r| r.id() == key) {
        return Ok(i);
    }
    if let Some(i) = records
        .iter()
        .position(|r| r.names().iter().any(|n| n == key))
    {
        return Ok(i);
    }
    if !key.is_empty() {
        let mut matches = records
            .iter()
            .enumerate()
            .filter(|(_, r)| r.id().starts_with(key));
        if let Some((i, _)) = matches.next() {
            if matches.next().is_some() {
                return Err(Error::AmbiguousPrefix {
                    kind,
                    prefix: key.to_owned(),
                });
            }
            return Ok(i);
        }
    }
    Err(unknown(kind, key))
}

fn unknown(kind: RecordKind, key: &str) -> Error {
    match kind {
        RecordKind::Layer => Error::LayerUnknown { id: key.to_owned() },
        RecordKind::Image => Error::ImageUnknown { id: key.to_owned() },
        RecordKind::Container => Error::ContainerUnknown { id: key.to_owned() },
    }
}

fn validate_id(id: &str, kind: RecordKind) -> Result<()> {
    let bad = |reason| Error::InvalidId {
        kind,
        id: id.to_owned(),
        reason,
    };
    if id.is_empty() {
        return Err(bad("empty"));
    }
    if id.contains(|c: char| c.is_whitespace() || c == '/' || c.is_control())
        || id == "."
        || id == ".."
    {
        return Err(bad("contains whitespace, '/' or control characters"));
    }
    if id.len() > 200 {
        return Err(bad("too long"));
    }
    Ok(())
}

/// Keeps the first occurrence of each name (`dedupeNames`).
fn dedupe(names: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

/// Removes names held by more than one record from all but the first holder. Returns the
/// first duplicate found, if any.
fn repair_duplicate_names<R: Named>(records: &mut [R]) -> Option<String> {
    let mut seen = BTreeSet::new();
    let mut first_dup = None;
    for r in records.iter_mut() {
        let names = std::mem::take(r.names_mut());
        let mut kept = Vec::with_capacity(names.len());
        for n in names {
            if seen.insert(n.clone()) {
                kept.push(n);
            } else if first_dup.is_none() {
                first_dup = Some(n);
            }
        }
        *r.names_mut() = dedupe(kept);
    }
    first_dup
}

/// Names-history update after any names change: every element of the resulting names is
/// prepended in turn, then duplicates are dropped (keeping the first).
fn update_names_history(image: &mut Image) {
    let mut history = image.names_history.clone();
    for n in &image.names {
        history.insert(0, n.clone());
    }
    image.names_history = dedupe(history);
}

/// How a names operation changes a record's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamesOp {
    /// Append names not yet present (containers/storage 1.43 `AddNames`).
    Add,
    /// Replace the names.
    Set,
    /// Remove the given names.
    Remove,
}

fn apply_names<R: Named>(records: &mut [R], index: usize, names: &[String], op: NamesOp) {
    let old = records[index].names().to_vec();
    let new = match op {
        NamesOp::Add => dedupe(old.iter().chain(names.iter()).cloned().collect()),
        NamesOp::Set => dedupe(names.to_vec()),
        NamesOp::Remove => old.into_iter().filter(|n| !names.contains(n)).collect(),
    };
    // Names move: take them away from any other record first.
    if op != NamesOp::Remove {
        for (i, r) in records.iter_mut().enumerate() {
            if i != index {
                r.names_mut().retain(|n| !new.contains(n));
            }
        }
    }
    *records[index].names_mut() = new;
}

/// The Store. Cheap to share between threads (`&Store` is enough for every operation).
pub struct Store {
    graph_root: PathBuf,
    run_root: PathBuf,
    driver: Arc<dyn Driver>,
    storage_lock: LockFile,
    layers: RecordFile<Layer>,
    mounts: RecordFile<Mountpoint>,
    images: RecordFile<Image>,
    containers: RecordFile<Container>,
    layers_dir: PathBuf,
    images_dir: PathBuf,
    containers_dir: PathBuf,
    run_containers_dir: PathBuf,
    tmp_dir: PathBuf,
    id_mappings: IdMappings,
    userns_lock: LockFile,
    /// This Store mounted or unmounted a layer, or bind-mounted the driver home: on drop it
    /// shuts down (without force) so that an unused home bind mount does not outlive it.
    touched_mounts: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("graph_root", &self.graph_root)
            .field("run_root", &self.run_root)
            .field("driver", &self.driver.name())
            .finish()
    }
}

impl Drop for Store {
    /// A Store that mounted or unmounted layers shuts down without force, as a
    /// containers/storage client does before it exits: the driver's home mount goes when no
    /// layer is mounted any more, and stays (with the mounts under it) otherwise. Errors are
    /// ignored: nothing is lost by a home mount left in place.
    fn drop(&mut self) {
        if self.touched_mounts.load(Ordering::Relaxed) {
            let _ = self.shutdown(false);
        }
    }
}

/// containers/storage's `strconv.ParseBool` for option values: whether `value` spells true.
fn go_parse_bool_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// The layer records and mount counts as readers see them, shared with the records cache.
struct LayerView {
    layers: Arc<Vec<Layer>>,
    mounts: Arc<Vec<Mountpoint>>,
}

/// The layer records plus mount counts, loaded under `layers.lock` for writing.
struct LayerState {
    layers: Vec<Layer>,
    mounts: Vec<Mountpoint>,
}

impl Store {
    /// Opens the store, constructing the driver named by `options` (`vfs` or `overlay`;
    /// empty means overlay when the kernel supports it, else vfs). Overlay takes its
    /// `overlay.mountopt=` option from `driver_options`.
    pub fn open(options: &StoreOptions) -> Result<Store> {
        let name = options.resolved_driver_name();
        let driver: Arc<dyn Driver> = match name.as_str() {
            "vfs" => Arc::new(podstore_layer::Vfs::new(options.graph_root.join("vfs"))?),
            "overlay" => {
                let mountopt = options
                    .driver_options
                    .iter()
                    .rev()
                    .find_map(|o| {
                        o.strip_prefix("overlay.mountopt=")
                            .or_else(|| o.strip_prefix("overlay2.mountopt="))
                    })
                    .unwrap_or_default()
                    .to_owned();
                let skip_mount_home = options
                    .driver_options
                    .iter()
                    .rev()
                    .find_map(|o| {
                        o.strip_prefix("overlay.skip_mount_home=")
                            .or_else(|| o.strip_prefix("overlay2.skip_mount_home="))
                    })
                    .is_some_and(go_parse_bool_true);
                Arc::new(podstore_layer::Overlay::new(
                    options.graph_root.join("overlay"),
                    podstore_layer::OverlayOptions {
                        mountopt,
                        skip_mount_home,
                        ..podstore_layer::OverlayOptions::default()
                    },
                )?)
            }
            _ => return Err(Error::UnsupportedDriver { name }),
        };
        Store::open_with_driver(options, driver)
    }

    /// Opens the store with an already-constructed driver (whose `name()` decides the
    /// `<driver>-layers` directory names), creating the directory skeleton containers/storage
    /// creates, and recovering from a crash: incomplete layers and stale `.tmp-*` files next
    /// to the records files are removed, each under its store's write lock (records'
    /// directories are not walked: their leftovers go when next written, or with `repair`).
    pub fn open_with_driver(options: &StoreOptions, driver: Arc<dyn Driver>) -> Result<Store> {
        let abs = |p: &Path| -> Result<PathBuf> {
            if p.is_absolute() {
                Ok(p.to_path_buf())
            } else {
                std::env::current_dir()
                    .map(|d| d.join(p))
                    .map_err(|e| io_err("resolving", p, e))
            }
        };
        let graph_root = abs(&options.graph_root)?;
        let run_root = abs(&options.run_root)?;
        let name = driver.name();
        let layers_dir = graph_root.join(format!("{name}-layers"));
        let images_dir = graph_root.join(format!("{name}-images"));
        let containers_dir = graph_root.join(format!("{name}-containers"));
        let run_layers_dir = run_root.join(format!("{name}-layers"));
        let run_containers_dir = run_root.join(format!("{name}-containers"));
        for d in [
            &graph_root,
            &run_root,
            &layers_dir,
            &images_dir,
            &containers_dir,
            &run_layers_dir,
            &run_containers_dir,
            &run_root.join(format!("{name}-locks")),
            &graph_root.join("mounts"),
            &graph_root.join("tmp"),
        ] {
            mkdir_all(d)?;
        }
        let storage_lock = LockFile::open(&graph_root.join("storage.lock"))?;
        let userns_lock = LockFile::open(&graph_root.join("userns.lock"))?;
        let store = Store {
            layers: RecordFile::open(
                layers_dir.join("layers.json"),
                &layers_dir.join("layers.lock"),
                true,
            )?,
            mounts: RecordFile::open(
                run_layers_dir.join("mountpoints.json"),
                &run_layers_dir.join("mountpoints.lock"),
                false,
            )?,
            images: RecordFile::open(
                images_dir.join("images.json"),
                &images_dir.join("images.lock"),
                false,
            )?,
            containers: RecordFile::open(
                containers_dir.join("containers.json"),
                &containers_dir.join("containers.lock"),
                false,
            )?,
            tmp_dir: graph_root.join("tmp"),
            graph_root,
            run_root,
            driver,
            storage_lock,
            layers_dir,
            images_dir,
            containers_dir,
            run_containers_dir,
            id_mappings: IdMappings {
                uid: options.uid_map.clone(),
                gid: options.gid_map.clone(),
            },
            userns_lock,
            touched_mounts: AtomicBool::new(false),
        };
        store.recover()?;
        Ok(store)
    }

    fn recover(&self) -> Result<()> {
        self.remove_stale_staging()?;
        // Each records file is loaded under its write lock and repaired (duplicate names,
        // incomplete layers, missing image digests) when it needs it; a store that needs
        // nothing is only read, not copied.
        {
            let g = self.layers.lock().write()?;
            let layers = self.layers.load(&g)?;
            if duplicate_name(&layers).is_some() || layers.iter().any(Layer::is_incomplete) {
                // Loading for writing removes incomplete layers.
                self.load_layers_for_write(&g)?;
            }
            remove_stale_temp_files(&self.layers_dir)?;
        }
        {
            let g = self.images.lock().write()?;
            let images = self.images.load(&g)?;
            let mut repair = duplicate_name(&images).is_some();
            for img in images.iter() {
                repair |= self.checked_image_digest(img)?.is_some();
            }
            if repair {
                self.load_images_for_write(&g)?;
            }
            remove_stale_temp_files(&self.images_dir)?;
        }
        {
            let g = self.containers.lock().write()?;
            if duplicate_name(&self.containers.load(&g)?).is_some() {
                self.load_containers_for_write(&g)?;
            }
            remove_stale_temp_files(&self.containers_dir)?;
        }
        Ok(())
    }

    /// The graph root.
    pub fn graph_root(&self) -> &Path {
        &self.graph_root
    }

    /// The run root.
    pub fn run_root(&self) -> &Path {
        &self.run_root
    }

    /// The layer driver.
    pub fn driver(&self) -> &dyn Driver {
        self.driver.as_ref()
    }

    /// The driver's canonical name.
    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    // ----- loading -------------------------------------------------------------------------

    fn load_layer_state(&self, g: &LockGuard) -> Result<LayerState> {
        let layers = self.layers.load(g)?;
        let mounts = {
            let mg = self.mounts.lock().read()?;
            self.mounts.load(&mg)?
        };
        Ok(LayerState {
            layers: (*layers).clone(),
            mounts: (*mounts).clone(),
        })
    }

    /// The readers' layers (checked for duplicate names; incomplete ones hidden) and mount
    /// counts, shared with the records cache: nothing is copied or re-checked while the
    /// files are unchanged.
    fn load_layers_for_read(&self) -> Result<(LockGuard, LayerView)> {
        let g = self.layers.lock().read()?;
        let layers = self.layers.load_view(&g, |raw| {
            if let Some(name) = duplicate_name(raw) {
                return Err(Error::DuplicateNames {
                    kind: RecordKind::Layer,
                    name,
                    path: self.layers.path().to_path_buf(),
                });
            }
            // Under a read lock nobody is creating a layer, so an incomplete one is crash
            // debris; hide it until a writer removes it.
            if raw.iter().any(Layer::is_incomplete) {
                Ok(Arc::new(
                    raw.iter().filter(|l| !l.is_incomplete()).cloned().collect(),
                ))
            } else {
                Ok(raw.clone())
            }
        })?;
        let mounts = {
            let mg = self.mounts.lock().read()?;
            self.mounts.load(&mg)?
        };
        Ok((g, LayerView { layers, mounts }))
    }

    /// Loads under the write lock, repairing duplicate names and deleting incomplete layers
    /// as containers/storage does.
    fn load_layers_for_write(&self, g: &LockGuard) -> Result<LayerState> {
        let mut st = self.load_layer_state(g)?;
        let mut dirty = repair_duplicate_names(&mut st.layers).is_some();
        let incomplete: Vec<String> = st
            .layers
            .iter()
            .filter(|l| l.is_incomplete())
            .map(|l| l.id.clone())
            .collect();
        for id in incomplete {
            self.remove_layer_data(&id)?;
            st.layers.retain(|l| l.id != id);
            st.mounts.retain(|m| m.id != id);
            dirty = true;
        }
        if dirty {
            self.save_layers(g, &st)?;
        }
        Ok(st)
    }

    fn save_layers(&self, g: &LockGuard, st: &LayerState) -> Result<()> {
        self.layers.save(g, st.layers.clone())?;
        self.save_mounts(st)
    }

    fn save_mounts(&self, st: &LayerState) -> Result<()> {
        let mg = self.mounts.lock().write()?;
        let known: BTreeSet<&str> = st.layers.iter().map(|l| l.id.as_str()).collect();
        let mounts: Vec<Mountpoint> = st
            .mounts
            .iter()
            .filter(|m| !m.path.is_empty() && m.count > 0 && known.contains(m.id.as_str()))
            .cloned()
            .collect();
        // Every layers save used to rewrite (and sync) `mountpoints.json` too; when the mount
        // counts did not change there is nothing to write, and the file's token stays valid.
        if *self.mounts.load(&mg)? == mounts {
            return Ok(());
        }
        self.mounts.save(&mg, mounts)?;
        Ok(())
    }

    /// The readers' images (checked for duplicate names, digests validated and filled in),
    /// shared with the records cache: checked once per contents of `images.json`, handed out
    /// without copying while its token is unchanged.
    fn load_images_for_read(&self) -> Result<(LockGuard, Arc<Vec<Image>>)> {
        let g = self.images.lock().read()?;
        let images = self.load_images_view(&g)?;
        Ok((g, images))
    }

    fn load_images_view(&self, g: &LockGuard) -> Result<Arc<Vec<Image>>> {
        self.images.load_view(g, |raw| {
            if let Some(name) = duplicate_name(raw) {
                return Err(Error::DuplicateNames {
                    kind: RecordKind::Image,
                    name,
                    path: self.images.path().to_path_buf(),
                });
            }
            // Copy the records only when a digest has to be filled in (rare: records written
            // by old tools); otherwise readers share the decoded records.
            let mut filled: Vec<(usize, String)> = Vec::new();
            for (i, img) in raw.iter().enumerate() {
                if let Some(digest) = self.checked_image_digest(img)? {
                    filled.push((i, digest));
                }
            }
            if filled.is_empty() {
                return Ok(raw.clone());
            }
            let mut checked = (**raw).clone();
            for (i, digest) in filled {
                checked[i].digest = digest;
            }
            Ok(Arc::new(checked))
        })
    }

    fn checked_image_digest(&self, img: &Image) -> Result<Option<String>> {
        img.checked_digest().map_err(|reason| Error::Corrupt {
            path: self.images.path().to_path_buf(),
            reason: format!("computing digests for image with ID {:?}: {reason}", img.id),
        })
    }

    fn check_image_digests(&self, img: &mut Image) -> Result<bool> {
        img.recompute_digests().map_err(|reason| Error::Corrupt {
            path: self.images.path().to_path_buf(),
            reason: format!("computing digests for image with ID {:?}: {reason}", img.id),
        })
    }

    fn load_images_for_write(&self, g: &LockGuard) -> Result<Vec<Image>> {
        let mut images = (*self.images.load(g)?).clone();
        let mut dirty = repair_duplicate_names(&mut images).is_some();
        for img in &mut images {
            dirty |= self.check_image_digests(img)?;
        }
        if dirty {
            self.images.save(g, images.clone())?;
        }
        Ok(images)
    }

    fn load_containers_for_read(&self) -> Result<(LockGuard, Arc<Vec<Container>>)> {
        let g = self.containers.lock().read()?;
        let containers = self.containers.load_view(&g, |raw| {
            if let Some(name) = duplicate_name(raw) {
                return Err(Error::DuplicateNames {
                    kind: RecordKind::Container,
                    name,
                    path: self.containers.path().to_path_buf(),
                });
            }
            Ok(raw.clone())
        })?;
        Ok((g, containers))
    }

    fn load_containers_for_write(&self, g: &LockGuard) -> Result<Vec<Container>> {
        let mut containers = (*self.containers.load(g)?).clone();
        if repair_duplicate_names(&mut containers).is_some() {
            self.containers.save(g, containers.clone())?;
        }
        Ok(containers)
    }

    // ----- layers --------------------------------------------------------------------------

    /// All layers (complete ones).
    pub fn layers(&self) -> Result<Vec<Layer>> {
        Ok((*self.load_layers_for_read()?.1.layers).clone())
    }

    /// A layer by ID, name or unique ID prefix.
    pub fn layer(&self, key: &str) -> Result<Layer> {
        let (_g, st) = self.load_layers_for_read()?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        Ok(st.layers[i].clone())
    }

    /// Whether a complete layer with exactly this ID exists.
    pub fn layer_exists(&self, id: &str) -> Result<bool> {
        let (_g, st) = self.load_layers_for_read()?;
        Ok(st.layers.iter().any(|l| l.id == id))
    }

    /// Layers whose `compressed-diff-digest` is `digest` (containers/image's blob reuse).
    pub fn layers_by_compressed_digest(&self, digest: &Digest) -> Result<Vec<Layer>> {
        let d = digest.to_string();
        Ok(self
            .layers()?
            .into_iter()
            .filter(|l| l.compressed_digest == d)
            .collect())
    }

    /// Layers whose `diff-digest` is `digest`.
    pub fn layers_by_uncompressed_digest(&self, digest: &Digest) -> Result<Vec<Layer>> {
        let d = digest.to_string();
        Ok(self
            .layers()?
            .into_iter()
            .filter(|l| l.uncompressed_digest == d)
            .collect())
    }

    /// Copies a compressed blob into `<graphroot>/tmp` while holding no lock, computing its
    /// sha256. Pass the result to [`Store::create_layer_from_staged`], which then only holds
    /// `layers.lock` for the local extraction.
    pub fn stage_blob(&self, blob: &mut dyn Read) -> Result<StagedBlob> {
        let path = self.tmp_dir.join(format!("staged-blob-{}", random_id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("creating staged blob", &path, e))?;
        let staged = StagedBlob {
            path,
            digest: Digest::sha256_of(b""),
            size: 0,
        };
        let mut hasher = podstore_reference::Algorithm::Sha256.digester();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match blob.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("reading blob for", &staged.path, e)),
            };
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| io_err("writing staged blob", &staged.path, e))?;
            size += n as u64;
        }
        let mut staged = staged;
        staged.digest = hasher.finish();
        staged.size = size;
        Ok(staged)
    }

    /// Creates a layer from a blob staged with [`Store::stage_blob`]; the staged digest is
    /// recorded as `compressed-diff-digest` unless `options` names one.
    pub fn create_layer_from_staged(
        &self,
        mut options: LayerOptions,
        staged: &StagedBlob,
    ) -> Result<(Layer, LayerCreateStats)> {
        if options.compressed_digest.is_none() {
            options.compressed_digest = Some(staged.digest.clone());
        }
        let mut f = fs::File::open(&staged.path)
            .map_err(|e| io_err("opening staged blob", &staged.path, e))?;
        self.create_layer(options, Some(&mut f))
    }

    fn staging_root(&self) -> PathBuf {
        self.tmp_dir.join(STAGING_DIR)
    }

    /// Removes staging directories left by a crash: those whose layer creation lock nobody
    /// holds (a live stager in another process holds its lock while its directories exist).
    /// They are `<id>-<random>` directories under `tmp/podstore-staging` and, for a driver that
    /// stages in its own home, under its staging directory (where other names, such as
    /// containers/storage's own staging directories, are left alone).
    fn remove_stale_staging(&self) -> Result<()> {
        let mut roots = vec![self.staging_root()];
        roots.extend(self.driver.staging_parent());
        let mut ids = BTreeSet::new();
        for root in &roots {
            for (name, is_dir) in list_names(root)? {
                let id = match name.strip_suffix(".lock") {
                    Some(id) if !is_dir => id,
                    _ => match staged_dir_layer_id(&name) {
                        Some(id) if is_dir => id,
                        _ => continue,
                    },
                };
                if validate_id(id, RecordKind::Layer).is_ok() {
                    ids.insert(id.to_owned());
                }
            }
        }
        for id in ids {
            let Some(lock) = self.try_lock_layer_creation(&id)? else {
                continue; // a live stager's
            };
            for root in &roots {
                for (name, is_dir) in list_names(root)? {
                    if is_dir && staged_dir_layer_id(&name) == Some(id.as_str()) {
                        remove_dir_all_if_exists(&root.join(&name))?;
                    }
                }
            }
            // Dropping the lock deletes its file (older podstore versions never did).
            drop(lock);
        }
        Ok(())
    }

    /// Takes the creation lock of layer `id` (waiting while another thread or process holds
    /// it). Check [`Store::layer_exists`] after taking it: the holder before may have created
    /// the layer.
    pub fn lock_layer_creation(&self, id: &str) -> Result<LayerCreationLock> {
        validate_id(id, RecordKind::Layer)?;
        let root = self.staging_root();
        mkdir_all(&root)?;
        let path = root.join(format!("{id}.lock"));
        let guard = wait_for_staging_lock(&path)?;
        Ok(LayerCreationLock {
            id: id.to_owned(),
            path,
            _guard: guard,
        })
    }

    /// Takes the creation lock of layer `id` if nobody holds it.
    fn try_lock_layer_creation(&self, id: &str) -> Result<Option<LayerCreationLock>> {
        let path = self.staging_root().join(format!("{id}.lock"));
        Ok(try_staging_lock(&path)?.map(|guard| LayerCreationLock {
            id: id.to_owned(),
            path,
            _guard: guard,
        }))
    }

    /// Applies `blob` (a possibly compressed layer tar) for the layer of `lock` into a staging
    /// directory under `<graphroot>/tmp/podstore-staging`, holding **no store lock**, so that
    /// the decompression and unpacking overlap with other work and other layers. The driver
    /// decides whether the parent must already exist ([`Driver::staging_needs_parent`]:
    /// vfs copies it; overlay does not read it). `options.uncompressed_digest`, when given, is
    /// checked here. `options.compressed_digest`, when given, must be the blob's digest as the
    /// caller verifies it while `blob` is read (the blob is then not hashed a second time).
    /// Nothing becomes visible until [`Store::commit_staged_layer`].
    pub fn stage_layer(
        &self,
        lock: &LayerCreationLock,
        mut options: LayerOptions,
        blob: &mut dyn Read,
    ) -> Result<StagedLayer> {
        let started = Instant::now();
        let id = lock.id.clone();
        options.id = Some(id.clone());
        let parent = options.parent.clone().filter(|p| !p.is_empty());
        let parent_id = match &parent {
            Some(p) if self.driver.staging_needs_parent() => Some(self.layer(p)?.id),
            Some(p) => Some(p.clone()),
            None => None,
        };
        let root = self.staging_root();
        mkdir_all(&root)?;
        let name = format!("{id}-{}", &random_id()[..16]);
        let dir = root.join(&name);
        let layer_dir = match self.driver.staging_parent() {
            Some(parent) => {
                mkdir_all(&parent)?;
                parent.join(&name)
            }
            None => dir.join("layer"),
        };
        fs::create_dir(&dir).map_err(|e| io_err("creating staging directory", &dir, e))?;
        let mut staged = StagedLayer {
            id: id.clone(),
            dir,
            layer_dir,
            options,
            report: podstore_layer::ApplyReport {
                compressed_digest: Digest::sha256_of(b""),
                compressed_size: 0,
                diff_digest: Digest::sha256_of(b""),
                diff_size: 0,
                compression: podstore_layer::Compression::None,
                uids: BTreeSet::new(),
                gids: BTreeSet::new(),
            },
            staging_took: Duration::ZERO,
        };
        let split_path = staged.dir.join("tar-split.gz");
        let split_file = fs::File::create(&split_path)
            .map_err(|e| io_err("creating tar-split", &split_path, e))?;
        let mut gz = flate2::write::GzEncoder::new(split_file, flate2::Compression::fast());
        let apply = ApplyOptions {
            id_mappings: self.id_mappings.clone(),
            no_sync: staged.options.no_sync,
            verified_compressed_digest: staged.options.compressed_digest.clone(),
        };
        let create = CreateOptions {
            read_write: staged.options.read_write,
            id_mappings: self.id_mappings.clone(),
        };
        staged.report = self.driver.stage_diff(
            &id,
            &staged.layer_dir,
            parent_id.as_deref(),
            blob,
            &mut gz,
            &create,
            &apply,
        )?;
        let split_file = gz
            .finish()
            .map_err(|e| io_err("compressing tar-split", &split_path, e))?;
        if !staged.options.no_sync {
            split_file
                .sync_data()
                .map_err(|e| io_err("syncing", &split_path, e))?;
        }
        if let Some(expected) = &staged.options.uncompressed_digest
            && *expected != staged.report.diff_digest
        {
            return Err(Error::DiffDigestMismatch {
                id,
                expected: expected.to_string(),
                actual: staged.report.diff_digest.to_string(),
            });
        }
        staged.staging_took = started.elapsed();
        Ok(staged)
    }

    /// Makes a staged layer part of the store under a short `layers.lock` write: the record is
    /// saved flagged `incomplete`, the staged directory renamed into the driver (no content is
    /// copied), the tar-split renamed into place, and the flag cleared. The parent must exist
    /// (commit layers in parent order). On failure the record and driver data are undone.
    pub fn commit_staged_layer(
        &self,
        lock: &LayerCreationLock,
        mut staged: StagedLayer,
    ) -> Result<(Layer, LayerCreateStats)> {
        if staged.id != lock.id {
            return Err(Error::InvalidId {
                kind: RecordKind::Layer,
                id: staged.id.clone(),
                reason: "staged under another layer's creation lock",
            });
        }
        let g = self.layers.lock().write()?;
        let started = Instant::now();
        let mut st = self.load_layers_for_write(&g)?;
        let id = staged.id.clone();
        let options = staged.options.clone();
        let maps = self.id_mappings.clone();
        let layer =
            self.create_layer_with(&g, &mut st, id, &options, &maps, |record, parent| {
                self.driver.commit_staged(
                    &record.id,
                    parent,
                    &staged.layer_dir,
                    &CreateOptions {
                        read_write: options.read_write,
                        id_mappings: self.id_mappings.clone(),
                    },
                )?;
                let from = staged.dir.join("tar-split.gz");
                let target = self.tar_split_path(&record.id);
                fs::rename(&from, &target)
                    .map_err(|e| io_err("renaming tar-split to", &target, e))?;
                // The renames into the driver home must be on disk before the record that
                // names the layer complete is saved (the content was synced when staged).
                if !options.no_sync {
                    sync_filesystem(self.driver.home())?;
                }
                fill_record(record, &options, &staged.report);
                Ok(())
            })?;
        drop(g);
        let held = started.elapsed();
        let _ = fs::remove_dir(&staged.dir);
        staged.dir = PathBuf::new();
        staged.layer_dir = PathBuf::new();
        Ok((
            layer,
            LayerCreateStats {
                layers_lock_held: held,
            },
        ))
    }

    /// Creates a layer, applying `blob` (a possibly compressed tar) through the driver when
    /// given. Follows the incomplete-flag protocol: the record is saved flagged `incomplete`
    /// under `layers.lock` (write), the diff applied and `<id>.tar-split.gz` written, the
    /// digests, sizes, compression and ID sets recorded, and the flag cleared — all without
    /// releasing the lock. On failure everything is undone.
    pub fn create_layer(
        &self,
        options: LayerOptions,
        blob: Option<&mut dyn Read>,
    ) -> Result<(Layer, LayerCreateStats)> {
        let id = match &options.id {
            Some(id) => {
                validate_id(id, RecordKind::Layer)?;
                id.clone()
            }
            None => random_id(),
        };
        let g = self.layers.lock().write()?;
        let started = Instant::now();
        let mut st = self.load_layers_for_write(&g)?;
        if let Some(parent) = options.parent.as_deref().filter(|p| !p.is_empty()) {
            // containers/storage refuses a container's read-write layer as a parent.
            let i = find_index(&st.layers, parent, RecordKind::Layer)?;
            let parent_id = st.layers[i].id.clone();
            let cg = self.containers.lock().read()?;
            if let Some(c) = self
                .containers
                .load(&cg)?
                .iter()
                .find(|c| c.layer == parent_id)
            {
                return Err(Error::ParentIsContainer {
                    parent: parent_id,
                    container: c.id.clone(),
                });
            }
        }
        let maps = self.id_mappings.clone();
        let layer = self.create_layer_locked(&g, &mut st, id, &options, blob, &maps)?;
        drop(g);
        Ok((
            layer,
            LayerCreateStats {
                layers_lock_held: started.elapsed(),
            },
        ))
    }

    fn create_layer_locked(
        &self,
        g: &LockGuard,
        st: &mut LayerState,
        id: String,
        options: &LayerOptions,
        blob: Option<&mut dyn Read>,
        maps: &IdMappings,
    ) -> Result<Layer> {
        self.create_layer_with(g, st, id, options, maps, |record, parent| {
            self.fill_layer(record, parent, options, blob, maps)
        })
    }

    /// The incomplete-flag protocol around `fill`, which creates the driver data and fills the
    /// record's digests and sizes (it gets the record and the resolved parent ID).
    fn create_layer_with(
        &self,
        g: &LockGuard,
        st: &mut LayerState,
        id: String,
        options: &LayerOptions,
        maps: &IdMappings,
        fill: impl FnOnce(&mut Layer, Option<&str>) -> Result<()>,
    ) -> Result<Layer> {
        if st.layers.iter().any(|l| l.id == id) {
            return Err(Error::IdInUse {
                kind: RecordKind::Layer,
                id,
            });
        }
        let names = dedupe(options.names.clone());
        for n in &names {
            if let Some(owner) = st.layers.iter().find(|l| l.names.contains(n)) {
                return Err(Error::NameInUse {
                    kind: RecordKind::Layer,
                    name: n.clone(),
                    owner: owner.id.clone(),
                });
            }
        }
        let parent = match &options.parent {
            Some(p) if !p.is_empty() => {
                let i = find_index(&st.layers, p, RecordKind::Layer)?;
                Some(st.layers[i].id.clone())
            }
            _ => None,
        };
        let mut record = Layer {
            id: id.clone(),
            names,
            parent: parent.clone().unwrap_or_default(),
            mount_label: options.mount_label.clone(),
            created: GoTime::now_utc(),
            uid_map: maps.uid.clone(),
            gid_map: maps.gid.clone(),
            ..Layer::default()
        };
        record
            .flags
            .insert(INCOMPLETE_FLAG.to_owned(), Value::Bool(true));
        st.layers.push(record.clone());
        self.save_layers(g, st)?;

        match fill(&mut record, parent.as_deref()) {
            Ok(()) => {
                record.flags.remove(INCOMPLETE_FLAG);
                if let Some(slot) = st.layers.iter_mut().find(|l| l.id == id) {
                    *slot = record.clone();
                }
                match self.save_layers(g, st) {
                    Ok(()) => Ok(record),
                    Err(e) => {
                        // The record on disk is still flagged incomplete; the next writer
                        // (or we, right now) removes it.
                        self.undo_layer(g, st, &id);
                        Err(e)
                    }
                }
            }
            Err(e) => {
                self.undo_layer(g, st, &id);
                Err(e)
            }
        }
    }

    /// Creates an ID-shifted copy of `template` with `maps` (containers/storage's layer
    /// `TemplateLayer`): the record takes the template's parent, digests, sizes, ID sets and
    /// tar-split; the driver creates the layer on the template and shifts every file's owner
    /// from the template's maps to `maps`. Same incomplete-flag protocol as any layer; undone
    /// on failure.
    fn create_mapped_layer_locked(
        &self,
        g: &LockGuard,
        st: &mut LayerState,
        template: &Layer,
        maps: &IdMappings,
    ) -> Result<Layer> {
        let id = random_id();
        let mut record = Layer {
            id: id.clone(),
            parent: template.parent.clone(),
            metadata: template.metadata.clone(),
            mount_label: template.mount_label.clone(),
            created: GoTime::now_utc(),
            compressed_digest: template.compressed_digest.clone(),
            compressed_size: template.compressed_size,
            uncompressed_digest: template.uncompressed_digest.clone(),
            uncompressed_size: template.uncompressed_size,
            compression: template.compression,
            uid_set: template.uid_set.clone(),
            gid_set: template.gid_set.clone(),
            uid_map: maps.uid.clone(),
            gid_map: maps.gid.clone(),
            ..Layer::default()
        };
        record
            .flags
            .insert(INCOMPLETE_FLAG.to_owned(), Value::Bool(true));
        st.layers.push(record.clone());
        self.save_layers(g, st)?;
        let filled = (|| -> Result<()> {
            self.driver.create(
                &id,
                Some(&template.id),
                &CreateOptions {
                    read_write: false,
                    id_mappings: maps.clone(),
                },
            )?;
            let source = self.tar_split_path(&template.id);
            match fs::File::open(&source) {
                Ok(mut from) => {
                    let target = self.tar_split_path(&id);
                    let mut temp = AtomicFile::create(&target)?;
                    std::io::copy(&mut from, &mut temp)
                        .map_err(|e| io_err("copying tar-split to", &target, e))?;
                    temp.commit()?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("opening", &source, e)),
            }
            let from = IdMappings {
                uid: template.uid_map.clone(),
                gid: template.gid_map.clone(),
            };
            let label = Some(template.mount_label.as_str()).filter(|l| !l.is_empty());
            self.driver.update_id_map(&id, &from, maps, label)?;
            Ok(())
        })();
        if let Err(e) = filled {
            self.undo_layer(g, st, &id);
            return Err(e);
        }
        record.flags.remove(INCOMPLETE_FLAG);
        if let Some(slot) = st.layers.iter_mut().find(|l| l.id == id) {
            *slot = record.clone();
        }
        if let Err(e) = self.save_layers(g, st) {
            self.undo_layer(g, st, &id);
            return Err(e);
        }
        Ok(record)
    }

    /// The layer a container with `maps` sits on: the image's top layer or one of its mapped
    /// top layers whose maps are `maps`; else a new mapped copy of the top layer, registered
    /// in the image's `mapped-layers` (containers/storage's `imageTopLayerForMapping`).
    fn top_layer_for_mapping(
        &self,
        g: &LockGuard,
        st: &mut LayerState,
        image_id: &str,
        candidates: &[String],
        maps: &IdMappings,
    ) -> Result<String> {
        let mut template: Option<Layer> = None;
        for candidate in candidates {
            let Some(layer) = st.layers.iter().find(|l| &l.id == candidate) else {
                continue;
            };
            if layer.uid_map == maps.uid && layer.gid_map == maps.gid {
                return Ok(layer.id.clone());
            }
            if template.is_none() {
                template = Some(layer.clone());
            }
        }
        let Some(template) = template else {
            return Err(unknown(
                RecordKind::Layer,
                candidates.first().map_or("", String::as_str),
            ));
        };
        let mapped = self.create_mapped_layer_locked(g, st, &template, maps)?;
        let registered = (|| -> Result<()> {
            let ig = self.images.lock().write()?;
            let mut images = self.load_images_for_write(&ig)?;
            let i = find_index(&images, image_id, RecordKind::Image)?;
            images[i].mapped_layers.push(mapped.id.clone());
            self.images.save(&ig, images)?;
            Ok(())
        })();
        if let Err(e) = registered {
            let _ = self.delete_layer_locked(g, st, &mapped.id);
            return Err(e);
        }
        Ok(mapped.id)
    }

    fn undo_layer(&self, g: &LockGuard, st: &mut LayerState, id: &str) {
        let _ = self.remove_layer_data(id);
        st.layers.retain(|l| l.id != id);
        let _ = self.save_layers(g, st);
    }

    pub(crate) fn tar_split_path(&self, id: &str) -> PathBuf {
        self.layers_dir.join(format!("{id}.tar-split.gz"))
    }

    fn fill_layer(
        &self,
        record: &mut Layer,
        parent: Option<&str>,
        options: &LayerOptions,
        blob: Option<&mut dyn Read>,
        maps: &IdMappings,
    ) -> Result<()> {
        self.driver.create(
            &record.id,
            parent,
            &CreateOptions {
                read_write: options.read_write,
                id_mappings: maps.clone(),
            },
        )?;
        let Some(blob) = blob else {
            // A layer without a diff (a container's read-write layer): its directories must be
            // on disk before the record that names it is saved.
            if !options.no_sync {
                sync_filesystem(self.driver.home())?;
            }
            return Ok(());
        };
        let target = self.tar_split_path(&record.id);
        let temp = AtomicFile::create(&target)?;
        let mut gz = flate2::write::GzEncoder::new(temp, flate2::Compression::fast());
        let report = self.driver.apply_diff(
            &record.id,
            parent,
            blob,
            &mut gz,
            &ApplyOptions {
                id_mappings: maps.clone(),
                no_sync: options.no_sync,
                ..ApplyOptions::default()
            },
        )?;
        let temp = gz
            .finish()
            .map_err(|e| io_err("compressing tar-split", &target, e))?;
        temp.commit()?;
        if let Some(expected) = &options.uncompressed_digest
            && *expected != report.diff_digest
        {
            return Err(Error::DiffDigestMismatch {
                id: record.id.clone(),
                expected: expected.to_string(),
                actual: report.diff_digest.to_string(),
            });
        }
        fill_record(record, options, &report);
        Ok(())
    }

    /// Removes a layer's driver directory, tar-split file and big-data directory.
    pub(crate) fn remove_layer_data(&self, id: &str) -> Result<()> {
        if self.driver.exists(id) {
            self.driver.remove(id)?;
        }
        remove_file_if_exists(&self.tar_split_path(id))?;
        remove_dir_all_if_exists(&self.layers_dir.join(id))?;
        Ok(())
    }

    /// Replaces a layer's metadata string.
    pub fn set_layer_metadata(&self, key: &str, metadata: &str) -> Result<()> {
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        st.layers[i].metadata = metadata.to_owned();
        self.save_layers(&g, &st)
    }

    /// Changes a layer's names (names move from other layers in the same save).
    pub fn update_layer_names(&self, key: &str, names: &[String], op: NamesOp) -> Result<Layer> {
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        apply_names(&mut st.layers, i, names, op);
        let layer = st.layers[i].clone();
        self.save_layers(&g, &st)?;
        Ok(layer)
    }

    /// Stores a layer big-data item in `<driver>-layers/<id>/`; layers record only the key.
    pub fn set_layer_big_data(&self, key: &str, item_key: &str, data: &[u8]) -> Result<()> {
        big_data_file_name(item_key)?;
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        let dir = self.layers_dir.join(&st.layers[i].id);
        self.write_big_data_file(&dir, item_key, data)?;
        if !st.layers[i].big_data_names.iter().any(|k| k == item_key) {
            st.layers[i].big_data_names.push(item_key.to_owned());
            self.save_layers(&g, &st)?;
        }
        Ok(())
    }

    /// Reads a layer big-data item.
    pub fn layer_big_data(&self, key: &str, item_key: &str) -> Result<Vec<u8>> {
        let (_g, st) = self.load_layers_for_read()?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        let layer = &st.layers[i];
        if !layer.big_data_names.iter().any(|k| k == item_key) {
            return Err(Error::BigDataUnknown {
                kind: RecordKind::Layer,
                id: layer.id.clone(),
                key: item_key.to_owned(),
            });
        }
        let path = self
            .layers_dir
            .join(&layer.id)
            .join(big_data_file_name(item_key)?);
        fs::read(&path).map_err(|e| io_err("reading big data", &path, e))
    }

    /// Deletes a layer that no layer, container or image (as its top layer) uses; a mapped top
    /// layer is dropped from its image's `mapped-layers`. It is unmounted first.
    pub fn delete_layer(&self, key: &str) -> Result<()> {
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        let id = st.layers[i].id.clone();
        let children: Vec<String> = st
            .layers
            .iter()
            .filter(|l| l.parent == id)
            .map(|l| l.id.clone())
            .collect();
        if !children.is_empty() {
            return Err(Error::LayerHasChildren { id, children });
        }
        let mut users = Vec::new();
        {
            let ig = self.images.lock().read()?;
            users.extend(
                self.images
                    .load(&ig)?
                    .iter()
                    .filter(|im| im.layer == id)
                    .map(|im| im.id.clone()),
            );
        }
        {
            let cg = self.containers.lock().read()?;
            users.extend(
                self.containers
                    .load(&cg)?
                    .iter()
                    .filter(|c| c.layer == id)
                    .map(|c| c.id.clone()),
            );
        }
        if !users.is_empty() {
            return Err(Error::LayerInUse { id, users });
        }
        // An image's mapped top layer may go: it is dropped from the image first
        // (containers/storage's `removeMappedTopLayer`).
        {
            let ig = self.images.lock().write()?;
            let mut images = self.load_images_for_write(&ig)?;
            let mut changed = false;
            for im in &mut images {
                let before = im.mapped_layers.len();
                im.mapped_layers.retain(|l| l != &id);
                changed |= im.mapped_layers.len() != before;
            }
            if changed {
                self.images.save(&ig, images)?;
            }
        }
        self.delete_layer_locked(&g, &mut st, &id)
    }

    fn delete_layer_locked(&self, g: &LockGuard, st: &mut LayerState, id: &str) -> Result<()> {
        // Unmount every reference first.
        if let Some(m) = st.mounts.iter().find(|m| m.id == id && m.count > 0) {
            let _ = m;
            self.touched_mounts.store(true, Ordering::Relaxed);
            self.driver.unmount(id)?;
            st.mounts.retain(|m| m.id != id);
        }
        let Some(slot) = st.layers.iter_mut().find(|l| l.id == id) else {
            return Err(unknown(RecordKind::Layer, id));
        };
        slot.flags
            .insert(INCOMPLETE_FLAG.to_owned(), Value::Bool(true));
        self.save_layers(g, st)?;
        self.remove_layer_data(id)?;
        st.layers.retain(|l| l.id != id);
        self.save_layers(g, st)
    }

    /// Writes the layer's original tar (rebuilt from its tar-split and its files) to `out`,
    /// holding `layers.lock` for reading meanwhile. Returns the number of bytes written.
    pub fn diff(&self, key: &str, out: &mut dyn Write) -> Result<u64> {
        let (_g, st) = self.load_layers_for_read()?;
        let i = find_index(&st.layers, key, RecordKind::Layer)?;
        let id = st.layers[i].id.clone();
        let path = self.tar_split_path(&id);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoTarSplit { id, path });
            }
            Err(e) => return Err(io_err("opening", &path, e)),
        };
        let dirs = self.driver.lookup_dirs(&id)?;
        let reader = BufReader::new(flate2::read::GzDecoder::new(file));
        podstore_layer::reassemble(&dirs, reader, out).map_err(|e| Error::Diff {
            id: id.clone(),
            reason: e.to_string(),
        })
    }

    // ----- mounts --------------------------------------------------------------------------

    /// Mounts a container's layer (by container ID/name) or a layer (by layer ID/name) and
    /// records the mount in `mountpoints.json`; a layer that is already mounted only gets its
    /// count raised. Holds `storage.lock`, then `layers.lock`, then `mountpoints.lock`.
    ///
    /// Before the first layer mount under it, the driver home is made a private mount point
    /// (overlay: bind-mounted onto itself when it is not one), as containers/storage's driver
    /// init does under the same lock; it is checked again at every mount, since a `shutdown`
    /// (ours or podman's) may have unmounted it since.
    pub fn mount(&self, key: &str, options: &MountOptions) -> Result<PathBuf> {
        let _sg = self.storage_lock.write()?;
        self.touched_mounts.store(true, Ordering::Relaxed);
        self.driver.prepare_home()?;
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let id = self.resolve_layer_or_container(&st.layers, key)?;
        let mounted = st
            .mounts
            .iter()
            .find(|m| m.id == id && m.count > 0)
            .map(|m| PathBuf::from(&m.path));
        let path = match mounted {
            Some(p) if self.still_mounted(&p) => p,
            _ => {
                let label = st
                    .layers
                    .iter()
                    .find(|l| l.id == id)
                    .map(|l| l.mount_label.clone());
                let mut opts = options.clone();
                if opts.mount_label.is_none() {
                    opts.mount_label = label.filter(|l| !l.is_empty());
                }
                st.mounts.retain(|m| m.id != id);
                self.driver.mount(&id, &opts)?
            }
        };
        match st.mounts.iter_mut().find(|m| m.id == id) {
            Some(m) => m.count += 1,
            None => st.mounts.push(Mountpoint {
                id: id.clone(),
                path: path.to_string_lossy().into_owned(),
                count: 1,
            }),
        }
        self.save_mounts(&st)?;
        Ok(path)
    }

    fn still_mounted(&self, path: &Path) -> bool {
        if self.driver.name() == "vfs" {
            return path.is_dir();
        }
        is_mount_point(path)
    }

    /// Drops one mount reference (all of them with `force`); the driver unmounts when the
    /// count reaches 0. Returns whether the layer is still mounted.
    ///
    /// Holds `storage.lock` (which containers/storage does not take to unmount): a layer mount
    /// that a later bind mount of the driver home covers is removed by briefly unmounting
    /// that bind mount, which must not race with another process's mount.
    pub fn unmount(&self, key: &str, force: bool) -> Result<bool> {
        let _sg = self.storage_lock.write()?;
        self.touched_mounts.store(true, Ordering::Relaxed);
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let id = self.resolve_layer_or_container(&st.layers, key)?;
        let Some(pos) = st.mounts.iter().position(|m| m.id == id && m.count > 0) else {
            return Ok(false);
        };
        let still = if force || st.mounts[pos].count <= 1 {
            self.driver.unmount(&id)?;
            st.mounts.remove(pos);
            false
        } else {
            st.mounts[pos].count -= 1;
            true
        };
        self.save_mounts(&st)?;
        Ok(still)
    }

    /// containers/storage's `Store.Shutdown(force)`: under `storage.lock` and `layers.lock`,
    /// lists the mounted layers; with `force` unmounts each of them first. When none is left
    /// mounted, the driver drops its home mount ([`podstore_layer::Driver::cleanup`]) and the
    /// `storage.lock` token is bumped so that other processes re-check the home before their
    /// next mount; otherwise fails with [`Error::LayersMounted`] and leaves the home alone.
    /// Returns the layers that were mounted. (containers/storage still returns its "a layer is
    /// mounted" error after a forced unmount and skips the cleanup; podstore cleans up.)
    pub fn shutdown(&self, force: bool) -> Result<Vec<String>> {
        let sg = self.storage_lock.write()?;
        let g = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&g)?;
        let mounted: Vec<String> = st
            .mounts
            .iter()
            .filter(|m| m.count > 0)
            .map(|m| m.id.clone())
            .collect();
        if mounted.is_empty() || force {
            for id in &mounted {
                self.driver.unmount(id)?;
                st.mounts.retain(|m| &m.id != id);
                self.save_mounts(&st)?;
            }
        } else {
            return Err(Error::LayersMounted { ids: mounted });
        }
        if self.driver.cleanup()? {
            sg.record_write()?;
        }
        Ok(mounted)
    }

    /// Marks that this Store changed the mount table (check's repair unmounts through the
    /// driver), so that it shuts down when dropped.
    pub(crate) fn note_mounts_changed(&self) {
        self.touched_mounts.store(true, Ordering::Relaxed);
    }

    /// The mount count of a layer or container's layer.
    pub fn mount_count(&self, key: &str) -> Result<i64> {
        let (_g, st) = self.load_layers_for_read()?;
        let id = self.resolve_layer_or_container(&st.layers, key)?;
        Ok(st.mounts.iter().find(|m| m.id == id).map_or(0, |m| m.count))
    }

    fn resolve_layer_or_container(&self, layers: &[Layer], key: &str) -> Result<String> {
        let cg = self.containers.lock().read()?;
        let containers = self.containers.load(&cg)?;
        if let Ok(i) = find_index(&containers, key, RecordKind::Container) {
            return Ok(containers[i].layer.clone());
        }
        let i = find_index(layers, key, RecordKind::Layer)?;
        Ok(layers[i].id.clone())
    }

    // ----- images --------------------------------------------------------------------------

    /// All images.
    pub fn images(&self) -> Result<Vec<Image>> {
        Ok((*self.load_images_for_read()?.1).clone())
    }

    /// A consistent read of every image and the layers they stand on, for listing: takes
    /// `layers.lock` then `images.lock` for reading (containers/storage's order) and holds both
    /// until the snapshot is dropped, so each image's big data can be read with
    /// [`ImageSnapshot::big_data`] without another load or look-up. The records are shared
    /// with the records cache (not copied). Do not call the Store's writing operations from the
    /// thread holding a snapshot: they wait for its locks.
    pub fn image_snapshot(&self) -> Result<ImageSnapshot<'_>> {
        let (layers_guard, layers) = self.load_layers_for_read()?;
        let (images_guard, images) = self.load_images_for_read()?;
        Ok(ImageSnapshot {
            store: self,
            layers: layers.layers,
            images,
            _images_guard: images_guard,
            _layers_guard: layers_guard,
        })
    }

    /// How often the records file of `kind` was decoded from disk and how often its readers'
    /// view was checked and built, since this Store was opened. Both change only when the file
    /// changed (its last-writer token, for layers also its mtime), never per read: tests use
    /// this to show that reads are served from the cache.
    pub fn record_load_counts(&self, kind: RecordKind) -> RecordLoadCounts {
        match kind {
            RecordKind::Layer => self.layers.load_counts(),
            RecordKind::Image => self.images.load_counts(),
            RecordKind::Container => self.containers.load_counts(),
        }
    }

    /// An image by ID, name or unique ID prefix.
    pub fn image(&self, key: &str) -> Result<Image> {
        let (_g, images) = self.load_images_for_read()?;
        let i = find_index(&images, key, RecordKind::Image)?;
        Ok(images[i].clone())
    }

    /// Images whose `Digests` contain `digest`.
    pub fn images_by_digest(&self, digest: &Digest) -> Result<Vec<Image>> {
        let d = digest.to_string();
        Ok(self
            .images()?
            .into_iter()
            .filter(|im| im.digests().contains(&d))
            .collect())
    }

    /// Creates an image record with its big data in one `images.json` save (holding
    /// `layers.lock` for reading to check the top layer, then `images.lock` for writing). On
    /// failure nothing is left behind.
    pub fn create_image(&self, options: ImageOptions) -> Result<Image> {
        let id = match &options.id {
            Some(id) => {
                validate_id(id, RecordKind::Image)?;
                id.clone()
            }
            None => random_id(),
        };
        if !options.metadata.is_empty() {
            validate_json_metadata(&id, &options.metadata)?;
        }
        let mut keys = BTreeSet::new();
        for item in &options.big_data {
            big_data_file_name(&item.key)?;
            keys.insert(item.key.clone());
        }
        let (lg, lst) = self.load_layers_for_read()?;
        let top = match &options.top_layer {
            Some(t) if !t.is_empty() => {
                let i = find_index(&lst.layers, t, RecordKind::Layer)?;
                lst.layers[i].id.clone()
            }
            _ => String::new(),
        };
        let g = self.images.lock().write()?;
        let mut images = self.load_images_for_write(&g)?;
        if images.iter().any(|im| im.id == id) {
            return Err(Error::IdInUse {
                kind: RecordKind::Image,
                id,
            });
        }
        let names = dedupe(options.names.clone());
        for n in &names {
            if let Some(owner) = images.iter().find(|im| im.names.contains(n)) {
                return Err(Error::NameInUse {
                    kind: RecordKind::Image,
                    name: n.clone(),
                    owner: owner.id.clone(),
                });
            }
        }
        let mut image = Image {
            id: id.clone(),
            digest: options
                .digest
                .as_ref()
                .map(Digest::to_string)
                .unwrap_or_default(),
            names,
            layer: top,
            metadata: options.metadata.clone(),
            created: options.created.unwrap_or_else(GoTime::now_utc),
            ..Image::default()
        };
        let dir = self.images_dir.join(&id);
        let result = (|| -> Result<()> {
            for item in &options.big_data {
                self.write_big_data_file(&dir, &item.key, &item.data)?;
                record_big_data(
                    &mut image.big_data_names,
                    &mut image.big_data_sizes,
                    &mut image.big_data_digests,
                    &item.key,
                    &item.data,
                    if is_manifest_key(&item.key) {
                        item.digest.as_ref()
                    } else {
                        None
                    },
                );
            }
            self.check_image_digests(&mut image)?;
            images.push(image.clone());
            self.images.save(&g, images)?;
            Ok(())
        })();
        drop(lg);
        if let Err(e) = result {
            let _ = remove_dir_all_if_exists(&dir);
            return Err(e);
        }
        Ok(image)
    }

    /// Writes one big-data item into a record's directory; the caller holds the records
    /// file's write lock, so any `.tmp-*` file already there is a crash leftover and is removed
    /// (open does not walk every record's directory).
    fn write_big_data_file(&self, dir: &Path, key: &str, data: &[u8]) -> Result<()> {
        let name = big_data_file_name(key)?;
        mkdir_all(dir)?;
        remove_stale_temp_files(dir)?;
        write_atomic(&dir.join(name), data)
    }

    /// Deletes an image (refused while containers use it). With `delete_layers`, its layer
    /// chain is deleted too, from the top down to the first layer that another image, a
    /// container or another child still needs (what `podman rmi` does). Returns the deleted
    /// layer IDs.
    pub fn delete_image(&self, key: &str, delete_layers: bool) -> Result<Vec<String>> {
        let lg = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&lg)?;
        let g = self.images.lock().write()?;
        let mut images = self.load_images_for_write(&g)?;
        let i = find_index(&images, key, RecordKind::Image)?;
        let id = images[i].id.clone();
        let cg = self.containers.lock().read()?;
        let containers = self.containers.load(&cg)?;
        let users: Vec<String> = containers
            .iter()
            .filter(|c| c.image == id)
            .map(|c| c.id.clone())
            .collect();
        if !users.is_empty() {
            return Err(Error::ImageInUse {
                id,
                containers: users,
            });
        }
        let image = images.remove(i);
        self.images.save(&g, images.clone())?;
        remove_dir_all_if_exists(&self.images_dir.join(&id))?;
        let mut deleted = Vec::new();
        if delete_layers {
            // The image's ID-mapped copies of its top layer go first (their parent is the top
            // layer's parent), unless a container or another image still uses one.
            for mapped in &image.mapped_layers {
                let used = images
                    .iter()
                    .any(|im| &im.layer == mapped || im.mapped_layers.contains(mapped))
                    || containers.iter().any(|c| &c.layer == mapped)
                    || st.layers.iter().any(|l| &l.parent == mapped);
                if !used && st.layers.iter().any(|l| &l.id == mapped) {
                    self.delete_layer_locked(&lg, &mut st, mapped)?;
                    deleted.push(mapped.clone());
                }
            }
            let mut next = Some(image.layer.clone()).filter(|l| !l.is_empty());
            while let Some(layer_id) = next {
                let used_by_image = images
                    .iter()
                    .any(|im| im.layer == layer_id || im.mapped_layers.contains(&layer_id));
                let used_by_container = containers.iter().any(|c| c.layer == layer_id);
                let has_children = st.layers.iter().any(|l| l.parent == layer_id);
                let Some(layer) = st.layers.iter().find(|l| l.id == layer_id).cloned() else {
                    break;
                };
                if used_by_image || used_by_container || has_children {
                    break;
                }
                self.delete_layer_locked(&lg, &mut st, &layer_id)?;
                deleted.push(layer_id);
                next = layer.parent_id().map(str::to_owned);
            }
        }
        Ok(deleted)
    }

    /// Changes an image's names (names move from other images in the same save) and updates
    /// `names-history`.
    pub fn update_image_names(&self, key: &str, names: &[String], op: NamesOp) -> Result<Image> {
        let g = self.images.lock().write()?;
        let mut images = self.load_images_for_write(&g)?;
        let i = find_index(&images, key, RecordKind::Image)?;
        apply_names(&mut images, i, names, op);
        update_names_history(&mut images[i]);
        let image = images[i].clone();
        self.images.save(&g, images)?;
        Ok(image)
    }

    /// Stores a big-data item for an image; for a manifest key, `digest` is the manifest
    /// digest to record (sha256 of the bytes when `None`). Sizes, digests, names and the
    /// image `digest` are updated as containers/storage does.
    pub fn set_image_big_data(
        &self,
        key: &str,
        item_key: &str,
        data: &[u8],
        digest: Option<&Digest>,
    ) -> Result<()> {
        big_data_file_name(item_key)?;
        let g = self.images.lock().write()?;
        let mut images = self.load_images_for_write(&g)?;
        let i = find_index(&images, key, RecordKind::Image)?;
        let dir = self.images_dir.join(&images[i].id);
        self.write_big_data_file(&dir, item_key, data)?;
        let img = &mut images[i];
        record_big_data(
            &mut img.big_data_names,
            &mut img.big_data_sizes,
            &mut img.big_data_digests,
            item_key,
            data,
            if is_manifest_key(item_key) {
                digest
            } else {
                None
            },
        );
        self.check_image_digests(img)?;
        self.images.save(&g, images)?;
        Ok(())
    }

    /// Reads an image's big-data item.
    pub fn image_big_data(&self, key: &str, item_key: &str) -> Result<Vec<u8>> {
        let (_g, images) = self.load_images_for_read()?;
        let i = find_index(&images, key, RecordKind::Image)?;
        self.read_image_big_data(&images[i], item_key)
    }

    /// Reads a big-data item of an image record loaded under the caller's `images.lock`.
    fn read_image_big_data(&self, img: &Image, item_key: &str) -> Result<Vec<u8>> {
        if !img.big_data_names.iter().any(|k| k == item_key) {
            return Err(Error::BigDataUnknown {
                kind: RecordKind::Image,
                id: img.id.clone(),
                key: item_key.to_owned(),
            });
        }
        let path = self
            .images_dir
            .join(&img.id)
            .join(big_data_file_name(item_key)?);
        fs::read(&path).map_err(|e| io_err("reading big data", &path, e))
    }

    /// Replaces an image's metadata (must be JSON when not empty).
    pub fn set_image_metadata(&self, key: &str, metadata: &str) -> Result<()> {
        let g = self.images.lock().write()?;
        let mut images = self.load_images_for_write(&g)?;
        let i = find_index(&images, key, RecordKind::Image)?;
        if !metadata.is_empty() {
            validate_json_metadata(&images[i].id, metadata)?;
        }
        images[i].metadata = metadata.to_owned();
        self.images.save(&g, images)?;
        Ok(())
    }

    // ----- containers ----------------------------------------------------------------------

    /// All containers.
    pub fn containers(&self) -> Result<Vec<Container>> {
        Ok((*self.load_containers_for_read()?.1).clone())
    }

    /// A container by ID, name, unique ID prefix, or its layer's ID.
    pub fn container(&self, key: &str) -> Result<Container> {
        let (_g, containers) = self.load_containers_for_read()?;
        match find_index(&containers, key, RecordKind::Container) {
            Ok(i) => Ok(containers[i].clone()),
            Err(Error::ContainerUnknown { .. }) => containers
                .iter()
                .find(|c| c.layer == key)
                .cloned()
                .ok_or_else(|| unknown(RecordKind::Container, key)),
            Err(e) => Err(e),
        }
    }

    /// Creates a container: a read-write layer on the image's top layer, the record (with
    /// `MountLabel`/`ProcessLabel` flags) and its `userdata/` directories under the graph root
    /// and the run root.
    pub fn create_container(&self, options: ContainerOptions) -> Result<Container> {
        let id = match &options.id {
            Some(id) => {
                validate_id(id, RecordKind::Container)?;
                id.clone()
            }
            None => random_id(),
        };
        let requested = &options.id_mappings;
        validate_id_map(&requested.uid_map)?;
        validate_id_map(&requested.gid_map)?;
        // containers/storage serialises creates that choose ID maps on userns.lock.
        let _userns = if requested.is_requested() {
            Some(self.userns_lock.write()?)
        } else {
            None
        };
        let names = dedupe(options.names.clone());
        let check_free = |containers: &[Container]| -> Result<()> {
            if containers.iter().any(|c| c.id == id) {
                return Err(Error::IdInUse {
                    kind: RecordKind::Container,
                    id: id.clone(),
                });
            }
            for n in &names {
                if let Some(owner) = containers.iter().find(|c| c.names.contains(n)) {
                    return Err(Error::NameInUse {
                        kind: RecordKind::Container,
                        name: n.clone(),
                        owner: owner.id.clone(),
                    });
                }
            }
            Ok(())
        };
        let lg = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&lg)?;
        let (image_id, candidates) = if options.image.is_empty() {
            (String::new(), Vec::new())
        } else {
            let (_ig, images) = self.load_images_for_read()?;
            let i = find_index(&images, &options.image, RecordKind::Image)?;
            let image = &images[i];
            let candidates: Vec<String> = std::iter::once(&image.layer)
                .chain(image.mapped_layers.iter())
                .filter(|l| !l.is_empty())
                .cloned()
                .collect();
            (image.id.clone(), candidates)
        };
        // The top layer's maps are the default; without an image, the store's.
        let default_maps = match candidates
            .first()
            .and_then(|top| st.layers.iter().find(|l| &l.id == top))
        {
            Some(top) => IdMappings {
                uid: top.uid_map.clone(),
                gid: top.gid_map.clone(),
            },
            None => self.id_mappings.clone(),
        };
        let maps = requested.resolve(&default_maps);
        // Refuse a taken ID or name before any (possibly long) mapped-layer work; checked
        // again under the write lock below.
        {
            let (_cg, containers) = self.load_containers_for_read()?;
            check_free(&containers)?;
        }
        let parent = if candidates.is_empty() {
            None
        } else {
            Some(self.top_layer_for_mapping(&lg, &mut st, &image_id, &candidates, &maps)?)
        };
        let cg = self.containers.lock().write()?;
        let mut containers = self.load_containers_for_write(&cg)?;
        check_free(&containers)?;
        let layer = self.create_layer_locked(
            &lg,
            &mut st,
            random_id(),
            &LayerOptions {
                parent,
                names: options.layer_names.clone(),
                mount_label: options.mount_label.clone(),
                read_write: true,
                ..LayerOptions::default()
            },
            None,
            &maps,
        )?;
        let mut flags = options.flags.clone();
        flags.insert(
            "MountLabel".into(),
            Value::String(options.mount_label.clone()),
        );
        flags.insert(
            "ProcessLabel".into(),
            Value::String(options.process_label.clone()),
        );
        let container = Container {
            id: id.clone(),
            names,
            image: image_id,
            layer: layer.id.clone(),
            metadata: options.metadata.clone(),
            created: GoTime::now_utc(),
            uid_map: maps.uid,
            gid_map: maps.gid,
            flags,
            ..Container::default()
        };
        let result = (|| -> Result<()> {
            containers.push(container.clone());
            self.containers.save(&cg, containers)?;
            mkdir_all(&self.containers_dir.join(&id).join("userdata"))?;
            mkdir_all(&self.run_containers_dir.join(&id).join("userdata"))?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = self.delete_layer_locked(&lg, &mut st, &layer.id);
            return Err(e);
        }
        Ok(container)
    }

    /// Deletes a container: its record, its directories under the graph and run roots, and
    /// its layer (unmounted first).
    pub fn delete_container(&self, key: &str) -> Result<()> {
        let lg = self.layers.lock().write()?;
        let mut st = self.load_layers_for_write(&lg)?;
        let cg = self.containers.lock().write()?;
        let mut containers = self.load_containers_for_write(&cg)?;
        let i = find_index(&containers, key, RecordKind::Container)?;
        let c = containers.remove(i);
        self.containers.save(&cg, containers)?;
        remove_dir_all_if_exists(&self.containers_dir.join(&c.id))?;
        remove_dir_all_if_exists(&self.run_containers_dir.join(&c.id))?;
        if st.layers.iter().any(|l| l.id == c.layer) {
            self.delete_layer_locked(&lg, &mut st, &c.layer)?;
        }
        Ok(())
    }

    /// Changes a container's names (names move from other containers in the same save).
    pub fn update_container_names(
        &self,
        key: &str,
        names: &[String],
        op: NamesOp,
    ) -> Result<Container> {
        let g = self.containers.lock().write()?;
        let mut containers = self.load_containers_for_write(&g)?;
        let i = find_index(&containers, key, RecordKind::Container)?;
        apply_names(&mut containers, i, names, op);
        let c = containers[i].clone();
        self.containers.save(&g, containers)?;
        Ok(c)
    }

    /// Replaces a container's metadata.
    pub fn set_container_metadata(&self, key: &str, metadata: &str) -> Result<()> {
        let g = self.containers.lock().write()?;
        let mut containers = self.load_containers_for_write(&g)?;
        let i = find_index(&containers, key, RecordKind::Container)?;
        containers[i].metadata = metadata.to_owned();
        self.containers.save(&g, containers)?;
        Ok(())
    }

    /// Stores a container big-data item (digest: sha256 of the bytes).
    pub fn set_container_big_data(&self, key: &str, item_key: &str, data: &[u8]) -> Result<()> {
        big_data_file_name(item_key)?;
        let g = self.containers.lock().write()?;
        let mut containers = self.load_containers_for_write(&g)?;
        let i = find_index(&containers, key, RecordKind::Container)?;
        let dir = self.containers_dir.join(&containers[i].id);
        self.write_big_data_file(&dir, item_key, data)?;
        let c = &mut containers[i];
        record_big_data(
            &mut c.big_data_names,
            &mut c.big_data_sizes,
            &mut c.big_data_digests,
            item_key,
            data,
            None,
        );
        self.containers.save(&g, containers)?;
        Ok(())
    }

    /// Reads a container big-data item.
    pub fn container_big_data(&self, key: &str, item_key: &str) -> Result<Vec<u8>> {
        let (_g, containers) = self.load_containers_for_read()?;
        let i = find_index(&containers, key, RecordKind::Container)?;
        let c = &containers[i];
        if !c.big_data_names.iter().any(|k| k == item_key) {
            return Err(Error::BigDataUnknown {
                kind: RecordKind::Container,
                id: c.id.clone(),
                key: item_key.to_owned(),
            });
        }
        let path = self
            .containers_dir
            .join(&c.id)
            .join(big_data_file_name(item_key)?);
        fs::read(&path).map_err(|e| io_err("reading big data", &path, e))
    }

    /// `<graphroot>/<driver>-containers/<id>/userdata`, created if missing.
    pub fn container_directory(&self, key: &str) -> Result<PathBuf> {
        let c = self.container(key)?;
        let d = self.containers_dir.join(&c.id).join("userdata");
        mkdir_all(&d)?;
        Ok(d)
    }

    /// `<runroot>/<driver>-containers/<id>/userdata`, created if missing.
    pub fn container_run_directory(&self, key: &str) -> Result<PathBuf> {
        let c = self.container(key)?;
        let d = self.run_containers_dir.join(&c.id).join("userdata");
        mkdir_all(&d)?;
        Ok(d)
    }

    /// Reads a records file's raw bytes (for diagnostics and tests).
    pub fn raw_records_file(&self, kind: RecordKind) -> Result<Vec<u8>> {
        read_or_empty(match kind {
            RecordKind::Layer => self.layers.path(),
            RecordKind::Image => self.images.path(),
            RecordKind::Container => self.containers.path(),
        })
    }
}

/// Records what applying a layer's diff found (digests, sizes, compression, ID sets).
fn fill_record(record: &mut Layer, options: &LayerOptions, report: &podstore_layer::ApplyReport) {
    record.compressed_digest = options
        .compressed_digest
        .as_ref()
        .unwrap_or(&report.compressed_digest)
        .to_string();
    record.compressed_size = i64::try_from(report.compressed_size).unwrap_or(i64::MAX);
    record.uncompressed_digest = report.diff_digest.to_string();
    record.uncompressed_size = i64::try_from(report.diff_size).unwrap_or(i64::MAX);
    record.compression = report.compression as i64;
    record.uid_set = report.uids.iter().copied().collect();
    record.gid_set = report.gids.iter().copied().collect();
}

/// The record files and directories of a [`Store`], for the check and repair module.
pub(crate) struct StoreParts<'a> {
    pub(crate) layers: &'a RecordFile<Layer>,
    pub(crate) mounts: &'a RecordFile<Mountpoint>,
    pub(crate) images: &'a RecordFile<Image>,
    pub(crate) containers: &'a RecordFile<Container>,
    pub(crate) layers_dir: &'a Path,
    pub(crate) images_dir: &'a Path,
    pub(crate) containers_dir: &'a Path,
    pub(crate) run_containers_dir: &'a Path,
    pub(crate) tmp_dir: &'a Path,
    /// The driver's own staging directory ([`Driver::staging_parent`]), if it has one.
    pub(crate) driver_staging: Option<PathBuf>,
}

impl Store {
    /// The record files and directories (for `check` and `repair`).
    pub(crate) fn parts(&self) -> StoreParts<'_> {
        StoreParts {
            layers: &self.layers,
            mounts: &self.mounts,
            images: &self.images,
            containers: &self.containers,
            layers_dir: &self.layers_dir,
            images_dir: &self.images_dir,
            containers_dir: &self.containers_dir,
            run_containers_dir: &self.run_containers_dir,
            tmp_dir: &self.tmp_dir,
            driver_staging: self.driver.staging_parent(),
        }
    }
}

fn duplicate_name<R: Named>(records: &[R]) -> Option<String> {
    let mut seen = BTreeSet::new();
    for r in records {
        for n in r.names() {
            if !seen.insert(n.as_str()) {
                return Some(n.clone());
            }
        }
    }
    None
}

fn validate_json_metadata(id: &str, metadata: &str) -> Result<()> {
    serde_json::from_str::<Value>(metadata)
        .map(|_| ())
        .map_err(|e| Error::InvalidMetadata {
            id: id.to_owned(),
            reason: e.to_string(),
        })
}

fn record_big_data(
    names: &mut Vec<String>,
    sizes: &mut BTreeMap<String, i64>,
    digests: &mut BTreeMap<String, String>,
    key: &str,
    data: &[u8],
    digest: Option<&Digest>,
) {
    let d = digest.cloned().unwrap_or_else(|| Digest::sha256_of(data));
    sizes.insert(
        key.to_owned(),
        i64::try_from(data.len()).unwrap_or(i64::MAX),
    );
    digests.insert(key.to_owned(), d.to_string());
    if !names.iter().any(|n| n == key) {
        names.push(key.to_owned());
    }
}

/// Whether `path` is a mount point according to /proc/self/mountinfo.
pub(crate) fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == want)
}

pub(crate) fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The layer ID of a staging directory name `<id>-<16 hex>`, as [`Store::stage_layer`] makes
/// them; `None` for any other name.
pub(crate) fn staged_dir_layer_id(name: &str) -> Option<&str> {
    let (id, random) = name.rsplit_once('-')?;
    (random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The names in directory `dir` with whether each is a directory (not following symlinks);
/// empty when `dir` does not exist.
fn list_names(dir: &Path) -> Result<Vec<(String, bool)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", dir, e))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        names.push((entry.file_name().to_string_lossy().into_owned(), is_dir));
    }
    Ok(names)
}

#[cfg(test)]
mod id_mapping_tests {
    use super::*;

    fn range(c: u32, h: u32, s: u32) -> IdMap {
        IdMap {
            container_id: c,
            host_id: h,
            size: s,
        }
    }

    #[test]
    fn requested_maps_resolve_like_containers_storage() {
        let image = IdMappings {
            uid: vec![range(0, 100_000, 65536)],
            gid: vec![range(0, 200_000, 65536)],
        };
        let own = vec![range(0, 300_000, 10)];
        // (options, expected uid map, expected gid map)
        let table = [
            (
                IdMappingOptions::default(),
                image.uid.clone(),
                image.gid.clone(),
            ),
            (
                IdMappingOptions {
                    uid_map: own.clone(),
                    ..IdMappingOptions::default()
                },
                own.clone(),
                image.gid.clone(),
            ),
            (
                IdMappingOptions {
                    host_uid_mapping: true,
                    uid_map: own.clone(),
                    gid_map: own.clone(),
                    ..IdMappingOptions::default()
                },
                Vec::new(),
                own.clone(),
            ),
            (
                IdMappingOptions {
                    host_uid_mapping: true,
                    host_gid_mapping: true,
                    ..IdMappingOptions::default()
                },
                Vec::new(),
                Vec::new(),
            ),
        ];
        for (options, uid, gid) in table {
            let got = options.resolve(&image);
            assert_eq!((got.uid, got.gid), (uid, gid), "{options:?}");
        }
        assert!(!IdMappingOptions::default().is_requested());
    }

    #[test]
    fn bad_ranges_are_refused() {
        for bad in [
            range(0, 0, 0),
            range(u32::MAX - 5, 0, 6),
            range(0, u32::MAX - 1, 2),
        ] {
            assert!(
                matches!(validate_id_map(&[bad]), Err(Error::InvalidIdMap { range, .. }) if range == bad),
                "{bad:?}"
            );
        }
        assert!(validate_id_map(&[range(0, 100_000, 65536), range(65536, 0, 1)]).is_ok());
        assert!(validate_id_map(&[range(0, u32::MAX - 1, 1)]).is_ok());
    }
}
