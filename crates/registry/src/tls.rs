//! Per-registry TLS material from certs.d directories (spec §3.2): `*.crt` CA certificates added
//! to the roots, `X.cert` + `X.key` client identities.

use std::path::{Path, PathBuf};

use crate::error::{RegistryError, Result};

/// Where to find a registry's certificate directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertDirs {
    /// `<root>/<host[:port]>` for each root in order; the first existing directory wins.
    PerHost(Vec<PathBuf>),
    /// One fixed directory for every registry (skopeo's `--cert-dir`).
    Fixed(PathBuf),
}

impl Default for CertDirs {
    /// `$HOME/.config/containers/certs.d`, `/etc/containers/certs.d`, `/etc/docker/certs.d`.
    fn default() -> CertDirs {
        let mut roots = Vec::new();
        if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            roots.push(PathBuf::from(home).join(".config/containers/certs.d"));
        }
        roots.push(PathBuf::from("/etc/containers/certs.d"));
        roots.push(PathBuf::from("/etc/docker/certs.d"));
        CertDirs::PerHost(roots)
    }
}

/// TLS material loaded for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsMaterial {
    /// The directory it came from, if any.
    pub dir: Option<PathBuf>,
    /// PEM CA certificates to add to the roots.
    pub ca_pems: Vec<Vec<u8>>,
    /// PEM client certificate followed by its key (the first pair, in name order).
    pub identity_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("dir", &self.dir)
            .field("ca_certificates", &self.ca_pems.len())
            .field("client_identity", &self.identity_pem.is_some())
            .finish()
    }
}

impl CertDirs {
    /// The directory for `host` (`host[:port]` as written in the reference), if one exists.
    pub fn dir_for(&self, host: &str) -> Option<PathBuf> {
        match self {
            CertDirs::Fixed(d) => Some(d.clone()),
            CertDirs::PerHost(roots) => roots.iter().map(|r| r.join(host)).find(|d| d.is_dir()),
        }
    }

    /// Loads the material for `host`. A missing or unreadable directory gives empty material;
    /// a `.cert` without its `.key` (or the reverse), or an unreadable file, is an error.
    pub fn load(&self, host: &str) -> Result<TlsMaterial> {
        match self.dir_for(host) {
            Some(dir) => load_dir(&dir, host),
            None => Ok(TlsMaterial::default()),
        }
    }
}

fn load_dir(dir: &Path, host: &str) -> Result<TlsMaterial> {
    let tls_err = |message: String| RegistryError::Tls {
        registry: host.to_owned(),
        message,
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(TlsMaterial::default());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| tls_err(format!("reading {}: {e}", dir.join(name).display())))
    };
    let mut material = TlsMaterial {
        dir: Some(dir.to_owned()),
        ..TlsMaterial::default()
    };
    for name in &names {
        if name.ends_with(".crt") {
            material.ca_pems.push(read(name)?);
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = format!("{stem}.key");
            if !names.contains(&key) {
                return Err(tls_err(format!(
                    "missing key {key} for client certificate {name} in {}. Note that CA certificates should use the extension .crt",
                    dir.display()
                )));
            }
            if material.identity_pem.is_none() {
                let mut pem = read(name)?;
                pem.push(b'\n');
                pem.extend(read(&key)?);
                material.identity_pem = Some(pem);
            }
        } else if let Some(stem) = name.strip_suffix(".key") {
            let cert = format!("{stem}.cert");
            if !names.contains(&cert) {
                return Err(tls_err(format!(
                    "missing client certificate {cert} for key {name} in {}",
                    dir.display()
                )));
            }
        }
    }
    Ok(material)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certs_d_layout() {
        let root = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let host = root.path().join("127.0.0.1:5002");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), "CA").unwrap();
        std::fs::write(host.join("b.crt"), "CB").unwrap();
        std::fs::write(host.join("client.cert"), "CERT").unwrap();
        std::fs::write(host.join("client.key"), "KEY").unwrap();
        std::fs::write(host.join("README"), "ignored").unwrap();
        let dirs = CertDirs::PerHost(vec![root.path().join("absent"), root.path().to_owned()]);
        let m = dirs.load("127.0.0.1:5002").unwrap();
        assert_eq!(m.ca_pems, vec![b"CB".to_vec(), b"CA".to_vec()]);
        assert_eq!(m.identity_pem.as_deref(), Some(&b"CERT\nKEY"[..]));
        assert_eq!(dirs.load("other:1").unwrap(), TlsMaterial::default());

        std::fs::remove_file(host.join("client.key")).unwrap();
        let err = dirs.load("127.0.0.1:5002").unwrap_err();
        assert!(err.to_string().contains("missing key client.key"), "{err}");
        std::fs::remove_file(host.join("client.cert")).unwrap();
        std::fs::write(host.join("lonely.key"), "KEY").unwrap();
        assert!(
            dirs.load("127.0.0.1:5002")
                .unwrap_err()
                .to_string()
                .contains("lonely.cert")
        );

        let fixed = CertDirs::Fixed(root.path().join("127.0.0.1:5002"));
        assert_eq!(fixed.dir_for("anything").unwrap(), host);
    }
}
