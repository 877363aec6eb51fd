//! File-system primitives of containers/storage: atomic writes (`.tmp-<base><digits>` in the
//! same directory, fdatasync, chmod 0600, rename, directory fsync), filesystem sync, stale temp-file cleanup, big-data file names
//! and random IDs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{Error, io_err};

/// Prefix of the temporary files of atomic writes.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Random bytes from the kernel.
pub(crate) fn random_bytes(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => {
                // getrandom(2) cannot fail on supported kernels once the pool is initialised;
                // fall back to a time/pid-seeded mix rather than panicking.
                let seed = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
                    ^ u128::from(std::process::id());
                for (i, b) in buf[filled..].iter_mut().enumerate() {
                    *b = (seed.rotate_left((i % 128) as u32) as u8) ^ (i as u8);
                }
                return;
            }
        }
    }
}

/// A random 64-hex ID, regenerated (like Go's `stringid`) while its 12-character prefix would
/// parse as a decimal number.
pub fn random_id() -> String {
    loop {
        let mut bytes = [0u8; 32];
        random_bytes(&mut bytes);
        let id = hex_lower(&bytes);
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    s
}

/// A temp file in the target's directory; removed on drop unless committed.
pub(crate) struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
}

impl AtomicFile {
    /// Creates `.tmp-<basename><digits>` next to `target` (mode 0600, exclusive).
    pub(crate) fn create(target: &Path) -> Result<AtomicFile, Error> {
        let dir = target.parent().unwrap_or(Path::new("."));
        let base = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for _ in 0..100 {
            let mut r = [0u8; 4];
            random_bytes(&mut r);
            let temp = dir.join(format!("{TEMP_PREFIX}{base}{}", u32::from_le_bytes(r)));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
                .open(&temp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file: Some(file),
                        temp,
                        target: target.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("creating temporary file", &temp, e)),
            }
        }
        Err(io_err(
            "creating temporary file",
            target,
            io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name"),
        ))
    }

    /// The temp file's path.
    pub(crate) fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// fdatasync, chmod 0600, rename over the target, and fsync the directory.
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        if let Some(file) = self.file.take() {
            file.sync_data()
                .map_err(|e| io_err("syncing", &self.temp, e))?;
            file.set_permissions(fs::Permissions::from_mode(0o600))
                .map_err(|e| io_err("chmod", &self.temp, e))?;
            drop(file);
        }
        podstore_blobstore::crash_point("rename-mid");
        fs::rename(&self.temp, &self.target)
            .map_err(|e| io_err("renaming into place", &self.target, e))?;
        self.temp = PathBuf::new();
        // The rename itself must survive a power cut before the caller reports success
        // (containers/storage does not fsync the directory; a lost rename would silently undo
        // an operation that was reported done).
        let dir = self.target.parent().unwrap_or(Path::new("."));
        let handle = File::open(dir).map_err(|e| io_err("opening directory", dir, e))?;
        rustix::fs::fsync(&handle).map_err(|e| io_err("fsync", dir, e.into()))?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.file.as_mut() {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("temporary file already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `data` to `target` atomically (§4.4).
pub(crate) fn write_atomic(target: &Path, data: &[u8]) -> Result<(), Error> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(data)
        .map_err(|e| io_err("writing", f.temp_path(), e))?;
    f.commit()
}

/// Flushes the whole filesystem holding `path` (`syncfs`), e.g. a new layer's directories.
pub(crate) fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let handle = File::open(path).map_err(|e| io_err("opening", path, e))?;
    rustix::fs::syncfs(&handle).map_err(|e| io_err("syncfs", path, e.into()))
}

/// Reads a whole file; a missing file reads as empty.
pub(crate) fn read_or_empty(path: &Path) -> Result<Vec<u8>, Error> {
    match fs::read(path) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("reading", path, e)),
    }
}

/// Creates a directory and its parents with mode 0700.
pub(crate) fn mkdir_all(path: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io_err("creating directory", path, e))
}

/// Removes a file, ignoring "not found".
pub(crate) fn remove_file_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path, e)),
    }
}

/// Removes a directory tree, ignoring "not found".
pub(crate) fn remove_dir_all_if_exists(path: &Path) -> Result<(), Error> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing directory", path, e)),
    }
}

