//! Blob store conformance suite: write, commit, read back, mismatches, resume, abort,
//! singleflight across threads and processes, crash leftovers and pruning.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime};

use podstore_blobstore::{Begin, BlobError, BlobStore, IngestWriter};
use podstore_reference::{Algorithm, Digest};

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("blobstore-test-")
        .tempdir_in("/dev/shm")
        .unwrap()
}

/// Deterministic test content of `len` bytes (not all equal, so offsets matter).
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect()
}

fn expect_write(begin: Begin) -> IngestWriter {
    match begin {
        Begin::Write(w) => w,
        Begin::Present(info) => panic!("expected Write, blob present: {info:?}"),
    }
}

fn write_in_chunks(w: &mut IngestWriter, data: &[u8], chunk: usize) {
    for piece in data.chunks(chunk) {
        w.write_all(piece).unwrap();
    }
}

fn lock_inode(store: &BlobStore, digest: &Digest) -> u64 {
    fs::metadata(store.ingest_path(digest).join("lock"))
        .unwrap()
        .ino()
}

/// Number of lock requests blocked on the file with this inode, from /proc/locks (waiters are
/// the lines with "->").
fn blocked_waiters(inode: u64) -> usize {
    let inode = inode.to_string();
    fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .filter(|line| line.contains("->"))
        .filter(|line| {
            line.split_whitespace().any(|field| {
                field.matches(':').count() == 2 && field.rsplit(':').next() == Some(inode.as_str())
            })
        })
        .count()
}

/// Waits (bounded) until `n` lock requests are blocked on `inode`.
fn wait_for_blocked_waiters(inode: u64, n: usize) {
    for _ in 0..12_000 {
        if blocked_waiters(inode) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "{n} waiters never blocked on inode {inode}: {}",
        blocked_waiters(inode)
    );
}

#[test]
fn handles_are_shareable_across_threads() {
    fn shareable<T: Clone + Send + Sync + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    shareable::<BlobStore>();
    shareable::<podstore_blobstore::OciLayout>();
    sendable::<IngestWriter>();
    sendable::<Begin>();
    sendable::<BlobError>();
}

#[test]
fn write_commit_and_read_back() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    assert!(dir.path().join("blobs").is_dir() && dir.path().join("ingest").is_dir());
    let data = content(1_000_003);
    let digest = Digest::sha256_of(&data);
    assert!(!store.exists(&digest));

    let mut w = expect_write(store.begin(&digest, Some(data.len() as u64)).unwrap());
    assert_eq!(w.offset(), 0);
    write_in_chunks(&mut w, &data, 7_919);
    assert_eq!(w.offset(), data.len() as u64);
    // Nothing visible before commit.
    assert!(!store.exists(&digest));
    let info = w.commit().unwrap();

    assert_eq!(info.digest, digest);
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(
        info.path,
        dir.path().join("blobs/sha256").join(digest.hex())
    );
    assert_eq!(store.path(&digest), info.path);
    assert!(store.exists(&digest));
    assert_eq!(store.stat(&digest).unwrap(), info);
    let mut read = Vec::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert_eq!(read, data);
    assert_eq!(
        fs::metadata(&info.path).unwrap().permissions().mode() & 0o777,
        0o444
    );
    assert!(!store.ingest_path(&digest).exists(), "ingest left behind");

    // A second begin sees it.
    match store.begin(&digest, Some(data.len() as u64)).unwrap() {
        Begin::Present(p) => assert_eq!(p, info),
        Begin::Write(_) => panic!("committed blob not seen"),
    }
    // ...but a wrong announced size for a present digest is an error naming both sizes.
    match store.begin(&digest, Some(5)) {
        Err(BlobError::SizeMismatch {
            digest: d,
            expected: 5,
            actual,
        }) => {
            assert_eq!(d, digest);
            assert_eq!(actual, data.len() as u64);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        store.exists(&digest),
        "a present blob is never removed by a bad request"
    );
}

