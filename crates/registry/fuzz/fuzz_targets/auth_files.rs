//! Fuzzes the credential inputs: auth.json / Docker config.json / legacy `.dockercfg` files,
//! `WWW-Authenticate` challenges and token-server answers. No input may panic, and no lookup may
//! leak a secret into an error. Credential helpers named by a fuzzed file are never found: the
//! target runs them from an empty directory with an empty `PATH`.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use podstore_registry::AuthFiles;
use podstore_registry::auth::{parse_challenge, parse_token_response};

const KEYS: &[&str] = &[
    "docker.io/library/busybox",
    "index.docker.io",
    "quay.io/ns/img",
    "127.0.0.1:5000/a/b",
    "example.org",
];

struct Scratch {
    dir: tempfile::TempDir,
    helpers: tempfile::TempDir,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        // SAFETY: set once, before any helper could be spawned; the target is single-threaded.
        unsafe { std::env::set_var("PATH", "/nonexistent-podstore-fuzz") };
        Scratch {
            dir: tempfile::Builder::new().prefix("fuzz-auth-").tempdir_in("/dev/shm").unwrap(),
            helpers: tempfile::Builder::new().prefix("fuzz-helpers-").tempdir_in("/dev/shm").unwrap(),
        }
    })
}

/// Whether `shown` contains `secret` where it cannot be explained by the username or the
/// struct's own text (short or non-alphanumeric secrets are not judged).
fn leaks(shown: &str, secret: &str, username: &str) -> bool {
    secret.len() >= 12
        && secret.bytes().all(|b| b.is_ascii_alphanumeric())
        && !username.contains(secret)
        && shown.contains(secret)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            let s = scratch();
            let path = s.dir.path().join("auth.json");
            std::fs::write(&path, rest).unwrap();
            let files = AuthFiles::explicit(&path).with_helper_dir(s.helpers.path());
            let legacy = AuthFiles::none()
                .with_file(&path, true)
                .with_helper_dir(s.helpers.path());
            for key in KEYS {
                for files in [&files, &legacy] {
                    match files.lookup(key) {
                        Ok(Some(creds)) => {
                            let shown = format!("{creds:?}");
                            let mut secrets = vec![creds.password.expose()];
                            secrets.extend(creds.identity_token.as_ref().map(|t| t.expose()));
                            for secret in secrets {
                                assert!(!leaks(&shown, secret, &creds.username), "Debug shows a secret");
                            }
                        }
                        Ok(None) => {}
                        Err(e) => assert!(!e.to_string().is_empty()),
                    }
                }
            }
        }
        1 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Some(challenge) = parse_challenge(text) {
                    assert!(!challenge.scheme.is_empty());
                    assert_eq!(challenge.scheme, challenge.scheme.to_ascii_lowercase());
                }
            }
        }
        _ => {
            let now = Instant::now();
            if let Ok(token) = parse_token_response(rest, now) {
                assert!(token.is_valid_at(now));
            }
        }
    }
});
