//! The runtime test catalogue (crio-storage-behavior §9.2) on a real store: every case with a
//! real-store equivalent, plus the later fixes of §10, pause-image pulls from the real
//! `docker-registry` (plain and basic-auth), 16 containers in parallel, and real mounts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use podstore_image::PullOptions;
use podstore_metadata::{ContainerOptions, Error as StoreError, Store};
use podstore_runtime::{
    ContainerRequest, IdMap, IdMappings, PodSandboxRequest, RuntimeContainerMetadata, RuntimeError,
    RuntimeService,
};
use podstore_testkit::fixtures::{FixtureSet, busybox_expectations, check_rootfs};
use podstore_testkit::peers::shm_tempdir;
use podstore_testkit::registry::{RegistryMode, RegistrySet};

const IMAGE_NAME: &str = "docker.io/library/imagename:latest";

struct Env {
    dir: tempfile::TempDir,
    root: PathBuf,
    run: PathBuf,
    store: Arc<Store>,
    runtime: RuntimeService,
}

fn fixtures() -> &'static FixtureSet {
    FixtureSet::shared().unwrap()
}

fn new_env_with(driver: &str) -> Env {
    let dir = shm_tempdir("podstore-runtime-");
    let root = dir.path().join("root");
    let run = dir.path().join("run");
    let (store, images) = common::store_and_images(dir.path(), &root, &run, driver);
    let runtime = RuntimeService::new(images).with_selinux(false);
    Env {
        dir,
        root,
        run,
        store,
        runtime,
    }
}

fn new_env() -> Env {
    new_env_with("vfs")
}

/// Pulls a fixture from the OCI layout into the store under `name`; returns its ID.
fn pull_fixture(env: &Env, tag: &str, name: &str) -> String {
    env.runtime
        .image_service()
        .pull_image_blocking(
            &fixtures().oci_reference(tag),
            &PullOptions {
                destination_name: Some(name.to_owned()),
                ..PullOptions::default()
            },
        )
        .unwrap()
        .id
}

fn container_request(name: &str, id: &str) -> ContainerRequest {
    ContainerRequest {
        pod_name: "podName".into(),
        pod_id: "podID".into(),
        image_name: "imagename".into(),
        container_name: name.into(),
        container_id: id.into(),
        ..ContainerRequest::default()
    }
}

fn sandbox_request(pod_id: &str) -> PodSandboxRequest {
    PodSandboxRequest {
        pod_name: "podName".into(),
        pod_id: pod_id.into(),
        image_name: "imagename".into(),
        container_name: "containerName".into(),
        metadata_name: "metadataName".into(),
        uid: "uid".into(),
        namespace: "namespace".into(),
        ..PodSandboxRequest::default()
    }
}

