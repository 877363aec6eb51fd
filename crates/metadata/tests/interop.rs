//! Interop with the real containers/storage 1.43 tools: stores written by skopeo, podman and the
//! `containers-storage` CLI are read by podstore and re-saved byte for byte; what podstore
//! writes is listed by them with the same IDs, names, digests and sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{Scratch, cs_json, have, run, run_stdout, test_image, write_oci_layout};
use podstore_layer::MountOptions;
use podstore_metadata::{
    BigDataItem, ContainerOptions, Error, GoTime, ImageOptions, NamesOp, RecordKind,
};

fn tools() -> bool {
    have("skopeo") && have("containers-storage")
}

/// Populates a store with skopeo (two images) and the containers-storage CLI (a container
/// with HTML-escaped names and big data).
fn populate(s: &Scratch) -> (common::TestImage, common::TestImage) {
    let a = test_image("a");
    let b = test_image("b");
    let oci = s.dir.path().join("oci");
    write_oci_layout(&oci, &[("a", &a), ("b", &b)]);
    for (tag, name) in [("a", "example.com/test/a:1"), ("b", "example.com/test/b:1")] {
        run(std::process::Command::new("skopeo").args([
            "copy",
            "-q",
            &format!("oci:{}:{tag}", oci.display()),
            &s.store_ref(name),
        ]));
    }
    run(s
        .cs()
        .args(["create-container", "--name", "c1", "--name", "x<y>&z"])
        .arg(b.id()));
    let data = s.dir.path().join("data");
    fs::write(&data, b"{\"k\":1}").unwrap();
    run(s
        .cs()
        .args(["set-container-data", "-f"])
        .arg(&data)
        .args(["c1", "crio-config"]));
    (a, b)
}

fn records_files(s: &Scratch) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let d = s.driver;
    [
        s.root().join(format!("{d}-layers/layers.json")),
        s.root().join(format!("{d}-images/images.json")),
        s.root().join(format!("{d}-containers/containers.json")),
        s.run_root().join(format!("{d}-layers/mountpoints.json")),
    ]
    .into_iter()
    .map(|p| {
        let b = fs::read(&p).unwrap();
        (p, b)
    })
    .collect()
}

fn read_then_rewrite_byte_identical(driver: &'static str, base: &str) {
    if !tools() {
        return;
    }
    let s = Scratch::new_in(base, driver);
    let (a, b) = populate(&s);
    let before = records_files(&s);
    let images_lock = s.root().join(format!("{driver}-images/images.lock"));
    let token_before = fs::read(&images_lock).unwrap();

    let store = s.open();
    // Opening (recovery under write locks) must not rewrite anything that is consistent.
    assert_eq!(records_files(&s), before, "open rewrote a consistent store");

    // What skopeo and the CLI wrote reads back with c/image's IDs and digests.
    for (img, name) in [(&a, "example.com/test/a:1"), (&b, "example.com/test/b:1")] {
        let rec = store.image(name).unwrap();
        assert_eq!(rec.id, img.id());
        assert_eq!(rec.digest, img.manifest_digest.to_string());
        assert_eq!(rec.names, vec![name.to_owned()]);
        assert_eq!(rec.layer, *img.layer_ids().last().unwrap());
        assert_eq!(
            store.image_big_data(&rec.id, "manifest").unwrap(),
            img.manifest
        );
        assert_eq!(
            store
                .image_big_data(&rec.id, &img.config_digest.to_string())
                .unwrap(),
            img.config
        );
        for (l, id) in img.layers.iter().zip(img.layer_ids()) {
            let layer = store.layer(&id).unwrap();
            assert_eq!(layer.uncompressed_digest, l.diff_id.to_string());
            assert_eq!(layer.compressed_digest, l.blob.to_string());
            assert_eq!(layer.uncompressed_size, l.tar.len() as i64);
            assert_eq!(layer.compressed_size, l.gz.len() as i64);
            assert_eq!(layer.compression, 2);
        }
    }
    let c = store.container("x<y>&z").unwrap();
    assert_eq!(c.names, vec!["c1".to_owned(), "x<y>&z".to_owned()]);
    assert_eq!(c.image, b.id());
    assert_eq!(
        store.container(&c.layer).unwrap().id,
        c.id,
        "lookup by layer ID"
    );
    assert_eq!(
        store.container(&c.id[..12]).unwrap().id,
        c.id,
        "lookup by prefix"
    );
    assert_eq!(
        store.container_big_data("c1", "crio-config").unwrap(),
        b"{\"k\":1}"
    );
    assert_eq!(
        store.layer(&c.layer).unwrap().parent,
        *b.layer_ids().last().unwrap()
    );

    // Re-save every file through a no-op write: bytes must not change, tokens must.
    store
        .set_image_metadata(&a.id(), &store.image(&a.id()).unwrap().metadata)
        .unwrap();
    store.set_layer_metadata(&c.layer, "").unwrap();
    store.set_container_metadata("c1", "").unwrap();
    let after = records_files(&s);
    for ((path, want), (_, got)) in before.iter().zip(after.iter()) {
        assert_eq!(
            String::from_utf8_lossy(got),
            String::from_utf8_lossy(want),
            "{} changed on rewrite",
            path.display()
        );
    }
    let token_after = fs::read(&images_lock).unwrap();
    assert_eq!(token_after.len(), 64);
    assert_ne!(
        token_after, token_before,
        "images.lock token must be bumped"
    );
    let mode = fs::metadata(&before[1].0).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The CLI still reads everything.
    let images = cs_json(&s, &["images", "-j"]);
    assert_eq!(images.as_array().unwrap().len(), 2);
}

