//! Store options and storage.conf as podman 4.3 (containers/storage 1.43) reads it for root:
//! `$CONTAINERS_STORAGE_CONF`, else `/etc/containers/storage.conf`, else
//! `/usr/share/containers/storage.conf`; `STORAGE_DRIVER` and `STORAGE_OPTS` overrides; an
//! empty driver means overlay when the kernel supports it, else vfs.

use std::path::{Path, PathBuf};

use podstore_layer::IdMap;

use crate::error::{Error, Result};

/// The default rootful graph root.
pub const DEFAULT_GRAPH_ROOT: &str = "/var/lib/containers/storage";
/// The default rootful run root.
pub const DEFAULT_RUN_ROOT: &str = "/run/containers/storage";

/// Where and how to open a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Persistent state (`graphroot`).
    pub graph_root: PathBuf,
    /// State that disappears at reboot (`runroot`).
    pub run_root: PathBuf,
    /// `overlay` or `vfs`; empty means auto-detect.
    pub driver_name: String,
    /// Driver options such as `overlay.mountopt=nodev`.
    pub driver_options: Vec<String>,
    /// Store-wide UID mapping (`remap-uids`); empty means identity.
    pub uid_map: Vec<IdMap>,
    /// Store-wide GID mapping (`remap-gids`); empty means identity.
    pub gid_map: Vec<IdMap>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            graph_root: PathBuf::from(DEFAULT_GRAPH_ROOT),
            run_root: PathBuf::from(DEFAULT_RUN_ROOT),
            driver_name: String::new(),
            driver_options: Vec::new(),
            uid_map: Vec::new(),
            gid_map: Vec::new(),
        }
    }
}

impl StoreOptions {
    /// Options for the given roots and driver, everything else default.
    pub fn new(graph_root: impl Into<PathBuf>, run_root: impl Into<PathBuf>, driver: &str) -> Self {
        StoreOptions {
            graph_root: graph_root.into(),
            run_root: run_root.into(),
            driver_name: driver.to_owned(),
            ..StoreOptions::default()
        }
    }

    /// The options podman would use: the storage.conf it would read (see the module docs),
    /// then the `STORAGE_DRIVER` / `STORAGE_OPTS` environment overrides.
    pub fn from_environment() -> Result<StoreOptions> {
        let path = config_path();
        let mut opts = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| Error::Config {
                    path: p.clone(),
                    reason: e.to_string(),
                })?;
                StoreOptions::from_toml(&text, p)?
            }
            None => StoreOptions::default(),
        };
        if let Ok(driver) = std::env::var("STORAGE_DRIVER")
            && !driver.is_empty()
        {
            opts.driver_name = driver;
        }
        if let Ok(o) = std::env::var("STORAGE_OPTS")
            && !o.is_empty()
        {
            opts.driver_options = o.split(',').map(str::to_owned).collect();
        }
        opts.driver_name = canonical_driver_name(&opts.driver_name);
        Ok(opts)
    }

    /// The storage.conf [`StoreOptions::from_environment`] reads: `$CONTAINERS_STORAGE_CONF`,
    /// else the first of `/etc/containers/storage.conf` and
    /// `/usr/share/containers/storage.conf` that exists; `None` when none does.
    pub fn config_file() -> Option<PathBuf> {
        config_path()
    }

    /// Parses storage.conf text (`path` is only used in errors). Unknown keys are ignored,
    /// as containers/storage only warns about them.
    pub fn from_toml(text: &str, path: &Path) -> Result<StoreOptions> {
        let err = |reason: String| Error::Config {
            path: path.to_path_buf(),
            reason,
        };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        let mut opts = StoreOptions::default();
        let Some(storage) = doc.get("storage") else {
            return Ok(opts);
        };
        let storage = storage
            .as_table()
            .ok_or_else(|| err("[storage] is not a table".into()))?;
        let get_str = |t: &toml::Table, k: &str| -> Result<Option<String>> {
            match t.get(k) {
                None => Ok(None),
                Some(toml::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(err(format!("{k} must be a string"))),
            }
        };
        if let Some(d) = get_str(storage, "driver")? {
            opts.driver_name = canonical_driver_name(&d);
        }
        if let Some(g) = get_str(storage, "graphroot")?.filter(|s| !s.is_empty()) {
            opts.graph_root = PathBuf::from(g);
        }
        if let Some(r) = get_str(storage, "runroot")?.filter(|s| !s.is_empty()) {
            opts.run_root = PathBuf::from(r);
        }
        if let Some(options) = storage.get("options").and_then(toml::Value::as_table) {
            // Generic fallbacks apply to the configured driver.
            let driver = if opts.driver_name.is_empty() {
                "overlay".to_owned()
            } else {
                opts.driver_name.clone()
            };
            for key in [
                "mount_program",
                "mountopt",
                "size",
                "skip_mount_home",
                "ignore_chown_errors",
                "force_mask",
            ] {
                if let Some(v) = options.get(key).and_then(scalar_string) {
                    opts.driver_options.push(format!("{driver}.{key}={v}"));
                }
            }
            if let Some(stores) = options
                .get("additionalimagestores")
                .and_then(toml::Value::as_array)
            {
                for s in stores.iter().filter_map(toml::Value::as_str) {
                    opts.driver_options.push(format!("{driver}.imagestore={s}"));
                }
            }
            for table_name in ["overlay", "vfs"] {
                if table_name != driver {
                    continue;
                }
                if let Some(t) = options.get(table_name).and_then(toml::Value::as_table) {
                    for (k, v) in t {
                        if let Some(v) = scalar_string(v) {
                            let key = format!("{table_name}.{k}=");
                            opts.driver_options.retain(|o| !o.starts_with(&key));
                            opts.driver_options.push(format!("{key}{v}"));
                        }
                    }
                }
            }
            opts.uid_map = parse_remap(options.get("remap-uids")).map_err(err)?;
            opts.gid_map = parse_remap(options.get("remap-gids")).map_err(err)?;
        }
        Ok(opts)
    }

    /// The driver to use: the configured one, else an existing `overlay` home in the graph
    /// root, else overlay when the kernel lists it in /proc/filesystems, else vfs.
    pub fn resolved_driver_name(&self) -> String {
        if !self.driver_name.is_empty() {
            return canonical_driver_name(&self.driver_name);
        }
        if self.graph_root.join("overlay").is_dir() {
            return "overlay".into();
        }
        if self.graph_root.join("vfs").is_dir() {
            return "vfs".into();
        }
        if kernel_has_overlay() {
            "overlay".into()
        } else {
            "vfs".into()
        }
    }
}

