//! The vfs driver (spec §5.8): `<home>/dir/<id>` holds a full copy of the parent's tree
//! (hardlinks, xattrs, devices, owners, modes and mtimes preserved) plus the layer's changes,
//! applied with naive whiteouts (real deletions). "Mounting" returns the directory.

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::apply::{WhiteoutFormat, apply_tar};
use crate::driver::{
    ApplyOptions, ApplyReport, CreateOptions, Driver, DriverError, IdMappings, MountOptions,
};
use crate::fsutil;
use crate::idshift::shift_tree;
use crate::overlay::{check_id, mkdir_exact, root_pair};

/// The vfs driver rooted at `<graphroot>/vfs`.
#[derive(Debug, Clone)]
pub struct Vfs {
    home: PathBuf,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DriverError {
    let path = path.to_path_buf();
    move |source| DriverError::Io { op, path, source }
}

impl Vfs {
    /// Opens (creating if needed) the vfs driver home and its `dir/` (0700).
    pub fn new(home: impl Into<PathBuf>) -> Result<Vfs, DriverError> {
        let home: PathBuf = home.into();
        let dirs = home.join("dir");
        if !dirs.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dirs)
                .map_err(io_err("mkdir", &dirs))?;
        }
        Ok(Vfs { home })
    }

    fn layer_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        check_id(id)?;
        Ok(self.home.join("dir").join(id))
    }

    fn existing_layer_dir(&self, id: &str) -> Result<PathBuf, DriverError> {
        let dir = self.layer_dir(id)?;
        if !dir.is_dir() {
            return Err(DriverError::NotFound {
                id: id.to_owned(),
                driver: "vfs",
            });
        }
        Ok(dir)
    }
}

impl Driver for Vfs {
    fn name(&self) -> &'static str {
        "vfs"
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
        let parent_dir = parent.map(|p| self.existing_layer_dir(p)).transpose()?;
        if fs::symlink_metadata(&dir).is_ok() {
            self.remove(id)?;
        }
        let root = root_pair(id, &opts.id_mappings)?;
        let result = (|| match &parent_dir {
            None => mkdir_exact(&dir, 0o555, Some(root)),
            Some(parent_dir) => {
                mkdir_exact(&dir, 0o700, Some(root))?;
                let src = fsutil::open_dir(parent_dir).map_err(io_err("open", parent_dir))?;
                let dst = fsutil::open_dir(&dir).map_err(io_err("open", &dir))?;
                fsutil::copy_tree(src.as_fd(), dst.as_fd())
                    .map_err(io_err("copy parent layer into", &dir))
            }
        })();
        if result.is_err() {
            let _ = self.remove(id);
        }
        result
    }

    fn apply_diff(
        &self,
        id: &str,
        _parent: Option<&str>,
        blob: &mut dyn Read,
        tar_split: &mut dyn Write,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, DriverError> {
        let dir = self.existing_layer_dir(id)?;
        apply_tar(&dir, blob, tar_split, WhiteoutFormat::Delete, opts).map_err(|source| {
            DriverError::Apply {
                id: id.to_owned(),
                source,
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn stage_diff(
        &self,
        id: &str,
        staging: &Path,
        parent: Option<&str>,
        blob: &mut dyn Read,
        tar_split: &mut dyn Write,
        create: &CreateOptions,
        opts: &ApplyOptions,
    ) -> Result<ApplyReport, DriverError> {
        check_id(id)?;
        let parent_dir = parent.map(|p| self.existing_layer_dir(p)).transpose()?;
        let root = root_pair(id, &create.id_mappings)?;
        match &parent_dir {
            None => mkdir_exact(staging, 0o555, Some(root))?,
            Some(parent_dir) => {
                mkdir_exact(staging, 0o700, Some(root))?;
                let src = fsutil::open_dir(parent_dir).map_err(io_err("open", parent_dir))?;
                let dst = fsutil::open_dir(staging).map_err(io_err("open", staging))?;
                fsutil::copy_tree(src.as_fd(), dst.as_fd())
                    .map_err(io_err("copy parent layer into", staging))?;
            }
        }
        apply_tar(staging, blob, tar_split, WhiteoutFormat::Delete, opts).map_err(|source| {
            DriverError::Apply {
                id: id.to_owned(),
                source,
            }
        })
    }

    fn staging_needs_parent(&self) -> bool {
        true
    }

    fn commit_staged(
        &self,
        id: &str,
        parent: Option<&str>,
        staging: &Path,
        _create: &CreateOptions,
    ) -> Result<(), DriverError> {
        let dir = self.layer_dir(id)?;
        if let Some(parent) = parent {
            self.existing_layer_dir(parent)?;
        }
        if fs::symlink_metadata(&dir).is_ok() {
            self.remove(id)?;
        }
        fs::rename(staging, &dir).map_err(io_err("rename staged layer to", &dir))
    }

    fn update_id_map(
        &self,
        id: &str,
        from: &IdMappings,
        to: &IdMappings,
        _mount_label: Option<&str>,
    ) -> Result<(), DriverError> {
        if from == to {
            return Ok(());
        }
        let dir = self.existing_layer_dir(id)?;
        let fd = fsutil::open_dir(&dir).map_err(io_err("open", &dir))?;
        shift_tree(fd.as_fd(), from, to)
            .map(|_| ())
            .map_err(|source| DriverError::IdShift {
                id: id.to_owned(),
                source,
            })
    }

    fn mount(&self, id: &str, opts: &MountOptions) -> Result<PathBuf, DriverError> {
        let dir = self.existing_layer_dir(id)?;
        let acceptable = match opts.options.as_slice() {
            [] => true,
            [only] => only == "ro",
            _ => false,
        };
        if !acceptable {
            return Err(DriverError::Invalid {
                id: id.to_owned(),
                reason: format!(
                    "vfs driver does not support mount options {:?}",
                    opts.options
                ),
            });
        }
        Ok(dir)
    }

    fn unmount(&self, id: &str) -> Result<(), DriverError> {
        self.existing_layer_dir(id).map(|_| ())
    }

    fn remove(&self, id: &str) -> Result<(), DriverError> {
        let dir = self.layer_dir(id)?;
        let parent = self.home.join("dir");
        let parent_fd = fsutil::open_dir(&parent).map_err(io_err("open", &parent))?;
        fsutil::remove_all_at(parent_fd.as_fd(), OsStr::new(id)).map_err(io_err("remove", &dir))
    }

    fn exists(&self, id: &str) -> bool {
        self.layer_dir(id).is_ok_and(|d| d.is_dir())
    }

    fn size(&self, id: &str) -> Result<u64, DriverError> {
        let dir = self.existing_layer_dir(id)?;
        let fd = fsutil::open_dir(&dir).map_err(io_err("open", &dir))?;
        fsutil::disk_usage(fd.as_fd()).map_err(io_err("measure", &dir))
    }

    fn lookup_dirs(&self, id: &str) -> Result<Vec<PathBuf>, DriverError> {
        Ok(vec![self.existing_layer_dir(id)?])
    }
}