#[test]
fn vfs_store_from_skopeo_and_cli_reads_and_rewrites_byte_identically() {
    read_then_rewrite_byte_identical("vfs", "/dev/shm");
}

/// The one on-disk interop test (ext4 is slow for inode creation; the store is tiny).
#[test]
fn overlay_store_on_disk_reads_and_rewrites_byte_identically() {
    if !std::path::Path::new("/proc/filesystems").exists()
        || !fs::read_to_string("/proc/filesystems")
            .unwrap()
            .contains("overlay")
    {
        eprintln!("SKIP: kernel has no overlay");
        return;
    }
    read_then_rewrite_byte_identical("overlay", "/var/tmp");
}

fn podstore_writes_are_listed_by_the_tools(driver: &'static str) {
    if !tools() || !have("podman") {
        return;
    }
    let s = Scratch::new(driver);
    let (a, _b) = populate(&s);
    let skopeo_images = fs::read(s.root().join(format!("{driver}-images/images.json"))).unwrap();
    let store = s.open();
    let skopeo_record = store.image(&a.id()).unwrap();

    // Re-create image `a` the way containers/image 5.23 does, from the same parts: the bytes
    // of images.json must come out identical to what skopeo wrote.
    let sig_key = format!("signature-{}", a.manifest_digest.hex());
    store.delete_image(&a.id(), false).unwrap();
    assert!(matches!(
        store.image(&a.id()),
        Err(Error::ImageUnknown { .. })
    ));
    let created = store
        .create_image(ImageOptions {
            id: Some(a.id()),
            top_layer: Some(skopeo_record.layer.clone()),
            metadata: skopeo_record.metadata.clone(),
            created: Some(GoTime::parse("2023-11-14T22:13:20Z").unwrap()),
            big_data: vec![
                BigDataItem {
                    key: a.config_digest.to_string(),
                    data: a.config.clone(),
                    digest: None,
                },
                BigDataItem {
                    key: format!("manifest-{}", a.manifest_digest),
                    data: a.manifest.clone(),
                    digest: Some(a.manifest_digest.clone()),
                },
                BigDataItem {
                    key: "manifest".into(),
                    data: a.manifest.clone(),
                    digest: Some(a.manifest_digest.clone()),
                },
                BigDataItem {
                    key: sig_key,
                    data: Vec::new(),
                    digest: None,
                },
            ],
            ..ImageOptions::default()
        })
        .unwrap();
    assert_eq!(
        created.digest,
        a.manifest_digest.to_string(),
        "digest derived from the first manifest item"
    );
    store
        .update_image_names(&a.id(), &["example.com/test/a:1".to_owned()], NamesOp::Add)
        .unwrap();
    // The recreated record is now last; compare record by record.
    let ours = fs::read(s.root().join(format!("{driver}-images/images.json"))).unwrap();
    let mut want = split_array(&skopeo_images);
    let mut got = split_array(&ours);
    want.sort();
    got.sort();
    assert_eq!(got, want);

    // Names move atomically between images; history follows containers/storage's rule.
    store
        .update_image_names(
            &a.id(),
            &["example.com/test/b:1".to_owned(), "t:2".to_owned()],
            NamesOp::Add,
        )
        .unwrap();
    let img = store.image(&a.id()).unwrap();
    assert_eq!(
        img.names,
        vec!["example.com/test/a:1", "example.com/test/b:1", "t:2"]
    );
    assert_eq!(
        img.names_history,
        vec!["t:2", "example.com/test/b:1", "example.com/test/a:1"]
    );
    assert!(store.image("example.com/test/b:1").unwrap().id == a.id());

    // podman lists the image with our ID, names, digest and size.
    let out = run_stdout(s.podman().args(["images", "--format", "json"]));
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["Id"] == a.id())
        .unwrap_or_else(|| panic!("podman does not list {}: {out}", a.id()));
    let names: Vec<&str> = entry["Names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"example.com/test/b:1") && names.contains(&"localhost/t:2")
            || names.contains(&"t:2"),
        "{names:?}"
    );
    assert_eq!(entry["Digest"], a.manifest_digest.to_string());
    // c/storage's ImageSize: layer diff sizes plus every big-data item.
    let big: i64 = store.image(&a.id()).unwrap().big_data_sizes.values().sum();
    let size: i64 = a.layers.iter().map(|l| l.tar.len() as i64).sum::<i64>() + big;
    assert_eq!(entry["Size"].as_i64().unwrap(), size);

    // A container created by podstore is an external container for podman.
    let c = store
        .create_container(ContainerOptions {
            names: vec!["ours".into()],
            image: "t:2".into(),
            metadata: "{\"pod-name\":\"p\"}".into(),
            ..ContainerOptions::default()
        })
        .unwrap();
    assert!(matches!(
        store.create_container(ContainerOptions {
            names: vec!["ours".into()],
            ..ContainerOptions::default()
        }),
        Err(Error::NameInUse {
            kind: RecordKind::Container,
            ..
        })
    ));
    assert!(
        s.root()
            .join(format!("{driver}-containers/{}/userdata", c.id))
            .is_dir()
    );
    assert!(
        s.run_root()
            .join(format!("{driver}-containers/{}/userdata", c.id))
            .is_dir()
    );
    let ps =
        run_stdout(
            s.podman()
                .args(["ps", "-a", "--external", "--format", "{{.ID}} {{.Names}}"]),
        );
    assert!(
        ps.contains(&format!("{} ours", &c.id[..12])),
        "podman ps --external: {ps}"
    );
    let cs_containers = cs_json(&s, &["containers", "-j"]);
    let rec = cs_containers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == c.id.as_str())
        .unwrap();
    assert_eq!(rec["layer"], c.layer.as_str());
    assert_eq!(rec["image"], a.id().as_str());
    assert_eq!(rec["flags"]["MountLabel"], "");
    let cs_layers = cs_json(&s, &["layers", "-j"]);
    let l = cs_layers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == c.layer.as_str())
        .unwrap();
    assert_eq!(l["parent"], skopeo_record.layer.as_str());

    // Mount counts are shared with containers/storage.
    let p1 = store.mount("ours", &MountOptions::default()).unwrap();
    assert_eq!(store.mount_count("ours").unwrap(), 1);
    // podman mounts the external container on top of our mount: same path, count 2.
    let podman_path = run_stdout(s.podman().args(["mount", &c.id]));
    assert_eq!(podman_path.trim(), p1.to_str().unwrap());
    assert_eq!(
        store.mount_count("ours").unwrap(),
        2,
        "podstore sees podman's mount"
    );
    let listed = run_stdout(s.podman().args(["mount"]));
    assert!(
        listed.contains(&c.id[..12]),
        "podman mount lists ours: {listed}"
    );
    run(s.podman().args(["umount", &c.id]));
    assert_eq!(
        store.mount_count("ours").unwrap(),
        1,
        "podman's unmount left ours"
    );
    assert!(
        p1.join("etc/hello").is_file(),
        "still mounted after podman's umount"
    );
    let p2 = store.mount(&c.id, &MountOptions::default()).unwrap();
    assert_eq!(p1, p2);
    assert_eq!(store.mount_count("ours").unwrap(), 2);
    let mounts = fs::read_to_string(
        s.run_root()
            .join(format!("{driver}-layers/mountpoints.json")),
    )
    .unwrap();
    assert_eq!(
        mounts,
        format!(
            r#"[{{"id":"{}","path":"{}","count":2}}]"#,
            c.layer,
            p1.display()
        )
    );
    run(s.cs().args(["unmount", &c.id]));
    assert_eq!(
        store.mount_count("ours").unwrap(),
        1,
        "podstore sees the CLI's unmount"
    );
    assert!(!store.unmount("ours", false).unwrap());
    assert_eq!(store.mount_count("ours").unwrap(), 0);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !info.contains(p1.to_str().unwrap()),
        "still mounted at {}",
        p1.display()
    );

    // Deleting is seen by the tools; the image in use cannot go.
    assert!(matches!(
        store.delete_image(&a.id(), true),
        Err(Error::ImageInUse { .. })
    ));
    store.delete_container("ours").unwrap();
    let ps = run_stdout(
        s.podman()
            .args(["ps", "-a", "--external", "--format", "{{.Names}}"]),
    );
    assert!(!ps.contains("ours"), "{ps}");
    assert!(
        !s.root()
            .join(format!("{driver}-containers/{}", c.id))
            .exists()
    );
    let cs_layers = cs_json(&s, &["layers", "-j"]);
    assert!(
        cs_layers
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"] != c.layer.as_str())
    );
}

