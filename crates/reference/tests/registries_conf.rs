//! Data-driven tests of registries.conf: prefix matching, longest prefix, wildcards, mirrors and
//! their rewriting, blocked and insecure endpoints, validation errors, v1 files, drop-in merging
//! and file discovery, aliases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use podstore_reference::registries::prefix_match_len;
use podstore_reference::{
    LoadOptions, PullFromMirror, PullSourceError, Reference, RegistriesConfError, RegistriesConfig,
    ShortNameMode,
};

const H: &str = "e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";

fn conf(text: &str) -> RegistriesConfig {
    RegistriesConfig::parse(text, "/test/registries.conf").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn r(s: &str) -> Reference {
    Reference::parse_normalized(s).unwrap()
}

#[test]
fn prefix_matching_table() {
    // (reference, prefix, expected match length) — naming spec §2.6.
    let cases: &[(&str, &str, Option<usize>)] = &[
        ("docker.io", "docker.io", Some(9)),
        ("example.com:5000", "example.com:5000", Some(16)),
        ("example.com:50000", "example.com:5000", None),
        ("example.com:5000", "example.com", Some(11)),
        ("example.com/foo/bar@sha256:abc", "example.com", Some(11)),
        ("docker.io", "docker.io/library", None),
        ("docker.io/libraryy", "docker.io/library", None),
        ("docker.io/library/busybox", "docker.io/library", Some(17)),
        (
            "docker.io/library/busybox2",
            "docker.io/library/busybox",
            None,
        ),
        ("example.com/foo:bar", "example.com/foo:bar", Some(19)),
        ("example.com/foo", "*", None),
        ("docker.io", "*.io", Some(9)),
        ("example.com/foo", "*.example.com", None),
        ("sub.example.com/foo/bar", "*.com", Some(15)),
        ("sub.example.com/foo/bar", "*.example.com", Some(15)),
        (
            "another.example.com/namespace.com/foo",
            "*.namespace.com",
            None,
        ),
        ("example.net/namespace-ends-in.com/foo", "*.com", None),
        (
            "not.quite.simple-prefix.com:5000/with/path:tag",
            "*.simple-prefix.com",
            Some(27),
        ),
        ("yet.another.example.com/foo", "**.example.com", None),
        ("a.example.com.example.com/x", "*.example.com", None),
        ("a.example.comx/x", "*.example.com", None),
        ("", "docker.io", None),
        ("docker.io", "", None),
    ];
    for (reference, prefix, want) in cases {
        assert_eq!(
            prefix_match_len(reference, prefix),
            *want,
            "{reference} vs {prefix}"
        );
    }
}

#[test]
fn find_registry_longest_prefix_and_wildcards() {
    let c = conf(
        r#"
[[registry]]
prefix = "*.so.simple-prefix.com"
location = "so.example.com"
[[registry]]
prefix = "*.simple-prefix.com"
location = "simple.example.com"
[[registry]]
prefix = "*.not.quite.simple-prefix.com"
location = "not-quite.example.com"
[[registry]]
prefix = "*.bar.example.com"
location = "wild.example.com"
[[registry]]
location = "foo.bar.example.com:5000"
[[registry]]
location = "example.com"
[[registry]]
prefix = "example.com/ns"
location = "ns.example.com"
[[registry]]
prefix = "example.com/ns/deeper"
location = "deeper.example.com"
[[registry]]
prefix = "*.a.com"
location = "wild-a.example.com"
[[registry]]
prefix = "x.a.com"
location = "x-a.example.com"
"#,
    );
    // (repository name, expected table prefix)
    let cases: &[(&str, Option<&str>)] = &[
        (
            "not.so.simple-prefix.com/foo",
            Some("*.so.simple-prefix.com"),
        ),
        (
            "really.not.quite.simple-prefix.com:5000/foo",
            Some("*.not.quite.simple-prefix.com"),
        ),
        ("other.simple-prefix.com/foo", Some("*.simple-prefix.com")),
        ("simple-prefix.com/foo", None),
        (
            "foo.bar.example.com:5000/foo",
            Some("foo.bar.example.com:5000"),
        ),
        ("foo.bar.example.com/foo", Some("*.bar.example.com")),
        ("example.com/foo", Some("example.com")),
        ("example.com:5000/foo", Some("example.com")),
        ("example.com/ns/img", Some("example.com/ns")),
        ("example.com/nsx/img", Some("example.com")),
        ("example.com/ns/deeper/img", Some("example.com/ns/deeper")),
        // Equal-length prefixes: the one sorting first ('*') wins (upstream quirk).
        ("x.a.com/img", Some("*.a.com")),
        ("y.a.com/img", Some("*.a.com")),
        ("quay.io/foo", None),
    ];
    for (name, want) in cases {
        let got = c.find_registry(name).map(|t| t.prefix.as_str());
        assert_eq!(got, *want, "{name}");
    }
    // Tables are sorted by prefix.
    let prefixes: Vec<&str> = c.registries().iter().map(|t| t.prefix.as_str()).collect();
    let mut sorted = prefixes.clone();
    sorted.sort();
    assert_eq!(prefixes, sorted);
}

/// c/image's pull-sources-from-reference vectors (naming spec §2.7): which endpoints a digest
/// pull and a tag pull try.
#[test]
fn mirror_selection_table() {
    let c = conf(
        r#"
[[registry]]
prefix = "plain.example.com"
location = "plain.example.com"
mirror = [{ location = "m1.example.com" }, { location = "m2.example.com" }]

[[registry]]
location = "bydigest.example.com"
mirror-by-digest-only = true
mirror = [{ location = "m1.example.com" }, { location = "m2.example.com" }]

[[registry]]
location = "bothdigest.example.com"
mirror = [{ location = "m1.example.com", pull-from-mirror = "digest-only" }, { location = "m2.example.com", pull-from-mirror = "digest-only" }]

[[registry]]
location = "onedigest.example.com"
mirror = [{ location = "m1.example.com" }, { location = "m2.example.com", pull-from-mirror = "digest-only" }]

[[registry]]
location = "bothtag.example.com"
mirror = [{ location = "m1.example.com", pull-from-mirror = "tag-only" }, { location = "m2.example.com", pull-from-mirror = "tag-only" }]

[[registry]]
location = "onetag.example.com"
mirror = [{ location = "m1.example.com" }, { location = "m2.example.com", pull-from-mirror = "tag-only" }]

[[registry]]
location = "mixed.example.com"
mirror = [
  { location = "m1.example.com", pull-from-mirror = "digest-only" },
  { location = "m2.example.com", pull-from-mirror = "tag-only" },
  { location = "m3.example.com" },
  { location = "m4.example.com", pull-from-mirror = "all" },
]
"#,
    );
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("plain.example.com", &["m1", "m2", "P"], &["m1", "m2", "P"]),
        ("bydigest.example.com", &["m1", "m2", "P"], &["P"]),
        ("bothdigest.example.com", &["m1", "m2", "P"], &["P"]),
        ("onedigest.example.com", &["m1", "m2", "P"], &["m1", "P"]),
        ("bothtag.example.com", &["P"], &["m1", "m2", "P"]),
        ("onetag.example.com", &["m1", "P"], &["m1", "m2", "P"]),
        (
            "mixed.example.com",
            &["m1", "m3", "m4", "P"],
            &["m2", "m3", "m4", "P"],
        ),
    ];
    for (registry, digest_pull, tag_pull) in cases {
        for (reference, want) in [
            (format!("{registry}/image@sha256:{H}"), digest_pull),
            (format!("{registry}/image:latest"), tag_pull),
        ] {
            let endpoints = c.pull_sources(&r(&reference)).unwrap();
            let got: Vec<String> = endpoints
                .iter()
                .map(|e| {
                    if e.is_mirror {
                        e.location.trim_end_matches(".example.com").to_owned()
                    } else {
                        assert_eq!(e.location, *registry);
                        "P".to_owned()
                    }
                })
                .collect();
            assert_eq!(got, *want, "{reference}");
            let last = endpoints.last().unwrap();
            assert!(!last.is_mirror, "primary is tried last");
            assert_eq!(last.reference, r(&reference));
            for e in &endpoints {
                assert_eq!(e.reference.path(), "image");
                assert_eq!(e.reference.tag(), r(&reference).tag());
                assert_eq!(e.reference.digest(), r(&reference).digest());
            }
        }
    }
    // pull-from-mirror values are parsed.
    let mixed = c.find_registry("mixed.example.com/x").unwrap();
    let modes: Vec<PullFromMirror> = mixed.mirrors.iter().map(|m| m.pull_from_mirror).collect();
    assert_eq!(
        modes,
        [
            PullFromMirror::DigestOnly,
            PullFromMirror::TagOnly,
            PullFromMirror::All,
            PullFromMirror::All
        ]
    );
}

