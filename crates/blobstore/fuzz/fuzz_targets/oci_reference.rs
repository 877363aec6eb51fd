//! Fuzzes `oci:` reference parsing: no input may panic, and a parsed reference must display
//! as a string that parses back to the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_blobstore::OciReference;
use podstore_blobstore::oci_layout::validate_image_name;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let _ = validate_image_name(input);
    let _ = OciReference::parse_within_transport(input);
    if let Ok(reference) = OciReference::parse(input) {
        let shown = reference.to_string();
        assert_eq!(
            OciReference::parse(&shown).ok().as_ref(),
            Some(&reference),
            "round trip of {shown}"
        );
    }
});
