//! Staged layer creation (`lock_layer_creation` → `stage_layer` without any store lock →
//! `commit_staged_layer` under a short `layers.lock`) on vfs and overlay: the same records,
//! tar-split and files as direct creation; a bad diff leaves nothing; crash leftovers of staging
//! are removed at open unless a live stager holds their layer's lock; creation lock files are
//! deleted by their holders and still exclude every other locker (threads and processes); and
//! the time `layers.lock` is held per layer, direct versus staged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)]
mod common;

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::{Scratch, test_image};
use podstore_metadata::records::Record;
use podstore_metadata::{Error, Layer, LayerOptions, STAGING_DIR, Store};
use podstore_reference::Digest;

fn record_without_created(mut l: Layer) -> String {
    l.created = podstore_metadata::GoTime::default();
    let mut out = Vec::new();
    l.write_json(&mut out);
    String::from_utf8(out).unwrap()
}

fn tar_split(s: &Scratch, driver: &str, id: &str) -> Vec<u8> {
    let f = fs::File::open(s.root().join(format!("{driver}-layers/{id}.tar-split.gz"))).unwrap();
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Everything under `<graphroot>/tmp/podstore-staging` that is not a lock file, and under
/// the driver's own staging directory (`<graphroot>/overlay/staging`), prefixed with its
/// directory's name.
fn staging_leftovers(s: &Scratch) -> Vec<String> {
    let mut left = Vec::new();
    for (label, dir) in [
        ("tmp", s.root().join("tmp").join(STAGING_DIR)),
        (s.driver, s.root().join(s.driver).join("staging")),
    ] {
        if let Ok(d) = fs::read_dir(dir) {
            left.extend(
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.ends_with(".lock"))
                    .map(|n| format!("{label}/{n}")),
            );
        }
    }
    left.sort();
    left
}

fn options(id: &str, parent: Option<&str>, diff_id: &Digest) -> LayerOptions {
    LayerOptions {
        id: Some(id.to_owned()),
        parent: parent.map(str::to_owned),
        uncompressed_digest: Some(diff_id.clone()),
        no_sync: true,
        ..LayerOptions::default()
    }
}

#[test]
fn staged_layers_match_direct_creation_on_both_drivers() {
    for driver in ["vfs", "overlay"] {
        let img = test_image(driver);
        let ids = img.layer_ids();
        let direct = Scratch::new(driver);
        let staged = Scratch::new(driver);
        let (a, b) = (direct.open(), staged.open());
        for (i, l) in img.layers.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| ids[p].as_str());
            a.create_layer(options(&ids[i], parent, &l.diff_id), Some(&mut &l.gz[..]))
                .unwrap();
        }
        let locks: Vec<_> = ids
            .iter()
            .map(|id| b.lock_layer_creation(id).unwrap())
            .collect();
        let stage = |i: usize| {
            let parent = i.checked_sub(1).map(|p| ids[p].as_str());
            b.stage_layer(
                &locks[i],
                options(&ids[i], parent, &img.layers[i].diff_id),
                &mut &img.layers[i].gz[..],
            )
            .unwrap()
        };
        if driver == "overlay" {
            // an overlay diff does not need its parent: stage the child first, commit in order
            let second = stage(1);
            assert!(!b.layer_exists(&ids[1]).unwrap(), "staged is not visible");
            let first = stage(0);
            b.commit_staged_layer(&locks[0], first).unwrap();
            b.commit_staged_layer(&locks[1], second).unwrap();
        } else {
            let first = stage(0);
            b.commit_staged_layer(&locks[0], first).unwrap();
            let second = stage(1);
            b.commit_staged_layer(&locks[1], second).unwrap();
        }
        for id in &ids {
            assert_eq!(
                record_without_created(a.layer(id).unwrap()),
                record_without_created(b.layer(id).unwrap()),
                "{driver}"
            );
            assert_eq!(
                tar_split(&direct, driver, id),
                tar_split(&staged, driver, id),
                "{driver}"
            );
        }
        let top = staged.root().join(match driver {
            "vfs" => format!("vfs/dir/{}", ids[1]),
            _ => format!("overlay/{}/diff", ids[1]),
        });
        assert!(top.join("data/x").is_file(), "{driver}");
        if driver == "vfs" {
            assert!(top.join("etc/hello").is_file(), "vfs copies the parent");
        } else {
            let lower = fs::read_to_string(staged.root().join(format!("overlay/{}/lower", ids[1])))
                .unwrap();
            assert!(lower.starts_with("l/"), "{lower}");
            let mode = |p: std::path::PathBuf| {
                std::os::unix::fs::PermissionsExt::mode(&fs::metadata(p).unwrap().permissions())
            };
            for id in &ids {
                assert_eq!(
                    mode(direct.root().join(format!("overlay/{id}/diff"))),
                    mode(staged.root().join(format!("overlay/{id}/diff")))
                );
            }
            // podman's store reads it: mount the top layer through the driver
            let merged = b
                .mount(&ids[1], &podstore_layer::MountOptions::default())
                .unwrap();
            assert!(merged.join("etc/hello").is_file());
            b.unmount(&ids[1], true).unwrap();
        }
        assert!(staging_leftovers(&staged).is_empty(), "{driver}");
    }
}