fn hex_id(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Layer and container counts, to show a failed call left the store as it was.
fn counts(store: &Store) -> (usize, usize) {
    (
        store.layers().unwrap().len(),
        store.containers().unwrap().len(),
    )
}

// R29, R1, R4: a container from an image by name.
#[test]
fn create_container_records_names_layer_name_metadata_and_directories() {
    let env = new_env();
    let image_id = pull_fixture(&env, "busybox", IMAGE_NAME);
    let id = hex_id(1);
    let info = env
        .runtime
        .create_container(&container_request("containerName", &id))
        .unwrap();
    assert_eq!(info.id, id);
    let expected_dir = env.root.join("vfs-containers").join(&id).join("userdata");
    let expected_run = env.run.join("vfs-containers").join(&id).join("userdata");
    assert_eq!(info.dir, expected_dir);
    assert_eq!(info.run_dir, expected_run);
    assert_eq!(mode(&info.dir), 0o700);
    assert_eq!(mode(&info.run_dir), 0o700);
    assert_eq!(env.runtime.get_work_dir(&id).unwrap(), expected_dir);
    assert_eq!(env.runtime.get_run_dir(&id).unwrap(), expected_run);
    // the run dir is re-created on demand (R1: "created")
    std::fs::remove_dir_all(&expected_run).unwrap();
    assert_eq!(env.runtime.get_run_dir(&id).unwrap(), expected_run);
    assert!(expected_run.is_dir());
    let config = info.config.expect("the image's OCI config");
    assert_eq!(config.os().to_string(), "linux");
    assert_eq!(
        (info.process_label.as_str(), info.mount_label.as_str()),
        ("", "")
    );

    let record = env.store.container(&id).unwrap();
    assert_eq!(record.names, vec!["containerName".to_owned()]);
    assert_eq!(record.image, image_id);
    let layer = env.store.layer(&record.layer).unwrap();
    assert_eq!(layer.names, vec!["containerName-layer".to_owned()]);
    assert_eq!(
        layer.parent_id(),
        Some(env.store.image(&image_id).unwrap().layer.as_str())
    );
    // metadata: the real image ID, metadata-name defaulted, no pod key
    assert!(!record.metadata.contains("\"pod\""), "{}", record.metadata);
    let md = env.runtime.get_container_metadata(&id).unwrap();
    assert_eq!(md.image_id, image_id);
    assert_eq!(md.image_name, "imagename");
    assert_eq!(md.metadata_name, "containerName");
    assert_eq!(
        (md.pod_name.as_str(), md.pod_id.as_str()),
        ("podName", "podID")
    );
    assert!(!md.pod && !md.privileged && md.is_crio_container());
    assert!(md.created_at > 1_600_000_000);
    // a random ID when none is given
    let other = env
        .runtime
        .create_container(&container_request("second", ""))
        .unwrap();
    assert_eq!(other.id.len(), 64);
    assert_ne!(other.id, id);
}

// R30: a sandbox: ID = pod ID, names [container, pod], pod: true, uid and namespace kept.
#[test]
fn create_pod_sandbox_records_pod_metadata() {
    let env = new_env();
    let image_id = pull_fixture(&env, "busybox", IMAGE_NAME);
    let pod_id = hex_id(2);
    let mut request = sandbox_request(&pod_id);
    request.attempt = 3;
    request.privileged = true;
    let info = env.runtime.create_pod_sandbox(&request).unwrap();
    assert_eq!(info.id, pod_id);
    let record = env.store.container(&pod_id).unwrap();
    assert_eq!(
        record.names,
        vec!["containerName".to_owned(), "podName".to_owned()]
    );
    assert!(
        record.metadata.contains("\"pod\":true"),
        "{}",
        record.metadata
    );
    let md = env.runtime.get_container_metadata("podName").unwrap();
    assert!(md.pod && md.privileged);
    assert_eq!(
        (md.uid.as_str(), md.namespace.as_str()),
        ("uid", "namespace")
    );
    assert_eq!(md.metadata_name, "metadataName");
    assert_eq!(md.attempt, 3);
    assert_eq!(md.image_id, image_id);
    let layer = env.store.layer(&record.layer).unwrap();
    assert_eq!(layer.names, vec!["containerName-layer".to_owned()]);
}

// R31–R34: argument validation, in order, before any store access.
#[test]
fn invalid_arguments_are_typed_errors_and_touch_nothing() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let before = counts(&env.store);
    let base = container_request("containerName", "containerID");
    let cases: Vec<(ContainerRequest, &str)> = vec![
        (
            ContainerRequest {
                pod_id: "".into(),
                ..base.clone()
            },
            "InvalidPodName",
        ),
        (
            ContainerRequest {
                pod_name: "".into(),
                ..base.clone()
            },
            "InvalidPodName",
        ),
        (
            ContainerRequest {
                pod_name: "".into(),
                image_name: "".into(),
                ..base.clone()
            },
            "InvalidPodName",
        ),
        (
            ContainerRequest {
                image_name: "".into(),
                image_id: "".into(),
                ..base.clone()
            },
            "InvalidImageName",
        ),
        (
            ContainerRequest {
                container_name: "".into(),
                image_id: "imageID".into(),
                ..base.clone()
            },
            "InvalidContainerName",
        ),
        (
            ContainerRequest {
                label_options: vec!["mountLabel".into()],
                ..base.clone()
            },
            "BadLabelOption",
        ),
    ];
    for (request, expected) in cases {
        let err = env.runtime.create_container(&request).unwrap_err();
        let ok = match expected {
            "InvalidPodName" => matches!(err, RuntimeError::InvalidPodName { .. }),
            "InvalidImageName" => matches!(err, RuntimeError::InvalidImageName { .. }),
            "InvalidContainerName" => matches!(err, RuntimeError::InvalidContainerName { .. }),
            "BadLabelOption" => {
                matches!(&err, RuntimeError::BadLabelOption { option } if option == "mountLabel")
            }
            _ => false,
        };
        assert!(ok, "{request:?}: expected {expected}, got {err:?}");
    }
    let sandbox = PodSandboxRequest {
        pod_name: "".into(),
        ..sandbox_request("p")
    };
    assert!(matches!(
        env.runtime.create_pod_sandbox(&sandbox).unwrap_err(),
        RuntimeError::InvalidPodName { .. }
    ));
    assert_eq!(counts(&env.store), before);
}

