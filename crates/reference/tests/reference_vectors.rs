//! Data-driven tests of image-reference parsing: the vectors of naming spec §1.12 (numbered as
//! there) plus one or more rows for every rule of §1.2–§1.8, and weird inputs that must not
//! panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_reference::{
    Digest, Reference, ReferenceErrorKind as K, is_full_image_id, is_id_prefix_candidate,
    is_short_name, is_valid_tag,
};

const H: &str = "e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
const ID: &str = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

/// Expands the spec's placeholders: {H}, {ID}, {F64}, {F96}, {F128}, {A128}, {A129}, {U64}.
fn x(s: &str) -> String {
    s.replace("{H}", H)
        .replace("{ID}", ID)
        .replace("{ID63}", &ID[..63])
        .replace("{F64}", &"f".repeat(64))
        .replace("{F96}", &"f".repeat(96))
        .replace("{F128}", &"f".repeat(128))
        .replace("{F34}", &"f".repeat(34))
        .replace("{A128}", &"a".repeat(128))
        .replace("{A129}", &"a".repeat(129))
        .replace("{U64}", &"F".repeat(64))
        .replace("{a/x127}", &"a/".repeat(127))
        .replace("{a/x122}", &"a/".repeat(122))
        .replace("{A243}", &"a".repeat(243))
        .replace("{A255}", &"a".repeat(255))
        .replace("{A300}", &"a".repeat(300))
}

/// Expected outcome of `parse_normalized`.
enum Want {
    /// full (Display), domain, path, familiar, tag, digest.
    Ok(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    ),
    Err(K),
}

use Want::{Err as E, Ok as O};

const DH: &str = "docker.io";