#[test]
fn a_bad_diff_while_staging_leaves_nothing() {
    for driver in ["vfs", "overlay"] {
        let s = Scratch::new(driver);
        let store = s.open();
        let img = test_image("bad");
        let id = img.layer_ids()[0].clone();
        let lock = store.lock_layer_creation(&id).unwrap();
        let wrong = Digest::sha256_of(b"not this");
        let err = store
            .stage_layer(
                &lock,
                options(&id, None, &wrong),
                &mut &img.layers[0].gz[..],
            )
            .unwrap_err();
        assert!(matches!(err, Error::DiffDigestMismatch { .. }), "{err}");
        // a truncated blob
        let gz = &img.layers[0].gz;
        let err = store
            .stage_layer(
                &lock,
                options(&id, None, &img.layers[0].diff_id),
                &mut &gz[..gz.len() / 2],
            )
            .unwrap_err();
        assert!(err.to_string().contains(&id), "{err}");
        assert!(staging_leftovers(&s).is_empty(), "{driver}");
        assert!(store.layers().unwrap().is_empty());
        assert!(!store.driver().exists(&id));
    }
}

#[test]
fn staging_leftovers_are_removed_at_open_unless_locked() {
    let s = Scratch::new("overlay");
    let store = s.open();
    let dead = "d".repeat(64);
    let live = "e".repeat(64);
    let root = s.root().join("tmp").join(STAGING_DIR);
    for id in [&dead, &live] {
        let dir = root.join(format!("{id}-0123456789abcdef/layer/diff"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("file"), b"half").unwrap();
    }
    // a stager of `live` is still at work (here, in this process)
    let lock = store.lock_layer_creation(&live).unwrap();
    drop(Store::open(&s.options()).unwrap());
    let left = staging_leftovers(&s);
    assert_eq!(left, vec![format!("tmp/{live}-0123456789abcdef")]);
    drop(lock);
    drop(Store::open(&s.options()).unwrap());
    assert!(staging_leftovers(&s).is_empty());
    assert!(store.layers().unwrap().is_empty());
}

#[test]
fn layers_lock_is_held_only_for_the_commit() {
    // 16 MiB of small and large files, uncompressed
    let mut b = tar::Builder::new(Vec::new());
    let mut seed = 7u64;
    for i in 0..256 {
        let len = if i % 16 == 0 { 512 * 1024 } else { 32 * 1024 };
        let data: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 56) as u8
            })
            .collect();
        let mut h = tar::Header::new_ustar();
        h.set_path(format!("d{}/f{i}", i % 8)).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, &data[..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    for driver in ["vfs", "overlay"] {
        let s = Scratch::new(driver);
        let store = s.open();
        let plain = LayerOptions {
            no_sync: true,
            ..LayerOptions::default()
        };
        let (layer, direct) = store
            .create_layer(plain.clone(), Some(&mut &tar[..]))
            .unwrap();
        store.delete_layer(&layer.id).unwrap();
        let lock = store.lock_layer_creation(&layer.id).unwrap();
        let staged = store
            .stage_layer(&lock, plain.clone(), &mut &tar[..])
            .unwrap();
        let staging = staged.staging_took();
        let (again, stats) = store.commit_staged_layer(&lock, staged).unwrap();
        assert_eq!(again.uncompressed_digest, layer.uncompressed_digest);
        eprintln!(
            "MEASURE: {} MiB layer on tmpfs ({driver}): layers.lock held {:?} by create_layer; \
             staged: {:?} staging without the lock, then layers.lock held {:?}",
            tar.len() >> 20,
            direct.layers_lock_held,
            staging,
            stats.layers_lock_held
        );
    }
}

