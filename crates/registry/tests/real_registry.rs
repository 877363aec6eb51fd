//! Against the real Debian `docker-registry` started by the testkit (plain HTTP, htpasswd basic
//! auth, TLS with a test CA through a certs.d directory): manifests, an index, config and layer
//! blobs into the blob store, credentials from an auth file, a wrong password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use podstore_blobstore::BlobStore;
use podstore_reference::{Digest, Reference};
use podstore_registry::{
    AccessConfig, AuthFiles, BlobRef, CertDirs, ClientOptions, Credentials, ImageLocation,
    ManifestKind, ManifestTarget, PlatformSelector, PullSource, Registries, RegistryError,
    RetryPolicy,
};
use podstore_testkit::fixtures::{FixtureSet, ImageFixture};
use podstore_testkit::registry::{PASSWORD, RegistryMode, RegistrySet, USERNAME};

fn setup() -> (&'static FixtureSet, &'static RegistrySet) {
    (
        FixtureSet::shared().unwrap(),
        RegistrySet::shared().unwrap(),
    )
}

fn options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        },
        stall_timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    }
}

fn registries(auth_files: AuthFiles, cert_dirs: CertDirs) -> Registries {
    Registries::new(AccessConfig {
        options: options(),
        cert_dirs,
        auth_files,
        explicit_credentials: None,
    })
}