// §8.1 step 8 and §10.7: image by ID; the caller's ID wins over the name; absent images.
#[test]
fn image_is_found_by_id_or_name_and_the_callers_id_wins() {
    let env = new_env();
    let busybox = pull_fixture(&env, "busybox", IMAGE_NAME);
    let small = pull_fixture(&env, "small-01", "docker.io/library/small:latest");
    assert_ne!(busybox, small);

    // by ID only: the image name becomes the image's first name
    let request = ContainerRequest {
        image_name: "".into(),
        image_id: small.clone(),
        ..container_request("by-id", "")
    };
    let info = env.runtime.create_container(&request).unwrap();
    let md = env.runtime.get_container_metadata(&info.id).unwrap();
    assert_eq!(md.image_id, small);
    assert_eq!(md.image_name, "docker.io/library/small:latest");

    // name says busybox, ID says small: the ID is used (a tag may have moved)
    let request = ContainerRequest {
        image_id: small.clone(),
        ..container_request("id-wins", "")
    };
    let info = env.runtime.create_container(&request).unwrap();
    assert_eq!(env.store.container(&info.id).unwrap().image, small);
    assert_eq!(
        env.runtime
            .get_container_metadata(&info.id)
            .unwrap()
            .image_name,
        "imagename"
    );

    // an ID prefix works; a name is not an ID
    let request = ContainerRequest {
        image_name: "".into(),
        image_id: busybox[..12].to_owned(),
        ..container_request("by-prefix", "")
    };
    let info = env.runtime.create_container(&request).unwrap();
    assert_eq!(env.store.container(&info.id).unwrap().image, busybox);

    // absent images are never pulled for containers; the message names what was given
    let before = counts(&env.store);
    let cases = [
        (
            "docker.io/library/absent:latest",
            "",
            "image \"docker.io/library/absent:latest\" not present in image store",
        ),
        (
            "",
            &*hex_id(9),
            &*format!("image with ID \"{}\" not present in image store", hex_id(9)),
        ),
        (
            "imagename",
            &*hex_id(9),
            &*format!(
                "image \"imagename\" with ID \"{}\" not present in image store",
                hex_id(9)
            ),
        ),
        (
            "",
            "imagename",
            "image with ID \"imagename\" not present in image store",
        ),
    ];
    for (name, id, message) in cases {
        let request = ContainerRequest {
            image_name: name.into(),
            image_id: id.into(),
            ..container_request("absent", "")
        };
        let err = env.runtime.create_container(&request).unwrap_err();
        assert!(
            matches!(err, RuntimeError::ImageNotPresent { .. }),
            "{err:?}"
        );
        assert_eq!(err.to_string(), message);
    }
    // docker:// names the local image
    let request = ContainerRequest {
        image_name: "docker://imagename".into(),
        ..container_request("docker-transport", "")
    };
    let info = env.runtime.create_container(&request).unwrap();
    assert_eq!(env.store.container(&info.id).unwrap().image, busybox);
    assert_eq!(counts(&env.store).1, before.1 + 1);
}

