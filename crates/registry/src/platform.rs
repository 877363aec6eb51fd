//! Choosing one image from an OCI index or Docker manifest list by platform (spec §3.6):
//! the wanted-platform list (host or caller override, arm/arm64 variant compatibility), exact
//! matching, and the OCI rank / zstd tie-break rules.

use std::collections::BTreeMap;

use podstore_reference::Digest;
use serde::Deserialize;

use crate::error::{RegistryError, Result};
use crate::media::ManifestKind;

/// The annotation that marks a zstd instance in an index.
pub const ZSTD_ANNOTATION: &str = "io.github.containers.compression.zstd";

/// A platform: OS, architecture and optional variant (empty string = none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Deserialize)]
pub struct Platform {
    /// OS, e.g. `linux`.
    #[serde(default)]
    pub os: String,
    /// Architecture in GOARCH spelling, e.g. `amd64`, `arm64`.
    #[serde(default)]
    pub architecture: String,
    /// Variant, e.g. `v8`; empty when none.
    #[serde(default)]
    pub variant: String,
}

impl Platform {
    /// A platform from its parts.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.to_owned(),
        }
    }
}

/// One entry of an index / manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IndexEntry {
    /// Media type of the referenced manifest.
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    /// Digest of the referenced manifest.
    pub digest: Digest,
    /// Size of the referenced manifest in bytes.
    pub size: u64,
    /// Platform, when the entry has one.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

/// Parses the entries of an OCI index or Docker manifest list.
pub fn parse_index_entries(bytes: &[u8], reference: &str) -> Result<Vec<IndexEntry>> {
    let doc: IndexDoc =
        serde_json::from_slice(bytes).map_err(|e| RegistryError::InvalidManifest {
            reference: reference.to_owned(),
            reason: format!("parsing index: {e}"),
        })?;
    Ok(doc.manifests)
}

/// How to choose an instance: the wanted platforms in order and the compression preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSelector {
    wanted: Vec<Platform>,
    prefer_zstd: bool,
}

/// Variants an architecture's CPU can run, best first.
fn compatibility(architecture: &str) -> &'static [&'static str] {
    match architecture {
        "arm" => &["v8", "v7", "v6", "v5"],
        "arm64" => &["v8"],
        _ => &[],
    }
}

/// The running host's architecture in GOARCH spelling.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "mips64" => "mips64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The host's CPU variant for arm/arm64 from `/proc/cpuinfo`; empty elsewhere or when unknown.
fn host_variant(architecture: &str) -> String {
    if architecture != "arm" && architecture != "arm64" {
        return String::new();
    }
    let Ok(cpuinfo) = std::fs::read_to_string("/proc/cpuinfo") else {
        return String::new();
    };
    variant_from_cpuinfo(&cpuinfo)
}

/// Variant detection from the text of `/proc/cpuinfo` (first "CPU architecture" line).
pub fn variant_from_cpuinfo(cpuinfo: &str) -> String {
    let mut arch = None;
    let mut model = String::new();
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim().to_ascii_lowercase();
        if key == "cpu architecture" && arch.is_none() {
            arch = Some(value.trim().to_owned());
        } else if key == "model name" && model.is_empty() {
            model = value.trim().to_owned();
        }
    }
    let Some(arch) = arch else {
        return String::new();
    };
    let v = match arch.as_str() {
        "8" | "AArch64" | "aarch64" => "v8",
        "7" if model.starts_with("ARMv6-compatible") => "v6",
        "7" | "7M" | "?(12)" | "?(13)" | "?(14)" | "?(15)" | "?(16)" | "?(17)" => "v7",
        "6" | "6TEJ" => "v6",
        "4" | "4T" => "v4",
        "3" => "v3",
        a if a.starts_with('5') => "v5",
        _ => "",
    };
    v.to_owned()
}

impl PlatformSelector {
    /// The selector for this host: `linux`, the host architecture, the detected variant.
    pub fn host() -> PlatformSelector {
        let arch = host_architecture();
        PlatformSelector::for_platform("linux", arch, &host_variant(arch))
    }

    /// The selector for an explicit platform (caller override). An empty variant means "none
    /// wanted": the variant-less entry first, then the architecture's compatible variants.
    pub fn for_platform(os: &str, architecture: &str, variant: &str) -> PlatformSelector {
        let compat = compatibility(architecture);
        let mut variants: Vec<String> = Vec::new();
        if variant.is_empty() {
            variants.push(String::new());
            variants.extend(compat.iter().map(|v| (*v).to_owned()));
        } else {
            match compat.iter().position(|v| *v == variant) {
                Some(i) => variants.extend(compat[i..].iter().map(|v| (*v).to_owned())),
                None => variants.push(variant.to_owned()),
            }
            variants.push(String::new());
        }
        PlatformSelector {
            wanted: variants
                .into_iter()
                .map(|v| Platform::new(os, architecture, &v))
                .collect(),
            prefer_zstd: true,
        }
    }

    /// Prefer gzip instances over zstd ones on a tie (the default prefers zstd).
    pub fn prefer_gzip(mut self) -> PlatformSelector {
        self.prefer_zstd = false;
        self
    }

    /// The wanted platforms, best first.
    pub fn wanted(&self) -> &[Platform] {
        &self.wanted
    }

    fn rank(&self, platform: &Platform) -> Option<usize> {
        self.wanted.iter().position(|w| w == platform)
    }

