//! The content store: committed blobs under `blobs/<alg>/<hex>`, writes in progress under
//! `ingest/<alg>-<hex>/` (a `data` file and a `lock` file), and the commit protocol between them.
//!
//! Invariant: a file under `blobs/` is complete and verified. It gets there only by an atomic
//! rename of an ingest's `data` file whose size and digest were checked and whose content was
//! flushed to disk (`fdatasync`), followed by an fsync of the directory.
//!
//! Invariant: at most one [`IngestWriter`] per digest exists at a time, across threads and
//! processes: it holds an exclusive OFD lock on its ingest's `lock` file. Everyone else blocks
//! in [`BlobStore::begin`] until the holder commits (they then get [`Begin::Present`]) or gives
//! up (one of them then takes over the partial ingest).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podstore_reference::{Algorithm, Digest, Verifier};

use crate::error::BlobError;
use crate::lock;

/// Name of the directory of committed blobs under the store root.
pub const BLOBS_DIR: &str = "blobs";
/// Name of the directory of writes in progress under the store root.
pub const INGEST_DIR: &str = "ingest";
const INGEST_DATA: &str = "data";
const INGEST_LOCK: &str = "lock";
/// Buffer used when rehashing an ingest's existing prefix.
const REHASH_BUFFER: usize = 64 * 1024;
/// Fixed write buffer of an ingest.
const WRITE_BUFFER: usize = 256 * 1024;
const ALGORITHMS: [Algorithm; 3] = [Algorithm::Sha256, Algorithm::Sha384, Algorithm::Sha512];

/// A committed blob: its digest, size in bytes and the path of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// The blob's digest (verified when it was committed).
    pub digest: Digest,
    /// The blob's size in bytes.
    pub size: u64,
    /// Where the blob's file is (`<root>/blobs/<alg>/<hex>`).
    pub path: PathBuf,
}

/// What [`BlobStore::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The blob is already committed (possibly by a concurrent writer we waited for): nothing
    /// to write.
    Present(BlobInfo),
    /// The caller holds the ingest for this digest and must write it, then commit or abort.
    Write(IngestWriter),
}

#[derive(Debug)]
struct Layout {
    root: PathBuf,
    blobs: PathBuf,
    ingest: PathBuf,
}

/// A content-addressed blob store rooted at one directory. Cheap to clone; clones share the
/// same root. See the crate documentation for the layout and the guarantees.
#[derive(Debug, Clone)]
pub struct BlobStore {
    layout: Arc<Layout>,
}