// R3, R6, R8, R13, R17, R20, R22, R23, R27 and §10.3–10.4: unknown and empty IDs.
#[test]
fn unknown_and_empty_ids_map_to_the_seed_errors() {
    let env = new_env();
    let unknown = "no-such-container";
    let is_container_id = |e: RuntimeError, id: &str| matches!(&e, RuntimeError::InvalidContainerId { id: got } if got == id);
    assert!(is_container_id(
        env.runtime.get_run_dir(unknown).unwrap_err(),
        unknown
    ));
    assert!(is_container_id(
        env.runtime.get_work_dir(unknown).unwrap_err(),
        unknown
    ));
    assert!(is_container_id(
        env.runtime.start_container(unknown).unwrap_err(),
        unknown
    ));
    assert!(is_container_id(
        env.runtime.get_container_metadata(unknown).unwrap_err(),
        unknown
    ));
    assert!(is_container_id(
        env.runtime
            .set_container_metadata(unknown, &RuntimeContainerMetadata::default())
            .unwrap_err(),
        unknown
    ));
    assert!(is_container_id(
        env.runtime.stop_container("").unwrap_err(),
        ""
    ));
    assert!(is_container_id(
        env.runtime.delete_container("").unwrap_err(),
        ""
    ));
    for id in [unknown, ""] {
        let err = env.runtime.remove_pod_sandbox(id).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidSandboxId { id: got } if got == id),
            "{err:?}"
        );
    }
    // later fixes: delete and stop of an unknown container succeed
    env.runtime.delete_container(unknown).unwrap();
    env.runtime.stop_container(unknown).unwrap();
    assert_eq!(
        env.runtime.get_run_dir(unknown).unwrap_err().to_string(),
        "invalid container ID \"no-such-container\": no such container"
    );
}

// R16, R19: metadata round trips; Go-style case-insensitive keys.
#[test]
fn metadata_round_trips_through_the_store() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let info = env
        .runtime
        .create_container(&container_request("c", "cid"))
        .unwrap();
    env.store
        .set_container_metadata(&info.id, r#"{"Pod": true}"#)
        .unwrap();
    let md = env.runtime.get_container_metadata("c").unwrap();
    assert!(md.pod);
    assert_eq!(md.pod_name, "");

    let mut md = RuntimeContainerMetadata {
        pod: true,
        ..RuntimeContainerMetadata::default()
    };
    md.set_mount_label("label");
    env.runtime.set_container_metadata("cid", &md).unwrap();
    assert_eq!(
        env.store.container("cid").unwrap().metadata,
        r#"{"pod-name":"","pod-id":"","image-name":"","image-id":"","name":"","metadata-name":"","mountlabel":"label","created-at":0,"pod":true}"#
    );
    assert_eq!(env.runtime.get_container_metadata("cid").unwrap(), md);
}

// R14, R18: a container whose metadata is not CRI-O's (as podman's).
#[test]
fn foreign_metadata_is_an_error_for_start_and_get() {
    let env = new_env();
    let image = pull_fixture(&env, "busybox", IMAGE_NAME);
    for (name, metadata) in [("invalid", "invalid"), ("empty", "")] {
        env.store
            .create_container(ContainerOptions {
                names: vec![name.into()],
                image: image.clone(),
                metadata: metadata.into(),
                ..ContainerOptions::default()
            })
            .unwrap();
        let err = env.runtime.start_container(name).unwrap_err();
        assert!(matches!(err, RuntimeError::Metadata { .. }), "{err:?}");
        assert_eq!(env.store.mount_count(name).unwrap(), 0);
        let err = env.runtime.get_container_metadata(name).unwrap_err();
        assert!(matches!(err, RuntimeError::Metadata { .. }), "{err:?}");
        // it can still be deleted
        env.runtime.delete_container(name).unwrap();
        assert!(matches!(
            env.store.container(name),
            Err(StoreError::ContainerUnknown { .. })
        ));
    }
}

