//! ImageService on a real vfs store under /dev/shm: the image test catalogue of
//! crio-storage-behavior §9.1 (I1–I32 where they make sense on a real store), with images
//! pulled from the testkit OCI layout by podstore itself and copied in by skopeo (interop: the
//! two record the same image identically, and podstore reports skopeo's image).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use podstore_image::{ImageError, ImageService, ImageServiceOptions, PullOptions};
use podstore_metadata::{ContainerOptions, NamesOp, RecordKind, Store, StoreOptions};
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::{Skopeo, shm_tempdir};

const SHA: &str = "2a03a6059f21e150ae84b0973863609494aad70f0a80eaeb64bddd8d92465812";
const NORM: &str = "docker.io/library/image:latest";

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    run: PathBuf,
    empty_conf: PathBuf,
    store: Arc<Store>,
}

fn new_env() -> Env {
    let dir = shm_tempdir("podstore-image-");
    let root = dir.path().join("root");
    let run = dir.path().join("run");
    let empty_conf = dir.path().join("registries.conf");
    std::fs::write(&empty_conf, "").unwrap();
    let store = Arc::new(Store::open(&StoreOptions::new(&root, &run, "vfs")).unwrap());
    Env {
        _dir: dir,
        root,
        run,
        empty_conf,
        store,
    }
}

