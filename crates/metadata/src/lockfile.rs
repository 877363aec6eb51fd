//! containers/storage lock files: whole-file POSIX record locks (`fcntl(F_SETLKW)`, never
//! `flock`) behind an in-process reader/writer gate, and the 64-byte last-writer token.
//!
//! POSIX record locks belong to the process and are dropped when *any* descriptor of the file
//! is closed, so, as in containers/storage, one descriptor per lock file is shared by every
//! holder in this process: opened at the first acquisition, closed at the last release.
//! Threads exclude each other through the gate.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;

use crate::error::{Error, io_err};
use crate::fsutil::random_bytes;

/// Length of the last-writer token at the start of every lock file.
pub const TOKEN_LEN: usize = 64;

/// The last-writer token as read from a lock file (possibly short for a new, empty file).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Token(Vec<u8>);

impl Token {
    /// Whether the file held a full 64-byte token. containers/storage 1.43 treats a short read
    /// as "modified", so callers never trust a cache validated by a short token.
    pub fn is_complete(&self) -> bool {
        self.0.len() == TOKEN_LEN
    }
}

#[derive(Default)]
struct GateState {
    readers: usize,
    writer: bool,
    file: Option<Arc<File>>,
}

struct LockShared {
    path: PathBuf,
    state: Mutex<GateState>,
    changed: Condvar,
}

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<LockShared>>> {
    static REG: OnceLock<Mutex<HashMap<PathBuf, Weak<LockShared>>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One lock file (`layers.lock`, `images.lock`, …), shared by every `LockFile` of the same
/// path in this process.
#[derive(Clone)]
pub struct LockFile {
    shared: Arc<LockShared>,
}

impl std::fmt::Debug for LockFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockFile({})", self.shared.path.display())
    }
}

impl LockFile {
    /// Opens (creating with mode 0644 if needed) the lock file at `path`. The file is never
    /// truncated or deleted.
    pub fn open(path: &Path) -> Result<LockFile, Error> {
        // Make sure the file exists now so errors surface at open time.
        open_lock_file(path)?;
        // One gate per file, however it is named (POSIX locks are per process and inode).
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let path = canonical.as_path();
        let mut reg = lock_poison(registry());
        if let Some(existing) = reg.get(path).and_then(Weak::upgrade) {
            return Ok(LockFile { shared: existing });
        }
        let shared = Arc::new(LockShared {
            path: path.to_path_buf(),
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        });
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(path.to_path_buf(), Arc::downgrade(&shared));
        Ok(LockFile { shared })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Takes the lock for reading (shared with other readers, here and in other processes).
    pub fn read(&self) -> Result<LockGuard, Error> {
        let mut st = lock_poison(&self.shared.state);
        while st.writer {
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let file = match &st.file {
            Some(f) => f.clone(),
            None => {
                // First in-process holder: take the file lock while other threads wait on the
                // state mutex.
                let f = Arc::new(open_lock_file(&self.shared.path)?);
                fcntl_lock_retry(&f, FlockOperation::LockShared, &self.shared.path)?;
                st.file = Some(f.clone());
                f
            }
        };
        st.readers += 1;
        Ok(LockGuard {
            shared: self.shared.clone(),
            file,
            write: false,
        })
    }

    /// Takes the lock for writing (exclusive against every other holder).
    pub fn write(&self) -> Result<LockGuard, Error> {
        let mut st = lock_poison(&self.shared.state);
        while st.writer || st.readers > 0 {
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        let f = Arc::new(open_lock_file(&self.shared.path)?);
        fcntl_lock_retry(&f, FlockOperation::LockExclusive, &self.shared.path)?;
        st.file = Some(f.clone());
        st.writer = true;
        Ok(LockGuard {
            shared: self.shared.clone(),
            file: f,
            write: true,
        })
    }
}

fn open_lock_file(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| io_err("opening lock file", path, e))
}

fn fcntl_lock_retry(file: &File, op: FlockOperation, path: &Path) -> Result<(), Error> {
    loop {
        match rustix::fs::fcntl_lock(file, op) {
            Ok(()) => return Ok(()),
            // containers/storage sleeps 10 ms and retries on EINTR/EDEADLK.
            Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::DEADLK) => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("locking", path, e.into())),
        }
    }
}

