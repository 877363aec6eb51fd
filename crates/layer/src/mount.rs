//! Overlay mounting: splitting mount options into flags and data as containers/storage's
//! `ParseOptions` does, building the overlay mount data, and choosing how to mount (spec §5.3):
//! `mount(2)` with absolute paths; when that data reaches a page, containers/storage 1.43's
//! fallback of relative paths mounted from the driver home (on a thread with a private cwd,
//! see [`crate::fs_namespace`]); when even that does not fit, the new mount API (`fsopen` +
//! `lowerdir+`, one lower at a time; kernel ≥ 6.8).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use std::os::fd::OwnedFd;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, fsconfig_create,
    fsconfig_set_flag, fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// Mount options split into kernel flags and the remaining data words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedOptions {
    pub flags: MountFlags,
    pub data: Vec<String>,
}

/// Splits options like containers/storage's `mount.ParseOptions`: flag words become mount
/// flags (later words win), everything else stays data.
pub(crate) fn parse_options(options: &[String]) -> ParsedOptions {
    let mut parsed = ParsedOptions {
        flags: MountFlags::empty(),
        data: Vec::new(),
    };
    for option in options.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        let (set, clear) = match option {
            "defaults" => (MountFlags::empty(), MountFlags::empty()),
            "ro" => (MountFlags::RDONLY, MountFlags::empty()),
            "rw" => (MountFlags::empty(), MountFlags::RDONLY),
            "nosuid" => (MountFlags::NOSUID, MountFlags::empty()),
            "suid" => (MountFlags::empty(), MountFlags::NOSUID),
            "nodev" => (MountFlags::NODEV, MountFlags::empty()),
            "dev" => (MountFlags::empty(), MountFlags::NODEV),
            "noexec" => (MountFlags::NOEXEC, MountFlags::empty()),
            "exec" => (MountFlags::empty(), MountFlags::NOEXEC),
            "sync" => (MountFlags::SYNCHRONOUS, MountFlags::empty()),
            "async" => (MountFlags::empty(), MountFlags::SYNCHRONOUS),
            "dirsync" => (MountFlags::DIRSYNC, MountFlags::empty()),
            "noatime" => (MountFlags::NOATIME, MountFlags::empty()),
            "atime" => (MountFlags::empty(), MountFlags::NOATIME),
            "nodiratime" => (MountFlags::NODIRATIME, MountFlags::empty()),
            "diratime" => (MountFlags::empty(), MountFlags::NODIRATIME),
            "relatime" => (MountFlags::RELATIME, MountFlags::empty()),
            "norelatime" => (MountFlags::empty(), MountFlags::RELATIME),
            "strictatime" => (MountFlags::STRICTATIME, MountFlags::empty()),
            "nostrictatime" => (MountFlags::empty(), MountFlags::STRICTATIME),
            data => {
                parsed.data.push(data.to_owned());
                continue;
            }
        };
        parsed.flags = (parsed.flags | set) & !clear;
    }
    parsed
}

/// How an overlay layer was mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MountMethod {
    /// `mount(2)` with absolute `l/` lowerdirs (the data fits in a page).
    Absolute,
    /// containers/storage 1.43's fallback: `mount(2)` with paths relative to the driver home,
    /// issued from a thread whose private cwd is the home.
    Relative,
    /// The new mount API (`fsopen`, `fsconfig` `lowerdir+`, `fsmount`, `move_mount`).
    NewApi,
}

/// Which mount methods may be used, from the driver options.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MountPolicy {
    /// Always use the new mount API.
    pub force_new_api: bool,
    /// Skip the absolute-path attempt and use the relative-path fallback.
    pub force_relative: bool,
    /// Never use the new mount API unless forced.
    pub disable_new_api: bool,
}

/// Why [`mount_overlay`] failed.
#[derive(Debug)]
pub(crate) enum MountFailure {
    /// Even the relative data reaches a page, and the new mount API is disabled or missing.
    TooLarge {
        /// Length of the relative-path data.
        length: usize,
        /// The page size.
        page_size: usize,
    },
    /// A system call failed.
    Os {
        /// The data (or, for the new API, the equivalent data string) that was passed.
        data: String,
        /// The OS error.
        source: io::Error,
    },
}

