//! Fuzzes the tar applier: any input (plain, gzip or zstd tar) is applied into a fresh
//! directory on /dev/shm with either whiteout format. It must never panic, never create
//! anything next to the layer root, and when it succeeds its tar-split must either rebuild a
//! tar with exactly the reported DiffID or fail with a typed error (a later entry of the same
//! tar may legitimately remove an earlier file).
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_layer::{ApplyOptions, WhiteoutFormat, apply_tar, reassemble};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, blob)) = data.split_first() else { return };
    let format = if selector & 1 == 0 { WhiteoutFormat::Delete } else { WhiteoutFormat::Overlay };
    let Ok(tmp) = tempfile::Builder::new().prefix("fuzz-apply-").tempdir_in("/dev/shm") else { return };
    let root = tmp.path().join("root");
    if std::fs::create_dir(&root).is_err() {
        return;
    }
    let mut split = Vec::new();
    let opts = ApplyOptions { no_sync: true, ..Default::default() };
    let result = apply_tar(&root, &mut &blob[..], &mut split, format, &opts);
    let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("root")], "something was created next to the layer");
    if let Ok(report) = result {
        let mut rebuilt = Vec::new();
        if reassemble(&[root.clone()], &split[..], &mut rebuilt).is_ok() {
            let digest = podstore_reference::Digest::sha256_of(&rebuilt);
            assert_eq!(digest, report.diff_digest, "tar-split rebuilt a different tar");
        }
    }
});