// R7, R11, R21, R25: start twice, stop (forced), delete of a mounted container, sandbox removal.
#[test]
fn start_stop_delete_on_vfs() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let info = env
        .runtime
        .create_container(&container_request("c", "cid"))
        .unwrap();
    let path = env.runtime.start_container("cid").unwrap();
    check_rootfs(&path, &busybox_expectations().unwrap()).unwrap();
    assert_eq!(env.runtime.start_container("c").unwrap(), path);
    assert_eq!(env.store.mount_count("cid").unwrap(), 2);
    env.runtime.stop_container("cid").unwrap();
    assert_eq!(env.store.mount_count("cid").unwrap(), 0);
    env.runtime.stop_container("cid").unwrap();
    assert_eq!(env.store.mount_count("cid").unwrap(), 0);

    // delete while mounted: container, layer and both directories go
    let layer = env.store.container("cid").unwrap().layer;
    env.runtime.start_container("cid").unwrap();
    env.runtime.delete_container("cid").unwrap();
    assert!(matches!(
        env.store.container("cid"),
        Err(StoreError::ContainerUnknown { .. })
    ));
    assert!(!env.store.layer_exists(&layer).unwrap());
    assert!(!info.dir.exists() && !info.run_dir.exists());
    assert!(!info.dir.parent().unwrap().exists());
    env.runtime.delete_container("cid").unwrap(); // idempotent

    let pod = env
        .runtime
        .create_pod_sandbox(&sandbox_request("pod"))
        .unwrap();
    let layer = env.store.container("pod").unwrap().layer;
    env.runtime.remove_pod_sandbox("podName").unwrap();
    assert!(matches!(
        env.store.container("pod"),
        Err(StoreError::ContainerUnknown { .. })
    ));
    assert!(!env.store.layer_exists(&layer).unwrap());
    assert!(!pod.dir.exists() && !pod.run_dir.exists());
    assert!(matches!(
        env.runtime.remove_pod_sandbox("pod").unwrap_err(),
        RuntimeError::InvalidSandboxId { .. }
    ));
    assert_eq!(counts(&env.store).1, 0);
}

// R39, R40: the store refuses a duplicate ID or name; nothing is left behind.
#[test]
fn duplicate_ids_and_names_are_store_errors_without_leftovers() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    env.runtime
        .create_pod_sandbox(&sandbox_request("pod"))
        .unwrap();
    let before = counts(&env.store);
    let mut again = sandbox_request("pod");
    again.pod_name = "otherPod".into();
    again.container_name = "otherName".into();
    let err = env.runtime.create_pod_sandbox(&again).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Store(StoreError::IdInUse { .. })),
        "{err:?}"
    );
    let err = env
        .runtime
        .create_container(&container_request("podName", "other"))
        .unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Store(StoreError::NameInUse { name, .. }) if name == "podName"),
        "{err:?}"
    );
    assert_eq!(counts(&env.store), before);
    assert!(!env.root.join("vfs-containers").join("other").exists());
}

