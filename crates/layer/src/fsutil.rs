//! fd-relative filesystem helpers shared by the applier and the drivers: resolving inside a
//! root (openat2 `RESOLVE_IN_ROOT`), removing trees without following symlinks (iteratively,
//! so arbitrarily deep trees go away), xattrs on objects that cannot be opened, full-tree copies
//! for vfs, and disk usage.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, Uid,
};
use rustix::io::Errno;

/// Opens a directory for reading (usable for fsetxattr/fchown/futimens/syncfs).
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

/// Resolution that keeps every lookup inside the root and refuses /proc magic links.
pub(crate) const IN_ROOT: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Converts bytes to an `OsStr`.
pub(crate) fn os(bytes: &[u8]) -> &OsStr {
    OsStr::from_bytes(bytes)
}

/// Creates the regular file `name` in `dir` for writing, mode 0600 until its metadata is set:
/// never through a symlink, and failing with EEXIST when the name is taken.
pub(crate) fn create_new_file<P: rustix::path::Arg>(
    dir: BorrowedFd<'_>,
    name: P,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
}

/// Opens a directory as a plain path.
pub(crate) fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, DIR_FLAGS, Mode::empty())?)
}

/// Opens `relative` (bytes, `/`-separated; empty means the root) as a directory, resolved
/// inside `root`.
pub(crate) fn open_dir_in_root(root: BorrowedFd<'_>, relative: &[u8]) -> io::Result<OwnedFd> {
    let relative: &[u8] = if relative.is_empty() { b"." } else { relative };
    Ok(rustix::fs::openat2(
        root,
        os(relative),
        DIR_FLAGS,
        Mode::empty(),
        IN_ROOT,
    )?)
}

/// Maps a raw ID to rustix's type; callers never pass -1 (the applier refuses it).
pub(crate) fn uid(raw: u32) -> Uid {
    Uid::from_raw_unchecked(raw)
}

/// Maps a raw ID to rustix's type; callers never pass -1 (the applier refuses it).
pub(crate) fn gid(raw: u32) -> Gid {
    Gid::from_raw_unchecked(raw)
}

/// `/proc/self/fd/<parent>/<name>`: a path that reaches `name` in `parent` without following a
/// final symlink when used with the `l*` calls.
pub(crate) fn proc_path(parent: BorrowedFd<'_>, name: &OsStr) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
    path.push(name);
    path
}