/// Removes stale `.tmp-*` files directly inside `dir` (not in its subdirectories: a record's
/// own directory is cleaned when it is next written, and `check --repair` cleans them all).
/// The caller holds the lock that protects writes into `dir`. Returns how many were removed.
pub(crate) fn remove_stale_temp_files(dir: &Path) -> Result<usize, Error> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("listing", dir, e)),
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
            && entry.file_type().is_ok_and(|t| t.is_file())
        {
            remove_file_if_exists(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// containers/storage's big-data file name for `key`: the key itself if every character is in
/// `[.0-9a-z]`, otherwise `=` + padded standard base64 of the key. Keys that would not make a
/// single safe file name (empty, `.`, `..`, base64 containing `/`, longer than 255 bytes) are
/// refused.
pub fn big_data_file_name(key: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidBigDataKey {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    let plain = key
        .bytes()
        .all(|b| b == b'.' || b.is_ascii_digit() || b.is_ascii_lowercase());
    let name = if plain {
        if key == "." || key == ".." {
            return Err(invalid("not a usable file name"));
        }
        key.to_owned()
    } else {
        format!(
            "={}",
            base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
        )
    };
    if name.contains('/') {
        return Err(invalid("its base64 file name would contain '/'"));
    }
    if name.len() > 255 {
        return Err(invalid("its file name would be longer than 255 bytes"));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_data_names_match_containers_storage() {
        let table: &[(&str, Option<&str>)] = &[
            ("manifest", Some("manifest")),
            ("signatures", Some("signatures")),
            ("a.b.9", Some("a.b.9")),
            (
                "sha256:6c97940f9979cde3608b09a0ad4eaea12140a2161ec732de7ca0359c971a9717",
                Some(
                    "=c2hhMjU2OjZjOTc5NDBmOTk3OWNkZTM2MDhiMDlhMGFkNGVhZWExMjE0MGEyMTYxZWM3MzJkZTdjYTAzNTljOTcxYTk3MTc=",
                ),
            ),
            (
                "manifest-sha256:8672aba69b18e0d1c8abdb5b6e386c0d54e4c1856242ec47c0069bb73d3561f5",
                Some(
                    "=bWFuaWZlc3Qtc2hhMjU2Ojg2NzJhYmE2OWIxOGUwZDFjOGFiZGI1YjZlMzg2YzBkNTRlNGMxODU2MjQyZWM0N2MwMDY5YmI3M2QzNTYxZjU=",
                ),
            ),
            ("some-key", Some("=c29tZS1rZXk=")),
            ("Manifest", Some("=TWFuaWZlc3Q=")),
            ("", None),
            (".", None),
            ("..", None),
            ("ab?", None),
        ];
        for (key, want) in table {
            let got = big_data_file_name(key).ok();
            assert_eq!(got.as_deref(), *want, "key {key:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn big_data_names_are_single_safe_file_names_that_decode_back(key in "\\PC{0,80}") {
            if let Ok(name) = big_data_file_name(&key) {
                proptest::prop_assert!(!name.contains('/') && name != "." && name != ".." && !name.is_empty());
                match name.strip_prefix('=') {
                    Some(b64) => {
                        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                        proptest::prop_assert_eq!(decoded, key.as_bytes().to_vec());
                    }
                    None => proptest::prop_assert_eq!(&name, &key),
                }
            }
        }
    }

    #[test]
    fn random_ids_are_64_hex_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), 64);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let target = dir.path().join("x.json");
        write_atomic(&target, b"[]").unwrap();
        write_atomic(&target, b"[1]").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"[1]");
        let mode = fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
    }

    #[test]
    fn stale_temp_files_are_removed_from_the_directory_only() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        fs::write(dir.path().join(".tmp-images.json123"), b"[").unwrap();
        fs::create_dir(dir.path().join("img")).unwrap();
        fs::write(dir.path().join("img/.tmp-manifest9"), b"x").unwrap();
        fs::write(dir.path().join("img/manifest"), b"x").unwrap();
        fs::write(dir.path().join("images.json"), b"[]").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert!(!dir.path().join(".tmp-images.json123").exists());
        assert!(dir.path().join("images.json").exists());
        assert!(dir.path().join("img/manifest").exists());
        // Subdirectories are not walked: they are cleaned when next written.
        assert!(dir.path().join("img/.tmp-manifest9").exists());
        assert_eq!(remove_stale_temp_files(&dir.path().join("img")).unwrap(), 1);
        assert!(!dir.path().join("img/.tmp-manifest9").exists());
    }
}
