//! Data-driven tests of CRI-O's ResolveNames (crio-storage-behavior §4, naming spec §2.10):
//! qualified names, search registries, aliases, short-name modes, blocked registries, image IDs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_reference::{
    NO_REGISTRIES_CONFIGURED, ReferenceErrorKind, RegistriesConfig, ResolveError, ResolveOptions,
    ResolvedVia, ShortNameMode, resolve_names,
};

const X: &str = "e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
const ID: &str = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

fn x(s: &str) -> String {
    s.replace("{X}", X).replace("{ID}", ID)
}

/// The seed test setup: service registries ["docker.io", "registry.example.org"] and an empty
/// registries.conf.
fn service_options() -> ResolveOptions {
    ResolveOptions {
        search_registries: vec!["docker.io".into(), "registry.example.org".into()],
        ..ResolveOptions::default()
    }
}

fn names(
    input: &str,
    config: &RegistriesConfig,
    options: &ResolveOptions,
) -> Result<Vec<String>, ResolveError> {
    resolve_names(input, config, options)
        .map(|r| r.candidates.iter().map(ToString::to_string).collect())
}

#[test]
fn crio_resolve_names_table() {
    let empty = RegistriesConfig::empty();
    let options = service_options();
    let cases: &[(&str, &[&str])] = &[
        (
            "image",
            &["docker.io/library/image", "registry.example.org/image"],
        ),
        (
            "image:1.0",
            &[
                "docker.io/library/image:1.0",
                "registry.example.org/image:1.0",
            ],
        ),
        (
            "image:latest@sha256:{X}",
            &[
                "docker.io/library/image@sha256:{X}",
                "registry.example.org/image@sha256:{X}",
            ],
        ),
        (
            "image@sha256:{X}",
            &[
                "docker.io/library/image@sha256:{X}",
                "registry.example.org/image@sha256:{X}",
            ],
        ),
        (
            "foo/bar",
            &["docker.io/foo/bar", "registry.example.org/foo/bar"],
        ),
        (
            "library/busybox",
            &[
                "docker.io/library/busybox",
                "registry.example.org/library/busybox",
            ],
        ),
        (
            "docker.io/library/busybox:latest",
            &["docker.io/library/busybox:latest"],
        ),
        (
            "docker.io/library/image:latest@sha256:{X}",
            &["docker.io/library/image@sha256:{X}"],
        ),
        (
            "index.docker.io/busybox:1@sha256:{X}",
            &["docker.io/library/busybox@sha256:{X}"],
        ),
        ("docker.io/busybox", &["docker.io/library/busybox"]),
        ("localhost/foo", &["localhost/foo"]),
        ("myreg:5000/foo", &["myreg:5000/foo"]),
        ("my.reg/foo", &["my.reg/foo"]),
        ("my.reg/foo:tag", &["my.reg/foo:tag"]),
        (
            "localhost",
            &[
                "docker.io/library/localhost",
                "registry.example.org/localhost",
            ],
        ),
        (
            "localhost:5000",
            &[
                "docker.io/library/localhost:5000",
                "registry.example.org/localhost:5000",
            ],
        ),
        (
            "sha256:{ID}",
            &[
                "docker.io/library/sha256:{ID}",
                "registry.example.org/sha256:{ID}",
            ],
        ),
    ];
    for (input, want) in cases {
        let input = x(input);
        let want: Vec<String> = want.iter().map(|s| x(s)).collect();
        assert_eq!(names(&input, &empty, &options).unwrap(), want, "{input}");
    }
}