    fn no_match(&self, kind: ManifestKind) -> RegistryError {
        let first = self.wanted.first().cloned().unwrap_or_default();
        RegistryError::NoMatchingPlatform {
            kind: if kind == ManifestKind::OciIndex {
                "image index"
            } else {
                "manifest list"
            },
            os: first.os,
            architecture: first.architecture,
            variant: first.variant,
        }
    }

    /// Chooses the instance for this selector among `entries` of an index of `kind`.
    pub fn choose<'a>(
        &self,
        kind: ManifestKind,
        entries: &'a [IndexEntry],
    ) -> Result<&'a IndexEntry> {
        if kind == ManifestKind::DockerManifestList {
            for wanted in &self.wanted {
                if let Some(e) = entries.iter().find(|e| e.platform.as_ref() == Some(wanted)) {
                    return Ok(e);
                }
            }
            return Err(self.no_match(kind));
        }
        let worst = self.wanted.len();
        let mut best: Option<(usize, bool, &IndexEntry)> = None;
        for e in entries {
            let rank = match &e.platform {
                None => worst,
                Some(p) => match self.rank(p) {
                    Some(r) => r,
                    None => continue,
                },
            };
            let zstd = e.annotations.get(ZSTD_ANNOTATION).map(String::as_str) == Some("true");
            let preferred = zstd == self.prefer_zstd;
            let better = match best {
                None => true,
                Some((br, bp, _)) => rank < br || (rank == br && preferred && !bp),
            };
            if better {
                best = Some((rank, preferred, e));
            }
        }
        best.map(|(_, _, e)| e).ok_or_else(|| self.no_match(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, platform: Option<(&str, &str, &str)>, zstd: bool) -> IndexEntry {
        let mut annotations = BTreeMap::new();
        if zstd {
            annotations.insert(ZSTD_ANNOTATION.to_owned(), "true".to_owned());
        }
        IndexEntry {
            media_type: crate::media::OCI_MANIFEST.to_owned(),
            digest: Digest::sha256_of(&[n]),
            size: 1,
            platform: platform.map(|(o, a, v)| Platform::new(o, a, v)),
            annotations,
        }
    }

    #[test]
    fn wanted_lists() {
        let cases: [((&str, &str), &[&str]); 5] = [
            (("arm64", "v8"), &["v8", ""]),
            (("arm64", ""), &["", "v8"]),
            (("arm", "v7"), &["v7", "v6", "v5", ""]),
            (("amd64", ""), &[""]),
            (("amd64", "v3"), &["v3", ""]),
        ];
        for ((arch, variant), expected) in cases {
            let s = PlatformSelector::for_platform("linux", arch, variant);
            let got: Vec<&str> = s.wanted().iter().map(|p| p.variant.as_str()).collect();
            assert_eq!(got, expected, "{arch}/{variant}");
        }
    }

    #[test]
    fn choose_table() {
        let entries = vec![
            entry(0, Some(("linux", "amd64", "")), false),
            entry(1, Some(("linux", "arm64", "")), false),
            entry(2, Some(("linux", "arm64", "v8")), false),
            entry(3, Some(("linux", "arm64", "v8")), true),
            entry(4, None, false),
            entry(5, Some(("linux", "arm", "v6")), false),
        ];
        // (os, arch, variant, kind, expected entry index or None)
        let cases: [(&str, &str, &str, ManifestKind, Option<usize>); 8] = [
            ("linux", "amd64", "", ManifestKind::OciIndex, Some(0)),
            ("linux", "arm64", "v8", ManifestKind::OciIndex, Some(3)),
            (
                "linux",
                "arm64",
                "v8",
                ManifestKind::DockerManifestList,
                Some(2),
            ),
            ("linux", "arm64", "", ManifestKind::OciIndex, Some(1)),
            ("linux", "arm", "v7", ManifestKind::OciIndex, Some(5)),
            ("linux", "s390x", "", ManifestKind::OciIndex, Some(4)),
            ("linux", "s390x", "", ManifestKind::DockerManifestList, None),
            (
                "windows",
                "amd64",
                "",
                ManifestKind::DockerManifestList,
                None,
            ),
        ];
        for (os, arch, variant, kind, expected) in cases {
            let s = PlatformSelector::for_platform(os, arch, variant);
            let got = s
                .choose(kind, &entries)
                .ok()
                .map(|e| entries.iter().position(|x| x == e).unwrap());
            assert_eq!(got, expected, "{os}/{arch}/{variant} {kind:?}");
        }
        let gz = PlatformSelector::for_platform("linux", "arm64", "v8").prefer_gzip();
        assert_eq!(
            gz.choose(ManifestKind::OciIndex, &entries).unwrap(),
            &entries[2]
        );
        let err = PlatformSelector::for_platform("windows", "amd64", "")
            .choose(ManifestKind::DockerManifestList, &entries)
            .unwrap_err();
        assert!(err.to_string().contains("\"windows\""), "{err}");
    }

    #[test]
    fn cpuinfo_variants() {
        let cases = [
            ("CPU architecture: 8\n", "v8"),
            (
                "model name: ARMv6-compatible processor\nCPU architecture: 7\n",
                "v6",
            ),
            ("CPU architecture: 7\n", "v7"),
            ("CPU architecture: 5TEJ\n", "v5"),
            ("processor: 0\n", ""),
        ];
        for (text, v) in cases {
            assert_eq!(variant_from_cpuinfo(text), v, "{text:?}");
        }
    }
}
