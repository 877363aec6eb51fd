//! Shifting the owners of a whole tree from one set of ID mappings to another
//! (containers/storage's `ChownPathByMaps`, used by `UpdateLayerIDMap` when a layer is copied for
//! a container with other UID/GID maps).
//!
//! Every object's owner is mapped host → container through the old mappings, then container →
//! host through the new ones (an ID the new mappings do not cover becomes the kernel's overflow
//! ID, as containers/storage's `ToHostOverflow` does). The walk is fd-relative and iterative:
//! one directory fd and the remaining names of each level are held, never a path, and nothing
//! is followed. Hard-linked files are shifted once. What `chown(2)` clears is put back: the
//! setuid/setgid bits (by re-applying the mode) and `security.capability` (whose v3 `rootid`
//! is shifted like an owner, so a namespaced capability keeps naming the layer's root).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use rustix::fs::{AtFlags, Dir, FileType, Mode, Stat};
use rustix::io::Errno;

use crate::apply::map_id;
use crate::driver::{IdMap, IdMappings};
use crate::fsutil::{self, DIR_FLAGS, gid, proc_path, uid, xattr_unsupported};

const CAPABILITY_XATTR: &str = "security.capability";
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;
const VFS_CAP_V3_SIZE: usize = 24;

/// Why a shift stopped; the path is relative to the tree's root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShiftError {
    /// An I/O error on an object of the tree.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The object, relative to the root (`.` for the root).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An owner that the old mappings do not cover (containers/storage: "mapping host ID pair
    /// … to container").
    #[error(
        "{}: owner {uid}:{gid} is not covered by the layer's ID mappings",
        path.display()
    )]
    Unmappable {
        /// The object, relative to the root.
        path: PathBuf,
        /// Its UID on disk.
        uid: u32,
        /// Its GID on disk.
        gid: u32,
    },
}

/// Maps a host ID back into the container through `ranges` (identity when empty).
fn to_container(ranges: &[IdMap], id: u32) -> Option<u32> {
    if ranges.is_empty() {
        return Some(id);
    }
    ranges.iter().find_map(|r| {
        let offset = id.checked_sub(r.host_id)?;
        (offset < r.size)
            .then(|| r.container_id.checked_add(offset))
            .flatten()
    })
}

fn overflow_id(file: &str) -> u32 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

/// The old and new mappings of a shift, with the kernel's overflow IDs.
struct Shift<'a> {
    from: &'a IdMappings,
    to: &'a IdMappings,
    overflow_uid: u32,
    overflow_gid: u32,
    /// Hard-linked files already shifted: (dev, ino) → the owner they were given.
    linked: HashMap<(u64, u64), (u32, u32)>,
}

impl Shift<'_> {
    /// The new owner of an object owned by `uid:gid` (`None`: the old mappings miss it).
    fn target(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        let (cuid, cgid) = match (
            to_container(&self.from.uid, uid),
            to_container(&self.from.gid, gid),
        ) {
            (Some(u), Some(g)) => (u, g),
            // containers/storage lets 0:0 through unmapped ("a parent layer should have had a
            // mapped value, but didn't").
            _ if uid == 0 && gid == 0 => (0, 0),
            _ => return None,
        };
        Some((
            map_id(&self.to.uid, i64::from(cuid)).unwrap_or(self.overflow_uid),
            map_id(&self.to.gid, i64::from(cgid)).unwrap_or(self.overflow_gid),
        ))
    }

    /// A v3 capability's `rootid` shifted like a UID; other revisions are returned unchanged.
    fn capability(&self, mut value: Vec<u8>) -> Vec<u8> {
        if value.len() != VFS_CAP_V3_SIZE {
            return value;
        }
        let magic = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if magic & VFS_CAP_REVISION_MASK != VFS_CAP_REVISION_3 {
            return value;
        }
        let rootid = u32::from_le_bytes([value[20], value[21], value[22], value[23]]);
        if let Some(c) = to_container(&self.from.uid, rootid)
            && let Some(h) = map_id(&self.to.uid, i64::from(c))
        {
            value[20..24].copy_from_slice(&h.to_le_bytes());
        }
        value
    }
}

