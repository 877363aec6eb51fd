//! pull_image end to end against the real docker-registry (testkit, 127.0.0.1 only): by tag, by
//! digest, a multi-arch index, zstd / uncompressed / Docker schema2 images, basic auth through an
//! auth file, TLS with a CA directory, failures that leave the store unchanged, layer reuse, and
//! podman listing the pulled image with the same ID and digest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use podstore_image::{ImageError, ImageService, ImageServiceOptions, PullEvent, PullOptions};
use podstore_metadata::{Store, StoreOptions};
use podstore_registry::PlatformSelector;
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::{Podman, StoreDirs, StoreGuard, e2e_drivers, shm_tempdir};
use podstore_testkit::registry::{RegistryMode, RegistrySet};

struct Env {
    /// Overlay stores: shut down and unmounted before the directory goes (fields drop in order).
    _guard: Option<StoreGuard>,
    _dir: tempfile::TempDir,
    root: PathBuf,
    run: PathBuf,
    conf: PathBuf,
    store: Arc<Store>,
}

fn new_env() -> Env {
    new_env_on("vfs")
}

fn new_env_on(driver: &str) -> Env {
    let dir = shm_tempdir("podstore-image-pull-");
    let root = dir.path().join("root");
    let run = dir.path().join("run");
    let conf = dir.path().join("registries.conf");
    std::fs::write(&conf, "").unwrap();
    let store = Arc::new(Store::open(&StoreOptions::new(&root, &run, driver)).unwrap());
    Env {
        _guard: (driver == "overlay").then(|| StoreGuard::overlay(&root, &run)),
        _dir: dir,
        root,
        run,
        conf,
        store,
    }
}

fn service_with(env: &Env, f: impl FnOnce(&mut ImageServiceOptions)) -> ImageService {
    let mut options = ImageServiceOptions {
        registries_conf: Some(env.conf.clone()),
        auth_file: Some(env.root.parent().unwrap().join("no-auth.json")),
        ..ImageServiceOptions::default()
    };
    f(&mut options);
    ImageService::new(Arc::clone(&env.store), options).unwrap()
}

fn registries() -> &'static RegistrySet {
    RegistrySet::shared().unwrap()
}

fn fixtures() -> &'static FixtureSet {
    FixtureSet::shared().unwrap()
}

