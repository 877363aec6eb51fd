//! OCI image layout directories (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`) and `oci:`
//! references as containers/image parses them.
//!
//! An OCI layout is a [`BlobStore`] root plus the two files: blobs are written through the same
//! verified, atomic ingest. `index.json` is rewritten atomically (temporary file, fsync, rename,
//! directory fsync) under an exclusive OFD lock on the `oci-layout` file, which is never
//! rewritten, so concurrent podstore writers of one layout do not lose each other's entries.
//! Opening a layout creates nothing, so read-only layouts work as pull sources.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{
    ANNOTATION_REF_NAME, Descriptor, ImageIndex, ImageIndexBuilder, MediaType,
    OciLayout as OciLayoutFile,
};
use podstore_reference::Digest;

use crate::error::BlobError;
use crate::lock;
use crate::store::{BLOBS_DIR, BlobInfo, BlobStore};

/// Name of the layout marker file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// Name of the layout's index file.
pub const INDEX_FILE: &str = "index.json";
/// The only `imageLayoutVersion` defined by the OCI image spec.
pub const IMAGE_LAYOUT_VERSION: &str = "1.0.0";

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Which image of a layout an `oci:` reference means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OciImageSelector {
    /// No name: the layout must hold exactly one image.
    Only,
    /// The image whose `org.opencontainers.image.ref.name` annotation equals this name.
    Name(String),
    /// `@N`: the N-th (zero-based) entry of index.json's manifests (sources only).
    Index(usize),
}

/// A parsed `oci:PATH[:NAME]` or `oci:PATH:@INDEX` reference.
///
/// containers/image's rules (non-Windows): the text after `oci:` is split at its **first**
/// colon; the path must not be empty (and so cannot contain a colon); the name, when not empty,
/// must match the OCI `ref.name` grammar: components of `[A-Za-z0-9]+` joined by one of
/// `-._:@+` or `--`, components separated by `/`; `@N` selects by index (N ≥ 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciReference {
    /// The layout directory.
    pub path: PathBuf,
    /// Which image in it.
    pub selector: OciImageSelector,
}

impl OciReference {
    /// Parses `oci:PATH[:NAME]` / `oci:PATH:@N` (the `oci:` transport prefix is required).
    pub fn parse(input: &str) -> Result<OciReference, BlobError> {
        let Some(rest) = input.strip_prefix("oci:") else {
            return Err(BlobError::InvalidReference {
                input: input.to_owned(),
                reason: "missing the \"oci:\" transport prefix".to_owned(),
            });
        };
        OciReference::parse_within_transport(rest).map_err(|e| match e {
            BlobError::InvalidReference { reason, .. } => BlobError::InvalidReference {
                input: input.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses the part after `oci:`: `PATH[:NAME]` or `PATH:@N`.
    pub fn parse_within_transport(input: &str) -> Result<OciReference, BlobError> {
        let invalid = |reason: String| BlobError::InvalidReference {
            input: input.to_owned(),
            reason,
        };
        let (path, image) = input.split_once(':').unwrap_or((input, ""));
        if path.is_empty() {
            return Err(invalid("empty layout path".to_owned()));
        }
        let selector = if let Some(index) = image.strip_prefix('@') {
            let value: i64 = index
                .parse()
                .map_err(|_| invalid(format!("source index @{index} is not an integer")))?;
            let value = usize::try_from(value)
                .map_err(|_| invalid(format!("source index @{index} must not be negative")))?;
            OciImageSelector::Index(value)
        } else if image.is_empty() {
            OciImageSelector::Only
        } else {
            validate_image_name(image)
                .map_err(|_| invalid(format!("invalid image name {image:?}")))?;
            OciImageSelector::Name(image.to_owned())
        };
        Ok(OciReference {
            path: PathBuf::from(path),
            selector,
        })
    }
}

impl fmt::Display for OciReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.selector {
            OciImageSelector::Only => write!(f, "oci:{path}"),
            OciImageSelector::Name(name) => write!(f, "oci:{path}:{name}"),
            OciImageSelector::Index(index) => write!(f, "oci:{path}:@{index}"),
        }
    }
}

/// Checks an image name against the OCI `org.opencontainers.image.ref.name` grammar that
/// containers/image enforces (see [`OciReference`]). The empty name is valid (no name).
pub fn validate_image_name(name: &str) -> Result<(), BlobError> {
    let invalid = || BlobError::InvalidReference {
        input: name.to_owned(),
        reason: "not a valid OCI image name".to_owned(),
    };
    if name.is_empty() {
        return Ok(());
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return Err(invalid());
        };
        if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
            return Err(invalid());
        }
        let mut separator_run = String::new();
        for &b in bytes {
            if b.is_ascii_alphanumeric() {
                if !(separator_run.is_empty() || separator_run.len() == 1 || separator_run == "--")
                {
                    return Err(invalid());
                }
                separator_run.clear();
            } else if b"-._:@+".contains(&b) {
                separator_run.push(char::from(b));
            } else {
                return Err(invalid());
            }
        }
    }
    Ok(())
}