fn podman_pull_is_readable(driver: &'static str) {
    if !have("podman") {
        return;
    }
    let s = Scratch::new(driver);
    let img = test_image("pulled");
    // podman names the image after the layout path, which must then be lowercase.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let oci_parent = tempfile::Builder::new()
        .prefix(&format!("podstore-oci-{}-{nanos}", std::process::id()))
        .rand_bytes(0)
        .tempdir_in("/dev/shm")
        .unwrap();
    let oci = oci_parent.path().join("layout");
    write_oci_layout(&oci, &[("v1", &img)]);
    run(s
        .podman()
        .args(["pull", "-q", &format!("oci:{}:v1", oci.display())]));
    let store = s.open();
    let images = store.images().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].id, img.id());
    assert_eq!(images[0].digest, img.manifest_digest.to_string());
    assert_eq!(images[0].layer, *img.layer_ids().last().unwrap());
    for (l, id) in img.layers.iter().zip(img.layer_ids()) {
        let rec = store.layer(&id).unwrap();
        assert_eq!(rec.uncompressed_digest, l.diff_id.to_string());
        assert_eq!(store.layers_by_compressed_digest(&l.blob).unwrap().len(), 1);
        assert_eq!(
            store.layers_by_uncompressed_digest(&l.diff_id).unwrap()[0].id,
            id
        );
    }
    assert_eq!(
        store.images_by_digest(&img.manifest_digest).unwrap().len(),
        1
    );
}

