//! `check` and `repair` of a [`Store`]: the store verified against itself (every reference
//! resolves, big data matches its recorded sizes and digests, layer diffs match their recorded
//! digests and sizes), against the kernel mount table, and against the filesystem (directories
//! and files no record accounts for, crash leftovers such as incomplete layers, stale temporary
//! files, staged blobs and ingests). [`Store::repair`] removes what is broken or unreachable and
//! nothing else.
//!
//! Locks are taken in containers/storage's order (layers, images, containers; mountpoints
//! innermost), for reading while checking and for writing while repairing; re-reading layer
//! contents happens one layer at a time under that layer store's read lock only.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use podstore_reference::{Algorithm, Digest};
use serde_json::{Value, json};

use crate::error::{RecordKind, Result, io_err};
use crate::fsutil::{
    TEMP_PREFIX, big_data_file_name, remove_dir_all_if_exists, remove_file_if_exists,
};
use crate::lockfile::LockGuard;
use crate::records::{Container, INCOMPLETE_FLAG, Image, Layer, Mountpoint, is_manifest_key};
use crate::store::{Store, is_mount_point, unescape_mountinfo};

/// Entries of the overlay driver home that are not layer directories (containers/storage's
/// allow list in HEAD `check`).
const OVERLAY_HOME_ENTRIES: &[&str] = &["l", "staging", "tempdirs", "backingFsBlockDev"];

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Re-read every layer that has a tar-split and compare the rebuilt diff's digest and size
    /// with `diff-digest` and `diff-size` (containers/storage's `CheckMost`). Costs a read of
    /// every layer's files.
    pub layer_contents: bool,
    /// Leftovers that a concurrent process may still be working on (layers no image or
    /// container references yet, staged blobs in `<graphroot>/tmp`, ingests) count only when
    /// at least this old. Zero when no other process uses the store (e.g. right after a crash).
    pub stale_after: Duration,
    /// Blob stores (roots holding `ingest/`) whose abandoned ingests count as leftovers, e.g.
    /// `<graphroot>/podstore-blobs`.
    pub blob_stores: Vec<PathBuf>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            layer_contents: true,
            stale_after: Duration::from_secs(3600),
            blob_stores: Vec::new(),
        }
    }
}

/// One problem found by [`Store::check`]; each names the record ID and/or path involved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Finding {
    /// A layer record still flagged `incomplete` (a create or delete that did not finish).
    IncompleteLayer {
        /// Layer ID.
        layer: String,
    },
    /// A layer's parent does not exist.
    LayerParentMissing {
        /// Layer ID.
        layer: String,
        /// The missing parent ID.
        parent: String,
    },
    /// A layer's driver directory does not exist.
    LayerDataMissing {
        /// Layer ID.
        layer: String,
        /// Where the directory should be.
        path: PathBuf,
    },
    /// A layer with a recorded diff digest has no tar-split file.
    LayerTarSplitMissing {
        /// Layer ID.
        layer: String,
        /// Where the file should be.
        path: PathBuf,
    },
    /// The layer's rebuilt diff does not match `diff-digest` / `diff-size`.
    LayerDiffMismatch {
        /// Layer ID.
        layer: String,
        /// Recorded `diff-digest`.
        recorded_digest: String,
        /// Digest of the rebuilt diff.
        actual_digest: String,
        /// Recorded `diff-size`.
        recorded_size: i64,
        /// Length of the rebuilt diff.
        actual_size: u64,
    },
    /// The layer's diff could not be rebuilt (unreadable tar-split, missing files).
    LayerDiffUnreadable {
        /// Layer ID.
        layer: String,
        /// Why.
        reason: String,
    },
    /// A layer that no image (top or mapped layer, or their ancestors) and no container uses.
    LayerUnreferenced {
        /// Layer ID.
        layer: String,
        /// Whether it looks like a container's read-write layer (no diff digest).
        read_write: bool,
    },
    /// An image's top or mapped layer does not exist.
    ImageLayerMissing {
        /// Image ID.
        image: String,
        /// The missing layer ID.
        layer: String,
    },
    /// A container's image does not exist.
    ContainerImageMissing {
        /// Container ID.
        container: String,
        /// The missing image ID.
        image: String,
    },
    /// A container's layer does not exist.
    ContainerLayerMissing {
        /// Container ID.
        container: String,
        /// The missing layer ID.
        layer: String,
    },
    /// A big-data item named by a record has no file.
    BigDataMissing {
        /// Kind of the owning record.
        kind: RecordKind,
        /// Its ID.
        id: String,
        /// The big-data key.
        key: String,
        /// Where the file should be.
        path: PathBuf,
    },
    /// A big-data file's length differs from `big-data-sizes`.
    BigDataSizeMismatch {
        /// Kind of the owning record.
        kind: RecordKind,
        /// Its ID.
        id: String,
        /// The big-data key.
        key: String,
        /// Recorded size.
        recorded: i64,
        /// File length.
        actual: u64,
    },
    /// A big-data file's digest differs from `big-data-digests`.
    BigDataDigestMismatch {
        /// Kind of the owning record.
        kind: RecordKind,
        /// Its ID.
        id: String,
        /// The big-data key.
        key: String,
        /// Recorded digest.
        recorded: String,
        /// Digest of the file.
        actual: String,
    },
    /// `mountpoints.json` counts a mount the kernel does not have (or of a layer that does not
    /// exist).
    MountNotMounted {
        /// Layer ID.
        layer: String,
        /// Recorded mount point.
        path: PathBuf,
        /// Recorded count.
        count: i64,
    },
    /// The kernel has a layer mounted that `mountpoints.json` does not count.
    MountUnrecorded {
        /// Layer ID (the directory name under the driver home).
        layer: String,
        /// The mount point.
        path: PathBuf,
    },
    /// A directory under the driver home that no layer record accounts for.
    OrphanLayerDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// An overlay `l/` link whose target does not exist or belongs to no layer.
    DanglingLink {
        /// The link.
        path: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// An overlay layer whose `l/<link>` symlink is missing (mounting its children fails).
    LayerLinkMissing {
        /// Layer ID.
        layer: String,
        /// The missing link.
        path: PathBuf,
    },
    /// A `<id>.tar-split.gz` or layer big-data directory without a layer record.
    OrphanLayerFile {
        /// The file or directory.
        path: PathBuf,
    },
    /// An image directory without an image record.
    OrphanImageDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A container directory (graph root or run root) without a container record.
    OrphanContainerDirectory {
        /// The directory.
        path: PathBuf,
    },
    /// A `.tmp-*` file of an atomic write that never completed.
    StaleTempFile {
        /// The file.
        path: PathBuf,
    },
    /// A leftover in `<graphroot>/tmp` (a staged blob of an interrupted pull).
    StaleStaging {
        /// The file or directory.
        path: PathBuf,
    },
    /// An abandoned ingest (partial download) in a blob store.
    StaleIngest {
        /// The ingest directory.
        path: PathBuf,
    },
}