/// The catalogue's service: default transport docker://, registries docker.io and
/// registry.example.org, an empty registries.conf.
fn service(env: &Env) -> ImageService {
    ImageService::new(
        Arc::clone(&env.store),
        ImageServiceOptions {
            search_registries: vec!["docker.io".into(), "registry.example.org".into()],
            registries_conf: Some(env.empty_conf.clone()),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap()
}

fn fixtures() -> &'static FixtureSet {
    FixtureSet::shared().unwrap()
}

/// Pulls a fixture from the OCI layout with podstore, naming it `name`.
fn pull_fixture(svc: &ImageService, tag: &str, name: &str) -> String {
    let pulled = svc
        .pull_image_blocking(
            &fixtures().oci_reference(tag),
            &PullOptions {
                destination_name: Some(name.to_owned()),
                ..PullOptions::default()
            },
        )
        .unwrap();
    pulled.id
}

fn skopeo_copy(env: &Env, tag: &str, name: &str) {
    Skopeo.run(&[
        "copy",
        "--quiet",
        &fixtures().oci_reference(tag),
        &Skopeo::store_reference(&env.root, &env.run, "vfs", name),
    ]);
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn construction_catalogue() {
    let env = new_env();
    // I1: duplicates accepted, de-duplicated in order.
    let svc = ImageService::new(
        Arc::clone(&env.store),
        ImageServiceOptions {
            insecure_registries: names(&["reg1", "reg1", "reg2"]),
            search_registries: names(&["reg3", "reg3", "reg4"]),
            registries_conf: Some(env.empty_conf.clone()),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    assert_eq!(svc.search_registries(), names(&["reg3", "reg4"]).as_slice());
    assert!(svc.is_insecure_registry("reg1"));
    assert!(!svc.is_insecure_registry("reg1:5000"));
    assert!(svc.is_insecure_registry("127.0.0.1:5000"));
    assert!(svc.is_insecure_registry("localhost:5000"));
    assert!(!svc.is_insecure_registry("quay.io"));
    // I5: the very store handle.
    assert!(Arc::ptr_eq(svc.store(), &env.store));

    // I2: a v1 registries.conf gives its search list.
    let v1 = env.root.parent().unwrap().join("v1.conf");
    std::fs::write(
        &v1,
        "[registries.search]\nregistries = ['quay.io', 'registry.access.redhat.com', 'registry.fedoraproject.org']\n",
    )
    .unwrap();
    let svc = ImageService::new(
        Arc::clone(&env.store),
        ImageServiceOptions {
            registries_conf: Some(v1),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    assert_eq!(
        svc.resolve_names("image").unwrap(),
        names(&[
            "quay.io/image",
            "registry.access.redhat.com/image",
            "registry.fedoraproject.org/image"
        ])
    );

    // I4: an explicit registries.conf that does not exist.
    let err = ImageService::new(
        Arc::clone(&env.store),
        ImageServiceOptions {
            registries_conf: Some(PathBuf::from("/invalid")),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::RegistriesConf { .. }), "{err}");
    assert!(err.to_string().contains("/invalid"), "{err}");

    // CIDR insecure entries.
    let svc = ImageService::new(
        Arc::clone(&env.store),
        ImageServiceOptions {
            insecure_registries: names(&["10.0.0.0/8"]),
            registries_conf: Some(env.empty_conf.clone()),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    assert!(svc.is_insecure_registry("10.1.2.3:5000"));
    assert!(!svc.is_insecure_registry("11.1.2.3"));
}

#[test]
fn resolve_names_catalogue() {
    let env = new_env();
    let svc = service(&env);
    let id = pull_fixture(&svc, "busybox", "localhost/busybox:latest");
    let s = format!("sha256:{SHA}");
    // (input, expected candidates)
    let cases: Vec<(String, Vec<String>)> = vec![
        // I6
        (
            "image".into(),
            names(&["docker.io/library/image", "registry.example.org/image"]),
        ),
        // I7
        (
            "docker.io/library/busybox:latest".into(),
            names(&["docker.io/library/busybox:latest"]),
        ),
        // I8
        (
            format!("image:latest@{s}"),
            vec![
                format!("docker.io/library/image@{s}"),
                format!("registry.example.org/image@{s}"),
            ],
        ),
        // I9
        (
            format!("docker.io/library/image:latest@{s}"),
            vec![format!("docker.io/library/image@{s}")],
        ),
        (
            "image:1.0".into(),
            names(&[
                "docker.io/library/image:1.0",
                "registry.example.org/image:1.0",
            ]),
        ),
        (
            "foo/bar".into(),
            names(&["docker.io/foo/bar", "registry.example.org/foo/bar"]),
        ),
        ("localhost/foo".into(), names(&["localhost/foo"])),
        ("myreg:5000/foo".into(), names(&["myreg:5000/foo"])),
        // I10 (real store): a local ID prefix and the full ID give [full ID]
        (id[..12].to_owned(), vec![id.clone()]),
        (id.clone(), vec![id.clone()]),
        // a local *name* does not short-circuit
        ("localhost/busybox".into(), names(&["localhost/busybox"])),
    ];
    for (input, expected) in cases {
        assert_eq!(svc.resolve_names(&input).unwrap(), expected, "{input}");
    }
    // I11: a 64-hex string that is no local image.
    let err = svc.resolve_names(SHA).unwrap_err();
    assert!(
        matches!(&err, ImageError::CannotParseImageId { input } if input == SHA),
        "{err}"
    );
    // I12
    let err = svc.resolve_names("camelCaseName").unwrap_err();
    assert!(matches!(err, ImageError::InvalidReference { .. }), "{err}");
    assert!(err.to_string().contains("camelCaseName"));
    // I13: no registries at all.
    let bare = ImageService::new(
        Arc::clone(&env.store),
        ImageServiceOptions {
            registries_conf: Some(env.empty_conf.clone()),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    let err = bare.resolve_names("image").unwrap_err();
    assert!(
        matches!(err, ImageError::NoRegistriesConfigured { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with("no registries configured while trying to pull an unqualified image")
    );
}

#[test]
fn podstore_pull_records_the_image_exactly_as_skopeo() {
    let a = new_env();
    let b = new_env();
    let svc = service(&a);
    let fx = fixtures().image("multilayer").unwrap();
    let id = pull_fixture(&svc, "multilayer", "localhost/multi:latest");
    skopeo_copy(&b, "multilayer", "localhost/multi:latest");
    assert_eq!(id, fx.image_id().unwrap());
    let ours = a.store.image(&id).unwrap();
    let theirs = b.store.image(&id).unwrap();
    assert_eq!(ours.id, theirs.id);
    assert_eq!(ours.digest, theirs.digest);
    assert_eq!(ours.digest, fx.manifest_digest);
    assert_eq!(ours.names, theirs.names);
    assert_eq!(ours.names_history, theirs.names_history);
    assert_eq!(ours.layer, theirs.layer);
    assert_eq!(ours.metadata, theirs.metadata);
    assert_eq!(ours.big_data_names, theirs.big_data_names);
    assert_eq!(ours.big_data_sizes, theirs.big_data_sizes);
    assert_eq!(ours.big_data_digests, theirs.big_data_digests);
    assert_eq!(ours.created, theirs.created);
    // images.json is byte-identical.
    assert_eq!(
        String::from_utf8(
            a.store
                .raw_records_file(podstore_metadata::RecordKind::Image)
                .unwrap()
        )
        .unwrap(),
        String::from_utf8(
            b.store
                .raw_records_file(podstore_metadata::RecordKind::Image)
                .unwrap()
        )
        .unwrap()
    );
    let (la, lb) = (a.store.layers().unwrap(), b.store.layers().unwrap());
    assert_eq!(la.len(), fx.layers.len());
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(
            (
                &x.id,
                &x.parent,
                &x.compressed_digest,
                x.compressed_size,
                &x.uncompressed_digest,
                x.uncompressed_size,
                x.compression
            ),
            (
                &y.id,
                &y.parent,
                &y.compressed_digest,
                y.compressed_size,
                &y.uncompressed_digest,
                y.uncompressed_size,
                y.compression
            )
        );
    }
    // podstore reports the same status for both stores.
    let theirs_svc = service(&b);
    let s1 = svc.image_status("localhost/multi").unwrap();
    let s2 = theirs_svc.image_status("localhost/multi").unwrap();
    // (compared as JSON: oci-spec keeps exposed ports from a map in hash order)
    assert_eq!(
        serde_json::to_value(&s1).unwrap(),
        serde_json::to_value(&s2).unwrap()
    );
    assert_eq!(s1.user, "1000:1000");
    assert_eq!(
        s1.size,
        Some(
            fx.layers.iter().map(|l| l.uncompressed_size).sum::<u64>()
                + fx.manifest_size * 2
                + fx.config_size
        )
    );
}

#[test]
fn status_of_a_skopeo_image() {
    let env = new_env();
    skopeo_copy(&env, "busybox", "docker.io/library/image:latest");
    let svc = service(&env);
    let fx = fixtures().image("busybox").unwrap();
    let id = fx.image_id().unwrap().to_owned();
    let digest = fx.manifest_digest.clone();
    for input in [
        "image".to_owned(),
        "docker.io/library/image".to_owned(),
        "docker.io/library/image:latest".to_owned(),
        id.clone(),
        id[..6].to_owned(),
        format!("containers-storage:{}", &id[..12]),
        "containers-storage:[vfs@/x+/y]image".to_owned(),
        format!("docker.io/library/image@{digest}"),
        format!("image@{id}"),
    ] {
        let r = svc
            .image_status(&input)
            .unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(r.id, id, "{input}");
        assert_eq!(r.name, NORM, "{input}");
        assert_eq!(r.repo_tags, names(&[NORM]));
        assert_eq!(
            r.repo_digests,
            vec![format!("docker.io/library/image@{digest}")]
        );
        assert_eq!(r.digest, digest);
        assert_eq!(r.config_digest, fx.config_digest.clone().unwrap());
        assert_eq!(r.user, "root");
        assert_eq!(
            r.labels.get("testkit.image").map(String::as_str),
            Some("busybox")
        );
        assert_eq!(r.previous_name, "docker.io/library/image");
        assert!(r.oci_config.is_some());
        assert!(r.size.unwrap() > fx.layers[0].uncompressed_size);
    }
    // §3: too short to be a prefix → a name → not known; a digest it does not have.
    for input in [
        id[..2].to_owned(),
        format!("docker.io/library/image@sha256:{SHA}"),
        "localhost/c".into(),
    ] {
        let err = svc.image_status(&input).unwrap_err();
        assert!(
            matches!(&err, ImageError::ImageNotKnown { input: i } if *i == input),
            "{input}: {err}"
        );
        assert!(err.to_string().contains(&input));
    }
    // I21, remote transports (§10.10), bad names.
    for (input, check) in [
        ("", "InvalidImageName"),
        ("docker://image", "NotLocal"),
        ("oci:/tmp/x:y", "NotLocal"),
        ("wrong://image", "InvalidReference"),
        ("camelCase", "InvalidReference"),
        ("image@", "InvalidImageName"),
    ] {
        let err = svc.image_status(input).unwrap_err();
        assert!(format!("{err:?}").starts_with(check), "{input}: {err:?}");
    }
    // JSON with the seed's field names.
    let json = serde_json::to_value(svc.image_status("image").unwrap()).unwrap();
    for key in [
        "ID",
        "Name",
        "RepoTags",
        "RepoDigests",
        "Size",
        "Digest",
        "ConfigDigest",
        "User",
        "PreviousName",
        "Labels",
        "OCIConfig",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
}

#[test]
fn list_images_catalogue() {
    let env = new_env();
    let svc = service(&env);
    // I24
    assert!(svc.list_images("").unwrap().is_empty());
    let id1 = pull_fixture(&svc, "busybox", NORM);
    let id2 = pull_fixture(&svc, "small-01", "localhost/small:1");
    // I25 (real-store variant): two images, in store order.
    let all = svc.list_images("").unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
        vec![id1.clone(), id2.clone()]
    );
    // I26 / I27 / I28
    assert_eq!(
        svc.list_images("image")
            .unwrap()
            .iter()
            .map(|r| r.id.clone())
            .collect::<Vec<_>>(),
        vec![id1.clone()]
    );
    assert_eq!(svc.list_images(&id2[..5]).unwrap()[0].id, id2);
    assert!(svc.list_images("absent").unwrap().is_empty());
    assert!(svc.list_images("wrong://image").is_err());
    // names are recomputed on every call even though the facts are cached
    env.store
        .update_image_names(&id1, &names(&["localhost/renamed:1"]), NamesOp::Set)
        .unwrap();
    let again = svc.list_images("").unwrap();
    assert_eq!(again[0].repo_tags, names(&["localhost/renamed:1"]));
    assert_eq!(again[0].previous_name, "localhost/renamed");
    assert_eq!(
        svc.image_status(&id1).unwrap().repo_tags,
        names(&["localhost/renamed:1"])
    );

    // An image still being pulled (no manifest yet) is skipped by the full list (§10.1).
    env.store
        .create_image(podstore_metadata::ImageOptions {
            id: Some(SHA.to_owned()),
            names: names(&["localhost/pulling:1"]),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(svc.list_images("").unwrap().len(), 2);
    // … but asked for by name it is an error (I29), as is its status (I23).
    assert!(svc.list_images("localhost/pulling:1").is_err());
    assert!(svc.image_status("localhost/pulling:1").is_err());

    // I23/I29 on a complete image whose manifest file was lost: a fresh service (no cache).
    let manifest = env.root.join("vfs-images").join(&id2).join("manifest");
    std::fs::remove_file(&manifest).unwrap();
    let fresh = service(&env);
    assert!(fresh.image_status("localhost/small:1").is_err());
    assert!(fresh.list_images("localhost/small:1").is_err());
}

/// Listing N images reads `images.json` and `layers.json` once and checks their records once
/// (the listing was quadratic when each image's big-data read re-loaded and re-checked every
/// image record and each size summed over every layer record).
#[test]
fn list_images_loads_the_records_once() {
    let env = new_env();
    let svc = service(&env);
    let base = pull_fixture(&svc, "busybox", NORM);
    let record = env.store.image(&base).unwrap();
    let big_data: Vec<podstore_metadata::BigDataItem> = record
        .big_data_names
        .iter()
        .map(|key| podstore_metadata::BigDataItem {
            key: key.clone(),
            data: env.store.image_big_data(&base, key).unwrap(),
            digest: None,
        })
        .collect();
    let copies = 30;
    for k in 0..copies {
        env.store
            .create_image(podstore_metadata::ImageOptions {
                names: vec![format!("localhost/copy-{k}:latest")],
                top_layer: Some(record.layer.clone()),
                metadata: "{}".into(),
                big_data: big_data.clone(),
                ..Default::default()
            })
            .unwrap();
    }
    // A fresh store and service, as a `podstore images` process has.
    let store = Arc::new(Store::open(&StoreOptions::new(&env.root, &env.run, "vfs")).unwrap());
    let svc = ImageService::new(
        Arc::clone(&store),
        ImageServiceOptions {
            registries_conf: Some(env.empty_conf.clone()),
            ..ImageServiceOptions::default()
        },
    )
    .unwrap();
    let kinds = [RecordKind::Image, RecordKind::Layer];
    let before = kinds.map(|kind| store.record_load_counts(kind));
    let listed = svc.list_images("").unwrap();
    let after = kinds.map(|kind| store.record_load_counts(kind));
    assert_eq!(listed.len(), copies + 1);
    let size = listed[0].size;
    assert!(size.is_some_and(|size| size > 0), "{size:?}");
    assert!(listed.iter().all(|image| image.size == size));
    for (kind, (before, after)) in kinds.iter().zip(before.iter().zip(after.iter())) {
        assert!(
            after.decoded <= before.decoded + 1 && after.views_built <= before.views_built + 1,
            "{kind}: listing {} images went from {before:?} to {after:?}",
            copies + 1
        );
    }
}

#[test]
fn schema1_image_status_catalogue_i20() {
    let env = new_env();
    let svc = service(&env);
    let schema1 = br#"{"schemaVersion":1,"name":"image","tag":"latest","fsLayers":[{"blobSum":""}],"history":[{"v1Compatibility":"{\"id\":\"e45a5af57b00862e5ef5782a9925979a02ba2b12dff832fd0991335f4a11e5c5\",\"parent\":\"\"}"}]}"#;
    let d = podstore_reference::Digest::sha256_of(schema1);
    env.store
        .create_image(podstore_metadata::ImageOptions {
            id: Some(SHA.to_owned()),
            names: vec![
                NORM.to_owned(),
                format!("localhost/a@sha256:{SHA}"),
                format!("localhost/b@sha256:{SHA}"),
                "localhost/c:latest".to_owned(),
            ],
            big_data: vec![podstore_metadata::BigDataItem {
                key: "manifest".into(),
                data: schema1.to_vec(),
                digest: Some(d.clone()),
            }],
            ..Default::default()
        })
        .unwrap();
    let r = svc.image_status("image").unwrap();
    assert_eq!(r.id, SHA);
    assert_eq!(r.name, NORM);
    assert_eq!(r.repo_tags, names(&[NORM, "localhost/c:latest"]));
    let mut expected = vec![
        format!("docker.io/library/image@{d}"),
        format!("localhost/a@{d}"),
        format!("localhost/a@sha256:{SHA}"),
        format!("localhost/b@{d}"),
        format!("localhost/b@sha256:{SHA}"),
        format!("localhost/c@{d}"),
    ];
    expected.sort();
    assert_eq!(r.repo_digests, expected);
    assert_eq!(r.digest, d.to_string());
    assert_eq!(r.config_digest, "");
    assert_eq!(r.size, Some(schema1.len() as u64));
    assert_eq!(r.user, "");
    assert!(r.oci_config.is_none());
}

#[test]
fn untag_catalogue() {
    let env = new_env();
    let svc = service(&env);
    // I16: nothing in the store.
    let err = svc.untag_image("image").unwrap_err();
    assert!(err.is_image_not_known(), "{err}");
    // I15
    assert!(matches!(
        svc.untag_image("").unwrap_err(),
        ImageError::InvalidImageName { .. }
    ));

    // I14: the only name → the image and its layers are gone.
    let id = pull_fixture(&svc, "busybox", NORM);
    assert_eq!(env.store.layers().unwrap().len(), 1);
    svc.untag_image("image").unwrap();
    assert!(env.store.images().unwrap().is_empty());
    assert!(env.store.layers().unwrap().is_empty());

    // I17 / I18: remote transports are refused, the store is untouched.
    let id = {
        let again = pull_fixture(&svc, "busybox", "localhost/busybox:latest");
        assert_eq!(again, id);
        again
    };
    for input in [
        "docker://localhost/busybox:latest".to_owned(),
        format!("docker://localhost/busybox@sha256:{SHA}"),
    ] {
        let err = svc.untag_image(&input).unwrap_err();
        assert!(matches!(err, ImageError::NotLocal { .. }), "{err}");
    }
    assert_eq!(
        env.store.image(&id).unwrap().names,
        names(&["localhost/busybox:latest"])
    );

    // I19 (success variant): exactly the requested name goes, the image stays.
    env.store
        .update_image_names(
            &id,
            &names(&[NORM, "localhost/b:latest", "localhost/c:latest"]),
            NamesOp::Set,
        )
        .unwrap();
    svc.untag_image("image").unwrap();
    assert_eq!(
        env.store.image(&id).unwrap().names,
        names(&["localhost/b:latest", "localhost/c:latest"])
    );
    // a name typed exactly as stored
    svc.untag_image("localhost/c:latest").unwrap();
    assert_eq!(
        env.store.image(&id).unwrap().names,
        names(&["localhost/b:latest"])
    );

    // In use by a container: refused, names unchanged.
    let ctr = env
        .store
        .create_container(ContainerOptions {
            image: id.clone(),
            ..ContainerOptions::default()
        })
        .unwrap();
    let err = svc.untag_image("localhost/b").unwrap_err();
    assert!(
        matches!(&err, ImageError::ImageInUse { id: i, .. } if *i == id),
        "{err}"
    );
    assert!(err.to_string().contains("localhost/b"));
    assert_eq!(
        env.store.image(&id).unwrap().names,
        names(&["localhost/b:latest"])
    );
    assert!(matches!(
        svc.untag_image(&id).unwrap_err(),
        ImageError::ImageInUse { .. }
    ));
    env.store.delete_container(&ctr.id).unwrap();

    // By ID prefix: the whole image goes, whatever its names.
    env.store
        .update_image_names(
            &id,
            &names(&["localhost/b:latest", "localhost/x:1"]),
            NamesOp::Set,
        )
        .unwrap();
    svc.untag_image(&id[..10]).unwrap();
    assert!(env.store.images().unwrap().is_empty());
    assert!(svc.image_status(&id).unwrap_err().is_image_not_known());
}

#[test]
fn oci_layout_pull_errors_leave_the_store_unchanged() {
    let env = new_env();
    let svc = service(&env);
    let dir = fixtures().dir().to_owned();
    let cases = [
        format!("oci:{}:no-such-tag", dir.display()),
        "oci:/nonexistent/layout:busybox".to_owned(),
        String::new(),
        "containers-storage:busybox".to_owned(),
        "dir:/tmp/x".to_owned(),
    ];
    for input in &cases {
        let err = svc
            .pull_image_blocking(input, &PullOptions::default())
            .unwrap_err();
        assert!(!err.to_string().is_empty(), "{input}");
    }
    assert!(env.store.images().unwrap().is_empty());
    assert!(env.store.layers().unwrap().is_empty());
    let _ = Path::new(&dir);
}
