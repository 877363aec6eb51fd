//! Fuzzes what a registry (or an OCI layout) hands the pull as JSON: manifests, indexes and
//! image configs, under every manifest media type. No input may panic; a shape accepted for a
//! media type must parse as that kind; the platform chosen from an index is one of its entries
//! and one the selector asked for; an image config that parses re-serialises to JSON that
//! parses to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oci_spec::image::ImageConfiguration;
use podstore_image::result::parse_manifest;
use podstore_registry::client::check_manifest_shape;
use podstore_registry::platform::parse_index_entries;
use podstore_registry::{ManifestKind, PlatformSelector, media};

const KINDS: &[&str] = &[
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
];

fuzz_target!(|data: &[u8]| {
    let selectors = [
        PlatformSelector::host(),
        PlatformSelector::for_platform("linux", "arm", "v7"),
        PlatformSelector::for_platform("linux", "arm64", "").prefer_gzip(),
        PlatformSelector::for_platform("windows", "amd64", ""),
    ];
    for media_type in KINDS {
        let Some(kind) = ManifestKind::from_media_type(media_type) else {
            panic!("{media_type} is not a manifest kind");
        };
        if check_manifest_shape(data, kind, "fuzz/manifest").is_err() {
            continue;
        }
        if kind.is_index() {
            let Ok(entries) = parse_index_entries(data, "fuzz/index") else {
                continue;
            };
            for selector in &selectors {
                if let Ok(chosen) = selector.choose(kind, &entries) {
                    assert!(entries.iter().any(|e| std::ptr::eq(e, chosen)));
                    match &chosen.platform {
                        Some(p) => assert!(selector.wanted().contains(p), "chose {p:?}"),
                        None => assert_eq!(kind, ManifestKind::OciIndex),
                    }
                }
            }
        } else if let Ok(info) = parse_manifest(data, "fuzz manifest") {
            if !info.schema1 {
                assert!(info.config.is_some());
            }
        }
    }
    // Image configs: parsed as the image service parses them for status.
    if let Ok(config) = serde_json::from_slice::<ImageConfiguration>(data) {
        let text = serde_json::to_vec(&config).unwrap_or_else(|e| panic!("re-encode: {e}"));
        let again: ImageConfiguration =
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("re-parse: {e}"));
        assert_eq!(normalised(again), normalised(config));
    }
});

/// The config with its set-valued fields in sorted order: oci-spec reads `Volumes` and
/// `ExposedPorts` (JSON objects used as sets) through a `HashMap` into a `Vec`, so their order
/// after a parse is the map's iteration order, not the document's.
fn normalised(mut config: ImageConfiguration) -> ImageConfiguration {
    if let Some(mut c) = config.config().clone() {
        let sorted = |v: &Option<Vec<String>>| {
            v.clone().map(|mut v| {
                v.sort();
                v
            })
        };
        c.set_volumes(sorted(c.volumes()));
        c.set_exposed_ports(sorted(c.exposed_ports()));
        config.set_config(Some(c));
    }
    config
}
