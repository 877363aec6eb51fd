//! The overlay driver home's private bind mount, as containers/storage's overlay driver keeps
//! it (spec §5, "Initialisation"): at driver init it calls `mount.MakePrivate(home)`, which
//! bind-mounts the home onto itself when it is not already a mount point (an exact match in
//! `/proc/self/mountinfo` after resolving symlinks) and then marks it `MS_PRIVATE`; its
//! `Cleanup` (run by `Store.Shutdown` when no layer is mounted) lazily unmounts the home when it
//! is a mount point.
//!
//! Why it matters: a layer mount made under a home that is *not* a mount point sits on the
//! parent filesystem's mount. When a containers/storage process (podman) later bind-mounts the
//! home over itself, that layer mount is covered: the path `…/merged` now resolves inside the
//! new bind mount, where nothing is mounted, so `umount` fails with `EINVAL` and `rmdir` with
//! `EBUSY`, while the overlay stays in the mount table. With the home already a private mount
//! point before the first layer mount, podman only re-marks it private and covers nothing;
//! private propagation also keeps layer mounts from being copied to peer mounts.
//!
//! This module also finds and removes such a covered mount (a store mounted by an older
//! podstore, or a home unmounted under live layer mounts).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{MountPropagationFlags, UnmountFlags};

/// What making the driver home private found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HomeMount {
    /// The home was not a mount point: it was bind-mounted onto itself and marked private.
    Bound,
    /// The home was already a mount point (bound by an earlier process, podman, or a separate
    /// filesystem): it was marked private.
    AlreadyMounted,
    /// The driver keeps no mount of its home (vfs; overlay with `skip_mount_home`).
    NotNeeded,
}

/// One line of `/proc/self/mountinfo`: the fields podstore uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountInfo {
    /// The mount's ID (field 1).
    pub id: u64,
    /// Its parent's mount ID (field 2).
    pub parent: u64,
    /// Where it is mounted (field 5), unescaped.
    pub mount_point: PathBuf,
}

/// Undoes the octal escapes (`\040` for a space…) of a mountinfo path.
pub(crate) fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let value = u32::from(bytes[i + 1] - b'0') * 64
                + u32::from(bytes[i + 2] - b'0') * 8
                + u32::from(bytes[i + 3] - b'0');
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; lines that do not have the fields are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let id = fields.next()?.parse().ok()?;
            let parent = fields.next()?.parse().ok()?;
            let mount_point = fields.nth(2)?;
            Some(MountInfo {
                id,
                parent,
                mount_point: PathBuf::from(unescape_mountinfo(mount_point)),
            })
        })
        .collect()
}

/// The calling process's mount table.
pub(crate) fn mount_table() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// `path` with symlinks resolved, as containers/storage's `Mounted` compares it.
fn resolved(path: &Path) -> io::Result<PathBuf> {
    fs::canonicalize(path)
}

/// Whether `path` is exactly the mount point of some mount (containers/storage's
/// `mount.Mounted`).
pub(crate) fn is_mount_point(path: &Path) -> io::Result<bool> {
    let path = resolved(path)?;
    Ok(mount_table()?.iter().any(|m| m.mount_point == path))
}

/// containers/storage's `mount.MakePrivate(home)`: bind-mounts `home` onto itself when it is
/// not a mount point, then marks it private.
pub(crate) fn make_private(home: &Path) -> io::Result<HomeMount> {
    let done = if is_mount_point(home)? {
        HomeMount::AlreadyMounted
    } else {
        rustix::mount::mount_bind(home, home)?;
        HomeMount::Bound
    };
    rustix::mount::mount_change(home, MountPropagationFlags::PRIVATE)?;
    Ok(done)
}

/// containers/storage's `mount.Unmount(home)`: a lazy unmount when `home` is a mount point.
/// Returns whether something was unmounted.
pub(crate) fn release(home: &Path) -> io::Result<bool> {
    match is_mount_point(home) {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    match rustix::mount::unmount(home, UnmountFlags::DETACH) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes a mount at `target` that a bind mount of `home` covers (see the module comment),
/// when nothing is mounted inside that bind mount of the home (detaching it then loses
/// nothing): the home's bind mount is detached, which uncovers `target`, `target` is
/// unmounted, and the home is made private again. Returns whether a covered mount was found
/// and removed; `false` when there is none or when the home's mount holds other mounts.
pub(crate) fn remove_covered_mount(home: &Path, target: &Path) -> io::Result<bool> {
    let home = resolved(home)?;
    let target = match resolved(target) {
        Ok(path) => path,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let table = mount_table()?;
    if !table.iter().any(|m| m.mount_point == target) {
        return Ok(false);
    }
    // The topmost mount of the home (the last one listed at that path).
    let Some(home_mount) = table.iter().rev().find(|m| m.mount_point == home) else {
        return Ok(false);
    };
    if table.iter().any(|m| m.parent == home_mount.id) {
        return Ok(false);
    }
    rustix::mount::unmount(&home, UnmountFlags::DETACH)?;
    let unmounted = match rustix::mount::unmount(&target, UnmountFlags::DETACH) {
        Ok(()) => Ok(true),
        Err(Errno::INVAL) | Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    };
    make_private(&home)?;
    unmounted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    64 27 254:0 /var/a\\040b/overlay /var/a\\040b/overlay rw - ext4 /dev/vda rw\n\
                    garbage\n";
        let table = parse_mountinfo(text);
        assert_eq!(
            table,
            vec![
                MountInfo {
                    id: 27,
                    parent: 1,
                    mount_point: PathBuf::from("/"),
                },
                MountInfo {
                    id: 64,
                    parent: 27,
                    mount_point: PathBuf::from("/var/a b/overlay"),
                },
            ]
        );
    }

    #[test]
    fn unescape_table() {
        for (input, want) in [
            ("/plain", "/plain"),
            ("/a\\040b", "/a b"),
            ("/tab\\011x", "/tab\tx"),
            ("/back\\134slash", "/back\\slash"),
            ("/short\\04", "/short\\04"),
            ("/not\\9octal", "/not\\9octal"),
        ] {
            assert_eq!(unescape_mountinfo(input), want, "{input}");
        }
    }
}