#[test]
fn rewrite_table() {
    // (config, logical reference, expected physical references in order, or the error location)
    use podstore_reference::ReferenceErrorKind as K;
    type Want = Result<Vec<String>, (&'static str, K)>;
    let cases: &[(&str, String, Want)] = &[
        (
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"docker.io\"\nmirror = [{ location = \"mirror.gcr.io\" }]",
            "busybox".into(),
            Ok(vec![
                "mirror.gcr.io/library/busybox:latest".into(),
                "docker.io/library/busybox:latest".into(),
            ]),
        ),
        (
            "[[registry]]\nprefix = \"docker.io/library\"\nlocation = \"quay.io/mirror\"",
            "docker.io/library/busybox:latest".into(),
            Ok(vec!["quay.io/mirror/busybox:latest".into()]),
        ),
        (
            "[[registry]]\nprefix = \"quay.io\"\nlocation = \"mirror.example.com:8443/quay\"",
            format!("quay.io/ns/img@sha256:{H}"),
            Ok(vec![format!(
                "mirror.example.com:8443/quay/ns/img@sha256:{H}"
            )]),
        ),
        (
            "[[registry]]\nprefix = \"example.com\"\nlocation = \"example.com:5000\"",
            "example.com:5000/image:latest".into(),
            Err(("example.com:5000", K::InvalidFormat)),
        ),
        (
            "[[registry]]\nprefix = \"example.com\"\nlocation = \"docker.io\"",
            "example.com/busybox:latest".into(),
            Err(("docker.io", K::NotCanonical)),
        ),
        (
            "[[registry]]\nprefix = \"example.com\"\nlocation = \"docker.io/library\"",
            "example.com/busybox:latest".into(),
            Ok(vec!["docker.io/library/busybox:latest".into()]),
        ),
        (
            // Wildcard without location: no rewriting.
            "[[registry]]\nprefix = \"*.example.com\"\nmirror = [{ location = \"mirror.local/x\" }]",
            "a.example.com/img:1".into(),
            Ok(vec![
                "mirror.local/x/img:1".into(),
                "a.example.com/img:1".into(),
            ]),
        ),
        (
            // Name-only gets :latest; tag+digest loses its tag.
            "[[registry]]\nlocation = \"quay.io\"\nmirror = [{ location = \"m.local\" }]",
            format!("quay.io/a:t@sha256:{H}"),
            Ok(vec![
                format!("m.local/a@sha256:{H}"),
                format!("quay.io/a@sha256:{H}"),
            ]),
        ),
        ("", "quay.io/a".into(), Ok(vec!["quay.io/a:latest".into()])),
    ];
    for (text, reference, want) in cases {
        let c = conf(text);
        let got = c.pull_sources(&r(reference));
        match (want, got) {
            (Ok(want), Ok(endpoints)) => {
                let got: Vec<String> = endpoints.iter().map(|e| e.reference.to_string()).collect();
                assert_eq!(&got, want, "{reference} with {text}");
            }
            (
                Err((location, kind)),
                Err(PullSourceError::Rewrite {
                    location: got,
                    source,
                    ..
                }),
            ) => {
                assert_eq!(got, *location, "{reference}");
                assert_eq!(source.kind(), *kind, "{reference}");
            }
            (want, got) => panic!("{reference} with {text}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn blocked_and_insecure_endpoints() {
    let c = conf(
        r#"
[[registry]]
location = "blocked.example.com"
blocked = true
mirror = [{ location = "mirror.example.com", insecure = true }, { location = "blocked-mirror.example.com" }]

[[registry]]
location = "blocked-mirror.example.com"
blocked = true

[[registry]]
location = "alone.example.com"
blocked = true

[[registry]]
location = "bydigest.example.com"
blocked = true
mirror-by-digest-only = true
mirror = [{ location = "mirror.example.com" }]

[[registry]]
prefix = "moved.example.com"
location = "unblocked.example.com"
blocked = true

[[registry]]
prefix = "insecure.example.com"
location = "insecure.example.com"
insecure = true
mirror = [{ location = "secure-mirror.example.com" }]
"#,
    );
    // A blocked primary still pulls via its unblocked mirrors; blocked mirrors are skipped.
    let all = c.endpoints(&r("blocked.example.com/img:1")).unwrap();
    let flags: Vec<(&str, bool, bool, bool)> = all
        .iter()
        .map(|e| (e.location.as_str(), e.is_mirror, e.insecure, e.blocked))
        .collect();
    assert_eq!(
        flags,
        [
            ("mirror.example.com", true, true, false),
            ("blocked-mirror.example.com", true, false, true),
            ("blocked.example.com", false, false, true),
        ]
    );
    let usable = c.pull_sources(&r("blocked.example.com/img:1")).unwrap();
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].reference.to_string(), "mirror.example.com/img:1");

    // Everything blocked: the error names the blocking table and the file.
    let e = c.pull_sources(&r("alone.example.com/img")).unwrap_err();
    match &e {
        PullSourceError::Blocked {
            registries,
            origins,
            reference,
        } => {
            assert_eq!(registries, &["alone.example.com"]);
            assert_eq!(origins, &[PathBuf::from("/test/registries.conf")]);
            assert_eq!(reference, "alone.example.com/img");
        }
        other => panic!("{other:?}"),
    }
    let message = e.to_string();
    assert!(
        message.contains("alone.example.com") && message.contains("/test/registries.conf"),
        "{message}"
    );

    // mirror-by-digest-only: tag pulls reach only the (blocked) primary.
    assert!(matches!(
        c.pull_sources(&r("bydigest.example.com/img:1")),
        Err(PullSourceError::Blocked { .. })
    ));
    let digest_pull = c
        .pull_sources(&r(&format!("bydigest.example.com/img@sha256:{H}")))
        .unwrap();
    assert_eq!(digest_pull.len(), 1);
    assert!(digest_pull[0].is_mirror);
    // Blocked is judged on the physical (location) name: moved.example.com maps to an
    // unblocked location.
    let moved = c.pull_sources(&r("moved.example.com/img")).unwrap();
    assert_eq!(
        moved[0].reference.to_string(),
        "unblocked.example.com/img:latest"
    );
    // Mirrors do not inherit insecure.
    let insecure = c.pull_sources(&r("insecure.example.com/img")).unwrap();
    let flags: Vec<(bool, bool)> = insecure.iter().map(|e| (e.is_mirror, e.insecure)).collect();
    assert_eq!(flags, [(true, false), (false, true)]);
    // No table: one secure, unblocked primary named after the reference.
    let plain = c.pull_sources(&r("quay.io/a/b:1")).unwrap();
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].location, "quay.io/a/b");
    assert!(!plain[0].insecure && !plain[0].is_mirror && !plain[0].blocked);
}