fn read_capability(parent: BorrowedFd<'_>, name: &OsStr) -> Result<Option<Vec<u8>>, Errno> {
    let path = proc_path(parent, name);
    let mut buf = vec![0u8; 64];
    loop {
        match rustix::fs::lgetxattr(&path, CAPABILITY_XATTR, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => buf.resize(buf.len() * 4, 0),
            Err(Errno::NODATA) => return Ok(None),
            Err(e) if xattr_unsupported(e) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// One directory being walked: its fd, its name in its parent, and the names still to visit.
struct Level {
    dir: OwnedFd,
    name: OsString,
    pending: Vec<OsString>,
}

fn list(dir: BorrowedFd<'_>) -> Result<Vec<OsString>, Errno> {
    let mut names = Vec::new();
    let mut reader = Dir::read_from(dir)?;
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_owned());
        }
    }
    // Reverse so that `pop` visits in directory order.
    names.reverse();
    Ok(names)
}

fn relative(levels: &[Level], name: Option<&OsStr>) -> PathBuf {
    let mut p = PathBuf::from(".");
    for level in levels.iter().skip(1) {
        p.push(&level.name);
    }
    if let Some(name) = name {
        p.push(name);
    }
    p
}

/// Shifts the owner of every object under (and including) the directory `root` from `from` to
/// `to`. Returns the number of objects whose owner changed.
pub fn shift_tree(
    root: BorrowedFd<'_>,
    from: &IdMappings,
    to: &IdMappings,
) -> Result<u64, ShiftError> {
    let mut shift = Shift {
        from,
        to,
        overflow_uid: overflow_id("/proc/sys/kernel/overflowuid"),
        overflow_gid: overflow_id("/proc/sys/kernel/overflowgid"),
        linked: HashMap::new(),
    };
    let io = |op: &'static str, path: PathBuf| {
        move |e: Errno| ShiftError::Io {
            op,
            path,
            source: e.into(),
        }
    };
    let top = rustix::fs::openat(root, ".", DIR_FLAGS, Mode::empty())
        .map_err(io("open", PathBuf::from(".")))?;
    let mut changed = 0u64;
    // The root itself: shifted through its fd.
    let st = rustix::fs::fstat(&top).map_err(io("stat", PathBuf::from(".")))?;
    if let Some((u, g)) = shift.target(st.st_uid, st.st_gid) {
        if (u, g) != (st.st_uid, st.st_gid) {
            rustix::fs::fchown(&top, Some(uid(u)), Some(gid(g)))
                .map_err(io("chown", PathBuf::from(".")))?;
            rustix::fs::fchmod(&top, Mode::from_raw_mode((st.st_mode & 0o7777) as _))
                .map_err(io("chmod", PathBuf::from(".")))?;
            changed += 1;
        }
    } else {
        return Err(ShiftError::Unmappable {
            path: PathBuf::from("."),
            uid: st.st_uid,
            gid: st.st_gid,
        });
    }
    let pending = list(top.as_fd()).map_err(io("read directory", PathBuf::from(".")))?;
    let mut levels = vec![Level {
        dir: top,
        name: OsString::from("."),
        pending,
    }];
    while let Some(level) = levels.last_mut() {
        let Some(name) = level.pending.pop() else {
            levels.pop();
            continue;
        };
        let Some(level) = levels.last() else {
            break;
        };
        let parent = level.dir.as_fd();
        let at = |levels: &[Level]| relative(levels, Some(&name));
        let st = rustix::fs::statat(parent, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io("stat", at(&levels))(e))?;
        if shift_entry(&mut shift, parent, &name, &st).map_err(|e| e.at(at(&levels)))? {
            changed += 1;
        }
        if FileType::from_raw_mode(st.st_mode as _) == FileType::Directory {
            let dir = rustix::fs::openat(parent, &name, DIR_FLAGS, Mode::empty())
                .map_err(|e| io("open", at(&levels))(e))?;
            let pending = list(dir.as_fd()).map_err(|e| io("read directory", at(&levels))(e))?;
            levels.push(Level { dir, name, pending });
        }
    }
    Ok(changed)
}