impl Finding {
    /// A short stable name of the finding's kind (`incomplete-layer`, `orphan-layer-directory`,
    /// …), used in the JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::IncompleteLayer { .. } => "incomplete-layer",
            Finding::LayerParentMissing { .. } => "layer-parent-missing",
            Finding::LayerDataMissing { .. } => "layer-data-missing",
            Finding::LayerTarSplitMissing { .. } => "layer-tar-split-missing",
            Finding::LayerDiffMismatch { .. } => "layer-diff-mismatch",
            Finding::LayerDiffUnreadable { .. } => "layer-diff-unreadable",
            Finding::LayerUnreferenced { .. } => "layer-unreferenced",
            Finding::ImageLayerMissing { .. } => "image-layer-missing",
            Finding::ContainerImageMissing { .. } => "container-image-missing",
            Finding::ContainerLayerMissing { .. } => "container-layer-missing",
            Finding::BigDataMissing { .. } => "big-data-missing",
            Finding::BigDataSizeMismatch { .. } => "big-data-size-mismatch",
            Finding::BigDataDigestMismatch { .. } => "big-data-digest-mismatch",
            Finding::MountNotMounted { .. } => "mount-not-mounted",
            Finding::MountUnrecorded { .. } => "mount-unrecorded",
            Finding::OrphanLayerDirectory { .. } => "orphan-layer-directory",
            Finding::DanglingLink { .. } => "dangling-link",
            Finding::LayerLinkMissing { .. } => "layer-link-missing",
            Finding::OrphanLayerFile { .. } => "orphan-layer-file",
            Finding::OrphanImageDirectory { .. } => "orphan-image-directory",
            Finding::OrphanContainerDirectory { .. } => "orphan-container-directory",
            Finding::StaleTempFile { .. } => "stale-temp-file",
            Finding::StaleStaging { .. } => "stale-staging",
            Finding::StaleIngest { .. } => "stale-ingest",
        }
    }

    /// Whether the finding means a visible image or container is not whole (a reader would
    /// fail on it), as opposed to unreachable leftovers that no reader sees.
    pub fn damages_visible_record(&self) -> bool {
        matches!(
            self,
            Finding::LayerParentMissing { .. }
                | Finding::LayerDataMissing { .. }
                | Finding::LayerTarSplitMissing { .. }
                | Finding::LayerDiffMismatch { .. }
                | Finding::LayerDiffUnreadable { .. }
                | Finding::ImageLayerMissing { .. }
                | Finding::ContainerImageMissing { .. }
                | Finding::ContainerLayerMissing { .. }
                | Finding::BigDataMissing { .. }
                | Finding::BigDataSizeMismatch { .. }
                | Finding::BigDataDigestMismatch { .. }
                | Finding::LayerLinkMissing { .. }
        )
    }

    /// The record ID the finding is about, if it is about a record.
    pub fn id(&self) -> Option<&str> {
        match self {
            Finding::IncompleteLayer { layer }
            | Finding::LayerParentMissing { layer, .. }
            | Finding::LayerDataMissing { layer, .. }
            | Finding::LayerTarSplitMissing { layer, .. }
            | Finding::LayerDiffMismatch { layer, .. }
            | Finding::LayerDiffUnreadable { layer, .. }
            | Finding::LayerUnreferenced { layer, .. }
            | Finding::MountNotMounted { layer, .. }
            | Finding::MountUnrecorded { layer, .. }
            | Finding::LayerLinkMissing { layer, .. } => Some(layer),
            Finding::ImageLayerMissing { image, .. } => Some(image),
            Finding::ContainerImageMissing { container, .. }
            | Finding::ContainerLayerMissing { container, .. } => Some(container),
            Finding::BigDataMissing { id, .. }
            | Finding::BigDataSizeMismatch { id, .. }
            | Finding::BigDataDigestMismatch { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The path the finding is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Finding::LayerDataMissing { path, .. }
            | Finding::LayerTarSplitMissing { path, .. }
            | Finding::BigDataMissing { path, .. }
            | Finding::MountNotMounted { path, .. }
            | Finding::MountUnrecorded { path, .. }
            | Finding::OrphanLayerDirectory { path }
            | Finding::DanglingLink { path, .. }
            | Finding::LayerLinkMissing { path, .. }
            | Finding::OrphanLayerFile { path }
            | Finding::OrphanImageDirectory { path }
            | Finding::OrphanContainerDirectory { path }
            | Finding::StaleTempFile { path }
            | Finding::StaleStaging { path }
            | Finding::StaleIngest { path } => Some(path),
            _ => None,
        }
    }

    /// The finding as a JSON object: `kind`, `id` and `path` when there are, and `message`.
    pub fn to_json(&self) -> Value {
        let mut object = json!({ "kind": self.kind() });
        if let Some(id) = self.id() {
            object["id"] = json!(id);
        }
        if let Some(path) = self.path() {
            object["path"] = json!(path.to_string_lossy());
        }
        object["message"] = json!(self.to_string());
        object
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::IncompleteLayer { layer } => write!(f, "layer {layer} is flagged incomplete"),
            Finding::LayerParentMissing { layer, parent } => {
                write!(f, "layer {layer}: parent layer {parent} does not exist")
            }
            Finding::LayerDataMissing { layer, path } => {
                write!(
                    f,
                    "layer {layer}: driver directory {} is missing",
                    path.display()
                )
            }
            Finding::LayerTarSplitMissing { layer, path } => {
                write!(f, "layer {layer}: tar-split {} is missing", path.display())
            }
            Finding::LayerDiffMismatch {
                layer,
                recorded_digest,
                actual_digest,
                recorded_size,
                actual_size,
            } => write!(
                f,
                "layer {layer}: diff is {actual_digest} ({actual_size} bytes), recorded \
                 {recorded_digest} ({recorded_size} bytes)"
            ),
            Finding::LayerDiffUnreadable { layer, reason } => {
                write!(f, "layer {layer}: diff cannot be rebuilt: {reason}")
            }
            Finding::LayerUnreferenced { layer, read_write } => write!(
                f,
                "{} layer {layer} is used by no image and no container",
                if *read_write { "read-write" } else { "image" }
            ),
            Finding::ImageLayerMissing { image, layer } => {
                write!(f, "image {image}: layer {layer} does not exist")
            }
            Finding::ContainerImageMissing { container, image } => {
                write!(f, "container {container}: image {image} does not exist")
            }
            Finding::ContainerLayerMissing { container, layer } => {
                write!(f, "container {container}: layer {layer} does not exist")
            }
            Finding::BigDataMissing {
                kind,
                id,
                key,
                path,
            } => write!(
                f,
                "{kind} {id}: big data {key:?} ({}) is missing",
                path.display()
            ),
            Finding::BigDataSizeMismatch {
                kind,
                id,
                key,
                recorded,
                actual,
            } => write!(
                f,
                "{kind} {id}: big data {key:?} has {actual} bytes, recorded {recorded}"
            ),
            Finding::BigDataDigestMismatch {
                kind,
                id,
                key,
                recorded,
                actual,
            } => write!(
                f,
                "{kind} {id}: big data {key:?} has digest {actual}, recorded {recorded}"
            ),
            Finding::MountNotMounted { layer, path, count } => write!(
                f,
                "layer {layer}: recorded as mounted {count} time(s) on {} but not mounted",
                path.display()
            ),
            Finding::MountUnrecorded { layer, path } => write!(
                f,
                "layer {layer}: mounted on {} without a mount record",
                path.display()
            ),
            Finding::OrphanLayerDirectory { path } => {
                write!(f, "driver directory {} belongs to no layer", path.display())
            }
            Finding::DanglingLink { path, target } => write!(
                f,
                "link {} points to {}, which is no layer's",
                path.display(),
                target.display()
            ),
            Finding::LayerLinkMissing { layer, path } => {
                write!(f, "layer {layer}: link {} is missing", path.display())
            }
            Finding::OrphanLayerFile { path } => {
                write!(f, "{} belongs to no layer", path.display())
            }
            Finding::OrphanImageDirectory { path } => {
                write!(f, "image directory {} belongs to no image", path.display())
            }
            Finding::OrphanContainerDirectory { path } => write!(
                f,
                "container directory {} belongs to no container",
                path.display()
            ),
            Finding::StaleTempFile { path } => {
                write!(f, "temporary file {} was never completed", path.display())
            }
            Finding::StaleStaging { path } => {
                write!(
                    f,
                    "staged data {} was left by an interrupted pull",
                    path.display()
                )
            }
            Finding::StaleIngest { path } => {
                write!(f, "ingest {} was abandoned", path.display())
            }
        }
    }
}

