//! [`ImageResult`] (the seed's `ImageResult`) and how its fields are computed from a store
//! image record (crio-storage-behavior §5), with the later fixes of §10 adopted: stored names
//! are classified by parsing them strictly (§10.12), `PreviousName` drops tag and digest by
//! parsing (so `localhost:5000/foo:tag` gives `localhost:5000/foo`), and `RepoDigests` stays
//! sorted (§10.15).
//!
//! Also the per-image-ID immutable facts ([`ImageFacts`]: size, config digest, OCI config) the
//! service caches, and how they are read from the store (§1.7).

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::ImageConfiguration;
use podstore_metadata::{Image, Layer, Store};
use podstore_reference::{Digest, Reference};
use serde::Serialize;

use crate::error::{ImageError, Result};

/// The seed's `ImageResult`: what status and list report about one local image. Serialised
/// with the seed's field names (`ID`, `Name`, `RepoTags`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageResult {
    /// The store image ID (64 lowercase hex for pulled images).
    #[serde(rename = "ID")]
    pub id: String,
    /// The best name: the first tag in store order, else the first digested name, else "".
    #[serde(rename = "Name")]
    pub name: String,
    /// The non-digested names, raw as stored, sorted byte-wise.
    #[serde(rename = "RepoTags")]
    pub repo_tags: Vec<String>,
    /// Digested names: the stored ones plus `repository@digest` for every repository the image
    /// is named in and every manifest digest it has; sorted byte-wise.
    #[serde(rename = "RepoDigests")]
    pub repo_digests: Vec<String>,
    /// Total size: big-data items, signatures and the uncompressed layer chain.
    #[serde(rename = "Size")]
    pub size: Option<u64>,
    /// The image's manifest digest (`sha256:…`), or "" when unknown.
    #[serde(rename = "Digest")]
    pub digest: String,
    /// The config blob's digest; "" for schema1 images.
    #[serde(rename = "ConfigDigest")]
    pub config_digest: String,
    /// `config.User` of the image config ("" when unset).
    #[serde(rename = "User")]
    pub user: String,
    /// The repository of the most recent name-history entry (tag and digest dropped), "" if
    /// the history is empty; shown as `<PreviousName>:<none>` for dangling images.
    #[serde(rename = "PreviousName")]
    pub previous_name: String,
    /// `config.Labels` of the image config.
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    /// The full OCI image configuration (`None` for schema1 images).
    #[serde(rename = "OCIConfig")]
    pub oci_config: Option<ImageConfiguration>,
}

/// The immutable facts of one image ID, read once and cached by the service.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageFacts {
    /// Total size (see [`ImageResult::size`]).
    pub size: u64,
    /// The config digest; "" for schema1.
    pub config_digest: String,
    /// The parsed config.
    pub oci_config: Option<ImageConfiguration>,
}

/// A stored name, classified by strict parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameClass {
    /// A name without a digest (tagged, or a bare repository).
    Tag,
    /// A name with a digest (`repo@sha256:…`, `repo:tag@sha512:…`).
    Digested,
    /// Not a valid reference: reported nowhere.
    Invalid,
}

/// Classifies one stored name (crio-storage-behavior §10.12: parse, do not measure).
pub fn classify_name(name: &str) -> NameClass {
    match Reference::parse_normalized(name) {
        Ok(r) if r.digest().is_some() => NameClass::Digested,
        Ok(_) => NameClass::Tag,
        Err(_) => NameClass::Invalid,
    }
}

/// Splits stored names into (tags, digested names), both in store order.
pub fn split_names(names: &[String]) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut digested = Vec::new();
    for n in names {
        match classify_name(n) {
            NameClass::Tag => tags.push(n.clone()),
            NameClass::Digested => digested.push(n.clone()),
            NameClass::Invalid => {
                tracing::debug!("ignoring unparseable stored image name {n:?}");
            }
        }
    }
    (tags, digested)
}

