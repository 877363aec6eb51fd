//! The streaming tar applier both drivers share: detects the compression, unpacks every entry
//! fd-relative inside the layer directory (openat2 `RESOLVE_IN_ROOT`), converts whiteouts for the
//! driver, and computes in the same pass the compressed and uncompressed digests and sizes, the
//! uid/gid sets and the tar-split lines (spec §2.7, §5.5).
//!
//! Invariant: nothing is created, changed or removed outside the layer directory, whatever the
//! tar says: every path is cleaned lexically (`..` may not climb above the root) and every
//! lookup is resolved inside the root, so symlinks in the tar cannot lead out.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Cursor, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use crate::digest_thread::BackgroundDigester;
use crate::driver::{ApplyOptions, ApplyReport, Compression, IdMap, IdMappings};
use crate::fsutil::{self, DIR_FLAGS, os};
use crate::tar_split::TarSplitWriter;
use crate::tarstream::{EntryKind, Header, TarError, TarStream};

/// How whiteout entries (`.wh.<name>`, `.wh..wh..opq`) are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhiteoutFormat {
    /// Kernel overlay format: a 0:0 character device, and `trusted.overlay.opaque=y`.
    Overlay,
    /// Naive format (vfs): the named path is deleted; an opaque directory loses every entry
    /// not unpacked from this same layer.
    Delete,
}