#[test]
fn other_algorithms_and_unknown_size() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(4_321);
    for algorithm in [Algorithm::Sha384, Algorithm::Sha512] {
        let digest = Digest::of(algorithm, &data);
        let mut w = expect_write(store.begin(&digest, None).unwrap());
        w.write_all(&data).unwrap();
        let info = w.commit().unwrap();
        assert_eq!(
            info.path,
            dir.path()
                .join("blobs")
                .join(algorithm.as_str())
                .join(digest.hex())
        );
        assert_eq!(fs::read(&info.path).unwrap(), data);
    }
}

#[test]
fn list_stat_open_delete() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    assert!(store.list().unwrap().is_empty());
    let mut expected: Vec<_> = (0..5)
        .map(|i| {
            store
                .put_bytes(format!("blob number {i}").as_bytes())
                .unwrap()
        })
        .collect();
    let sha512 = Digest::of(Algorithm::Sha512, b"long");
    let mut w = expect_write(store.begin(&sha512, Some(4)).unwrap());
    w.write_all(b"long").unwrap();
    expected.push(w.commit().unwrap());
    // put_bytes of present content is a no-op returning the same info.
    assert_eq!(store.put_bytes(b"blob number 3").unwrap(), expected[3]);
    // Stray files that are not digests are not blobs.
    fs::write(dir.path().join("blobs/sha256/not-a-digest"), b"x").unwrap();
    fs::create_dir_all(dir.path().join("blobs/md5")).unwrap();

    expected.sort_by(|a, b| a.digest.cmp(&b.digest));
    assert_eq!(store.list().unwrap(), expected);

    let victim = expected.remove(2);
    store.delete(&victim.digest).unwrap();
    assert!(!store.exists(&victim.digest));
    assert_eq!(store.list().unwrap(), expected);
    for result in [
        store.delete(&victim.digest).map(|_| ()),
        store.stat(&victim.digest).map(|_| ()),
        store.open_blob(&victim.digest).map(|_| ()),
    ] {
        match result {
            Err(BlobError::NotFound { digest }) => assert_eq!(digest, victim.digest),
            other => panic!("unexpected {other:?}"),
        }
    }
    let err = store.stat(&victim.digest).unwrap_err().to_string();
    assert!(
        err.contains(&victim.digest.to_string()),
        "error must name the digest: {err}"
    );
}

#[test]
fn digest_mismatch_is_typed_and_removes_the_ingest() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let good = content(70_000);
    let mut bad = good.clone();
    bad[12_345] ^= 0xff;
    let digest = Digest::sha256_of(&good);
    let mut w = expect_write(store.begin(&digest, Some(good.len() as u64)).unwrap());
    write_in_chunks(&mut w, &bad, 4096);
    match w.commit() {
        Err(BlobError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, digest);
            assert_eq!(actual, Digest::sha256_of(&bad));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!store.exists(&digest));
    assert!(
        !store.ingest_path(&digest).exists(),
        "failed ingest must be removed"
    );
    assert!(store.list().unwrap().is_empty());
    // A fresh attempt starts from zero.
    let w = expect_write(store.begin(&digest, Some(good.len() as u64)).unwrap());
    assert_eq!(w.offset(), 0);
}

#[test]
fn size_mismatch_is_typed_and_removes_the_ingest() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(10_000);
    let digest = Digest::sha256_of(&data);
    let mut w = expect_write(store.begin(&digest, Some(10_000)).unwrap());
    w.write_all(&data[..9_000]).unwrap();
    match w.commit() {
        Err(BlobError::SizeMismatch {
            digest: d,
            expected,
            actual,
        }) => {
            assert_eq!(d, digest);
            assert_eq!((expected, actual), (10_000, 9_000));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!store.exists(&digest));
    assert!(!store.ingest_path(&digest).exists());
}

