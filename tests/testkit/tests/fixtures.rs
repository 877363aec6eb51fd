//! The fixture layout: deterministic, every blob verifies, the tar encoding is readable by an
//! independent reader, and skopeo accepts the layout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fixtures::{FixtureOptions, FixtureSet, ImageFixture, media_types};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::process::Command;

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("testkit-fixtures-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[test]
fn two_builds_give_the_same_digests_and_bytes() {
    let opts = FixtureOptions::default().with_small_count(3).with_big(1);
    let (a, b) = (tmp(), tmp());
    let first = FixtureSet::build(&a.path().join("oci"), &opts).unwrap();
    let second = FixtureSet::build(&b.path().join("oci"), &opts).unwrap();
    assert_eq!(first.images(), second.images());
    let index_a = std::fs::read(a.path().join("oci/index.json")).unwrap();
    let index_b = std::fs::read(b.path().join("oci/index.json")).unwrap();
    assert_eq!(index_a, index_b);
    let tags: Vec<&str> = first.images().iter().map(|i| i.tag.as_str()).collect();
    assert_eq!(
        tags,
        [
            "busybox",
            "busybox-uncompressed",
            "busybox-zstd",
            "busybox-v2s2",
            "multilayer",
            "multilayer-zstd",
            "multiarch",
            "small-01",
            "small-02",
            "small-03",
            "big",
            "big-zstd"
        ]
    );
    // Every tag is its own image.
    let ids: std::collections::BTreeSet<_> =
        first.images().iter().filter_map(|i| i.image_id()).collect();
    assert_eq!(ids.len(), tags.len() - 1, "one ID per non-index tag");
}

fn check_image(set: &FixtureSet, image: &ImageFixture) {
    let manifest = set.read_blob(&image.manifest_digest).unwrap();
    assert_eq!(manifest.len() as u64, image.manifest_size, "{}", image.tag);
    let json: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(json["mediaType"], image.manifest_media_type.as_str());
    if image.is_index() {
        let entries = json["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), image.manifests.len());
        for (entry, child) in entries.iter().zip(&image.manifests) {
            assert_eq!(entry["digest"], child.manifest_digest.as_str());
            let p = child.platform.as_ref().unwrap();
            assert_eq!(entry["platform"]["architecture"], p.architecture.as_str());
            check_image(set, child);
        }
        return;
    }
    let config_digest = image.config_digest.as_deref().unwrap();
    assert_eq!(json["config"]["digest"], config_digest);
    let config: serde_json::Value =
        serde_json::from_slice(&set.read_blob(config_digest).unwrap()).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), image.layers.len());
    assert_eq!(diff_ids.len(), image.layers.len());
    for ((entry, layer), diff_id) in layers.iter().zip(&image.layers).zip(diff_ids) {
        assert_eq!(entry["digest"], layer.digest.as_str());
        assert_eq!(entry["mediaType"], layer.media_type.as_str());
        assert_eq!(entry["size"], layer.size);
        assert_eq!(diff_id, layer.diff_id.as_str());
        let tar = set.read_layer_tar(layer).unwrap();
        assert_eq!(
            sha256(&tar),
            layer.diff_id,
            "{} {}",
            image.tag,
            layer.digest
        );
        assert_eq!(tar.len() as u64, layer.uncompressed_size);
    }
}

#[test]
fn every_blob_verifies_and_every_reference_resolves() {
    let set = FixtureSet::shared().unwrap();
    for entry in std::fs::read_dir(set.dir().join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(sha256(&bytes), format!("sha256:{name}"));
    }
    for image in set.images() {
        check_image(set, image);
    }
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(set.dir().join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"].as_array().unwrap().len(),
        set.images().len()
    );
    assert_eq!(set.small_images().len(), 20);
    let v2s2 = set.image("busybox-v2s2").unwrap();
    assert_eq!(v2s2.manifest_media_type, media_types::DOCKER_MANIFEST);
    assert_eq!(v2s2.layers[0].media_type, media_types::DOCKER_LAYER_GZIP);
    assert_eq!(
        v2s2.layers[0].digest,
        set.image("busybox").unwrap().layers[0].digest
    );
    let zstd = set.image("busybox-zstd").unwrap();
    assert_eq!(zstd.layers[0].media_type, media_types::OCI_LAYER_ZSTD);
    assert_eq!(zstd.layers[0].diff_id, v2s2.layers[0].diff_id);
    let plain = set.image("busybox-uncompressed").unwrap();
    assert_eq!(plain.layers[0].digest, plain.layers[0].diff_id);
}

