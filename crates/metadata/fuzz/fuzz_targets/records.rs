//! Fuzzes the records loader (`layers.json`, `images.json`, `containers.json`,
//! `mountpoints.json`): no input may panic, and whatever loads must save in the canonical form
//! containers/storage writes: saving, loading that and saving again gives the same records and
//! the same bytes (a file the store wrote re-saves byte for byte, as Go's encoder does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_metadata::records::{Record, decode_records, encode_records};
use podstore_metadata::{Container, Image, Layer, Mountpoint};

fn round_trip<R: Record + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let Ok(loaded) = decode_records::<R>(data) else {
        return;
    };
    let saved = encode_records(&loaded);
    assert!(std::str::from_utf8(&saved).is_ok(), "saved records are not UTF-8");
    let reloaded = decode_records::<R>(&saved)
        .unwrap_or_else(|e| panic!("the store cannot read what it saved: {e}"));
    assert_eq!(reloaded, loaded, "records changed through a save");
    assert_eq!(
        String::from_utf8_lossy(&encode_records(&reloaded)),
        String::from_utf8_lossy(&saved),
        "a saved file does not re-save byte for byte"
    );
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the file kind, so one corpus covers all four.
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    match kind % 4 {
        0 => round_trip::<Layer>(json),
        1 => round_trip::<Image>(json),
        2 => round_trip::<Container>(json),
        _ => round_trip::<Mountpoint>(json),
    }
});
