//! The real Debian `docker-registry` (distribution 2.8) on 127.0.0.1, in three modes (plain
//! HTTP, htpasswd basic auth, TLS with a test CA), and pushing fixture images to it with their
//! exact digests.
//!
//! Each registry runs under a small `sh` watchdog that holds the read end of a pipe whose write
//! end only this process has: when the [`Registry`] is dropped, or when the test process exits
//! in any way (so even registries held in statics), the pipe closes and the watchdog stops
//! exactly that registry and removes its temporary directory. Nothing else is ever signalled.

use crate::fixtures::{FixtureSet, ImageFixture};
use crate::http::{self, Body, HttpResponse};
use anyhow::{Context, Result, bail};
use base64::Engine as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// User name accepted by a [`RegistryMode::BasicAuth`] registry.
pub const USERNAME: &str = "testkit";
/// Password accepted by a [`RegistryMode::BasicAuth`] registry.
pub const PASSWORD: &str = "testkit-password";

/// How a registry is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegistryMode {
    /// Plain HTTP, no authentication.
    Plain,
    /// Plain HTTP with htpasswd (bcrypt) basic authentication: [`USERNAME`] / [`PASSWORD`].
    BasicAuth,
    /// HTTPS with a leaf certificate (SAN `IP:127.0.0.1`, `DNS:localhost`) signed by a
    /// per-registry test CA; no authentication.
    Tls,
}

impl RegistryMode {
    fn name(self) -> &'static str {
        match self {
            RegistryMode::Plain => "plain",
            RegistryMode::BasicAuth => "auth",
            RegistryMode::Tls => "tls",
        }
    }

    /// The status a plain-HTTP `GET /v2/` gets once the registry serves: 200, 401, or 400
    /// (Go's answer to plain HTTP on a TLS port).
    fn ready_status(self) -> u16 {
        match self {
            RegistryMode::Plain => 200,
            RegistryMode::BasicAuth => 401,
            RegistryMode::Tls => 400,
        }
    }
}

/// One running `docker-registry` process on 127.0.0.1.
#[derive(Debug)]
pub struct Registry {
    mode: RegistryMode,
    port: u16,
    dir: PathBuf,
    storage: PathBuf,
    cleanup: Option<PathBuf>,
    config: PathBuf,
    pid: i32,
    watchdog: Child,
    watchdog_stdin: Option<ChildStdin>,
    /// A plain instance on the same storage, started on the first push to a TLS registry.
    push_door: Mutex<Option<Box<Registry>>>,
}

const WATCHDOG: &str = r#"
"$1" serve "$2" </dev/null >>"$3" 2>&1 &
pid=$!
echo "$pid"
read -r _ignored || true
kill -TERM "$pid" 2>/dev/null
wait "$pid"
if [ -n "$4" ]; then rm -rf -- "$4"; fi
"#;

fn registry_binary() -> PathBuf {
    std::env::var_os("PODSTORE_DOCKER_REGISTRY")
        .map_or_else(|| PathBuf::from("/usr/bin/docker-registry"), PathBuf::from)
}

fn shm_tempdir(prefix: &str) -> Result<PathBuf> {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&base)
        .with_context(|| format!("creating a temporary directory in {}", base.display()))?;
    Ok(dir.keep())
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .with_context(|| format!("running {cmd:?} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn basic_auth_value() -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{PASSWORD}"));
    format!("Basic {token}")
}

impl Registry {
    /// Starts a registry in `mode` with its own storage, in a new temporary directory under
    /// `/dev/shm` that is removed when it stops.
    pub fn start(mode: RegistryMode) -> Result<Registry> {
        let root = shm_tempdir("podstore-registry-")?;
        let storage = root.join("storage");
        let started = Self::spawn(mode, root.clone(), storage, Some(root.clone()));
        if started.is_err() {
            let _ = fs::remove_dir_all(&root);
        }
        started
    }

    /// Starts a registry in `mode` serving the storage root `storage` (shared with other
    /// instances, like the three front doors of [`RegistrySet`]); `storage` is not removed.
    pub fn start_on_storage(mode: RegistryMode, storage: &Path) -> Result<Registry> {
        let root = shm_tempdir("podstore-registry-")?;
        let started = Self::spawn(
            mode,
            root.clone(),
            storage.to_path_buf(),
            Some(root.clone()),
        );
        if started.is_err() {
            let _ = fs::remove_dir_all(&root);
        }
        started
    }