fn location(host: &str, image: &ImageFixture) -> ImageLocation {
    let r = Reference::parse_normalized(&format!("{host}/{}", image.registry_reference())).unwrap();
    ImageLocation::from_reference(&r).unwrap()
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

/// Pulls `image` (an image manifest) from `location` with `client`: manifest, config, layers
/// into a fresh blob store, all checked against the fixture's bytes.
async fn pull_and_check(
    client: &podstore_registry::RegistryClient,
    loc: &ImageLocation,
    fixtures: &FixtureSet,
    image: &ImageFixture,
) {
    let (top, manifest) = client
        .get_image_manifest(
            &loc.repository,
            &loc.target,
            &PlatformSelector::for_platform("linux", "amd64", ""),
        )
        .await
        .unwrap();
    assert_eq!(top.digest, digest(&image.manifest_digest));
    assert_eq!(manifest.media_type(), image.manifest_media_type);
    assert_eq!(
        manifest.bytes,
        fixtures.read_blob(&image.manifest_digest).unwrap()
    );
    let config = digest(image.config_digest.as_deref().unwrap());
    let config_bytes = client
        .fetch_blob_bytes(&loc.repository, &config, 4 << 20)
        .await
        .unwrap();
    assert_eq!(
        config_bytes,
        fixtures.read_blob(&config.to_string()).unwrap()
    );
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    for layer in &image.layers {
        let blob = BlobRef {
            digest: digest(&layer.digest),
            size: Some(layer.size),
        };
        let pulled = client
            .pull_blob(&loc.repository, &blob, &store, Some(&tx))
            .await
            .unwrap();
        assert_eq!(pulled.size, layer.size);
        assert_eq!(
            std::fs::read(store.path(&blob.digest)).unwrap(),
            fixtures.read_blob(&layer.digest).unwrap()
        );
    }
    drop(tx);
    let mut committed = 0;
    while let Some(e) = rx.recv().await {
        if e.state == podstore_registry::ProgressState::Committed {
            committed += 1;
        }
    }
    assert_eq!(committed, image.layers.len());
}

#[tokio::test]
async fn plain_http_manifest_config_and_layers() {
    let (fixtures, set) = setup();
    let plain = set.get(RegistryMode::Plain);
    let regs = registries(AuthFiles::none(), CertDirs::PerHost(vec![]));
    for tag in ["busybox", "multilayer"] {
        let image = fixtures.image(tag).unwrap();
        let loc = location(&plain.host_port(), image);
        let client = regs.client_for(&loc, true).await.unwrap();
        assert_eq!(
            client.ping().await.unwrap(),
            "http",
            "insecure endpoint falls back to HTTP"
        );
        pull_and_check(&client, &loc, fixtures, image).await;
    }
    // A secure (not insecure) endpoint never falls back to plain HTTP.
    let image = fixtures.image("busybox").unwrap();
    let secure = regs
        .client_for(&location(&plain.host_port(), image), false)
        .await
        .unwrap();
    assert!(matches!(
        secure.ping().await.unwrap_err(),
        RegistryError::Ping { .. }
    ));
}

#[tokio::test]
async fn index_selects_the_platform_and_docker_schema2_works() {
    let (fixtures, set) = setup();
    let plain = set.get(RegistryMode::Plain);
    let regs = registries(AuthFiles::none(), CertDirs::PerHost(vec![]));
    let index = fixtures.image("multiarch").unwrap();
    assert!(index.is_index());
    let loc = location(&plain.host_port(), index);
    let client = regs.client_for(&loc, true).await.unwrap();
    for instance in &index.manifests {
        let p = instance.platform.as_ref().unwrap();
        let selector = PlatformSelector::for_platform(
            &p.os,
            &p.architecture,
            p.variant.as_deref().unwrap_or(""),
        );
        let (top, chosen) = client
            .get_image_manifest(&loc.repository, &loc.target, &selector)
            .await
            .unwrap();
        assert_eq!(top.digest, digest(&index.manifest_digest));
        assert_eq!(top.kind, ManifestKind::OciIndex);
        assert_eq!(chosen.digest, digest(&instance.manifest_digest), "{p:?}");
    }
    // By digest: verified against the digest asked for.
    let by_digest = ManifestTarget::Digest(digest(&index.manifest_digest));
    let m = client
        .get_manifest(&loc.repository, &by_digest)
        .await
        .unwrap();
    assert_eq!(m.bytes, fixtures.read_blob(&index.manifest_digest).unwrap());
    // Docker schema2 manifest, config and layers.
    let v2s2 = fixtures.image("busybox-v2s2").unwrap();
    assert_eq!(
        v2s2.manifest_media_type,
        podstore_registry::media::DOCKER_MANIFEST
    );
    let v2s2_loc = location(&plain.host_port(), v2s2);
    pull_and_check(&client, &v2s2_loc, fixtures, v2s2).await;
    let missing = client
        .get_manifest(&loc.repository, &ManifestTarget::Tag("no-such-tag".into()))
        .await
        .unwrap_err();
    assert!(missing.is_manifest_unknown(), "{missing:?}");
}

#[tokio::test]
async fn basic_auth_with_auth_file_and_wrong_password() {
    let (fixtures, set) = setup();
    let auth = set.get(RegistryMode::BasicAuth);
    let image = fixtures.image("busybox").unwrap();
    let loc = location(&auth.host_port(), image);

    let with_file = registries(
        AuthFiles::explicit(auth.auth_file().unwrap()),
        CertDirs::PerHost(vec![]),
    );
    let client = with_file.client_for(&loc, true).await.unwrap();
    pull_and_check(&client, &loc, fixtures, image).await;
    assert!(format!("{client:?}").contains(USERNAME) && !format!("{client:?}").contains(PASSWORD));

    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    let wrong = dir.path().join("auth.json");
    auth.write_auth_file(&wrong, USERNAME, "not-the-password")
        .unwrap();
    let wrong_regs = registries(AuthFiles::explicit(&wrong), CertDirs::PerHost(vec![]));
    let err = wrong_regs
        .resolve(&[PullSource {
            insecure: true,
            ..PullSource::primary(loc.clone())
        }])
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");
    assert!(err.to_string().contains(&auth.host_port()), "{err}");

    let anonymous = registries(AuthFiles::none(), CertDirs::PerHost(vec![]));
    let client = anonymous.client_for(&loc, true).await.unwrap();
    assert!(
        client
            .get_manifest(&loc.repository, &loc.target)
            .await
            .unwrap_err()
            .is_unauthorized()
    );

    // Explicit credentials go to their own host only.
    let explicit = Registries::new(AccessConfig {
        options: options(),
        cert_dirs: CertDirs::PerHost(vec![]),
        auth_files: AuthFiles::none(),
        explicit_credentials: Some((auth.host_port(), Credentials::basic(USERNAME, PASSWORD))),
    });
    let resolved = explicit
        .resolve(&[PullSource {
            insecure: true,
            ..PullSource::primary(loc.clone())
        }])
        .await
        .unwrap();
    assert_eq!(resolved.manifest.digest, digest(&image.manifest_digest));
}

#[tokio::test]
async fn tls_with_the_test_ca_from_a_certs_d_directory() {
    let (fixtures, set) = setup();
    let tls = set.get(RegistryMode::Tls);
    let image = fixtures.image("busybox").unwrap();
    let loc = location(&tls.host_port(), image);
    let certs_d = tls.certs_d_dir().unwrap().unwrap();

    let trusted = registries(AuthFiles::none(), CertDirs::PerHost(vec![certs_d]));
    let client = trusted.client_for(&loc, false).await.unwrap();
    assert_eq!(client.ping().await.unwrap(), "https");
    pull_and_check(&client, &loc, fixtures, image).await;

    let fixed = registries(AuthFiles::none(), CertDirs::Fixed(tls.cert_dir().unwrap()));
    let client = fixed.client_for(&loc, false).await.unwrap();
    client
        .get_manifest(&loc.repository, &loc.target)
        .await
        .unwrap();

    // Without the CA the certificate is refused, clearly, and without plain-HTTP fallback.
    let untrusted = registries(AuthFiles::none(), CertDirs::PerHost(vec![]));
    let client = untrusted.client_for(&loc, false).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(matches!(err, RegistryError::Ping { .. }), "{err:?}");
    assert!(
        err.to_string().to_ascii_lowercase().contains("certificate"),
        "{err}"
    );

    // Insecure: verification skipped, still HTTPS.
    let client = untrusted.client_for(&loc, true).await.unwrap();
    assert_eq!(client.ping().await.unwrap(), "https");
    client
        .get_manifest(&loc.repository, &loc.target)
        .await
        .unwrap();
}
