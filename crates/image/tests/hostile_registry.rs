//! Hostile registries through a whole `ImageService` pull into a real `Store` (overlay and vfs),
//! against the in-process fake registry on 127.0.0.1: lying sizes and `Content-Length`s, an
//! endless body, a stall, a slowloris, a huge manifest, a redirect loop, a 401 loop, a config
//! and a layer that do not match their digests, a truncated gzip stream, a connection dropped
//! mid-layer (for good and once), 429 with `Retry-After` (for good and once), a layer whose
//! DiffID is not the config's, a gzip bomb and a tar with traversal entries.
//!
//! The images have two layers: a good base and a top layer that the case makes hostile (or a
//! hostile manifest / config / auth in front of both). After every failing case: the error is
//! the expected typed variant and names the image (and the blob when one is at fault);
//! `Store::check` (layer contents re-read, nothing counted as young) finds nothing but the
//! base layer being unreferenced when it was committed before the failure (the documented
//! behaviour: layers committed before a failure stay and are reused; `check --repair` would
//! remove them); no image record and no layer but that complete base layer is visible; nothing
//! is left in `<graphroot>/tmp`, in the blob store's `ingest/` or `blobs/`; nothing was written
//! next to the store (a sentinel directory and the test directory's listing are unchanged);
//! then the good image pulls from a good registry into the same store and `check` is clean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fake_registry as fake;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake::{Auth, Body, Fault, Registry, Reply, Request, blob_reply, pattern, serve};
use podstore_image::{ImageError, ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{CheckOptions, Finding, Store, StoreOptions};
use podstore_reference::Digest;
use podstore_registry::{ClientOptions, RegistryError, RetryPolicy};
use podstore_testkit::peers::{e2e_drivers, shm_tempdir};
use podstore_testkit::tarball::{TarBuilder, TarEntry, TarFormat};

const REPO: &str = "hostile/img";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Far above anything the client's own limits allow: a case that reaches it has hung.
const HANG: Duration = Duration::from_secs(180);

fn tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut t = TarBuilder::new(Vec::new(), TarFormat::Pax);
    for e in entries {
        t.append(e).unwrap();
    }
    t.finish().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A layer as published: its blob, media type, DiffID and the size the manifest states.
#[derive(Clone)]
struct Layer {
    blob: Vec<u8>,
    media_type: &'static str,
    diff_id: Digest,
    declared_size: u64,
}

impl Layer {
    fn gzip(tar: &[u8]) -> Layer {
        let blob = gzip(tar);
        Layer {
            declared_size: blob.len() as u64,
            blob,
            media_type: LAYER_GZIP,
            diff_id: Digest::sha256_of(tar),
        }
    }
    fn plain(tar: Vec<u8>) -> Layer {
        Layer {
            declared_size: tar.len() as u64,
            diff_id: Digest::sha256_of(&tar),
            blob: tar,
            media_type: LAYER_TAR,
        }
    }
    fn digest(&self) -> Digest {
        Digest::sha256_of(&self.blob)
    }
}

fn base_layer() -> Layer {
    Layer::gzip(&tar(&[
        TarEntry::dir("base", 0o755),
        TarEntry::file("base/hello", 0o644, b"hello from the base layer\n".to_vec()),
    ]))
}

/// The good top layer: 256 KiB of incompressible data, so that faults land mid-stream.
fn good_top_tar() -> Vec<u8> {
    tar(&[
        TarEntry::dir("top", 0o755),
        TarEntry::file("top/data", 0o644, pattern(42, 256 * 1024).to_vec()),
    ])
}

/// A published two-layer image.
#[derive(Clone)]
struct Published {
    model: Registry,
    base: Layer,
    top: Layer,
    config: Vec<u8>,
    config_digest: Digest,
    /// The top layer's DiffID as the config states it.
    config_top_diff_id: Digest,
}

impl Published {
    fn new(top: Layer) -> Published {
        Published::with_config_diff_ids(top.clone(), None)
    }

    /// `top_diff_id` overrides the DiffID the config states for the top layer.
    fn with_config_diff_ids(top: Layer, top_diff_id: Option<Digest>) -> Published {
        let base = base_layer();
        let config_top_diff_id = top_diff_id.unwrap_or_else(|| top.diff_id.clone());
        let mut model = Registry::new(Auth::None);
        model.blob(&base.blob);
        model.blob(&top.blob);
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/bin/true"]}},"rootfs":{{"type":"layers","diff_ids":["{}","{}"]}}}}"#,
            base.diff_id, config_top_diff_id
        )
        .into_bytes();
        let config_digest = Digest::parse(&model.blob(&config)).unwrap();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"{}","digest":"{}","size":{}}},{{"mediaType":"{}","digest":"{}","size":{}}}]}}"#,
            config.len(),
            base.media_type,
            base.digest(),
            base.declared_size,
            top.media_type,
            top.digest(),
            top.declared_size,
        )
        .into_bytes();
        model.manifest(REPO, "latest", OCI_MANIFEST, &manifest);
        Published {
            model,
            base,
            top,
            config,
            config_digest,
            config_top_diff_id,
        }
    }

    /// The store layer IDs (containers/image's chain: `hex(diff1)`, `sha256(id1 + "+" + hex(diff2))`).
    fn layer_ids(&self) -> (String, String) {
        let base = self.base.diff_id.hex().to_owned();
        let top = Digest::sha256_of(format!("{base}+{}", self.config_top_diff_id.hex()).as_bytes())
            .hex()
            .to_owned();
        (base, top)
    }

    fn top_blob_path(&self) -> String {
        format!("/v2/{REPO}/blobs/{}", self.top.digest())
    }
}