/// Applying a layer tar failed. Every variant names the entry or path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The blob is compressed with something we do not decode.
    #[error("layer compression {compression:?} is not supported (only gzip and zstd)")]
    UnsupportedCompression {
        /// What was detected.
        compression: Compression,
    },
    /// The tar stream is malformed, truncated or not decompressible.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// An entry name climbs out of the layer with `..`.
    #[error("tar entry {entry:?} resolves outside the layer")]
    Breakout {
        /// The entry name as in the tar.
        entry: String,
    },
    /// A hardlink points outside the layer (or at the layer root).
    #[error("tar entry {entry:?} is a hardlink to {target:?}, outside the layer")]
    HardlinkOutside {
        /// The entry name.
        entry: String,
        /// Its link target.
        target: String,
    },
    /// The same path appears twice (tar-split cannot represent it; containers/storage refuses
    /// it too).
    #[error("tar entry {entry:?} appears more than once in the layer")]
    DuplicateEntry {
        /// The entry name.
        entry: String,
    },
    /// An entry type or form we do not apply (sparse files, contiguous files, volume headers,
    /// header-only entries that carry data, the layer root as a non-directory).
    #[error("tar entry {entry:?}: unsupported ({reason})")]
    UnsupportedEntry {
        /// The entry name.
        entry: String,
        /// Why.
        reason: String,
    },
    /// An owner is not covered by the ID mappings (or is not a valid ID).
    #[error("tar entry {entry:?}: {kind} {id} cannot be mapped to a host ID")]
    UnmappedId {
        /// The entry name (or `<layer root>`).
        entry: String,
        /// `uid` or `gid`.
        kind: &'static str,
        /// The ID in the tar.
        id: i64,
    },
    /// A filesystem operation on an entry failed.
    #[error("tar entry {entry:?}: {op}: {source}")]
    Entry {
        /// The entry name.
        entry: String,
        /// The operation.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation on the layer itself failed (open, syncfs).
    #[error("{op} {path}: {source}")]
    Layer {
        /// The operation.
        op: &'static str,
        /// The layer directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Reading the blob failed.
    #[error("reading the layer blob: {0}")]
    ReadBlob(#[source] io::Error),
    /// Writing the tar-split output failed.
    #[error("writing tar-split: {0}")]
    TarSplitWrite(#[source] io::Error),
}

/// Counts and digests the compressed bytes as they are read.
struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    /// `None` when the caller already verified the blob's digest.
    digester: Option<BackgroundDigester>,
    bytes: u64,
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(d) = self.digester.as_mut() {
            d.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

type Source<'a> = BufReader<io::Chain<Cursor<Vec<u8>>, HashingReader<'a>>>;

enum Decoder<'a> {
    Plain(Box<Source<'a>>),
    Gzip(Box<flate2::bufread::MultiGzDecoder<Source<'a>>>),
    Zstd(Box<zstd::stream::read::Decoder<'static, Source<'a>>>),
}

impl Read for Decoder<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl<'a> Decoder<'a> {
    fn into_source(self) -> Source<'a> {
        match self {
            Decoder::Plain(r) => *r,
            Decoder::Gzip(r) => r.into_inner(),
            Decoder::Zstd(r) => r.finish(),
        }
    }
}

/// Detects the compression from the first bytes, as containers/storage does.
pub fn detect_compression(prefix: &[u8]) -> Compression {
    if prefix.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if prefix.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if prefix.starts_with(b"BZh") {
        Compression::Bzip2
    } else if prefix.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Compression::Xz
    } else {
        Compression::None
    }
}

/// Streams a (plain, gzip or zstd) layer tar into the directory `root`, writing the tar-split
/// JSON lines (uncompressed) to `tar_split`, and reports digests, sizes and ID sets. With
/// `opts.no_sync` unset, the filesystem holding `root` is synced (one `syncfs`) before success.
pub fn apply_tar(
    root: &Path,
    blob: &mut dyn Read,
    tar_split: &mut dyn Write,
    whiteouts: WhiteoutFormat,
    opts: &ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let root_fd = fsutil::open_dir(root).map_err(|source| ApplyError::Layer {
        op: "open layer directory",
        path: root.to_path_buf(),
        source,
    })?;

    let mut hashing = HashingReader {
        inner: blob,
        digester: opts
            .verified_compressed_digest
            .is_none()
            .then(BackgroundDigester::sha256),
        bytes: 0,
    };
    let mut prefix = Vec::with_capacity(6);
    while prefix.len() < 6 {
        let mut byte = [0u8; 6];
        let want = 6 - prefix.len();
        match hashing.read(&mut byte[..want]) {
            Ok(0) => break,
            Ok(n) => prefix.extend_from_slice(&byte[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ApplyError::ReadBlob(e)),
        }
    }
    let compression = detect_compression(&prefix);
    let source: Source<'_> =
        BufReader::with_capacity(256 * 1024, Cursor::new(prefix).chain(hashing));
    let mut decoder = match compression {
        Compression::None => Decoder::Plain(Box::new(source)),
        Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(source))),
        Compression::Zstd => Decoder::Zstd(Box::new(
            zstd::stream::read::Decoder::with_buffer(source).map_err(ApplyError::ReadBlob)?,
        )),
        other => return Err(ApplyError::UnsupportedCompression { compression: other }),
    };

    let mut split = TarSplitWriter::new(BufWriter::with_capacity(64 * 1024, tar_split));
    let mut state = Applier::new(root_fd, whiteouts, &opts.id_mappings);
    let mut stream = TarStream::new(&mut decoder);
    let mut entries = 0u64;
    while let Some(header) = stream.next_header()? {
        split
            .segment(&stream.take_raw())
            .map_err(ApplyError::TarSplitWrite)?;
        state.record_ids(&header);
        state.apply_entry(&header, &mut stream)?;
        stream.skip_data()?;
        entries += 1;
        if entries == 2 {
            // Part of the layer is on disk, the rest of the tar not yet read.
            podstore_blobstore::crash_point("apply-mid");
        }
        let crc = (header.size > 0).then(|| stream.data_crc().to_be_bytes());
        split
            .file(&header.name, header.size, crc)
            .map_err(ApplyError::TarSplitWrite)?;
    }
    let trailer = stream.take_raw();
    if !trailer.is_empty() {
        split.segment(&trailer).map_err(ApplyError::TarSplitWrite)?;
    }
    let (diff_digest, diff_size, _) = stream
        .finish(|chunk| split.segment(chunk))?
        .map_err(ApplyError::TarSplitWrite)?;
    split.into_inner().map_err(ApplyError::TarSplitWrite)?;

    // drain whatever follows the compressed stream so the blob digest covers all of it
    let mut source = decoder.into_source();
    io::copy(&mut source, &mut io::sink()).map_err(ApplyError::ReadBlob)?;
    let (_, hashing) = source.into_inner().into_inner();
    let compressed_size = hashing.bytes;
    let compressed_digest = match (hashing.digester, &opts.verified_compressed_digest) {
        (Some(digester), _) => digester
            .finish()
            .ok_or_else(|| ApplyError::ReadBlob(io::Error::other("the digest thread failed")))?,
        (None, Some(known)) => known.clone(),
        (None, None) => {
            return Err(ApplyError::ReadBlob(io::Error::other(
                "no blob digest was computed",
            )));
        }
    };

    state.finish_directories()?;
    if !opts.no_sync {
        rustix::fs::syncfs(&state.root).map_err(|e| ApplyError::Layer {
            op: "syncfs",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
    }
    Ok(ApplyReport {
        compressed_digest,
        compressed_size,
        diff_digest,
        diff_size,
        compression,
        uids: state.uids,
        gids: state.gids,
    })
}

/// Maps an ID from the tar through the mapping ranges (identity when empty).
pub(crate) fn map_id(ranges: &[IdMap], id: i64) -> Option<u32> {
    let id = u32::try_from(id).ok().filter(|&id| id != u32::MAX)?;
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(r.container_id)?;
        if offset < r.size {
            r.host_id.checked_add(offset).filter(|&h| h != u32::MAX)
        } else {
            None
        }
    })
}

/// Cleans an entry name lexically. `None` when `..` climbs above a relative name's root;
/// rooted names are clamped at `/` like Go's `filepath.Clean`.
fn clean(name: &[u8]) -> Option<Vec<&[u8]>> {
    let rooted = name.starts_with(b"/");
    let mut out: Vec<&[u8]> = Vec::new();
    for comp in name.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() && !rooted {
                    return None;
                }
            }
            comp => out.push(comp),
        }
    }
    Some(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(comps.iter().map(|c| c.len() + 1).sum());
    for (i, comp) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(comp);
    }
    out
}

