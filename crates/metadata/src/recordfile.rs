//! One records file (`layers.json`, `images.json`, `containers.json`, `mountpoints.json`) with
//! its lock file and an in-memory cache that is only used after the lock's last-writer token
//! (and, for `layers.json`, the file's mtime) has been re-checked under the lock. Beside the
//! decoded records the cache keeps the readers' *view* of them (checked and filtered once per
//! contents, see [`RecordFile::load_view`]), so a read of an unchanged file costs a token read
//! and an `Arc` clone, not a decode, a copy or a re-check of every record.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::error::{Error, Result, io_err};
use crate::fsutil::{read_or_empty, write_atomic};
use crate::lockfile::{LockFile, LockGuard, Token};
use crate::records::{Record, decode_records, encode_records};

struct Cached<R> {
    token: Token,
    mtime: Option<SystemTime>,
    records: Arc<Vec<R>>,
    /// What [`RecordFile::load_view`]'s check made of `records`; `None` until first asked.
    view: Option<Arc<Vec<R>>>,
}

/// How often a records file was decoded from disk and how often its readers' view was
/// derived (checked) from decoded records: both happen once per change of the file, whatever
/// the number of reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordLoadCounts {
    /// Times the JSON file was read and decoded.
    pub decoded: u64,
    /// Times the readers' view was checked and built from the decoded records.
    pub views_built: u64,
}

/// A JSON records file guarded by a lock file.
pub(crate) struct RecordFile<R> {
    path: PathBuf,
    lock: LockFile,
    check_mtime: bool,
    cache: Mutex<Option<Cached<R>>>,
    decoded: AtomicU64,
    views_built: AtomicU64,
}

impl<R: Record> RecordFile<R> {
    /// `path` is the JSON file, `lock_path` its lock. `check_mtime` adds the mtime test
    /// containers/storage uses for `layers.json`.
    pub(crate) fn open(path: PathBuf, lock_path: &Path, check_mtime: bool) -> Result<Self> {
        Ok(RecordFile {
            path,
            lock: LockFile::open(lock_path)?,
            check_mtime,
            cache: Mutex::new(None),
            decoded: AtomicU64::new(0),
            views_built: AtomicU64::new(0),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn lock(&self) -> &LockFile {
        &self.lock
    }

    fn mtime(&self) -> Result<Option<SystemTime>> {
        if !self.check_mtime {
            return Ok(None);
        }
        match std::fs::metadata(&self.path) {
            Ok(m) => Ok(m.modified().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &self.path, e)),
        }
    }

    /// How often this file was decoded and its view built since it was opened.
    pub(crate) fn load_counts(&self) -> RecordLoadCounts {
        RecordLoadCounts {
            decoded: self.decoded.load(Ordering::Relaxed),
            views_built: self.views_built.load(Ordering::Relaxed),
        }
    }

    /// The records, re-read from disk unless the cache is provably current. `guard` must be a
    /// lock (read or write) on this file's lock.
    pub(crate) fn load(&self, guard: &LockGuard) -> Result<Arc<Vec<R>>> {
        self.with_current(guard, |c| Ok(c.records.clone()))
    }

    /// The readers' view of the records: `check` turns the decoded records into what readers
    /// see (validated, filtered) and runs once per contents of the file; later calls under an
    /// unchanged token (and mtime) get the same `Arc` without copying or re-checking. An error
    /// from `check` is returned and not remembered. `guard` must be a lock (read or write) on
    /// this file's lock.
    pub(crate) fn load_view(
        &self,
        guard: &LockGuard,
        check: impl FnOnce(&Arc<Vec<R>>) -> Result<Arc<Vec<R>>>,
    ) -> Result<Arc<Vec<R>>> {
        self.with_current(guard, |c| {
            if let Some(view) = &c.view {
                return Ok(view.clone());
            }
            self.views_built.fetch_add(1, Ordering::Relaxed);
            let view = check(&c.records)?;
            c.view = Some(view.clone());
            Ok(view)
        })
    }

    /// Runs `f` on the cache, refreshed from disk first unless the token (and mtime) read now
    /// show that it is current.
    fn with_current<T>(
        &self,
        guard: &LockGuard,
        f: impl FnOnce(&mut Cached<R>) -> Result<T>,
    ) -> Result<T> {
        let token = guard.token()?;
        let mtime = self.mtime()?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.as_mut()
            && token.is_complete()
            && c.token == token
            && c.mtime == mtime
        {
            return f(c);
        }
        let data = read_or_empty(&self.path)?;
        self.decoded.fetch_add(1, Ordering::Relaxed);
        let records = Arc::new(decode_records::<R>(&data).map_err(|reason| Error::Corrupt {
            path: self.path.clone(),
            reason,
        })?);
        let fresh = cache.insert(Cached {
            token,
            mtime,
            records,
            view: None,
        });
        f(fresh)
    }

    /// Saves under the write lock: new token first (HEAD order), then the atomic JSON write.
    pub(crate) fn save(&self, guard: &LockGuard, records: Vec<R>) -> Result<Arc<Vec<R>>> {
        podstore_blobstore::crash_point("save-before");
        let token = guard.record_write()?;
        write_atomic(&self.path, &encode_records(&records))?;
        podstore_blobstore::crash_point("save-after");
        let mtime = self.mtime()?;
        let records = Arc::new(records);
        *self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Cached {
            token,
            mtime,
            records: records.clone(),
            view: None,
        });
        Ok(records)
    }
}