/// A failure of one entry, before its path is known.
enum EntryError {
    Os(&'static str, Errno),
    Unmappable(u32, u32),
}

impl EntryError {
    fn at(self, path: PathBuf) -> ShiftError {
        match self {
            EntryError::Os(op, e) => ShiftError::Io {
                op,
                path,
                source: e.into(),
            },
            EntryError::Unmappable(uid, gid) => ShiftError::Unmappable { path, uid, gid },
        }
    }
}

/// Shifts one entry of `parent`; returns whether its owner changed.
fn shift_entry(
    shift: &mut Shift<'_>,
    parent: BorrowedFd<'_>,
    name: &OsStr,
    st: &Stat,
) -> Result<bool, EntryError> {
    let kind = FileType::from_raw_mode(st.st_mode as _);
    let current = (st.st_uid, st.st_gid);
    let key = (st.st_dev, st.st_ino);
    let hard_linked = kind != FileType::Directory && st.st_nlink > 1;
    let target = match hard_linked
        .then(|| shift.linked.get(&key).copied())
        .flatten()
    {
        // Another name of an inode already shifted: done, unless a copy-up split it off.
        Some(done) if done == current => return Ok(false),
        Some(done) => done,
        None => {
            let t = shift
                .target(st.st_uid, st.st_gid)
                .ok_or(EntryError::Unmappable(st.st_uid, st.st_gid))?;
            if hard_linked {
                shift.linked.insert(key, t);
            }
            t
        }
    };
    if target == current {
        return Ok(false);
    }
    let symlink = kind == FileType::Symlink;
    let capability = if symlink {
        None
    } else {
        read_capability(parent, name).map_err(|e| EntryError::Os("read capability of", e))?
    };
    rustix::fs::chownat(
        parent,
        name,
        Some(uid(target.0)),
        Some(gid(target.1)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| EntryError::Os("chown", e))?;
    let mode = st.st_mode & 0o7777;
    if !symlink && mode & 0o6000 != 0 {
        // chown(2) cleared setuid/setgid; put the mode back.
        rustix::fs::chmodat(
            parent,
            name,
            Mode::from_raw_mode(mode as _),
            AtFlags::empty(),
        )
        .map_err(|e| EntryError::Os("chmod", e))?;
    }
    if let Some(value) = capability {
        let value = shift.capability(value);
        match fsutil::lsetxattr_at(parent, name, OsStr::new(CAPABILITY_XATTR), &value) {
            Ok(()) => {}
            Err(e) if xattr_unsupported(e) => {}
            Err(e) => return Err(EntryError::Os("restore capability of", e)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(uid: &[(u32, u32, u32)]) -> IdMappings {
        let v: Vec<IdMap> = uid
            .iter()
            .map(|&(c, h, s)| IdMap {
                container_id: c,
                host_id: h,
                size: s,
            })
            .collect();
        IdMappings {
            uid: v.clone(),
            gid: v,
        }
    }

    #[test]
    fn targets_follow_old_inverse_then_new_with_overflow() {
        let identity = maps(&[]);
        let shifted = maps(&[(0, 100_000, 65536)]);
        let other = maps(&[(0, 200_000, 1000)]);
        let mk = |from, to| Shift {
            from,
            to,
            overflow_uid: 65534,
            overflow_gid: 65534,
            linked: HashMap::new(),
        };
        // (from, to, on-disk owner, expected)
        type Case<'a> = (
            &'a IdMappings,
            &'a IdMappings,
            (u32, u32),
            Option<(u32, u32)>,
        );
        let table: &[Case<'_>] = &[
            (&identity, &shifted, (0, 0), Some((100_000, 100_000))),
            (&identity, &shifted, (1000, 50), Some((101_000, 100_050))),
            (&identity, &shifted, (70_000, 0), Some((65534, 100_000))),
            (&shifted, &identity, (100_005, 100_006), Some((5, 6))),
            (
                &shifted,
                &other,
                (100_999, 100_000),
                Some((200_999, 200_000)),
            ),
            (&shifted, &other, (101_000, 100_000), Some((65534, 200_000))),
            // outside the old mappings: an error, except 0:0
            (&shifted, &other, (5, 100_000), None),
            (&shifted, &other, (0, 0), Some((200_000, 200_000))),
        ];
        for &(from, to, (u, g), want) in table {
            assert_eq!(mk(from, to).target(u, g), want, "{u}:{g}");
        }
    }

    #[test]
    fn v3_capability_rootid_is_shifted_and_v2_kept() {
        let identity = maps(&[]);
        let shifted = maps(&[(0, 100_000, 65536)]);
        let shift = Shift {
            from: &identity,
            to: &shifted,
            overflow_uid: 65534,
            overflow_gid: 65534,
            linked: HashMap::new(),
        };
        let mut v3 = vec![0u8; 24];
        v3[0..4].copy_from_slice(&0x0300_0001u32.to_le_bytes());
        v3[4] = 0x20;
        let mut want = v3.clone();
        want[20..24].copy_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(shift.capability(v3), want);
        let mut v2 = vec![0u8; 20];
        v2[0..4].copy_from_slice(&0x0200_0001u32.to_le_bytes());
        assert_eq!(shift.capability(v2.clone()), v2);
    }
}