fn normalized_vectors() -> Vec<(&'static str, Want)> {
    vec![
        // §1.12 vectors 1–43.
        (
            "busybox",
            O(
                "docker.io/library/busybox",
                DH,
                "library/busybox",
                "busybox",
                None,
                None,
            ),
        ),
        (
            "busybox:1.36",
            O(
                "docker.io/library/busybox:1.36",
                DH,
                "library/busybox",
                "busybox:1.36",
                Some("1.36"),
                None,
            ),
        ),
        (
            "library/busybox",
            O(
                "docker.io/library/busybox",
                DH,
                "library/busybox",
                "busybox",
                None,
                None,
            ),
        ),
        (
            "docker.io/busybox",
            O(
                "docker.io/library/busybox",
                DH,
                "library/busybox",
                "busybox",
                None,
                None,
            ),
        ),
        (
            "index.docker.io/busybox",
            O(
                "docker.io/library/busybox",
                DH,
                "library/busybox",
                "busybox",
                None,
                None,
            ),
        ),
        (
            "index.docker.io/library/busybox:latest",
            O(
                "docker.io/library/busybox:latest",
                DH,
                "library/busybox",
                "busybox:latest",
                Some("latest"),
                None,
            ),
        ),
        (
            "dmcgowan/myapp",
            O(
                "docker.io/dmcgowan/myapp",
                DH,
                "dmcgowan/myapp",
                "dmcgowan/myapp",
                None,
                None,
            ),
        ),
        (
            "index.docker.io/dmcgowan/myapp",
            O(
                "docker.io/dmcgowan/myapp",
                DH,
                "dmcgowan/myapp",
                "dmcgowan/myapp",
                None,
                None,
            ),
        ),
        (
            "library/foo/bar",
            O(
                "docker.io/library/foo/bar",
                DH,
                "library/foo/bar",
                "library/foo/bar",
                None,
                None,
            ),
        ),
        (
            "store/foo/bar",
            O(
                "docker.io/store/foo/bar",
                DH,
                "store/foo/bar",
                "store/foo/bar",
                None,
                None,
            ),
        ),
        (
            "registry-1.docker.io/busybox",
            O(
                "registry-1.docker.io/busybox",
                "registry-1.docker.io",
                "busybox",
                "registry-1.docker.io/busybox",
                None,
                None,
            ),
        ),
        (
            "localhost/busybox",
            O(
                "localhost/busybox",
                "localhost",
                "busybox",
                "localhost/busybox",
                None,
                None,
            ),
        ),
        (
            "localhost:5000/busybox:v1",
            O(
                "localhost:5000/busybox:v1",
                "localhost:5000",
                "busybox",
                "localhost:5000/busybox:v1",
                Some("v1"),
                None,
            ),
        ),
        (
            "localhost",
            O(
                "docker.io/library/localhost",
                DH,
                "library/localhost",
                "localhost",
                None,
                None,
            ),
        ),
        (
            "localhost:5000",
            O(
                "docker.io/library/localhost:5000",
                DH,
                "library/localhost",
                "localhost:5000",
                Some("5000"),
                None,
            ),
        ),
        (
            "example.com/foo",
            O(
                "example.com/foo",
                "example.com",
                "foo",
                "example.com/foo",
                None,
                None,
            ),
        ),
        (
            "example.com:8000/private/moonbase",
            O(
                "example.com:8000/private/moonbase",
                "example.com:8000",
                "private/moonbase",
                "example.com:8000/private/moonbase",
                None,
                None,
            ),
        ),
        (
            "127.0.0.1:5000/debian",
            O(
                "127.0.0.1:5000/debian",
                "127.0.0.1:5000",
                "debian",
                "127.0.0.1:5000/debian",
                None,
                None,
            ),
        ),
        (
            "192.168.1.1",
            O(
                "docker.io/library/192.168.1.1",
                DH,
                "library/192.168.1.1",
                "192.168.1.1",
                None,
                None,
            ),
        ),
        (
            "192.168.1.1:5000/repo:5050",
            O(
                "192.168.1.1:5000/repo:5050",
                "192.168.1.1:5000",
                "repo",
                "192.168.1.1:5000/repo:5050",
                Some("5050"),
                None,
            ),
        ),
        (
            "test_com/foo",
            O(
                "docker.io/test_com/foo",
                DH,
                "test_com/foo",
                "test_com/foo",
                None,
                None,
            ),
        ),
        (
            "test-com:8080/foo",
            O(
                "test-com:8080/foo",
                "test-com:8080",
                "foo",
                "test-com:8080/foo",
                None,
                None,
            ),
        ),
        (
            "foo/foo_bar.com:8080",
            O(
                "docker.io/foo/foo_bar.com:8080",
                DH,
                "foo/foo_bar.com",
                "foo/foo_bar.com:8080",
                Some("8080"),
                None,
            ),
        ),
        (
            "foo_bar.com:8080",
            O(
                "docker.io/library/foo_bar.com:8080",
                DH,
                "library/foo_bar.com",
                "foo_bar.com:8080",
                Some("8080"),
                None,
            ),
        ),
        (
            "test.com:5000",
            O(
                "docker.io/library/test.com:5000",
                DH,
                "library/test.com",
                "test.com:5000",
                Some("5000"),
                None,
            ),
        ),
        (
            "Example.com/foo",
            O(
                "Example.com/foo",
                "Example.com",
                "foo",
                "Example.com/foo",
                None,
                None,
            ),
        ),
        (
            "xn--n3h.com/myimage:xn--n3h.com",
            O(
                "xn--n3h.com/myimage:xn--n3h.com",
                "xn--n3h.com",
                "myimage",
                "xn--n3h.com/myimage:xn--n3h.com",
                Some("xn--n3h.com"),
                None,
            ),
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            O(
                "b.gcr.io/test.example.com/my-app:test.example.com",
                "b.gcr.io",
                "test.example.com/my-app",
                "b.gcr.io/test.example.com/my-app:test.example.com",
                Some("test.example.com"),
                None,
            ),
        ),
        (
            "lowercase:Uppercase",
            O(
                "docker.io/library/lowercase:Uppercase",
                DH,
                "library/lowercase",
                "lowercase:Uppercase",
                Some("Uppercase"),
                None,
            ),
        ),
        (
            "dock__er/docker",
            O(
                "docker.io/dock__er/docker",
                DH,
                "dock__er/docker",
                "dock__er/docker",
                None,
                None,
            ),
        ),
        (
            "docker---rules/docker",
            O(
                "docker.io/docker---rules/docker",
                DH,
                "docker---rules/docker",
                "docker---rules/docker",
                None,
                None,
            ),
        ),
        (
            "test:5000/repo@sha256:{H}",
            O(
                "test:5000/repo@sha256:{H}",
                "test:5000",
                "repo",
                "test:5000/repo@sha256:{H}",
                None,
                Some("sha256:{H}"),
            ),
        ),
        (
            "test:5000/repo:tag@sha256:{H}",
            O(
                "test:5000/repo:tag@sha256:{H}",
                "test:5000",
                "repo",
                "test:5000/repo:tag@sha256:{H}",
                Some("tag"),
                Some("sha256:{H}"),
            ),
        ),
        (
            "busybox@sha256:{H}",
            O(
                "docker.io/library/busybox@sha256:{H}",
                DH,
                "library/busybox",
                "busybox@sha256:{H}",
                None,
                Some("sha256:{H}"),
            ),
        ),
        (
            "busybox:latest@sha256:{H}",
            O(
                "docker.io/library/busybox:latest@sha256:{H}",
                DH,
                "library/busybox",
                "busybox:latest@sha256:{H}",
                Some("latest"),
                Some("sha256:{H}"),
            ),
        ),
        (
            "gcr.io/library/busybox:latest@sha256:{H}",
            O(
                "gcr.io/library/busybox:latest@sha256:{H}",
                "gcr.io",
                "library/busybox",
                "gcr.io/library/busybox:latest@sha256:{H}",
                Some("latest"),
                Some("sha256:{H}"),
            ),
        ),
        (
            "busybox@sha512:{F128}",
            O(
                "docker.io/library/busybox@sha512:{F128}",
                DH,
                "library/busybox",
                "busybox@sha512:{F128}",
                None,
                Some("sha512:{F128}"),
            ),
        ),
        (
            "busybox@sha384:{F96}",
            O(
                "docker.io/library/busybox@sha384:{F96}",
                DH,
                "library/busybox",
                "busybox@sha384:{F96}",
                None,
                Some("sha384:{F96}"),
            ),
        ),
        (
            "sha256:{ID}",
            O(
                "docker.io/library/sha256:{ID}",
                DH,
                "library/sha256",
                "sha256:{ID}",
                Some("{ID}"),
                None,
            ),
        ),
        (
            "{ID63}",
            O(
                "docker.io/library/{ID63}",
                DH,
                "library/{ID63}",
                "{ID63}",
                None,
                None,
            ),
        ),
        (
            "docker.io/{ID}",
            O(
                "docker.io/library/{ID}",
                DH,
                "library/{ID}",
                "{ID}",
                None,
                None,
            ),
        ),
        (
            "busybox:{A128}",
            O(
                "docker.io/library/busybox:{A128}",
                DH,
                "library/busybox",
                "busybox:{A128}",
                Some("{A128}"),
                None,
            ),
        ),
        (
            "busybox:_tag",
            O(
                "docker.io/library/busybox:_tag",
                DH,
                "library/busybox",
                "busybox:_tag",
                Some("_tag"),
                None,
            ),
        ),
        // §1.12 vectors 44–74: errors.
        ("{ID}", E(K::HexadecimalName)),
        ("Uppercase:tag", E(K::NameNotLowercase)),
        ("docker/Docker", E(K::NameNotLowercase)),
        ("Docker/docker", E(K::NameNotLowercase)),
        ("LOCALDOMAIN/debian", E(K::NameNotLowercase)),
        ("localhost/Foo", E(K::NameNotLowercase)),
        ("test:5000/Uppercase/lowercase:tag", E(K::NameNotLowercase)),
        ("busybox@SHA256:{F64}", E(K::NameNotLowercase)),
        ("-docker", E(K::InvalidFormat)),
        ("docker-/docker", E(K::InvalidFormat)),
        ("dock..er/docker", E(K::InvalidFormat)),
        ("dock_.er/docker", E(K::InvalidFormat)),
        ("____/____", E(K::InvalidFormat)),
        ("docker///docker", E(K::InvalidFormat)),
        ("docker/", E(K::InvalidFormat)),
        ("https://github.com/docker/docker", E(K::InvalidFormat)),
        ("aa/asdf$$^/aa", E(K::InvalidFormat)),
        (":justtag", E(K::InvalidFormat)),
        ("@sha256:{F64}", E(K::InvalidFormat)),
        ("", E(K::InvalidFormat)),
        ("foo:bar:baz", E(K::InvalidFormat)),
        ("a:b/c", E(K::InvalidFormat)),
        ("[2001:db8::1]:5000/repo", E(K::InvalidFormat)),
        ("busybox@sha256:{H}:tag", E(K::InvalidFormat)),
        ("repo@sha256:{F34}", E(K::InvalidDigest)),
        ("validname@invaliddigest:{F64}", E(K::InvalidDigest)),
        ("busybox@sha256:{U64}", E(K::InvalidDigest)),
        ("busybox:{A129}", E(K::InvalidFormat)),
        ("busybox:-tag", E(K::InvalidFormat)),
        ("busybox:.tag", E(K::InvalidFormat)),
        ("{a/x127}a:tag", E(K::NameTooLong)),
        ("example.com/{A255}:tag", E(K::NameTooLong)),
        // Familiar-form vectors and more of each rule.
        (
            "docker.io/library/foo",
            O(
                "docker.io/library/foo",
                DH,
                "library/foo",
                "foo",
                None,
                None,
            ),
        ),
        (
            "docker.io/fooo/bar",
            O("docker.io/fooo/bar", DH, "fooo/bar", "fooo/bar", None, None),
        ),
        (
            "docker.io/other/library",
            O(
                "docker.io/other/library",
                DH,
                "other/library",
                "other/library",
                None,
                None,
            ),
        ),
        (
            "127.0.0.1:8000/privatebase",
            O(
                "127.0.0.1:8000/privatebase",
                "127.0.0.1:8000",
                "privatebase",
                "127.0.0.1:8000/privatebase",
                None,
                None,
            ),
        ),
        (
            "sub-dom1.foo.com/bar/baz/quux",
            O(
                "sub-dom1.foo.com/bar/baz/quux",
                "sub-dom1.foo.com",
                "bar/baz/quux",
                "sub-dom1.foo.com/bar/baz/quux",
                None,
                None,
            ),
        ),
        (
            "a.b/d-e.f_g__h---i/j",
            O(
                "a.b/d-e.f_g__h---i/j",
                "a.b",
                "d-e.f_g__h---i/j",
                "a.b/d-e.f_g__h---i/j",
                None,
                None,
            ),
        ),
        (
            "quay.io/ns/repo:notlatest",
            O(
                "quay.io/ns/repo:notlatest",
                "quay.io",
                "ns/repo",
                "quay.io/ns/repo:notlatest",
                Some("notlatest"),
                None,
            ),
        ),
        (
            "EXAMPLE.COM:5000/foo:TAG_1.2-x",
            O(
                "EXAMPLE.COM:5000/foo:TAG_1.2-x",
                "EXAMPLE.COM:5000",
                "foo",
                "EXAMPLE.COM:5000/foo:TAG_1.2-x",
                Some("TAG_1.2-x"),
                None,
            ),
        ),
        (
            "1.2.3.4/foo",
            O("1.2.3.4/foo", "1.2.3.4", "foo", "1.2.3.4/foo", None, None),
        ),
        (
            "localhost:5000/a/b/c/d:tag",
            O(
                "localhost:5000/a/b/c/d:tag",
                "localhost:5000",
                "a/b/c/d",
                "localhost:5000/a/b/c/d:tag",
                Some("tag"),
                None,
            ),
        ),
        (
            "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{F128}",
            O(
                "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{F128}",
                "xn--7o8h.com",
                "myimage",
                "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{F128}",
                Some("xn--7o8h.com"),
                Some("sha512:{F128}"),
            ),
        ),
        (
            "example.com/{A243}",
            O(
                "example.com/{A243}",
                "example.com",
                "{A243}",
                "example.com/{A243}",
                None,
                None,
            ),
        ),
        (
            "{a/x122}a",
            O(
                "docker.io/{a/x122}a",
                DH,
                "{a/x122}a",
                "{a/x122}a",
                None,
                None,
            ),
        ),
        (
            "a",
            O("docker.io/library/a", DH, "library/a", "a", None, None),
        ),
        (
            "0",
            O("docker.io/library/0", DH, "library/0", "0", None, None),
        ),
        (
            "{ID}0",
            O(
                "docker.io/library/{ID}0",
                DH,
                "library/{ID}0",
                "{ID}0",
                None,
                None,
            ),
        ),
        (
            "index.docker.io/foo/bar:1",
            O(
                "docker.io/foo/bar:1",
                DH,
                "foo/bar",
                "foo/bar:1",
                Some("1"),
                None,
            ),
        ),
        (
            "docker.io/library/foo/bar",
            O(
                "docker.io/library/foo/bar",
                DH,
                "library/foo/bar",
                "library/foo/bar",
                None,
                None,
            ),
        ),
        (
            "localhost/library/foo",
            O(
                "localhost/library/foo",
                "localhost",
                "library/foo",
                "localhost/library/foo",
                None,
                None,
            ),
        ),
        (
            "a-b.c:1/x",
            O("a-b.c:1/x", "a-b.c:1", "x", "a-b.c:1/x", None, None),
        ),
        // More errors: each rule.
        ("foo_bar.com/x", E(K::InvalidFormat)),
        ("a___b", E(K::InvalidFormat)),
        ("a_-b/c", E(K::InvalidFormat)),
        ("a/b.-c", E(K::InvalidFormat)),
        ("-a.com/x", E(K::InvalidFormat)),
        ("a-.com/x", E(K::InvalidFormat)),
        ("example.com:/foo", E(K::InvalidFormat)),
        ("example.com:port/foo", E(K::InvalidFormat)),
        ("example.com/", E(K::InvalidFormat)),
        ("/", E(K::InvalidFormat)),
        ("@", E(K::InvalidFormat)),
        ("a//b", E(K::InvalidFormat)),
        ("busybox@", E(K::InvalidFormat)),
        ("busybox:", E(K::InvalidFormat)),
        ("busybox:tag@", E(K::InvalidFormat)),
        ("busybox@sha256:", E(K::InvalidFormat)),
        (
            "busybox@sha256:ffffffffffffffffffffffffffffffff0",
            E(K::InvalidDigest),
        ),
        (
            "busybox@sha256:fffffffffffffffffffffffffffffff",
            E(K::InvalidFormat),
        ),
        (
            "busybox@md5:ffffffffffffffffffffffffffffffff",
            E(K::InvalidDigest),
        ),
        ("busybox@sha256:{H}@sha256:{H}", E(K::InvalidFormat)),
        ("busybox@{H}", E(K::InvalidFormat)),
        ("ubuntu:latest:x", E(K::InvalidFormat)),
        ("docker.io/Library/x", E(K::NameNotLowercase)),
        ("{U64}", E(K::NameNotLowercase)),
        ("B\u{fc}cher", E(K::NameNotLowercase)),
        ("\u{212a}elvin", E(K::NameNotLowercase)),
        ("b\u{fc}/x", E(K::InvalidFormat)),
        ("busy box", E(K::InvalidFormat)),
        ("busybox\n", E(K::InvalidFormat)),
        ("\0", E(K::InvalidFormat)),
        ("-", E(K::InvalidFormat)),
        (".", E(K::InvalidFormat)),
        ("_", E(K::InvalidFormat)),
        ("::::", E(K::InvalidFormat)),
        ("localhost:5000/", E(K::InvalidFormat)),
        ("{A300}", E(K::NameTooLong)),
        // 256 characters, one over the limit (the 255-character rows above pass).
        ("example.com/{A243}a", E(K::NameTooLong)),
        ("{a/x122}ab", E(K::NameTooLong)),
        ("example.com/foo:ta g", E(K::InvalidFormat)),
        ("example.com/foo:t\u{e4}g", E(K::InvalidFormat)),
    ]
}