    fn spawn(
        mode: RegistryMode,
        dir: PathBuf,
        storage: PathBuf,
        cleanup: Option<PathBuf>,
    ) -> Result<Registry> {
        let binary = registry_binary();
        if !binary.exists() {
            bail!(
                "{} not found: install the Debian package docker-registry",
                binary.display()
            );
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
        match mode {
            RegistryMode::BasicAuth => write_htpasswd(&dir)?,
            RegistryMode::Tls => write_certificates(&dir)?,
            RegistryMode::Plain => {}
        }
        let mut last_error = None;
        for _attempt in 0..5 {
            let port = free_port()?;
            match Self::spawn_on_port(mode, &dir, &storage, cleanup.clone(), port, &binary)? {
                Ok(registry) => return Ok(registry),
                // Someone took the port between our probe and the registry's bind: retry.
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    /// Outer error: setup failed. Inner error: the port was taken (worth a retry).
    fn spawn_on_port(
        mode: RegistryMode,
        dir: &Path,
        storage: &Path,
        cleanup: Option<PathBuf>,
        port: u16,
        binary: &Path,
    ) -> Result<Result<Registry>> {
        let config = dir.join(format!("config-{port}.yml"));
        fs::write(&config, config_yaml(mode, dir, storage, port))
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join(format!("registry-{port}.log"));
        let cleanup_arg = cleanup
            .as_deref()
            .map_or_else(String::new, |c| c.to_string_lossy().into_owned());
        let mut watchdog = Command::new("sh");
        // Its own process group: a Ctrl-C on the terminal reaches the test process (or
        // `cargo xtask demo`), not the watchdog, which would otherwise die in `read` and leave
        // the registry running; the pipe closing still stops it when we exit in any way.
        watchdog.process_group(0);
        let mut watchdog = watchdog
            .arg("-c")
            .arg(WATCHDOG)
            .arg("podstore-testkit-registry")
            .arg(binary)
            .arg(&config)
            .arg(&log)
            .arg(&cleanup_arg)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting sh for docker-registry")?;
        let stdin = watchdog.stdin.take();
        let pid_line = watchdog.stdout.take().map(|out| {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            line
        });
        let pid: i32 = match pid_line.as_deref().map(str::trim).map(str::parse) {
            Some(Ok(pid)) => pid,
            _ => {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
                bail!("the registry watchdog did not report a pid: {pid_line:?}");
            }
        };
        let registry = Registry {
            mode,
            port,
            dir: dir.to_path_buf(),
            storage: storage.to_path_buf(),
            cleanup,
            config,
            pid,
            watchdog,
            watchdog_stdin: stdin,
            push_door: Mutex::new(None),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !alive(pid) {
                let text = fs::read_to_string(&log).unwrap_or_default();
                let mut registry = registry;
                registry.keep_dir_on_drop();
                if text.contains("address already in use") {
                    return Ok(Err(anyhow::anyhow!(
                        "127.0.0.1:{port} already in use: {text}"
                    )));
                }
                bail!(
                    "docker-registry ({mode:?}, 127.0.0.1:{port}) exited:\n{}",
                    text.trim()
                );
            }
            let probe = http::request(
                "GET",
                &format!("http://127.0.0.1:{port}/v2/"),
                &[],
                Body::Empty,
            );
            if let Ok(r) = probe {
                if r.status == mode.ready_status() {
                    return Ok(Ok(registry));
                }
            }
            if Instant::now() > deadline {
                let text = fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "docker-registry ({mode:?}, 127.0.0.1:{port}) not ready after 20 s:\n{}",
                    text.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// When a failed start is dropped, keep the shared directory (retries reuse it).
    fn keep_dir_on_drop(&mut self) {
        self.cleanup = None;
    }

    /// The mode it runs in.
    pub fn mode(&self) -> RegistryMode {
        self.mode
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`: the registry host in image references and auth files.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>` or `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        let scheme = if self.mode == RegistryMode::Tls {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<reference>`: an image reference for podman or a registry client.
    pub fn image_reference(&self, reference: &str) -> String {
        format!("{}/{reference}", self.host_port())
    }

    /// `docker://127.0.0.1:<port>/<reference>` for skopeo.
    pub fn docker_reference(&self, reference: &str) -> String {
        format!("docker://{}/{reference}", self.host_port())
    }

    /// The process id of the `docker-registry` process.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The registry's storage root (`storage.filesystem.rootdirectory`).
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// Its private directory (config, log, credentials, certificates).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("registry-{}.log", self.port))
    }

    /// The user name for a basic-auth registry (`None` otherwise).
    pub fn username(&self) -> Option<&'static str> {
        (self.mode == RegistryMode::BasicAuth).then_some(USERNAME)
    }

    /// The password for a basic-auth registry (`None` otherwise).
    pub fn password(&self) -> Option<&'static str> {
        (self.mode == RegistryMode::BasicAuth).then_some(PASSWORD)
    }

    /// A containers `auth.json` (`{"auths":{"127.0.0.1:PORT":{"auth":"<base64 user:pass>"}}}`)
    /// for `--authfile` / `REGISTRY_AUTH_FILE`; written on first call. For a registry without
    /// authentication the credentials are simply ignored by the server.
    pub fn auth_file(&self) -> Result<PathBuf> {
        let path = self.dir.join(format!("auth-{}.json", self.port));
        if !path.exists() {
            self.write_auth_file(&path, USERNAME, PASSWORD)?;
        }
        Ok(path)
    }

    /// Writes a containers `auth.json` at `path` holding `username:password` for this
    /// registry (e.g. a wrong password, to test refusals).
    pub fn write_auth_file(&self, path: &Path, username: &str, password: &str) -> Result<()> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        let json = serde_json::json!({"auths": {self.host_port(): {"auth": token}}});
        fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The test CA certificate (PEM) a TLS registry's certificate is signed by.
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        (self.mode == RegistryMode::Tls).then(|| self.dir.join("certs").join("ca.crt"))
    }

    /// A directory holding only `ca.crt`: what skopeo and podman take as `--cert-dir`.
    pub fn cert_dir(&self) -> Option<PathBuf> {
        (self.mode == RegistryMode::Tls).then(|| self.dir.join("cert-dir"))
    }

    /// A `certs.d`-style directory: `<returned>/127.0.0.1:<port>/ca.crt`, as in
    /// `/etc/containers/certs.d`. Written on first call.
    pub fn certs_d_dir(&self) -> Result<Option<PathBuf>> {
        let Some(ca) = self.ca_cert_path() else {
            return Ok(None);
        };
        let root = self.dir.join("certs.d");
        let host = root.join(self.host_port());
        fs::create_dir_all(&host).with_context(|| format!("creating {}", host.display()))?;
        fs::copy(&ca, host.join("ca.crt")).with_context(|| format!("copying {}", ca.display()))?;
        Ok(Some(root))
    }

    /// Sends a request to this registry over plain HTTP, with basic credentials for a
    /// basic-auth registry. Not available for a TLS registry (use curl or skopeo there).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Result<HttpResponse> {
        if self.mode == RegistryMode::Tls {
            bail!(
                "the testkit HTTP client speaks plain HTTP only; 127.0.0.1:{} is TLS",
                self.port
            );
        }
        let auth = basic_auth_value();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        if self.mode == RegistryMode::BasicAuth {
            all.push(("Authorization", &auth));
        }
        let url = if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("http://127.0.0.1:{}{path}", self.port)
        };
        http::request(method, &url, &all, body)
    }

    /// Pushes the fixture image (or index with its per-platform images) tagged `tag` in
    /// `fixtures` as `reference` (`repository:tag`, no host), uploading every blob it lacks
    /// and `PUT`ting the manifests with their exact bytes and media types, so digests are
    /// the fixture's. Returns the manifest digest the registry reports. A TLS registry is
    /// pushed through a plain instance started on the same storage.
    pub fn push(&self, fixtures: &FixtureSet, tag: &str, reference: &str) -> Result<String> {
        if self.mode == RegistryMode::Tls {
            let mut door = self
                .push_door
                .lock()
                .map_err(|_| anyhow::anyhow!("push door lock poisoned"))?;
            if door.is_none() {
                let registry = Self::spawn(
                    RegistryMode::Plain,
                    self.dir.join("push-door"),
                    self.storage.clone(),
                    None,
                )?;
                *door = Some(Box::new(registry));
            }
            return match door.as_ref() {
                Some(plain) => plain.push(fixtures, tag, reference),
                None => bail!("push door missing"),
            };
        }
        let (repository, manifest_tag) = match reference.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (reference, "latest"),
        };
        let image = fixtures.image(tag)?;
        self.push_image(fixtures, image, repository, manifest_tag)
    }

    fn push_image(
        &self,
        fixtures: &FixtureSet,
        image: &ImageFixture,
        repository: &str,
        manifest_ref: &str,
    ) -> Result<String> {
        for child in &image.manifests {
            self.push_image(fixtures, child, repository, &child.manifest_digest)?;
        }
        for digest in image
            .config_digest
            .iter()
            .chain(image.layers.iter().map(|l| &l.digest))
        {
            self.push_blob(fixtures, repository, digest)?;
        }
        let bytes = fixtures.read_blob(&image.manifest_digest)?;
        let response = self.request(
            "PUT",
            &format!("/v2/{repository}/manifests/{manifest_ref}"),
            &[("Content-Type", &image.manifest_media_type)],
            Body::Bytes(&bytes),
        )?;
        if response.status != 201 {
            bail!(
                "PUT manifest {repository}:{manifest_ref} ({}) on {}: {} {}",
                image.tag,
                self.host_port(),
                response.status,
                response.text()
            );
        }
        let digest = response
            .header("Docker-Content-Digest")
            .unwrap_or_default()
            .to_string();
        if digest != image.manifest_digest {
            bail!(
                "registry {} stored {repository}:{manifest_ref} as {digest}, expected {}",
                self.host_port(),
                image.manifest_digest
            );
        }
        Ok(digest)
    }

    fn push_blob(&self, fixtures: &FixtureSet, repository: &str, digest: &str) -> Result<()> {
        let head = self.request(
            "HEAD",
            &format!("/v2/{repository}/blobs/{digest}"),
            &[],
            Body::Empty,
        )?;
        if head.status == 200 {
            return Ok(());
        }
        let start = self.request(
            "POST",
            &format!("/v2/{repository}/blobs/uploads/"),
            &[],
            Body::Empty,
        )?;
        let location = match (start.status, start.header("Location")) {
            (202, Some(l)) => l.to_string(),
            _ => bail!(
                "starting upload of {digest} to {repository} on {}: {} {}",
                self.host_port(),
                start.status,
                start.text()
            ),
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{separator}digest={}", digest.replace(':', "%3A"));
        let path = fixtures.blob_path(digest);
        let put = self.request(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream")],
            Body::File(&path),
        )?;
        if put.status != 201 {
            bail!(
                "uploading {digest} to {repository} on {}: {} {}",
                self.host_port(),
                put.status,
                put.text()
            );
        }
        Ok(())
    }

    /// Stops the registry now (dropping it does the same).
    pub fn stop(self) {}
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Ok(mut door) = self.push_door.lock() {
            door.take();
        }
        // Closing the pipe tells the watchdog to stop the registry and clean up.
        drop(self.watchdog_stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.watchdog.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    // The watchdog is stuck: kill our registry (checking the pid is still
                    // the registry serving our config), then the watchdog.
                    let ours = fs::read(format!("/proc/{}/cmdline", self.pid))
                        .map(|c| {
                            String::from_utf8_lossy(&c).contains(&*self.config.to_string_lossy())
                        })
                        .unwrap_or(false);
                    if ours {
                        if let Some(pid) = rustix::process::Pid::from_raw(self.pid) {
                            let _ =
                                rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                        }
                    }
                    let _ = self.watchdog.kill();
                    let _ = self.watchdog.wait();
                    break;
                }
            }
        }
        if let Some(dir) = &self.cleanup {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn config_yaml(mode: RegistryMode, dir: &Path, storage: &Path, port: u16) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
  fields:
    service: podstore-testkit-{name}
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: podstore-testkit-not-secret
  headers:
    X-Content-Type-Options: [nosniff]
",
        name = mode.name(),
        storage = storage.display(),
    );
    match mode {
        RegistryMode::Tls => yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            dir.join("certs/server.crt").display(),
            dir.join("certs/server.key").display()
        )),
        RegistryMode::BasicAuth => yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: podstore-testkit\n    path: {}\n",
            dir.join("htpasswd").display()
        )),
        RegistryMode::Plain => {}
    }
    yaml
}