enum NewApiError {
    /// `fsopen` or `lowerdir+` is not supported by this kernel.
    Unsupported,
    Failed(io::Error),
}

/// Mounts `relative` (lowers, upper and work relative to `home`) on `home/target` with the
/// first method of containers/storage 1.43's order that fits (see [`MountMethod`]).
pub(crate) fn mount_overlay(
    home: &Path,
    relative: &OverlayMount,
    target: &Path,
    policy: MountPolicy,
) -> Result<MountMethod, MountFailure> {
    let page_size = rustix::param::page_size();
    let absolute = relative.rooted_at(home);
    let absolute_target = home.join(target);
    let new_api = |absolute: &OverlayMount| {
        absolute
            .mount_new_api(&absolute_target)
            .map(|()| MountMethod::NewApi)
    };
    let os = |data: String| move |source: io::Error| MountFailure::Os { data, source };
    if policy.force_new_api {
        return new_api(&absolute).map_err(|e| MountFailure::Os {
            data: absolute.data(),
            source: match e {
                NewApiError::Unsupported => Errno::NOSYS.into(),
                NewApiError::Failed(e) => e,
            },
        });
    }
    if !policy.force_relative {
        let data = absolute.data();
        if data.len() < page_size {
            return absolute
                .mount_classic(data.clone(), &absolute_target)
                .map(|()| MountMethod::Absolute)
                .map_err(os(data));
        }
    }
    let data = relative.data();
    if data.len() < page_size {
        let home_fd = rustix::fs::open(
            home,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| os(data.clone())(e.into()))?;
        let (thread_data, thread_target) = (data.clone(), target.to_path_buf());
        return crate::fs_namespace::with_private_cwd(home_fd, move || {
            relative.mount_classic(thread_data, &thread_target)
        })
        .map(|()| MountMethod::Relative)
        .map_err(os(data));
    }
    if policy.disable_new_api {
        return Err(MountFailure::TooLarge {
            length: data.len(),
            page_size,
        });
    }
    new_api(&absolute).map_err(|e| match e {
        NewApiError::Unsupported => MountFailure::TooLarge {
            length: data.len(),
            page_size,
        },
        NewApiError::Failed(source) => MountFailure::Os {
            data: absolute.data(),
            source,
        },
    })
}

/// One overlay mount to perform.
#[derive(Debug, Clone)]
pub(crate) struct OverlayMount {
    /// Lower directories, nearest first (absolute, or relative to the driver home).
    pub lowers: Vec<PathBuf>,
    /// Upper and work directories for a read-write mount.
    pub upper_work: Option<(PathBuf, PathBuf)>,
    /// Options after [`parse_options`].
    pub options: ParsedOptions,
    /// SELinux label (`context="…"`).
    pub label: Option<String>,
}

impl OverlayMount {
    /// The classic `mount(2)` data string, as containers/storage builds it.
    pub fn data(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut data = format!("lowerdir={}", lowers.join(":"));
        if let Some((upper, work)) = &self.upper_work {
            data.push_str(&format!(
                ",upperdir={},workdir={}",
                upper.display(),
                work.display()
            ));
        }
        for word in &self.options.data {
            data.push(',');
            data.push_str(word);
        }
        if let Some(label) = &self.label {
            data.push_str(&format!(",context=\"{label}\""));
        }
        data
    }

    /// The same mount with every lower, upper and work path joined onto `home` (paths that
    /// are already absolute stay as they are).
    pub fn rooted_at(&self, home: &Path) -> OverlayMount {
        OverlayMount {
            lowers: self.lowers.iter().map(|p| home.join(p)).collect(),
            upper_work: self
                .upper_work
                .as_ref()
                .map(|(upper, work)| (home.join(upper), home.join(work))),
            options: self.options.clone(),
            label: self.label.clone(),
        }
    }

    fn mount_classic(&self, data: String, target: &Path) -> io::Result<()> {
        let data = CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        rustix::mount::mount(
            "overlay",
            target,
            "overlay",
            self.options.flags,
            data.as_c_str(),
        )?;
        Ok(())
    }