// R35–R38 (real equivalent): a create that fails part-way leaves nothing behind. The failure
// here is real: ID maps that leave root unmapped, refused while the store makes the image's
// ID-shifted top layer, after the container's checks passed.
#[test]
fn a_failed_create_leaves_no_container_layer_or_directories() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let before = counts(&env.store);
    let unmapped_root = vec![IdMap {
        container_id: 1,
        host_id: 100_000,
        size: 65_535,
    }];
    let request = ContainerRequest {
        id_mappings: Some(IdMappings {
            uid: unmapped_root.clone(),
            gid: unmapped_root,
        }),
        ..container_request("mapped", "mapped-id")
    };
    let err = env.runtime.create_container(&request).unwrap_err();
    assert!(err.to_string().contains("do not map root"), "{err}");
    assert_eq!(counts(&env.store), before);
    let image = env.store.image(IMAGE_NAME).unwrap();
    assert!(image.mapped_layers.is_empty(), "{image:?}");
    assert!(!env.root.join("vfs-containers").join("mapped-id").exists());
    assert!(!env.run.join("vfs-containers").join("mapped-id").exists());
    // the name is free again, and maps that map root work
    let request = ContainerRequest {
        id_mappings: Some(IdMappings {
            uid: vec![IdMap {
                container_id: 0,
                host_id: 100_000,
                size: 65_536,
            }],
            gid: vec![IdMap {
                container_id: 0,
                host_id: 100_000,
                size: 65_536,
            }],
        }),
        ..container_request("mapped", "mapped-id")
    };
    env.runtime.create_container(&request).unwrap();
    assert_eq!(env.store.image(IMAGE_NAME).unwrap().mapped_layers.len(), 1);
}

// R41: an image whose config cannot be read aborts before a container is created.
#[test]
fn an_unreadable_image_aborts_before_creating() {
    let env = new_env();
    let id = pull_fixture(&env, "busybox", IMAGE_NAME);
    env.store
        .set_image_big_data(&id, "manifest", b"not a manifest", None)
        .unwrap();
    let before = counts(&env.store);
    let err = env
        .runtime
        .create_container(&container_request("c", ""))
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Image(_)), "{err:?}");
    assert_eq!(counts(&env.store), before);
}

// SELinux label options become the recorded labels on an SELinux host.
#[test]
fn selinux_labels_are_recorded_and_returned() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let runtime = env.runtime.clone().with_selinux(true);
    let request = ContainerRequest {
        label_options: vec!["type:spc_t".into(), "level:s0:c1,c2".into()],
        ..container_request("labelled", "")
    };
    let info = runtime.create_container(&request).unwrap();
    assert_eq!(info.process_label, "system_u:system_r:spc_t:s0:c1,c2");
    assert_eq!(
        info.mount_label,
        "system_u:object_r:container_file_t:s0:c1,c2"
    );
    let record = env.store.container(&info.id).unwrap();
    assert_eq!(record.flags["ProcessLabel"], info.process_label.as_str());
    assert_eq!(record.flags["MountLabel"], info.mount_label.as_str());
    // the mount label is not persisted into the metadata at creation (§8.1 step 17)
    assert_eq!(
        runtime
            .get_container_metadata(&info.id)
            .unwrap()
            .mount_label,
        ""
    );
    let request = ContainerRequest {
        label_options: vec!["disable".into()],
        ..container_request("disabled", "")
    };
    let info = runtime.create_container(&request).unwrap();
    assert_eq!(info.process_label, "");
    assert!(
        info.mount_label
            .starts_with("system_u:object_r:container_file_t:s0:c")
    );
}

