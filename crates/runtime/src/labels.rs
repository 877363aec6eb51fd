//! SELinux label options → the container's process and mount labels (go-selinux's
//! `InitLabels` for the targeted policy's container contexts), and whether this host has
//! SELinux at all.

use crate::error::{Result, RuntimeError};

/// The targeted policy's default container process context (without the MCS level).
const PROCESS_CONTEXT: [&str; 3] = ["system_u", "system_r", "container_t"];
/// The targeted policy's default container file context (without the MCS level).
const FILE_CONTEXT: [&str; 3] = ["system_u", "object_r", "container_file_t"];
/// Number of MCS categories (`c0`…`c1023`).
const CATEGORIES: u32 = 1024;

/// A container's SELinux labels ("" when SELinux is disabled).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// The process label.
    pub process_label: String,
    /// The mount label.
    pub mount_label: String,
}

/// Whether SELinux is enabled on this host (selinuxfs is mounted).
pub fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// Two distinct random MCS categories, lower first.
pub fn random_categories() -> (u32, u32) {
    let mut buf = [0u8; 8];
    // A getrandom failure leaves zeros, which still gives a valid (if predictable) pair.
    let _ = rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty());
    let a = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) % CATEGORIES;
    let mut b = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) % CATEGORIES;
    if a == b {
        b = (b + 1) % CATEGORIES;
    }
    (a.min(b), a.max(b))
}

/// Turns label options into labels. Every option is validated (also without SELinux, so a
/// typo is caught on any host): `disable`, or `user:`, `role:`, `type:`, `level:`,
/// `filetype:` followed by a value. Without SELinux both labels are "". With SELinux the
/// defaults are the container contexts at level `s0:c<a>,c<b>`; `user` and `level` apply to
/// both labels, `role` and `type` to the process label, `filetype` to the mount label, and
/// `disable` empties the process label (keeping the mount label).
pub fn labels_for(options: &[String], selinux: bool, categories: (u32, u32)) -> Result<Labels> {
    let level = format!("s0:c{},c{}", categories.0, categories.1);
    let mut process: [String; 4] = PROCESS_CONTEXT
        .iter()
        .map(|s| (*s).to_owned())
        .chain([level.clone()])
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_default();
    let mut mount: [String; 4] = FILE_CONTEXT
        .iter()
        .map(|s| (*s).to_owned())
        .chain([level])
        .collect::<Vec<_>>()
        .try_into()
        .unwrap_or_default();
    let mut disabled = false;
    for option in options {
        if option == "disable" {
            disabled = true;
            continue;
        }
        let bad = || RuntimeError::BadLabelOption {
            option: option.clone(),
        };
        let (key, value) = option.split_once(':').ok_or_else(bad)?;
        if value.is_empty() {
            return Err(bad());
        }
        match key {
            "user" => {
                process[0] = value.to_owned();
                mount[0] = value.to_owned();
            }
            "role" => process[1] = value.to_owned(),
            "type" => process[2] = value.to_owned(),
            "level" => {
                process[3] = value.to_owned();
                mount[3] = value.to_owned();
            }
            "filetype" => mount[2] = value.to_owned(),
            _ => return Err(bad()),
        }
    }
    if !selinux {
        return Ok(Labels::default());
    }
    Ok(Labels {
        process_label: if disabled {
            String::new()
        } else {
            process.join(":")
        },
        mount_label: mount.join(":"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn label_option_table() {
        // (options, selinux enabled, expected process label, expected mount label)
        let cases: &[(&[&str], bool, &str, &str)] = &[
            (&[], false, "", ""),
            (&["disable"], false, "", ""),
            (&["type:spc_t", "level:s0:c1,c2"], false, "", ""),
            (
                &[],
                true,
                "system_u:system_r:container_t:s0:c3,c7",
                "system_u:object_r:container_file_t:s0:c3,c7",
            ),
            (
                &["disable"],
                true,
                "",
                "system_u:object_r:container_file_t:s0:c3,c7",
            ),
            (
                &["user:u", "role:r", "type:t", "level:s0:c1,c2", "filetype:f"],
                true,
                "u:r:t:s0:c1,c2",
                "u:object_r:f:s0:c1,c2",
            ),
        ];
        for (options, selinux, process, mount) in cases {
            let labels = labels_for(&opts(options), *selinux, (3, 7)).unwrap();
            assert_eq!(labels.process_label, *process, "{options:?} {selinux}");
            assert_eq!(labels.mount_label, *mount, "{options:?} {selinux}");
        }
    }

    #[test]
    fn bad_label_options_are_errors_on_any_host() {
        for bad in ["mountLabel", "nonsense:x", "type:", "", "user"] {
            for selinux in [false, true] {
                let err = labels_for(&opts(&[bad]), selinux, (1, 2)).unwrap_err();
                assert!(
                    matches!(&err, RuntimeError::BadLabelOption { option } if option == bad),
                    "{bad}: {err}"
                );
            }
        }
    }

    #[test]
    fn random_categories_are_distinct_and_ordered() {
        for _ in 0..100 {
            let (a, b) = random_categories();
            assert!(a < b && b < CATEGORIES, "{a} {b}");
        }
    }
}
