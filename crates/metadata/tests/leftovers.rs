//! Crash leftovers of atomic big-data writes (`.tmp-*` files in a record's directory): opening
//! the store does not walk every record's directory for them, `check` reports them,
//! `repair` removes them, and the next write into that directory removes them too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(unused_imports)]
mod common;

use std::fs;
use std::time::Duration;

use common::Scratch;
use podstore_metadata::{BigDataItem, CheckOptions, Finding, ImageOptions};

#[test]
fn big_data_leftovers_survive_open_are_found_by_check_and_removed_by_repair_or_next_write() {
    let s = Scratch::new("vfs");
    let store = s.open();
    let image = store
        .create_image(ImageOptions {
            metadata: "{}".into(),
            big_data: vec![BigDataItem {
                key: "manifest".into(),
                data: br#"{"schemaVersion":2}"#.to_vec(),
                digest: None,
            }],
            ..ImageOptions::default()
        })
        .unwrap();
    drop(store);
    let dir = s.root().join("vfs-images").join(&image.id);
    let leftover = dir.join(".tmp-manifest123");
    // A records-file leftover next to images.json is still removed at open (one listing).
    let records_leftover = s.root().join("vfs-images/.tmp-images.json7");
    fs::write(&leftover, b"{").unwrap();
    fs::write(&records_leftover, b"[").unwrap();

    let store = s.open();
    assert!(leftover.exists(), "open walked the image directories");
    assert!(!records_leftover.exists());
    let options = CheckOptions {
        stale_after: Duration::ZERO,
        ..CheckOptions::default()
    };
    let report = store.check(&options).unwrap();
    assert_eq!(
        report.findings,
        vec![Finding::StaleTempFile {
            path: leftover.clone()
        }]
    );
    store.repair(&options).unwrap();
    assert!(!leftover.exists());
    assert!(store.check(&options).unwrap().is_clean());

    // The next write into the image's directory removes a leftover too.
    fs::write(&leftover, b"{").unwrap();
    store
        .set_image_big_data(&image.id, "extra", b"data", None)
        .unwrap();
    assert!(!leftover.exists());
    assert_eq!(fs::read(dir.join("extra")).unwrap(), b"data");
    assert!(store.check(&options).unwrap().is_clean());
}