/// The podstore digest of an OCI descriptor (only sha256, sha384 and sha512 are accepted).
/// `source` names the file the descriptor came from, for the error.
pub fn descriptor_digest(descriptor: &Descriptor, source: &Path) -> Result<Digest, BlobError> {
    let text = descriptor.digest().to_string();
    Digest::parse(&text).map_err(|e| BlobError::InvalidDigest {
        path: source.to_owned(),
        input: text,
        source: e,
    })
}

/// A descriptor of a committed blob with the given media type.
pub fn descriptor_for(info: &BlobInfo, media_type: MediaType) -> Result<Descriptor, BlobError> {
    let digest: oci_spec::image::Digest =
        info.digest
            .to_string()
            .parse()
            .map_err(|e: oci_spec::OciSpecError| BlobError::InvalidLayout {
                path: info.path.clone(),
                reason: format!("digest {} refused by oci-spec: {e}", info.digest),
            })?;
    Ok(Descriptor::new(media_type, info.size, digest))
}

/// An OCI image layout directory. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
    blobs: BlobStore,
}

impl OciLayout {
    /// Opens an existing layout: `oci-layout` must say `imageLayoutVersion` 1.0.0 and
    /// `index.json` must exist. Creates nothing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<OciLayout, BlobError> {
        let dir = dir.into();
        let marker_path = dir.join(OCI_LAYOUT_FILE);
        let marker_bytes = read_file(&marker_path)?;
        let marker: OciLayoutFile =
            serde_json::from_slice(&marker_bytes).map_err(|e| BlobError::Json {
                path: marker_path.clone(),
                source: e,
            })?;
        if marker.image_layout_version() != IMAGE_LAYOUT_VERSION {
            return Err(BlobError::InvalidLayout {
                path: marker_path,
                reason: format!(
                    "unsupported imageLayoutVersion {:?} (expected {IMAGE_LAYOUT_VERSION:?})",
                    marker.image_layout_version()
                ),
            });
        }
        let index_path = dir.join(INDEX_FILE);
        if !index_path.is_file() {
            return Err(BlobError::InvalidLayout {
                path: index_path,
                reason: "index.json is missing".to_owned(),
            });
        }
        let blobs = BlobStore::at(&dir);
        Ok(OciLayout { dir, blobs })
    }

    /// Creates a layout at `dir` (and the directory itself), or opens it when it is one
    /// already. A new layout has `oci-layout`, an empty `index.json` and `blobs/`.
    pub fn create(dir: impl Into<PathBuf>) -> Result<OciLayout, BlobError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| BlobError::io("create directory", &dir, e))?;
        let marker_path = dir.join(OCI_LAYOUT_FILE);
        if !marker_path.exists() {
            let index = empty_index(&dir)?;
            let index_bytes = serde_json::to_vec(&index).map_err(|e| BlobError::Json {
                path: dir.join(INDEX_FILE),
                source: e,
            })?;
            let blobs_dir = dir.join(BLOBS_DIR);
            fs::create_dir_all(&blobs_dir)
                .map_err(|e| BlobError::io("create directory", &blobs_dir, e))?;
            // index.json first: a directory with an oci-layout file is a complete layout.
            // Neither replaces a file a concurrent creator put there first.
            write_atomically(&dir, INDEX_FILE, &index_bytes, Replace::No)?;
            let marker = format!("{{\"imageLayoutVersion\":\"{IMAGE_LAYOUT_VERSION}\"}}");
            write_atomically(&dir, OCI_LAYOUT_FILE, marker.as_bytes(), Replace::No)?;
        }
        OciLayout::open(dir)
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layout's blobs, as a blob store rooted at the layout directory.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Reads and parses `index.json`.
    pub fn index(&self) -> Result<ImageIndex, BlobError> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = read_file(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| BlobError::Json { path, source: e })
    }

    /// The descriptor of the manifest (or index) named `name` by its
    /// `org.opencontainers.image.ref.name` annotation; with an empty name, the layout's only
    /// image. Entries whose media type is not an OCI or Docker manifest or index are refused.
    pub fn resolve(&self, name: &str) -> Result<Descriptor, BlobError> {
        if name.is_empty() {
            self.resolve_selector(&OciImageSelector::Only)
        } else {
            self.resolve_selector(&OciImageSelector::Name(name.to_owned()))
        }
    }

    /// The descriptor an [`OciImageSelector`] designates (see [`OciLayout::resolve`]).
    pub fn resolve_selector(&self, selector: &OciImageSelector) -> Result<Descriptor, BlobError> {
        let index = self.index()?;
        let manifests = index.manifests();
        match selector {
            OciImageSelector::Only => match manifests.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(BlobError::AmbiguousImage {
                    path: self.dir.clone(),
                    count: manifests.len(),
                }),
            },
            OciImageSelector::Index(i) => {
                manifests
                    .get(*i)
                    .cloned()
                    .ok_or_else(|| BlobError::IndexOutOfRange {
                        path: self.dir.clone(),
                        index: *i,
                        count: manifests.len(),
                    })
            }
            OciImageSelector::Name(name) => {
                let mut unsupported = Vec::new();
                for descriptor in manifests {
                    if ref_name(descriptor) != Some(name.as_str()) {
                        continue;
                    }
                    let media_type = descriptor.media_type().to_string();
                    if is_manifest_media_type(&media_type) {
                        return Ok(descriptor.clone());
                    }
                    unsupported.push(media_type);
                }
                if unsupported.is_empty() {
                    Err(BlobError::ImageNotFound {
                        path: self.dir.clone(),
                        name: name.clone(),
                    })
                } else {
                    Err(BlobError::UnsupportedMediaType {
                        path: self.dir.clone(),
                        name: name.clone(),
                        media_types: unsupported,
                    })
                }
            }
        }
    }

    /// Reads the blob a descriptor points to, refusing more than `max_size` bytes, and checks
    /// its size and digest against the descriptor (a layout written by another tool is not
    /// trusted).
    pub fn read_blob(&self, descriptor: &Descriptor, max_size: u64) -> Result<Vec<u8>, BlobError> {
        let digest = descriptor_digest(descriptor, &self.dir.join(INDEX_FILE))?;
        let expected = descriptor.size();
        let path = self.blobs.path(&digest);
        if expected > max_size {
            return Err(BlobError::TooLarge {
                digest,
                size: expected,
                limit: max_size,
            });
        }
        let file = self.blobs.open_blob(&digest)?;
        let mut bytes = Vec::new();
        file.take(max_size.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| BlobError::io("read", &path, e))?;
        if bytes.len() as u64 != expected {
            return Err(BlobError::SizeMismatch {
                digest,
                expected,
                actual: bytes.len() as u64,
            });
        }
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Records `descriptor` in `index.json`, named `name` when given (set as its
    /// `org.opencontainers.image.ref.name` annotation), following containers/image: the name is
    /// taken away from any entry that had it; an unnamed entry with the same digest is replaced;
    /// otherwise the descriptor is appended. The rewrite is atomic.
    pub fn add_manifest(
        &self,
        descriptor: Descriptor,
        name: Option<&str>,
    ) -> Result<(), BlobError> {
        let mut descriptor = descriptor;
        if let Some(name) = name {
            validate_image_name(name)?;
            let mut annotations = descriptor.annotations().clone().unwrap_or_default();
            annotations.insert(ANNOTATION_REF_NAME.to_owned(), name.to_owned());
            descriptor.set_annotations(Some(annotations));
        }
        let marker_path = self.dir.join(OCI_LAYOUT_FILE);
        let guard = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&marker_path)
            .map_err(|e| BlobError::io("open", &marker_path, e))?;
        lock::lock_exclusive(&guard).map_err(|e| BlobError::io("lock", &marker_path, e))?;

        let mut index = self.index()?;
        let new_name = ref_name(&descriptor).map(str::to_owned);
        let mut manifests = index.manifests().clone();
        if let Some(new_name) = new_name.as_deref() {
            if let Some(previous) = manifests
                .iter_mut()
                .find(|existing| ref_name(existing) == Some(new_name))
            {
                let mut annotations = previous.annotations().clone().unwrap_or_default();
                annotations.remove(ANNOTATION_REF_NAME);
                previous.set_annotations((!annotations.is_empty()).then_some(annotations));
            }
        }
        if let Some(same) = manifests.iter_mut().find(|existing| {
            existing.digest() == descriptor.digest() && ref_name(existing).is_none()
        }) {
            *same = descriptor;
        } else {
            manifests.push(descriptor);
        }
        index.set_manifests(manifests);
        let bytes = serde_json::to_vec(&index).map_err(|e| BlobError::Json {
            path: self.dir.join(INDEX_FILE),
            source: e,
        })?;
        write_atomically(&self.dir, INDEX_FILE, &bytes, Replace::Yes)?;
        drop(guard);
        Ok(())
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
        .filter(|name| !name.is_empty())
}

fn is_manifest_media_type(media_type: &str) -> bool {
    media_type == MediaType::ImageManifest.to_string()
        || media_type == MediaType::ImageIndex.to_string()
        || media_type == DOCKER_MANIFEST
        || media_type == DOCKER_MANIFEST_LIST
}

fn empty_index(dir: &Path) -> Result<ImageIndex, BlobError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(|e| BlobError::InvalidLayout {
            path: dir.join(INDEX_FILE),
            reason: format!("cannot build an empty index: {e}"),
        })
}