    fn mount_new_api(&self, target: &Path) -> Result<(), NewApiError> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| match e {
            Errno::NOSYS => NewApiError::Unsupported,
            e => NewApiError::Failed(e.into()),
        })?;
        for (index, lower) in self.lowers.iter().enumerate() {
            // kernels before 6.8 do not know `lowerdir+` and answer EINVAL
            fsconfig_set_string(&fs, "lowerdir+", lower.as_path()).map_err(|e| match e {
                Errno::INVAL if index == 0 => NewApiError::Unsupported,
                e => NewApiError::Failed(e.into()),
            })?;
        }
        self.mount_new_api_rest(fs, target)
            .map_err(NewApiError::Failed)
    }

    fn mount_new_api_rest(&self, fs: OwnedFd, target: &Path) -> io::Result<()> {
        if let Some((upper, work)) = &self.upper_work {
            fsconfig_set_string(&fs, "upperdir", upper.as_path())?;
            fsconfig_set_string(&fs, "workdir", work.as_path())?;
        }
        for word in &self.options.data {
            match word.split_once('=') {
                Some((key, value)) => fsconfig_set_string(&fs, key, value)?,
                None => fsconfig_set_flag(&fs, word.as_str())?,
            }
        }
        if let Some(label) = &self.label {
            fsconfig_set_string(&fs, "context", label.as_str())?;
        }
        let flags = self.options.flags;
        if flags.contains(MountFlags::RDONLY) {
            fsconfig_set_flag(&fs, "ro")?;
        }
        fsconfig_create(&fs)?;
        let mut attrs = MountAttrFlags::empty();
        for (flag, attr) in [
            (MountFlags::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
            (MountFlags::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
            (MountFlags::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
            (MountFlags::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
            (MountFlags::NOATIME, MountAttrFlags::MOUNT_ATTR_NOATIME),
            (
                MountFlags::STRICTATIME,
                MountAttrFlags::MOUNT_ATTR_STRICTATIME,
            ),
            (
                MountFlags::NODIRATIME,
                MountAttrFlags::MOUNT_ATTR_NODIRATIME,
            ),
        ] {
            if flags.contains(flag) {
                attrs |= attr;
            }
        }
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)?;
        move_mount(
            &mnt,
            "",
            CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_parsing() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let table: Vec<(Vec<String>, MountFlags, Vec<String>)> = vec![
            (s(&["nodev"]), MountFlags::NODEV, vec![]),
            (
                s(&["nodev", "metacopy=on", "ro"]),
                MountFlags::NODEV | MountFlags::RDONLY,
                s(&["metacopy=on"]),
            ),
            (s(&["ro", "rw"]), MountFlags::empty(), vec![]),
            (
                s(&["", " noexec ", "index=off"]),
                MountFlags::NOEXEC,
                s(&["index=off"]),
            ),
        ];
        for (input, flags, data) in table {
            let parsed = parse_options(&input);
            assert_eq!(parsed.flags, flags, "{input:?}");
            assert_eq!(parsed.data, data, "{input:?}");
        }
    }

    #[test]
    fn mount_data_like_containers_storage() {
        let m = OverlayMount {
            lowers: vec!["/h/l/AAA".into(), "/h/l/BBB".into()],
            upper_work: Some(("/h/id/diff".into(), "/h/id/work".into())),
            options: parse_options(&["nodev".into(), "metacopy=on".into()]),
            label: Some("system_u:object_r:container_file_t:s0:c1,c2".into()),
        };
        assert_eq!(
            m.data(),
            "lowerdir=/h/l/AAA:/h/l/BBB,upperdir=/h/id/diff,workdir=/h/id/work,metacopy=on,\
             context=\"system_u:object_r:container_file_t:s0:c1,c2\""
        );
    }

    #[test]
    fn relative_data_and_rooting_like_containers_storage() {
        let relative = OverlayMount {
            lowers: vec!["l/AAA".into(), "l/BBB".into()],
            upper_work: Some(("id/diff".into(), "id/work".into())),
            options: parse_options(&["nodev".into()]),
            label: None,
        };
        assert_eq!(
            relative.data(),
            "lowerdir=l/AAA:l/BBB,upperdir=id/diff,workdir=id/work"
        );
        assert_eq!(
            relative.rooted_at(Path::new("/h")).data(),
            "lowerdir=/h/l/AAA:/h/l/BBB,upperdir=/h/id/diff,workdir=/h/id/work"
        );
    }
}
