//! Fault tests against the in-process fake registry: auth flows, verification failures, retries,
//! resume, redirects, caps, media types, stalls, mirrors, concurrency and progress. Each ends in
//! a correct recovery or a clear error, and nothing that failed verification is committed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fake_registry as fake;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake::{Auth, Body, Fault, Registry, Reply, blob_reply, serve};
use podstore_reference::Digest;
use podstore_registry::media::{self, OCI_INDEX, OCI_MANIFEST};
use podstore_registry::{
    AccessConfig, AuthFiles, BlobRef, CertDirs, ClientOptions, Credentials, EndpointConfig,
    ImageLocation, ManifestKind, ManifestTarget, MemorySink, PlatformSelector, ProgressState,
    PullSource, Registries, RegistryClient, RegistryError, RetryPolicy,
};

fn options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
        },
        stall_timeout: Duration::from_secs(5),
        resume_delay: Duration::from_millis(10),
        write_buffer_size: 64 * 1024,
        ..ClientOptions::default()
    }
}

fn client_with(
    host: &str,
    credentials: Option<Credentials>,
    opts: ClientOptions,
) -> RegistryClient {
    RegistryClient::new(
        EndpointConfig {
            registry: host.to_owned(),
            insecure: true,
            credentials,
            ..EndpointConfig::default()
        },
        opts,
    )
    .unwrap()
}

fn client(host: &str) -> RegistryClient {
    client_with(host, None, options())
}

fn blob_data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn tag(t: &str) -> ManifestTarget {
    ManifestTarget::Tag(t.to_owned())
}

fn image_manifest(config: &Digest, layer: &Digest) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":3}}]}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn bearer_token_flow_with_credentials_and_cache() {
    let mut reg = Registry::new(Auth::Bearer {
        creds: Some(("alice".into(), "s3cret".into())),
        token: "tok-123".into(),
    });
    let data = blob_data(10_000);
    let blob = Digest::parse(&reg.blob(&data)).unwrap();
    let m = image_manifest(&blob, &blob);
    let mdigest = Digest::parse(&reg.manifest("team/app", "v1", OCI_MANIFEST, &m)).unwrap();
    let server = serve(move |r| reg.handle(r)).await;
    let c = client_with(
        &server.host(),
        Some(Credentials::basic("alice", "s3cret")),
        options(),
    );

    let manifest = c.get_manifest("team/app", &tag("v1")).await.unwrap();
    assert_eq!(manifest.digest, mdigest);
    assert_eq!(manifest.kind, ManifestKind::OciManifest);
    let sink = MemorySink::new();
    let pulled = c
        .pull_blob(
            "team/app",
            &BlobRef {
                digest: blob.clone(),
                size: Some(10_000),
            },
            &sink,
            None,
        )
        .await
        .unwrap();
    assert_eq!(pulled.size, 10_000);
    assert_eq!(sink.get(&blob).unwrap(), data);

    let tokens = server.requests_to("/token");
    assert_eq!(tokens.len(), 1, "the token is cached per scope");
    let q = tokens[0].query();
    for part in [
        "account=alice",
        "service=fake-registry",
        "scope=repository%3Ateam%2Fapp%3Apull",
    ] {
        assert!(q.contains(part), "token query {q:?} lacks {part}");
    }
    assert!(
        tokens[0]
            .header("authorization")
            .unwrap()
            .starts_with("Basic ")
    );
    for r in server.requests_to("/v2/team/app/") {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer tok-123"),
            "{}",
            r.target
        );
        assert_eq!(
            r.header("docker-distribution-api-version"),
            Some("registry/2.0")
        );
    }
    // The ping carries no credentials.
    assert!(
        server
            .requests_to("/v2/")
            .iter()
            .filter(|r| r.path() == "/v2/")
            .all(|r| r.header("authorization").is_none())
    );
    // Secrets stay out of Debug.
    let dbg = format!("{c:?}");
    assert!(dbg.contains("alice") && !dbg.contains("s3cret"), "{dbg}");
}

#[tokio::test]
async fn anonymous_bearer_and_wrong_password() {
    let mut reg = Registry::new(Auth::Bearer {
        creds: None,
        token: "anon".into(),
    });
    let m = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    reg.manifest("pub/img", "latest", OCI_MANIFEST, &m);
    let server = serve(move |r| reg.handle(r)).await;
    let c = client(&server.host());
    c.get_manifest("pub/img", &tag("latest")).await.unwrap();
    let t = &server.requests_to("/token")[0];
    assert!(t.header("authorization").is_none() && !t.query().contains("account="));

    let mut reg = Registry::new(Auth::Bearer {
        creds: Some(("alice".into(), "right".into())),
        token: "t".into(),
    });
    reg.manifest("pub/img", "latest", OCI_MANIFEST, &m);
    let server = serve(move |r| reg.handle(r)).await;
    let c = client_with(
        &server.host(),
        Some(Credentials::basic("alice", "wrong")),
        options(),
    );
    let err = c.get_manifest("pub/img", &tag("latest")).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("invalid username/password") && text.contains("pub/img"),
        "{text}"
    );
    assert!(!text.contains("wrong"), "the password leaked: {text}");
}

