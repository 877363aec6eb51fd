//! The registry harness against the real `docker-registry`, validated with curl and skopeo:
//! every mode serves the pushed manifests with the fixture digests, credentials work through
//! an auth file, a wrong password gets 401, TLS verifies against the test CA, and a dropped
//! registry is gone with its directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podstore_testkit::fixtures::FixtureSet;
use podstore_testkit::http::{self, Body};
use podstore_testkit::registry::{Registry, RegistryMode, RegistrySet};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::process::{Command, Output};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().unwrap()
}

fn ok(out: &Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

fn curl_tls(ca: &Path, url: &str) -> Output {
    Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Accept: {ACCEPT}"), url])
        .output()
        .unwrap()
}

#[test]
fn every_mode_serves_every_pushed_manifest_with_its_fixture_digest() {
    let set = RegistrySet::shared().unwrap();
    let fixtures = FixtureSet::shared().unwrap();
    assert_eq!(set.pushed().len(), fixtures.images().len());
    for pushed in set.pushed() {
        let image = fixtures.image(&pushed.tag).unwrap();
        assert_eq!(pushed.digest, image.manifest_digest);
        let (repo, tag) = pushed.reference.rsplit_once(':').unwrap();
        let path = format!("/v2/{repo}/manifests/{tag}");
        for registry in [&set.plain, &set.basic_auth] {
            let r = registry
                .request("GET", &path, &[("Accept", ACCEPT)], Body::Empty)
                .unwrap();
            assert_eq!(
                r.status,
                200,
                "{} {path}: {}",
                registry.host_port(),
                r.text()
            );
            assert_eq!(sha256(&r.body), image.manifest_digest, "{path}");
            assert_eq!(
                r.header("Content-Type"),
                Some(image.manifest_media_type.as_str())
            );
            assert_eq!(
                r.header("Docker-Content-Digest"),
                Some(image.manifest_digest.as_str())
            );
        }
        let tls = &set.tls;
        let body = ok(
            &curl_tls(
                &tls.ca_cert_path().unwrap(),
                &format!("{}{path}", tls.url()),
            ),
            &path,
        );
        assert_eq!(sha256(&body), image.manifest_digest, "TLS {path}");
    }
}

#[test]
fn blobs_are_served_byte_for_byte() {
    let set = RegistrySet::shared().unwrap();
    let fixtures = FixtureSet::shared().unwrap();
    let image = fixtures.image("multilayer").unwrap();
    for layer in &image.layers {
        let r = set
            .basic_auth
            .request(
                "GET",
                &format!("/v2/testkit/multilayer/blobs/{}", layer.digest),
                &[],
                Body::Empty,
            )
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(sha256(&r.body), layer.digest);
        assert_eq!(r.body.len() as u64, layer.size);
    }
}

#[test]
fn skopeo_reads_all_three_front_doors() {
    let set = RegistrySet::shared().unwrap();
    let fixtures = FixtureSet::shared().unwrap();
    let authfile = set.basic_auth.auth_file().unwrap();
    let cert_dir = set.tls.cert_dir().unwrap();
    for tag in [
        "busybox",
        "busybox-v2s2",
        "busybox-zstd",
        "multiarch",
        "multilayer",
    ] {
        let image = fixtures.image(tag).unwrap();
        let reference = image.registry_reference();
        let plain = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &set.plain.docker_reference(&reference),
        ]);
        assert_eq!(
            sha256(&ok(&plain, tag)),
            image.manifest_digest,
            "plain {tag}"
        );
        let auth = skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--authfile",
            authfile.to_str().unwrap(),
            &set.basic_auth.docker_reference(&reference),
        ]);
        assert_eq!(sha256(&ok(&auth, tag)), image.manifest_digest, "auth {tag}");
        let tls = skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            cert_dir.to_str().unwrap(),
            &set.tls.docker_reference(&reference),
        ]);
        assert_eq!(sha256(&ok(&tls, tag)), image.manifest_digest, "tls {tag}");
    }
    // Not raw: skopeo picks linux/amd64 from the index and reads its config.
    let multiarch = fixtures.image("multiarch").unwrap();
    let out = skopeo(&[
        "inspect",
        "--override-arch",
        "amd64",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        &set.tls.docker_reference("testkit/multiarch:latest"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&ok(&out, "inspect multiarch")).unwrap();
    // skopeo reports the digest of what the reference names (the index)...
    assert_eq!(json["Digest"], multiarch.manifest_digest.as_str());
    // ...and the layers and config of the platform it chose.
    assert_eq!(json["Architecture"], "amd64");
    let amd64 = &multiarch.manifests[0];
    let layers: Vec<&str> = json["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let expected: Vec<&str> = amd64.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(layers, expected);
}

#[test]
fn credentials_are_required_and_a_wrong_password_gets_401() {
    let set = RegistrySet::shared().unwrap();
    let url = format!(
        "http://{}/v2/testkit/busybox/manifests/latest",
        set.basic_auth.host_port()
    );
    let anonymous = http::request("GET", &url, &[], Body::Empty).unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("WWW-Authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    use base64::Engine as _;
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("testkit:wrong-password")
    );
    let r = http::request("GET", &url, &[("Authorization", &wrong)], Body::Empty).unwrap();
    assert_eq!(r.status, 401);
    let right = set
        .basic_auth
        .request(
            "GET",
            "/v2/testkit/busybox/manifests/latest",
            &[("Accept", ACCEPT)],
            Body::Empty,
        )
        .unwrap();
    assert_eq!(right.status, 200);
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "testkit:wrong-password",
        &set.basic_auth.docker_reference("testkit/busybox:latest"),
    ]);
    assert!(!out.status.success(), "skopeo accepted a wrong password");
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("unauthorized") || err.contains("401"), "{err}");
}