/// `RepoDigests` (§5.4): the digested names, plus `repository@d` for the repository of every
/// name and every digest in `digests` (`digests[0]` is the image digest), sorted, without
/// duplicates. With no digest known, just the digested names, sorted.
pub fn repo_digests(tags: &[String], digested: &[String], digests: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in digested {
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    for name in tags.iter().chain(digested) {
        let Ok(reference) = Reference::parse_normalized(name) else {
            continue;
        };
        let repository = reference.name();
        for d in digests {
            let candidate = format!("{repository}@{d}");
            if !out.contains(&candidate) {
                out.push(candidate);
            }
        }
    }
    out.sort();
    out
}

/// `PreviousName` (§5.5, with the port bug fixed): the repository of the most recent history
/// entry; an unparseable entry is returned up to its first `@`, else whole.
pub fn previous_name(history: &[String]) -> String {
    let Some(first) = history.first() else {
        return String::new();
    };
    match Reference::parse_normalized(first) {
        Ok(r) => r.name(),
        Err(_) => first.split('@').next().unwrap_or(first).to_owned(),
    }
}

/// The digest list used for `RepoDigests`: `primary` first (when not empty), then every other
/// digest of the record.
pub fn digest_list(primary: &str, record: &Image) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !primary.is_empty() {
        out.push(primary.to_owned());
    }
    for d in record.digests() {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The image's digest: `requested` when the lookup named a digest the image has, else the
/// record's `digest` (what podman reports; the list digest for a list pull), else the digest of
/// its `manifest` item, else "".
pub fn image_digest(record: &Image, requested: Option<&Digest>) -> String {
    if let Some(d) = requested {
        let d = d.to_string();
        if record.digests().contains(&d) {
            return d;
        }
    }
    if !record.digest.is_empty() {
        return record.digest.clone();
    }
    record
        .big_data_digests
        .get("manifest")
        .cloned()
        .unwrap_or_default()
}

/// Builds the result from the current record (names are always recomputed) and the cached
/// per-ID facts.
pub fn build_result(record: &Image, requested: Option<&Digest>, facts: &ImageFacts) -> ImageResult {
    let (mut tags, digested) = split_names(&record.names);
    let name = tags
        .first()
        .or_else(|| digested.first())
        .cloned()
        .unwrap_or_default();
    let digest = image_digest(record, requested);
    let repo_digests = if digest.is_empty() {
        let mut d = digested.clone();
        d.sort();
        d.dedup();
        d
    } else {
        repo_digests(&tags, &digested, &digest_list(&digest, record))
    };
    tags.sort();
    let config = facts.oci_config.as_ref().and_then(|c| c.config().as_ref());
    let user = config.and_then(|c| c.user().clone()).unwrap_or_default();
    let labels: BTreeMap<String, String> = config
        .and_then(|c| c.labels().clone())
        .map(|l| l.into_iter().collect())
        .unwrap_or_default();
    ImageResult {
        id: record.id.clone(),
        name,
        repo_tags: tags,
        repo_digests,
        size: Some(facts.size),
        digest,
        config_digest: facts.config_digest.clone(),
        user,
        previous_name: previous_name(&record.names_history),
        labels,
        oci_config: facts.oci_config.clone(),
    }
}

/// The parts of a manifest the image service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInfo {
    /// Schema version 1 (no config blob).
    pub schema1: bool,
    /// The config descriptor's digest (not for schema1).
    pub config: Option<(Digest, u64)>,
    /// Layer descriptors: digest, size, media type.
    pub layers: Vec<(Digest, u64, String)>,
}

/// Parses an image manifest (OCI, Docker schema2, or schema1 for local status only).
pub fn parse_manifest(bytes: &[u8], what: &str) -> std::result::Result<ManifestInfo, String> {
    let json: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{what} is not JSON: {e}"))?;
    if json
        .get("schemaVersion")
        .and_then(serde_json::Value::as_i64)
        == Some(1)
    {
        return Ok(ManifestInfo {
            schema1: true,
            config: None,
            layers: Vec::new(),
        });
    }
    if json.get("manifests").is_some() {
        return Err(format!("{what} is an index, not an image manifest"));
    }
    let descriptor = |v: &serde_json::Value| -> std::result::Result<(Digest, u64, String), String> {
        let digest = v
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| format!("{what}: descriptor without digest"))?;
        let digest = Digest::parse(digest).map_err(|e| format!("{what}: {e}"))?;
        let size = v
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("{what}: descriptor {digest} without a valid size"))?;
        let media_type = v
            .get("mediaType")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok((digest, size, media_type))
    };
    let config = json
        .get("config")
        .ok_or_else(|| format!("{what} has no config descriptor"))?;
    let (config_digest, config_size, _) = descriptor(config)?;
    let layers = match json.get("layers") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(descriptor)
            .collect::<std::result::Result<Vec<_>, _>>()?,
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(_) => return Err(format!("{what}: \"layers\" is not an array")),
    };
    Ok(ManifestInfo {
        schema1: false,
        config: Some((config_digest, config_size)),
        layers,
    })
}