#[tokio::test]
async fn basic_auth_right_and_wrong() {
    let mut reg = Registry::new(Auth::Basic {
        user: "bob".into(),
        pass: "pw".into(),
    });
    let m = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    reg.manifest("a/b", "t", OCI_MANIFEST, &m);
    let server = serve(move |r| reg.handle(r)).await;
    let ok = client_with(
        &server.host(),
        Some(Credentials::basic("bob", "pw")),
        options(),
    );
    ok.get_manifest("a/b", &tag("t")).await.unwrap();
    let bad = client_with(
        &server.host(),
        Some(Credentials::basic("bob", "nope")),
        options(),
    );
    let err = bad.get_manifest("a/b", &tag("t")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::Unauthorized { ref repository, .. } if repository == "a/b"),
        "{err:?}"
    );
    let anon = client(&server.host());
    assert!(
        anon.get_manifest("a/b", &tag("t"))
            .await
            .unwrap_err()
            .is_unauthorized()
    );
}

#[tokio::test]
async fn wrong_digest_is_not_committed() {
    let mut reg = Registry::new(Auth::None);
    let claimed = Digest::sha256_of(b"what the manifest says");
    reg.blobs.insert(
        claimed.to_string(),
        Body::Bytes(Arc::new(b"something else entirely".to_vec())),
    );
    let server = serve(move |r| reg.handle(r)).await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: claimed.clone(),
                size: None,
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    match err {
        RegistryError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, Digest::sha256_of(b"something else entirely"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(sink.committed().is_empty());
    assert_eq!(
        sink.partial_len(&claimed),
        None,
        "a failed verification removes the ingest"
    );
}

#[tokio::test]
async fn truncated_body_is_a_size_mismatch() {
    let data = blob_data(50_000);
    let digest = Digest::sha256_of(&data);
    let d2 = data.clone();
    // A close-delimited body that ends early: no transport error, just too few bytes.
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        let mut reply = Reply::new(200)
            .bytes(d2.clone())
            .fault(Fault::CloseAfter(20_000));
        reply.no_content_length = true;
        reply
    })
    .await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(50_000),
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::SizeMismatch {
                expected: 50_000,
                actual: 20_000,
                ..
            }
        ),
        "{err:?}"
    );
    // Without a known size the digest check catches it.
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: None,
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(sink.committed().is_empty());
    assert_eq!(sink.partial_len(&digest), None);
}

#[tokio::test]
async fn server_errors_and_429_then_success() {
    let mut reg = Registry::new(Auth::None);
    let data = blob_data(4096);
    let digest = Digest::parse(&reg.blob(&data)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let server = serve(move |r| {
        if r.path().contains("/blobs/") {
            match n.fetch_add(1, Ordering::SeqCst) {
                0 => return Reply::new(500),
                1 => return Reply::new(429).header("Retry-After", "1"),
                2 => return Reply::new(503),
                _ => {}
            }
        }
        reg.handle(r)
    })
    .await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    c.pull_blob(
        "x/y",
        &BlobRef {
            digest: digest.clone(),
            size: Some(4096),
        },
        &sink,
        None,
    )
    .await
    .unwrap();
    assert_eq!(sink.get(&digest).unwrap(), data);
    assert_eq!(calls.load(Ordering::SeqCst), 4);

    // Always failing: the retries run out with a clear error.
    let server = serve(|r| {
        if r.path() == "/v2/" {
            Reply::new(200)
        } else {
            Reply::new(503)
        }
    })
    .await;
    let c = client(&server.host());
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: None,
            },
            &MemorySink::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::TooManyRetries { attempts: 4, .. }),
        "{err:?}"
    );
    assert_eq!(server.requests_to("/v2/x/y/blobs/").len(), 4);
}

