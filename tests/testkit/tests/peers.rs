//! The peer-tool helpers against the real tools: podman and the containers-storage CLI agree on
//! an empty vfs store made in a `/dev/shm` tempdir ([`StoreDirs`]), a failing command panics with its stderr,
//! and skopeo copies a fixture into that store where both tools then see it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::peers::{
    ContainersStorage, Podman, Skopeo, StoreDirs, shm_tempdir, tool_available, tool_installed,
};

#[test]
fn tool_lookup_finds_sh_and_not_a_made_up_name() {
    assert!(tool_available("sh"));
    assert!(tool_installed("sh"));
    // tool_available would panic here under PODSTORE_REQUIRE_TOOLS=1 (as in CI), by design
    assert!(!tool_installed("podstore-no-such-tool-xyz"));
}

#[test]
fn shm_tempdir_is_on_dev_shm_with_the_prefix() {
    let dir = shm_tempdir("podstore-testkit-peers-");
    assert!(dir.path().starts_with("/dev/shm"));
    let name = dir
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("podstore-testkit-peers-"), "{name}");
    assert!(dir.path().is_dir());
}

#[test]
fn podman_and_containers_storage_see_what_skopeo_copied() {
    if !(tool_available("podman")
        && tool_available("skopeo")
        && tool_available("containers-storage"))
    {
        return;
    }
    let dir = StoreDirs::new("podstore-testkit-peers-");
    let (root, run) = (dir.root(), dir.runroot());
    assert!(dir.tmpdir().is_dir());
    let conf = dir.empty_file("registries.conf");
    assert_eq!(std::fs::read(&conf).unwrap(), b"");
    let podman = dir.podman("vfs");
    let cs = dir.containers_storage("vfs");
    assert_eq!(
        podman.json(&["images", "--format", "json"]),
        serde_json::json!([])
    );

    let fixtures = FixtureSet::shared().unwrap();
    let name = "localhost/testkit/busybox:latest";
    Skopeo.run(&[
        "copy",
        "--quiet",
        &fixtures.oci_reference("busybox"),
        &Skopeo::store_reference(&root, &run, "vfs", name),
    ]);
    let listed = podman.json(&["images", "--format", "json"]);
    let images = listed.as_array().unwrap();
    assert_eq!(images.len(), 1, "{listed}");
    assert_eq!(
        images[0]["Digest"],
        fixtures.image("busybox").unwrap().manifest_digest
    );
    let theirs = cs.json(&["images", "--json"]);
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs[0]["names"][0], name);

    // the same store through explicitly built peers
    let again = Podman::new(&root, &run, "vfs").json(&["images", "--format", "json"]);
    assert_eq!(again, listed);
    let again = ContainersStorage::new(&root, &run, "vfs").json(&["images", "--json"]);
    assert_eq!(again, theirs);

    let failure = std::panic::catch_unwind(|| podman.run(&["image", "inspect", "no-such-image"]))
        .unwrap_err();
    let message = failure.downcast_ref::<String>().unwrap();
    assert!(message.contains("no-such-image"), "{message}");
}
