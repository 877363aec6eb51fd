//! containers/storage lock files: whole-file POSIX record locks (`fcntl(F_SETLKW)`, never
//! `flock`) behind an in-process reader/writer gate, and the 64-byte last-writer token.
//!
//! POSIX record locks belong to the process and are dropped when *any* descriptor of the file
//! is closed. So each lock file (identified by device and inode) has exactly one descriptor in
//! this process, opened when the first [`LockFile`] for it is made and closed only when the
//! last one is dropped; acquiring and releasing use `F_SETLKW`/`F_UNLCK` on that descriptor,
//! never open or close. Threads exclude each other through the gate.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
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
}

struct LockShared {
    path: PathBuf,
    /// The process's only descriptor of this lock file; closing it would drop every POSIX
    /// lock the process holds on the file, so it lives exactly as long as this value.
    file: File,
    state: Mutex<GateState>,
    changed: Condvar,
}

/// Open lock files by (device, inode).
type OpenLockFiles = Mutex<HashMap<(u64, u64), Weak<LockShared>>>;

/// Lock files open in this process, by (device, inode).
fn registry() -> &'static OpenLockFiles {
    static REG: OnceLock<OpenLockFiles> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock_poison<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One lock file (`layers.lock`, `images.lock`, …), shared by every `LockFile` of the same
/// file in this process.
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
        let mut reg = lock_poison(registry());
        // stat, not open: opening and closing a second descriptor of a file this process
        // holds locked would release those locks.
        if let Ok(meta) = std::fs::metadata(path)
            && let Some(existing) = reg.get(&(meta.dev(), meta.ino())).and_then(Weak::upgrade)
        {
            return Ok(LockFile { shared: existing });
        }
        // No LockFile of this process has the file open, so this descriptor is its only one.
        let file = open_lock_file(path)?;
        let meta = file
            .metadata()
            .map_err(|e| io_err("inspecting lock file", path, e))?;
        let key = (meta.dev(), meta.ino());
        if let Some(existing) = reg.get(&key).and_then(Weak::upgrade) {
            // Created under another name between the stat and the open: cannot hold a lock
            // yet that this close could drop, since the earlier stat did not find it.
            return Ok(LockFile { shared: existing });
        }
        let shared = Arc::new(LockShared {
            path: std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            file,
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
        });
        reg.retain(|_, w| w.strong_count() > 0);
        reg.insert(key, Arc::downgrade(&shared));
        Ok(LockFile { shared })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether `path` still names the file this lock has open. A lock file that may be
    /// deleted (the per-layer creation locks) must be re-checked this way after locking: a
    /// holder deletes it before releasing, so a waiter that locked the deleted file must let
    /// go and lock the file now at `path` instead.
    pub fn is_at(&self, path: &Path) -> Result<bool, Error> {
        let open = self
            .shared
            .file
            .metadata()
            .map_err(|e| io_err("inspecting lock file", path, e))?;
        match std::fs::metadata(path) {
            Ok(named) => Ok(named.dev() == open.dev() && named.ino() == open.ino()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("inspecting lock file", path, e)),
        }
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
        if st.readers == 0 {
            // First in-process holder: take the file lock while other threads wait on the
            // state mutex.
            fcntl_lock_retry(
                &self.shared.file,
                FlockOperation::LockShared,
                &self.shared.path,
            )?;
        }
        st.readers += 1;
        Ok(LockGuard {
            shared: self.shared.clone(),
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
        fcntl_lock_retry(
            &self.shared.file,
            FlockOperation::LockExclusive,
            &self.shared.path,
        )?;
        st.writer = true;
        Ok(LockGuard {
            shared: self.shared.clone(),
            write: true,
        })
    }
}

impl LockFile {
    /// Takes the lock for writing if nobody (here or in another process) holds it; `None`
    /// when it is held.
    pub fn try_write(&self) -> Result<Option<LockGuard>, Error> {
        let mut st = lock_poison(&self.shared.state);
        if st.writer || st.readers > 0 {
            return Ok(None);
        }
        loop {
            match rustix::fs::fcntl_lock(
                &self.shared.file,
                FlockOperation::NonBlockingLockExclusive,
            ) {
                Ok(()) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) | Err(rustix::io::Errno::ACCESS) => return Ok(None),
                Err(e) => return Err(io_err("locking", &self.shared.path, e.into())),
            }
        }
        st.writer = true;
        Ok(Some(LockGuard {
            shared: self.shared.clone(),
            write: true,
        }))
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

/// A held lock; released on drop (the file lock itself when the last in-process holder goes).
pub struct LockGuard {
    shared: Arc<LockShared>,
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
            match self.shared.file.read_at(&mut buf[n..], n as u64) {
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
        self.shared
            .file
            .write_all_at(&tok, 0)
            .map_err(|e| io_err("writing lock token", &self.shared.path, e))?;
        Ok(Token(tok.to_vec()))
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mut st = lock_poison(&self.shared.state);
        let last = if self.write {
            st.writer = false;
            true
        } else {
            st.readers = st.readers.saturating_sub(1);
            st.readers == 0
        };
        if last {
            // Unlock under the state mutex, so no thread can take the file lock in between.
            // F_UNLCK on a lock we hold cannot block; an error would mean a bad descriptor,
            // which the next lock attempt reports.
            let _ = rustix::fs::fcntl_lock(&self.shared.file, FlockOperation::Unlock);
        }
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

    /// What another process sees: `"held"` when it cannot take a shared POSIX lock on
    /// `path` without waiting, `"free"` when it can.
    fn probe_from_another_process(path: &Path) -> String {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import fcntl,sys\n\
                 f=open(sys.argv[1],'r+')\n\
                 try:\n    fcntl.lockf(f, fcntl.LOCK_SH | fcntl.LOCK_NB); print('free')\n\
                 except OSError: print('held')",
            )
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    #[test]
    fn opening_the_file_again_keeps_the_lock_held() {
        // POSIX locks vanish when any descriptor of the file is closed; a second LockFile
        // for the same file (here under another name) must not open and close one.
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let path = dir.path().join("z.lock");
        let lf = LockFile::open(&path).unwrap();
        let g = lf.write().unwrap();
        assert_eq!(probe_from_another_process(&path), "held");
        std::os::unix::fs::symlink(&path, dir.path().join("alias.lock")).unwrap();
        let again = LockFile::open(&dir.path().join("alias.lock")).unwrap();
        assert_eq!(again.path(), lf.path());
        assert_eq!(probe_from_another_process(&path), "held");
        drop(g);
        assert_eq!(probe_from_another_process(&path), "free");
    }

    #[test]
    fn a_writer_following_readers_keeps_the_lock_held() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let path = dir.path().join("w.lock");
        let lf = LockFile::open(&path).unwrap();
        for _ in 0..20 {
            let r = lf.read().unwrap();
            let lf2 = lf.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                let w = lf2.write().unwrap();
                tx.send(()).unwrap();
                done_rx.recv().unwrap();
                drop(w);
            });
            drop(r);
            rx.recv().unwrap();
            // the reader's release must not have dropped the writer's file lock
            assert_eq!(probe_from_another_process(&path), "held");
            done_tx.send(()).unwrap();
            t.join().unwrap();
        }
        assert_eq!(probe_from_another_process(&path), "free");
    }
}