// R42, R43: an absent pause image is pulled (plain and basic-auth registries) and found by its
// canonical reference; failures create nothing.
#[test]
fn the_pause_image_is_pulled_when_absent() {
    let env = new_env();
    let registries = RegistrySet::shared().unwrap();
    let fx = fixtures().image("busybox").unwrap();

    let plain = registries.get(RegistryMode::Plain);
    let pause = plain.image_reference(&fx.registry_reference());
    assert!(!pause.contains("://"));
    let request = PodSandboxRequest {
        image_name: pause.clone(),
        ..sandbox_request("pod-plain")
    };
    let info = env.runtime.create_pod_sandbox(&request).unwrap();
    let record = env.store.container(&info.id).unwrap();
    assert_eq!(record.image, fx.image_id().unwrap());
    assert_eq!(
        env.runtime
            .get_container_metadata(&info.id)
            .unwrap()
            .image_name,
        pause
    );
    assert!(info.config.is_some());
    // present now: a second sandbox does not pull (the same image is used)
    let request = PodSandboxRequest {
        image_name: pause,
        pod_name: "pod2".into(),
        container_name: "infra2".into(),
        ..sandbox_request("pod-plain-2")
    };
    env.runtime.create_pod_sandbox(&request).unwrap();

    // basic auth: without credentials the pull fails and nothing is created
    let env = new_env();
    let auth = registries.get(RegistryMode::BasicAuth);
    let pause = auth.image_reference(&fx.registry_reference());
    let request = PodSandboxRequest {
        image_name: pause.clone(),
        ..sandbox_request("pod-auth")
    };
    let err = env.runtime.create_pod_sandbox(&request).unwrap_err();
    assert!(matches!(err, RuntimeError::Image(_)), "{err:?}");
    assert!(env.store.images().unwrap().is_empty());
    assert_eq!(counts(&env.store), (0, 0));
    // with the auth file it works
    let request = PodSandboxRequest {
        image_auth_file: Some(auth.auth_file().unwrap()),
        ..request
    };
    let info = env.runtime.create_pod_sandbox(&request).unwrap();
    assert_eq!(
        env.store.container(&info.id).unwrap().image,
        fx.image_id().unwrap()
    );

    // an absent pause image must be fully qualified to be pulled
    for name in [
        "pause",
        "docker://127.0.0.1:1/pause:3.2",
        "library/pause:3.2",
    ] {
        let request = PodSandboxRequest {
            image_name: name.into(),
            ..sandbox_request("pod-unqualified")
        };
        let err = env.runtime.create_pod_sandbox(&request).unwrap_err();
        assert!(
            matches!(err, RuntimeError::PauseImageNotQualified { .. }),
            "{name}: {err:?}"
        );
    }
    let _ = env.dir.path();
}

// Creating, starting, stopping and deleting 16 containers in parallel threads.
#[test]
fn sixteen_containers_in_parallel() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let before = counts(&env.store);
    let results: Vec<(String, PathBuf)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let runtime = env.runtime.clone();
                s.spawn(move || {
                    let name = format!("parallel-{i}");
                    let info = runtime
                        .create_container(&container_request(&name, ""))
                        .unwrap();
                    let first = runtime.start_container(&info.id).unwrap();
                    assert_eq!(runtime.start_container(&name).unwrap(), first);
                    assert!(first.join("bin/busybox").is_file());
                    (info.id, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(counts(&env.store).1, 16);
    let mut paths: Vec<_> = results.iter().map(|(_, p)| p.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), 16);
    for (id, _) in &results {
        assert_eq!(env.store.mount_count(id).unwrap(), 2);
    }
    std::thread::scope(|s| {
        for (id, _) in &results {
            let runtime = env.runtime.clone();
            s.spawn(move || {
                runtime.stop_container(id).unwrap();
                assert_eq!(runtime.store().mount_count(id).unwrap(), 0);
                runtime.delete_container(id).unwrap();
            });
        }
    });
    assert_eq!(counts(&env.store), before);
}

// A real overlay mount: start mounts it, a second start shares it, stop unmounts it.
#[test]
fn start_stop_on_overlay_mounts_and_unmounts() {
    let env = new_env_with("overlay");
    pull_fixture(&env, "busybox", IMAGE_NAME);
    let info = env
        .runtime
        .create_container(&container_request("c", "overlay-c"))
        .unwrap();
    let path = env.runtime.start_container("overlay-c").unwrap();
    let guard = UnmountOnDrop(path.clone());
    assert!(is_mount_point(&path), "{}", path.display());
    check_rootfs(&path, &busybox_expectations().unwrap()).unwrap();
    assert_eq!(env.runtime.start_container("c").unwrap(), path);
    assert_eq!(env.store.mount_count("c").unwrap(), 2);
    // writes land in the container's layer, not the image's
    std::fs::write(path.join("tmp/hello"), b"hi").unwrap();
    env.runtime.stop_container("c").unwrap();
    assert!(!is_mount_point(&path));
    assert_eq!(env.store.mount_count("c").unwrap(), 0);
    let path = env.runtime.start_container("c").unwrap();
    assert_eq!(std::fs::read(path.join("tmp/hello")).unwrap(), b"hi");
    env.runtime.delete_container("c").unwrap();
    assert!(!is_mount_point(&path));
    assert!(!info.dir.exists());
    drop(guard);
}

struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if is_mount_point(&self.0) {
            let _ = std::process::Command::new("umount").arg(&self.0).output();
        }
    }
}