/// The result of [`Store::check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Layers checked (records, including incomplete ones).
    pub layers: usize,
    /// Images checked.
    pub images: usize,
    /// Containers checked.
    pub containers: usize,
    /// The problems found, in a stable order (records first, then the filesystem).
    pub findings: Vec<Finding>,
}

impl CheckReport {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The report as JSON: counts and the findings.
    pub fn to_json(&self) -> Value {
        json!({
            "layers": self.layers,
            "images": self.images,
            "containers": self.containers,
            "findings": self.findings.iter().map(Finding::to_json).collect::<Vec<_>>(),
        })
    }
}

/// The result of [`Store::repair`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// What was found before repairing.
    pub before: CheckReport,
    /// Layers removed (broken, incomplete or unreferenced).
    pub removed_layers: Vec<String>,
    /// Images removed (a layer or big-data item was missing or damaged).
    pub removed_images: Vec<String>,
    /// Containers removed (their image, layer or big data was missing or damaged).
    pub removed_containers: Vec<String>,
    /// Files, directories, links and mounts removed or fixed.
    pub removed_paths: Vec<PathBuf>,
    /// What a fresh check finds afterwards (empty when the repair succeeded).
    pub after: CheckReport,
}

/// Records and directory listings taken under the read (check) or write (repair) locks.
struct Snapshot {
    layers: Vec<Layer>,
    mounts: Vec<Mountpoint>,
    images: Vec<Image>,
    containers: Vec<Container>,
}

/// Layers damaged in their content, found by the unlocked content pass: ID and creation time
/// (so a layer re-created meanwhile under the same ID is not taken for the damaged one).
type Damaged = BTreeMap<String, (String, Finding)>;

fn is_old(path: &Path, stale_after: Duration, now: SystemTime) -> bool {
    if stale_after.is_zero() {
        return true;
    }
    fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|age| age >= stale_after)
}

/// Whether a record created at `created` is at least `stale_after` old (a zero creation time,
/// as containers/storage treats it, is old).
fn record_is_old(created: &crate::GoTime, stale_after: Duration, now: SystemTime) -> bool {
    if stale_after.is_zero() || created.is_zero() {
        return true;
    }
    let secs = u64::try_from(created.unix_seconds()).unwrap_or(0);
    let created = SystemTime::UNIX_EPOCH + Duration::new(secs, created.subsec_nanos());
    now.duration_since(created).unwrap_or_default() >= stale_after
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf, fs::FileType)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err("listing", dir, e))?;
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
            file_type,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Kernel mount points (unescaped), from /proc/self/mountinfo.
fn kernel_mounts() -> BTreeSet<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return BTreeSet::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|mp| PathBuf::from(unescape_mountinfo(mp)))
        .collect()
}