#[test]
fn writing_past_the_expected_size_is_refused() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(100);
    let digest = Digest::sha256_of(&data);
    let mut w = expect_write(store.begin(&digest, Some(100)).unwrap());
    w.write_all(&data[..60]).unwrap();
    let err = w.write_all(&data[..41]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<BlobError>());
    assert!(
        matches!(
            inner,
            Some(BlobError::SizeExceeded {
                expected: 100,
                offset: 60,
                attempted: 41,
                ..
            })
        ),
        "{err:?}"
    );
    assert_eq!(w.offset(), 60, "a refused write stores nothing");
    w.write_all(&data[60..]).unwrap();
    assert_eq!(w.commit().unwrap().size, 100);
}

#[test]
fn resume_after_drop_rehashes_the_prefix() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(600_000);
    let digest = Digest::sha256_of(&data);

    let mut w = expect_write(store.begin(&digest, Some(data.len() as u64)).unwrap());
    write_in_chunks(&mut w, &data[..250_000], 10_000);
    drop(w); // connection dropped: partial data kept, ingest released
    assert_eq!(
        fs::metadata(store.ingest_path(&digest).join("data"))
            .unwrap()
            .len(),
        250_000
    );
    assert!(!store.exists(&digest));

    let mut w = expect_write(store.begin(&digest, Some(data.len() as u64)).unwrap());
    assert_eq!(w.offset(), 250_000);
    w.write_all(&data[250_000..]).unwrap();
    let info = w.commit().unwrap();
    assert_eq!(fs::read(&info.path).unwrap(), data);

    // The prefix really is rehashed: a corrupted prefix makes the resumed commit fail.
    let other = content(300_000);
    let other_digest = Digest::of(Algorithm::Sha512, &other);
    let mut w = expect_write(store.begin(&other_digest, None).unwrap());
    w.write_all(&other[..100_000]).unwrap();
    drop(w);
    let data_path = store.ingest_path(&other_digest).join("data");
    let mut partial = fs::read(&data_path).unwrap();
    partial[50] ^= 1;
    fs::write(&data_path, &partial).unwrap();
    let mut w = expect_write(store.begin(&other_digest, None).unwrap());
    assert_eq!(w.offset(), 100_000);
    w.write_all(&other[100_000..]).unwrap();
    match w.commit() {
        Err(BlobError::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, other_digest);
            let mut corrupted = other.clone();
            corrupted[50] ^= 1;
            assert_eq!(actual, Digest::of(Algorithm::Sha512, &corrupted));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!store.exists(&other_digest));
}

#[test]
fn partial_ingest_longer_than_expected_is_discarded() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(1_000);
    let digest = Digest::sha256_of(&data);
    let mut w = expect_write(store.begin(&digest, None).unwrap());
    w.write_all(&content(2_000)).unwrap();
    drop(w);
    let mut w = expect_write(store.begin(&digest, Some(1_000)).unwrap());
    assert_eq!(w.offset(), 0);
    w.write_all(&data).unwrap();
    assert_eq!(fs::read(w.commit().unwrap().path).unwrap(), data);
}