fn read_file(path: &Path) -> Result<Vec<u8>, BlobError> {
    fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BlobError::InvalidLayout {
                path: path.to_owned(),
                reason: "file is missing".to_owned(),
            }
        } else {
            BlobError::io("read", path, e)
        }
    })
}

/// Whether [`write_atomically`] may replace an existing file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    Yes,
    No,
}

/// Writes `dir/name` by a synced temporary file renamed over it (or, with [`Replace::No`],
/// hard-linked into place only if nothing is there yet), then syncs `dir`.
fn write_atomically(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    replace: Replace,
) -> Result<(), BlobError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| BlobError::io("create", &temp, e))?;
        file.write_all(bytes)
            .map_err(|e| BlobError::io("write", &temp, e))?;
        rustix::fs::fdatasync(&file).map_err(|e| BlobError::io("fdatasync", &temp, e.into()))?;
        drop(file);
        let target = dir.join(name);
        match replace {
            Replace::Yes => {
                fs::rename(&temp, &target).map_err(|e| BlobError::io("rename", &temp, e))?
            }
            Replace::No => {
                match fs::hard_link(&temp, &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(BlobError::io("link", &target, e)),
                }
                fs::remove_file(&temp).map_err(|e| BlobError::io("remove", &temp, e))?;
            }
        }
        let dir_handle = File::open(dir).map_err(|e| BlobError::io("open", dir, e))?;
        rustix::fs::fsync(&dir_handle).map_err(|e| BlobError::io("fsync", dir, e.into()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
