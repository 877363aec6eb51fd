//! More hostile tars through the real applier, against both drivers (the traversal and
//! symlink-escape basics are in `hostile.rs`): absolute names, hardlinks to symlinks that point
//! out, self loops, device nodes, 100k files, names past NAME_MAX and PATH_MAX, sparse
//! entries, entries whose data disagrees with the header, and decompression bombs.
//!
//! The rule for bombs (docs/RELIABILITY.md): an entry's data is exactly the size its header
//! declares (shorter is `Truncated`, longer runs into the next header and is `BadHeader`), so
//! the bytes written into a layer are bounded by the sum of the declared sizes; after the
//! end-of-archive marker at most `MAX_TRAILING_BYTES` are accepted (they are only hashed and
//! kept in the tar-split), more is `TrailingData`.
//!
//! Each case ends in a typed error or a safe outcome; a sentinel host tree next to the store is
//! compared before and after, nothing appears next to the store, and the layer is removable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{Entry, Format, TarWriter, header_block, shm_tempdir, snapshot};
use podstore_layer::{
    ApplyError, ApplyOptions, ApplyReport, CreateOptions, Driver, DriverError, MAX_TRAILING_BYTES,
    Overlay, OverlayOptions, TarError, Vfs,
};

fn no_sync() -> ApplyOptions {
    ApplyOptions {
        no_sync: true,
        ..Default::default()
    }
}

fn pax(entries: Vec<Entry>) -> Vec<u8> {
    let mut w = TarWriter::new(Format::Pax);
    for e in entries {
        w.add(e);
    }
    w.finish()
}

/// One pax extended-header record, `"<len> key=value\n"`.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A pax `x` header carrying `records`, then a regular file `name` with `data`.
fn pax_file_with_records(name: &str, records: &[(&str, &str)], data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        body.extend(pax_record(k, v));
    }
    let mut w = TarWriter::new(Format::Pax);
    let x = Entry::file("", b"");
    w.raw(&header_block(
        Format::Pax,
        b"PaxHeaders/x",
        &x,
        b'x',
        body.len() as u64,
        b"",
    ));
    w.raw(&body);
    w.raw(&vec![0u8; (512 - body.len() % 512) % 512]);
    w.add(Entry::file(name, data));
    w.finish()
}

/// What a case must end in.
enum Outcome {
    /// This typed error (checked by the closure), naming the input.
    Fails(fn(&ApplyError) -> bool),
    /// Success, then this check of the layer directory.
    Applies(fn(&Path, &Path)),
}

struct Case {
    name: &'static str,
    tar: Vec<u8>,
    outcome: Outcome,
}

fn entry_error(err: &ApplyError, entry: &str) -> bool {
    matches!(err, ApplyError::Entry { entry: e, .. } if e == entry)
}