#[test]
fn resolve_errors_table() {
    let empty = RegistriesConfig::empty();
    let options = service_options();
    let e = names(ID, &empty, &options).unwrap_err();
    assert!(
        matches!(&e, ResolveError::CannotParseImageId { input } if input == ID),
        "{e:?}"
    );
    assert!(e.to_string().starts_with("cannot parse an image ID") && e.to_string().contains(ID));

    for (input, kind) in [
        ("camelCaseName", ReferenceErrorKind::NameNotLowercase),
        ("Foo/bar", ReferenceErrorKind::NameNotLowercase),
        ("", ReferenceErrorKind::InvalidFormat),
        ("docker://quay.io/x", ReferenceErrorKind::InvalidFormat),
        ("-x", ReferenceErrorKind::InvalidFormat),
    ] {
        match names(input, &empty, &options) {
            Err(ResolveError::InvalidReference(e)) => assert_eq!(e.kind(), kind, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }

    // No search registries anywhere: CRI-O's exact message.
    let e = names("image", &empty, &ResolveOptions::default()).unwrap_err();
    assert!(matches!(&e, ResolveError::NoRegistriesConfigured { input } if input == "image"));
    assert_eq!(e.to_string(), NO_REGISTRIES_CONFIGURED);
    assert_eq!(
        e.to_string(),
        "no registries configured while trying to pull an unqualified image, add at least one in either /etc/crio/crio.conf or /etc/containers/registries.conf"
    );
    // ... but qualified names need none.
    assert_eq!(
        names("quay.io/a", &empty, &ResolveOptions::default()).unwrap(),
        ["quay.io/a"]
    );
}

#[test]
fn search_registries_from_config_are_not_duplicated() {
    let config = RegistriesConfig::parse(
        "unqualified-search-registries = [\"registry.example.org\", \"quay.io\", \"docker.io\", \"quay.io\"]",
        "/test/registries.conf",
    )
    .unwrap();
    // Service list first, then registries.conf; every registry once (CRI-O listed them twice).
    let got = names("image", &config, &service_options()).unwrap();
    assert_eq!(
        got,
        [
            "docker.io/library/image",
            "registry.example.org/image",
            "quay.io/image"
        ]
    );
    // registries.conf alone.
    let got = names("image:1", &config, &ResolveOptions::default()).unwrap();
    assert_eq!(
        got,
        [
            "registry.example.org/image:1",
            "quay.io/image:1",
            "docker.io/library/image:1"
        ]
    );
    // Candidates that normalise to the same reference collapse too.
    let options = ResolveOptions {
        search_registries: vec!["docker.io".into(), "index.docker.io".into()],
        ..ResolveOptions::default()
    };
    assert_eq!(
        names("image", &RegistriesConfig::empty(), &options).unwrap(),
        ["docker.io/library/image"]
    );
}

#[test]
fn blocked_registries_table() {
    let config = RegistriesConfig::parse(
        r#"
unqualified-search-registries = ["blocked.io", "quay.io", "docker.io"]
[[registry]]
location = "blocked.io"
blocked = true
[[registry]]
prefix = "docker.io/library/forbidden"
location = "docker.io/library/forbidden"
blocked = true
[aliases]
evil = "blocked.io/evil"
"#,
        "/test/registries.conf",
    )
    .unwrap();
    let options = ResolveOptions::default();
    // Blocked search registries are skipped.
    assert_eq!(
        names("image", &config, &options).unwrap(),
        ["quay.io/image", "docker.io/library/image"]
    );
    assert_eq!(
        names("forbidden", &config, &options).unwrap(),
        ["quay.io/forbidden"]
    );
    // A blocked qualified name is an error naming the blocking table.
    let e = names("blocked.io/x:1", &config, &options).unwrap_err();
    assert!(
        matches!(&e, ResolveError::Blocked { input, registry } if input == "blocked.io/x:1" && registry == "blocked.io"),
        "{e:?}"
    );
    assert!(e.to_string().contains("blocked.io/x:1") && e.to_string().contains("blocked"));
    let e = names("docker.io/library/forbidden:1", &config, &options).unwrap_err();
    assert!(
        matches!(&e, ResolveError::Blocked { registry, .. } if registry == "docker.io/library/forbidden")
    );
    // An alias onto a blocked registry too.
    assert!(matches!(
        names("evil", &config, &options),
        Err(ResolveError::Blocked { .. })
    ));
    // All search registries blocked: the error names them.
    let only_blocked = ResolveOptions {
        search_registries: vec!["blocked.io".into()],
        ..ResolveOptions::default()
    };
    let config_one = RegistriesConfig::parse(
        "[[registry]]\nlocation = \"blocked.io\"\nblocked = true\n[[registry]]\nlocation = \"other.io\"\nblocked = true",
        "/test/registries.conf",
    )
    .unwrap();
    let with_other = ResolveOptions {
        search_registries: vec!["blocked.io".into(), "other.io".into()],
        ..ResolveOptions::default()
    };
    let e = names("image", &config_one, &with_other).unwrap_err();
    assert!(
        matches!(&e, ResolveError::AllSearchRegistriesBlocked { input, registries } if input == "image" && registries == &["blocked.io", "other.io"]),
        "{e:?}"
    );
    assert!(e.to_string().contains("blocked.io, other.io"), "{e}");
    assert!(matches!(
        names("image", &config_one, &only_blocked),
        Err(ResolveError::AllSearchRegistriesBlocked { .. })
    ));
    // Local lookups may turn enforcement off (crio-storage-behavior §10.6).
    let lenient = ResolveOptions {
        enforce_blocked: false,
        ..with_other.clone()
    };
    assert_eq!(
        names("image", &config_one, &lenient).unwrap(),
        ["blocked.io/image", "other.io/image"]
    );
    let lenient = ResolveOptions {
        enforce_blocked: false,
        ..ResolveOptions::default()
    };
    assert_eq!(
        names("blocked.io/x:1", &config, &lenient).unwrap(),
        ["blocked.io/x:1"]
    );
}

#[test]
fn aliases_table() {
    let config = RegistriesConfig::parse(
        r#"
unqualified-search-registries = ["quay.io", "docker.io"]
[aliases]
docker = "docker.io/library/foo"
"quay/foo" = "quay.io/library/foo"
alpine = "docker.io/alpine"
"#,
        "/test/aliases.conf",
    )
    .unwrap();
    let options = ResolveOptions::default();
    let cases: &[(&str, &[&str])] = &[
        ("docker", &["docker.io/library/foo"]),
        ("docker:tag", &["docker.io/library/foo:tag"]),
        ("docker@sha256:{X}", &["docker.io/library/foo@sha256:{X}"]),
        (
            "docker:tag@sha256:{X}",
            &["docker.io/library/foo@sha256:{X}"],
        ),
        ("quay/foo:tag", &["quay.io/library/foo:tag"]),
        ("alpine", &["docker.io/library/alpine"]),
        // Keys are matched as typed: library/alpine is not the alias "alpine".
        (
            "library/alpine",
            &["quay.io/library/alpine", "docker.io/library/alpine"],
        ),
        ("registry.com/repo/image", &["registry.com/repo/image"]),
        ("busybox", &["quay.io/busybox", "docker.io/library/busybox"]),
        (
            "library/busybox:1",
            &["quay.io/library/busybox:1", "docker.io/library/busybox:1"],
        ),
    ];
    for (input, want) in cases {
        let input = x(input);
        let want: Vec<String> = want.iter().map(|s| x(s)).collect();
        assert_eq!(names(&input, &config, &options).unwrap(), want, "{input}");
    }
    let resolution = resolve_names("docker", &config, &options).unwrap();
    assert_eq!(
        resolution.via,
        ResolvedVia::Alias {
            origin: "/test/aliases.conf".into()
        }
    );
    assert_eq!(
        resolve_names("busybox", &config, &options).unwrap().via,
        ResolvedVia::SearchRegistries
    );
    assert_eq!(
        resolve_names("a.io/b", &config, &options).unwrap().via,
        ResolvedVia::Qualified
    );
}

/// Naming spec §2.10 mode matrix (no TTY), alias `repo/image` configured.
#[test]
fn short_name_mode_matrix() {
    let aliases = "[aliases]\n\"repo/image\" = \"quay.io/repo/image\"\n";
    let usr0 = aliases.to_owned();
    let usr1 = format!("unqualified-search-registries = [\"quay.io\"]\n{aliases}");
    let usr2 = format!("unqualified-search-registries = [\"quay.io\", \"docker.io\"]\n{aliases}");
    #[derive(Debug, PartialEq)]
    enum Out {
        Alias,
        Candidates(usize),
        NoUsr,
        Ambiguous,
    }
    let modes = [
        ShortNameMode::Permissive,
        ShortNameMode::Disabled,
        ShortNameMode::Enforcing,
    ];
    // (config, mode, outcome for "repo/image", outcome for "doesnotexist")
    let mut cases = Vec::new();
    for mode in modes {
        cases.push((usr0.clone(), mode, Out::Alias, Out::NoUsr));
        cases.push((usr1.clone(), mode, Out::Alias, Out::Candidates(1)));
    }
    cases.push((
        usr2.clone(),
        ShortNameMode::Permissive,
        Out::Alias,
        Out::Candidates(2),
    ));
    cases.push((
        usr2.clone(),
        ShortNameMode::Disabled,
        Out::Alias,
        Out::Candidates(2),
    ));
    cases.push((
        usr2.clone(),
        ShortNameMode::Enforcing,
        Out::Alias,
        Out::Ambiguous,
    ));
    let classify = |r: Result<podstore_reference::Resolution, ResolveError>| match r {
        Ok(res) if matches!(res.via, ResolvedVia::Alias { .. }) => Out::Alias,
        Ok(res) => Out::Candidates(res.candidates.len()),
        Err(ResolveError::NoRegistriesConfigured { .. }) => Out::NoUsr,
        Err(ResolveError::Ambiguous { .. }) => Out::Ambiguous,
        Err(e) => panic!("{e:?}"),
    };
    for (text, mode, alias_out, other_out) in cases {
        let config = RegistriesConfig::parse(&text, "/test/modes.conf").unwrap();
        let options = ResolveOptions {
            short_name_mode: Some(mode),
            ..ResolveOptions::default()
        };
        assert_eq!(
            classify(resolve_names("repo/image", &config, &options)),
            alias_out,
            "{mode} {text}"
        );
        assert_eq!(
            classify(resolve_names("doesnotexist", &config, &options)),
            other_out,
            "{mode} {text}"
        );
    }
    // `None` uses the configured mode.
    let enforcing = RegistriesConfig::parse(
        "short-name-mode = \"enforcing\"\nunqualified-search-registries = [\"quay.io\", \"docker.io\"]",
        "/test/enforcing.conf",
    )
    .unwrap();
    let from_config = ResolveOptions {
        short_name_mode: None,
        ..ResolveOptions::default()
    };
    let e = resolve_names("busybox", &enforcing, &from_config).unwrap_err();
    assert_eq!(
        e.to_string(),
        "short name mode is enforcing, but image name busybox returns ambiguous list: quay.io/busybox, docker.io/library/busybox"
    );
    // The default options force `disabled`, as CRI-O did.
    assert_eq!(
        resolve_names("busybox", &enforcing, &ResolveOptions::default())
            .unwrap()
            .candidates
            .len(),
        2
    );
}
