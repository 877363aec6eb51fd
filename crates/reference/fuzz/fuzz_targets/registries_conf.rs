//! Fuzzes registries.conf parsing, drop-in merging and endpoint computation: no input may
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podstore_reference::{Reference, RegistriesConfig, ResolveOptions, resolve_names};

const REFERENCES: &[&str] = &[
    "busybox",
    "docker.io/library/busybox@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582",
    "example.com:5000/ns/image:1",
    "a.example.com/x/y",
    "quay.io/a/b:tag",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first half as the main file, the rest as a drop-in (split on a marker if present).
    let (main, drop_in) = text.split_once("\n#--\n").unwrap_or((text, ""));
    let Ok(mut config) = RegistriesConfig::parse(main, "fuzz/registries.conf") else {
        return;
    };
    let _ = config.merge_drop_in(drop_in, "fuzz/registries.conf.d/10.conf");
    for reference in REFERENCES {
        if let Ok(r) = Reference::parse_normalized(reference) {
            if let Ok(endpoints) = config.endpoints(&r) {
                assert!(!endpoints.is_empty());
                assert!(!endpoints[endpoints.len() - 1].is_mirror, "primary last");
            }
            let _ = config.pull_sources(&r);
        }
        let _ = resolve_names(reference, &config, &ResolveOptions::default());
        let _ = resolve_names(
            "image:1",
            &config,
            &ResolveOptions {
                short_name_mode: None,
                ..ResolveOptions::default()
            },
        );
    }
    for table in config.registries() {
        let _ = config.find_registry(&table.prefix);
    }
    for name in config.aliases().keys() {
        let _ = resolve_names(name, &config, &ResolveOptions::default());
    }
});