fn cases(host: &Path) -> Vec<Case> {
    let host_str = host.to_str().unwrap().to_owned();
    let long_component = "n".repeat(256);
    let max_component = "m".repeat(255);
    // 20 components of 250 bytes: each fits NAME_MAX, the whole is past PATH_MAX (4096)
    let past_path_max = vec!["p".repeat(250); 20].join("/");
    let mut gnu_sparse = pax(vec![Entry::file("sparse", b"data")]);
    // rewrite the typeflag to GNU sparse 'S' and fix the checksum
    gnu_sparse[156] = b'S';
    gnu_sparse[148..156].fill(b' ');
    let sum: u64 = gnu_sparse[..512].iter().map(|&b| u64::from(b)).sum();
    gnu_sparse[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut longer_than_declared = TarWriter::new(Format::Pax);
    longer_than_declared.add(Entry::file("short", &[b'x'; 1500]).declared_size(10));
    let longer_than_declared = longer_than_declared.finish();

    vec![
        Case {
            name: "absolute name into the host sentinel",
            tar: pax(vec![Entry::file(&format!("{host_str}/abs-file"), b"x")]),
            // rooted names are cleaned like Go's filepath.Clean and land inside the layer
            outcome: Outcome::Applies(|layer, host| {
                let inside = layer.join(host.strip_prefix("/").unwrap()).join("abs-file");
                assert_eq!(std::fs::read(inside).unwrap(), b"x");
            }),
        },
        Case {
            name: "absolute name climbing with ..",
            tar: pax(vec![Entry::file("/../../../abs-escape", b"x")]),
            outcome: Outcome::Applies(|layer, _| {
                assert_eq!(std::fs::read(layer.join("abs-escape")).unwrap(), b"x");
            }),
        },
        Case {
            name: "hardlink to a symlink pointing out",
            tar: pax(vec![
                Entry::symlink("out", &format!("{host_str}/secret")),
                Entry::hardlink("link", "out"),
            ]),
            // the link is to the symlink itself (linkat without AT_SYMLINK_FOLLOW)
            outcome: Outcome::Applies(|layer, host| {
                let meta = std::fs::symlink_metadata(layer.join("link")).unwrap();
                assert!(meta.file_type().is_symlink());
                assert_eq!(
                    std::fs::read_link(layer.join("link")).unwrap(),
                    host.join("secret")
                );
                assert_eq!(std::fs::metadata(host.join("secret")).unwrap().nlink(), 1);
            }),
        },
        Case {
            name: "hardlink through a relative symlink pointing out",
            tar: pax(vec![
                Entry::symlink("up", "../../../../../../../../.."),
                Entry::hardlink("link", &format!("up{host_str}/secret")),
            ]),
            outcome: Outcome::Fails(|e| entry_error(e, "link")),
        },
        Case {
            name: "symlink to itself, then a file through it",
            tar: pax(vec![
                Entry::symlink("self", "self"),
                Entry::file("self/x", b"x"),
            ]),
            outcome: Outcome::Fails(|e| entry_error(e, "self/x")),
        },
        Case {
            name: "symlink to /tmp-like host path, then a file through it",
            tar: pax(vec![
                Entry::symlink("tmpx", &format!("{host_str}/x")),
                Entry::file("tmpx/file", b"x"),
            ]),
            outcome: Outcome::Fails(|e| entry_error(e, "tmpx/file")),
        },
        Case {
            name: "device nodes and a fifo",
            tar: pax(vec![
                Entry::dir("dev/"),
                Entry::chardev("dev/null", 1, 3),
                Entry::blockdev("dev/loop-ish", 7, 200),
                Entry::fifo("dev/pipe"),
            ]),
            // created inside the layer, as containers/storage does when running as root
            outcome: Outcome::Applies(|layer, _| {
                let null = std::fs::symlink_metadata(layer.join("dev/null")).unwrap();
                assert!(null.file_type().is_char_device());
                assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
                let block = std::fs::symlink_metadata(layer.join("dev/loop-ish")).unwrap();
                assert!(block.file_type().is_block_device());
                assert_eq!(block.rdev(), rustix::fs::makedev(7, 200));
                assert!(
                    std::fs::symlink_metadata(layer.join("dev/pipe"))
                        .unwrap()
                        .file_type()
                        .is_fifo()
                );
            }),
        },
        Case {
            name: "component of 255 bytes (NAME_MAX) applies",
            tar: pax(vec![Entry::file(&max_component, b"x")]),
            outcome: Outcome::Applies(|layer, _| {
                assert!(layer.join("m".repeat(255)).is_file());
            }),
        },
        Case {
            name: "component of 256 bytes (past NAME_MAX)",
            tar: pax(vec![Entry::file(&long_component, b"x")]),
            outcome: Outcome::Fails(|e| entry_error(e, &"n".repeat(256))),
        },
        Case {
            name: "path past PATH_MAX",
            tar: pax(vec![Entry::file(&past_path_max, b"x")]),
            outcome: Outcome::Fails(
                |e| matches!(e, ApplyError::Entry { entry, .. } if entry.len() > 4096),
            ),
        },
        Case {
            name: "GNU sparse entry",
            tar: gnu_sparse,
            outcome: Outcome::Fails(
                |e| matches!(e, ApplyError::UnsupportedEntry { entry, .. } if entry == "sparse"),
            ),
        },
        Case {
            name: "pax GNU.sparse entry",
            tar: pax_file_with_records(
                "psparse",
                &[("GNU.sparse.major", "1"), ("GNU.sparse.minor", "0")],
                b"data",
            ),
            outcome: Outcome::Fails(
                |e| matches!(e, ApplyError::UnsupportedEntry { entry, reason } if entry == "psparse" && reason.contains("sparse")),
            ),
        },
        Case {
            name: "more data than the header declares",
            tar: longer_than_declared,
            outcome: Outcome::Fails(|e| matches!(e, ApplyError::Tar(TarError::BadHeader { .. }))),
        },
    ]
}

fn apply(driver: &dyn Driver, id: &str, blob: &[u8]) -> Result<ApplyReport, DriverError> {
    driver.create(id, None, &CreateOptions::default()).unwrap();
    let mut split = Vec::new();
    driver.apply_diff(id, None, &mut &blob[..], &mut split, &no_sync())
}

fn run(driver: &dyn Driver, tmp: &Path) {
    let host = tmp.join("host");
    std::fs::create_dir_all(host.join("dir")).unwrap();
    std::fs::write(host.join("secret"), "host secret\n").unwrap();
    let before = snapshot(&host);
    let top_level: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    for (i, case) in cases(&host).into_iter().enumerate() {
        let id = format!("{:064x}", i + 100);
        let result = apply(driver, &id, &case.tar);
        match (&case.outcome, result) {
            (Outcome::Fails(check), Err(err)) => {
                let DriverError::Apply { id: err_id, source } = &err else {
                    panic!("{}: {err}", case.name)
                };
                assert_eq!(err_id, &id);
                assert!(check(source), "{}: unexpected error {source}", case.name);
            }
            (Outcome::Applies(check), Ok(_)) => {
                let dirs = driver.lookup_dirs(&id).unwrap();
                check(&dirs[0], &host);
            }
            (Outcome::Fails(_), Ok(_)) => panic!("{}: applied", case.name),
            (Outcome::Applies(_), Err(e)) => panic!("{}: {e}", case.name),
        }
        assert_eq!(snapshot(&host), before, "{}: host tree changed", case.name);
        let now: Vec<_> = std::fs::read_dir(tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(now, top_level, "{}: new files next to the store", case.name);
        driver.remove(&id).unwrap();
        assert!(!driver.exists(&id), "{}: layer removable", case.name);
    }
    assert!(!Path::new("/abs-escape").exists());
}

#[test]
fn more_hostile_tars_vfs() {
    let tmp = shm_tempdir();
    let vfs = Vfs::new(tmp.path().join("vfs")).unwrap();
    run(&vfs, tmp.path());
}

#[test]
fn more_hostile_tars_overlay() {
    let tmp = shm_tempdir();
    let overlay = Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap();
    run(&overlay, tmp.path());
}

/// A gzip stream of `head` followed by `zeros` zero bytes, compressed as it is generated.
fn gzip_with_zeros(head: &[u8], zeros: u64) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(head).unwrap();
    let block = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    enc.finish().unwrap()
}

#[test]
fn decompression_bombs_are_bounded() {
    let tmp = shm_tempdir();
    for driver in [
        Box::new(Vfs::new(tmp.path().join("vfs")).unwrap()) as Box<dyn Driver>,
        Box::new(Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap()),
    ] {
        let small = pax(vec![Entry::file("a", b"hello")]);
        // 64 MiB of zeros behind a valid archive: ~64 KiB compressed
        let bomb = gzip_with_zeros(&small, 64 << 20);
        assert!(bomb.len() < 1 << 20, "the bomb is small: {}", bomb.len());
        let err = apply(driver.as_ref(), &"b".repeat(64), &bomb).unwrap_err();
        assert!(
            matches!(
                &err,
                DriverError::Apply {
                    source: ApplyError::Tar(TarError::TrailingData { limit, .. }),
                    ..
                } if *limit == MAX_TRAILING_BYTES
            ),
            "{err}"
        );
        driver.remove(&"b".repeat(64)).unwrap();

        // a stream of nothing but zeros is an empty archive followed by the bomb
        let zeros = gzip_with_zeros(b"", 64 << 20);
        let err = apply(driver.as_ref(), &"c".repeat(64), &zeros).unwrap_err();
        assert!(err.to_string().contains("decompression bomb"), "{err}");
        driver.remove(&"c".repeat(64)).unwrap();

        // padding within the limit is accepted, hashed, and nothing but the file is written
        let padded = gzip_with_zeros(&small, 4 << 20);
        let id = "d".repeat(64);
        let report = apply(driver.as_ref(), &id, &padded).unwrap();
        assert_eq!(report.diff_size, small.len() as u64 + (4 << 20));
        let dir = &driver.lookup_dirs(&id).unwrap()[0];
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a")]);
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"hello");
        driver.remove(&id).unwrap();

        // a declared size the stream does not deliver writes no more than was delivered
        let mut w = TarWriter::new(Format::Gnu);
        w.add(Entry::file("big", &[7u8; 4096]).declared_size(1 << 40));
        let lying = common::gzip(&w.out);
        let id = "e".repeat(64);
        let err = apply(driver.as_ref(), &id, &lying).unwrap_err();
        assert!(
            matches!(
                &err,
                DriverError::Apply {
                    source: ApplyError::Tar(TarError::Truncated { .. }),
                    ..
                }
            ),
            "{err}"
        );
        let dir = &driver.lookup_dirs(&id).unwrap()[0];
        let written = std::fs::metadata(dir.join("big"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= 4096, "wrote {written} bytes");
        driver.remove(&id).unwrap();
    }
}

#[test]
fn hundred_thousand_files_apply_and_remove() {
    const FILES: usize = 100_000;
    let tmp = shm_tempdir();
    let mut w = TarWriter::new(Format::Pax);
    for i in 0..FILES {
        // 100 directories of 1000 files; the directories are created implicitly
        w.add(Entry::file(&format!("d{:03}/f{i:06}", i % 100), b""));
    }
    let tar = common::gzip(&w.finish());
    for driver in [
        Box::new(Vfs::new(tmp.path().join("vfs")).unwrap()) as Box<dyn Driver>,
        Box::new(Overlay::new(tmp.path().join("overlay"), OverlayOptions::default()).unwrap()),
    ] {
        let id = "f".repeat(64);
        let report = apply(driver.as_ref(), &id, &tar).unwrap();
        assert!(report.diff_size > (FILES * 512) as u64);
        let dir = &driver.lookup_dirs(&id).unwrap()[0];
        let mut count = 0;
        for sub in std::fs::read_dir(dir).unwrap() {
            count += std::fs::read_dir(sub.unwrap().path()).unwrap().count();
        }
        assert_eq!(count, FILES);
        driver.remove(&id).unwrap();
        assert!(!driver.exists(&id));
    }
}