/// A held lock; released (and, for the last holder, the descriptor closed) on drop.
pub struct LockGuard {
    shared: Arc<LockShared>,
    file: Arc<File>,
    write: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LockGuard({}, write={})",
            self.shared.path.display(),
            self.write
        )
    }
}

static TOKEN_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LockGuard {
    /// Whether this is a write lock.
    pub fn is_write(&self) -> bool {
        self.write
    }

    /// Reads the current token (up to 64 bytes at offset 0).
    pub fn token(&self) -> Result<Token, Error> {
        let mut buf = [0u8; TOKEN_LEN];
        let mut n = 0;
        while n < TOKEN_LEN {
            match self.file.read_at(&mut buf[n..], n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("reading lock token", &self.shared.path, e)),
            }
        }
        Ok(Token(buf[..n].to_vec()))
    }

    /// Writes a fresh token (1.43 layout: 8 B LE Unix nanoseconds, 8 B LE per-process counter,
    /// 4 B LE pid, 44 random bytes) and returns it. Only valid under the write lock.
    pub fn record_write(&self) -> Result<Token, Error> {
        if !self.write {
            return Err(Error::LockNotHeldForWrite {
                path: self.shared.path.clone(),
            });
        }
        let mut tok = [0u8; TOKEN_LEN];
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        tok[0..8].copy_from_slice(&nanos.to_le_bytes());
        let counter = TOKEN_COUNTER.fetch_add(1, Ordering::Relaxed);
        tok[8..16].copy_from_slice(&counter.to_le_bytes());
        tok[16..20].copy_from_slice(&std::process::id().to_le_bytes());
        random_bytes(&mut tok[20..]);
        self.file
            .write_all_at(&tok, 0)
            .map_err(|e| io_err("writing lock token", &self.shared.path, e))?;
        Ok(Token(tok.to_vec()))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mut st = lock_poison(&self.shared.state);
        if self.write {
            st.writer = false;
            st.file = None;
        } else {
            st.readers = st.readers.saturating_sub(1);
            if st.readers == 0 {
                st.file = None;
            }
        }
        // The descriptor closes when the last Arc (ours, after this) is dropped; closing it
        // releases the POSIX lock.
        drop(st);
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_layout_and_change() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let lf = LockFile::open(&dir.path().join("x.lock")).unwrap();
        let g = lf.write().unwrap();
        let empty = g.token().unwrap();
        assert!(!empty.is_complete());
        let t1 = g.record_write().unwrap();
        let t2 = g.record_write().unwrap();
        assert_ne!(t1, t2);
        assert_eq!(g.token().unwrap(), t2);
        let pid = u32::from_le_bytes(t2.0[16..20].try_into().unwrap());
        assert_eq!(pid, std::process::id());
        drop(g);
        assert_eq!(std::fs::metadata(lf.path()).unwrap().len(), 64);
        let r = lf.read().unwrap();
        assert!(r.record_write().is_err());
        assert_eq!(r.token().unwrap(), t2);
    }

    #[test]
    fn writers_exclude_threads_and_readers_share() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let path = dir.path().join("y.lock");
        let lf = LockFile::open(&path).unwrap();
        let r1 = lf.read().unwrap();
        let r2 = LockFile::open(&path).unwrap().read().unwrap();
        let counter = Arc::new(Mutex::new(0));
        let c2 = counter.clone();
        let lf2 = lf.clone();
        let t = std::thread::spawn(move || {
            let _w = lf2.write().unwrap();
            *c2.lock().unwrap() += 1;
        });
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(*counter.lock().unwrap(), 0, "writer must wait for readers");
        drop(r1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(*counter.lock().unwrap(), 0, "one reader is still holding");
        drop(r2);
        t.join().unwrap();
        assert_eq!(*counter.lock().unwrap(), 1);
    }
}