#[tokio::test]
async fn connection_reset_mid_blob_resumes_with_range() {
    let mut reg = Registry::new(Auth::None);
    let data = blob_data(300_000);
    let digest = Digest::parse(&reg.blob(&data)).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let server = serve(move |r| {
        let reply = reg.handle(r);
        if r.path().contains("/blobs/") && n.fetch_add(1, Ordering::SeqCst) == 0 {
            return reply.fault(Fault::ResetAfter(100_000));
        }
        reply
    })
    .await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(10_000);
    let pulled = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(300_000),
            },
            &sink,
            Some(&tx),
        )
        .await
        .unwrap();
    assert_eq!(pulled.resumes, 1);
    assert_eq!(sink.get(&digest).unwrap(), data);
    let blob_requests = server.requests_to("/v2/x/y/blobs/");
    assert_eq!(blob_requests.len(), 2);
    let range = blob_requests[1].header("range").unwrap();
    let offset: u64 = range
        .strip_prefix("bytes=")
        .unwrap()
        .strip_suffix('-')
        .unwrap()
        .parse()
        .unwrap();
    assert!(offset > 0 && offset <= 100_000, "resume offset {offset}");
    drop(tx);
    let mut events = Vec::new();
    while let Some(e) = rx.recv().await {
        events.push(e);
    }
    assert_eq!(events.first().unwrap().state, ProgressState::Started);
    assert!(
        events
            .iter()
            .any(|e| e.state == ProgressState::Resuming && e.done == offset)
    );
    let last = events.last().unwrap();
    assert_eq!(
        (last.state, last.done, last.total),
        (ProgressState::Committed, 300_000, Some(300_000))
    );
    assert!(
        events.windows(2).all(|w| w[0].done <= w[1].done),
        "progress goes forward"
    );
}

#[tokio::test]
async fn range_ignored_restarts_and_bad_content_range_fails() {
    let data = blob_data(200_000);
    let digest = Digest::sha256_of(&data);
    // First answer resets; the server then ignores Range and answers 200 with the whole blob.
    let calls = Arc::new(AtomicUsize::new(0));
    let (n, d) = (calls.clone(), data.clone());
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        let reply = Reply::new(200).bytes(d.clone());
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            reply.fault(Fault::ResetAfter(50_000))
        } else {
            reply
        }
    })
    .await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let pulled = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(200_000),
            },
            &sink,
            None,
        )
        .await
        .unwrap();
    assert_eq!(pulled.resumes, 1);
    assert_eq!(sink.get(&digest).unwrap(), data);

    // A 206 whose Content-Range does not start at the offset asked for.
    let calls = Arc::new(AtomicUsize::new(0));
    let (n, d) = (calls.clone(), data.clone());
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        if n.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::new(200)
                .bytes(d.clone())
                .fault(Fault::ResetAfter(50_000));
        }
        let mut reply = Reply::new(206)
            .header("Content-Range", "bytes 0-199999/200000")
            .bytes(d.clone());
        reply.range = Some((0, 200_000));
        reply
    })
    .await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(200_000),
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::ResumeFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("Content-Range"), "{err}");
    assert!(sink.committed().is_empty());
}

#[tokio::test]
async fn redirect_to_another_host_drops_authorization() {
    let data = blob_data(5000);
    let digest = Digest::sha256_of(&data);
    let d = data.clone();
    let cdn = serve(move |r| blob_reply(r, Body::Bytes(Arc::new(d.clone())))).await;
    let cdn_port = cdn.port();
    let mut reg = Registry::new(Auth::Basic {
        user: "u".into(),
        pass: "p".into(),
    });
    reg.blob(&data);
    let server = serve(move |r| {
        if r.path().contains("/blobs/") && r.header("authorization").is_some() {
            // localhost is another host than 127.0.0.1; 127.0.0.1 on another port is the same host.
            let host = if r.query().is_empty() {
                "localhost"
            } else {
                "127.0.0.1"
            };
            let _ = &reg;
            return Reply::new(307)
                .header("Location", &format!("http://{host}:{cdn_port}/cdn/blob"));
        }
        reg.handle(r)
    })
    .await;
    let c = client_with(
        &server.host(),
        Some(Credentials::basic("u", "p")),
        options(),
    );
    let sink = MemorySink::new();
    c.pull_blob(
        "x/y",
        &BlobRef {
            digest: digest.clone(),
            size: Some(5000),
        },
        &sink,
        None,
    )
    .await
    .unwrap();
    assert_eq!(sink.get(&digest).unwrap(), data);
    let at_cdn = cdn.requests_to("/cdn/blob");
    assert_eq!(at_cdn.len(), 1);
    assert!(
        at_cdn[0].header("authorization").is_none(),
        "Authorization leaked to another host"
    );
    assert!(
        server.requests_to("/v2/x/y/blobs/")[0]
            .header("authorization")
            .is_some()
    );
}