#[test]
fn normalized_parse_table() {
    let vectors = normalized_vectors();
    assert!(vectors.len() >= 80, "only {} vectors", vectors.len());
    let mut failures = Vec::new();
    for (input, want) in &vectors {
        let input = x(input);
        let got = Reference::parse_normalized(&input);
        match (want, &got) {
            (O(full, domain, path, familiar, tag, digest), Ok(r)) => {
                let (full, domain, path, familiar) = (x(full), x(domain), x(path), x(familiar));
                let tag = tag.map(x);
                let digest = digest.map(x);
                let ok = r.to_string() == full
                    && r.domain() == domain
                    && r.path() == path
                    && r.name() == format!("{domain}/{path}")
                    && r.familiar() == familiar
                    && r.tag().map(str::to_owned) == tag
                    && r.digest().map(Digest::to_string) == digest;
                if !ok {
                    failures.push(format!(
                        "{input:?}: got {r} domain={} path={} familiar={} tag={:?} digest={:?}",
                        r.domain(),
                        r.path(),
                        r.familiar(),
                        r.tag(),
                        r.digest()
                    ));
                    continue;
                }
                // The full form and the familiar form both denote the same reference.
                assert_eq!(
                    Reference::parse_normalized(&full).as_ref(),
                    Ok(r),
                    "{input}"
                );
                // ... except a familiar form that is a bare 64-hex string (`docker.io/<id>`).
                if !is_full_image_id(&familiar) {
                    assert_eq!(
                        Reference::parse_normalized(&familiar).as_ref(),
                        Ok(r),
                        "{input}"
                    );
                }
                assert_eq!(Reference::parse_named(&full).as_ref(), Ok(r), "{input}");
                assert_eq!(&full.parse::<Reference>().unwrap(), r);
            }
            (E(kind), Err(e)) => {
                if e.kind() != *kind {
                    failures.push(format!("{input:?}: want {kind:?}, got {e:?}"));
                }
                assert_eq!(e.input(), input);
                let message = e.to_string();
                assert!(
                    message.contains(&format!("{input:?}")) || message.contains(&input),
                    "error must name the input: {message}"
                );
            }
            (O(full, ..), Err(e)) => {
                failures.push(format!("{input:?}: want {}, got error {e}", x(full)))
            }
            (E(kind), Ok(r)) => failures.push(format!("{input:?}: want {kind:?}, got {r}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn error_messages_carry_upstream_text() {
    let cases = [
        (
            "{ID}",
            "invalid repository name ({ID}), cannot specify 64-byte hexadecimal strings",
        ),
        (
            "Foo/bar",
            "invalid reference format: repository name must be lowercase",
        ),
        ("-x", "invalid reference format"),
        (
            "{A300}",
            "repository name must not be more than 255 characters",
        ),
        ("repo@sha256:{F34}", "sha256 needs 64 hex characters"),
        (
            "validname@invaliddigest:{F64}",
            "unsupported digest algorithm",
        ),
    ];
    for (input, text) in cases {
        let e = Reference::parse_normalized(&x(input)).unwrap_err();
        assert!(e.to_string().contains(&x(text)), "{input}: {e}");
    }
    let e = Reference::parse("").unwrap_err();
    assert_eq!(e.kind(), K::NameEmpty);
    assert!(
        e.to_string()
            .contains("repository name must have at least one component")
    );
}

/// Raw `Parse`: input → (domain, path, tag, digest) or error kind.
#[test]
fn raw_parse_table() {
    type RawWant = Result<
        (
            &'static str,
            &'static str,
            Option<&'static str>,
            Option<&'static str>,
        ),
        K,
    >;
    let cases: Vec<(&str, RawWant)> = vec![
        ("", Err(K::NameEmpty)),
        ("test_com", Ok(("", "test_com", None, None))),
        ("test.com:tag", Ok(("", "test.com", Some("tag"), None))),
        ("test.com:5000", Ok(("", "test.com", Some("5000"), None))),
        ("test:5000/repo", Ok(("test:5000", "repo", None, None))),
        (
            "sub-dom1.foo.com/bar/baz/quux",
            Ok(("sub-dom1.foo.com", "bar/baz/quux", None, None)),
        ),
        (
            "foo/foo_bar.com:8080",
            Ok(("foo", "foo_bar.com", Some("8080"), None)),
        ),
        ("Foo/bar", Ok(("Foo", "bar", None, None))),
        ("foo_bar.com/x", Ok(("", "foo_bar.com/x", None, None))),
        (
            "xn--7o8h.com/myimage:xn--7o8h.com@sha512:{F128}",
            Ok((
                "xn--7o8h.com",
                "myimage",
                Some("xn--7o8h.com"),
                Some("sha512:{F128}"),
            )),
        ),
        (
            "{a/x127}a:tag",
            Ok(("a", "{a/x122}a/a/a/a/a", Some("tag"), None)),
        ),
        ("{ID}", Ok(("", "{ID}", None, None))),
        ("Uppercase:tag", Err(K::NameNotLowercase)),
        ("a//b", Err(K::InvalidFormat)),
        ("a@sha256:{U64}", Err(K::InvalidDigest)),
        ("a/{A255}", Err(K::NameTooLong)),
    ];
    for (input, want) in cases {
        let input = x(input);
        let got = Reference::parse(&input);
        match (want, got) {
            (Ok((domain, path, tag, digest)), Ok(r)) => {
                assert_eq!(r.domain(), x(domain), "{input}");
                assert_eq!(r.path(), x(path), "{input}");
                assert_eq!(r.tag().map(str::to_owned), tag.map(x), "{input}");
                assert_eq!(r.digest().map(Digest::to_string), digest.map(x), "{input}");
                assert_eq!(r.to_string(), input, "raw parse displays as typed");
            }
            (Err(kind), Err(e)) => assert_eq!(e.kind(), kind, "{input}: {e}"),
            (want, got) => panic!("{input}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn docker_ref_table() {
    let cases = [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("example.com/foo", "example.com/foo:latest"),
        ("test:5000/repo:tag@sha256:{H}", "test:5000/repo@sha256:{H}"),
        (
            "busybox:latest@sha256:{H}",
            "docker.io/library/busybox@sha256:{H}",
        ),
        (
            "gcr.io/library/busybox:latest@sha256:{H}",
            "gcr.io/library/busybox@sha256:{H}",
        ),
        ("localhost:5000", "docker.io/library/localhost:5000"),
    ];
    for (input, want) in cases {
        let got = Reference::parse_docker_ref(&x(input)).unwrap();
        assert_eq!(got.to_string(), x(want), "{input}");
    }
}

#[test]
fn parse_named_requires_canonical_form() {
    for ok in [
        "docker.io/library/busybox:latest",
        "quay.io/a/b@sha256:{H}",
        "localhost:5000/x",
    ] {
        assert!(Reference::parse_named(&x(ok)).is_ok(), "{ok}");
    }
    for (input, canonical) in [
        ("busybox", "docker.io/library/busybox"),
        (
            "docker.io/busybox:latest",
            "docker.io/library/busybox:latest",
        ),
        ("index.docker.io/library/x", "docker.io/library/x"),
    ] {
        let e = Reference::parse_named(input).unwrap_err();
        assert_eq!(e.kind(), K::NotCanonical, "{input}");
        assert!(e.to_string().contains(canonical), "{e}");
    }
    assert_eq!(
        Reference::parse_named("Foo/bar").unwrap_err().kind(),
        K::NameNotLowercase
    );
}

#[test]
fn derived_operations() {
    let digest = Digest::parse(&format!("sha256:{H}")).unwrap();
    let r = Reference::parse_normalized("busybox").unwrap();
    assert!(r.is_name_only());
    assert_eq!(
        r.tag_or_latest().to_string(),
        "docker.io/library/busybox:latest"
    );
    assert_eq!(r.api_host(), "registry-1.docker.io");
    let tagged = r.with_tag("1.36").unwrap();
    assert_eq!(tagged.tag_or_latest(), tagged);
    let both = tagged.with_digest(digest.clone());
    assert_eq!(
        both.to_string(),
        format!("docker.io/library/busybox:1.36@sha256:{H}")
    );
    assert_eq!(
        both.without_tag().to_string(),
        format!("docker.io/library/busybox@sha256:{H}")
    );
    assert_eq!(both.without_tag_if_digested(), both.without_tag());
    assert_eq!(tagged.without_tag_if_digested(), tagged);
    assert_eq!(both.without_digest(), tagged);
    assert_eq!(both.trimmed(), r);
    assert_eq!(both.tag_or_latest(), both);
    assert_eq!(r.with_digest(digest.clone()).tag_or_latest().tag(), None);
    assert_eq!(both.familiar(), format!("busybox:1.36@sha256:{H}"));
    assert_eq!(both.familiar_name(), "busybox");
    let e = r.with_tag("bad tag").unwrap_err();
    assert_eq!(e.kind(), K::InvalidTag);
    assert!(e.to_string().contains("invalid tag format") && e.to_string().contains("bad tag"));
    assert_eq!(
        r.with_tag(&"a".repeat(129)).unwrap_err().kind(),
        K::InvalidTag
    );
    assert_eq!(r.with_tag("").unwrap_err().kind(), K::InvalidTag);
    let other = Reference::parse_normalized("localhost:5000/a/b").unwrap();
    assert_eq!(other.api_host(), "localhost:5000");
    assert_eq!(format!("{other:?}"), "Reference(localhost:5000/a/b)");
}

#[test]
fn serde_uses_the_full_string_form() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct W {
        r: Reference,
    }
    let w = W {
        r: Reference::parse_normalized("busybox:1").unwrap(),
    };
    let text = toml::to_string(&w).unwrap();
    assert_eq!(text.trim(), "r = \"docker.io/library/busybox:1\"");
    assert_eq!(toml::from_str::<W>(&text).unwrap(), w);
    assert!(toml::from_str::<W>("r = \"Foo/bar\"").is_err());
}

#[test]
fn tag_grammar_table() {
    let cases = [
        ("latest", true),
        ("_x", true),
        ("1.0-rc.1_A", true),
        ("-x", false),
        (".x", false),
        ("", false),
        ("a:b", false),
        ("a/b", false),
        ("t\u{e4}g", false),
    ];
    for (tag, valid) in cases {
        assert_eq!(is_valid_tag(tag), valid, "{tag}");
    }
    assert!(is_valid_tag(&"a".repeat(128)));
    assert!(!is_valid_tag(&"a".repeat(129)));
}

#[test]
fn image_id_helpers_table() {
    // (input, is_full_image_id, is_id_prefix_candidate)
    let cases: Vec<(String, bool, bool)> = vec![
        (ID.to_owned(), true, true),
        (ID[..63].to_owned(), false, true),
        (ID[..3].to_owned(), false, true),
        (ID[..2].to_owned(), false, false),
        ("beef".to_owned(), false, true),
        ("BEEF".to_owned(), false, false),
        (ID.to_uppercase(), false, false),
        (format!("{ID}0"), false, false),
        (format!("sha256:{ID}"), false, false),
        ("abg".to_owned(), false, false),
        ("image".to_owned(), false, false),
        (String::new(), false, false),
    ];
    for (input, full, prefix) in cases {
        assert_eq!(is_full_image_id(&input), full, "{input}");
        assert_eq!(is_id_prefix_candidate(&input), prefix, "{input}");
    }
}

#[test]
fn short_name_table() {
    let cases: Vec<(String, Result<bool, K>)> = vec![
        ("fedora".into(), Ok(true)),
        ("fedora:latest".into(), Ok(true)),
        ("library/fedora".into(), Ok(true)),
        (format!("busybox@sha256:{H}"), Ok(true)),
        (format!("busybox:latest@sha256:{H}"), Ok(true)),
        ("Foo/bar".into(), Ok(true)),
        ("localhost".into(), Ok(true)),
        ("quay.io/fedora".into(), Ok(false)),
        ("docker.io/fedora".into(), Ok(false)),
        ("localhost/fedora".into(), Ok(false)),
        ("localhost:5000/fedora:latest".into(), Ok(false)),
        (
            "example.foo.this.may.be.garbage.but.maybe.not:1234/fedora:latest".into(),
            Ok(false),
        ),
        (format!("docker.io/library/busybox@sha256:{H}"), Ok(false)),
        ("docker://quay.io/x".into(), Err(K::InvalidFormat)),
    ];
    for (input, want) in cases {
        assert_eq!(is_short_name(&input).map_err(|e| e.kind()), want, "{input}");
    }
}