#[test]
fn truncate_and_restart() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(50_000);
    let digest = Digest::sha256_of(&data);
    let mut w = expect_write(store.begin(&digest, Some(50_000)).unwrap());
    w.write_all(&content(30_000)[..]).unwrap();
    match w.truncate_to(30_001) {
        Err(BlobError::InvalidTruncate {
            requested: 30_001,
            available: 30_000,
            ..
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    // Keep a correct prefix, drop the rest.
    w.truncate_to(10_000).unwrap();
    assert_eq!(w.offset(), 10_000);
    w.write_all(&data[10_000..]).unwrap();
    let info = w.commit().unwrap();
    assert_eq!(fs::read(&info.path).unwrap(), data);

    // A server that ignored Range: restart from zero.
    let data2 = content(40_000).into_iter().rev().collect::<Vec<_>>();
    let digest2 = Digest::sha256_of(&data2);
    let mut w = expect_write(store.begin(&digest2, Some(40_000)).unwrap());
    w.write_all(&data2[..25_000]).unwrap();
    drop(w);
    let mut w = expect_write(store.begin(&digest2, Some(40_000)).unwrap());
    assert_eq!(w.offset(), 25_000);
    w.restart().unwrap();
    assert_eq!(w.offset(), 0);
    w.write_all(&data2).unwrap();
    assert_eq!(fs::read(w.commit().unwrap().path).unwrap(), data2);
}

#[test]
fn abort_removes_the_ingest() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(5_000);
    let digest = Digest::sha256_of(&data);
    let mut w = expect_write(store.begin(&digest, Some(5_000)).unwrap());
    w.write_all(&data[..3_000]).unwrap();
    assert!(store.ingest_path(&digest).join("data").exists());
    w.abort();
    assert!(!store.ingest_path(&digest).exists());
    assert!(!store.exists(&digest));
    let w = expect_write(store.begin(&digest, Some(5_000)).unwrap());
    assert_eq!(w.offset(), 0);
}

/// 8 threads begin the same digest while another writer holds it: all block (checked in
/// /proc/locks), and after the commit all 8 see the blob: the work was done once.
#[test]
fn concurrent_thread_writers_wait_for_the_committer() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = Arc::new(content(2_000_000));
    let digest = Digest::sha256_of(&data);
    let size = data.len() as u64;
    let mut holder = expect_write(store.begin(&digest, Some(size)).unwrap());
    let inode = lock_inode(&store, &digest);

    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, digest, data) = (store.clone(), digest.clone(), data.clone());
            std::thread::spawn(move || match store.begin(&digest, Some(size)).unwrap() {
                Begin::Present(info) => ("present", info),
                Begin::Write(mut w) => {
                    let start = w.offset() as usize;
                    w.write_all(&data[start..]).unwrap();
                    ("write", w.commit().unwrap())
                }
            })
        })
        .collect();
    wait_for_blocked_waiters(inode, 8);
    write_in_chunks(&mut holder, &data, 65_536);
    let committed = holder.commit().unwrap();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results
            .iter()
            .filter(|(kind, _)| *kind == "present")
            .count(),
        8
    );
    assert!(results.iter().all(|(_, info)| *info == committed));
    assert!(!store.ingest_path(&digest).exists());
}

/// The holder drops its writer mid-way: exactly one of the 8 waiting threads takes over the
/// ingest (continuing from the holder's offset), the other 7 get Present.
#[test]
fn concurrent_thread_writers_take_over_an_abandoned_ingest_once() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = Arc::new(content(1_500_000));
    let digest = Digest::sha256_of(&data);
    let size = data.len() as u64;
    let mut holder = expect_write(store.begin(&digest, Some(size)).unwrap());
    holder.write_all(&data[..700_000]).unwrap();
    let inode = lock_inode(&store, &digest);

    let start = Arc::new(Barrier::new(9));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, digest, data, start) =
                (store.clone(), digest.clone(), data.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                match store.begin(&digest, Some(size)).unwrap() {
                    Begin::Present(_) => None,
                    Begin::Write(mut w) => {
                        let offset = w.offset();
                        w.write_all(&data[offset as usize..]).unwrap();
                        w.commit().unwrap();
                        Some(offset)
                    }
                }
            })
        })
        .collect();
    start.wait();
    wait_for_blocked_waiters(inode, 8);
    drop(holder);
    let offsets: Vec<u64> = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(
        offsets,
        vec![700_000],
        "exactly one writer, resuming the holder's prefix"
    );
    assert_eq!(fs::read(store.path(&digest)).unwrap(), *data);
    assert!(!store.ingest_path(&digest).exists());
}

/// 8 threads race from a barrier with no prior holder: one writes, the rest see the blob.
#[test]
fn concurrent_thread_writers_race() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = Arc::new(content(300_000));
    let digest = Digest::sha256_of(&data);
    let start = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, digest, data, start) =
                (store.clone(), digest.clone(), data.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                match store.begin(&digest, Some(data.len() as u64)).unwrap() {
                    Begin::Present(_) => false,
                    Begin::Write(mut w) => {
                        assert_eq!(w.offset(), 0);
                        w.write_all(&data).unwrap();
                        w.commit().unwrap();
                        true
                    }
                }
            })
        })
        .collect();
    let writes = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|&w| w)
        .count();
    assert_eq!(writes, 1);
    assert_eq!(fs::read(store.path(&digest)).unwrap(), *data);
}