#[tokio::test]
async fn redirect_to_same_host_other_port_keeps_authorization() {
    let data = blob_data(100);
    let digest = Digest::sha256_of(&data);
    let d = data.clone();
    let cdn = serve(move |r| blob_reply(r, Body::Bytes(Arc::new(d.clone())))).await;
    let cdn_port = cdn.port();
    let reg = Registry::new(Auth::Basic {
        user: "u".into(),
        pass: "p".into(),
    });
    let server = serve(move |r| {
        if r.path().contains("/blobs/") {
            return Reply::new(302)
                .header("Location", &format!("http://127.0.0.1:{cdn_port}/cdn/blob"));
        }
        reg.handle(r)
    })
    .await;
    let c = client_with(
        &server.host(),
        Some(Credentials::basic("u", "p")),
        options(),
    );
    c.pull_blob(
        "x/y",
        &BlobRef {
            digest,
            size: Some(100),
        },
        &MemorySink::new(),
        None,
    )
    .await
    .unwrap();
    assert!(
        cdn.requests_to("/cdn/blob")[0]
            .header("authorization")
            .is_some()
    );
}

#[tokio::test]
async fn manifest_caps_media_types_and_digests() {
    let mut reg = Registry::new(Auth::None);
    let big = format!(
        r#"{{"schemaVersion":2,"pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    reg.manifest("r/big", "t", OCI_MANIFEST, big.as_bytes());
    let schema1 = br#"{"schemaVersion":1,"fsLayers":[],"history":[]}"#;
    reg.manifest("r/old", "t", media::DOCKER_SCHEMA1_SIGNED, schema1);
    reg.manifest("r/json", "t", "application/json", schema1);
    reg.manifest("r/html", "t", "text/html; charset=utf-8", b"<html></html>");
    let good = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    reg.manifest(
        "r/good",
        "t",
        "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
        &good,
    );
    let ambiguous = br#"{"schemaVersion":2,"config":{},"layers":[],"manifests":[]}"#;
    reg.manifest("r/ambiguous", "t", OCI_MANIFEST, ambiguous);
    let big2 = big.clone();
    let server = serve(move |r| {
        if r.path() == "/v2/r/chunked/manifests/t" {
            let mut reply = Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .bytes(big2.clone().into_bytes());
            reply.no_content_length = true;
            return reply;
        }
        reg.handle(r)
    })
    .await;
    let c = client(&server.host());
    for repo in ["r/big", "r/chunked"] {
        let err = c.get_manifest(repo, &tag("t")).await.unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::TooLarge {
                    limit: 4_194_304,
                    ..
                }
            ),
            "{repo}: {err:?}"
        );
        assert!(err.to_string().contains(repo), "{err}");
    }
    for repo in ["r/old", "r/json"] {
        let err = c.get_manifest(repo, &tag("t")).await.unwrap_err();
        assert!(
            matches!(err, RegistryError::UnsupportedSchema1 { .. }),
            "{repo}: {err:?}"
        );
        assert!(err.to_string().contains("schema1"), "{err}");
    }
    let err = c.get_manifest("r/html", &tag("t")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::UnsupportedMediaType { ref media_type, .. } if media_type == "text/html"),
        "{err:?}"
    );
    let err = c.get_manifest("r/ambiguous", &tag("t")).await.unwrap_err();
    assert!(err.to_string().contains("ambiguous"), "{err}");
    let m = c.get_manifest("r/good", &tag("t")).await.unwrap();
    assert_eq!(m.bytes, good);
    // By digest: verified. Asking for a digest the registry serves other bytes under fails.
    let right = ManifestTarget::Digest(Digest::sha256_of(&good));
    assert_eq!(
        c.get_manifest("r/good", &right).await.unwrap().digest,
        Digest::sha256_of(&good)
    );
    let err = c.get_manifest("r/missing", &tag("t")).await.unwrap_err();
    assert!(err.is_manifest_unknown(), "{err:?}");
}