fn display(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// Base name of a raw entry name as Go's `path.Base` gives it.
fn raw_base(name: &[u8]) -> &[u8] {
    let trimmed = match name.iter().rposition(|&b| b != b'/') {
        Some(end) => &name[..=end],
        None => return name,
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(slash) => &trimmed[slash + 1..],
        None => trimmed,
    }
}

fn timestamps(header: &Header) -> Timestamps {
    let mtime = header.mtime;
    let atime = match header.atime {
        Some(atime) if atime > mtime => atime,
        _ => mtime,
    };
    Timestamps {
        last_access: Timespec {
            tv_sec: atime.0,
            tv_nsec: i64::from(atime.1),
        },
        last_modification: Timespec {
            tv_sec: mtime.0,
            tv_nsec: i64::from(mtime.1),
        },
    }
}

/// Whether an xattr from the tar is applied: `security.selinux` is ignored (as
/// containers/storage does) and `trusted.overlay.*` is never taken from an image, so a layer
/// cannot forge overlay metadata (redirects, opaque markers outside of `.wh..wh..opq`).
fn xattr_allowed(key: &[u8]) -> bool {
    key != b"security.selinux" && !key.starts_with(b"trusted.overlay.")
}

struct Applier<'m> {
    root: OwnedFd,
    whiteouts: WhiteoutFormat,
    maps: &'m IdMappings,
    /// Cleaned names of every entry so far (duplicate check, and "unpacked by this layer" for
    /// naive opaque directories).
    seen: HashSet<Vec<u8>>,
    /// Directories whose times are set at the end.
    dirs: Vec<(Vec<u8>, Timestamps)>,
    cached_parent: Option<(Vec<u8>, Rc<OwnedFd>)>,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

impl<'m> Applier<'m> {
    fn new(root: OwnedFd, whiteouts: WhiteoutFormat, maps: &'m IdMappings) -> Applier<'m> {
        Applier {
            root,
            whiteouts,
            maps,
            seen: HashSet::new(),
            dirs: Vec::new(),
            cached_parent: None,
            uids: BTreeSet::new(),
            gids: BTreeSet::new(),
        }
    }

    fn record_ids(&mut self, header: &Header) {
        if !raw_base(&header.name).starts_with(b".wh.") {
            // Go stores them as uint32(hdr.Uid)
            self.uids.insert(header.uid as u32);
            self.gids.insert(header.gid as u32);
        }
    }

    fn map_owner(&self, entry: &str, uid: i64, gid: i64) -> Result<(u32, u32), ApplyError> {
        let host_uid = map_id(&self.maps.uid, uid).ok_or_else(|| ApplyError::UnmappedId {
            entry: entry.to_owned(),
            kind: "uid",
            id: uid,
        })?;
        let host_gid = map_id(&self.maps.gid, gid).ok_or_else(|| ApplyError::UnmappedId {
            entry: entry.to_owned(),
            kind: "gid",
            id: gid,
        })?;
        Ok((host_uid, host_gid))
    }

    /// Opens the parent directory (cleaned components) inside the root, creating missing
    /// directories (0755, owned by the mapped root) when asked.
    fn parent(
        &mut self,
        comps: &[&[u8]],
        entry: &str,
        create: bool,
    ) -> Result<Rc<OwnedFd>, ApplyError> {
        let key = join(comps);
        if let Some((cached, fd)) = &self.cached_parent {
            if *cached == key {
                return Ok(fd.clone());
            }
        }
        let fd = match fsutil::open_dir_in_root(self.root.as_fd(), &key) {
            Ok(fd) => fd,
            Err(e) if create && e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                self.create_parents(comps, entry)?
            }
            Err(source) => {
                return Err(ApplyError::Entry {
                    entry: entry.to_owned(),
                    op: "open parent directory",
                    source,
                });
            }
        };
        let fd = Rc::new(fd);
        self.cached_parent = Some((key, fd.clone()));
        Ok(fd)
    }

    fn create_parents(&mut self, comps: &[&[u8]], entry: &str) -> Result<OwnedFd, ApplyError> {
        let err = |op: &'static str| {
            let entry = entry.to_owned();
            move |source: io::Error| ApplyError::Entry { entry, op, source }
        };
        let (root_uid, root_gid) = self.map_owner(entry, 0, 0)?;
        let mut cur =
            fsutil::open_dir_in_root(self.root.as_fd(), b"").map_err(err("open layer root"))?;
        for i in 0..comps.len() {
            let prefix = join(&comps[..=i]);
            match fsutil::open_dir_in_root(self.root.as_fd(), &prefix) {
                Ok(fd) => cur = fd,
                Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                    let name = os(comps[i]);
                    rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755))
                        .map_err(|e| err("create parent directory")(e.into()))?;
                    let fd = rustix::fs::openat(&cur, name, DIR_FLAGS, Mode::empty())
                        .map_err(|e| err("open parent directory")(e.into()))?;
                    rustix::fs::fchown(
                        &fd,
                        Some(fsutil::uid(root_uid)),
                        Some(fsutil::gid(root_gid)),
                    )
                    .map_err(|e| err("chown parent directory")(e.into()))?;
                    rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o755))
                        .map_err(|e| err("chmod parent directory")(e.into()))?;
                    cur = fd;
                }
                Err(e) => return Err(err("open parent directory")(e)),
            }
        }
        Ok(cur)
    }

    /// Makes room for `name` in `parent_fd` for an entry of `kind`: whatever is there is
    /// removed, except a directory when the entry is a directory too. Returns whether the
    /// entry merges into such an existing directory.
    fn replace_existing(
        &mut self,
        parent_fd: BorrowedFd<'_>,
        name: &OsStr,
        kind: EntryKind,
        entry: &str,
    ) -> Result<bool, ApplyError> {
        let existing = match rustix::fs::statat(parent_fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode as _)),
            Err(Errno::NOENT) => None,
            Err(e) => {
                return Err(ApplyError::Entry {
                    entry: entry.to_owned(),
                    op: "stat",
                    source: e.into(),
                });
            }
        };
        let merge_dir = existing == Some(FileType::Directory) && kind == EntryKind::Directory;
        if existing.is_some() && !merge_dir {
            fsutil::remove_all_at(parent_fd, name).map_err(|source| ApplyError::Entry {
                entry: entry.to_owned(),
                op: "remove existing",
                source,
            })?;
            if existing == Some(FileType::Directory) {
                self.cached_parent = None;
            }
        }
        Ok(merge_dir)
    }

    fn apply_entry<R: Read>(
        &mut self,
        header: &Header,
        stream: &mut TarStream<R>,
    ) -> Result<(), ApplyError> {
        let entry = display(&header.name);
        let unsupported = |reason: &str| ApplyError::UnsupportedEntry {
            entry: entry.clone(),
            reason: reason.to_owned(),
        };
        let comps = clean(&header.name).ok_or_else(|| ApplyError::Breakout {
            entry: entry.clone(),
        })?;
        let key = join(&comps);
        if !self.seen.insert(key.clone()) {
            return Err(ApplyError::DuplicateEntry { entry });
        }
        match header.kind {
            EntryKind::GlobalHeader => return Ok(()),
            EntryKind::Other(flag) => {
                return Err(unsupported(&format!(
                    "tar entry type {:?}",
                    char::from(flag)
                )));
            }
            _ if header.sparse => return Err(unsupported("sparse file")),
            EntryKind::Regular => {}
            _ if header.size != 0 => return Err(unsupported("a header-only entry with data")),
            _ => {}
        }
        let Some((&base, parent)) = comps.split_last() else {
            // the layer root itself: containers/storage skips "." directory entries
            return if header.kind == EntryKind::Directory {
                Ok(())
            } else {
                Err(unsupported("the layer root as a non-directory"))
            };
        };
        if comps[0].starts_with(b".wh..wh.") && base != b".wh..wh..opq" {
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs...): never unpacked
            return Ok(());
        }
        if let Some(hidden) = base.strip_prefix(b".wh.") {
            if base == b".wh..wh..opq" {
                return self.opaque(parent, &entry);
            }
            if hidden.starts_with(b".wh.") {
                return Ok(());
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                // ".wh.." would whiteout the parent's parent: never follow it out of the layer
                return Err(ApplyError::Breakout { entry });
            }
            return self.whiteout(parent, hidden, header, &entry);
        }

        let (uid, gid) = self.map_owner(&entry, header.uid, header.gid)?;
        let parent_fd = self.parent(parent, &entry, true)?;
        let parent_fd = parent_fd.as_fd();
        let name = os(base);
        let err = |op: &'static str| {
            let entry = entry.clone();
            move |source: Errno| ApplyError::Entry {
                entry,
                op,
                source: source.into(),
            }
        };

        // A regular file (most entries) is created with O_EXCL straight away: only when the
        // name is taken is it looked at and removed (one syscall per file saved).
        let merge_dir = if header.kind == EntryKind::Regular {
            false
        } else {
            self.replace_existing(parent_fd, name, header.kind, &entry)?
        };
        let times = timestamps(header);
        let mode = Mode::from_raw_mode(header.mode as _);
        match header.kind {
            EntryKind::Regular => {
                let create = || fsutil::create_new_file(parent_fd, name);
                let fd = match create() {
                    Err(Errno::EXIST) => {
                        self.replace_existing(parent_fd, name, header.kind, &entry)?;
                        create()
                    }
                    created => created,
                }
                .map_err(err("create file"))?;
                let mut file = File::from(fd);
                loop {
                    let chunk = stream.data_chunk()?;
                    if chunk.is_empty() {
                        break;
                    }
                    file.write_all(chunk).map_err(|source| ApplyError::Entry {
                        entry: entry.clone(),
                        op: "write",
                        source,
                    })?;
                }
                self.set_meta_fd(file.as_fd(), header, uid, gid, &entry)?;
                rustix::fs::futimens(&file, &times).map_err(err("set times"))?;
            }
            EntryKind::Directory => {
                if !merge_dir {
                    rustix::fs::mkdirat(parent_fd, name, Mode::from_raw_mode(0o700))
                        .map_err(err("mkdir"))?;
                }
                let fd = rustix::fs::openat(parent_fd, name, DIR_FLAGS, Mode::empty())
                    .map_err(err("open directory"))?;
                self.set_meta_fd(fd.as_fd(), header, uid, gid, &entry)?;
                self.dirs.push((key, times));
            }
            EntryKind::Symlink => {
                rustix::fs::symlinkat(os(&header.linkname), parent_fd, name)
                    .map_err(err("symlink"))?;
                self.set_meta_at(parent_fd, name, header, uid, gid, &entry, true)?;
                rustix::fs::utimensat(parent_fd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("set times"))?;
            }
            EntryKind::HardLink => {
                let target = display(&header.linkname);
                let outside = || ApplyError::HardlinkOutside {
                    entry: entry.clone(),
                    target: target.clone(),
                };
                let target_comps = clean(&header.linkname).ok_or_else(outside)?;
                let Some((&target_base, target_parent)) = target_comps.split_last() else {
                    return Err(outside());
                };
                let target_dir = fsutil::open_dir_in_root(self.root.as_fd(), &join(target_parent))
                    .map_err(|source| ApplyError::Entry {
                        entry: entry.clone(),
                        op: "open hardlink target directory",
                        source,
                    })?;
                rustix::fs::linkat(
                    &target_dir,
                    os(target_base),
                    parent_fd,
                    name,
                    AtFlags::empty(),
                )
                .map_err(err("hardlink"))?;
                // like containers/storage, the link header's owner, xattrs, mode and times are
                // applied to the (shared) inode, except mode and times on a symlink
                let linked = rustix::fs::statat(parent_fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("stat hardlink"))?;
                let symlink = FileType::from_raw_mode(linked.st_mode as _) == FileType::Symlink;
                self.set_meta_at(parent_fd, name, header, uid, gid, &entry, symlink)?;
                if !symlink {
                    rustix::fs::chmodat(parent_fd, name, mode, AtFlags::empty())
                        .map_err(err("chmod"))?;
                    rustix::fs::utimensat(parent_fd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(err("set times"))?;
                }
            }
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                let (kind, dev) = match header.kind {
                    EntryKind::CharDevice => (
                        FileType::CharacterDevice,
                        rustix::fs::makedev(header.devmajor, header.devminor),
                    ),
                    EntryKind::BlockDevice => (
                        FileType::BlockDevice,
                        rustix::fs::makedev(header.devmajor, header.devminor),
                    ),
                    _ => (FileType::Fifo, 0),
                };
                rustix::fs::mknodat(parent_fd, name, kind, Mode::from_raw_mode(0o600), dev)
                    .map_err(err("mknod"))?;
                self.set_meta_at(parent_fd, name, header, uid, gid, &entry, false)?;
                rustix::fs::chmodat(parent_fd, name, mode, AtFlags::empty())
                    .map_err(err("chmod"))?;
                rustix::fs::utimensat(parent_fd, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(err("set times"))?;
            }
            EntryKind::GlobalHeader | EntryKind::Other(_) => {}
        }
        Ok(())
    }

    /// Owner, xattrs, then mode (after chown, which clears setuid/setgid) on an open object.
    fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        header: &Header,
        uid: u32,
        gid: u32,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let err = |op: &'static str| {
            move |source: Errno| ApplyError::Entry {
                entry: entry.to_owned(),
                op,
                source: source.into(),
            }
        };
        rustix::fs::fchown(fd, Some(fsutil::uid(uid)), Some(fsutil::gid(gid)))
            .map_err(err("chown"))?;
        for (key, value) in &header.xattrs {
            if !xattr_allowed(key) {
                continue;
            }
            match rustix::fs::fsetxattr(fd, os(key), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if fsutil::xattr_unsupported(e) => {}
                Err(e) => return Err(err("set xattr")(e)),
            }
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(header.mode as _)).map_err(err("chmod"))?;
        Ok(())
    }

    /// Owner and xattrs of an object that cannot be opened (symlink, device, FIFO).
    #[allow(clippy::too_many_arguments)]
    fn set_meta_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        header: &Header,
        uid: u32,
        gid: u32,
        entry: &str,
        symlink: bool,
    ) -> Result<(), ApplyError> {
        let err = |op: &'static str| {
            move |source: Errno| ApplyError::Entry {
                entry: entry.to_owned(),
                op,
                source: source.into(),
            }
        };
        rustix::fs::chownat(
            parent,
            name,
            Some(fsutil::uid(uid)),
            Some(fsutil::gid(gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(err("chown"))?;
        for (key, value) in &header.xattrs {
            if !xattr_allowed(key) {
                continue;
            }
            match fsutil::lsetxattr_at(parent, name, os(key), value) {
                Ok(()) => {}
                Err(e) if fsutil::xattr_unsupported(e) => {}
                // user.* xattrs are not permitted on symlinks and special files
                Err(Errno::PERM) if symlink || key.starts_with(b"user.") => {}
                Err(e) => return Err(err("set xattr")(e)),
            }
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent: &[&[u8]],
        hidden: &[u8],
        header: &Header,
        entry: &str,
    ) -> Result<(), ApplyError> {
        let parent_fd = match self.parent(parent, entry, true) {
            Ok(fd) => fd,
            // an earlier whiteout turned the parent into a device: nothing left to hide
            Err(ApplyError::Entry { source, .. })
                if source.raw_os_error() == Some(Errno::NOTDIR.raw_os_error()) =>
            {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let name = os(hidden);
        let err = |op: &'static str| {
            move |source: io::Error| ApplyError::Entry {
                entry: entry.to_owned(),
                op,
                source,
            }
        };
        match self.whiteouts {
            WhiteoutFormat::Overlay => {
                let (uid, gid) = self.map_owner(entry, header.uid, header.gid)?;
                rustix::fs::mknodat(
                    parent_fd.as_fd(),
                    name,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| err("create whiteout device")(e.into()))?;
                rustix::fs::chownat(
                    parent_fd.as_fd(),
                    name,
                    Some(fsutil::uid(uid)),
                    Some(fsutil::gid(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| err("chown whiteout device")(e.into()))?;
            }
            WhiteoutFormat::Delete => {
                fsutil::remove_all_at(parent_fd.as_fd(), name)
                    .map_err(err("remove whited-out path"))?;
                self.cached_parent = None;
            }
        }
        Ok(())
    }

    fn opaque(&mut self, dir: &[&[u8]], entry: &str) -> Result<(), ApplyError> {
        let dir_fd = self.parent(dir, entry, true)?;
        match self.whiteouts {
            WhiteoutFormat::Overlay => rustix::fs::fsetxattr(
                dir_fd.as_fd(),
                "trusted.overlay.opaque",
                b"y",
                XattrFlags::empty(),
            )
            .map_err(|e| ApplyError::Entry {
                entry: entry.to_owned(),
                op: "set opaque xattr",
                source: e.into(),
            }),
            WhiteoutFormat::Delete => {
                let mut key = join(dir);
                self.cached_parent = None;
                self.remove_not_unpacked(dir_fd.as_fd(), &mut key)
                    .map_err(|source| ApplyError::Entry {
                        entry: entry.to_owned(),
                        op: "empty opaque directory",
                        source,
                    })
            }
        }
    }

    /// Removes every entry under `dir` (whose cleaned path is `key`) that this layer did not
    /// unpack, descending into directories it did.
    fn remove_not_unpacked(&self, dir: BorrowedFd<'_>, key: &mut Vec<u8>) -> io::Result<()> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut reader = rustix::fs::Dir::read_from(dir)?;
        while let Some(item) = reader.read() {
            let item = item?;
            let name = item.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        drop(reader);
        for name in names {
            let len = key.len();
            if !key.is_empty() {
                key.push(b'/');
            }
            key.extend_from_slice(&name);
            if self.seen.contains(key.as_slice()) {
                if let Ok(child) = rustix::fs::openat(dir, os(&name), DIR_FLAGS, Mode::empty()) {
                    self.remove_not_unpacked(child.as_fd(), key)?;
                }
            } else {
                fsutil::remove_all_at(dir, os(&name))?;
            }
            key.truncate(len);
        }
        Ok(())
    }

    /// Sets the directories' times last, so creating their entries did not change them.
    fn finish_directories(&mut self) -> Result<(), ApplyError> {
        self.cached_parent = None;
        for (key, times) in std::mem::take(&mut self.dirs) {
            match fsutil::open_dir_in_root(self.root.as_fd(), &key) {
                Ok(fd) => rustix::fs::futimens(&fd, &times).map_err(|e| ApplyError::Entry {
                    entry: display(&key),
                    op: "set directory times",
                    source: e.into(),
                })?,
                // removed or replaced later in the same layer
                Err(_) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_names() {
        let table: &[(&str, Option<&str>)] = &[
            ("a/b/c", Some("a/b/c")),
            ("./a//b/./c/", Some("a/b/c")),
            ("/etc/passwd", Some("etc/passwd")),
            ("/../../etc", Some("etc")),
            ("a/../b", Some("b")),
            ("a/../../b", None),
            ("../x", None),
            ("..", None),
            ("./", Some("")),
            ("/", Some("")),
        ];
        for (name, expected) in table {
            let got = clean(name.as_bytes()).map(|c| String::from_utf8(join(&c)).unwrap());
            assert_eq!(got.as_deref(), *expected, "{name}");
        }
    }

    #[test]
    fn id_mapping() {
        let ranges = [
            IdMap {
                container_id: 0,
                host_id: 100000,
                size: 1000,
            },
            IdMap {
                container_id: 1000,
                host_id: 200000,
                size: 10,
            },
        ];
        let table: &[(i64, Option<u32>)] = &[
            (0, Some(100000)),
            (999, Some(100999)),
            (1000, Some(200000)),
            (1009, Some(200009)),
            (1010, None),
            (-1, None),
            (i64::from(u32::MAX), None),
        ];
        for (id, expected) in table {
            assert_eq!(map_id(&ranges, *id), *expected, "{id}");
        }
        assert_eq!(map_id(&[], 65534), Some(65534));
    }

    #[test]
    fn base_names() {
        let table: &[(&str, &str)] = &[
            ("a/b/.wh.c", ".wh.c"),
            ("dir/", "dir"),
            ("x", "x"),
            ("///", "///"),
        ];
        for (name, base) in table {
            assert_eq!(raw_base(name.as_bytes()), base.as_bytes(), "{name}");
        }
    }

    #[test]
    fn compression_detection() {
        let table: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b, 0x08, 0], Compression::Gzip),
            (&[0x28, 0xb5, 0x2f, 0xfd, 1], Compression::Zstd),
            (b"BZh91AY", Compression::Bzip2),
            (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], Compression::Xz),
            (b"etc/\0\0", Compression::None),
            (b"", Compression::None),
        ];
        for (prefix, expected) in table {
            assert_eq!(detect_compression(prefix), *expected, "{prefix:?}");
        }
    }
}