/// The `signature-sizes` total from containers/image's image metadata JSON.
fn signature_sizes(id: &str, metadata: &str) -> Result<u64> {
    if metadata.is_empty() {
        return Ok(0);
    }
    let json: serde_json::Value =
        serde_json::from_str(metadata).map_err(|e| ImageError::BadImage {
            id: id.to_owned(),
            reason: format!("metadata is not JSON: {e}"),
        })?;
    Ok(json
        .get("signature-sizes")
        .and_then(serde_json::Value::as_array)
        .map(|sizes| sizes.iter().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0))
}

/// Layers by ID, built once per listing so that each image's layer chain is summed without
/// a pass over every layer.
pub(crate) type LayersById<'a> = HashMap<&'a str, &'a Layer>;

/// Indexes `layers` by ID.
pub(crate) fn layers_by_id(layers: &[Layer]) -> LayersById<'_> {
    layers.iter().map(|l| (l.id.as_str(), l)).collect()
}

/// The uncompressed size of the layer chain from `top` down; an unknown size or a missing
/// layer is an error (as when containers/image opens the image).
pub(crate) fn layer_chain_size(id: &str, top: &str, by_id: &LayersById<'_>) -> Result<u64> {
    let mut total = 0u64;
    let mut next = (!top.is_empty()).then_some(top);
    let mut seen = 0usize;
    while let Some(layer_id) = next {
        seen += 1;
        if seen > by_id.len() {
            return Err(ImageError::BadImage {
                id: id.to_owned(),
                reason: format!("layer chain from {top} loops"),
            });
        }
        let layer = by_id.get(layer_id).ok_or_else(|| ImageError::BadImage {
            id: id.to_owned(),
            reason: format!("layer {layer_id} is not known"),
        })?;
        let size = layer
            .size()
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| ImageError::BadImage {
                id: id.to_owned(),
                reason: format!("size for layer {layer_id} is unknown"),
            })?;
        total = total.saturating_add(size);
        next = layer.parent_id();
    }
    Ok(total)
}

/// Reads the immutable facts of `record` from the store (§1.7): the manifest under
/// `manifest_key`, the config it names, and the size.
pub fn load_facts(store: &Store, record: &Image, manifest_key: &str) -> Result<ImageFacts> {
    let layers = store.layers()?;
    facts_from(
        record,
        manifest_key,
        |key| store.image_big_data(&record.id, key),
        &layers_by_id(&layers),
    )
}