/// How the hostile registry answers a request the case tampers with (`None`: the model answers).
type Tamper = Arc<dyn Fn(&Request, &Published, usize) -> Option<Reply> + Send + Sync>;

/// What the error must be.
type Expect = fn(&ImageError, &Published) -> bool;

/// A hostile case.
struct Case {
    name: &'static str,
    published: Published,
    tamper: Tamper,
    pull: PullOptions,
    expect: Expect,
    /// The blob the error must name, if the failure is about one.
    names_blob: Option<Digest>,
    /// Whether the failure happens while the top layer is being pulled (so the base layer may
    /// have been committed before it; on vfs, which stages layers in order, it was).
    at_top_layer: bool,
}

fn registry_error(err: &ImageError) -> Option<&RegistryError> {
    match err {
        ImageError::Registry { source, .. } => Some(source),
        _ => None,
    }
}

/// Applies `f` to the store error of a layer that could not be created.
fn layer_error(err: &ImageError, top_id: &str) -> Option<String> {
    match err {
        ImageError::Layer { layer, source, .. } if layer == top_id => Some(format!("{source:?}")),
        _ => None,
    }
}

fn top_blob_reply(req: &Request, p: &Published) -> Reply {
    blob_reply(req, Body::Bytes(Arc::new(p.top.blob.clone())))
}

fn on_top_blob(f: impl Fn(&Request, &Published, usize) -> Reply + Send + Sync + 'static) -> Tamper {
    Arc::new(move |req, p, n| (req.path() == p.top_blob_path()).then(|| f(req, p, n)))
}