/// The `*.lock` files under `<graphroot>/tmp/podstore-staging`.
fn staging_lock_files(root: &Path) -> Vec<String> {
    match fs::read_dir(root.join("tmp").join(STAGING_DIR)) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".lock"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn creation_lock_files_are_deleted_on_release_and_stale_ones_at_open() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let held = "a".repeat(64);
    let lock = store.lock_layer_creation(&held).unwrap();
    assert_eq!(staging_lock_files(&s.root()), vec![format!("{held}.lock")]);
    // Lock files older podstore versions left behind (one per layer ever pulled).
    let root = s.root().join("tmp").join(STAGING_DIR);
    for id in ["b", "c"] {
        fs::write(root.join(format!("{}.lock", id.repeat(64))), b"").unwrap();
    }
    drop(Store::open(&s.options()).unwrap());
    assert_eq!(
        staging_lock_files(&s.root()),
        vec![format!("{held}.lock")],
        "free stale lock files go at open, the held one stays"
    );
    drop(lock);
    assert!(staging_lock_files(&s.root()).is_empty());

    // A whole staged creation leaves no file behind either.
    let image = test_image("lockfiles");
    let (id, diff_id) = (
        image.layer_ids()[0].clone(),
        image.layers[0].diff_id.clone(),
    );
    let lock = store.lock_layer_creation(&id).unwrap();
    let staged = store
        .stage_layer(
            &lock,
            options(&id, None, &diff_id),
            &mut &image.layers[0].gz[..],
        )
        .unwrap();
    store.commit_staged_layer(&lock, staged).unwrap();
    drop(lock);
    assert!(staging_lock_files(&s.root()).is_empty());
    assert!(staging_leftovers(&s).is_empty());
    assert!(store.layer_exists(&id).unwrap());
}

/// Runs `rounds` critical sections under the creation lock of `id`, each a read-modify-write of
/// the counter file `counter` (with a pause in between, so unexcluded lockers lose updates).
fn count_under_creation_lock(store: &Store, id: &str, counter: &Path, rounds: usize) {
    for _ in 0..rounds {
        let lock = store.lock_layer_creation(id).unwrap();
        let n: u64 = fs::read_to_string(counter).unwrap().trim().parse().unwrap();
        std::thread::sleep(std::time::Duration::from_micros(300));
        fs::write(counter, format!("{}", n + 1)).unwrap();
        drop(lock);
    }
}

/// Child half of `creation_locks_exclude_while_their_files_are_deleted`.
#[test]
#[ignore = "helper process for the creation lock test"]
fn child_creation_locker() {
    let Ok(root) = std::env::var("PODSTORE_CHILD_ROOT") else {
        return;
    };
    let root = Path::new(&root);
    let store = common::open_store(&podstore_metadata::StoreOptions::new(
        root.join("root"),
        root.join("run"),
        "vfs",
    ));
    let rounds = std::env::var("PODSTORE_CHILD_ROUNDS")
        .unwrap()
        .parse()
        .unwrap();
    count_under_creation_lock(&store, &"f".repeat(64), &root.join("counter"), rounds);
}