#[tokio::test]
async fn manifest_digest_mismatch() {
    let good = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    let wanted = Digest::sha256_of(b"another manifest");
    let g = good.clone();
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        Reply::new(200)
            .header("Content-Type", OCI_MANIFEST)
            .bytes(g.clone())
    })
    .await;
    let c = client(&server.host());
    let err = c
        .get_manifest("r/x", &ManifestTarget::Digest(wanted.clone()))
        .await
        .unwrap_err();
    match err {
        RegistryError::DigestMismatch {
            expected,
            actual,
            what,
            ..
        } => {
            assert_eq!(
                (expected, actual, what),
                (wanted, Digest::sha256_of(&good), "manifest")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stall_is_an_error_and_the_partial_resumes_later() {
    let data = blob_data(400_000);
    let digest = Digest::sha256_of(&data);
    let d = data.clone();
    let stalling = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        blob_reply(r, Body::Bytes(Arc::new(d.clone()))).fault(Fault::StallAfter(150_000))
    })
    .await;
    let opts = ClientOptions {
        stall_timeout: Duration::from_secs(1),
        ..options()
    };
    let c = client_with(&stalling.host(), None, opts.clone());
    let sink = MemorySink::new();
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(400_000),
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::Stalled { seconds: 1, .. }),
        "{err:?}"
    );
    assert!(sink.committed().is_empty());
    let kept = sink.partial_len(&digest).unwrap();
    assert!(
        kept > 0 && kept <= 150_000,
        "partial ingest kept {kept} bytes"
    );

    // A server that never answers is a stall too.
    let silent = serve(|r| {
        if r.path() == "/v2/" {
            Reply::new(200)
        } else {
            Reply::new(200).fault(Fault::NoResponse)
        }
    })
    .await;
    let c2 = client_with(&silent.host(), None, opts);
    let err = c2.get_manifest("x/y", &tag("t")).await.unwrap_err();
    assert!(matches!(err, RegistryError::Stalled { .. }), "{err:?}");

    // A healthy server: the download continues from the kept partial with Range.
    let mut reg = Registry::new(Auth::None);
    reg.blob(&data);
    let healthy = serve(move |r| reg.handle(r)).await;
    let c3 = client(&healthy.host());
    c3.pull_blob(
        "x/y",
        &BlobRef {
            digest: digest.clone(),
            size: Some(400_000),
        },
        &sink,
        None,
    )
    .await
    .unwrap();
    assert_eq!(sink.get(&digest).unwrap(), data);
    let req = &healthy.requests_to("/v2/x/y/blobs/")[0];
    assert_eq!(req.header("range"), Some(format!("bytes={kept}-").as_str()));
}