fn foreign_write_invalidates_cache(driver: &'static str) {
    if !tools() {
        return;
    }
    let s = Scratch::new(driver);
    let (a, _) = populate(&s);
    let store = s.open();
    assert_eq!(store.image(&a.id()).unwrap().names.len(), 1); // cached now
    run(s
        .cs()
        .args(["add-names", "--name", "added:by-cli"])
        .arg(a.id()));
    assert_eq!(store.image("added:by-cli").unwrap().id, a.id());
    run(s
        .cs()
        .args(["set-container-data", "-f", "/dev/null", "c1", "other"]));
    assert_eq!(
        store.container("c1").unwrap().big_data_names,
        vec!["crio-config", "other"]
    );
    // layers: the CLI's container creation adds a layer while ours is cached.
    let n = store.layers().unwrap().len();
    run(s
        .cs()
        .args(["create-container", "--name", "c2"])
        .arg(a.id()));
    assert_eq!(store.layers().unwrap().len(), n + 1);
}

fn recovery(driver: &'static str) {
    if !tools() {
        return;
    }
    let s = Scratch::new(driver);
    let ghost_dir = |driver: &str, ghost: &str| {
        if driver == "vfs" {
            s.root().join(format!("vfs/dir/{ghost}"))
        } else {
            s.root().join(format!("overlay/{ghost}"))
        }
    };
    let (a, _) = populate(&s);
    let layers_json = s.root().join(format!("{driver}-layers/layers.json"));
    let text = fs::read_to_string(&layers_json).unwrap();
    let ghost = "ab".repeat(32);
    let ghost_rec = format!(
        r#",{{"id":"{ghost}","parent":"{}","created":"2024-01-01T00:00:00Z","flags":{{"incomplete":true}}}}]"#,
        a.layer_ids()[1]
    );
    fs::write(
        &layers_json,
        format!("{}{}", &text[..text.len() - 1], ghost_rec),
    )
    .unwrap();
    fs::create_dir_all(ghost_dir(driver, &ghost).join("etc")).unwrap();
    fs::write(
        s.root()
            .join(format!("{driver}-layers/{ghost}.tar-split.gz")),
        b"x",
    )
    .unwrap();
    fs::write(
        s.root()
            .join(format!("{driver}-layers/.tmp-layers.json123")),
        b"[{",
    )
    .unwrap();
    fs::write(
        s.root().join(format!("{driver}-images/.tmp-images.json9")),
        b"[",
    )
    .unwrap();
    let store = s.open();
    assert!(matches!(
        store.layer(&ghost),
        Err(Error::LayerUnknown { .. })
    ));
    assert!(!ghost_dir(driver, &ghost).exists());
    assert!(
        !s.root()
            .join(format!("{driver}-layers/{ghost}.tar-split.gz"))
            .exists()
    );
    assert!(
        !s.root()
            .join(format!("{driver}-layers/.tmp-layers.json123"))
            .exists()
    );
    assert!(
        !s.root()
            .join(format!("{driver}-images/.tmp-images.json9"))
            .exists()
    );
    assert_eq!(
        fs::read_to_string(&layers_json).unwrap(),
        text,
        "back to the original bytes"
    );
    let listed = cs_json(&s, &["layers", "-j"]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["id"] != ghost.as_str())
    );
}

