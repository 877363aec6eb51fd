//! The overlay driver, laid out exactly like containers/storage 1.43 (spec §1.2, §1.3, §5):
//! `<home>/l/<LINK> -> ../<id>/diff`, `<id>/{link,lower,diff,work,merged,empty}`, the modes it
//! uses, and `.has-mount-program` = `false`. Diffs are applied natively into `diff/` with
//! kernel-format whiteouts; mounts use absolute `l/` lowerdirs, then, when the mount data
//! reaches a page, containers/storage's relative-path fallback, then the new mount API. The
//! home is made a private mount point before layers are mounted under it and released by
//! `cleanup` (module `home_mount`).

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::UnmountFlags;

use crate::apply::{WhiteoutFormat, apply_tar, map_id};
use crate::driver::{
    ApplyOptions, ApplyReport, CreateOptions, Driver, DriverError, IdMappings, MountOptions,
};
use crate::fsutil;
use crate::home_mount::{self, HomeMount};
use crate::idshift::shift_tree;
use crate::mount::{
    MountFailure, MountMethod, MountPolicy, OverlayMount, mount_overlay, parse_options,
};

/// Most lower layers a layer may have (containers/storage 1.43's `maxDepth`).
pub const MAX_DEPTH: usize = 128;
/// The directory of the home that holds layers being staged (containers/storage's name for its
/// own staging area, which its `check` leaves alone).
pub const STAGING_DIR: &str = "staging";

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Options of the overlay driver (from storage.conf).
#[derive(Debug, Clone, Default)]
pub struct OverlayOptions {
    /// `mountopt`: comma-separated options used when a mount passes none (the shipped
    /// storage.conf sets `nodev`).
    pub mountopt: String,
    /// Always mount with the new mount API (`fsopen`, `lowerdir+`), not only when the mount
    /// data would exceed a page. For tests of that path.
    pub force_new_mount_api: bool,
    /// Skip the absolute-path `mount(2)` and go straight to containers/storage 1.43's
    /// relative-path fallback (paths relative to the home, mounted from a thread whose
    /// private cwd is the home). For tests of that path.
    pub force_relative_mount: bool,
    /// Never fall back to the new mount API (unless `force_new_mount_api`): mount data that
    /// does not fit in a page even with relative paths is refused with
    /// [`DriverError::MountDataTooLarge`], as containers/storage 1.43 does.
    pub disable_new_mount_api: bool,
    /// `skip_mount_home`: never bind-mount the home onto itself nor mark it private in
    /// [`Driver::prepare_home`], and leave it alone in [`Driver::cleanup`].
    pub skip_mount_home: bool,
}

/// The overlay driver rooted at `<graphroot>/overlay`.
#[derive(Debug, Clone)]
pub struct Overlay {
    home: PathBuf,
    options: OverlayOptions,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let path = path.to_path_buf();
    move |source| DriverError::Io { op, path, source }
}

/// Refuses layer IDs that cannot name one directory.
pub(crate) fn check_id(id: &str) -> Result<(), DriverError> {
    if id.is_empty()
        || id == "."
        || id == ".."
        || id.contains('/')
        || id.contains('\0')
        || id.len() > 255
    {
        return Err(DriverError::InvalidId { id: id.to_owned() });
    }
    Ok(())
}

/// The host owner of the layer root under `maps`.
pub(crate) fn root_pair(id: &str, maps: &IdMappings) -> Result<(u32, u32), DriverError> {
    let uid = map_id(&maps.uid, 0);
    let gid = map_id(&maps.gid, 0);
    match (uid, gid) {
        (Some(uid), Some(gid)) => Ok((uid, gid)),
        _ => Err(DriverError::Invalid {
            id: id.to_owned(),
            reason: "the ID mappings do not map root".into(),
        }),
    }
}

/// `mkdir` with an exact mode (umask-proof) and owner.
pub(crate) fn mkdir_exact(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), DriverError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err("mkdir", path))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", path))
}

