//! OCI image layout: create, write blobs and manifests, resolve by name, reference parsing, and
//! interop with skopeo (containers/image) when it is installed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use oci_spec::image::{ANNOTATION_REF_NAME, Descriptor, ImageManifest, MediaType};
use podstore_blobstore::oci_layout::{descriptor_digest, descriptor_for, validate_image_name};
use podstore_blobstore::{BlobError, OciImageSelector, OciLayout, OciReference};
use podstore_reference::Digest;

const MIB4: u64 = 4 * 1024 * 1024;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("oci-layout-test-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// Writes a config, a one-layer (empty tar) manifest referencing it, and returns the
/// manifest's descriptor and bytes. `label` makes each image distinct.
fn write_image(layout: &OciLayout, label: &str) -> (Descriptor, Vec<u8>) {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"label": label}},
        "rootfs": {"type": "layers", "diff_ids": [Digest::sha256_of(&[0u8; 1024]).to_string()]},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_info = layout.blobs().put_bytes(&config_bytes).unwrap();
    let layer_info = layout.blobs().put_bytes(&[0u8; 1024]).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_info.digest.to_string(),
            "size": config_info.size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_info.digest.to_string(),
            "size": layer_info.size,
        }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_info = layout.blobs().put_bytes(&manifest_bytes).unwrap();
    (
        descriptor_for(&manifest_info, MediaType::ImageManifest).unwrap(),
        manifest_bytes,
    )
}

fn digest_of(descriptor: &Descriptor) -> Digest {
    descriptor_digest(descriptor, Path::new("test")).unwrap()
}

