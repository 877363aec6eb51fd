//! Pull faults a real registry won't produce, against the testkit's in-process fake
//! registry (`podstore_testkit::fake_registry`) on 127.0.0.1: a layer download that stalls mid-way (the pull-stall timeout gives a
//! typed error naming the image and the layer), and a blob whose bytes do not match its digest
//! (detected at the end of the single streaming pass). Either way nothing is left behind: no
//! layer, no image, no staging directory, no kept blob. Both drivers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fake_registry as fake;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fake::{Auth, Fault, Registry, serve};
use podstore_image::{ImageError, ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{STAGING_DIR, Store, StoreOptions};
use podstore_reference::Digest;
use podstore_registry::RegistryError;
use podstore_testkit::peers::shm_tempdir;
use podstore_testkit::tarball::{TarBuilder, TarEntry, TarFormat};

/// A one-layer image (uncompressed layer of `len` bytes of file data) in a fake registry.
struct FakeImage {
    registry: Registry,
    layer: Vec<u8>,
    layer_digest: Digest,
}

fn fake_image(len: usize) -> FakeImage {
    let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut tar = TarBuilder::new(Vec::new(), TarFormat::Pax);
    tar.append(&TarEntry::dir("data", 0o755)).unwrap();
    tar.append(&TarEntry::file("data/blob", 0o644, content))
        .unwrap();
    let layer = tar.finish().unwrap();
    let layer_digest = Digest::sha256_of(&layer);
    let mut registry = Registry::new(Auth::None);
    registry.blob(&layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = Digest::parse(&registry.blob(config.as_bytes())).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    registry.manifest(
        "test/img",
        "latest",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    FakeImage {
        registry,
        layer,
        layer_digest,
    }
}

fn service(dir: &Path, driver: &str, keep: bool) -> (Arc<Store>, ImageService) {
    std::fs::write(dir.join("registries.conf"), "").unwrap();
    let store = Arc::new(
        Store::open(&StoreOptions::new(
            dir.join("root"),
            dir.join("run"),
            driver,
        ))
        .unwrap(),
    );
    let svc = ImageService::new(
        Arc::clone(&store),
        ImageServiceOptions {
            registries_conf: Some(dir.join("registries.conf")),
            auth_file: Some(dir.join("none.json")),
            keep_compressed_blobs: keep,
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    (store, svc)
}

/// Nothing of a failed pull is left: no layer, image, staging directory or blob file.
fn assert_nothing_left(store: &Store, root: &Path) {
    assert!(store.layers().unwrap().is_empty());
    assert!(store.images().unwrap().is_empty());
    let staging: Vec<_> = std::fs::read_dir(root.join("tmp").join(STAGING_DIR))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !n.ends_with(".lock"))
                .collect()
        })
        .unwrap_or_default();
    assert!(staging.is_empty(), "staging leftovers {staging:?}");
    for driver in ["overlay", "vfs"] {
        let dir = root.join(driver).join("staging");
        let left = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "staging leftovers in {}", dir.display());
    }
    let blobs = root.join("podstore-blobs/blobs/sha256");
    let kept = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0, "blob files left in {}", blobs.display());
    let ingests = root.join("podstore-blobs/ingest");
    let partial = std::fs::read_dir(&ingests).map(|d| d.count()).unwrap_or(0);
    assert_eq!(partial, 0, "partial ingests left in {}", ingests.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_layer_download_fails_with_a_typed_error_and_leaves_nothing() {
    for driver in ["vfs", "overlay"] {
        let dir = shm_tempdir("podstore-image-stall-");
        let (store, svc) = service(dir.path(), driver, true);
        let image = fake_image(4 << 20);
        let blob_path = format!("/blobs/{}", image.layer_digest);
        let model = image.registry.clone();
        let server = serve(move |req| {
            if req.path().ends_with(&blob_path) {
                // one MiB, then silence
                return fake::blob_reply(req, fake::Body::Bytes(Arc::new(image.layer.clone())))
                    .fault(Fault::StallAfter(1 << 20));
            }
            model.handle(req)
        })
        .await;
        let input = format!("docker://{}/test/img:latest", server.host());
        let err = svc
            .pull_image(
                &input,
                &PullOptions {
                    stall_timeout: Some(Duration::from_secs(2)),
                    ..PullOptions::default()
                },
            )
            .await
            .unwrap_err();
        let ImageError::PullStalled {
            input: named,
            layer,
            blob,
            seconds,
        } = &err
        else {
            panic!("{driver}: {err}");
        };
        assert_eq!(named, &input);
        assert_eq!(
            layer,
            image.layer_digest.hex(),
            "the layer ID of a base layer"
        );
        assert_eq!(blob, &image.layer_digest.to_string());
        assert_eq!(*seconds, 2);
        assert!(err.to_string().contains(&input), "{err}");
        assert_nothing_left(&store, &dir.path().join("root"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_found_at_the_end_of_the_stream_leaves_nothing() {
    for driver in ["vfs", "overlay"] {
        let dir = shm_tempdir("podstore-image-mismatch-");
        let (store, svc) = service(dir.path(), driver, true);
        let image = fake_image(3 << 20);
        // same length, one byte of file data changed near the end: the tar stays valid and
        // is applied all the way before the digest is known
        let mut wrong = image.layer.clone();
        let at = wrong.len() - 4096;
        wrong[at] ^= 0xff;
        let blob_path = format!("/blobs/{}", image.layer_digest);
        let model = image.registry.clone();
        let server = serve(move |req| {
            if req.path().ends_with(&blob_path) {
                return fake::blob_reply(req, fake::Body::Bytes(Arc::new(wrong.clone())));
            }
            model.handle(req)
        })
        .await;
        let input = format!("docker://{}/test/img:latest", server.host());
        let err = svc
            .pull_image(&input, &PullOptions::default())
            .await
            .unwrap_err();
        match &err {
            ImageError::Registry { source, .. } => {
                assert!(
                    matches!(**source, RegistryError::DigestMismatch { .. }),
                    "{driver}: {err}"
                );
            }
            other => panic!("{driver}: {other}"),
        }
        assert_nothing_left(&store, &dir.path().join("root"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_pull_keeps_the_blob_only_when_configured() {
    for keep in [false, true] {
        let dir = shm_tempdir("podstore-image-keep-");
        let (store, svc) = service(dir.path(), "overlay", keep);
        let image = fake_image(1 << 20);
        let model = image.registry.clone();
        let server = serve(move |req| model.handle(req)).await;
        let input = format!("docker://{}/test/img:latest", server.host());
        let pulled = svc
            .pull_image(&input, &PullOptions::default())
            .await
            .unwrap();
        let layer = store.layer(&pulled.layer_ids[0]).unwrap();
        assert_eq!(layer.compressed_digest, image.layer_digest.to_string());
        assert_eq!(layer.uncompressed_digest, image.layer_digest.to_string());
        let kept = dir
            .path()
            .join("root/podstore-blobs/blobs/sha256")
            .join(image.layer_digest.hex());
        assert_eq!(kept.is_file(), keep, "keep={keep}");
        if keep {
            assert_eq!(std::fs::read(&kept).unwrap(), image.layer);
        }
        // one blob request: the layer was streamed once
        let blob_requests = server
            .requests()
            .iter()
            .filter(|r| {
                r.path()
                    .ends_with(&format!("/blobs/{}", image.layer_digest))
            })
            .count();
        assert_eq!(blob_requests, 1);
    }
}