/// Every release deletes the lock file while other threads and processes wait on it or open it
/// anew; the lockers still exclude each other (no lost counter update) and no file is left.
#[test]
fn creation_locks_exclude_while_their_files_are_deleted() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let counter = s.dir.path().join("counter");
    fs::write(&counter, "0").unwrap();
    let (threads, processes, rounds) = (3, 2, 40);
    let children: Vec<_> = (0..processes)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "child_creation_locker",
                    "--ignored",
                    "--test-threads=1",
                    "-q",
                ])
                .env("PODSTORE_CHILD_ROOT", s.dir.path())
                .env("PODSTORE_CHILD_ROUNDS", rounds.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| count_under_creation_lock(&store, &"f".repeat(64), &counter, rounds));
        }
    });
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    assert_eq!(
        fs::read_to_string(&counter).unwrap(),
        ((threads + processes) * rounds).to_string(),
        "an update was lost: two lockers held the creation lock at once"
    );
    assert!(staging_lock_files(&s.root()).is_empty());
}

#[test]
fn overlay_stages_inside_its_home_so_a_bind_mounted_home_still_commits() {
    // containers/storage (and podstore, at the first mount) make the overlay home a bind mount
    // of itself; a rename from `<graphroot>/tmp` into it then fails with EXDEV.
    let s = Scratch::new("overlay");
    let store = s.open();
    let img = test_image("overlay");
    let ids = img.layer_ids();
    let stage_and_commit = |i: usize, check_staged: &dyn Fn()| {
        let lock = store.lock_layer_creation(&ids[i]).unwrap();
        let parent = i.checked_sub(1).map(|p| ids[p].as_str());
        let staged = store
            .stage_layer(
                &lock,
                options(&ids[i], parent, &img.layers[i].diff_id),
                &mut &img.layers[i].gz[..],
            )
            .unwrap();
        check_staged();
        store.commit_staged_layer(&lock, staged).unwrap();
    };
    stage_and_commit(0, &|| {});
    store
        .mount(&ids[0], &podstore_layer::MountOptions::default())
        .unwrap();
    let home = s.root().join("overlay");
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(home.to_str().unwrap())),
        "the overlay home is not a mount point after a mount"
    );
    stage_and_commit(1, &|| {
        let left = staging_leftovers(&s);
        assert!(
            left.iter()
                .any(|n| n.starts_with(&format!("overlay/{}-", ids[1]))),
            "overlay did not stage in its home: {left:?}"
        );
    });
    assert!(store.driver().exists(&ids[1]));
    assert!(
        staging_leftovers(&s).is_empty(),
        "{:?}",
        staging_leftovers(&s)
    );
    store.unmount(&ids[0], true).unwrap();
}

#[test]
fn leftovers_in_the_overlay_staging_dir_are_ours_only_when_named_so() {
    let s = Scratch::new("overlay");
    let store = s.open();
    let dead = "d".repeat(64);
    let live = "e".repeat(64);
    let root = s.root().join("overlay").join("staging");
    for name in [
        format!("{dead}-0123456789abcdef"),
        format!("{live}-0123456789abcdef"),
        "123456789".to_owned(), // containers/storage's own
    ] {
        let dir = root.join(name).join("diff");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("file"), b"half").unwrap();
    }
    let lock = store.lock_layer_creation(&live).unwrap();
    let report = store
        .check(&podstore_metadata::CheckOptions {
            stale_after: std::time::Duration::ZERO,
            ..podstore_metadata::CheckOptions::default()
        })
        .unwrap();
    let stale: Vec<String> = report
        .findings
        .iter()
        .map(|f| format!("{f:?}"))
        .filter(|f| f.contains("StaleStaging"))
        .collect();
    assert_eq!(stale.len(), 1, "{:?}", report.findings);
    assert!(stale[0].contains(&dead), "{stale:?}");
    drop(Store::open(&s.options()).unwrap());
    assert_eq!(
        staging_leftovers(&s),
        vec![
            "overlay/123456789".to_owned(),
            format!("overlay/{live}-0123456789abcdef")
        ]
    );
    drop(lock);
    drop(Store::open(&s.options()).unwrap());
    assert_eq!(staging_leftovers(&s), vec!["overlay/123456789".to_owned()]);
}