/// podman and podstore create and delete on the same store at the same time; afterwards the
/// store is consistent for containers-storage and for podstore.
fn concurrent_writers(driver: &'static str) {
    if !tools() || !have("podman") {
        return;
    }
    let s = Scratch::new(driver);
    let (a, b) = populate(&s);
    let store = s.open();
    let rounds = 6;
    let c_img = test_image("pulled-by-skopeo");
    let d_img = test_image("layers-by-podstore");
    let oci = s.dir.path().join("oci-c");
    write_oci_layout(&oci, &[("c", &c_img)]);
    let mut our_layers = Vec::new();
    std::thread::scope(|scope| {
        let podman = scope.spawn(|| {
            for i in 0..rounds {
                run(std::process::Command::new("skopeo").args([
                    "copy",
                    "-q",
                    &format!("oci:{}:c", oci.display()),
                    &s.store_ref("example.com/test/c:1"),
                ]));
                if i % 2 == 0 {
                    run(s.podman().args(["rmi", "example.com/test/c:1"]));
                }
                run(s
                    .podman()
                    .args(["tag", &a.id(), &format!("podman/tag:{i}")]));
                run(s.podman().args([
                    "create",
                    "--network",
                    "none",
                    "--name",
                    &format!("pm{i}"),
                    &b.id(),
                    "true",
                ]));
                if i % 2 == 0 {
                    run(s.podman().args(["rm", &format!("pm{i}")]));
                    run(s
                        .podman()
                        .args(["untag", &a.id(), &format!("localhost/podman/tag:{i}")]));
                }
            }
        });
        for i in 0..rounds * 3 {
            let (layer, _) = store
                .create_layer(
                    podstore_metadata::LayerOptions {
                        no_sync: true,
                        ..Default::default()
                    },
                    Some(&mut &d_img.layers[0].gz[..]),
                )
                .unwrap();
            if i % 2 == 0 {
                store.delete_layer(&layer.id).unwrap();
            } else {
                our_layers.push(layer.id);
            }
            let c = store
                .create_container(ContainerOptions {
                    names: vec![format!("ps{i}")],
                    image: a.id(),
                    ..ContainerOptions::default()
                })
                .unwrap();
            store
                .update_image_names(&b.id(), &[format!("podstore/tag:{i}")], NamesOp::Add)
                .unwrap();
            if i % 2 == 0 {
                store.delete_container(&c.id).unwrap();
                store
                    .update_image_names(&b.id(), &[format!("podstore/tag:{i}")], NamesOp::Remove)
                    .unwrap();
            }
        }
        podman.join().unwrap();
    });
    // Check with the real tool.
    let containers = cs_json(&s, &["containers", "-j"]);
    let layers = cs_json(&s, &["layers", "-j"]);
    let images = cs_json(&s, &["images", "-j"]);
    let layer_ids: std::collections::BTreeSet<&str> = layers
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    let mut names = std::collections::BTreeSet::new();
    let cnames: Vec<String> = containers
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| {
            assert!(
                layer_ids.contains(c["layer"].as_str().unwrap()),
                "container {c} lost its layer"
            );
            c["names"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for n in &cnames {
        assert!(names.insert(n.clone()), "duplicate container name {n}");
    }
    for i in 0..rounds {
        assert_eq!(
            cnames.contains(&format!("pm{i}")),
            i % 2 == 1,
            "pm{i}: {cnames:?}"
        );
    }
    for i in 0..rounds * 3 {
        assert_eq!(
            cnames.contains(&format!("ps{i}")),
            i % 2 == 1,
            "ps{i}: {cnames:?}"
        );
    }
    for l in layers.as_array().unwrap() {
        assert!(
            l.get("flags").and_then(|f| f.get("incomplete")).is_none(),
            "incomplete layer {l}"
        );
        if let Some(p) = l.get("parent").and_then(|p| p.as_str()) {
            assert!(layer_ids.contains(p), "layer {l} lost its parent");
        }
    }
    let img_b = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == b.id().as_str())
        .unwrap();
    let bnames: Vec<&str> = img_b["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for i in 0..rounds * 3 {
        assert_eq!(
            bnames.contains(&format!("podstore/tag:{i}").as_str()),
            i % 2 == 1,
            "{bnames:?}"
        );
    }
    let img_a = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == a.id().as_str())
        .unwrap();
    let anames: Vec<&str> = img_a["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for i in 0..rounds {
        assert_eq!(
            anames.contains(&format!("localhost/podman/tag:{i}").as_str()),
            i % 2 == 1,
            "{anames:?}"
        );
    }
    // Our layers survived podman's writes with their data and tar-split intact.
    for id in &our_layers {
        assert!(layer_ids.contains(id.as_str()), "layer {id} lost");
        let mut tar = Vec::new();
        store.diff(id, &mut tar).unwrap();
        assert_eq!(tar, d_img.layers[0].tar);
    }
    assert!(
        images
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == c_img.id().as_str())
    );
    // And podstore, freshly opened, agrees.
    drop(store);
    let again = s.open();
    assert_eq!(
        again.containers().unwrap().len(),
        containers.as_array().unwrap().len()
    );
    // podman's own containers are removed so its database does not outlive the store.
    let _ = s.podman().args(["rm", "-a", "-f"]).output();
}