fn sha256_file(path: &Path) -> Result<(Digest, u64)> {
    let mut file = fs::File::open(path).map_err(|e| io_err("opening", path, e))?;
    let mut digester = Algorithm::Sha256.digester();
    let n = io::copy(&mut file, &mut digester).map_err(|e| io_err("reading", path, e))?;
    Ok((digester.finish(), n))
}

/// Whether the bytes are a schema 1 manifest, whose recorded digest strips its signatures.
fn is_schema1(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v.get("schemaVersion").and_then(Value::as_i64) == Some(1))
}

/// A record that owns big-data items (files under `<kind>s-dir/<id>/`): layers record only
/// the keys, images and containers also their sizes and digests.
trait BigDataOwner {
    const KIND: RecordKind;
    fn id(&self) -> &str;
    fn big_data_names(&self) -> &[String];
    fn big_data_sizes(&self) -> Option<&BTreeMap<String, i64>>;
    fn big_data_digests(&self) -> Option<&BTreeMap<String, String>>;
}

impl BigDataOwner for Layer {
    const KIND: RecordKind = RecordKind::Layer;
    fn id(&self) -> &str {
        &self.id
    }
    fn big_data_names(&self) -> &[String] {
        &self.big_data_names
    }
    fn big_data_sizes(&self) -> Option<&BTreeMap<String, i64>> {
        None
    }
    fn big_data_digests(&self) -> Option<&BTreeMap<String, String>> {
        None
    }
}

/// Images and containers record their big data's keys, sizes and digests in the same fields.
macro_rules! big_data_owner_with_sizes {
    ($record:ty, $kind:expr) => {
        impl BigDataOwner for $record {
            const KIND: RecordKind = $kind;
            fn id(&self) -> &str {
                &self.id
            }
            fn big_data_names(&self) -> &[String] {
                &self.big_data_names
            }
            fn big_data_sizes(&self) -> Option<&BTreeMap<String, i64>> {
                Some(&self.big_data_sizes)
            }
            fn big_data_digests(&self) -> Option<&BTreeMap<String, String>> {
                Some(&self.big_data_digests)
            }
        }
    };
}
big_data_owner_with_sizes!(Image, RecordKind::Image);
big_data_owner_with_sizes!(Container, RecordKind::Container);

/// Checks each big-data file of `owner` in `dir` against its record (present; size and sha256
/// digest as recorded, schema1 manifests excepted). Returns whether anything was found.
fn check_big_data<R: BigDataOwner>(owner: &R, dir: &Path, out: &mut Vec<Finding>) -> Result<bool> {
    let before = out.len();
    let (kind, id) = (R::KIND, owner.id());
    for key in owner.big_data_names() {
        let Ok(file) = big_data_file_name(key) else {
            continue;
        };
        let path = dir.join(file);
        if !path.is_file() {
            out.push(Finding::BigDataMissing {
                kind,
                id: id.to_owned(),
                key: key.clone(),
                path,
            });
            continue;
        }
        let (digest, len) = sha256_file(&path)?;
        if let Some(&recorded) = owner.big_data_sizes().and_then(|s| s.get(key))
            && u64::try_from(recorded).ok() != Some(len)
        {
            out.push(Finding::BigDataSizeMismatch {
                kind,
                id: id.to_owned(),
                key: key.clone(),
                recorded,
                actual: len,
            });
            continue;
        }
        if let Some(recorded) = owner.big_data_digests().and_then(|d| d.get(key))
            && *recorded != digest.to_string()
            && Digest::parse(recorded).is_ok_and(|d| d.algorithm() == Algorithm::Sha256)
            && !(is_manifest_key(key) && is_schema1(&path))
        {
            out.push(Finding::BigDataDigestMismatch {
                kind,
                id: id.to_owned(),
                key: key.clone(),
                recorded: recorded.clone(),
                actual: digest.to_string(),
            });
        }
    }
    Ok(out.len() > before)
}

/// A record that a big-data owner refers to (an image's layers, a container's image and
/// layer): whether it exists, whether it is broken, and the finding when it does not exist.
struct Reference {
    exists: bool,
    broken: bool,
    missing: Finding,
}

/// The pass images and containers share: a record is broken when something it refers to is
/// missing (reported) or broken (not reported again), or when its big data is damaged. Returns
/// the IDs of the broken records.
fn owner_pass<R: BigDataOwner>(
    records: &[R],
    dir: &Path,
    references: impl Fn(&R) -> Vec<Reference>,
    out: &mut Vec<Finding>,
) -> Result<BTreeSet<String>> {
    let mut broken = BTreeSet::new();
    for record in records {
        for reference in references(record) {
            if !reference.exists {
                out.push(reference.missing);
                broken.insert(record.id().to_owned());
            } else if reference.broken {
                broken.insert(record.id().to_owned());
            }
        }
        if check_big_data(record, &dir.join(record.id()), out)? {
            broken.insert(record.id().to_owned());
        }
    }
    Ok(broken)
}

/// Which records are broken, given the snapshot and the content-damaged layers.
struct Verdict {
    findings: Vec<Finding>,
    bad_layers: BTreeSet<String>,
    bad_images: BTreeSet<String>,
    bad_containers: BTreeSet<String>,
}

impl Store {
    fn snapshot(&self, lg: &LockGuard, ig: &LockGuard, cg: &LockGuard) -> Result<Snapshot> {
        let parts = self.parts();
        let layers = (*parts.layers.load(lg)?).clone();
        let mounts = {
            let mg = parts.mounts.lock().read()?;
            (*parts.mounts.load(&mg)?).clone()
        };
        Ok(Snapshot {
            layers,
            mounts,
            images: (*parts.images.load(ig)?).clone(),
            containers: (*parts.containers.load(cg)?).clone(),
        })
    }

    fn driver_layer_dir(&self, id: &str) -> PathBuf {
        match self.driver_name() {
            "vfs" => self.driver().home().join("dir").join(id),
            _ => self.driver().home().join(id),
        }
    }

