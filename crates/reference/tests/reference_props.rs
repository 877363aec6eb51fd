//! Property tests: the full (display) form of a normalised reference parses back to the same
//! reference, and no input makes any parser panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_reference::{
    Reference, RegistriesConfig, ResolveOptions, is_short_name, resolve_names,
};
use proptest::prelude::*;

fn host() -> impl Strategy<Value = String> {
    let label = "[A-Za-z0-9]([A-Za-z0-9-]{0,6}[A-Za-z0-9])?";
    (
        proptest::collection::vec(label, 1..4),
        proptest::option::of(0u16..=65535),
        any::<bool>(),
    )
        .prop_map(|(labels, port, localhost)| {
            let host = if localhost {
                "localhost".to_owned()
            } else {
                labels.join(".")
            };
            match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
}

fn path() -> impl Strategy<Value = String> {
    let component = "[a-z0-9]{1,4}(([._]|__|-{1,3})[a-z0-9]{1,4}){0,2}";
    proptest::collection::vec(component, 1..5).prop_map(|c| c.join("/"))
}

fn reference_string() -> impl Strategy<Value = String> {
    (
        proptest::option::of(host()),
        path(),
        proptest::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"),
        proptest::option::of(
            prop_oneof![Just("sha256"), Just("sha384"), Just("sha512")].prop_flat_map(|alg| {
                let len = match alg {
                    "sha256" => 64,
                    "sha384" => 96,
                    _ => 128,
                };
                proptest::string::string_regex(&format!("[0-9a-f]{{{len}}}"))
                    .unwrap()
                    .prop_map(move |hex| format!("{alg}:{hex}"))
            }),
        ),
    )
        .prop_map(|(host, path, tag, digest)| {
            let mut s = match host {
                Some(h) => format!("{h}/{path}"),
                None => path,
            };
            if let Some(t) = tag {
                s = format!("{s}:{t}");
            }
            if let Some(d) = digest {
                s = format!("{s}@{d}");
            }
            s
        })
}

fn check_round_trip(r: &Reference) -> Result<(), TestCaseError> {
    let full = r.to_string();
    let reparsed = Reference::parse_normalized(&full);
    prop_assert_eq!(reparsed.as_ref(), Ok(r));
    let named = Reference::parse_named(&full);
    prop_assert_eq!(named.as_ref(), Ok(r));
    prop_assert!(!r.domain().is_empty());
    prop_assert!(r.name().len() <= 255);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn display_of_normalized_parses_back(s in reference_string()) {
        // Generated inputs may still be refused (too long, uppercase path via domain detection).
        if let Ok(r) = Reference::parse_normalized(&s) {
            check_round_trip(&r)?;
            prop_assert_eq!(r.tag_or_latest().to_string().parse::<Reference>().unwrap(), r.tag_or_latest());
        }
    }

    #[test]
    fn grammar_alphabet_never_panics(s in "[a-zA-Z0-9:/@._-]{0,90}") {
        if let Ok(r) = Reference::parse_normalized(&s) {
            check_round_trip(&r)?;
        }
        let _ = Reference::parse(&s);
        let _ = is_short_name(&s);
        let _ = resolve_names(&s, &RegistriesConfig::empty(), &ResolveOptions {
            search_registries: vec!["docker.io".into(), "quay.io".into()],
            ..ResolveOptions::default()
        });
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Ok(r) = Reference::parse_normalized(&s) {
            check_round_trip(&r)?;
        }
        let _ = Reference::parse(&s);
        let _ = RegistriesConfig::parse(&s, "fuzz.conf");
    }
}