#[test]
fn tls_is_verified_against_the_test_ca_only() {
    let set = RegistrySet::shared().unwrap();
    let url = format!("{}/v2/", set.tls.url());
    // The system trust store does not know the test CA.
    let out = Command::new("curl")
        .args(["-sS", "--fail", &url])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "curl trusted the test CA without --cacert"
    );
    let ok_out = curl_tls(&set.tls.ca_cert_path().unwrap(), &url);
    ok(&ok_out, "curl --cacert");
    let certs_d = set.tls.certs_d_dir().unwrap().unwrap();
    assert!(certs_d.join(set.tls.host_port()).join("ca.crt").is_file());
    // The leaf is not a CA (rustls rejects a CA used as an end entity).
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(set.tls.dir().join("certs/server.crt"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&ok(&text, "openssl x509")).into_owned();
    assert!(
        text.contains("CA:FALSE") && text.contains("IP Address:127.0.0.1"),
        "{text}"
    );
}

#[test]
fn a_standalone_registry_pushes_serves_and_is_gone_after_drop() {
    let fixtures = FixtureSet::shared().unwrap();
    let image = fixtures.image("multiarch").unwrap();
    let registry = Registry::start(RegistryMode::Tls).unwrap();
    let digest = registry
        .push(fixtures, "multiarch", "standalone/index:v1")
        .unwrap();
    assert_eq!(digest, image.manifest_digest);
    let body = ok(
        &curl_tls(
            &registry.ca_cert_path().unwrap(),
            &format!("{}/v2/standalone/index/manifests/v1", registry.url()),
        ),
        "curl index",
    );
    assert_eq!(sha256(&body), image.manifest_digest);
    // Pushing again skips existing blobs and gives the same digest.
    assert_eq!(
        registry
            .push(fixtures, "multiarch", "standalone/index:v1")
            .unwrap(),
        digest
    );
    let (pid, dir) = (registry.pid(), registry.dir().to_path_buf());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(registry);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.is_empty(), "registry {pid} still there: {stat}");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn a_standalone_basic_auth_registry_takes_pushes_with_credentials() {
    let fixtures = FixtureSet::shared().unwrap();
    let image = fixtures.image("busybox-v2s2").unwrap();
    let registry = Registry::start(RegistryMode::BasicAuth).unwrap();
    assert_eq!(registry.username(), Some("testkit"));
    let digest = registry
        .push(fixtures, "busybox-v2s2", "solo/busybox")
        .unwrap();
    assert_eq!(digest, image.manifest_digest);
    let authfile = registry.auth_file().unwrap();
    let auth: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&authfile).unwrap()).unwrap();
    assert!(auth["auths"][registry.host_port()]["auth"].is_string());
    let out = skopeo(&[
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        authfile.to_str().unwrap(),
        &registry.docker_reference("solo/busybox:latest"),
    ]);
    assert_eq!(sha256(&ok(&out, "solo/busybox")), image.manifest_digest);
}