    /// Judges the records: what is broken, and what no image or container reaches.
    fn verdict(
        &self,
        snap: &Snapshot,
        damaged: &Damaged,
        options: &CheckOptions,
    ) -> Result<Verdict> {
        let parts = self.parts();
        let mut findings = Vec::new();
        let by_id: BTreeMap<&str, &Layer> =
            snap.layers.iter().map(|l| (l.id.as_str(), l)).collect();
        let mut bad_layers = BTreeSet::new();
        for layer in &snap.layers {
            if layer.is_incomplete() {
                findings.push(Finding::IncompleteLayer {
                    layer: layer.id.clone(),
                });
                bad_layers.insert(layer.id.clone());
                continue;
            }
            if let Some(parent) = layer.parent_id()
                && !by_id.contains_key(parent)
            {
                findings.push(Finding::LayerParentMissing {
                    layer: layer.id.clone(),
                    parent: parent.to_owned(),
                });
                bad_layers.insert(layer.id.clone());
            }
            if !self.driver().exists(&layer.id) {
                findings.push(Finding::LayerDataMissing {
                    layer: layer.id.clone(),
                    path: self.driver_layer_dir(&layer.id),
                });
                bad_layers.insert(layer.id.clone());
            }
            let tar_split = self.tar_split_path(&layer.id);
            if !layer.uncompressed_digest.is_empty() && !tar_split.is_file() {
                findings.push(Finding::LayerTarSplitMissing {
                    layer: layer.id.clone(),
                    path: tar_split,
                });
                bad_layers.insert(layer.id.clone());
            }
            if let Some((created, finding)) = damaged.get(&layer.id)
                && *created == layer.created.to_string()
            {
                findings.push(finding.clone());
                bad_layers.insert(layer.id.clone());
            }
            if check_big_data(layer, &parts.layers_dir.join(&layer.id), &mut findings)? {
                bad_layers.insert(layer.id.clone());
            }
        }
        // A layer on a broken layer is broken too.
        loop {
            let more: Vec<String> = snap
                .layers
                .iter()
                .filter(|l| !bad_layers.contains(&l.id))
                .filter(|l| l.parent_id().is_some_and(|p| bad_layers.contains(p)))
                .map(|l| l.id.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            bad_layers.extend(more);
        }

        let layer_reference = |layer: &str, missing: Finding| Reference {
            exists: by_id.contains_key(layer),
            broken: bad_layers.contains(layer),
            missing,
        };
        let bad_images = owner_pass(
            &snap.images,
            parts.images_dir,
            |image| {
                std::iter::once(&image.layer)
                    .filter(|l| !l.is_empty())
                    .chain(image.mapped_layers.iter())
                    .map(|layer| {
                        layer_reference(
                            layer,
                            Finding::ImageLayerMissing {
                                image: image.id.clone(),
                                layer: layer.clone(),
                            },
                        )
                    })
                    .collect()
            },
            &mut findings,
        )?;

        let image_ids: BTreeSet<&str> = snap.images.iter().map(|i| i.id.as_str()).collect();
        let bad_containers = owner_pass(
            &snap.containers,
            parts.containers_dir,
            |container| {
                let mut references = Vec::new();
                if !container.image.is_empty() {
                    references.push(Reference {
                        exists: image_ids.contains(container.image.as_str()),
                        broken: bad_images.contains(&container.image),
                        missing: Finding::ContainerImageMissing {
                            container: container.id.clone(),
                            image: container.image.clone(),
                        },
                    });
                }
                if !container.layer.is_empty() {
                    references.push(layer_reference(
                        &container.layer,
                        Finding::ContainerLayerMissing {
                            container: container.id.clone(),
                            layer: container.layer.clone(),
                        },
                    ));
                }
                references
            },
            &mut findings,
        )?;

        // Reachability: every layer under an image's top or mapped layers or a container's
        // layer is in use.
        let mut reached = BTreeSet::new();
        let mut roots: Vec<&str> = Vec::new();
        for image in &snap.images {
            roots.push(&image.layer);
            roots.extend(image.mapped_layers.iter().map(String::as_str));
        }
        roots.extend(snap.containers.iter().map(|c| c.layer.as_str()));
        for root in roots {
            let mut next = Some(root).filter(|r| !r.is_empty());
            while let Some(id) = next {
                if !reached.insert(id.to_owned()) {
                    break;
                }
                next = by_id.get(id).and_then(|l| l.parent_id());
            }
        }
        let now = SystemTime::now();
        for layer in &snap.layers {
            if reached.contains(&layer.id) || bad_layers.contains(&layer.id) {
                continue;
            }
            if record_is_old(&layer.created, options.stale_after, now) {
                findings.push(Finding::LayerUnreferenced {
                    layer: layer.id.clone(),
                    read_write: layer.uncompressed_digest.is_empty(),
                });
            }
        }
        Ok(Verdict {
            findings,
            bad_layers,
            bad_images,
            bad_containers,
        })
    }

    /// Mount records against the kernel mount table.
    fn mount_findings(&self, snap: &Snapshot, out: &mut Vec<Finding>) {
        let known: BTreeSet<&str> = snap.layers.iter().map(|l| l.id.as_str()).collect();
        let vfs = self.driver_name() == "vfs";
        let mut recorded = BTreeSet::new();
        for m in &snap.mounts {
            if m.count <= 0 {
                continue;
            }
            let path = PathBuf::from(&m.path);
            recorded.insert(m.id.clone());
            let mounted = if vfs {
                path.is_dir()
            } else {
                is_mount_point(&path)
            };
            if !mounted || !known.contains(m.id.as_str()) {
                out.push(Finding::MountNotMounted {
                    layer: m.id.clone(),
                    path,
                    count: m.count,
                });
            }
        }
        if vfs {
            return;
        }
        let home = self.driver().home();
        for mount in kernel_mounts() {
            let Ok(rest) = mount.strip_prefix(home) else {
                continue;
            };
            let parts: Vec<_> = rest.components().collect();
            if parts.len() == 2 && parts[1].as_os_str() == "merged" {
                let layer = parts[0].as_os_str().to_string_lossy().into_owned();
                if !recorded.contains(&layer) {
                    out.push(Finding::MountUnrecorded {
                        layer,
                        path: mount.clone(),
                    });
                }
            }
        }
    }

    /// Files and directories no record accounts for, and crash leftovers.
    fn filesystem_findings(
        &self,
        snap: &Snapshot,
        options: &CheckOptions,
        out: &mut Vec<Finding>,
    ) -> Result<()> {
        let parts = self.parts();
        let now = SystemTime::now();
        let layer_ids: BTreeSet<&str> = snap.layers.iter().map(|l| l.id.as_str()).collect();
        let home = self.driver().home();
        if self.driver_name() == "vfs" {
            for (name, path, ft) in list_dir(&home.join("dir"))? {
                if ft.is_dir() && !layer_ids.contains(name.as_str()) {
                    out.push(Finding::OrphanLayerDirectory { path });
                }
            }
        } else {
            for (name, path, ft) in list_dir(home)? {
                if ft.is_dir()
                    && !OVERLAY_HOME_ENTRIES.contains(&name.as_str())
                    && !layer_ids.contains(name.as_str())
                {
                    out.push(Finding::OrphanLayerDirectory { path });
                }
            }
            // Links: each must point to `../<layer>/diff` of a recorded layer.
            let mut linked = BTreeSet::new();
            for (name, path, _) in list_dir(&home.join("l"))? {
                let target = fs::read_link(&path).unwrap_or_default();
                let owner = target
                    .strip_prefix("..")
                    .ok()
                    .and_then(|t| t.parent())
                    .and_then(|t| t.to_str())
                    .filter(|_| target.ends_with("diff"))
                    .map(str::to_owned);
                match owner {
                    Some(id)
                        if layer_ids.contains(id.as_str())
                            && home.join(&id).join("diff").is_dir() =>
                    {
                        linked.insert(name);
                    }
                    _ => out.push(Finding::DanglingLink { path, target }),
                }
            }
            for layer in &snap.layers {
                if layer.is_incomplete() {
                    continue;
                }
                let Ok(link) = fs::read_to_string(home.join(&layer.id).join("link")) else {
                    continue;
                };
                let link = link.trim();
                if !link.is_empty() && !link.contains('/') && !linked.contains(link) {
                    out.push(Finding::LayerLinkMissing {
                        layer: layer.id.clone(),
                        path: home.join("l").join(link),
                    });
                }
            }
        }
        // <driver>-layers: tar-split files and big-data directories of known layers only.
        for (name, path, ft) in list_dir(parts.layers_dir)? {
            if name.starts_with(TEMP_PREFIX) {
                if ft.is_file() {
                    out.push(Finding::StaleTempFile { path });
                }
            } else if let Some(id) = name.strip_suffix(".tar-split.gz") {
                if !layer_ids.contains(id) {
                    out.push(Finding::OrphanLayerFile { path });
                }
            } else if ft.is_dir() && name != "tmp" {
                if layer_ids.contains(name.as_str()) {
                    stale_temps_in(&path, out)?;
                } else {
                    out.push(Finding::OrphanLayerFile { path });
                }
            }
        }
        let image_ids: BTreeSet<&str> = snap.images.iter().map(|i| i.id.as_str()).collect();
        for (name, path, ft) in list_dir(parts.images_dir)? {
            if name.starts_with(TEMP_PREFIX) && ft.is_file() {
                out.push(Finding::StaleTempFile { path });
            } else if ft.is_dir() {
                if image_ids.contains(name.as_str()) {
                    stale_temps_in(&path, out)?;
                } else {
                    out.push(Finding::OrphanImageDirectory { path });
                }
            }
        }
        let container_ids: BTreeSet<&str> = snap.containers.iter().map(|c| c.id.as_str()).collect();
        for dir in [parts.containers_dir, parts.run_containers_dir] {
            for (name, path, ft) in list_dir(dir)? {
                if name.starts_with(TEMP_PREFIX) && ft.is_file() {
                    out.push(Finding::StaleTempFile { path });
                } else if ft.is_dir() {
                    if container_ids.contains(name.as_str()) {
                        stale_temps_in(&path, out)?;
                    } else {
                        out.push(Finding::OrphanContainerDirectory { path });
                    }
                }
            }
        }
        for (name, path, ft) in list_dir(parts.tmp_dir)? {
            if name == crate::store::STAGING_DIR && ft.is_dir() {
                // Layer staging: a `<id>-<random>/` directory is a leftover when nobody holds
                // its layer's creation lock (`<id>.lock`, deleted by its holders on release;
                // lockers re-check that the path still names the file they locked).
                stale_staging_in(&path, &path, out)?;
            } else if is_old(&path, options.stale_after, now) {
                out.push(Finding::StaleStaging { path });
            }
        }
        // The driver's own staging directory (overlay: `<home>/staging`) holds the layer data
        // of the same stagers; other names there (containers/storage's) are not ours to judge.
        if let Some(driver_staging) = &parts.driver_staging {
            stale_staging_in(
                driver_staging,
                &parts.tmp_dir.join(crate::store::STAGING_DIR),
                out,
            )?;
        }
        for store in &options.blob_stores {
            for (_, path, _) in list_dir(&store.join(podstore_blobstore::INGEST_DIR))? {
                let data = path.join("data");
                let probe = if data.exists() { data } else { path.clone() };
                if is_old(&probe, options.stale_after, now) {
                    out.push(Finding::StaleIngest { path });
                }
            }
        }
        Ok(())
    }

    /// Re-reads every complete layer with a tar-split and a recorded diff digest, one at a
    /// time under the layer store's read lock, and returns those whose rebuilt diff differs.
    fn content_pass(&self, layers: &[Layer]) -> Damaged {
        let mut damaged = Damaged::new();
        for layer in layers {
            if layer.is_incomplete() || layer.uncompressed_digest.is_empty() {
                continue;
            }
            if !self.tar_split_path(&layer.id).is_file() || !self.driver().exists(&layer.id) {
                continue; // reported structurally
            }
            let mut digester = Algorithm::Sha256.digester();
            let finding = match self.diff(&layer.id, &mut digester) {
                Ok(size) => {
                    let digest = digester.finish().to_string();
                    if digest != layer.uncompressed_digest
                        || u64::try_from(layer.uncompressed_size).ok() != Some(size)
                    {
                        Finding::LayerDiffMismatch {
                            layer: layer.id.clone(),
                            recorded_digest: layer.uncompressed_digest.clone(),
                            actual_digest: digest,
                            recorded_size: layer.uncompressed_size,
                            actual_size: size,
                        }
                    } else {
                        continue;
                    }
                }
                // Deleted meanwhile: not damage.
                Err(crate::Error::LayerUnknown { .. }) => continue,
                Err(e) => Finding::LayerDiffUnreadable {
                    layer: layer.id.clone(),
                    reason: e.to_string(),
                },
            };
            damaged.insert(layer.id.clone(), (layer.created.to_string(), finding));
        }
        damaged
    }

    /// Verifies the store; see the module documentation. Holds `layers.lock`, `images.lock`
    /// and `containers.lock` for reading while it looks at records and directories; re-reads
    /// layer contents (with [`CheckOptions::layer_contents`]) one layer at a time afterwards.
    pub fn check(&self, options: &CheckOptions) -> Result<CheckReport> {
        let parts = self.parts();
        let (mut report, layers) = {
            let lg = parts.layers.lock().read()?;
            let ig = parts.images.lock().read()?;
            let cg = parts.containers.lock().read()?;
            let snap = self.snapshot(&lg, &ig, &cg)?;
            let verdict = self.verdict(&snap, &Damaged::new(), options)?;
            let mut findings = verdict.findings;
            self.mount_findings(&snap, &mut findings);
            self.filesystem_findings(&snap, options, &mut findings)?;
            (
                CheckReport {
                    layers: snap.layers.len(),
                    images: snap.images.len(),
                    containers: snap.containers.len(),
                    findings,
                },
                snap.layers,
            )
        };
        if options.layer_contents {
            // A missing overlay link makes every layer above it unreadable; that is reported
            // (and repaired) as the link, not as damage to those layers.
            let unlinked: BTreeSet<&str> = report
                .findings
                .iter()
                .filter_map(|f| match f {
                    Finding::LayerLinkMissing { layer, .. } => Some(layer.as_str()),
                    _ => None,
                })
                .collect();
            let by_id: BTreeMap<&str, &Layer> = layers.iter().map(|l| (l.id.as_str(), l)).collect();
            let readable: Vec<Layer> = layers
                .iter()
                .filter(|l| {
                    let mut next = by_id.get(l.id.as_str()).and_then(|l| l.parent_id());
                    while let Some(id) = next {
                        if unlinked.contains(id) {
                            return false;
                        }
                        next = by_id.get(id).and_then(|l| l.parent_id());
                    }
                    true
                })
                .cloned()
                .collect();
            let damaged = self.content_pass(&readable);
            report
                .findings
                .extend(damaged.into_values().map(|(_, finding)| finding));
        }
        Ok(report)
    }

    /// Checks, then removes what is broken or unreachable: incomplete, damaged and
    /// unreferenced layers (never one that a kept layer, image or container needs), images and
    /// containers whose layers or big data are missing or damaged, stale mount records and
    /// unrecorded mounts, orphan directories and files, dangling links (missing ones are
    /// re-created), stale temporary files, staged blobs and ingests. Valid records and their
    /// data are never touched. The changes are made under `layers.lock`, `images.lock` and
    /// `containers.lock` held for writing (in that order), after the findings are re-derived
    /// under them. Returns what was done and a fresh check.
    pub fn repair(&self, options: &CheckOptions) -> Result<RepairReport> {
        let before = self.check(options)?;
        let mut report = RepairReport {
            before,
            ..RepairReport::default()
        };
        // First what the records and the filesystem show (links included), then what
        // re-reading the layers finds.
        self.repair_locked(options, &Damaged::new(), &mut report)?;
        if options.layer_contents {
            let layers = {
                let lg = self.parts().layers.lock().read()?;
                (*self.parts().layers.load(&lg)?).clone()
            };
            let damaged = self.content_pass(&layers);
            if !damaged.is_empty() {
                self.repair_locked(options, &damaged, &mut report)?;
            }
        }
        report.after = self.check(options)?;
        Ok(report)
    }

    fn repair_locked(
        &self,
        options: &CheckOptions,
        damaged: &Damaged,
        report: &mut RepairReport,
    ) -> Result<()> {
        let parts = self.parts();
        let lg = parts.layers.lock().write()?;
        let ig = parts.images.lock().write()?;
        let cg = parts.containers.lock().write()?;
        let mut snap = self.snapshot(&lg, &ig, &cg)?;
        let verdict = self.verdict(&snap, damaged, options)?;

        // Containers first (they pin images and layers), then images, then layers.
        if !verdict.bad_containers.is_empty() {
            let (gone, kept): (Vec<Container>, Vec<Container>) = snap
                .containers
                .into_iter()
                .partition(|c| verdict.bad_containers.contains(&c.id));
            parts.containers.save(&cg, kept.clone())?;
            snap.containers = kept;
            for c in gone {
                remove_dir_all_if_exists(&parts.containers_dir.join(&c.id))?;
                remove_dir_all_if_exists(&parts.run_containers_dir.join(&c.id))?;
                report.removed_containers.push(c.id);
            }
        }
        if !verdict.bad_images.is_empty() {
            let (gone, kept): (Vec<Image>, Vec<Image>) = snap
                .images
                .into_iter()
                .partition(|i| verdict.bad_images.contains(&i.id));
            parts.images.save(&ig, kept.clone())?;
            snap.images = kept;
            for image in gone {
                remove_dir_all_if_exists(&parts.images_dir.join(&image.id))?;
                report.removed_images.push(image.id);
            }
        }

        // Layers: broken ones, plus those nothing reaches any more (old enough), but never a
        // layer a kept layer, image or container needs.
        let mut reached = BTreeSet::new();
        {
            let by_id: BTreeMap<&str, &Layer> =
                snap.layers.iter().map(|l| (l.id.as_str(), l)).collect();
            let roots = snap
                .images
                .iter()
                .flat_map(|i| std::iter::once(&i.layer).chain(i.mapped_layers.iter()))
                .chain(snap.containers.iter().map(|c| &c.layer));
            for root in roots {
                let mut next = Some(root.as_str()).filter(|r| !r.is_empty());
                while let Some(id) = next {
                    if !reached.insert(id.to_owned()) {
                        break;
                    }
                    next = by_id.get(id).and_then(|l| l.parent_id());
                }
            }
        }
        let now = SystemTime::now();
        let mut delete: BTreeSet<String> = snap
            .layers
            .iter()
            .filter(|l| {
                verdict.bad_layers.contains(&l.id)
                    || (!reached.contains(&l.id)
                        && record_is_old(&l.created, options.stale_after, now))
            })
            .map(|l| l.id.clone())
            .collect();
        // Keep any layer that a kept layer builds on.
        loop {
            let needed: Vec<String> = snap
                .layers
                .iter()
                .filter(|l| !delete.contains(&l.id))
                .filter_map(|l| l.parent_id())
                .filter(|p| delete.contains(*p) && !verdict.bad_layers.contains(*p))
                .map(str::to_owned)
                .collect();
            if needed.is_empty() {
                break;
            }
            for id in needed {
                delete.remove(&id);
            }
        }
        if !delete.is_empty() {
            // containers/storage's deletion protocol: flag, save, remove data, drop, save.
            for l in snap.layers.iter_mut().filter(|l| delete.contains(&l.id)) {
                l.flags
                    .insert(INCOMPLETE_FLAG.to_owned(), Value::Bool(true));
            }
            parts.layers.save(&lg, snap.layers.clone())?;
            for id in &delete {
                if snap.mounts.iter().any(|m| m.id == *id && m.count > 0) {
                    self.note_mounts_changed();
                    let _ = self.driver().unmount(id);
                }
                self.remove_layer_data(id)?;
            }
            snap.layers.retain(|l| !delete.contains(&l.id));
            snap.mounts.retain(|m| !delete.contains(&m.id));
            parts.layers.save(&lg, snap.layers.clone())?;
            report.removed_layers.extend(delete.iter().cloned());
        }

        // Mount records the kernel does not back, and mounts nobody recorded.
        let mut mount_findings = Vec::new();
        self.mount_findings(&snap, &mut mount_findings);
        let mut mounts_changed = !delete.is_empty();
        for finding in mount_findings {
            match finding {
                Finding::MountNotMounted { layer, path, .. } => {
                    snap.mounts.retain(|m| m.id != layer);
                    mounts_changed = true;
                    report.removed_paths.push(path);
                }
                Finding::MountUnrecorded { layer, path } => {
                    self.note_mounts_changed();
                    if self.driver().exists(&layer) {
                        self.driver().unmount(&layer)?;
                    } else {
                        let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
                    }
                    report.removed_paths.push(path);
                }
                _ => {}
            }
        }
        if mounts_changed {
            let mg = parts.mounts.lock().write()?;
            let known: BTreeSet<&str> = snap.layers.iter().map(|l| l.id.as_str()).collect();
            let mounts: Vec<Mountpoint> = snap
                .mounts
                .iter()
                .filter(|m| !m.path.is_empty() && m.count > 0 && known.contains(m.id.as_str()))
                .cloned()
                .collect();
            parts.mounts.save(&mg, mounts)?;
        }

        // The filesystem.
        let mut fs_findings = Vec::new();
        self.filesystem_findings(&snap, options, &mut fs_findings)?;
        for finding in fs_findings {
            match &finding {
                Finding::OrphanLayerDirectory { path } => {
                    let _ = rustix::mount::unmount(
                        path.join("merged"),
                        rustix::mount::UnmountFlags::DETACH,
                    );
                    remove_dir_all_if_exists(path)?;
                }
                Finding::OrphanLayerFile { path }
                | Finding::OrphanImageDirectory { path }
                | Finding::OrphanContainerDirectory { path }
                | Finding::StaleStaging { path } => {
                    if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
                        remove_dir_all_if_exists(path)?;
                    } else {
                        remove_file_if_exists(path)?;
                    }
                }
                Finding::DanglingLink { path, .. } | Finding::StaleTempFile { path } => {
                    remove_file_if_exists(path)?;
                }
                Finding::LayerLinkMissing { layer, path } => {
                    std::os::unix::fs::symlink(format!("../{layer}/diff"), path)
                        .map_err(|e| io_err("re-creating link", path, e))?;
                }
                Finding::StaleIngest { .. } => continue,
                _ => continue,
            }
            if let Some(path) = finding.path() {
                report.removed_paths.push(path.to_path_buf());
            }
        }
        drop((cg, ig, lg));
        for store in &options.blob_stores {
            let ingest = store.join(podstore_blobstore::INGEST_DIR);
            if !ingest.is_dir() {
                continue;
            }
            let before: BTreeSet<PathBuf> =
                list_dir(&ingest)?.into_iter().map(|(_, p, _)| p).collect();
            let blobs =
                podstore_blobstore::BlobStore::open(store).map_err(|e| crate::Error::Io {
                    op: "opening blob store",
                    path: store.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            blobs
                .prune_ingests(options.stale_after)
                .map_err(|e| crate::Error::Io {
                    op: "pruning ingests",
                    path: ingest.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            let after: BTreeSet<PathBuf> =
                list_dir(&ingest)?.into_iter().map(|(_, p, _)| p).collect();
            report
                .removed_paths
                .extend(before.difference(&after).cloned());
        }
        Ok(())
    }
}

/// `.tmp-*` files directly inside a record's directory.
fn stale_temps_in(dir: &Path, out: &mut Vec<Finding>) -> Result<()> {
    for (name, path, ft) in list_dir(dir)? {
        if name.starts_with(TEMP_PREFIX) && ft.is_file() {
            out.push(Finding::StaleTempFile { path });
        }
    }
    Ok(())
}

/// Reports the `<id>-<random>/` staging directories under `dir` whose layer creation lock
/// (`<locks>/<id>.lock`, deleted by its holders on release; lockers re-check that the path
/// still names the file they locked) nobody holds: a crash's leftovers.
fn stale_staging_in(dir: &Path, locks: &Path, out: &mut Vec<Finding>) -> Result<()> {
    for (name, path, ft) in list_dir(dir)? {
        let Some(id) = crate::store::staged_dir_layer_id(&name) else {
            continue;
        };
        if !ft.is_dir() {
            continue;
        }
        let lock = locks.join(format!("{id}.lock"));
        if crate::store::try_staging_lock(&lock)?.is_some() {
            out.push(Finding::StaleStaging { path });
        }
    }
    Ok(())
}