impl BlobStore {
    /// Opens the store at `root`, creating `root`, `root/blobs` and `root/ingest` as needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore, BlobError> {
        let store = BlobStore::at(root);
        for dir in [&store.layout.blobs, &store.layout.ingest] {
            fs::create_dir_all(dir).map_err(|e| BlobError::io("create directory", dir, e))?;
        }
        Ok(store)
    }

    /// A store over `root` that creates nothing until something is written (for OCI layouts,
    /// which may be read-only and have no `ingest/`).
    pub(crate) fn at(root: impl Into<PathBuf>) -> BlobStore {
        let root = root.into();
        BlobStore {
            layout: Arc::new(Layout {
                blobs: root.join(BLOBS_DIR),
                ingest: root.join(INGEST_DIR),
                root,
            }),
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.layout.root
    }

    /// Where the blob `digest` lives (or would live) once committed: `<root>/blobs/<alg>/<hex>`.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.layout
            .blobs
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// The ingest directory of `digest`: `<root>/ingest/<alg>-<hex>`, holding `data` and `lock`.
    pub fn ingest_path(&self, digest: &Digest) -> PathBuf {
        self.layout
            .ingest
            .join(format!("{}-{}", digest.algorithm(), digest.hex()))
    }

    /// Whether the blob `digest` is committed.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The committed blob `digest`'s size and path; [`BlobError::NotFound`] when absent.
    pub fn stat(&self, digest: &Digest) -> Result<BlobInfo, BlobError> {
        let path = self.path(digest);
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(BlobInfo {
                digest: digest.clone(),
                size: meta.len(),
                path,
            }),
            Ok(_) => Err(BlobError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(BlobError::io("stat", path, e)),
        }
    }

    /// Opens the committed blob `digest` for reading; [`BlobError::NotFound`] when absent.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        let path = self.path(digest);
        match File::open(&path) {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(BlobError::io("open", path, e)),
        }
    }

    /// Every committed blob, sorted by digest. Files under `blobs/` whose names are not valid
    /// digests (for their algorithm directory) are skipped.
    pub fn list(&self) -> Result<Vec<BlobInfo>, BlobError> {
        let mut blobs = Vec::new();
        for algorithm in ALGORITHMS {
            let dir = self.layout.blobs.join(algorithm.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::io("read directory", dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| BlobError::io("read directory", &dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let Ok(digest) = Digest::from_hex(algorithm, &name) else {
                    continue;
                };
                let path = entry.path();
                let meta = match fs::metadata(&path) {
                    Ok(meta) => meta,
                    // Deleted while we listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(BlobError::io("stat", path, e)),
                };
                if meta.is_file() {
                    blobs.push(BlobInfo {
                        digest,
                        size: meta.len(),
                        path,
                    });
                }
            }
        }
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(blobs)
    }

    /// Removes the committed blob `digest`; [`BlobError::NotFound`] when absent.
    pub fn delete(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound {
                digest: digest.clone(),
            }),
            Err(e) => Err(BlobError::io("remove", path, e)),
        }
    }

    /// Starts (or resumes, or joins) the ingest of the blob `expected`.
    ///
    /// Returns [`Begin::Present`] when the blob is committed already, or became committed while
    /// this call waited for another writer of the same digest (thread or process). Otherwise
    /// returns [`Begin::Write`] with a writer that holds the ingest exclusively; if a partial
    /// ingest exists (a dropped writer, a crashed process), the writer continues from its
    /// length ([`IngestWriter::offset`]) after rehashing that prefix. A partial ingest longer
    /// than `expected_size` is discarded.
    ///
    /// **Blocks** while another writer holds this digest's ingest (async callers: run it on a
    /// blocking thread). A thread that calls `begin` for a digest whose writer it still holds
    /// waits for itself forever: finish or drop the writer first.
    ///
    /// When the blob is present but its size differs from `expected_size`, the caller's size
    /// is wrong for this digest: [`BlobError::SizeMismatch`] (the blob is left untouched).
    pub fn begin(&self, expected: &Digest, expected_size: Option<u64>) -> Result<Begin, BlobError> {
        if let Some(info) = self.present(expected, expected_size)? {
            return Ok(Begin::Present(info));
        }
        let dir = self.ingest_path(expected);
        let lock = self.acquire_ingest(&dir)?;
        // Holding the ingest: the previous holder may have committed while we waited, or a
        // crash may have left the ingest behind after a successful rename.
        if let Some(info) = self.present(expected, expected_size)? {
            remove_ingest_dir(&dir);
            drop(lock);
            return Ok(Begin::Present(info));
        }
        IngestWriter::resume(self.clone(), expected.clone(), expected_size, dir, lock)
            .map(Begin::Write)
    }

    /// Stores `data` as a blob under its sha256 digest (a no-op when it is present already).
    pub fn put_bytes(&self, data: &[u8]) -> Result<BlobInfo, BlobError> {
        let digest = Digest::sha256_of(data);
        match self.begin(&digest, Some(data.len() as u64))? {
            Begin::Present(info) => Ok(info),
            Begin::Write(mut writer) => {
                writer.restart()?;
                let ingest = writer.data_path.clone();
                writer
                    .write_all(data)
                    .map_err(|e| BlobError::io("write", ingest, e))?;
                writer.commit()
            }
        }
    }

    /// Removes ingests nobody holds whose data was last written at least `older_than` ago
    /// (leftovers of crashed or abandoned writers) or whose blob is committed already (a crash
    /// between rename and cleanup), and stray files in `ingest/` at least as old.
    /// Ingests held by a live writer are never touched. Returns how many entries were removed.
    pub fn prune_ingests(&self, older_than: Duration) -> Result<usize, BlobError> {
        let now = SystemTime::now();
        let is_old = |modified: SystemTime| {
            now.duration_since(modified)
                .map(|age| age >= older_than)
                .unwrap_or(false)
        };
        let ingest = &self.layout.ingest;
        let entries = match fs::read_dir(ingest) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(BlobError::io("read directory", ingest, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| BlobError::io("read directory", ingest, e))?;
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_dir() {
                if meta.modified().map(is_old).unwrap_or(false) {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(BlobError::io("remove", path, e)),
                    }
                }
                continue;
            }
            let lock_path = path.join(INGEST_LOCK);
            // Timestamps before we touch anything: opening creates a missing lock file.
            let lock_modified = fs::metadata(&lock_path).and_then(|m| m.modified()).ok();
            let dir_modified = meta.modified().ok();
            let file = match open_lock_file(&lock_path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::io("open", lock_path, e)),
            };
            let locked = lock::try_lock_exclusive(&file)
                .map_err(|e| BlobError::io("lock", &lock_path, e))?;
            if !locked || !same_file(&file, &lock_path)? {
                continue;
            }
            let data_modified = fs::metadata(path.join(INGEST_DATA))
                .and_then(|m| m.modified())
                .ok();
            let last_activity = data_modified.or(lock_modified).or(dir_modified);
            // Left behind by a crash after the rename: the blob is committed already.
            let committed = self
                .ingest_digest(&entry.file_name())
                .is_some_and(|d| self.exists(&d));
            if committed || last_activity.map(is_old).unwrap_or(false) {
                match fs::remove_dir_all(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(BlobError::io("remove", path, e)),
                }
            }
            drop(file);
        }
        Ok(removed)
    }

    /// The digest an ingest directory name (`<alg>-<hex>`) stands for.
    fn ingest_digest(&self, name: &std::ffi::OsStr) -> Option<Digest> {
        let (algorithm, hex) = name.to_str()?.split_once('-')?;
        Digest::from_hex(Algorithm::from_name(algorithm)?, hex).ok()
    }

    /// The committed blob `digest` if present; its size must match `expected_size` when given.
    fn present(
        &self,
        digest: &Digest,
        expected_size: Option<u64>,
    ) -> Result<Option<BlobInfo>, BlobError> {
        match self.stat(digest) {
            Ok(info) => match expected_size {
                Some(expected) if expected != info.size => Err(BlobError::SizeMismatch {
                    digest: digest.clone(),
                    expected,
                    actual: info.size,
                }),
                _ => Ok(Some(info)),
            },
            Err(BlobError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens and locks the ingest's lock file, waiting for any holder, and makes sure the
    /// locked file is still the one at the path (a holder that finished unlinks it).
    fn acquire_ingest(&self, dir: &Path) -> Result<File, BlobError> {
        let lock_path = dir.join(INGEST_LOCK);
        loop {
            match fs::create_dir_all(dir) {
                Ok(()) => {}
                // mkdir saw the directory, then a finishing holder removed it before
                // create_dir_all's is_dir check: try again.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(BlobError::io("create directory", dir, e)),
            }
            let file = match open_lock_file(&lock_path) {
                Ok(file) => file,
                // The directory was removed by a finishing holder between the two calls.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(BlobError::io("open", lock_path, e)),
            };
            lock::lock_exclusive(&file).map_err(|e| BlobError::io("lock", &lock_path, e))?;
            if same_file(&file, &lock_path)? {
                return Ok(file);
            }
        }
    }
}

fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Whether `file` is still the file at `path` (false when `path` is gone).
fn same_file(file: &File, path: &Path) -> Result<bool, BlobError> {
    let held = file
        .metadata()
        .map_err(|e| BlobError::io("stat", path, e))?;
    match fs::metadata(path) {
        Ok(current) => Ok(current.dev() == held.dev() && current.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BlobError::io("stat", path, e)),
    }
}

/// Best effort: an ingest left behind is harmless (resumed or pruned later).
fn remove_ingest_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

fn fsync_dir(dir: &Path) -> Result<(), BlobError> {
    let handle = File::open(dir).map_err(|e| BlobError::io("open", dir, e))?;
    rustix::fs::fsync(&handle).map_err(|e| BlobError::io("fsync", dir, e.into()))
}

/// Hashes the first `len` bytes of `file` and leaves its position at `len`.
fn rehash_prefix(
    file: &mut File,
    len: u64,
    expected: &Digest,
    path: &Path,
) -> Result<Verifier, BlobError> {
    let mut verifier = expected.verifier();
    file.seek(SeekFrom::Start(0))
        .map_err(|e| BlobError::io("seek", path, e))?;
    let mut buffer = vec![0u8; REHASH_BUFFER];
    let mut remaining = len;
    while remaining > 0 {
        let want = usize::try_from(remaining)
            .unwrap_or(usize::MAX)
            .min(buffer.len());
        let n = match file.read(&mut buffer[..want]) {
            Ok(0) => {
                return Err(BlobError::io(
                    "read",
                    path,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "ingest shrank while being rehashed",
                    ),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BlobError::io("read", path, e)),
        };
        verifier.update(&buffer[..n]);
        remaining -= n as u64;
    }
    file.seek(SeekFrom::Start(len))
        .map_err(|e| BlobError::io("seek", path, e))?;
    Ok(verifier)
}

/// The exclusive writer of one blob's ingest. Obtained from [`BlobStore::begin`].
///
/// Bytes go through a fixed 256 KiB buffer to the ingest's `data` file and are hashed as they
/// arrive. Finish with [`commit`](IngestWriter::commit) (verify and publish) or
/// [`abort`](IngestWriter::abort) (discard). Dropping the writer without either keeps the
/// partial data for a later resume and releases the ingest to the next writer.
#[derive(Debug)]
pub struct IngestWriter {
    store: BlobStore,
    expected: Digest,
    expected_size: Option<u64>,
    dir: PathBuf,
    data_path: PathBuf,
    /// `None` only once commit/abort took it.
    data: Option<BufWriter<File>>,
    /// Boxed: hasher state is large and `Begin` holds the writer inline.
    verifier: Box<Verifier>,
    offset: u64,
    /// The OFD-locked ingest lock file; closing it releases the ingest.
    lock: Option<File>,
}

impl IngestWriter {
    fn resume(
        store: BlobStore,
        expected: Digest,
        expected_size: Option<u64>,
        dir: PathBuf,
        lock: File,
    ) -> Result<IngestWriter, BlobError> {
        let data_path = dir.join(INGEST_DATA);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data_path)
            .map_err(|e| BlobError::io("open", &data_path, e))?;
        let mut len = file
            .metadata()
            .map_err(|e| BlobError::io("stat", &data_path, e))?
            .len();
        if expected_size.is_some_and(|size| len > size) {
            file.set_len(0)
                .map_err(|e| BlobError::io("truncate", &data_path, e))?;
            len = 0;
        }
        let verifier = rehash_prefix(&mut file, len, &expected, &data_path)?;
        Ok(IngestWriter {
            store,
            expected,
            expected_size,
            dir,
            data_path,
            data: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            verifier: Box::new(verifier),
            offset: len,
            lock: Some(lock),
        })
    }

    /// Bytes of the blob present so far: on a fresh writer, the length of the partial ingest
    /// it resumes (0 when there was none). The caller continues from this offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The digest this ingest must hash to.
    pub fn expected(&self) -> &Digest {
        &self.expected
    }

    /// The size this ingest must have, when the caller announced one.
    pub fn expected_size(&self) -> Option<u64> {
        self.expected_size
    }

    /// Cuts the ingest back to its first `len` bytes (rehashing them), e.g. to 0 when a server
    /// answered a range request with the whole blob. Growing is refused.
    pub fn truncate_to(&mut self, len: u64) -> Result<(), BlobError> {
        if len > self.offset {
            return Err(BlobError::InvalidTruncate {
                digest: self.expected.clone(),
                requested: len,
                available: self.offset,
            });
        }
        let path = &self.data_path;
        let data = self.data.as_mut().ok_or_else(|| finished_error(path))?;
        data.flush().map_err(|e| BlobError::io("write", path, e))?;
        let file = data.get_mut();
        file.set_len(len)
            .map_err(|e| BlobError::io("truncate", path, e))?;
        let verifier = rehash_prefix(file, len, &self.expected, path)?;
        *self.verifier = verifier;
        self.offset = len;
        Ok(())
    }

    /// Discards everything written so far: same as `truncate_to(0)`.
    pub fn restart(&mut self) -> Result<(), BlobError> {
        self.truncate_to(0)
    }

    /// Verifies and publishes the blob: flushes, checks the size (when announced) and the
    /// digest, syncs the data, renames it to `blobs/<alg>/<hex>` and syncs the directory.
    ///
    /// On [`BlobError::SizeMismatch`] or [`BlobError::DigestMismatch`] the ingest is removed and
    /// nothing is committed. On an I/O error the partial ingest is kept for a later resume.
    pub fn commit(mut self) -> Result<BlobInfo, BlobError> {
        let mut data = self.take_data()?;
        data.flush()
            .map_err(|e| BlobError::io("write", &self.data_path, e))?;
        let file = data
            .into_inner()
            .map_err(|e| BlobError::io("write", &self.data_path, e.into_error()))?;
        let size = self.offset;
        if let Some(expected) = self.expected_size.filter(|&expected| expected != size) {
            drop(file);
            self.discard();
            return Err(BlobError::SizeMismatch {
                digest: self.expected.clone(),
                expected,
                actual: size,
            });
        }
        let verifier = std::mem::replace(&mut *self.verifier, self.expected.verifier());
        if let Err(mismatch) = verifier.verify() {
            drop(file);
            self.discard();
            return Err(BlobError::DigestMismatch {
                expected: mismatch.expected,
                actual: mismatch.actual,
            });
        }
        rustix::fs::fdatasync(&file)
            .map_err(|e| BlobError::io("fdatasync", &self.data_path, e.into()))?;
        file.set_permissions(Permissions::from_mode(0o444))
            .map_err(|e| BlobError::io("chmod", &self.data_path, e))?;
        drop(file);

        let target = self.store.path(&self.expected);
        let algorithm_dir = self
            .store
            .layout
            .blobs
            .join(self.expected.algorithm().as_str());
        if !algorithm_dir.is_dir() {
            fs::create_dir_all(&algorithm_dir)
                .map_err(|e| BlobError::io("create directory", &algorithm_dir, e))?;
            fsync_dir(&self.store.layout.blobs)?;
        }
        fs::rename(&self.data_path, &target)
            .map_err(|e| BlobError::io("rename", &self.data_path, e))?;
        fsync_dir(&algorithm_dir)?;
        crate::crash::crash_point("ingest-committed");
        // Published. Waiters blocked on our lock see the blob once we release it.
        remove_ingest_dir(&self.dir);
        self.lock.take();
        Ok(BlobInfo {
            digest: self.expected.clone(),
            size,
            path: target,
        })
    }

    /// Discards the ingest (its data is removed) and releases it. Best effort: a leftover that
    /// could not be removed is pruned or resumed later.
    pub fn abort(mut self) {
        self.data.take();
        self.discard();
    }

    fn discard(&mut self) {
        self.data.take();
        remove_ingest_dir(&self.dir);
        self.lock.take();
    }

    fn take_data(&mut self) -> Result<BufWriter<File>, BlobError> {
        let path = &self.data_path;
        self.data.take().ok_or_else(|| finished_error(path))
    }
}

fn finished_error(path: &Path) -> BlobError {
    BlobError::io(
        "write",
        path,
        io::Error::other("ingest already committed or aborted"),
    )
}

impl Write for IngestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(expected) = self.expected_size {
            if self.offset.saturating_add(buf.len() as u64) > expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    BlobError::SizeExceeded {
                        digest: self.expected.clone(),
                        expected,
                        offset: self.offset,
                        attempted: buf.len() as u64,
                    },
                ));
            }
        }
        let data = self
            .data
            .as_mut()
            .ok_or_else(|| io::Error::other("ingest already committed or aborted"))?;
        let written = data.write(buf)?;
        self.verifier.update(&buf[..written]);
        self.offset += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.data.as_mut() {
            Some(data) => data.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for IngestWriter {
    fn drop(&mut self) {
        // Keep what was written for a resume; the lock file closes after this, releasing the
        // ingest to the next writer.
        if let Some(mut data) = self.data.take() {
            let _ = data.flush();
        }
    }
}