/// Every validation error, from a one-file snippet.
#[test]
fn validation_error_table() {
    type Check = fn(&RegistriesConfError) -> bool;
    let cases: Vec<(&str, Check)> = vec![
        (
            "[[registry]]\nlocation = \"https://example.com\"",
            |e| matches!(e, RegistriesConfError::SchemeNotSupported { value, .. } if value == "https://example.com"),
        ),
        (
            "[[registry]]\nprefix = \"http://example.com\"\nlocation = \"x.com\"",
            |e| matches!(e, RegistriesConfError::SchemeNotSupported { .. }),
        ),
        ("[[registry]]\ninsecure = true", |e| {
            matches!(e, RegistriesConfError::PrefixAndLocationUnset { .. })
        }),
        (
            "[[registry]]\nprefix = \"example.com\"",
            |e| matches!(e, RegistriesConfError::LocationUnset { prefix, .. } if prefix == "example.com"),
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\nmirror = [{ insecure = true }]",
            |e| matches!(e, RegistriesConfError::MirrorLocationUnset { prefix, .. } if prefix == "a.com"),
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\npull-from-mirror = \"all\"",
            |e| matches!(e, RegistriesConfError::PullFromMirrorOnRegistry { .. }),
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\nmirror-by-digest-only = true\nmirror = [{ location = \"m.com\", pull-from-mirror = \"digest-only\" }]",
            |e| matches!(e, RegistriesConfError::PullFromMirrorWithDigestOnly { mirror, .. } if mirror == "m.com"),
        ),
        (
            "[[registry]]\nlocation = \"a.com\"\nmirror = [{ location = \"m.com\", pull-from-mirror = \"sometimes\" }]",
            |e| matches!(e, RegistriesConfError::InvalidPullFromMirror { value, .. } if value == "sometimes"),
        ),
        (
            "[[registry]]\nprefix = \"a.com/x\"\nlocation = \"b.com\"\ninsecure = true\n[[registry]]\nprefix = \"a.com/y\"\nlocation = \"b.com\"",
            |e| matches!(e, RegistriesConfError::ConflictingSetting { location, setting: "insecure", .. } if location == "b.com"),
        ),
        (
            "[[registry]]\nprefix = \"a.com/x\"\nlocation = \"b.com\"\nblocked = true\n[[registry]]\nprefix = \"a.com/y\"\nlocation = \"b.com\"",
            |e| {
                matches!(
                    e,
                    RegistriesConfError::ConflictingSetting {
                        setting: "blocked",
                        ..
                    }
                )
            },
        ),
        (
            "[[registry]]\nprefix = \"*example.com\"\nlocation = \"a.com\"",
            |e| matches!(e, RegistriesConfError::InvalidWildcard { prefix, .. } if prefix == "*example.com"),
        ),
        (
            "[[registry]]\nprefix = \"*.example.com/foo\"\nlocation = \"a.com\"",
            |e| matches!(e, RegistriesConfError::InvalidWildcard { .. }),
        ),
        ("[[registry]]\nprefix = \"*\"\nlocation = \"a.com\"", |e| {
            matches!(e, RegistriesConfError::InvalidWildcard { .. })
        }),
        (
            "unqualified-search-registries = [\"quay.io/ns\"]",
            |e| matches!(e, RegistriesConfError::InvalidSearchRegistry { value, .. } if value == "quay.io/ns"),
        ),
        (
            "unqualified-search-registries = [\"https://quay.io\"]",
            |e| matches!(e, RegistriesConfError::SchemeNotSupported { .. }),
        ),
        ("unqualified-search-registries = [\"\"]", |e| {
            matches!(e, RegistriesConfError::InvalidSearchRegistry { .. })
        }),
        (
            "short-name-mode = \"strict\"",
            |e| matches!(e, RegistriesConfError::InvalidShortNameMode { value, .. } if value == "strict"),
        ),
        (
            "[aliases]\nimage1 = \"quay.io/repo/image:1\"\nimage2 = \"image:1\"",
            |e| {
                matches!(e, RegistriesConfError::InvalidAliases { problems, .. }
                if problems.iter().map(|p| p.name.as_str()).collect::<Vec<_>>() == ["image1", "image2"])
            },
        ),
        (
            "unqualified-search-registries = []\n[registries.search]\nregistries = []",
            |e| matches!(e, RegistriesConfError::MixedV1V2 { .. }),
        ),
        ("unqualified-search-registries = 3", |e| {
            matches!(e, RegistriesConfError::Toml { .. })
        }),
        ("[[registry]\n", |e| {
            matches!(e, RegistriesConfError::Toml { .. })
        }),
        (
            "[[registry]]\nlocation = \"a.com\"\ninsecure = \"yes\"",
            |e| matches!(e, RegistriesConfError::Toml { .. }),
        ),
    ];
    for (text, check) in cases {
        let e = RegistriesConfig::parse(text, "/test/bad.conf").unwrap_err();
        assert!(check(&e), "{text}: unexpected {e:?}");
        assert!(
            e.to_string().contains("/test/bad.conf"),
            "error must name the file: {e}"
        );
    }
}

#[test]
fn normalisation_and_dedup_within_one_file() {
    let c = conf(
        r#"
unqualified-search-registries = ["quay.io/", "localhost:5000", "docker.io"]
[[registry]]
location = "example.com///"
insecure = true
[[registry]]
prefix = "example.com"
location = "other.com"
[[registry]]
prefix = "*.wild.com"
mirror = [{ location = "m.com/" }]
"#,
    );
    assert_eq!(
        c.search_registries(),
        ["quay.io", "localhost:5000", "docker.io"]
    );
    let t = c.find_registry("example.com/x").unwrap();
    assert_eq!(
        (t.location.as_str(), t.insecure),
        ("example.com", true),
        "first table of a prefix wins"
    );
    assert_eq!(c.registries().len(), 2);
    let w = c.find_registry("a.wild.com/x").unwrap();
    assert_eq!(w.location, "");
    assert_eq!(w.mirrors[0].location, "m.com");
    assert_eq!(c.short_name_mode(), ShortNameMode::Permissive);
    assert_eq!(c.configured_short_name_mode(), None);
    assert_eq!(c.credential_helpers(), ["containers-auth.json"]);
    // Unknown keys are ignored.
    let c = conf("some-future-key = 1\n[[registry]]\nlocation = \"a.com\"\nfuture = true");
    assert_eq!(c.registries().len(), 1);
}

#[test]
fn v1_files_are_converted_and_refused_as_drop_ins() {
    let c = conf(
        r#"
[registries.search]
registries = ["quay.io", "docker.io/"]
[registries.insecure]
registries = ["c.com", "d.com"]
[registries.block]
registries = ["d.com", "e.com"]
"#,
    );
    assert_eq!(c.search_registries(), ["quay.io", "docker.io"]);
    let tables: Vec<(&str, bool, bool)> = c
        .registries()
        .iter()
        .map(|t| (t.prefix.as_str(), t.insecure, t.blocked))
        .collect();
    assert_eq!(
        tables,
        [
            ("c.com", true, false),
            ("d.com", true, true),
            ("e.com", false, true)
        ]
    );
    let mut base = RegistriesConfig::empty();
    let e = base
        .merge_drop_in(
            "[registries.search]\nregistries = [\"a.com\"]",
            "/test/d/10.conf",
        )
        .unwrap_err();
    assert!(matches!(e, RegistriesConfError::V1DropIn { .. }), "{e:?}");
}

#[test]
fn aliases_validation_table() {
    // (name, value, valid)
    let cases: &[(&str, &str, bool)] = &[
        ("docker", "docker.io/library/foo", true),
        ("quay/foo", "quay.io/library/foo", true),
        ("alpine", "docker.io/alpine", true),
        ("local", "localhost/foo", true),
        ("removed", "", true),
        ("image1", "quay.io/repo/image:1", false),
        ("image2", "image:1", false),
        ("noreg", "foo/bar", false),
        (
            "digested",
            "quay.io/a@sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582",
            false,
        ),
        ("quay.io/foo", "quay.io/foo", false),
        ("localhost/foo", "quay.io/foo", false),
        ("tagged:1", "quay.io/foo", false),
        ("Upper", "quay.io/foo", false),
        ("bad", "quay.io/Foo", false),
        ("", "quay.io/foo", false),
    ];
    for (name, value, valid) in cases {
        let text = format!("[aliases]\n{name:?} = {value:?}\n");
        let got = RegistriesConfig::parse(&text, "/test/aliases.conf");
        assert_eq!(got.is_ok(), *valid, "{name} = {value}: {got:?}");
    }
    let c = conf("[aliases]\nalpine = \"docker.io/alpine\"");
    let alias = c.alias("alpine").unwrap();
    assert_eq!(
        alias.target.to_string(),
        "docker.io/library/alpine",
        "stored normalised"
    );
    assert_eq!(alias.origin, Path::new("/test/registries.conf"));
    assert!(
        c.alias("library/alpine").is_none(),
        "keys are matched as typed"
    );
}

// ---------------------------------------------------------------------------------------------
// Files on disk: discovery and drop-in merging.

fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().tempdir_in("/dev/shm").unwrap()
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn options(root: &Path) -> LoadOptions {
    LoadOptions {
        system_file: root.join("etc/registries.conf"),
        system_drop_in_dir: root.join("etc/registries.conf.d"),
        ..LoadOptions::default()
    }
}

#[test]
fn drop_ins_merge_in_lexical_order() {
    let dir = tmp();
    let root = dir.path();
    write(
        &root.join("etc/registries.conf"),
        r#"
unqualified-search-registries = ["quay.io", "docker.io"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json", "secretservice"]
[aliases]
old = "quay.io/old"
keep = "quay.io/keep"
[[registry]]
location = "example.com"
insecure = true
mirror = [{ location = "m1.example.com" }]
[[registry]]
location = "untouched.com"
"#,
    );
    let d = root.join("etc/registries.conf.d");
    // "10-…" sorts before "2-…" (byte order).
    write(
        &d.join("10-replace.conf"),
        "[[registry]]\nlocation = \"example.com\"\nblocked = true\n[aliases]\nold = \"\"\nnew = \"quay.io/new\"\n",
    );
    write(
        &d.join("2-search.conf"),
        "unqualified-search-registries = [\"registry.fedoraproject.org\"]\nshort-name-mode = \"disabled\"\n",
    );
    write(
        &d.join("3-keep.conf"),
        "[aliases]\nnew = \"quay.io/newer\"\n",
    );
    write(&d.join("4-ignored.conf.ignore"), "this is not toml");
    write(&d.join("5-dir.conf/inner.conf"), "this is not toml either");
    let c = RegistriesConfig::load(&options(root)).unwrap();
    let t = c.find_registry("example.com/x").unwrap();
    assert!(
        t.blocked && !t.insecure && t.mirrors.is_empty(),
        "whole table replaced: {t:?}"
    );
    assert!(c.find_registry("untouched.com/x").is_some());
    assert_eq!(c.search_registries(), ["registry.fedoraproject.org"]);
    assert_eq!(
        c.search_registries_origin(),
        Some(d.join("2-search.conf").as_path())
    );
    assert_eq!(c.short_name_mode(), ShortNameMode::Disabled);
    assert_eq!(
        c.credential_helpers(),
        ["containers-auth.json", "secretservice"]
    );
    assert!(c.alias("old").is_none(), "empty value removes an alias");
    assert_eq!(c.alias("keep").unwrap().target.to_string(), "quay.io/keep");
    let new = c.alias("new").unwrap();
    assert_eq!(new.target.to_string(), "quay.io/newer", "later file wins");
    assert_eq!(new.origin, d.join("3-keep.conf"));
    assert_eq!(
        c.files(),
        [
            root.join("etc/registries.conf"),
            d.join("10-replace.conf"),
            d.join("2-search.conf"),
            d.join("3-keep.conf"),
        ]
    );

    // An explicit empty list clears; an absent key keeps.
    write(
        &d.join("6-clear.conf"),
        "unqualified-search-registries = []\n",
    );
    let c = RegistriesConfig::load(&options(root)).unwrap();
    assert!(c.search_registries().is_empty());
    assert_eq!(c.short_name_mode(), ShortNameMode::Disabled);

    // A bad drop-in fails the whole load and is named.
    write(&d.join("7-bad.conf"), "short-name-mode = \"loud\"\n");
    let e = RegistriesConfig::load(&options(root)).unwrap_err();
    assert!(e.to_string().contains("7-bad.conf"), "{e}");
}

#[test]
fn file_discovery_rules() {
    let dir = tmp();
    let root = dir.path();
    let home = root.join("home");
    let system = "unqualified-search-registries = [\"system.io\"]\n";
    write(&root.join("etc/registries.conf"), system);
    write(
        &root.join("etc/registries.conf.d/50-sys.conf"),
        "[aliases]\nsys = \"sys.io/x\"\n",
    );
    write(
        &home.join(".config/containers/registries.conf.d/50-user.conf"),
        "[aliases]\nuser = \"user.io/x\"\n",
    );

    // System file, then the system and the user drop-in directories.
    let mut opts = options(root);
    opts.home = Some(home.clone());
    let c = RegistriesConfig::load(&opts).unwrap();
    assert_eq!(c.search_registries(), ["system.io"]);
    assert!(c.alias("sys").is_some() && c.alias("user").is_some());

    // A user registries.conf replaces the system file and the system drop-in directory.
    write(
        &home.join(".config/containers/registries.conf"),
        "unqualified-search-registries = [\"user.io\"]\n",
    );
    let c = RegistriesConfig::load(&opts).unwrap();
    assert_eq!(c.search_registries(), ["user.io"]);
    assert!(c.alias("sys").is_none() && c.alias("user").is_some());

    // An explicit drop-in directory is the only one read.
    write(
        &root.join("explicit.d/1.conf"),
        "[aliases]\nexplicit = \"ex.io/x\"\n",
    );
    let mut explicit_dir = opts.clone();
    explicit_dir.drop_in_dir = Some(root.join("explicit.d"));
    let c = RegistriesConfig::load(&explicit_dir).unwrap();
    assert!(c.alias("explicit").is_some() && c.alias("user").is_none() && c.alias("sys").is_none());

    // An explicit file is used instead of both; missing, it is an error naming it.
    write(
        &root.join("explicit.conf"),
        "unqualified-search-registries = [\"explicit.io\"]\n",
    );
    let mut explicit = options(root);
    explicit.file = Some(root.join("explicit.conf"));
    assert_eq!(
        RegistriesConfig::load(&explicit)
            .unwrap()
            .search_registries(),
        ["explicit.io"]
    );
    explicit.file = Some(root.join("missing.conf"));
    let e = RegistriesConfig::load(&explicit).unwrap_err();
    assert!(
        matches!(&e, RegistriesConfError::NotFound { path } if path.ends_with("missing.conf")),
        "{e:?}"
    );

    // from_file reads that file only (no drop-ins), and refuses a missing one.
    let only = RegistriesConfig::from_file(root.join("etc/registries.conf")).unwrap();
    assert_eq!(only.search_registries(), ["system.io"]);
    assert!(only.alias("sys").is_none());
    assert_eq!(only.files(), [root.join("etc/registries.conf")]);
    assert!(matches!(
        RegistriesConfig::from_file(root.join("missing.conf")),
        Err(RegistriesConfError::NotFound { .. })
    ));

    // No files at all: empty configuration, no error.
    let empty = RegistriesConfig::load(&options(&root.join("nothing"))).unwrap();
    assert_eq!(empty, RegistriesConfig::empty());

    // The environment variable names the explicit file.
    let env = LoadOptions::from_env(|name| match name {
        "CONTAINERS_REGISTRIES_CONF" => Some(OsString::from("/x/registries.conf")),
        "HOME" => Some(OsString::new()),
        _ => None,
    });
    assert_eq!(env.file, Some(PathBuf::from("/x/registries.conf")));
    assert_eq!(env.home, None, "empty HOME counts as unset");
}

#[test]
fn alias_cache_wins_over_configuration() {
    let dir = tmp();
    let root = dir.path();
    write(
        &root.join("etc/registries.conf"),
        "[aliases]\nfoo = \"conf.io/foo\"\nbar = \"conf.io/bar\"\n",
    );
    write(
        &root.join("cache/short-name-aliases.conf"),
        "[aliases]\nfoo = \"cache.io/foo\"\n",
    );
    let mut opts = options(root);
    opts.alias_cache = Some(root.join("cache/short-name-aliases.conf"));
    let c = RegistriesConfig::load(&opts).unwrap();
    assert_eq!(c.alias("foo").unwrap().target.to_string(), "cache.io/foo");
    assert_eq!(c.alias("bar").unwrap().target.to_string(), "conf.io/bar");
    // A missing cache is fine; an invalid one fails the load.
    opts.alias_cache = Some(root.join("cache/missing.conf"));
    assert!(RegistriesConfig::load(&opts).is_ok());
    write(
        &root.join("cache/bad.conf"),
        "[aliases]\nfoo = \"no-registry\"\n",
    );
    opts.alias_cache = Some(root.join("cache/bad.conf"));
    assert!(matches!(
        RegistriesConfig::load(&opts),
        Err(RegistriesConfError::InvalidAliases { .. })
    ));
}

#[test]
fn debian_shortnames_drop_in_loads_when_present() {
    // The distribution's alias list, if installed, must load (it is plain [aliases]).
    let path = Path::new("/etc/containers/registries.conf.d/shortnames.conf");
    let Ok(text) = fs::read_to_string(path) else {
        return;
    };
    let mut c = RegistriesConfig::empty();
    c.merge_drop_in(&text, path).unwrap();
    assert!(!c.aliases().is_empty());
}
