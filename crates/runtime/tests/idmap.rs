//! Per-container UID/GID maps on a real store, both drivers: the container's layer sits on an
//! ID-shifted copy of the image's top layer (a mapped top layer) whose files are owned by the
//! shifted IDs with modes, setuid bits, xattrs and `security.capability` kept; `containers.json`
//! carries the maps; the mapped layer is reused by containers with the same maps and removed
//! with the image. Interop: the `containers-storage` CLI and `podman ps --external` read such a
//! store, and podstore reads a container `podman create --uidmap` made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use podstore_image::PullOptions;
use podstore_metadata::{RecordKind, Store};
use podstore_runtime::{ContainerRequest, IdMap, IdMappings, RuntimeService};
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::{StoreDirs, tool_available};

const IMAGE_NAME: &str = "localhost/podstore/multilayer:latest";

fn maps(host: u32) -> IdMappings {
    let m = vec![IdMap {
        container_id: 0,
        host_id: host,
        size: 65536,
    }];
    IdMappings {
        uid: m.clone(),
        gid: m,
    }
}

fn request(name: &str, mappings: Option<IdMappings>) -> ContainerRequest {
    ContainerRequest {
        pod_name: "pod".into(),
        pod_id: "pod-id".into(),
        image_name: IMAGE_NAME.into(),
        container_name: name.into(),
        container_id: format!(
            "{:0<64}",
            name.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        id_mappings: mappings,
        ..ContainerRequest::default()
    }
}

/// What a walk of a root filesystem found at one path.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    uid: u32,
    gid: u32,
    mode: u32,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Index of the first path sharing this inode (hard links), if any.
    inode_group: Option<String>,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 65536];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return out;
    };
    for key in names[..n].split(|&b| b == 0).filter(|k| !k.is_empty()) {
        let key = String::from_utf8(key.to_vec()).unwrap();
        if key.starts_with("trusted.overlay.") {
            continue; // overlay's own bookkeeping (copy-up origin)
        }
        let mut value = vec![0u8; 65536];
        let n = rustix::fs::lgetxattr(path, key.as_str(), &mut value[..]).unwrap();
        value.truncate(n);
        out.insert(key, value);
    }
    out
}

fn walk(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).unwrap();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ft = md.file_type();
        if ft.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        let inode_group = if !ft.is_dir() && md.nlink() > 1 {
            Some(
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Entry {
                uid: md.uid(),
                gid: md.gid(),
                mode: md.mode(),
                content: ft.is_file().then(|| std::fs::read(&path).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                xattrs: xattrs(&path),
                inode_group,
            },
        );
    }
    out
}

/// Groups paths by inode group name so two walks can be compared (the first-seen path of a
/// group depends on the walk order).
fn link_groups(tree: &BTreeMap<String, Entry>) -> Vec<Vec<String>> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, e) in tree {
        if let Some(g) = &e.inode_group {
            groups.entry(g.clone()).or_default().push(path.clone());
        }
    }
    let mut out: Vec<Vec<String>> = groups.into_values().filter(|g| g.len() > 1).collect();
    out.sort();
    out
}

fn raw_container(store: &Store, id: &str) -> String {
    let raw = String::from_utf8(store.raw_records_file(RecordKind::Container).unwrap()).unwrap();
    let array: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let c = array
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap();
    serde_json::to_string(c).unwrap()
}

struct Env {
    _dir: StoreDirs,
    store: Arc<Store>,
    runtime: RuntimeService,
    image_id: String,
    dir: PathBuf,
    driver: &'static str,
}

fn env(driver: &'static str, prefix: &str) -> Env {
    let dir = StoreDirs::new(prefix);
    let (root, run) = (dir.root(), dir.runroot());
    let (store, images) = common::store_and_images(dir.path(), &root, &run, driver);
    let image_id = images
        .pull_image_blocking(
            &FixtureSet::shared().unwrap().oci_reference("multilayer"),
            &PullOptions {
                destination_name: Some(IMAGE_NAME.into()),
                ..PullOptions::default()
            },
        )
        .unwrap()
        .id;
    let runtime = RuntimeService::new(images).with_selinux(false);
    Env {
        store,
        runtime,
        image_id,
        dir: dir.path().to_path_buf(),
        _dir: dir,
        driver,
    }
}