fn cases() -> Vec<Case> {
    let good = Published::new(Layer::gzip(&good_top_tar()));
    let plain = Published::new(Layer::plain(good_top_tar()));
    let mut cases = Vec::new();

    // Sizes that lie.
    let mut short = good.top.clone();
    short.declared_size -= 1000;
    let p = Published::new(short);
    cases.push(Case {
        name: "descriptor size shorter than the blob",
        names_blob: Some(p.top.digest()),
        published: p,
        tamper: Arc::new(|_, _, _| None),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::SizeMismatch { digest, expected, .. })
                if *digest == p.top.digest() && *expected == p.top.declared_size)
        },
        at_top_layer: true,
    });
    let mut long = good.top.clone();
    long.declared_size += 1000;
    let p = Published::new(long);
    cases.push(Case {
        name: "descriptor size longer than the blob",
        names_blob: Some(p.top.digest()),
        published: p,
        tamper: Arc::new(|_, _, _| None),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::SizeMismatch { digest, expected, actual, .. })
                if *digest == p.top.digest() && *expected == p.top.declared_size && *actual == p.top.blob.len() as u64)
        },
        at_top_layer: true,
    });
    cases.push(Case {
        name: "Content-Length: 10 with the whole blob following",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, p, _| {
            let mut reply = top_blob_reply(req, p);
            reply.no_content_length = true;
            reply.header("Content-Length", "10")
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::SizeMismatch { digest, actual: 10, .. })
                if *digest == p.top.digest())
        },
        at_top_layer: true,
    });
    cases.push(Case {
        name: "Content-Length a MiB longer than the blob",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, p, _| {
            let mut reply = top_blob_reply(req, p);
            let len = reply.body.len() + (1 << 20);
            reply.no_content_length = true;
            reply.header("Content-Length", &len.to_string())
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::SizeMismatch { digest, .. })
                if *digest == p.top.digest())
        },
        at_top_layer: true,
    });
    cases.push(Case {
        name: "endless body (the blob, repeated for 1 TiB, no Content-Length)",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, p, _| {
            let mut reply = blob_reply(
                req,
                Body::Generated {
                    len: 1 << 40,
                    pattern: Arc::new(p.top.blob.clone()),
                },
            );
            reply.no_content_length = true;
            reply
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::SizeMismatch { digest, expected, .. })
                if *digest == p.top.digest() && *expected == p.top.declared_size)
        },
        at_top_layer: true,
    });

    // Slow and silent servers.
    cases.push(Case {
        name: "stall after 64 KiB (pull stall timeout 1 s)",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, p, _| top_blob_reply(req, p).fault(Fault::StallAfter(64 << 10))),
        pull: PullOptions {
            stall_timeout: Some(Duration::from_secs(1)),
            ..PullOptions::default()
        },
        expect: |e, p| {
            let (_, top) = p.layer_ids();
            matches!(e, ImageError::PullStalled { layer, blob, seconds: 1, .. }
                if *layer == top && *blob == p.top.digest().to_string())
        },
        at_top_layer: true,
    });
    cases.push(Case {
        name: "slowloris: one byte every 5 ms",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, p, _| top_blob_reply(req, p).fault(Fault::TrickleMillis(5))),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::TooSlow { what, rate, .. })
                if *what == p.top.digest().to_string() && *rate < 1024)
        },
        at_top_layer: true,
    });

    // Hostile documents and protocol loops.
    cases.push(Case {
        name: "manifest of 5 MiB",
        names_blob: None,
        published: good.clone(),
        tamper: Arc::new(|req, _, _| {
            req.path().contains("/manifests/").then(|| {
                let mut reply = Reply::new(200).header("Content-Type", OCI_MANIFEST);
                reply.body = Body::Generated {
                    len: 5 << 20,
                    pattern: Arc::new(b"{\"schemaVersion\":2,".repeat(64)),
                };
                reply
            })
        }),
        pull: PullOptions::default(),
        expect: |e, _| {
            matches!(
                registry_error(e),
                Some(RegistryError::TooLarge {
                    limit: 4_194_304,
                    ..
                })
            )
        },
        at_top_layer: false,
    });
    cases.push(Case {
        name: "redirect loop on the top layer blob",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, _, _| {
            let to = format!("http://127.0.0.1:{}{}", req.port, req.target);
            Reply::new(307).header("Location", &to)
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::Redirect { url, .. })
                if url.contains(&p.top.digest().to_string()))
        },
        at_top_layer: true,
    });
    cases.push(Case {
        name: "401 for every request, a fresh token each time",
        names_blob: None,
        published: good.clone(),
        tamper: Arc::new(|req, _, _| {
            let challenge = format!(
                "Bearer realm=\"http://127.0.0.1:{}/token\",service=\"fake\"",
                req.port
            );
            Some(match req.path() {
                "/token" => Reply::new(200).json(r#"{"token":"t0k3n","expires_in":300}"#),
                _ => Reply::new(401)
                    .header("WWW-Authenticate", &challenge)
                    .json(r#"{"errors":[{"code":"UNAUTHORIZED","message":"nope"}]}"#),
            })
        }),
        pull: PullOptions::default(),
        expect: |e, _| {
            matches!(registry_error(e), Some(RegistryError::Unauthorized { repository, .. })
                if repository == REPO)
        },
        at_top_layer: false,
    });
    cases.push(Case {
        name: "config bytes not matching the config digest",
        names_blob: Some(good.config_digest.clone()),
        published: good.clone(),
        tamper: Arc::new(|req, p, _| {
            (req.path() == format!("/v2/{REPO}/blobs/{}", p.config_digest)).then(|| {
                let evil = String::from_utf8(p.config.clone())
                    .unwrap()
                    .replace("/bin/true", "/bin/evil");
                blob_reply(req, Body::Bytes(Arc::new(evil.into_bytes())))
            })
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::DigestMismatch { expected, what: "blob", .. })
                if *expected == p.config_digest)
        },
        at_top_layer: false,
    });
    cases.push(Case {
        name: "layer bytes not matching the layer digest (found at EOF, after the apply)",
        names_blob: Some(plain.top.digest()),
        published: plain.clone(),
        tamper: on_top_blob(|req, p, _| {
            // one byte of file data near the end: the tar stays valid and is applied whole
            let mut wrong = p.top.blob.clone();
            let at = wrong.len() - 4096;
            wrong[at] ^= 0xff;
            blob_reply(req, Body::Bytes(Arc::new(wrong)))
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::DigestMismatch { expected, what: "blob", .. })
                if *expected == p.top.digest())
        },
        at_top_layer: true,
    });

    // Broken connections and rate limits.
    cases.push(Case {
        name: "connection dropped mid-layer, every time",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|req, p, n| {
            // the first answer breaks off half-way, every resume breaks off at once
            let after = if n == 0 {
                p.top.blob.len() as u64 / 2
            } else {
                0
            };
            top_blob_reply(req, p).fault(Fault::ResetAfter(after))
        }),
        pull: PullOptions::default(),
        // the resume of a break without progress is not retried
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::ResumeFailed { digest, offset, .. })
                if *digest == p.top.digest() && *offset > 0)
        },
        at_top_layer: true,
    });
    cases.push(Case {
        name: "429 with Retry-After: 1, every time",
        names_blob: Some(good.top.digest()),
        published: good.clone(),
        tamper: on_top_blob(|_, _, _| {
            Reply::new(429)
                .header("Retry-After", "1")
                .json(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#)
        }),
        pull: PullOptions::default(),
        expect: |e, p| {
            matches!(registry_error(e), Some(RegistryError::TooManyRetries { url, attempts: 3, .. })
                if url.contains(&p.top.digest().to_string()))
        },
        at_top_layer: true,
    });

    // Layers whose content is hostile (served honestly: digests and sizes match).
    let p = Published::with_config_diff_ids(
        Layer::gzip(&good_top_tar()),
        Some(Digest::sha256_of(b"not the layer")),
    );
    cases.push(Case {
        name: "layer DiffID not the config's rootfs.diff_ids entry",
        names_blob: Some(p.top.digest()),
        published: p,
        tamper: Arc::new(|_, _, _| None),
        pull: PullOptions::default(),
        expect: |e, p| {
            let (_, top) = p.layer_ids();
            layer_error(e, &top).is_some_and(|s| s.contains("DiffDigestMismatch"))
        },
        at_top_layer: true,
    });
    let mut truncated = gzip(&good_top_tar());
    truncated.truncate(truncated.len() / 2);
    let p = Published::new(Layer {
        declared_size: truncated.len() as u64,
        blob: truncated,
        media_type: LAYER_GZIP,
        diff_id: Digest::sha256_of(&good_top_tar()),
    });
    cases.push(Case {
        name: "gzip stream truncated half-way (digest and size match)",
        names_blob: Some(p.top.digest()),
        published: p,
        tamper: Arc::new(|_, _, _| None),
        pull: PullOptions::default(),
        expect: |e, p| layer_error(e, &p.layer_ids().1).is_some(),
        at_top_layer: true,
    });
    let mut bomb = good_top_tar();
    bomb.resize(bomb.len() + (64 << 20), 0);
    let p = Published::new(Layer::gzip(&bomb));
    cases.push(Case {
        name: "gzip bomb: 64 MiB of zeros behind the archive",
        names_blob: Some(p.top.digest()),
        published: p,
        tamper: Arc::new(|_, _, _| None),
        pull: PullOptions::default(),
        expect: |e, p| layer_error(e, &p.layer_ids().1).is_some_and(|s| s.contains("TrailingData")),
        at_top_layer: true,
    });
    let p = Published::new(Layer::gzip(&tar(&[
        TarEntry::dir("top", 0o755),
        TarEntry::file("top/fine", 0o644, b"fine".to_vec()),
        TarEntry::file("../../../../../../sentinel/escaped", 0o644, b"x".to_vec()),
    ])));
    cases.push(Case {
        name: "tar with a traversal entry",
        names_blob: Some(p.top.digest()),
        published: p,
        tamper: Arc::new(|_, _, _| None),
        pull: PullOptions::default(),
        expect: |e, p| layer_error(e, &p.layer_ids().1).is_some_and(|s| s.contains("Breakout")),
        at_top_layer: true,
    });
    cases.push(Case {
        name: "hostile base layer while the top layer is still streaming",
        names_blob: Some(good.base.digest()),
        published: good.clone(),
        tamper: Arc::new(|req, p, _| {
            if req.path() == format!("/v2/{REPO}/blobs/{}", p.base.digest()) {
                // as long as the real blob, but no gzip stream: the applier fails at once
                let garbage = pattern(13, p.base.blob.len()).to_vec();
                return Some(blob_reply(req, Body::Bytes(Arc::new(garbage))));
            }
            (req.path() == p.top_blob_path())
                .then(|| top_blob_reply(req, p).fault(Fault::StallAfter(128 << 10)))
        }),
        pull: PullOptions::default(),
        // the base blob is smaller than one client buffer: verified before the applier sees it
        expect: |e, p| {
            layer_error(e, &p.layer_ids().0).is_some()
                || matches!(registry_error(e), Some(RegistryError::DigestMismatch { expected, .. })
                    if *expected == p.base.digest())
        },
        at_top_layer: false,
    });
    cases
}