const CHILD_ROOT: &str = "PODSTORE_BLOBSTORE_CHILD_ROOT";
const CHILD_LEN: &str = "PODSTORE_BLOBSTORE_CHILD_LEN";

/// Not a test by itself: the body of each child process of
/// `concurrent_process_writers_take_over_once`. Prints one `RESULT` line.
#[test]
#[ignore = "helper run as a child process by concurrent_process_writers_take_over_once"]
fn child_process_ingest() {
    let (Ok(root), Ok(len)) = (std::env::var(CHILD_ROOT), std::env::var(CHILD_LEN)) else {
        return;
    };
    let data = content(len.parse().unwrap());
    let digest = Digest::sha256_of(&data);
    let store = BlobStore::open(root).unwrap();
    match store.begin(&digest, Some(data.len() as u64)).unwrap() {
        Begin::Present(info) => println!("RESULT present {}", info.size),
        Begin::Write(mut w) => {
            let offset = w.offset();
            write_in_chunks(&mut w, &data[offset as usize..], 32_768);
            w.commit().unwrap();
            println!("RESULT write {offset}");
        }
    }
}

/// 4 processes begin the same digest while this process holds it with a partial write; all
/// block on the OFD lock; this process gives up; exactly one child writes (from our offset).
#[test]
fn concurrent_process_writers_take_over_once() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let len = 1_234_567usize;
    let data = content(len);
    let digest = Digest::sha256_of(&data);
    let mut holder = expect_write(store.begin(&digest, Some(len as u64)).unwrap());
    holder.write_all(&data[..400_000]).unwrap();
    holder.flush().unwrap();
    let inode = lock_inode(&store, &digest);

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--ignored",
                    "--exact",
                    "child_process_ingest",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ROOT, dir.path())
                .env(CHILD_LEN, len.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    wait_for_blocked_waiters(inode, 4);
    drop(holder);

    let mut writes = Vec::new();
    let mut presents = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find_map(|l| l.find("RESULT ").map(|at| &l[at + "RESULT ".len()..]))
            .unwrap_or_else(|| panic!("no RESULT line in child output: {stdout}"));
        match line.split_once(' ') {
            Some(("write", offset)) => writes.push(offset.parse::<u64>().unwrap()),
            Some(("present", size)) => {
                assert_eq!(size, len.to_string());
                presents += 1;
            }
            _ => panic!("bad child line {line}"),
        }
    }
    assert_eq!(
        writes,
        vec![400_000],
        "exactly one process wrote, resuming our prefix"
    );
    assert_eq!(presents, 3);
    assert_eq!(fs::read(store.path(&digest)).unwrap(), data);
    assert!(!store.ingest_path(&digest).exists());
}

/// A crashed writer's ingest (data and lock file, no lock holder) is resumed.
#[test]
fn crash_leftover_is_resumed() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let data = content(90_000);
    let digest = Digest::sha256_of(&data);
    let ingest = store.ingest_path(&digest);
    fs::create_dir_all(&ingest).unwrap();
    fs::write(ingest.join("data"), &data[..33_333]).unwrap();
    fs::write(ingest.join("lock"), b"").unwrap();

    let mut w = expect_write(store.begin(&digest, Some(90_000)).unwrap());
    assert_eq!(w.offset(), 33_333);
    w.write_all(&data[33_333..]).unwrap();
    assert_eq!(fs::read(w.commit().unwrap().path).unwrap(), data);
    assert!(!ingest.exists());
}

/// A crash after the rename but before the ingest was cleaned: begin reports the blob, and
/// prune removes the leftover whatever its age, since its blob is committed.
#[test]
fn crash_after_rename_leftover_is_cleaned() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let info = store.put_bytes(b"committed").unwrap();
    let ingest = store.ingest_path(&info.digest);
    fs::create_dir_all(&ingest).unwrap();
    fs::write(ingest.join("lock"), b"").unwrap();
    fs::write(ingest.join("data"), b"").unwrap();
    match store.begin(&info.digest, Some(9)).unwrap() {
        Begin::Present(p) => assert_eq!(p, info),
        Begin::Write(_) => panic!("present blob not seen"),
    }
    assert_eq!(store.prune_ingests(Duration::from_secs(3600)).unwrap(), 1);
    assert!(!ingest.exists());
    assert!(store.exists(&info.digest));
}

