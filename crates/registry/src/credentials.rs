//! Credential lookup from auth.json / Docker config.json files and `docker-credential-*`
//! helpers, in containers/image's order with per-namespace keys (spec §4).
//!
//! Files searched: an explicit file only (`REGISTRY_AUTH_FILE` through [`AuthFiles::from_env`]),
//! else `$XDG_RUNTIME_DIR/containers/auth.json` (or `/run/containers/<uid>/auth.json`),
//! `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config/containers/auth.json`),
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`) and the legacy `~/.dockercfg`.
//! Inside one file: `credHelpers[host]`, then `auths` from the most to the least specific
//! namespace key, then the normalized-host fallback. Docker's `credsStore` is asked right after
//! `credHelpers`, as Docker does (an extension: containers/image ignores `credsStore`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

use crate::auth::Credentials;
use crate::error::{RegistryError, Result};
use crate::secret::Secret;

#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthFile {
    path: PathBuf,
    legacy: bool,
}

/// The ordered list of auth files to search, and where credential helpers are found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthFiles {
    files: Vec<AuthFile>,
    helper_dir: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    identitytoken: String,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

impl AuthFiles {
    /// The search list for this process: `REGISTRY_AUTH_FILE` alone when set, else the defaults.
    pub fn from_env() -> AuthFiles {
        match std::env::var_os("REGISTRY_AUTH_FILE") {
            Some(p) if !p.is_empty() => AuthFiles::explicit(PathBuf::from(p)),
            _ => AuthFiles::default_search(),
        }
    }

    /// Only this file (CRI-O's `global_auth_file`, podman's `--authfile`).
    pub fn explicit(path: impl Into<PathBuf>) -> AuthFiles {
        AuthFiles {
            files: vec![AuthFile {
                path: path.into(),
                legacy: false,
            }],
            helper_dir: None,
        }
    }

    /// No files at all: every lookup is anonymous.
    pub fn none() -> AuthFiles {
        AuthFiles::default()
    }

    /// containers/image's default list on Linux (§4.2 steps 1–4).
    pub fn default_search() -> AuthFiles {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let home = env("HOME");
        let mut files = Vec::new();
        match env("XDG_RUNTIME_DIR") {
            Some(dir) => {
                if dir.is_dir() {
                    files.push(dir.join("containers/auth.json"));
                } else {
                    tracing::warn!(dir = %dir.display(), "XDG_RUNTIME_DIR does not exist; skipping its auth.json");
                }
            }
            None => {
                let uid = rustix::process::getuid().as_raw();
                files.push(PathBuf::from(format!("/run/containers/{uid}/auth.json")));
            }
        }
        match (env("XDG_CONFIG_HOME"), &home) {
            (Some(x), _) => files.push(x.join("containers/auth.json")),
            (None, Some(h)) => files.push(h.join(".config/containers/auth.json")),
            (None, None) => {}
        }
        match (env("DOCKER_CONFIG"), &home) {
            (Some(d), _) => files.push(d.join("config.json")),
            (None, Some(h)) => files.push(h.join(".docker/config.json")),
            (None, None) => {}
        }
        let mut out: Vec<AuthFile> = files
            .into_iter()
            .map(|path| AuthFile {
                path,
                legacy: false,
            })
            .collect();
        if let Some(h) = home {
            out.push(AuthFile {
                path: h.join(".dockercfg"),
                legacy: true,
            });
        }
        AuthFiles {
            files: out,
            helper_dir: None,
        }
    }

    /// Appends a file to the search list (`legacy` = the old `.dockercfg` format).
    pub fn with_file(mut self, path: impl Into<PathBuf>, legacy: bool) -> AuthFiles {
        self.files.push(AuthFile {
            path: path.into(),
            legacy,
        });
        self
    }

    /// Looks for `docker-credential-*` programs in this directory before `PATH`.
    pub fn with_helper_dir(mut self, dir: impl Into<PathBuf>) -> AuthFiles {
        self.helper_dir = Some(dir.into());
        self
    }

    /// The files searched, in order.
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.path.as_path()).collect()
    }

    /// Credentials for `key` (`host[:port][/namespace...]`, e.g. `quay.io/ns/img`). `Ok(None)` =
    /// anonymous. An unreadable or unparsable file, or a failing helper, is an error.
    pub fn lookup(&self, key: &str) -> Result<Option<Credentials>> {
        validate_key(key)?;
        let registry = key.split('/').next().unwrap_or(key);
        for file in &self.files {
            let text = match std::fs::read(&file.path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(cred_err(
                        key,
                        format!("reading {}: {e}", file.path.display()),
                    ));
                }
            };
            let config: ConfigFile = if file.legacy {
                let auths: BTreeMap<String, AuthEntry> = serde_json::from_slice(&text)
                    .map_err(|e| cred_err(key, format!("parsing {}: {e}", file.path.display())))?;
                ConfigFile {
                    auths,
                    ..ConfigFile::default()
                }
            } else {
                serde_json::from_slice(&text)
                    .map_err(|e| cred_err(key, format!("parsing {}: {e}", file.path.display())))?
            };
            if let Some(found) = self.lookup_in(&config, file, key, registry)? {
                if !found.is_empty() {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    fn lookup_in(
        &self,
        config: &ConfigFile,
        file: &AuthFile,
        key: &str,
        registry: &str,
    ) -> Result<Option<Credentials>> {
        if let Some(helper) = config.cred_helpers.get(registry) {
            return self.run_helper(helper, registry, key);
        }
        if !config.creds_store.is_empty() {
            if let Some(found) = self.run_helper(&config.creds_store, registry, key)? {
                return Ok(Some(found));
            }
        }
        let decode = |entry: &AuthEntry| {
            decode_entry(entry).map_err(|m| cred_err(key, format!("{}: {m}", file.path.display())))
        };
        if !file.legacy {
            let mut candidate = key;
            loop {
                if let Some(entry) = config.auths.get(candidate) {
                    return decode(entry).map(Some);
                }
                match candidate.rfind('/') {
                    Some(i) => candidate = &candidate[..i],
                    None => break,
                }
            }
        } else if let Some(entry) = config.auths.get(registry) {
            return decode(entry).map(Some);
        }
        let wanted = normalize_registry(registry);
        for (k, entry) in &config.auths {
            if normalize_auth_key(k, file.legacy) == wanted {
                return decode(entry).map(Some);
            }
        }
        Ok(None)
    }

    fn helper_program(&self, name: &str) -> PathBuf {
        let program = format!("docker-credential-{name}");
        if let Some(dir) = &self.helper_dir {
            let p = dir.join(&program);
            if p.exists() {
                return p;
            }
        }
        PathBuf::from(program)
    }

    fn run_helper(&self, name: &str, registry: &str, key: &str) -> Result<Option<Credentials>> {
        let program = self.helper_program(name);
        let mut child = Command::new(&program)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| cred_err(key, format!("running {}: {e}", program.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(registry.as_bytes())
                .map_err(|e| cred_err(key, format!("writing to {}: {e}", program.display())))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| cred_err(key, format!("waiting for {}: {e}", program.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            if stdout.trim() == "credentials not found in native keychain" {
                return Ok(None);
            }
            return Err(cred_err(
                key,
                format!(
                    "{} get failed ({}): {}",
                    program.display(),
                    out.status,
                    stdout.trim()
                ),
            ));
        }
        let answer: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|e| {
            cred_err(
                key,
                format!("parsing the answer of {}: {e}", program.display()),
            )
        })?;
        if answer.username == "<token>" {
            return Ok(Some(Credentials::identity_token("", answer.secret)));
        }
        Ok(Some(Credentials::basic(answer.username, answer.secret)))
    }
}

fn cred_err(key: &str, message: String) -> RegistryError {
    RegistryError::Credentials {
        key: key.to_owned(),
        message,
    }
}

fn validate_key(key: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(RegistryError::InvalidInput {
            what: "credentials lookup key",
            input: key.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with("http://") || key.starts_with("https://") {
        return bad("must not contain a scheme");
    }
    if key.contains('@') {
        return bad("must not contain a digest");
    }
    if let Some(i) = key.find('/') {
        if key[i..].contains(':') {
            return bad("must not contain a tag");
        }
    }
    Ok(())
}

/// Decodes one `auths` entry: base64 `user:password`; no `:` → empty credentials.
fn decode_entry(entry: &AuthEntry) -> std::result::Result<Credentials, String> {
    if entry.auth.is_empty() {
        return Ok(Credentials::default());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry.auth.trim())
        .map_err(|e| format!("invalid base64 in \"auth\": {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let Some((user, pass)) = text.split_once(':') else {
        return Ok(Credentials::default());
    };
    let pass = pass.trim_matches('\0');
    let mut creds = Credentials::basic(user, Secret::new(pass));
    if !entry.identitytoken.is_empty() {
        creds.identity_token = Some(Secret::new(entry.identitytoken.clone()));
    }
    Ok(creds)
}

fn normalize_registry(registry: &str) -> String {
    match registry {
        "registry-1.docker.io" | "docker.io" => "index.docker.io".to_owned(),
        r => r.to_owned(),
    }
}

fn normalize_auth_key(key: &str, legacy: bool) -> String {
    let stripped = key
        .strip_prefix("http://")
        .or_else(|| key.strip_prefix("https://"));
    let host = match stripped {
        Some(rest) => rest.split('/').next().unwrap_or(rest),
        None if legacy => key.split('/').next().unwrap_or(key),
        None => key,
    };
    normalize_registry(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn write(dir: &Path, name: &str, json: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, json).unwrap();
        p
    }

    fn user_of(files: &AuthFiles, key: &str) -> Option<String> {
        files.lookup(key).unwrap().map(|c| c.username)
    }

    #[test]
    fn namespace_table() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let json = format!(
            r#"{{"auths":{{"example.org/repo":{{"auth":"{}"}},"example.org":{{"auth":"{}"}},
            "docker.io/vendor":{{"auth":"{}"}},"docker.io":{{"auth":"{}"}},
            "docker.io/library/busybox":{{"auth":"{}"}},"docker.io/library":{{"auth":"{}"}}}}}}"#,
            b64("A:a"),
            b64("B:b"),
            b64("C:c"),
            b64("D:d"),
            b64("E:e"),
            b64("F:f")
        );
        let files = AuthFiles::explicit(write(dir.path(), "auth.json", &json));
        let cases = [
            ("example.org/repo/image", Some("A")),
            ("example.org/repo", Some("A")),
            ("example.org/image", Some("B")),
            ("docker.io/library/busybox", Some("E")),
            ("docker.io/library/notbusybox", Some("F")),
            ("docker.io/vendor/product", Some("C")),
            ("docker.io/other-vendor/other-product", Some("D")),
            ("quay.io/x", None),
        ];
        for (key, want) in cases {
            assert_eq!(user_of(&files, key).as_deref(), want, "{key}");
        }
        let pw = files.lookup("example.org/repo").unwrap().unwrap().password;
        assert_eq!(pw.expose(), "a");
    }

    #[test]
    fn file_order_shadowing_and_fallback() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let first = write(
            dir.path(),
            "first.json",
            &format!(
                r#"{{"auths":{{"quay.io/x":{{}},"localhost:5001":{{"auth":"{}"}}}}}}"#,
                b64("one:1")
            ),
        );
        let second = write(
            dir.path(),
            "second.json",
            &format!(
                r#"{{"auths":{{"quay.io":{{"auth":"{}"}},"https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
                b64("two:2"),
                b64("hub:h")
            ),
        );
        let files = AuthFiles::none()
            .with_file(dir.path().join("missing.json"), false)
            .with_file(first, false)
            .with_file(second, false);
        let cases = [
            ("quay.io/x", Some("two")),
            ("localhost:5001/a/b", Some("one")),
            ("docker.io/library/busybox", Some("hub")),
            ("registry.example/none", None),
        ];
        for (key, want) in cases {
            assert_eq!(user_of(&files, key).as_deref(), want, "{key}");
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let broken = AuthFiles::explicit(write(dir.path(), "broken.json", "{not json"));
        let err = broken.lookup("quay.io/x").unwrap_err();
        assert!(err.to_string().contains("broken.json"), "{err}");
        let badb64 = AuthFiles::explicit(write(
            dir.path(),
            "b.json",
            r#"{"auths":{"quay.io":{"auth":"!!!"}}}"#,
        ));
        assert!(
            badb64
                .lookup("quay.io/x")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        for key in [
            "https://quay.io",
            "quay.io/foo:tag",
            "quay.io/foo@sha256:00",
            "",
        ] {
            assert!(AuthFiles::none().lookup(key).is_err(), "{key}");
        }
        assert!(
            AuthFiles::none()
                .lookup("localhost:5000/foo")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn identity_token_and_legacy() {
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let nil = "00000000-0000-0000-0000-000000000000:";
        let files = AuthFiles::explicit(write(
            dir.path(),
            "a.json",
            &format!(
                r#"{{"auths":{{"acr.example":{{"auth":"{}","identitytoken":"refresh"}}}}}}"#,
                b64(nil)
            ),
        ));
        let c = files.lookup("acr.example/x").unwrap().unwrap();
        assert_eq!(c.identity_token.unwrap().expose(), "refresh");
        let legacy = AuthFiles::none().with_file(
            write(
                dir.path(),
                "dockercfg",
                &format!(
                    r#"{{"https://index.docker.io/v1/":{{"auth":"{}"}}}}"#,
                    b64("old:o")
                ),
            ),
            true,
        );
        assert_eq!(
            user_of(&legacy, "docker.io/library/x").as_deref(),
            Some("old")
        );
    }

    #[test]
    fn credential_helpers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().tempdir_in("/dev/shm").unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread -r host || true\ncase \"$host\" in\n  helped.example) echo '{\"ServerURL\":\"helped.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}';;\n  token.example) echo '{\"Username\":\"<token>\",\"Secret\":\"idtok\"}';;\n  store.example) echo '{\"Username\":\"su\",\"Secret\":\"ss\"}';;\n  broken.example) echo 'boom'; exit 3;;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = write(
            dir.path(),
            "config.json",
            r#"{"credHelpers":{"helped.example":"fake","token.example":"fake","broken.example":"fake","absent.example":"fake","nohelper.example":"does-not-exist"},"credsStore":"fake","auths":{"store.example":{}}}"#,
        );
        let files = AuthFiles::explicit(config).with_helper_dir(dir.path());
        let c = files.lookup("helped.example/ns/img").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("hu", "hs"));
        let c = files.lookup("token.example/x").unwrap().unwrap();
        assert_eq!(c.identity_token.unwrap().expose(), "idtok");
        let c = files.lookup("store.example/x").unwrap().unwrap();
        assert_eq!(c.username, "su");
        assert!(files.lookup("absent.example/x").unwrap().is_none());
        let err = files.lookup("broken.example/x").unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        assert!(files.lookup("nohelper.example/x").is_err());
    }
}