fn write_htpasswd(dir: &Path) -> Result<()> {
    let path = dir.join("htpasswd");
    if path.exists() {
        return Ok(());
    }
    let line = run(Command::new("htpasswd").args(["-Bbn", USERNAME, PASSWORD]))
        .context("htpasswd (Debian package apache2-utils)")?;
    fs::write(&path, line).with_context(|| format!("writing {}", path.display()))
}

fn write_certificates(dir: &Path) -> Result<()> {
    let certs = dir.join("certs");
    if certs.join("server.crt").exists() {
        return Ok(());
    }
    fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(Command::new("openssl")
        .current_dir(&certs)
        .args(["req", "-x509"])
        .args(ec)
        .args([
            "-sha256",
            "-days",
            "3650",
            "-subj",
            "/CN=podstore-testkit test CA",
        ])
        .args(["-keyout", "ca.key", "-out", "ca.crt"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]))
    .context("creating the test CA (Debian package openssl)")?;
    run(Command::new("openssl")
        .current_dir(&certs)
        .arg("req")
        .args(ec)
        .args(["-sha256", "-subj", "/CN=127.0.0.1"])
        .args(["-keyout", "server.key", "-out", "server.csr"]))
    .context("creating the server key")?;
    fs::write(
        certs.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    run(Command::new("openssl")
        .current_dir(&certs)
        .args([
            "x509",
            "-req",
            "-sha256",
            "-days",
            "3650",
            "-in",
            "server.csr",
        ])
        .args(["-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"])
        .args(["-extfile", "server.ext", "-out", "server.crt"]))
    .context("signing the server certificate")?;
    let cert_dir = dir.join("cert-dir");
    fs::create_dir_all(&cert_dir)?;
    fs::copy(certs.join("ca.crt"), cert_dir.join("ca.crt"))?;
    Ok(())
}

/// One fixture pushed by a [`RegistrySet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedImage {
    /// Fixture tag in the OCI layout (`busybox-zstd`).
    pub tag: String,
    /// `repository:tag` in the registry (`testkit/busybox:zstd`).
    pub reference: String,
    /// Manifest (or index) digest, as pushed.
    pub digest: String,
}