fn age(path: &Path, by: Duration) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

#[test]
fn prune_removes_only_old_unheld_ingests() {
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let hour = Duration::from_secs(3600);
    let digests: Vec<Digest> = (0..3)
        .map(|i| Digest::sha256_of(format!("d{i}").as_bytes()))
        .collect();

    // 0: abandoned two hours ago. 1: abandoned just now. 2: old data but held by a live writer.
    for digest in &digests {
        let mut w = expect_write(store.begin(digest, None).unwrap());
        w.write_all(b"partial").unwrap();
        drop(w);
    }
    age(&store.ingest_path(&digests[0]).join("data"), 2 * hour);
    let held = expect_write(store.begin(&digests[2], None).unwrap());
    age(&store.ingest_path(&digests[2]).join("data"), 2 * hour);
    // A stray old file in ingest/ goes too; a fresh one stays.
    let stray_old = dir.path().join("ingest/stray-old");
    let stray_new = dir.path().join("ingest/stray-new");
    fs::write(&stray_old, b"").unwrap();
    fs::write(&stray_new, b"").unwrap();
    age(&stray_old, 2 * hour);

    assert_eq!(store.prune_ingests(hour).unwrap(), 2);
    assert!(!store.ingest_path(&digests[0]).exists());
    assert!(store.ingest_path(&digests[1]).join("data").exists());
    assert!(store.ingest_path(&digests[2]).join("data").exists());
    assert!(!stray_old.exists() && stray_new.exists());
    assert_eq!(held.offset(), 7);
    drop(held);

    // Nothing held any more, threshold zero: everything goes.
    assert_eq!(store.prune_ingests(Duration::ZERO).unwrap(), 3);
    assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
}

fn peak_rss_kib() -> u64 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// One pseudo-random 1 MiB buffer; chunk `i` of a test blob is this buffer with `i` in its
/// first 8 bytes, so the test itself never holds the blob.
fn random_mib(seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    for word in buf.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
    buf
}

fn set_chunk_index(buf: &mut [u8], index: u64) {
    buf[..8].copy_from_slice(&index.to_le_bytes());
}

/// A 64 MiB blob streams through the writer (and the rehash of a 32 MiB prefix on resume)
/// without the process's peak RSS growing anywhere near the blob's size.
#[test]
fn streaming_ingest_keeps_memory_bounded() {
    const CHUNKS: u64 = 64;
    let dir = tempdir();
    let store = BlobStore::open(dir.path()).unwrap();
    let mut buf = random_mib(7);
    let mut digester = Algorithm::Sha256.digester();
    for i in 0..CHUNKS {
        set_chunk_index(&mut buf, i);
        digester.update(&buf);
    }
    let digest = digester.finish();
    let size = CHUNKS << 20;
    let before = peak_rss_kib();

    let mut w = expect_write(store.begin(&digest, Some(size)).unwrap());
    for i in 0..CHUNKS / 2 {
        set_chunk_index(&mut buf, i);
        w.write_all(&buf).unwrap();
    }
    drop(w);
    let mut w = expect_write(store.begin(&digest, Some(size)).unwrap());
    assert_eq!(w.offset(), size / 2);
    for i in CHUNKS / 2..CHUNKS {
        set_chunk_index(&mut buf, i);
        w.write_all(&buf).unwrap();
    }
    let info = w.commit().unwrap();
    let grown_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    eprintln!(
        "peak RSS grew by {grown_mib} MiB while ingesting {} MiB",
        size >> 20
    );
    assert_eq!(info.size, size);
    assert!(
        grown_mib < 24,
        "peak RSS grew by {grown_mib} MiB for a {} MiB blob",
        size >> 20
    );
    store.delete(&digest).unwrap();
}