/// Splits a compact top-level JSON array into the raw text of its elements.
fn split_array(data: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(data).unwrap();
    let inner = &text[1..text.len() - 1];
    let (mut depth, mut in_str, mut esc, mut start) = (0i32, false, false, 0usize);
    let mut out = Vec::new();
    for (i, c) in inner.char_indices() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(inner[start..i].to_owned());
                start = i + 1;
            }
            _ => {}
        }
    }
    if !inner.is_empty() {
        out.push(inner[start..].to_owned());
    }
    out
}

macro_rules! both_drivers {
    ($($name:ident => $f:ident;)*) => {$(
        mod $name {
            #[test]
            fn vfs() {
                super::$f("vfs");
            }
            #[test]
            fn overlay() {
                if !std::fs::read_to_string("/proc/filesystems").unwrap_or_default().contains("overlay") {
                    eprintln!("SKIP: kernel has no overlay");
                    return;
                }
                super::$f("overlay");
            }
        }
    )*};
}

both_drivers! {
    podstore_writes_are_listed_by_podman_and_containers_storage => podstore_writes_are_listed_by_the_tools;
    podman_pull_from_oci_layout_is_readable => podman_pull_is_readable;
    concurrent_podman_and_podstore_writers_leave_no_corruption => concurrent_writers;
    a_foreign_write_invalidates_cached_state => foreign_write_invalidates_cache;
    recovery_removes_incomplete_layers_and_temp_files => recovery;
}
