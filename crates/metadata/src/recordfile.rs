//! One records file (`layers.json`, `images.json`, `containers.json`, `mountpoints.json`) with
//! its lock file and an in-memory cache that is only used after the lock's last-writer token
//! (and, for `layers.json`, the file's mtime) has been re-checked under the lock.

use std::path::{Path, PathBuf};
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
}

/// A JSON records file guarded by a lock file.
pub(crate) struct RecordFile<R> {
    path: PathBuf,
    lock: LockFile,
    check_mtime: bool,
    cache: Mutex<Option<Cached<R>>>,
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

    /// The records, re-read from disk unless the cache is provably current. `guard` must be a
    /// lock (read or write) on this file's lock.
    pub(crate) fn load(&self, guard: &LockGuard) -> Result<Arc<Vec<R>>> {
        let token = guard.token()?;
        let mtime = self.mtime()?;
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = cache.as_ref()
            && token.is_complete()
            && c.token == token
            && c.mtime == mtime
        {
            return Ok(c.records.clone());
        }
        let data = read_or_empty(&self.path)?;
        let records = Arc::new(decode_records::<R>(&data).map_err(|reason| Error::Corrupt {
            path: self.path.clone(),
            reason,
        })?);
        *cache = Some(Cached {
            token,
            mtime,
            records: records.clone(),
        });
        Ok(records)
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
        });
        Ok(records)
    }
}
