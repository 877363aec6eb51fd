//! Fuzzes the reference parsers and everything built on them: no input may panic, and a
//! normalised reference must round-trip through its full string form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_reference::{
    Reference, RegistriesConfig, ResolveOptions, is_full_image_id, is_id_prefix_candidate,
    is_short_name, resolve_names,
};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse_normalized(input) {
        let full = r.to_string();
        assert_eq!(
            Reference::parse_normalized(&full).as_ref(),
            Ok(&r),
            "round trip of {full}"
        );
        assert_eq!(Reference::parse_named(&full).as_ref(), Ok(&r));
        assert!(r.name().len() <= 255);
        let _ = r.familiar();
        let _ = r.tag_or_latest();
        let _ = RegistriesConfig::empty().pull_sources(&r);
    }
    if let Ok(r) = Reference::parse(input) {
        assert_eq!(r.to_string(), input, "raw parse displays as typed");
    }
    let _ = Reference::parse_docker_ref(input);
    let _ = is_short_name(input);
    let _ = is_full_image_id(input);
    let _ = is_id_prefix_candidate(input);
    let options = ResolveOptions {
        search_registries: vec!["docker.io".into(), "quay.io".into()],
        ..ResolveOptions::default()
    };
    if let Ok(resolution) = resolve_names(input, &RegistriesConfig::empty(), &options) {
        assert!(!resolution.candidates.is_empty());
    }
});
