//! Manifest media types: the constants, the `Accept` list sent for manifests, and the
//! classification of a response's `Content-Type`.

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema1 signed manifest (refused).
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// Docker schema1 unsigned manifest (refused).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema2 image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` values sent with every manifest request, in order (schema1 is not advertised).
pub const MANIFEST_ACCEPT: [&str; 4] = [
    OCI_MANIFEST,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
];

/// Largest manifest accepted, in bytes (4 MiB, as containers/image).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// Largest config blob accepted by [`crate::RegistryClient::fetch_blob_bytes`] callers by default.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// What kind of manifest a media type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    /// `application/vnd.oci.image.manifest.v1+json`.
    OciManifest,
    /// `application/vnd.oci.image.index.v1+json`.
    OciIndex,
    /// `application/vnd.docker.distribution.manifest.v2+json`.
    DockerManifest,
    /// `application/vnd.docker.distribution.manifest.list.v2+json`.
    DockerManifestList,
}

impl ManifestKind {
    /// Classifies a media type (parameters already removed). `None` for anything else.
    pub fn from_media_type(media_type: &str) -> Option<ManifestKind> {
        match media_type {
            OCI_MANIFEST => Some(ManifestKind::OciManifest),
            OCI_INDEX => Some(ManifestKind::OciIndex),
            DOCKER_MANIFEST => Some(ManifestKind::DockerManifest),
            DOCKER_MANIFEST_LIST => Some(ManifestKind::DockerManifestList),
            _ => None,
        }
    }

    /// The media type string.
    pub fn media_type(self) -> &'static str {
        match self {
            ManifestKind::OciManifest => OCI_MANIFEST,
            ManifestKind::OciIndex => OCI_INDEX,
            ManifestKind::DockerManifest => DOCKER_MANIFEST,
            ManifestKind::DockerManifestList => DOCKER_MANIFEST_LIST,
        }
    }

    /// Whether this is a list of manifests (OCI index or Docker manifest list).
    pub fn is_index(self) -> bool {
        matches!(
            self,
            ManifestKind::OciIndex | ManifestKind::DockerManifestList
        )
    }
}

/// Whether a media type is one of the Docker schema1 types (or what c/image reads as schema1:
/// `application/json`).
pub fn is_schema1(media_type: &str) -> bool {
    matches!(
        media_type,
        DOCKER_SCHEMA1_SIGNED | DOCKER_SCHEMA1 | "application/json"
    )
}

/// A `Content-Type` value with parameters removed, trimmed and lowercased.
pub fn strip_parameters(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let cases: [(&str, Option<ManifestKind>, bool); 8] = [
            (OCI_MANIFEST, Some(ManifestKind::OciManifest), false),
            (OCI_INDEX, Some(ManifestKind::OciIndex), false),
            (DOCKER_MANIFEST, Some(ManifestKind::DockerManifest), false),
            (
                DOCKER_MANIFEST_LIST,
                Some(ManifestKind::DockerManifestList),
                false,
            ),
            (DOCKER_SCHEMA1_SIGNED, None, true),
            (DOCKER_SCHEMA1, None, true),
            ("application/json", None, true),
            ("text/html", None, false),
        ];
        for (mt, kind, schema1) in cases {
            assert_eq!(ManifestKind::from_media_type(mt), kind, "{mt}");
            assert_eq!(is_schema1(mt), schema1, "{mt}");
        }
        assert_eq!(
            strip_parameters("Application/VND.oci.image.manifest.v1+json; charset=utf-8"),
            OCI_MANIFEST
        );
        assert_eq!(strip_parameters(""), "");
    }
}
