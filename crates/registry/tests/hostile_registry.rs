//! Hostile registries (the in-process fake on 127.0.0.1): endless bodies, lying
//! `Content-Length`s, a slowloris, endless manifests and configs, redirect loops, 401 loops, and
//! configs and layers that do not match their digests. Each ends in a typed error naming the
//! input, without hanging (the client's own stall and rate limits end it; the tests only wrap
//! generous timeouts around them), and nothing is committed to the blob store, whose ingest
//! directory is left clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fake_registry as fake;

use std::sync::Arc;
use std::time::Duration;

use fake::{Auth, Body, Fault, Registry, Reply, blob_reply, pattern, serve};
use podstore_blobstore::BlobStore;
use podstore_reference::Digest;
use podstore_registry::media::OCI_MANIFEST;
use podstore_registry::{
    BlobRef, ClientOptions, Credentials, EndpointConfig, ManifestTarget, RegistryClient,
    RegistryError, RetryPolicy,
};

/// Far above anything the client's own limits allow: a test that reaches it has hung.
const HANG: Duration = Duration::from_secs(120);

fn options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
        },
        stall_timeout: Duration::from_secs(1),
        resume_delay: Duration::from_millis(10),
        write_buffer_size: 64 * 1024,
        ..ClientOptions::default()
    }
}

fn client(host: &str, credentials: Option<Credentials>) -> RegistryClient {
    RegistryClient::new(
        EndpointConfig {
            registry: host.to_owned(),
            insecure: true,
            credentials,
            ..EndpointConfig::default()
        },
        options(),
    )
    .unwrap()
}

fn tag() -> ManifestTarget {
    ManifestTarget::Tag("t".to_owned())
}

/// A blob store on /dev/shm, with a check that nothing was committed or left in `ingest/`.
struct Blobs {
    _dir: tempfile::TempDir,
    store: BlobStore,
}

impl Blobs {
    fn new() -> Blobs {
        let dir = tempfile::Builder::new()
            .prefix("hostile-registry-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let root = dir.path().join("blobs");
        Blobs {
            store: BlobStore::open(&root).unwrap(),
            _dir: dir,
        }
    }

    /// Nothing committed under `digest`, and no ingest file left for it.
    fn assert_clean(&self, digest: &Digest, case: &str) {
        assert!(!self.store.exists(digest), "{case}: committed");
        assert!(
            !self.store.ingest_path(digest).exists(),
            "{case}: ingest left at {}",
            self.store.ingest_path(digest).display()
        );
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HANG:?}"))
}

#[tokio::test]
async fn endless_and_lying_blob_bodies_stop_at_the_declared_size() {
    let declared = 100_000u64;
    let endless = Body::Generated {
        len: 1 << 40,
        pattern: pattern(7, 4096),
    };
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        if r.path().starts_with("/v2/endless/") {
            // a terabyte without Content-Length
            let mut reply = blob_reply(r, endless.clone());
            reply.no_content_length = true;
            return reply;
        }
        // Content-Length says 10 bytes (the descriptor says 100000) and 200000 follow
        let mut reply = blob_reply(
            r,
            Body::Bytes(Arc::new(pattern(9, 200_000).as_ref()[..200_000].to_vec())),
        );
        reply.no_content_length = true;
        reply.header("Content-Length", "10")
    })
    .await;
    let c = client(&server.host(), None);
    let blobs = Blobs::new();
    let digest = Digest::sha256_of(b"the real blob");
    for repo in ["endless/x", "short/x"] {
        let err = within(
            repo,
            c.pull_blob(
                repo,
                &BlobRef {
                    digest: digest.clone(),
                    size: Some(declared),
                },
                &blobs.store,
                None,
            ),
        )
        .await
        .unwrap_err();
        match &err {
            RegistryError::SizeMismatch {
                expected,
                digest: d,
                repository,
                ..
            } => {
                assert_eq!(
                    (*expected, d, repository.as_str()),
                    (declared, &digest, repo)
                );
            }
            other => panic!("{repo}: {other:?}"),
        }
        assert!(err.to_string().contains(&digest.to_string()), "{err}");
        blobs.assert_clean(&digest, repo);
    }
    // the endless body was cut off right after the declared size, not read to the end
    let sent = server.requests_to("/v2/endless/");
    assert_eq!(sent.len(), 1, "no retry of an oversized body");
}

#[tokio::test]
async fn slowloris_bodies_are_too_slow() {
    let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:2a03a6059f21e150ae84b0973863609494aad70f0a80eaeb64bddd8d92465812","size":1},"layers":[]}"#.repeat(20);
    let blob = pattern(3, 200_000).as_ref()[..200_000].to_vec();
    let digest = Digest::sha256_of(&blob);
    let (m, b) = (manifest.clone(), blob.clone());
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        // one byte every 20 ms: never silent for the 1 s stall timeout, but 50 bytes/s
        if r.path().contains("/manifests/") {
            return Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .bytes(m.clone())
                .fault(Fault::TrickleMillis(20));
        }
        blob_reply(r, Body::Bytes(Arc::new(b.clone()))).fault(Fault::TrickleMillis(20))
    })
    .await;
    let c = client(&server.host(), None);
    let err = within("manifest", c.get_manifest("slow/m", &tag()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooSlow { repository, what, .. } if repository == "slow/m" && what == "t"),
        "{err:?}"
    );
    let blobs = Blobs::new();
    let err = within(
        "blob",
        c.pull_blob(
            "slow/b",
            &BlobRef {
                digest: digest.clone(),
                size: Some(blob.len() as u64),
            },
            &blobs.store,
            None,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooSlow { what, rate, .. } if *what == digest.to_string() && *rate < 1024),
        "{err:?}"
    );
    assert!(err.to_string().contains("too slow"), "{err}");
    assert!(!blobs.store.exists(&digest));
}