fn mapped_containers(driver: &'static str) {
    let env = env(driver, "podstore-idmap-");
    let store = &env.store;
    let image = store.image(&env.image_id).unwrap();
    let top = store.layer(&image.layer).unwrap();
    let layers_before = store.layers().unwrap().len();

    // The reference tree: a container without maps.
    let plain = env
        .runtime
        .create_container(&request("plain", None))
        .unwrap();
    let plain_root = env.runtime.start_container(&plain.id).unwrap();
    let expected = walk(&plain_root);
    assert!(expected.len() > 30, "{expected:?}");

    let a = env
        .runtime
        .create_container(&request("mapped-a", Some(maps(100_000))))
        .unwrap();
    let a_record = store.container(&a.id).unwrap();
    assert_eq!(a_record.uid_map, maps(100_000).uid);
    assert_eq!(a_record.gid_map, maps(100_000).gid);
    let raw = raw_container(store, &a.id);
    assert!(
        raw.contains(r#""uidmap":[{"container_id":0,"host_id":100000,"size":65536}],"gidmap":[{"container_id":0,"host_id":100000,"size":65536}]"#),
        "{raw}"
    );

    // One mapped top layer: the top layer's twin (same parent, digests, tar-split) with the maps.
    let image = store.image(&env.image_id).unwrap();
    assert_eq!(image.mapped_layers.len(), 1, "{image:?}");
    let mapped = store.layer(&image.mapped_layers[0]).unwrap();
    assert_eq!(mapped.parent, top.parent);
    assert_eq!(mapped.uncompressed_digest, top.uncompressed_digest);
    assert_eq!(mapped.compressed_digest, top.compressed_digest);
    assert_eq!(mapped.uid_set, top.uid_set);
    assert_eq!(mapped.uid_map, maps(100_000).uid);
    assert!(!mapped.is_incomplete());
    let a_layer = store.layer(&a_record.layer).unwrap();
    assert_eq!(a_layer.parent, mapped.id);
    assert_eq!(a_layer.uid_map, maps(100_000).uid);
    // the mapped layer's diff rebuilds the original tar from the copied tar-split
    let mut tar = Vec::new();
    store.diff(&mapped.id, &mut tar).unwrap();
    assert_eq!(
        podstore_reference::Digest::sha256_of(&tar).to_string(),
        top.uncompressed_digest
    );

    // The mounted root shows every file shifted by 100000, all else unchanged.
    let a_root = env.runtime.start_container(&a.id).unwrap();
    let shifted = walk(&a_root);
    assert_eq!(
        shifted.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    for (path, want) in &expected {
        let got = &shifted[path];
        assert_eq!(
            (got.uid, got.gid),
            (want.uid + 100_000, want.gid + 100_000),
            "{path}"
        );
        assert_eq!(got.mode, want.mode, "{path}");
        assert_eq!(got.content, want.content, "{path}");
        assert_eq!(got.link, want.link, "{path}");
        assert_eq!(got.xattrs, want.xattrs, "{path}");
    }
    for (path, bits) in [("usr/bin/suid-tool", 0o4755), ("usr/bin/sgid-tool", 0o2755)] {
        assert_eq!(shifted[path].mode & 0o7777, bits, "{path}");
    }
    assert!(
        shifted["usr/bin/cap-tool"]
            .xattrs
            .contains_key("security.capability")
    );
    assert_eq!(shifted["owned/by-1000"].uid, 101_000);
    if driver == "vfs" {
        // vfs copies keep hard links; overlay's copy-up (without index=on) splits them, as it
        // does for containers/storage.
        assert_eq!(link_groups(&shifted), link_groups(&expected));
        assert!(!link_groups(&expected).is_empty());
    }
    // the image's own layers were not touched
    let again = env.runtime.start_container(&plain.id).unwrap();
    assert_eq!(walk(&again), expected);

    // Same maps: the mapped layer is reused. Other maps: a second mapped layer.
    let b = env
        .runtime
        .create_container(&request("mapped-b", Some(maps(100_000))))
        .unwrap();
    let b_layer = store.layer(&store.container(&b.id).unwrap().layer).unwrap();
    assert_eq!(b_layer.parent, mapped.id);
    assert_eq!(store.image(&env.image_id).unwrap().mapped_layers.len(), 1);
    let c = env
        .runtime
        .create_container(&request("other-c", Some(maps(200_000))))
        .unwrap();
    let image = store.image(&env.image_id).unwrap();
    assert_eq!(image.mapped_layers.len(), 2, "{image:?}");
    let c_layer = store.layer(&store.container(&c.id).unwrap().layer).unwrap();
    assert_eq!(c_layer.parent, image.mapped_layers[1]);
    let c_root = env.runtime.start_container(&c.id).unwrap();
    assert_eq!(
        std::fs::symlink_metadata(c_root.join("owned/by-1000"))
            .unwrap()
            .uid(),
        201_000
    );

    // A map that leaves root unmapped fails in the store and leaves nothing behind.
    let before = (
        store.layers().unwrap().len(),
        store.containers().unwrap().len(),
    );
    let bad = IdMappings {
        uid: vec![IdMap {
            container_id: 1,
            host_id: 300_000,
            size: 100,
        }],
        gid: maps(300_000).gid,
    };
    env.runtime
        .create_container(&request("bad", Some(bad)))
        .unwrap_err();
    assert_eq!(
        (
            store.layers().unwrap().len(),
            store.containers().unwrap().len()
        ),
        before
    );
    assert_eq!(store.image(&env.image_id).unwrap().mapped_layers.len(), 2);

    // Containers go, the mapped layers stay with the image; deleting the image removes them.
    for id in [&plain.id, &a.id, &b.id, &c.id] {
        env.runtime.delete_container(id).unwrap();
    }
    assert_eq!(store.layers().unwrap().len(), layers_before + 2);
    let deleted = store.delete_image(&env.image_id, true).unwrap();
    assert!(deleted.contains(&image.mapped_layers[0]), "{deleted:?}");
    assert!(deleted.contains(&image.mapped_layers[1]), "{deleted:?}");
    assert_eq!(store.layers().unwrap(), vec![]);
    let driver_home = store.driver().home().to_path_buf();
    let leftovers: Vec<_> = std::fs::read_dir(if env.driver == "vfs" {
        driver_home.join("dir")
    } else {
        driver_home.clone()
    })
    .unwrap()
    .map(|e| e.unwrap().file_name())
    // `staging/`: overlay's staging area (left empty), as containers/storage keeps its own
    .filter(|n| n != "l" && n != ".has-mount-program" && n != "staging")
    .collect();
    assert!(
        leftovers.is_empty(),
        "{leftovers:?} in {}",
        env.dir.display()
    );
}

#[test]
fn mapped_containers_on_vfs() {
    mapped_containers("vfs");
}

#[test]
fn mapped_containers_on_overlay() {
    mapped_containers("overlay");
}

/// The `containers-storage` CLI and podman read a store holding mapped containers, and podstore
/// reads (and reuses the mapped layer of) a container `podman create --uidmap` made.
#[test]
fn tools_read_mapped_containers_and_podstore_reads_podmans() {
    if !tool_available("podman") || !tool_available("containers-storage") {
        return;
    }
    let env = env("vfs", "podstore-idmap-interop-");
    let store = &env.store;
    let a = env
        .runtime
        .create_container(&request("mapped-a", Some(maps(100_000))))
        .unwrap();
    let cs = env._dir.containers_storage("vfs");
    let listed = cs.json(&["container", "--json", &a.id])[0].clone();
    assert_eq!(listed["id"], a.id.as_str(), "{listed}");
    assert_eq!(listed["uidmap"][0]["host_id"], 100_000, "{listed}");
    let layers = cs.json(&["layers", "--json"]);
    let mapped = store.image(&env.image_id).unwrap().mapped_layers[0].clone();
    assert!(
        layers
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == mapped.as_str() && l["uidmap"][0]["host_id"] == 100_000),
        "{layers}"
    );
    let image = cs.json(&["image", "--json", &env.image_id])[0].clone();
    assert_eq!(image["mapped-layers"][0], mapped.as_str(), "{image}");

    let podman = env._dir.podman("vfs");
    let ps = podman.json(&["ps", "--all", "--external", "--format", "json"]);
    assert!(
        ps.as_array()
            .unwrap()
            .iter()
            .any(|c| c["Id"] == a.id.as_str()),
        "{ps}"
    );

    // podman's own mapped container: podstore reads its maps, and a podstore container with
    // the same maps sits on the same mapped layer.
    let out = podman.stdout(&[
        "create",
        "--name",
        "from-podman",
        "--uidmap",
        "0:300000:65536",
        "--gidmap",
        "0:300000:65536",
        &env.image_id,
        "true",
    ]);
    let podman_id = out.trim();
    let theirs = store.container(podman_id).unwrap();
    assert_eq!(theirs.uid_map, maps(300_000).uid);
    assert_eq!(theirs.gid_map, maps(300_000).gid);
    let their_parent = store.layer(&theirs.layer).unwrap().parent;
    assert!(
        store
            .image(&env.image_id)
            .unwrap()
            .mapped_layers
            .contains(&their_parent),
        "podman's layer sits on {their_parent}"
    );
    let ours = env
        .runtime
        .create_container(&request("same-as-podman", Some(maps(300_000))))
        .unwrap();
    assert_eq!(
        store
            .layer(&store.container(&ours.id).unwrap().layer)
            .unwrap()
            .parent,
        their_parent
    );
    let root = env.runtime.start_container(&ours.id).unwrap();
    assert_eq!(
        std::fs::symlink_metadata(root.join("owned/by-1000"))
            .unwrap()
            .uid(),
        301_000
    );
    env.runtime.delete_container(&ours.id).unwrap();
    podman.run(&["rm", "--force", "from-podman"]);
    env.runtime.delete_container(&a.id).unwrap();
    // podman removes the image with its mapped layers too
    podman.run(&["rmi", "--force", &env.image_id]);
    assert_eq!(store.layers().unwrap(), vec![]);
}