/// A fresh link ID: 17 random bytes, base32 (A–Z2–7), first 26 characters.
fn random_link_id() -> Result<String, DriverError> {
    let mut bytes = [0u8; 17];
    let mut filled = 0;
    while filled < bytes.len() {
        filled +=
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(|e| io_err("getrandom", Path::new("<random>"))(e.into()))?;
    }
    let mut out = String::with_capacity(28);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for byte in bytes {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((acc >> bits) & 31) as usize]));
        }
    }
    out.truncate(26);
    Ok(out)
}

impl Overlay {
    /// Opens (creating if needed) the overlay driver home: `home` 0700, `l/` 0755, and
    /// `.has-mount-program` containing `false` (0600).
    pub fn new(home: impl Into<PathBuf>, options: OverlayOptions) -> Result<Overlay, DriverError> {
        let home: PathBuf = home.into();
        if !home.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&home)
                .map_err(io_err("mkdir", &home))?;
        }
        let links = home.join("l");
        if !links.is_dir() {
            mkdir_exact(&links, 0o755, Some((0, 0)))?;
        }
        let marker = home.join(".has-mount-program");
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)
            .map_err(io_err("create", &marker))?;
        file.write_all(b"false").map_err(io_err("write", &marker))?;
        Ok(Overlay { home, options })
    }

    fn layer_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        check_id(id)?;
        Ok(self.home.join(id))
    }

    fn existing_layer_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        let dir = self.layer_dir(id)?;
        if !dir.is_dir() {
            return Err(DriverError::NotFound {
                id: id.to_owned(),
                driver: "overlay",
            });
        }
        Ok(dir)
    }

    /// The layer's link ID (`<id>/link`).
    pub fn link_id(&self, id: &str) -> Result<String, DriverError> {
        let path = self.existing_layer_dir(id)?.join("link");
        let link = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        Ok(link.trim().to_owned())
    }

    /// The layer's `lower` entries (`l/<LINK>`, nearest first); empty for a base layer.
    pub fn lower_entries(&self, id: &str) -> Result<Vec<String>, DriverError> {
        let path = self.existing_layer_dir(id)?.join("lower");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .trim()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Mounts the layer like [`Driver::mount`] and also says which method was used: absolute
    /// `l/` lowerdirs when the mount data fits in a page, else containers/storage 1.43's
    /// relative-path fallback, else the new mount API (spec §5.3; see [`OverlayOptions`] for
    /// the switches). Fails with [`DriverError::MountDataTooLarge`] when no method fits.
    pub fn mount_with_method(
        &self,
        id: &str,
        opts: &MountOptions,
    ) -> Result<(PathBuf, MountMethod), DriverError> {
        let dir = self.existing_layer_dir(id)?;
        let mut options: Vec<String> = if opts.options.is_empty() {
            self.options
                .mountopt
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            opts.options.clone()
        };
        if opts.read_only && !options.iter().any(|o| o == "ro") {
            options.push("ro".into());
        }
        let read_only = options.iter().any(|o| o == "ro");
        // paths relative to the home; `mount_overlay` roots them for the absolute methods
        let mut lowers = Vec::new();
        for entry in self.lower_entries(id)? {
            let path = self.home.join(&entry);
            if fs::symlink_metadata(&path).is_err() {
                return Err(DriverError::Io {
                    op: "find lower layer",
                    path,
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            lowers.push(PathBuf::from(entry));
        }
        let id_dir = PathBuf::from(id);
        if lowers.is_empty() {
            lowers.push(id_dir.join("empty"));
        }
        let upper_work = if read_only {
            lowers.insert(0, id_dir.join("diff"));
            None
        } else {
            Some((id_dir.join("diff"), id_dir.join("work")))
        };
        let merged = dir.join("merged");
        if !merged.is_dir() {
            mkdir_exact(&merged, 0o700, None)?;
        }
        let mount = OverlayMount {
            lowers,
            upper_work,
            options: parse_options(&options),
            label: opts.mount_label.clone().filter(|l| !l.is_empty()),
        };
        let policy = MountPolicy {
            force_new_api: self.options.force_new_mount_api,
            force_relative: self.options.force_relative_mount,
            disable_new_api: self.options.disable_new_mount_api,
        };
        match mount_overlay(&self.home, &mount, &id_dir.join("merged"), policy) {
            Ok(method) => Ok((merged, method)),
            Err(MountFailure::TooLarge { length, page_size }) => {
                Err(DriverError::MountDataTooLarge {
                    id: id.to_owned(),
                    length,
                    page_size,
                })
            }
            Err(MountFailure::Os { data, source }) => Err(DriverError::Mount {
                id: id.to_owned(),
                target: merged,
                data,
                source,
            }),
        }
    }

    /// The mode and owner a new layer's `diff/` gets: 0555 and the mapped root for a base
    /// layer, else the parent `diff/`'s mode and the parent directory's owner.
    fn diff_mode_owner(
        &self,
        parent: Option<&str>,
        root: (u32, u32),
    ) -> Result<(u32, (u32, u32)), DriverError> {
        match parent {
            None => Ok((0o555, root)),
            Some(parent) => {
                let parent_dir = self.existing_layer_dir(parent)?;
                let parent_diff = parent_dir.join("diff");
                let mode = fs::metadata(&parent_diff)
                    .map_err(io_err("stat", &parent_diff))?
                    .mode()
                    & 0o7777;
                let owner = fs::metadata(&parent_dir).map_err(io_err("stat", &parent_dir))?;
                Ok((mode, (owner.uid(), owner.gid())))
            }
        }
    }

    /// Creates the layer directory `dir`; its `diff/` is either made empty or, with
    /// `staged_diff`, that directory renamed into place (after giving it the mode and owner an
    /// empty one would have: the applier never changes the layer root's).
    fn create_inner(
        &self,
        id: &str,
        dir: &Path,
        parent: Option<&str>,
        opts: &CreateOptions,
        staged_diff: Option<&Path>,
    ) -> Result<(), DriverError> {
        let root = root_pair(id, &opts.id_mappings)?;
        let (diff_mode, diff_owner) = self.diff_mode_owner(parent, root)?;
        mkdir_exact(dir, 0o700, Some(root))?;
        let diff = dir.join("diff");
        match staged_diff {
            None => mkdir_exact(&diff, diff_mode, Some(diff_owner))?,
            Some(staged) => {
                std::os::unix::fs::chown(staged, Some(diff_owner.0), Some(diff_owner.1))
                    .map_err(io_err("chown", staged))?;
                fs::set_permissions(staged, fs::Permissions::from_mode(diff_mode))
                    .map_err(io_err("chmod", staged))?;
                fs::rename(staged, &diff).map_err(io_err("rename staged diff to", &diff))?;
            }
        }
        let link = random_link_id()?;
        let link_path = self.home.join("l").join(&link);
        std::os::unix::fs::symlink(format!("../{id}/diff"), &link_path)
            .map_err(io_err("symlink", &link_path))?;
        let link_file = dir.join("link");
        write_file(&link_file, link.as_bytes(), 0o644)?;
        mkdir_exact(&dir.join("work"), 0o700, Some(root))?;
        mkdir_exact(&dir.join("merged"), 0o700, Some(root))?;
        match parent {
            None => mkdir_exact(&dir.join("empty"), 0o700, Some(root))?,
            Some(parent) => {
                let mut lowers = vec![format!("l/{}", self.link_id(parent)?)];
                lowers.extend(self.lower_entries(parent)?);
                if lowers.len() > MAX_DEPTH {
                    return Err(DriverError::Invalid {
                        id: id.to_owned(),
                        reason: "max depth exceeded".into(),
                    });
                }
                write_file(&dir.join("lower"), lowers.join(":").as_bytes(), 0o666)?;
            }
        }
        Ok(())
    }
}

/// Creates a file with `mode` (less the umask, as containers/storage's `WriteFile`).
fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), DriverError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(content).map_err(io_err("write", path))
}

impl Driver for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn home(&self) -> &Path {
        &self.home
    }

    fn create(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOptions,
    ) -> Result<(), DriverError> {
        let dir = self.layer_dir(id)?;
        if let Some(parent) = parent {
            self.existing_layer_dir(parent)?;
        }
        let links = self.home.join("l");
        if !links.is_dir() {
            mkdir_exact(&links, 0o755, Some((0, 0)))?;
        }
        if dir.exists() {
            self.remove(id)?;
        }
        let result = self.create_inner(id, &dir, parent, opts, None);
        if result.is_err() {
            let _ = self.remove(id);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_diff(
        &self,
        id: &str,
        staging: &Path,
        _parent: Option<&str>,
        blob: &mut dyn Read,
        tar_split: &mut dyn Write,
        create: &CreateOptions,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, DriverError> {
        check_id(id)?;
        let root = root_pair(id, &create.id_mappings)?;
        mkdir_exact(staging, 0o700, Some(root))?;
        let diff = staging.join("diff");
        mkdir_exact(&diff, 0o555, Some(root))?;
        apply_tar(&diff, blob, tar_split, WhiteoutFormat::Overlay, opts).map_err(|source| {
            DriverError::Apply {
                id: id.to_owned(),
                source,
            }
        })
    }

    fn staging_needs_parent(&self) -> bool {
        false
    }

    fn staging_parent(&self) -> Option<PathBuf> {
        Some(self.home.join(STAGING_DIR))
    }

    fn commit_staged(
        &self,
        id: &str,
        parent: Option<&str>,
        staging: &Path,
        create: &CreateOptions,
    ) -> Result<(), DriverError> {
        let dir = self.layer_dir(id)?;
        if let Some(parent) = parent {
            self.existing_layer_dir(parent)?;
        }
        let links = self.home.join("l");
        if !links.is_dir() {
            mkdir_exact(&links, 0o755, Some((0, 0)))?;
        }
        if dir.exists() {
            self.remove(id)?;
        }
        let result = self.create_inner(id, &dir, parent, create, Some(&staging.join("diff")));
        if result.is_err() {
            let _ = self.remove(id);
            return result;
        }
        fs::remove_dir(staging).map_err(io_err("remove staging directory", staging))
    }

    fn apply_diff(
        &self,
        id: &str,
        _parent: Option<&str>,
        blob: &mut dyn Read,
        tar_split: &mut dyn Write,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, DriverError> {
        let diff = self.existing_layer_dir(id)?.join("diff");
        apply_tar(&diff, blob, tar_split, WhiteoutFormat::Overlay, opts).map_err(|source| {
            DriverError::Apply {
                id: id.to_owned(),
                source,
            }
        })
    }

    fn update_id_map(
        &self,
        id: &str,
        from: &IdMappings,
        to: &IdMappings,
        mount_label: Option<&str>,
    ) -> Result<(), DriverError> {
        if from == to {
            return Ok(());
        }
        // Chowning through the read-write mount copies every file up into this layer's
        // `diff/`, so the lower layers stay untouched (containers/storage does the same).
        let merged = self.mount(
            id,
            &MountOptions {
                mount_label: mount_label.map(str::to_owned),
                ..MountOptions::default()
            },
        )?;
        let shifted = fsutil::open_dir(&merged)
            .map_err(io_err("open", &merged))
            .and_then(|fd| {
                shift_tree(fd.as_fd(), from, to).map_err(|source| DriverError::IdShift {
                    id: id.to_owned(),
                    source,
                })
            });
        let unmounted = self.unmount(id);
        shifted?;
        unmounted
    }

    fn mount(&self, id: &str, opts: &MountOptions) -> Result<PathBuf, DriverError> {
        self.mount_with_method(id, opts).map(|(merged, _)| merged)
    }

    fn unmount(&self, id: &str) -> Result<(), DriverError> {
        let merged = self.existing_layer_dir(id)?.join("merged");
        match rustix::mount::unmount(&merged, UnmountFlags::DETACH) {
            Ok(()) | Err(Errno::INVAL) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err("unmount", &merged)(e.into())),
        }
        match fs::remove_dir(&merged) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // `merged` is still a mount point, but not one this path reaches: the layer was
            // mounted while the home was not a mount point, and a bind mount of the home made
            // since (podman's driver init) covers it. Uncover and unmount it, then retry.
            Err(e) if e.raw_os_error() == Some(Errno::BUSY.raw_os_error()) => {
                let removed = home_mount::remove_covered_mount(&self.home, &merged)
                    .map_err(io_err("unmount covered mount", &merged))?;
                if !removed {
                    return Err(io_err("rmdir", &merged)(e));
                }
                fs::remove_dir(&merged).map_err(io_err("rmdir", &merged))
            }
            Err(e) => Err(io_err("rmdir", &merged)(e)),
        }
    }

    fn prepare_home(&self) -> Result<HomeMount, DriverError> {
        if self.options.skip_mount_home {
            return Ok(HomeMount::NotNeeded);
        }
        home_mount::make_private(&self.home).map_err(io_err("make private mount", &self.home))
    }

    fn cleanup(&self) -> Result<bool, DriverError> {
        if self.options.skip_mount_home {
            return Ok(false);
        }
        home_mount::release(&self.home).map_err(io_err("unmount", &self.home))
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.layer_dir(id)?;
        if fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        if let Ok(link) = fs::read_to_string(dir.join("link")) {
            let link = link.trim();
            if !link.is_empty() && !link.contains('/') && link != "." && link != ".." {
                let link_path = self.home.join("l").join(link);
                if fs::read_link(&link_path).is_ok_and(|t| t == Path::new(&format!("../{id}/diff")))
                {
                    fs::remove_file(&link_path).map_err(io_err("remove", &link_path))?;
                }
            }
        }
        let _ = rustix::mount::unmount(dir.join("merged"), UnmountFlags::DETACH);
        let home = fsutil::open_dir(&self.home).map_err(io_err("open", &self.home))?;
        fsutil::remove_all_at(home.as_fd(), std::ffi::OsStr::new(id))
            .map_err(io_err("remove", &dir))
    }

    fn exists(&self, id: &str) -> bool {
        self.layer_dir(id).is_ok_and(|d| d.is_dir())
    }

    fn size(&self, id: &str) -> Result<u64, DriverError> {
        let diff = self.existing_layer_dir(id)?.join("diff");
        let fd = fsutil::open_dir(&diff).map_err(io_err("open", &diff))?;
        fsutil::disk_usage(fd.as_fd()).map_err(io_err("measure", &diff))
    }

    fn lookup_dirs(&self, id: &str) -> Result<Vec<PathBuf>, DriverError> {
        let mut dirs = vec![self.existing_layer_dir(id)?.join("diff")];
        for entry in self.lower_entries(id)? {
            let link = self.home.join(&entry);
            let target = fs::read_link(&link).map_err(io_err("readlink", &link))?;
            let resolved = match target.strip_prefix("..") {
                Ok(rest) => self.home.join(rest),
                Err(_) => link.parent().unwrap_or(&self.home).join(target),
            };
            dirs.push(resolved);
        }
        Ok(dirs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_are_26_base32_chars() {
        let a = random_link_id().unwrap();
        let b = random_link_id().unwrap();
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|c| BASE32.contains(&c)), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn layer_ids_checked() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id(&"ab".repeat(32)).is_ok());
    }
}