fn is_mount_point(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let target = path.to_string_lossy();
    mountinfo
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target.as_ref()))
}

// R2, R5, R9, R12, R26 (real equivalents of "the store lookup fails with ERR"): a
// containers.json the store cannot read is an error from every call, never mapped to
// InvalidContainerId / InvalidSandboxId.
// R15, R10: mounting a container whose layer data is gone fails, and so does unmounting it.
// R24, R28: the store's delete fails while something is mounted inside the layer.
#[test]
fn store_failures_are_returned_unmapped() {
    let env = new_env();
    pull_fixture(&env, "busybox", IMAGE_NAME);
    env.runtime
        .create_container(&container_request("c", "cid"))
        .unwrap();
    env.runtime
        .create_pod_sandbox(&sandbox_request("pod"))
        .unwrap();

    // R24, R28: a mount point inside the layer cannot be removed
    let layer = env.store.container("cid").unwrap().layer;
    let busy = env.root.join("vfs/dir").join(&layer).join("tmp");
    std::fs::create_dir_all(&busy).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&busy)
        .status()
        .unwrap();
    assert!(mounted.success());
    let delete = env.runtime.delete_container("cid");
    let pod_layer = env.store.container("pod").unwrap().layer;
    let pod_busy = env.root.join("vfs/dir").join(&pod_layer).join("tmp");
    std::fs::create_dir_all(&pod_busy).unwrap();
    std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&pod_busy)
        .status()
        .unwrap();
    let remove = env.runtime.remove_pod_sandbox("pod");
    for dir in [&busy, &pod_busy] {
        std::process::Command::new("umount")
            .arg(dir)
            .status()
            .unwrap();
    }
    assert!(matches!(delete, Err(RuntimeError::Store(_))), "{delete:?}");
    assert!(matches!(remove, Err(RuntimeError::Store(_))), "{remove:?}");

    // R15, R10: the layer data of a mounted container disappears
    env.runtime
        .create_container(&container_request("d", "did"))
        .unwrap();
    env.runtime.start_container("did").unwrap();
    let layer = env.store.container("did").unwrap().layer;
    std::fs::remove_dir_all(env.root.join("vfs/dir").join(&layer)).unwrap();
    let stop = env.runtime.stop_container("did");
    assert!(matches!(stop, Err(RuntimeError::Store(_))), "{stop:?}");
    let start = env.runtime.start_container("did");
    assert!(matches!(start, Err(RuntimeError::Store(_))), "{start:?}");

    // R2, R5, R9, R12, R26: containers.json cannot be read
    std::fs::write(
        env.root.join("vfs-containers/containers.json"),
        b"{not json",
    )
    .unwrap();
    // as another writer would, bump the lock file's last-writer token in place
    {
        use std::io::Write;
        let mut lock = std::fs::OpenOptions::new()
            .write(true)
            .open(env.root.join("vfs-containers/containers.lock"))
            .unwrap();
        lock.write_all(&[b'x'; 64]).unwrap();
    }
    let store_error = |r: Result<(), RuntimeError>| {
        assert!(matches!(r, Err(RuntimeError::Store(_))), "{r:?}");
    };
    store_error(env.runtime.get_run_dir("did").map(|_| ()));
    store_error(env.runtime.get_work_dir("did").map(|_| ()));
    store_error(env.runtime.stop_container("did"));
    store_error(env.runtime.start_container("did").map(|_| ()));
    store_error(env.runtime.remove_pod_sandbox("did"));
    store_error(env.runtime.delete_container("did"));
}