/// Removes `name` in `parent` and everything below it, never following symlinks. Missing is
/// fine.
pub(crate) fn remove_all_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => return Ok(()),
        Err(Errno::ISDIR) | Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    let top = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    empty_dir(top)?;
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes everything inside the directory `top`, iteratively (one open fd at a time, climbing
/// back with `..`), so depth is unbounded.
pub(crate) fn empty_dir(top: OwnedFd) -> io::Result<()> {
    let mut stack: Vec<OsString> = Vec::new();
    let mut cur = top;
    loop {
        let mut descend: Option<OsString> = None;
        {
            let mut dir = Dir::read_from(&cur)?;
            while let Some(entry) = dir.read() {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let name = OsStr::from_bytes(name);
                if entry.file_type() == FileType::Directory {
                    descend = Some(name.to_owned());
                    break;
                }
                match rustix::fs::unlinkat(&cur, name, AtFlags::empty()) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(Errno::ISDIR) | Err(Errno::PERM) => {
                        descend = Some(name.to_owned());
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        match descend {
            Some(name) => {
                let child = rustix::fs::openat(&cur, &name, DIR_FLAGS, Mode::empty())?;
                stack.push(name);
                cur = child;
            }
            None => {
                let Some(name) = stack.pop() else {
                    return Ok(());
                };
                let up = rustix::fs::openat(&cur, "..", DIR_FLAGS, Mode::empty())?;
                match rustix::fs::unlinkat(&up, &name, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
                cur = up;
            }
        }
    }
}

/// Whether an xattr error means "this filesystem or object does not take it" (ignored, as
/// containers/storage ignores ENOTSUP).
pub(crate) fn xattr_unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// Sets an xattr on `name` in `parent` without following it (for symlinks, devices, FIFOs).
pub(crate) fn lsetxattr_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    key: &OsStr,
    value: &[u8],
) -> Result<(), Errno> {
    rustix::fs::lsetxattr(
        proc_path(parent, name),
        key,
        value,
        rustix::fs::XattrFlags::empty(),
    )
}

/// Lists and reads all xattrs of an object (via an fd if given, else without following).
fn read_xattrs(
    fd: Option<BorrowedFd<'_>>,
    path: &std::path::Path,
) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        let r = match fd {
            Some(fd) => rustix::fs::flistxattr(fd, &mut names[..]),
            None => rustix::fs::llistxattr(path, &mut names[..]),
        };
        match r {
            Ok(n) => break n,
            Err(Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(e) if xattr_unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for key in names[..len].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let key = OsStr::from_bytes(key);
        let mut value = vec![0u8; 256];
        loop {
            let r = match fd {
                Some(fd) => rustix::fs::fgetxattr(fd, key, &mut value[..]),
                None => rustix::fs::lgetxattr(path, key, &mut value[..]),
            };
            match r {
                Ok(n) => {
                    value.truncate(n);
                    break;
                }
                Err(Errno::RANGE) => value.resize(value.len() * 4 + 65536, 0),
                Err(e) => return Err(e.into()),
            }
        }
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// Timestamps of a stat result.
pub(crate) fn stat_times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as i64,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as i64,
        },
    }
}

fn file_type_of(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as _)
}

fn permissions_of(st: &Stat) -> Mode {
    Mode::from_raw_mode((st.st_mode & 0o7777) as _)
}

/// Copies the metadata of `src_st` (owner, xattrs, mode, times) onto an open object.
fn copy_meta_fd(fd: BorrowedFd<'_>, src_fd: BorrowedFd<'_>, st: &Stat) -> io::Result<()> {
    rustix::fs::fchown(fd, Some(uid(st.st_uid)), Some(gid(st.st_gid)))?;
    for (key, value) in read_xattrs(Some(src_fd), std::path::Path::new(""))? {
        match rustix::fs::fsetxattr(fd, &key, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) if xattr_unsupported(e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    rustix::fs::fchmod(fd, permissions_of(st))?;
    rustix::fs::futimens(fd, &stat_times(st))?;
    Ok(())
}

/// Copies the metadata of an object that cannot be opened (symlink, device, FIFO, socket).
fn copy_meta_at(
    dst_parent: BorrowedFd<'_>,
    src_parent: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
) -> io::Result<()> {
    let symlink = file_type_of(st) == FileType::Symlink;
    rustix::fs::chownat(
        dst_parent,
        name,
        Some(uid(st.st_uid)),
        Some(gid(st.st_gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    for (key, value) in read_xattrs(None, &proc_path(src_parent, name))? {
        match lsetxattr_at(dst_parent, name, &key, &value) {
            Ok(()) => {}
            Err(e) if xattr_unsupported(e) || (symlink && e == Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !symlink {
        rustix::fs::chmodat(dst_parent, name, permissions_of(st), AtFlags::empty())?;
    }
    rustix::fs::utimensat(dst_parent, name, &stat_times(st), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Copies a whole tree: the contents of directory `src` into the existing directory `dst`
/// (owners, modes, xattrs, devices, FIFOs, symlinks, hardlinks and mtimes preserved), then the
/// root's own metadata.
pub(crate) fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut rel = Vec::new();
    copy_dir_contents(src, dst, dst, &mut rel, &mut links)?;
    let st = rustix::fs::fstat(src)?;
    copy_meta_fd(dst, src, &st)
}

fn copy_dir_contents(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    dst_root: BorrowedFd<'_>,
    rel: &mut Vec<u8>,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> io::Result<()> {
    let mut names: Vec<OsString> = Vec::new();
    let mut dir = Dir::read_from(src)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    drop(dir);
    for name in names {
        let st = rustix::fs::statat(src, &name, AtFlags::SYMLINK_NOFOLLOW)?;
        let rel_len = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(name.as_bytes());
        match file_type_of(&st) {
            FileType::Directory => {
                rustix::fs::mkdirat(dst, &name, Mode::from_raw_mode(0o700))?;
                let s = rustix::fs::openat(src, &name, DIR_FLAGS, Mode::empty())?;
                let d = rustix::fs::openat(dst, &name, DIR_FLAGS, Mode::empty())?;
                copy_dir_contents(s.as_fd(), d.as_fd(), dst_root, rel, links)?;
                copy_meta_fd(d.as_fd(), s.as_fd(), &st)?;
            }
            FileType::RegularFile => {
                let key = (st.st_dev as u64, st.st_ino as u64);
                let first = if st.st_nlink > 1 {
                    links.get(&key)
                } else {
                    None
                };
                if let Some(first) = first {
                    rustix::fs::linkat(dst_root, os(first), dst, &name, AtFlags::empty())?;
                } else {
                    let s = rustix::fs::openat(
                        src,
                        &name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    let d = create_new_file(dst, &name)?;
                    copy_contents(s.as_fd(), d.as_fd(), st.st_size as u64)?;
                    copy_meta_fd(d.as_fd(), s.as_fd(), &st)?;
                    if st.st_nlink > 1 {
                        links.insert(key, rel.clone());
                    }
                }
            }
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(src, &name, Vec::new())?;
                rustix::fs::symlinkat(target.as_c_str(), dst, &name)?;
                copy_meta_at(dst, src, &name, &st)?;
            }
            kind => {
                rustix::fs::mknodat(
                    dst,
                    &name,
                    kind,
                    Mode::from_raw_mode(0o600),
                    st.st_rdev as _,
                )?;
                copy_meta_at(dst, src, &name, &st)?;
            }
        }
        rel.truncate(rel_len);
    }
    Ok(())
}

fn copy_contents(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let mut copied: u64 = 0;
    while copied < size {
        let chunk = (size - copied).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(src, None, dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => copied += n as u64,
            Err(Errno::XDEV) | Err(Errno::NOSYS) | Err(Errno::INVAL) | Err(Errno::OPNOTSUPP)
                if copied == 0 =>
            {
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = rustix::io::read(src, &mut buf[..])?;
                    if n == 0 {
                        return Ok(());
                    }
                    let mut done = 0;
                    while done < n {
                        done += rustix::io::write(dst, &buf[done..n])?;
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sum of the sizes of all non-directories under `dir`, each inode counted once (as
/// containers/storage's `directory.Size`).
pub(crate) fn disk_usage(dir: BorrowedFd<'_>) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    usage_of(dir, &mut seen, &mut total)?;
    Ok(total)
}

fn usage_of(
    dir: BorrowedFd<'_>,
    seen: &mut HashSet<(u64, u64)>,
    total: &mut u64,
) -> io::Result<()> {
    let mut subdirs: Vec<OsString> = Vec::new();
    let mut reader = Dir::read_from(dir)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        if file_type_of(&st) == FileType::Directory {
            subdirs.push(name.to_owned());
        } else if seen.insert((st.st_dev as u64, st.st_ino as u64)) {
            *total += st.st_size as u64;
        }
    }
    drop(reader);
    for name in subdirs {
        match rustix::fs::openat(dir, &name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => usage_of(fd.as_fd(), seen, total)?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
