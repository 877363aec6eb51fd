//! Interop: `podman ps --external` lists the sandbox and container podstore created (it reads
//! podstore's `containers.json`), and podstore deletes a container made by `podman create`, on
//! every driver of `PODSTORE_E2E_DRIVERS` (default overlay and vfs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use podstore_image::PullOptions;
use podstore_runtime::{ContainerRequest, PodSandboxRequest, RuntimeService};
use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::{StoreDirs, StoreGuard, e2e_drivers};

#[test]
fn podman_lists_podstore_containers_and_podstore_deletes_podmans() {
    for driver in e2e_drivers() {
        eprintln!("== podman interop on {driver}");
        podman_interop_on(driver);
    }
}

fn podman_interop_on(driver: &str) {
    let dir = StoreDirs::new("podstore-runtime-podman-");
    let (root, run) = (dir.root(), dir.runroot());
    // overlay: shut down and unmounted before `dir` is removed (declared after it)
    let _guard = (driver == "overlay").then(|| StoreGuard::overlay(&root, &run));
    let (store, images) = common::store_and_images(dir.path(), &root, &run, driver);
    let image_id = images
        .pull_image_blocking(
            &FixtureSet::shared().unwrap().oci_reference("busybox"),
            &PullOptions {
                destination_name: Some("localhost/podstore/busybox:latest".into()),
                ..PullOptions::default()
            },
        )
        .unwrap()
        .id;
    let runtime = RuntimeService::new(images).with_selinux(false);
    let sandbox = runtime
        .create_pod_sandbox(&PodSandboxRequest {
            pod_name: "pod".into(),
            pod_id: "a".repeat(64),
            image_name: "localhost/podstore/busybox:latest".into(),
            container_name: "infra".into(),
            ..PodSandboxRequest::default()
        })
        .unwrap();
    let container = runtime
        .create_container(&ContainerRequest {
            pod_name: "pod".into(),
            pod_id: "a".repeat(64),
            image_id: image_id.clone(),
            container_name: "app".into(),
            container_id: "b".repeat(64),
            ..ContainerRequest::default()
        })
        .unwrap();

    let podman = dir.podman(driver);
    let listed = podman.json(&["ps", "--all", "--external", "--format", "json"]);
    let listed = listed.as_array().unwrap();
    for (id, name) in [(&sandbox.id, "infra"), (&container.id, "app")] {
        let entry = listed
            .iter()
            .find(|c| c["Id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} not in {listed:?}"));
        assert_eq!(entry["Names"][0], name, "{entry}");
        assert_eq!(entry["ImageID"], image_id.as_str(), "{entry}");
        assert_eq!(entry["IsInfra"], false, "{entry}");
    }
    assert_eq!(listed.len(), 2);

    // a container podman made: its metadata (libpod's keys) decodes, is not CRI-O's, and podstore
    // deletes it
    let podman_id = podman.stdout(&["create", "--name", "from-podman", &image_id, "true"]);
    let podman_id = podman_id.trim();
    let md = runtime.get_container_metadata(podman_id).unwrap();
    assert_eq!(md.container_name, "from-podman");
    assert!(!md.is_crio_container(), "{md:?}");
    let layer = store.container(podman_id).unwrap().layer;
    runtime.delete_container("from-podman").unwrap();
    assert!(!store.layer_exists(&layer).unwrap());
    // the containers-storage CLI sees the store without it (podman's own database still
    // remembers its container; podman drops it with rm, which tolerates the missing storage)
    let listed = dir
        .containers_storage(driver)
        .json(&["containers", "--json"]);
    let mut ids: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["a".repeat(64), "b".repeat(64)]);
    podman.run(&["rm", "--force", "from-podman"]);

    // podman removes podstore's container too
    podman.run(&["rm", "--force", &container.id]);
    assert!(store.container(&container.id).is_err());
    runtime.remove_pod_sandbox(&sandbox.id).unwrap();
}