fn scalar_string(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) if !s.is_empty() => Some(s.clone()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `remap-uids = "0:1668442479:65536"` (container:host:size, several joined by commas).
fn parse_remap(v: Option<&toml::Value>) -> std::result::Result<Vec<IdMap>, String> {
    let Some(text) = v.and_then(toml::Value::as_str) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let nums: Vec<&str> = part.trim().split(':').collect();
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| format!("bad ID mapping {part:?}"))
        };
        match nums.as_slice() {
            [c, h, s] => out.push(IdMap {
                container_id: parse(c)?,
                host_id: parse(h)?,
                size: parse(s)?,
            }),
            _ => return Err(format!("bad ID mapping {part:?}")),
        }
    }
    Ok(out)
}

/// `overlay2` is an alias of `overlay`.
pub fn canonical_driver_name(name: &str) -> String {
    if name == "overlay2" {
        "overlay".into()
    } else {
        name.to_owned()
    }
}

fn config_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CONTAINERS_STORAGE_CONF")
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    [
        "/etc/containers/storage.conf",
        "/usr/share/containers/storage.conf",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn kernel_has_overlay() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_debian_shipped_file() {
        let text = r#"
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
[storage.options]
additionalimagestores = [
]
pull_options = {enable_partial_images = "false", use_hard_links = "false", ostree_repos=""}
[storage.options.overlay]
mountopt = "nodev"
[storage.options.thinpool]
"#;
        let o = StoreOptions::from_toml(text, Path::new("x")).unwrap();
        assert_eq!(o.driver_name, "overlay");
        assert_eq!(o.graph_root, PathBuf::from(DEFAULT_GRAPH_ROOT));
        assert_eq!(o.run_root, PathBuf::from(DEFAULT_RUN_ROOT));
        assert_eq!(o.driver_options, vec!["overlay.mountopt=nodev".to_owned()]);
    }

    #[test]
    fn table_of_configs() {
        let table: &[(&str, &str, &[&str], usize)] = &[
            ("", "", &[], 0),
            ("[storage]\ndriver=\"overlay2\"\n", "overlay", &[], 0),
            (
                "[storage]\ndriver=\"vfs\"\ngraphroot=\"/g\"\n[storage.options]\nignore_chown_errors=\"true\"\n[storage.options.vfs]\nignore_chown_errors=\"false\"\n",
                "vfs",
                &["vfs.ignore_chown_errors=false"],
                0,
            ),
            (
                "[storage]\ndriver=\"overlay\"\n[storage.options]\nmountopt=\"nodev,metacopy=on\"\nremap-uids=\"0:100000:65536\"\nremap-gids=\"0:100000:65536,65536:200000:10\"\n",
                "overlay",
                &["overlay.mountopt=nodev,metacopy=on"],
                1,
            ),
        ];
        for (text, driver, options, uid_maps) in table {
            let o = StoreOptions::from_toml(text, Path::new("x")).unwrap();
            assert_eq!(o.driver_name, *driver, "{text}");
            assert_eq!(
                o.driver_options,
                options.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "{text}"
            );
            assert_eq!(o.uid_map.len(), *uid_maps, "{text}");
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        for text in [
            "[storage",
            "[storage]\ndriver=5\n",
            "storage=1",
            "[storage.options]\nremap-uids=\"0:1\"\n",
        ] {
            assert!(
                StoreOptions::from_toml(text, Path::new("bad.conf")).is_err(),
                "{text}"
            );
        }
    }
}