fn pushed_digest(tag: &str) -> String {
    registries()
        .pushed()
        .iter()
        .find(|p| p.tag == tag)
        .unwrap()
        .digest
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_by_digest_and_formats() {
    pull_by_tag_by_digest_and_formats_on("vfs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_by_digest_and_formats_on_overlay() {
    pull_by_tag_by_digest_and_formats_on("overlay").await;
}

/// gzip, zstd, uncompressed and Docker schema2 layers, each streamed once through verify →
/// decompress → apply, on `driver`.
async fn pull_by_tag_by_digest_and_formats_on(driver: &str) {
    let env = new_env_on(driver);
    let svc = service_with(&env, |_| {});
    let plain = registries().get(RegistryMode::Plain);
    // (fixture tag, pull by digest?)
    let cases = [
        ("busybox", false),
        ("busybox-zstd", false),
        ("busybox-uncompressed", false),
        ("busybox-v2s2", false),
        ("multilayer", true),
    ];
    // name:tag@digest is pulled by digest and recorded without the tag
    {
        let fx = fixtures().image("small-02").unwrap();
        let reference = plain.image_reference(&fx.registry_reference());
        let input = format!("{reference}@{}", fx.manifest_digest);
        let pulled = svc
            .pull_image(&input, &PullOptions::default())
            .await
            .unwrap();
        assert_eq!(pulled.id, fx.image_id().unwrap());
        let repo = reference.rsplit_once(':').unwrap().0;
        assert_eq!(pulled.name, Some(format!("{repo}@{}", fx.manifest_digest)));
        // a digest that is not the tag's manifest fails verification, nothing written
        let wrong = format!("{reference}@sha256:{}", "0".repeat(64));
        let before = env.store.images().unwrap().len();
        assert!(
            svc.pull_image(&wrong, &PullOptions::default())
                .await
                .is_err()
        );
        assert_eq!(env.store.images().unwrap().len(), before);
    }
    for (tag, by_digest) in cases {
        let fx = fixtures().image(tag).unwrap();
        let reference = fx.registry_reference();
        let input = if by_digest {
            let repo = reference.split(':').next().unwrap();
            format!(
                "docker://{}",
                plain.image_reference(&format!("{repo}@{}", fx.manifest_digest))
            )
        } else {
            format!("docker://{}", plain.image_reference(&reference))
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let pulled = svc
            .pull_image(
                &input,
                &PullOptions {
                    progress: Some(tx),
                    ..PullOptions::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(pulled.id, fx.image_id().unwrap(), "{tag}");
        assert_eq!(
            pulled.manifest_digest.to_string(),
            fx.manifest_digest,
            "{tag}"
        );
        assert_eq!(
            pulled.name.as_deref(),
            Some(input.trim_start_matches("docker://")),
            "{tag}"
        );
        let mut applied = 0;
        while let Ok(event) = rx.try_recv() {
            if matches!(
                event,
                PullEvent::LayerApplied { .. } | PullEvent::LayerReused { .. }
            ) {
                applied += 1;
            }
        }
        assert_eq!(applied, fx.layers.len(), "{tag}");
        let status = svc.image_status(pulled.name.as_deref().unwrap()).unwrap();
        assert_eq!(status.id, pulled.id);
        assert_eq!(status.digest, fx.manifest_digest);
        assert_eq!(status.config_digest, fx.config_digest.clone().unwrap());
        assert!(
            status
                .repo_digests
                .iter()
                .any(|d| d.ends_with(&fx.manifest_digest)),
            "{tag}"
        );
        // the layers carry the digests podman uses to reuse them
        for (id, lf) in pulled.layer_ids.iter().zip(&fx.layers) {
            let layer = env.store.layer(id).unwrap();
            assert_eq!(layer.uncompressed_digest, lf.diff_id, "{tag}");
            assert_eq!(
                layer.uncompressed_size as u64, lf.uncompressed_size,
                "{tag}"
            );
        }
    }
    // busybox, -zstd, -uncompressed and -v2s2 share one uncompressed layer: created once.
    let bb = fixtures().image("busybox").unwrap();
    let first = env
        .store
        .layer(bb.layers[0].diff_id.trim_start_matches("sha256:"))
        .unwrap();
    assert_eq!(
        first.compressed_digest, bb.layers[0].digest,
        "the first pull's blob is recorded"
    );
    // no compressed blob is kept by default
    let blobs = env.root.join("podstore-blobs/blobs/sha256");
    let kept = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(kept, 0);
    // pulling again reuses everything
    let input = format!(
        "docker://{}",
        plain.image_reference(&bb.registry_reference())
    );
    let again = svc
        .pull_image(&input, &PullOptions::default())
        .await
        .unwrap();
    assert!(again.image_existed);
    assert_eq!(again.layers_reused, 1);
    // the five multilayer layers (whiteouts, an opaque directory, special files, owners,
    // xattrs, hard links) give the expected root filesystem, whichever order they staged in
    let ml = fixtures().image("multilayer").unwrap();
    let diff_ids: Vec<podstore_reference::Digest> = ml
        .layers
        .iter()
        .map(|l| podstore_reference::Digest::parse(&l.diff_id).unwrap())
        .collect();
    let top = podstore_image::layer_ids(&diff_ids).pop().unwrap();
    let rootfs = env
        .store
        .mount(&top, &podstore_layer::MountOptions::default())
        .unwrap();
    let mut expected = podstore_testkit::fixtures::multilayer_expectations();
    if driver == "overlay" {
        // overlayfs reports the lower inode's link count, which still includes the name a
        // later layer whited out (`data/a/hardlink1`): 3, where vfs's real deletion gives 2
        expected.retain(|(path, _)| path != "data/a/file1" && path != "data/b/hardlink-crossdir");
    }
    let checked = podstore_testkit::fixtures::check_rootfs(&rootfs, &expected);
    env.store.unmount(&top, true).unwrap();
    checked.unwrap_or_else(|e| panic!("{driver}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multiarch_index_chooses_the_platform() {
    let env = new_env();
    let svc = service_with(&env, |_| {});
    let plain = registries().get(RegistryMode::Plain);
    let fx = fixtures().image("multiarch").unwrap();
    let input = plain.image_reference(&fx.registry_reference());
    for arch in ["amd64", "arm64"] {
        let child = fx
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().unwrap().architecture == arch)
            .unwrap();
        let variant = child
            .platform
            .as_ref()
            .unwrap()
            .variant
            .clone()
            .unwrap_or_default();
        let pulled = svc
            .pull_image(
                &input,
                &PullOptions {
                    platform: Some(PlatformSelector::for_platform("linux", arch, &variant)),
                    ..PullOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(pulled.id, child.image_id().unwrap(), "{arch}");
        assert_eq!(pulled.manifest_digest.to_string(), child.manifest_digest);
        assert_eq!(pulled.top_digest.to_string(), pushed_digest("multiarch"));
        let record = env.store.image(&pulled.id).unwrap();
        // containers/image: the list under manifest-<list digest>, the digest field is the list's
        assert_eq!(record.digest, pushed_digest("multiarch"));
        assert!(
            record
                .big_data_names
                .contains(&format!("manifest-{}", pushed_digest("multiarch")))
        );
        assert!(
            record
                .big_data_names
                .contains(&format!("manifest-{}", child.manifest_digest))
        );
        let status = svc.image_status(&pulled.id).unwrap();
        assert!(
            status.repo_digests.contains(&format!(
                "{}@{}",
                input.split(':').take(2).collect::<Vec<_>>().join(":"),
                child.manifest_digest
            )),
            "{:?}",
            status.repo_digests
        );
    }
    // the name moved to the arm64 image (pulled last); the amd64 one is dangling
    let images = svc.list_images("").unwrap();
    assert_eq!(images.len(), 2);
    assert!(
        images
            .iter()
            .any(|i| i.repo_tags.is_empty() && !i.previous_name.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tls_and_failures_leave_the_store_unchanged() {
    let env = new_env();
    let auth = registries().get(RegistryMode::BasicAuth);
    let fx = fixtures().image("busybox").unwrap();
    let input = format!(
        "docker://{}",
        auth.image_reference(&fx.registry_reference())
    );

    // no credentials → unauthorized, nothing written
    let anonymous = service_with(&env, |_| {});
    let err = anonymous
        .pull_image(&input, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::Registry { source, .. } if source.is_unauthorized()),
        "{err}"
    );
    // a wrong password
    let wrong = env.root.parent().unwrap().join("wrong-auth.json");
    auth.write_auth_file(&wrong, "testkit", "wrong").unwrap();
    let svc = service_with(&env, |o| o.auth_file = Some(wrong.clone()));
    let err = svc
        .pull_image(&input, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImageError::Registry { source, .. } if source.is_unauthorized()),
        "{err}"
    );
    assert!(err.to_string().contains(&auth.host_port()), "{err}");
    // an unknown image
    let plain = registries().get(RegistryMode::Plain);
    let unknown = format!(
        "docker://{}",
        plain.image_reference("testkit/no-such-image:latest")
    );
    let svc = service_with(&env, |_| {});
    let err = svc
        .pull_image(&unknown, &PullOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-image"), "{err}");
    assert!(env.store.images().unwrap().is_empty());
    assert!(env.store.layers().unwrap().is_empty());

    // the right credentials through the auth file
    let svc = service_with(&env, |o| o.auth_file = Some(auth.auth_file().unwrap()));
    let pulled = svc
        .pull_image(&input, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.id, fx.image_id().unwrap());

    // TLS with the test CA as cert dir
    let tls = registries().get(RegistryMode::Tls);
    let env2 = new_env();
    let svc = service_with(&env2, |o| o.cert_dir = tls.cert_dir());
    let small = fixtures().image("small-01").unwrap();
    let input = format!(
        "docker://{}",
        tls.image_reference(&small.registry_reference())
    );
    let pulled = svc
        .pull_image(&input, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.id, small.image_id().unwrap());
}

#[test]
fn podman_lists_the_pulled_image() {
    for driver in e2e_drivers() {
        eprintln!("== podman_lists_the_pulled_image on {driver}");
        podman_lists_the_pulled_image_on(driver);
    }
}

fn podman_lists_the_pulled_image_on(driver: &str) {
    let env = new_env_on(driver);
    let svc = service_with(&env, |_| {});
    let plain = registries().get(RegistryMode::Plain);
    let fx = fixtures().image("busybox").unwrap();
    let input = plain.image_reference(&fx.registry_reference());
    let pulled = svc
        .pull_image_blocking(&input, &PullOptions::default())
        .unwrap();
    let listed = Podman::new(&env.root, &env.run, driver).json(&["images", "--format", "json"]);
    let images = listed.as_array().unwrap();
    assert_eq!(images.len(), 1, "{listed}");
    assert_eq!(images[0]["Id"], pulled.id);
    assert_eq!(images[0]["Digest"], fx.manifest_digest);
    let names = images[0]["Names"].as_array().unwrap();
    assert_eq!(names[0], input);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_image_reads_without_writing() {
    let env = new_env();
    let svc = service_with(&env, |_| {});
    let plain = registries().get(RegistryMode::Plain);
    let fx = fixtures().image("busybox-v2s2").unwrap();
    let prepared = svc
        .prepare_image(
            &plain.image_reference(&fx.registry_reference()),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        prepared.config_digest.to_string(),
        fx.config_digest.clone().unwrap()
    );
    assert_eq!(prepared.manifest_digest.to_string(), fx.manifest_digest);
    assert_eq!(prepared.top_digest, prepared.manifest_digest);
    let layout = svc
        .prepare_image(
            &fixtures().oci_reference("multiarch"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        layout.top_digest.to_string(),
        fixtures().image("multiarch").unwrap().manifest_digest
    );
    assert_ne!(layout.top_digest, layout.manifest_digest);
    // I34
    assert!(matches!(
        svc.prepare_image("", &PullOptions::default())
            .await
            .unwrap_err(),
        ImageError::InvalidImageName { .. }
    ));
    // I37/I38: nothing listens on localhost:80 → an error, the store untouched
    for input in [
        "docker://localhost/busybox:latest",
        "docker://localhost/busybox@sha256:2a03a6059f21e150ae84b0973863609494aad70f0a80eaeb64bddd8d92465812",
    ] {
        assert!(
            svc.pull_image(input, &PullOptions::default())
                .await
                .is_err(),
            "{input}"
        );
    }
    assert!(env.store.images().unwrap().is_empty());
    assert!(env.store.layers().unwrap().is_empty());
}

#[test]
fn podstore_reports_a_podman_pulled_image_as_podman_does() {
    let env = new_env();
    let plain = registries().get(RegistryMode::Plain);
    let fx = fixtures().image("multilayer").unwrap();
    let reference = plain.image_reference(&fx.registry_reference());
    let podman = Podman::new(&env.root, &env.run, "vfs");
    podman.run(&["pull", "--quiet", "--tls-verify=false", &reference]);
    let listed = podman.json(&["images", "--format", "json"]);
    let theirs = &listed.as_array().unwrap()[0];
    let svc = service_with(&env, |_| {});
    let ours = svc.image_status(&reference).unwrap();
    assert_eq!(theirs["Id"], ours.id);
    assert_eq!(theirs["Digest"], ours.digest);
    let mut their_digests: Vec<String> = theirs["RepoDigests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    their_digests.sort();
    assert_eq!(their_digests, ours.repo_digests);
    assert_eq!(theirs["Size"].as_u64(), ours.size);
    assert_eq!(ours.repo_tags, vec![reference.clone()]);
}

#[test]
fn podman_runs_a_podstore_pulled_image_on_overlay() {
    let dir = StoreDirs::new("podstore-image-overlay-");
    let (root, run) = (dir.root(), dir.runroot());
    let conf = dir.empty_file("registries.conf");
    let _cleanup = StoreGuard::overlay(&root, &run);
    let plain = registries().get(RegistryMode::Plain);
    let fx = fixtures().image("busybox").unwrap();
    let reference = plain.image_reference(&fx.registry_reference());
    {
        let store = Arc::new(Store::open(&StoreOptions::new(&root, &run, "overlay")).unwrap());
        let svc = ImageService::new(
            store,
            ImageServiceOptions {
                registries_conf: Some(conf),
                auth_file: Some(dir.path().join("none.json")),
                ..ImageServiceOptions::default()
            },
        )
        .unwrap();
        let pulled = svc
            .pull_image_blocking(&reference, &PullOptions::default())
            .unwrap();
        assert_eq!(pulled.id, fx.image_id().unwrap());
    }
    let out = dir
        .podman("overlay")
        .command()
        .args(["--runtime", "runc", "run", "--rm", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
        ])
        .arg(&reference)
        .args(["sh", "-c", "echo hi from $TESTKIT_IMAGE"])
        .output()
        .expect("running podman");
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hi from busybox"
    );
}
