//! Overlay mounting: splitting mount options into flags and data as containers/storage's
//! `ParseOptions` does, building the overlay mount data, and mounting either with `mount(2)` or,
//! when the data would not fit in a page, with the new mount API (`fsopen` + `lowerdir+`, one
//! lower at a time; kernel ≥ 6.8).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
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

/// One overlay mount to perform.
#[derive(Debug, Clone)]
pub(crate) struct OverlayMount {
    /// Lower directories, nearest first (absolute).
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

    /// Mounts on `target`, with `mount(2)` when the data fits in a page and with the new mount
    /// API otherwise (or when `force_new_api`).
    pub fn mount(&self, target: &Path, force_new_api: bool) -> io::Result<()> {
        let data = self.data();
        if !force_new_api && data.len() < rustix::param::page_size() {
            let data =
                CString::new(data).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            rustix::mount::mount(
                "overlay",
                target,
                "overlay",
                self.options.flags,
                data.as_c_str(),
            )?;
            return Ok(());
        }
        self.mount_new_api(target)
    }

    fn mount_new_api(&self, target: &Path) -> io::Result<()> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        for lower in &self.lowers {
            fsconfig_set_string(&fs, "lowerdir+", lower.as_path())?;
        }
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
}