/// The facts of `record` with its big data read by `big_data` (manifest, then the config it
/// names) and its layers looked up in `layers`.
pub(crate) fn facts_from(
    record: &Image,
    manifest_key: &str,
    big_data: impl Fn(&str) -> podstore_metadata::Result<Vec<u8>>,
    layers: &LayersById<'_>,
) -> Result<ImageFacts> {
    let id = record.id.as_str();
    let bad = |reason: String| ImageError::BadImage {
        id: id.to_owned(),
        reason,
    };
    let manifest = big_data(manifest_key)?;
    let info =
        parse_manifest(&manifest, &format!("manifest item {manifest_key:?}")).map_err(bad)?;
    let (config_digest, oci_config) = match &info.config {
        None => (String::new(), None),
        Some((digest, _)) => {
            let key = digest.to_string();
            let bytes = big_data(&key)?;
            let config: ImageConfiguration = serde_json::from_slice(&bytes)
                .map_err(|e| bad(format!("config {key} is not an image configuration: {e}")))?;
            (key, Some(config))
        }
    };
    let big_data_size: u64 = record
        .big_data_sizes
        .values()
        .map(|s| u64::try_from(*s).unwrap_or(0))
        .sum();
    let signatures = signature_sizes(id, &record.metadata)?;
    let chain = layer_chain_size(id, &record.layer, layers)?;
    Ok(ImageFacts {
        size: big_data_size
            .saturating_add(signatures)
            .saturating_add(chain),
        config_digest,
        oci_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "2a03a6059f21e150ae84b0973863609494aad70f0a80eaeb64bddd8d92465812";
    const SHA2: &str = "8a78ab2d0ed2d4a8adb3fc6a4c52e55e9f2b2b2d8d3e7a4e3b6c5d9f0a1b907b";

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn name_classification_table() {
        let sha512 = format!("localhost/a@sha512:{}", "ab".repeat(64));
        let cases: Vec<(String, NameClass)> = vec![
            ("docker.io/library/image:latest".into(), NameClass::Tag),
            ("localhost/c".into(), NameClass::Tag),
            ("a".into(), NameClass::Tag),
            (format!("localhost/a@sha256:{SHA}"), NameClass::Digested),
            (format!("localhost/a:tag@sha256:{SHA}"), NameClass::Digested),
            // the upstream length heuristic called this a tag (§10.12)
            (sha512, NameClass::Digested),
            ("Not/A Name".into(), NameClass::Invalid),
            ("".into(), NameClass::Invalid),
            (format!("x@sha256:{}", &SHA[..10]), NameClass::Invalid),
        ];
        for (name, expected) in cases {
            assert_eq!(classify_name(&name), expected, "{name}");
        }
    }

    #[test]
    fn previous_name_table() {
        let cases = [
            (vec![], ""),
            (
                vec!["docker.io/library/busybox:latest"],
                "docker.io/library/busybox",
            ),
            // upstream split at the first ':' and gave "localhost" (§10.12)
            (vec!["localhost:5000/foo:tag", "x"], "localhost:5000/foo"),
            (
                vec![&*Box::leak(format!("repo@sha256:{SHA}").into_boxed_str())],
                "docker.io/library/repo",
            ),
            (vec!["Bad Name:1"], "Bad Name:1"),
        ];
        for (history, expected) in cases {
            assert_eq!(previous_name(&strings(&history)), expected, "{history:?}");
        }
    }

    #[test]
    fn repo_digests_table() {
        let d1 = format!("sha256:{SHA}");
        let d2 = format!("sha256:{SHA2}");
        let a = format!("localhost/a@sha256:{SHA}");
        let b = format!("localhost/b@sha256:{SHA}");
        // (tags, digested, digests, expected)
        type Case = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);
        let cases: Vec<Case> = vec![
            (vec![], vec![], vec![d1.clone()], vec![]),
            (
                strings(&["docker.io/library/image:latest", "localhost/c:latest"]),
                vec![a.clone(), b.clone()],
                vec![d2.clone(), d1.clone()],
                vec![
                    format!("docker.io/library/image@{d1}"),
                    format!("docker.io/library/image@{d2}"),
                    format!("localhost/a@{d1}"),
                    format!("localhost/a@{d2}"),
                    format!("localhost/b@{d1}"),
                    format!("localhost/b@{d2}"),
                    format!("localhost/c@{d1}"),
                    format!("localhost/c@{d2}"),
                ],
            ),
            // raw "a" is normalised for RepoDigests
            (
                strings(&["a"]),
                vec![],
                vec![d1.clone()],
                vec![format!("docker.io/library/a@{d1}")],
            ),
            // unparseable names contribute nothing
            (strings(&["Bad Name"]), vec![], vec![d1.clone()], vec![]),
        ];
        for (tags, digested, digests, expected) in cases {
            assert_eq!(
                repo_digests(&tags, &digested, &digests),
                expected,
                "{tags:?} {digested:?}"
            );
        }
    }

    fn record(names: &[&str]) -> Image {
        Image {
            id: SHA.to_owned(),
            names: strings(names),
            ..Image::default()
        }
    }

    fn facts() -> ImageFacts {
        ImageFacts {
            size: 0,
            config_digest: String::new(),
            oci_config: None,
        }
    }

    #[test]
    fn build_result_catalogue_i20() {
        // I20 (§5.4 example) with a valid manifest digest instead of the mock's "a:SHA".
        let d = format!("sha256:{SHA2}");
        let mut r = record(&[
            "docker.io/library/image:latest",
            &format!("localhost/a@sha256:{SHA}"),
            &format!("localhost/b@sha256:{SHA}"),
            "localhost/c:latest",
        ]);
        r.big_data_digests.insert("manifest".into(), d.clone());
        let result = build_result(&r, None, &facts());
        assert_eq!(result.id, SHA);
        assert_eq!(result.name, "docker.io/library/image:latest");
        assert_eq!(
            result.repo_tags,
            strings(&["docker.io/library/image:latest", "localhost/c:latest"])
        );
        let mut expected = vec![
            format!("docker.io/library/image@{d}"),
            format!("localhost/a@{d}"),
            format!("localhost/a@sha256:{SHA}"),
            format!("localhost/b@{d}"),
            format!("localhost/b@sha256:{SHA}"),
            format!("localhost/c@{d}"),
        ];
        expected.sort();
        assert_eq!(result.repo_digests, expected);
        assert_eq!(result.digest, d);
        assert_eq!(result.size, Some(0));
        assert_eq!(result.config_digest, "");
    }

    #[test]
    fn build_result_catalogue_i25() {
        // I25: names ["a","b","c@sha256:SHA"], no manifest digest.
        let r = record(&["a", "b", &format!("c@sha256:{SHA}")]);
        let result = build_result(&r, None, &facts());
        assert_eq!(result.name, "a");
        assert_eq!(result.repo_tags, strings(&["a", "b"]));
        assert_eq!(result.repo_digests, vec![format!("c@sha256:{SHA}")]);
        assert_eq!(result.digest, "");
        let empty = build_result(&record(&[]), None, &facts());
        assert_eq!(
            (
                empty.name.as_str(),
                empty.repo_tags.len(),
                empty.repo_digests.len()
            ),
            ("", 0, 0)
        );
    }

    #[test]
    fn best_name_prefers_tags_in_store_order() {
        let cases: Vec<(Vec<String>, &str)> = vec![
            (strings(&["z:1", "a:1"]), "z:1"),
            (vec![format!("x@sha256:{SHA}"), "b:2".into()], "b:2"),
            (
                vec![format!("x@sha256:{SHA}")],
                &*Box::leak(format!("x@sha256:{SHA}").into_boxed_str()),
            ),
        ];
        for (names, expected) in cases {
            let r = Image {
                names,
                ..Image::default()
            };
            assert_eq!(build_result(&r, None, &facts()).name, expected);
        }
    }

    #[test]
    fn digest_choice() {
        let d1 = Digest::parse(&format!("sha256:{SHA}")).unwrap();
        let d2 = format!("sha256:{SHA2}");
        let mut r = record(&[]);
        assert_eq!(image_digest(&r, None), "");
        r.big_data_digests.insert("manifest".into(), d2.clone());
        assert_eq!(image_digest(&r, None), d2);
        r.big_data_digests
            .insert(format!("manifest-{d1}"), d1.to_string());
        r.digest = d1.to_string();
        assert_eq!(image_digest(&r, None), d1.to_string());
        let d2p = Digest::parse(&d2).unwrap();
        assert_eq!(image_digest(&r, Some(&d2p)), d2);
        let other = Digest::sha256_of(b"other");
        assert_eq!(image_digest(&r, Some(&other)), d1.to_string());
    }

    #[test]
    fn manifest_parsing_table() {
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"sha256:{SHA}","size":5}},"layers":[{{"digest":"sha256:{SHA2}","size":7,"mediaType":"m"}}]}}"#
        );
        let info = parse_manifest(oci.as_bytes(), "m").unwrap();
        assert_eq!(info.config.unwrap().1, 5);
        assert_eq!(info.layers.len(), 1);
        let schema1 = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":""}],"history":[{"v1Compatibility":"{\"id\":\"e45a\",\"parent\":\"\"}"}]}"#;
        assert!(parse_manifest(schema1.as_bytes(), "m").unwrap().schema1);
        for bad in [
            "not json",
            r#"{"schemaVersion":2}"#,
            r#"{"schemaVersion":2,"manifests":[]}"#,
            r#"{"schemaVersion":2,"config":{"digest":"sha256:00","size":1}}"#,
            r#"{"schemaVersion":2,"config":{"digest":"sha256:2a03a6059f21e150ae84b0973863609494aad70f0a80eaeb64bddd8d92465812"}}"#,
        ] {
            assert!(parse_manifest(bad.as_bytes(), "m").is_err(), "{bad}");
        }
    }

    #[test]
    fn layer_chain_sizes() {
        let layer = |id: &str, parent: &str, size: i64, known: bool| Layer {
            id: id.into(),
            parent: parent.into(),
            uncompressed_size: size,
            uncompressed_digest: if known {
                format!("sha256:{SHA}")
            } else {
                String::new()
            },
            ..Layer::default()
        };
        let layers = vec![
            layer("a", "", 10, true),
            layer("b", "a", 5, true),
            layer("c", "b", 1, false),
        ];
        let layers = layers_by_id(&layers);
        assert_eq!(layer_chain_size("i", "b", &layers).unwrap(), 15);
        assert_eq!(layer_chain_size("i", "", &layers).unwrap(), 0);
        assert!(layer_chain_size("i", "c", &layers).is_err());
        assert!(layer_chain_size("i", "zz", &layers).is_err());
        let looped = vec![layer("x", "y", 1, true), layer("y", "x", 1, true)];
        assert!(layer_chain_size("i", "x", &layers_by_id(&looped)).is_err());
        assert_eq!(
            signature_sizes("i", r#"{"signature-sizes":[3,4]}"#).unwrap(),
            7
        );
        assert_eq!(signature_sizes("i", "{}").unwrap(), 0);
        assert!(signature_sizes("i", "invalid").is_err());
    }
}