fn client_options() -> ClientOptions {
    ClientOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        },
        stall_timeout: Duration::from_secs(2),
        resume_delay: Duration::from_millis(10),
        write_buffer_size: 64 * 1024,
        ..ClientOptions::default()
    }
}

/// A store with its service, a sentinel directory next to it, and the test directory's
/// listing to compare.
struct Env {
    dir: tempfile::TempDir,
    store: Arc<Store>,
    service: ImageService,
}

impl Env {
    fn new(driver: &str) -> Env {
        let dir = shm_tempdir("podstore-hostile-pull-");
        std::fs::write(dir.path().join("registries.conf"), "").unwrap();
        std::fs::create_dir(dir.path().join("sentinel")).unwrap();
        std::fs::write(dir.path().join("sentinel/keep"), b"sentinel").unwrap();
        let store = Arc::new(
            Store::open(&StoreOptions::new(
                dir.path().join("root"),
                dir.path().join("run"),
                driver,
            ))
            .unwrap(),
        );
        let service = ImageService::new(
            Arc::clone(&store),
            ImageServiceOptions {
                registries_conf: Some(dir.path().join("registries.conf")),
                auth_file: Some(dir.path().join("none.json")),
                client_options: client_options(),
                ..ImageServiceOptions::default()
            },
        )
        .unwrap();
        Env {
            dir,
            store,
            service,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Every path under `dir`, relative, sorted.
    fn tree(dir: &Path) -> BTreeSet<String> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries {
                let e = e.unwrap();
                let path = e.path();
                out.insert(path.strip_prefix(base).unwrap().display().to_string());
                if e.file_type().unwrap().is_dir() {
                    walk(base, &path, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(dir, dir, &mut out);
        out
    }

    /// What lies next to the store (the store's own directories not descended into).
    fn outside(&self) -> BTreeSet<String> {
        let mut seen: BTreeSet<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        seen.extend(
            Env::tree(&self.dir.path().join("sentinel"))
                .into_iter()
                .map(|p| format!("sentinel/{p}")),
        );
        seen
    }

    fn check_options(&self) -> CheckOptions {
        CheckOptions {
            layer_contents: true,
            stale_after: Duration::ZERO,
            blob_stores: vec![self.root().join("podstore-blobs")],
        }
    }

    /// Files left behind in `<graphroot>/tmp` (lock files of creation locks excepted) and in
    /// the blob store.
    fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for (label, dir) in [
            ("tmp", self.root().join("tmp")),
            ("overlay/staging", self.root().join("overlay/staging")),
            ("blobs", self.root().join("podstore-blobs")),
        ] {
            for p in Env::tree(&dir) {
                let full = dir.join(&p);
                if full.is_dir() || p.ends_with(".lock") {
                    continue;
                }
                left.push(format!("{label}/{p}"));
            }
        }
        left
    }
}

async fn serve_published(published: Published, tamper: Tamper) -> fake::Server {
    let count = Arc::new(AtomicUsize::new(0));
    serve(move |req| {
        let n = if req.path() == published.top_blob_path() {
            count.fetch_add(1, Ordering::SeqCst)
        } else {
            usize::MAX
        };
        tamper(req, &published, n).unwrap_or_else(|| published.model.handle(req))
    })
    .await
}

/// Runs one case on one driver and asserts everything the module docs promise.
async fn run_case(case: &Case, driver: &str) {
    let what = format!("{driver}: {}", case.name);
    let env = Env::new(driver);
    let outside_before = env.outside();
    let server = serve_published(case.published.clone(), case.tamper.clone()).await;
    let input = format!("docker://{}/{REPO}:latest", server.host());
    let err = tokio::time::timeout(HANG, env.service.pull_image(&input, &case.pull))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HANG:?}"))
        .expect_err(&what);
    assert!(
        (case.expect)(&err, &case.published),
        "{what}: unexpected error {err:?}"
    );
    let message = err.to_string();
    eprintln!("{what}: {message}");
    assert!(message.contains(&input), "{what}: {message} names no image");
    if let Some(blob) = &case.names_blob {
        assert!(
            message.contains(&blob.to_string()),
            "{what}: {message} does not name blob {blob}"
        );
    }
    drop(server);

    // Nothing half-visible: no image; at most the base layer, complete.
    let (base_id, top_id) = case.published.layer_ids();
    assert!(env.store.images().unwrap().is_empty(), "{what}: image left");
    let layers = env.store.layers().unwrap();
    let ids: Vec<&str> = layers.iter().map(|l| l.id.as_str()).collect();
    if case.at_top_layer && driver == "vfs" {
        assert_eq!(
            ids,
            [base_id.as_str()],
            "{what}: vfs commits the base first"
        );
    } else if case.at_top_layer {
        assert!(
            ids.is_empty() || ids == [base_id.as_str()],
            "{what}: layers {ids:?}"
        );
    } else {
        assert!(ids.is_empty(), "{what}: layers {ids:?}");
    }
    assert!(!ids.contains(&top_id.as_str()), "{what}: top layer visible");
    let report = env.store.check(&env.check_options()).unwrap();
    let expected: Vec<Finding> = ids
        .iter()
        .map(|id| Finding::LayerUnreferenced {
            layer: (*id).to_owned(),
            read_write: false,
        })
        .collect();
    assert_eq!(report.findings, expected, "{what}: check");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "{what}: leftovers");
    assert_eq!(env.outside(), outside_before, "{what}: written outside");

    // The good image from a good registry, into the same store.
    let good = Published::new(Layer::gzip(&good_top_tar()));
    let model = good.model.clone();
    let server = serve(move |req| model.handle(req)).await;
    let input = format!("docker://{}/{REPO}:latest", server.host());
    let pulled = tokio::time::timeout(
        HANG,
        env.service.pull_image(&input, &PullOptions::default()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: good pull hung"))
    .unwrap_or_else(|e| panic!("{what}: good pull: {e}"));
    let (good_base, good_top) = good.layer_ids();
    assert_eq!(pulled.layer_ids, [good_base, good_top], "{what}");
    assert_eq!(pulled.layers_reused, ids.len(), "{what}: base reused");
    assert_eq!(env.store.images().unwrap().len(), 1, "{what}");
    let report = env.store.check(&env.check_options()).unwrap();
    assert!(report.is_clean(), "{what}: after the good pull {report:?}");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "{what}: leftovers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_registries_fail_full_pulls_cleanly() {
    let cases = cases();
    for driver in e2e_drivers() {
        for case in &cases {
            run_case(case, driver).await;
        }
    }
}

/// A registry that fails once and then behaves: the pull succeeds, and the store is as if
/// nothing had happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_registry_faults_are_survived() {
    let good = Published::new(Layer::gzip(&good_top_tar()));
    let transient: Vec<(&str, Tamper, usize)> = vec![
        (
            "connection dropped half-way once (resumed with Range)",
            on_top_blob(|req, p, n| {
                let reply = top_blob_reply(req, p);
                if n == 0 {
                    reply.fault(Fault::ResetAfter(p.top.blob.len() as u64 / 2))
                } else {
                    reply
                }
            }),
            2,
        ),
        (
            "429 with Retry-After: 1 once",
            on_top_blob(|req, p, n| {
                if n == 0 {
                    Reply::new(429).header("Retry-After", "1")
                } else {
                    top_blob_reply(req, p)
                }
            }),
            2,
        ),
    ];
    for driver in e2e_drivers() {
        for (name, tamper, requests) in &transient {
            let what = format!("{driver}: {name}");
            let env = Env::new(driver);
            let server = serve_published(good.clone(), tamper.clone()).await;
            let input = format!("docker://{}/{REPO}:latest", server.host());
            let pulled = tokio::time::timeout(
                HANG,
                env.service.pull_image(&input, &PullOptions::default()),
            )
            .await
            .unwrap_or_else(|_| panic!("{what}: hung"))
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(pulled.id, good.config_digest.hex(), "{what}");
            assert_eq!(
                server.requests_to(&good.top_blob_path()).len(),
                *requests,
                "{what}"
            );
            let report = env.store.check(&env.check_options()).unwrap();
            assert!(report.is_clean(), "{what}: {report:?}");
            assert_eq!(env.leftovers(), Vec::<String>::new(), "{what}");
            let top = env.store.layer(&pulled.layer_ids[1]).unwrap();
            assert_eq!(top.uncompressed_digest, good.top.diff_id.to_string());
        }
    }
}