/// Three registries over ONE storage root (plain, basic auth, TLS), so a single push serves
/// all three, with every fixture of a [`FixtureSet`] pushed under
/// [`ImageFixture::registry_reference`].
#[derive(Debug)]
pub struct RegistrySet {
    // Dropped in declaration order: the plain instance last, as it owns the shared root.
    /// The TLS front door.
    pub tls: Registry,
    /// The basic-auth front door.
    pub basic_auth: Registry,
    /// The plain HTTP front door (pushes go through it).
    pub plain: Registry,
    pushed: Vec<PushedImage>,
}

impl RegistrySet {
    /// Starts the three registries on a fresh shared storage and pushes every image of
    /// `fixtures`.
    pub fn start(fixtures: &FixtureSet) -> Result<RegistrySet> {
        let root = shm_tempdir("podstore-registries-")?;
        let storage = root.join("storage");
        let started = (|| {
            let plain = Registry::spawn(
                RegistryMode::Plain,
                root.join("plain"),
                storage.clone(),
                Some(root.clone()),
            )?;
            let basic_auth = Registry::spawn(
                RegistryMode::BasicAuth,
                root.join("auth"),
                storage.clone(),
                Some(root.join("auth")),
            )?;
            let tls = Registry::spawn(
                RegistryMode::Tls,
                root.join("tls"),
                storage.clone(),
                Some(root.join("tls")),
            )?;
            let mut set = RegistrySet {
                tls,
                basic_auth,
                plain,
                pushed: Vec::new(),
            };
            for image in fixtures.images() {
                let reference = image.registry_reference();
                let digest = set.plain.push(fixtures, &image.tag, &reference)?;
                set.pushed.push(PushedImage {
                    tag: image.tag.clone(),
                    reference,
                    digest,
                });
            }
            Ok(set)
        })();
        if started.is_err() {
            let _ = fs::remove_dir_all(&root);
        }
        started
    }

    /// The process-wide set over [`FixtureSet::shared`], started on first use and stopped
    /// (with its storage removed) when the process exits.
    pub fn shared() -> Result<&'static RegistrySet> {
        static SHARED: OnceLock<std::result::Result<RegistrySet, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                FixtureSet::shared()
                    .and_then(RegistrySet::start)
                    .map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("starting the shared registries: {e}"))
    }

    /// The registry for `mode`.
    pub fn get(&self, mode: RegistryMode) -> &Registry {
        match mode {
            RegistryMode::Plain => &self.plain,
            RegistryMode::BasicAuth => &self.basic_auth,
            RegistryMode::Tls => &self.tls,
        }
    }

    /// All three, plain first.
    pub fn all(&self) -> [&Registry; 3] {
        [&self.plain, &self.basic_auth, &self.tls]
    }

    /// What was pushed, in fixture order.
    pub fn pushed(&self) -> &[PushedImage] {
        &self.pushed
    }

    /// The shared storage root.
    pub fn storage_dir(&self) -> &Path {
        self.plain.storage_dir()
    }
}