#[test]
fn round_trip_by_name() {
    let dir = tempdir();
    let path = dir.path().join("layout");
    let layout = OciLayout::create(&path).unwrap();
    assert_eq!(
        fs::read_to_string(path.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    assert!(layout.index().unwrap().manifests().is_empty());

    let (descriptor, manifest_bytes) = write_image(&layout, "one");
    layout.add_manifest(descriptor.clone(), Some("v1")).unwrap();

    // Read back through a fresh handle, as a pull source would.
    let reopened = OciLayout::open(&path).unwrap();
    let found = reopened.resolve("v1").unwrap();
    assert_eq!(found.digest(), descriptor.digest());
    assert_eq!(found.size(), manifest_bytes.len() as u64);
    assert_eq!(
        found
            .annotations()
            .as_ref()
            .unwrap()
            .get(ANNOTATION_REF_NAME)
            .map(String::as_str),
        Some("v1")
    );
    let bytes = reopened.read_blob(&found, MIB4).unwrap();
    assert_eq!(bytes, manifest_bytes);
    let manifest: ImageManifest = serde_json::from_slice(&bytes).unwrap();
    let config = reopened.read_blob(manifest.config(), MIB4).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["config"]["Labels"]["label"], "one");
    let layer = reopened.read_blob(&manifest.layers()[0], MIB4).unwrap();
    assert_eq!(layer, vec![0u8; 1024]);
    // The only image is also found without a name, and by index.
    assert_eq!(reopened.resolve("").unwrap().digest(), descriptor.digest());
    assert_eq!(
        reopened
            .resolve_selector(&OciImageSelector::Index(0))
            .unwrap()
            .digest(),
        descriptor.digest()
    );
    // Blobs live at blobs/<alg>/<hex>, listable through the store.
    assert_eq!(reopened.blobs().list().unwrap().len(), 3);
    assert!(
        path.join("blobs/sha256")
            .join(digest_of(&descriptor).hex())
            .is_file()
    );
}

#[test]
fn retag_replace_and_selection_errors() {
    let dir = tempdir();
    let layout = OciLayout::create(dir.path()).unwrap();
    let (first, _) = write_image(&layout, "first");
    let (second, _) = write_image(&layout, "second");
    layout.add_manifest(first.clone(), Some("latest")).unwrap();
    layout.add_manifest(second.clone(), Some("latest")).unwrap();

    // The name moved; the old entry stays, unnamed.
    assert_eq!(layout.resolve("latest").unwrap().digest(), second.digest());
    let index = layout.index().unwrap();
    assert_eq!(index.manifests().len(), 2);
    assert_eq!(index.manifests()[0].digest(), first.digest());
    assert!(index.manifests()[0].annotations().is_none());

    // Re-adding the unnamed digest replaces its entry instead of duplicating it.
    layout.add_manifest(first.clone(), Some("old")).unwrap();
    assert_eq!(layout.index().unwrap().manifests().len(), 2);
    assert_eq!(layout.resolve("old").unwrap().digest(), first.digest());
    assert_eq!(layout.resolve("latest").unwrap().digest(), second.digest());

    match layout.resolve("") {
        Err(BlobError::AmbiguousImage { count: 2, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    match layout.resolve_selector(&OciImageSelector::Index(2)) {
        Err(BlobError::IndexOutOfRange {
            index: 2, count: 2, ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    match layout.resolve("missing") {
        Err(e @ BlobError::ImageNotFound { .. }) => assert!(e.to_string().contains("missing")),
        other => panic!("unexpected {other:?}"),
    }
    // A named entry that is not a manifest or index.
    let blob = layout.blobs().put_bytes(b"not a manifest").unwrap();
    let odd = descriptor_for(&blob, MediaType::ImageLayer).unwrap();
    layout.add_manifest(odd, Some("odd")).unwrap();
    match layout.resolve("odd") {
        Err(BlobError::UnsupportedMediaType { media_types, .. }) => {
            assert_eq!(
                media_types,
                vec!["application/vnd.oci.image.layer.v1.tar".to_owned()]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // Names are validated.
    assert!(matches!(
        layout.add_manifest(second, Some("bad name")),
        Err(BlobError::InvalidReference { .. })
    ));
}

#[test]
fn create_is_idempotent_and_open_validates() {
    let dir = tempdir();
    let layout = OciLayout::create(dir.path()).unwrap();
    let (descriptor, _) = write_image(&layout, "x");
    layout.add_manifest(descriptor, Some("keep")).unwrap();
    let again = OciLayout::create(dir.path()).unwrap();
    assert!(
        again.resolve("keep").is_ok(),
        "create must not reset an existing layout"
    );

    let empty = tempdir();
    match OciLayout::open(empty.path()) {
        Err(BlobError::InvalidLayout { path, .. }) => {
            assert_eq!(path, empty.path().join("oci-layout"))
        }
        other => panic!("unexpected {other:?}"),
    }
    fs::write(
        empty.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"2.0.0"}"#,
    )
    .unwrap();
    fs::write(
        empty.path().join("index.json"),
        r#"{"schemaVersion":2,"manifests":[]}"#,
    )
    .unwrap();
    match OciLayout::open(empty.path()) {
        Err(e @ BlobError::InvalidLayout { .. }) => assert!(e.to_string().contains("2.0.0")),
        other => panic!("unexpected {other:?}"),
    }
    fs::write(empty.path().join("oci-layout"), "{not json").unwrap();
    assert!(matches!(
        OciLayout::open(empty.path()),
        Err(BlobError::Json { .. })
    ));
    fs::write(
        empty.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    fs::write(
        empty.path().join("index.json"),
        r#"{"schemaVersion":2,"manifests":[{"#,
    )
    .unwrap();
    let layout = OciLayout::open(empty.path()).unwrap();
    assert!(matches!(layout.index(), Err(BlobError::Json { .. })));
    // Opening created nothing.
    assert!(!empty.path().join("blobs").exists() && !empty.path().join("ingest").exists());
}

#[test]
fn read_blob_verifies_content_from_other_writers() {
    let dir = tempdir();
    let layout = OciLayout::create(dir.path()).unwrap();
    let (descriptor, _) = write_image(&layout, "y");
    let path = layout.blobs().path(&digest_of(&descriptor));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    match layout.read_blob(&descriptor, MIB4) {
        Err(BlobError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, digest_of(&descriptor));
            assert_eq!(actual, Digest::sha256_of(&bytes));
        }
        other => panic!("unexpected {other:?}"),
    }
    fs::write(&path, b"short").unwrap();
    assert!(matches!(
        layout.read_blob(&descriptor, MIB4),
        Err(BlobError::SizeMismatch { actual: 5, .. })
    ));
    match layout.read_blob(&descriptor, 10) {
        Err(BlobError::TooLarge {
            limit: 10, size, ..
        }) => assert_eq!(size, descriptor.size()),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn oci_reference_table() {
    use OciImageSelector::{Index, Name, Only};
    let ok: &[(&str, &str, OciImageSelector)] = &[
        ("oci:/tmp/layout", "/tmp/layout", Only),
        ("oci:/tmp/layout:", "/tmp/layout", Only),
        ("oci:relative/dir:v1", "relative/dir", Name("v1".into())),
        ("oci:/l:latest", "/l", Name("latest".into())),
        (
            "oci:/l:example.com/ns/app:1.0",
            "/l",
            Name("example.com/ns/app:1.0".into()),
        ),
        ("oci:/l:a--b", "/l", Name("a--b".into())),
        (
            "oci:/l:Name_With.Caps+x@y",
            "/l",
            Name("Name_With.Caps+x@y".into()),
        ),
        ("oci:/l:@0", "/l", Index(0)),
        ("oci:/l:@17", "/l", Index(17)),
    ];
    for (input, path, selector) in ok {
        let r = OciReference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.path, Path::new(path), "{input}");
        assert_eq!(&r.selector, selector, "{input}");
    }
    let bad = [
        "/tmp/layout:v1", // no transport
        "docker:/x",      // another transport
        "oci:",           // empty path
        "oci::v1",        // empty path
        "oci:/l:-v1",     // name must start alphanumeric
        "oci:/l:v1-",     // ...and end so
        "oci:/l:a---b",   // three dashes
        "oci:/l:a..b",    // double separator
        "oci:/l:a b",     // space
        "oci:/l:a//b",    // empty component
        "oci:/l:@-1",     // negative index
        "oci:/l:@x",      // not an integer
        "oci:/l:@",       // empty index
    ];
    for input in bad {
        match OciReference::parse(input) {
            Err(e @ BlobError::InvalidReference { .. }) => {
                assert!(
                    e.to_string().contains(input),
                    "error must name the input: {e}"
                );
            }
            other => panic!("{input}: unexpected {other:?}"),
        }
    }
    assert!(validate_image_name("").is_ok());
    assert_eq!(
        OciReference::parse("oci:/l:v1").unwrap().to_string(),
        "oci:/l:v1"
    );
    assert_eq!(
        OciReference::parse("oci:/l:@3").unwrap().to_string(),
        "oci:/l:@3"
    );
}

fn skopeo() -> Option<&'static str> {
    Command::new("skopeo")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "skopeo")
}

/// skopeo (containers/image) reads what we write and we read what it writes.
#[test]
fn skopeo_interop() {
    let Some(skopeo) = skopeo() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs skopeo; it is missing"
        );
        eprintln!("skopeo not installed: skipping interop");
        return;
    };
    let dir = tempdir();
    let ours = dir.path().join("ours");
    let layout = OciLayout::create(&ours).unwrap();
    let (descriptor, manifest_bytes) = write_image(&layout, "interop");
    layout.add_manifest(descriptor.clone(), Some("v1")).unwrap();

    let raw = Command::new(skopeo)
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:v1", ours.display()))
        .output()
        .unwrap();
    assert!(
        raw.status.success(),
        "{}",
        String::from_utf8_lossy(&raw.stderr)
    );
    assert_eq!(raw.stdout, manifest_bytes);

    let theirs = dir.path().join("theirs");
    let copy = Command::new(skopeo)
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", ours.display()))
        .arg(format!("oci:{}:copied", theirs.display()))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "{}",
        String::from_utf8_lossy(&copy.stderr)
    );
    let copied = OciLayout::open(&theirs).unwrap();
    let found = copied.resolve("copied").unwrap();
    let manifest: ImageManifest =
        serde_json::from_slice(&copied.read_blob(&found, MIB4).unwrap()).unwrap();
    let config = copied.read_blob(manifest.config(), MIB4).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["config"]["Labels"]["label"], "interop");
    for layer in manifest.layers() {
        copied.read_blob(layer, MIB4).unwrap();
    }
}

/// Concurrent `add_manifest` calls (each its own open file description of `oci-layout`, as
/// separate processes would have) serialise: no entry is lost.
#[test]
fn concurrent_add_manifest_loses_nothing() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25;
    let dir = tempdir();
    let layout = OciLayout::create(dir.path()).unwrap();
    let blob = layout.blobs().put_bytes(b"{}").unwrap();
    let start = std::sync::Arc::new(std::sync::Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (layout, start, blob) = (layout.clone(), start.clone(), blob.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..PER_THREAD {
                    // Same digest, distinct names: every call appends one entry.
                    let descriptor = descriptor_for(&blob, MediaType::ImageManifest).unwrap();
                    layout
                        .add_manifest(descriptor, Some(&format!("t{t}-{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        layout.index().unwrap().manifests().len(),
        THREADS * PER_THREAD
    );
    for t in 0..THREADS {
        for i in 0..PER_THREAD {
            layout.resolve(&format!("t{t}-{i}")).unwrap();
        }
    }
    // No temporary files left beside index.json.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