/// Reads a layer with the `tar` crate (an independent reader): name → (type, link, pax keys).
fn read_entries(tar: &[u8]) -> BTreeMap<String, (tar::EntryType, String, Vec<String>, Vec<u8>)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        let link = entry
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap())
            .unwrap_or_default();
        let mut pax = Vec::new();
        if let Some(ext) = entry.pax_extensions().unwrap() {
            for e in ext {
                pax.push(e.unwrap().key().unwrap().to_string());
            }
        }
        let kind = entry.header().entry_type();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        out.insert(path, (kind, link, pax, data));
    }
    out
}

#[test]
fn multilayer_tar_edge_cases_read_back_with_an_independent_reader() {
    let set = FixtureSet::shared().unwrap();
    let image = set.image("multilayer").unwrap();
    assert_eq!(image.layers.len(), 5);
    let l1 = read_entries(&set.read_layer_tar(&image.layers[0]).unwrap());
    assert!(l1.contains_key("./"));
    assert_eq!(l1["./data/fifo"].0, tar::EntryType::Fifo);
    assert_eq!(l1["./data/dev-null"].0, tar::EntryType::Char);
    assert_eq!(l1["./data/b/hardlink-crossdir"].0, tar::EntryType::Link);
    assert_eq!(l1["./data/b/hardlink-crossdir"].1, "./data/a/file1");
    assert!(
        l1["./usr/bin/cap-tool"]
            .2
            .contains(&"SCHILY.xattr.security.capability".to_string())
    );
    assert!(l1["./mtime/precise"].2.contains(&"mtime".to_string()));
    assert_eq!(l1["./links/dangling"].1, "/nonexistent/target");
    let long = format!("./names/{}", "L".repeat(255));
    assert_eq!(l1[&long].3, b"long\n");
    assert!(l1.keys().any(|k| k.len() > 400 && k.ends_with("/file")));
    assert!(l1.contains_key("./names/unicode-ü-日本語"));
    let l2 = read_entries(&set.read_layer_tar(&image.layers[1]).unwrap());
    assert!(l2.contains_key("data/.wh.c") && l2.contains_key("data/b/.wh.file"));
    assert_eq!(l2["new/h3"].1, "new/h1");
    let l3 = read_entries(&set.read_layer_tar(&image.layers[2]).unwrap());
    assert!(l3.contains_key("opt/keep/.wh..wh..opq"));
    let l4 = set.read_layer_tar(&image.layers[3]).unwrap();
    assert_eq!(l4.len(), 10240);
    assert!(l4.iter().all(|&b| b == 0));
    let raw5 = set.read_layer_tar(&image.layers[4]).unwrap();
    assert!(raw5.windows(13).any(|w| w == b"././@LongLink"));
    let l5 = read_entries(&raw5);
    let long_file = format!("gnu/dir-{}/file-{}", "x".repeat(120), "y".repeat(150));
    assert_eq!(l5[&long_file].3, b"gnu long name\n");
    assert_eq!(l5["gnu/hardlink-to-long"].1, long_file);
    assert_eq!(l5["gnu/symlink-long-target"].1, format!("/{long_file}"));
}

#[test]
fn gnu_tar_lists_every_layer() {
    let set = FixtureSet::shared().unwrap();
    let image = set.image("multilayer").unwrap();
    for layer in &image.layers {
        let path = set.blob_path(&layer.digest);
        let out = Command::new("tar").arg("-tzf").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "tar -tzf {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn skopeo_reads_the_layout() {
    let set = FixtureSet::shared().unwrap();
    for tag in [
        "busybox",
        "busybox-zstd",
        "busybox-uncompressed",
        "multilayer",
        "multiarch",
        "small-01",
    ] {
        let image = set.image(tag).unwrap();
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", &set.oci_reference(tag)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tag}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256(&out.stdout), image.manifest_digest, "{tag}");
    }
    let out = Command::new("skopeo")
        .args(["inspect", "--config", &set.oci_reference("busybox")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["config"]["Cmd"][0], "sh");
}

#[test]
fn the_shared_set_is_reused_from_its_cache() {
    let first = FixtureSet::shared().unwrap();
    let again = FixtureSet::cached(first.options()).unwrap();
    assert_eq!(first, &again);
}