#[tokio::test]
async fn index_platform_selection() {
    let mut reg = Registry::new(Auth::None);
    let amd = image_manifest(&Digest::sha256_of(b"amd"), &Digest::sha256_of(b"l"));
    let arm = image_manifest(&Digest::sha256_of(b"arm"), &Digest::sha256_of(b"l"));
    let amd_d = Digest::parse(&reg.manifest("m/a", "amd-only", OCI_MANIFEST, &amd)).unwrap();
    let arm_d = Digest::parse(&reg.manifest("m/a", "arm-only", OCI_MANIFEST, &arm)).unwrap();
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
        {{"mediaType":"{OCI_MANIFEST}","digest":"{amd_d}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},
        {{"mediaType":"{OCI_MANIFEST}","digest":"{arm_d}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
        amd.len(),
        arm.len()
    );
    let index_d =
        Digest::parse(&reg.manifest("m/a", "latest", OCI_INDEX, index.as_bytes())).unwrap();
    let server = serve(move |r| reg.handle(r)).await;
    let c = client(&server.host());
    let cases = [
        (("amd64", ""), &amd_d),
        (("arm64", "v8"), &arm_d),
        (("arm64", ""), &arm_d),
    ];
    for ((arch, variant), want) in cases {
        let sel = PlatformSelector::for_platform("linux", arch, variant);
        let (top, inst) = c
            .get_image_manifest("m/a", &tag("latest"), &sel)
            .await
            .unwrap();
        assert_eq!(top.digest, index_d);
        assert_eq!(top.kind, ManifestKind::OciIndex);
        assert_eq!(&inst.digest, want, "{arch}/{variant}");
    }
    let registries = Registries::new(AccessConfig {
        options: options(),
        cert_dirs: CertDirs::PerHost(vec![]),
        auth_files: AuthFiles::none(),
        explicit_credentials: None,
    });
    let source = PullSource {
        insecure: true,
        ..PullSource::primary(ImageLocation::new(&server.host(), "m/a", tag("latest")).unwrap())
    };
    let resolved = registries.resolve(&[source]).await.unwrap();
    let arm64 = PlatformSelector::for_platform("linux", "arm64", "v8");
    assert_eq!(resolved.image_manifest(&arm64).await.unwrap().digest, arm_d);
    let err = c
        .get_image_manifest(
            "m/a",
            &tag("latest"),
            &PlatformSelector::for_platform("linux", "s390x", ""),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::NoMatchingPlatform { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn mirrors_in_order_then_primary() {
    let m = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    let mut with = Registry::new(Auth::None);
    with.manifest("lib/img", "1", OCI_MANIFEST, &m);
    let empty = Registry::new(Auth::None);
    let mirror_empty = serve(move |r| empty.handle(r)).await;
    let primary = serve(move |r| with.handle(r)).await;
    let registries = Registries::new(AccessConfig {
        options: options(),
        cert_dirs: CertDirs::PerHost(vec![]),
        auth_files: AuthFiles::none(),
        explicit_credentials: None,
    });
    let source = |host: &str, blocked: bool, is_mirror: bool| PullSource {
        location: ImageLocation::new(host, "lib/img", tag("1")).unwrap(),
        insecure: true,
        blocked,
        is_mirror,
    };
    let sources = [
        source(&primary.host(), true, true), // blocked: skipped even though it would work
        source(&mirror_empty.host(), false, true),
        source(&primary.host(), false, false),
    ];
    let resolved = registries.resolve(&sources).await.unwrap();
    assert_eq!(resolved.source, sources[2]);
    assert_eq!(resolved.manifest.bytes, m);
    assert_eq!(mirror_empty.requests_to("/v2/lib/img/manifests/1").len(), 1);
    // Only the unblocked primary entry reached the primary's manifest endpoint.
    assert_eq!(primary.requests_to("/v2/lib/img/manifests/1").len(), 1);

    let failing = [
        source(&mirror_empty.host(), false, true),
        source(&mirror_empty.host(), false, false),
    ];
    let err = registries.resolve(&failing).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, RegistryError::AllSourcesFailed { ref mirrors, .. } if mirrors.len() == 1),
        "{err:?}"
    );
    assert!(text.starts_with("(Mirrors also failed: ["), "{text}");
    let err = registries.resolve(&failing[1..]).await.unwrap_err();
    assert!(
        err.is_manifest_unknown(),
        "a single source's error is returned unchanged: {err:?}"
    );
}

#[tokio::test]
async fn concurrent_requests_are_bounded_per_registry() {
    let mut reg = Registry::new(Auth::None);
    let blobs: Vec<Vec<u8>> = (0..6).map(|i| blob_data(20_000 + i)).collect();
    let digests: Vec<Digest> = blobs
        .iter()
        .map(|b| Digest::parse(&reg.blob(b)).unwrap())
        .collect();
    let server = serve(move |r| {
        let mut reply = reg.handle(r);
        if r.path().contains("/blobs/") {
            reply.delay = Duration::from_millis(100);
        }
        reply
    })
    .await;
    let opts = ClientOptions {
        max_concurrent_requests: 2,
        ..options()
    };
    let c = Arc::new(client_with(&server.host(), None, opts));
    let sink = MemorySink::new();
    let mut tasks = Vec::new();
    for (d, b) in digests.iter().zip(&blobs) {
        let (c, sink, d, size) = (c.clone(), sink.clone(), d.clone(), b.len() as u64);
        tasks.push(tokio::spawn(async move {
            c.pull_blob(
                "x/y",
                &BlobRef {
                    digest: d,
                    size: Some(size),
                },
                &sink,
                None,
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(sink.committed().len(), 6);
    let max = server.max_active.load(Ordering::SeqCst);
    assert!(
        (1..=2).contains(&max),
        "at most 2 requests in flight, saw {max}"
    );
}

#[tokio::test]
async fn already_present_blob_is_not_downloaded() {
    let mut reg = Registry::new(Auth::None);
    let data = blob_data(1000);
    let digest = Digest::parse(&reg.blob(&data)).unwrap();
    let server = serve(move |r| reg.handle(r)).await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let blob = BlobRef {
        digest: digest.clone(),
        size: Some(1000),
    };
    assert!(
        !c.pull_blob("x/y", &blob, &sink, None)
            .await
            .unwrap()
            .already_present
    );
    let again = c.pull_blob("x/y", &blob, &sink, None).await.unwrap();
    assert!(again.already_present);
    assert_eq!(server.requests_to("/v2/x/y/blobs/").len(), 1);
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: Digest::sha256_of(b"absent"),
                size: None,
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BlobUnknown { .. }), "{err:?}");
    // A config-sized blob straight into memory, verified.
    assert_eq!(
        c.fetch_blob_bytes("x/y", &digest, 4096).await.unwrap(),
        data
    );
    let err = c.fetch_blob_bytes("x/y", &digest, 10).await.unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn secure_endpoint_does_not_fall_back_to_http() {
    let server = serve(|_| Reply::new(200)).await;
    let c = RegistryClient::new(
        EndpointConfig {
            registry: server.host(),
            ..EndpointConfig::default()
        },
        options(),
    )
    .unwrap();
    let err = c.ping().await.unwrap_err();
    assert!(matches!(err, RegistryError::Ping { .. }), "{err:?}");
    assert!(
        server.requests().is_empty(),
        "no plain-HTTP request to a secure endpoint"
    );
    let insecure = client(&server.host());
    assert_eq!(insecure.ping().await.unwrap(), "http");
}

#[tokio::test]
async fn blob_store_sink_resumes_and_refuses_bad_data() {
    let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
    let store = podstore_blobstore::BlobStore::open(dir.path()).unwrap();
    let mut reg = Registry::new(Auth::None);
    let data = blob_data(250_000);
    let digest = Digest::parse(&reg.blob(&data)).unwrap();
    let claimed = Digest::sha256_of(b"claimed");
    reg.blobs.insert(
        claimed.to_string(),
        Body::Bytes(Arc::new(b"not the claimed bytes".to_vec())),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let server = serve(move |r| {
        let reply = reg.handle(r);
        if r.path().contains("/blobs/") && n.fetch_add(1, Ordering::SeqCst) == 0 {
            return reply.fault(Fault::ResetAfter(80_000));
        }
        reply
    })
    .await;
    let c = client(&server.host());
    let pulled = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(250_000),
            },
            &store,
            None,
        )
        .await
        .unwrap();
    assert_eq!(pulled.resumes, 1);
    assert_eq!(std::fs::read(store.path(&digest)).unwrap(), data);

    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: claimed.clone(),
                size: None,
            },
            &store,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!store.exists(&claimed));
    assert!(
        !store.ingest_path(&claimed).exists(),
        "the failed ingest is removed"
    );
    let listed: Vec<Digest> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(listed, vec![digest]);
}

#[tokio::test]
async fn identity_token_uses_the_refresh_grant() {
    let m = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    let mut reg = Registry::new(Auth::Bearer {
        creds: None,
        token: "from-refresh".into(),
    });
    reg.manifest("a/b", "t", OCI_MANIFEST, &m);
    let server = serve(move |r| {
        if r.path() == "/token" && r.method != "POST" {
            return Reply::new(400);
        }
        reg.handle(r)
    })
    .await;
    let c = client_with(
        &server.host(),
        Some(Credentials::identity_token("", "refresh-me")),
        options(),
    );
    c.get_manifest("a/b", &tag("t")).await.unwrap();
    let token_requests = server.requests_to("/token");
    assert_eq!(token_requests.len(), 1);
    let form = String::from_utf8(token_requests[0].body.clone()).unwrap();
    for part in [
        "grant_type=refresh_token",
        "refresh_token=refresh-me",
        "client_id=containers%2Fimage",
        "service=fake-registry",
        "scope=repository%3Aa%2Fb%3Apull",
    ] {
        assert!(form.contains(part), "form {form:?} lacks {part}");
    }
    assert_eq!(
        token_requests[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[tokio::test]
async fn repeated_resets_without_progress_give_up_and_keep_the_partial() {
    let data = blob_data(3_000_000);
    let digest = Digest::sha256_of(&data);
    let d = data.clone();
    // Every answer breaks off 10 kB in: the first resume is allowed, the next one is not.
    let server = serve(move |r| {
        if r.path() == "/v2/" {
            return Reply::new(200);
        }
        blob_reply(r, Body::Bytes(Arc::new(d.clone()))).fault(Fault::ResetAfter(10_000))
    })
    .await;
    let c = client(&server.host());
    let sink = MemorySink::new();
    let err = c
        .pull_blob(
            "x/y",
            &BlobRef {
                digest: digest.clone(),
                size: Some(3_000_000),
            },
            &sink,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::ResumeFailed { .. }), "{err:?}");
    assert_eq!(server.requests_to("/v2/x/y/blobs/").len(), 2);
    assert!(sink.committed().is_empty());
    assert!(
        sink.partial_len(&digest).unwrap() > 0,
        "the partial download is kept for a later resume"
    );
}

#[tokio::test]
async fn insufficient_scope_retries_once_with_the_extra_scope() {
    let m = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    let body = m.clone();
    let server = serve(move |r| {
        let port = r.port;
        let challenge = format!("Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"svc\"");
        match r.path() {
            "/v2/" => Reply::new(401).header("WWW-Authenticate", &challenge),
            "/token" => {
                let full = r.query().contains("scope=repository%3Aother%2Fbase%3Apull");
                Reply::new(200).json(&format!(
                    r#"{{"token":"{}"}}"#,
                    if full { "full" } else { "narrow" }
                ))
            }
            _ if r.header("authorization") == Some("Bearer full") => Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .bytes(body.clone()),
            _ => Reply::new(401).header(
                "WWW-Authenticate",
                &format!(
                    "{challenge},error=\"insufficient_scope\",scope=\"repository:other/base:pull\""
                ),
            ),
        }
    })
    .await;
    let c = client(&server.host());
    let got = c.get_manifest("a/b", &tag("t")).await.unwrap();
    assert_eq!(got.bytes, m);
    let tokens = server.requests_to("/token");
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens[1]
            .query()
            .contains("scope=repository%3Aa%2Fb%3Apull"),
        "{}",
        tokens[1].query()
    );
    // Another repository: its own default scope, then the extra scope again.
    c.get_manifest("a/other", &tag("t")).await.unwrap();
    assert_eq!(server.requests_to("/token").len(), 4);
}

#[tokio::test]
async fn external_urls_first_without_credentials() {
    let data = blob_data(7000);
    let digest = Digest::sha256_of(&data);
    let d = data.clone();
    let external = serve(move |r| {
        if r.path() == "/ok/layer" {
            blob_reply(r, Body::Bytes(Arc::new(d.clone())))
        } else {
            Reply::new(404)
        }
    })
    .await;
    let mut reg = Registry::new(Auth::Basic {
        user: "u".into(),
        pass: "p".into(),
    });
    reg.blob(&data);
    let server = serve(move |r| reg.handle(r)).await;
    let c = client_with(
        &server.host(),
        Some(Credentials::basic("u", "p")),
        options(),
    );
    let blob = BlobRef {
        digest: digest.clone(),
        size: Some(7000),
    };
    let port = external.port();

    // Unusable URLs are skipped; the first usable one that answers 200 wins.
    let urls = vec![
        "ftp://127.0.0.1/layer".to_owned(),
        "not a url".to_owned(),
        format!("http://localhost:{port}/ok/layer"),
    ];
    let sink = MemorySink::new();
    c.pull_blob_with_urls("x/y", &blob, &urls, &sink, None)
        .await
        .unwrap();
    assert_eq!(sink.get(&digest).unwrap(), data);
    let fetched = external.requests_to("/ok/layer");
    assert_eq!(fetched.len(), 1);
    assert!(
        fetched[0].header("authorization").is_none(),
        "credentials sent to an external URL"
    );
    assert!(server.requests_to("/v2/x/y/blobs/").is_empty());

    // All tried URLs fail: a clear error, and no fallback to the registry.
    let urls = vec![format!("http://127.0.0.1:{port}/missing")];
    let err = c
        .pull_blob_with_urls("x/y", &blob, &urls, &MemorySink::new(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::ExternalUrlsFailed { ref errors, .. } if errors.len() == 1),
        "{err:?}"
    );
    assert!(server.requests_to("/v2/x/y/blobs/").is_empty());

    // No usable URL at all: the registry serves it.
    let sink = MemorySink::new();
    c.pull_blob_with_urls(
        "x/y",
        &blob,
        &["file:///etc/passwd".to_owned()],
        &sink,
        None,
    )
    .await
    .unwrap();
    assert_eq!(sink.get(&digest).unwrap(), data);
    assert_eq!(server.requests_to("/v2/x/y/blobs/").len(), 1);
}

#[tokio::test]
async fn expired_tokens_are_fetched_again_and_valid_ones_reused() {
    let m = image_manifest(&Digest::sha256_of(b"c"), &Digest::sha256_of(b"l"));
    for (issued_at, expected_token_requests) in [("2000-01-01T00:00:00Z", 3), ("", 1)] {
        let body = m.clone();
        let server = serve(move |r| {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"svc\"",
                r.port
            );
            match r.path() {
                "/v2/" => Reply::new(401).header("WWW-Authenticate", &challenge),
                "/token" if issued_at.is_empty() => {
                    Reply::new(200).json(r#"{"token":"t","expires_in":300}"#)
                }
                "/token" => Reply::new(200).json(&format!(
                    r#"{{"token":"t","expires_in":300,"issued_at":"{issued_at}"}}"#
                )),
                _ if r.header("authorization") == Some("Bearer t") => Reply::new(200)
                    .header("Content-Type", OCI_MANIFEST)
                    .header("Warning", "299 - \"this registry is deprecated\"")
                    .bytes(body.clone()),
                _ => Reply::new(401).header("WWW-Authenticate", &challenge),
            }
        })
        .await;
        let c = client(&server.host());
        for _ in 0..3 {
            c.get_manifest("a/b", &tag("t")).await.unwrap();
        }
        assert_eq!(
            server.requests_to("/token").len(),
            expected_token_requests,
            "issued_at {issued_at:?}"
        );
    }
}