#[tokio::test]
async fn endless_manifests_and_configs_are_capped() {
    let endless = Body::Generated {
        len: 1 << 40,
        pattern: Arc::new(b"{\"schemaVersion\":2,".repeat(100)),
    };
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        let mut reply = Reply::new(200).header("Content-Type", OCI_MANIFEST);
        reply.body = endless.clone();
        reply.no_content_length = true;
        reply
    })
    .await;
    let c = client(&server.host(), None);
    let err = within("manifest", c.get_manifest("huge/m", &tag()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooLarge { limit: 4_194_304, repository, .. } if repository == "huge/m"),
        "{err:?}"
    );
    let config = Digest::sha256_of(b"config");
    let err = within(
        "config",
        c.fetch_blob_bytes(
            "huge/c",
            &config,
            podstore_registry::media::MAX_CONFIG_BYTES,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::TooLarge { reference, .. } if *reference == config.to_string()),
        "{err:?}"
    );
}

#[tokio::test]
async fn redirect_loops_end() {
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        // redirect to itself, forever
        let to = format!("http://127.0.0.1:{}{}", r.port, r.target);
        Reply::new(307).header("Location", &to)
    })
    .await;
    let c = client(&server.host(), None);
    let err = within("manifest", c.get_manifest("loop/m", &tag()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Redirect { url, reason } if url.contains("loop/m") && reason.contains("redirects")),
        "{err:?}"
    );
    let requests = server.requests_to("/v2/loop/").len();
    assert!(requests <= 11, "{requests} requests for a redirect loop");
}

#[tokio::test]
async fn unauthorized_loops_end() {
    // /v2/ asks for a bearer token, the token server hands one out, and every request with
    // it is refused again.
    let server = serve(move |r| {
        let realm = format!("http://127.0.0.1:{}/token", r.port);
        let challenge =
            format!("Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:a/b:pull\"");
        match r.path() {
            "/token" => Reply::new(200).json(r#"{"token":"t0k3n","expires_in":300}"#),
            _ => Reply::new(401)
                .header("WWW-Authenticate", &challenge)
                .json(r#"{"errors":[{"code":"UNAUTHORIZED","message":"nope"}]}"#),
        }
    })
    .await;
    let c = client(&server.host(), Some(Credentials::basic("user", "password")));
    let err = within("manifest", c.get_manifest("a/b", &tag()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::Unauthorized { repository, .. } if repository == "a/b"),
        "{err:?}"
    );
    assert!(err.is_unauthorized());
    let total = server.requests().len();
    assert!(total <= 10, "{total} requests for a 401 loop");
}

#[tokio::test]
async fn config_and_layers_not_matching_their_digests() {
    let reg = Registry::new(Auth::None);
    let config = br#"{"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec();
    let layer = pattern(11, 50_000).as_ref()[..50_000].to_vec();
    // the manifest names these digests, the registry serves other bytes under them
    let config_digest = Digest::sha256_of(&config);
    let layer_digest = Digest::sha256_of(&layer);
    let wrong_config = br#"{"rootfs":{"type":"layers","diff_ids":["evil"]}}"#.to_vec();
    let mut wrong_layer = layer.clone();
    wrong_layer[25_000] ^= 0xff;
    let (wc, wl) = (wrong_config.clone(), wrong_layer.clone());
    let (cd, ld) = (config_digest.clone(), layer_digest.clone());
    let server = serve(move |r| {
        if r.path() == format!("/v2/x/y/blobs/{cd}") {
            return blob_reply(r, Body::Bytes(Arc::new(wc.clone())));
        }
        if r.path() == format!("/v2/x/y/blobs/{ld}") {
            return blob_reply(r, Body::Bytes(Arc::new(wl.clone())));
        }
        reg.handle(r)
    })
    .await;
    let c = client(&server.host(), None);
    let err = within("config", c.fetch_blob_bytes("x/y", &config_digest, 1 << 20))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DigestMismatch { expected, what: "blob", .. } if *expected == config_digest),
        "{err:?}"
    );
    let blobs = Blobs::new();
    let err = within(
        "layer",
        c.pull_blob(
            "x/y",
            &BlobRef {
                digest: layer_digest.clone(),
                size: Some(layer.len() as u64),
            },
            &blobs.store,
            None,
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, RegistryError::DigestMismatch { expected, actual, .. } if *expected == layer_digest && *actual == Digest::sha256_of(&wrong_layer)),
        "{err:?}"
    );
    assert!(err.to_string().contains(&layer_digest.to_string()), "{err}");
    blobs.assert_clean(&layer_digest, "layer");
}
