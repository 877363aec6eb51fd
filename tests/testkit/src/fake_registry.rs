//! An in-process fake registry on 127.0.0.1 for faults a real registry won't produce: a tiny
//! HTTP/1.1 server (one request per connection) whose replies are chosen by a handler closure,
//! with injected faults (reset, truncation, stall, trickle), plus a registry model (manifests,
//! blobs, Range, Basic / bearer auth, token endpoint) that handlers fall back to. Shared by the
//! registry client's tests and the image service's full-pull tests. Digests are
//! `sha256:<hex>` strings (the testkit depends on no podstore crate).
//!
//! ```no_run
//! use podstore_testkit::fake_registry::{Auth, Fault, Registry, blob_reply, serve};
//!
//! # async fn example() {
//! let mut model = Registry::new(Auth::None);
//! let digest = model.blob(b"layer bytes");
//! let blob_path = format!("/v2/team/app/blobs/{digest}");
//! // the blob breaks off after 4 bytes; everything else is served by the model
//! let server = serve(move |req| {
//!     if req.path() == blob_path {
//!         return blob_reply(req, podstore_testkit::fake_registry::Body::Bytes(
//!             std::sync::Arc::new(b"layer bytes".to_vec()),
//!         ))
//!         .fault(Fault::ResetAfter(4));
//!     }
//!     model.handle(req)
//! })
//! .await;
//! println!("docker://{}/team/app:latest", server.host());
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The method (`GET`, `HEAD`, …).
    pub method: String,
    /// Path with query.
    pub target: String,
    /// Header names lowercased, in order.
    pub headers: Vec<(String, String)>,
    /// The request body (as long as its `Content-Length`).
    pub body: Vec<u8>,
    /// The server port it arrived on.
    pub port: u16,
}

impl Request {
    /// The first header named `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// Every header named `name` (lowercase), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The target's path (without the query).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    /// The target's query (after `?`; empty if none).
    pub fn query(&self) -> &str {
        self.target.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

/// A response body.
#[derive(Clone)]
pub enum Body {
    /// These bytes.
    Bytes(Arc<Vec<u8>>),
    /// `len` bytes repeating `pattern` (byte `i` is `pattern[i % pattern.len()]`), produced while
    /// sending so that no copy of the whole body exists.
    Generated {
        /// Body length.
        len: u64,
        /// The repeated bytes (not empty).
        pattern: Arc<Vec<u8>>,
    },
}

impl Body {
    /// The body's length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Generated { len, .. } => *len,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What goes wrong while sending a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The body is sent whole.
    None,
    /// Send this many body bytes, then reset the connection.
    ResetAfter(u64),
    /// Send this many body bytes, then close cleanly.
    CloseAfter(u64),
    /// Send this many body bytes, then send nothing more (for a long time).
    StallAfter(u64),
    /// Accept the request and never answer.
    NoResponse,
    /// Send the body one byte at a time, this many milliseconds apart (a slowloris).
    TrickleMillis(u64),
}

/// A reply a handler chooses.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers besides `Connection: close` and `Content-Length`.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// Byte range of `body` to send.
    pub range: Option<(u64, u64)>,
    /// What goes wrong while sending it.
    pub fault: Fault,
    /// Send no Content-Length (close-delimited body).
    pub no_content_length: bool,
    /// Delay before the body, to keep a request in flight.
    pub delay: Duration,
}

impl Reply {
    /// An empty reply with this status.
    pub fn new(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Body::Bytes(Arc::new(Vec::new())),
            range: None,
            fault: Fault::None,
            no_content_length: false,
            delay: Duration::ZERO,
        }
    }
    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
    /// Sets the body.
    pub fn bytes(mut self, b: impl Into<Vec<u8>>) -> Reply {
        self.body = Body::Bytes(Arc::new(b.into()));
        self
    }
    /// A JSON body with its `Content-Type`.
    pub fn json(self, v: &str) -> Reply {
        self.header("Content-Type", "application/json")
            .bytes(v.as_bytes().to_vec())
    }
    /// Sets the fault.
    pub fn fault(mut self, f: Fault) -> Reply {
        self.fault = f;
        self
    }
}

/// Chooses the reply to a request.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A running fake server.
pub struct Server {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// Every request received, in order.
    pub requests: Arc<Mutex<Vec<Request>>>,
    /// Replies being sent now.
    pub active: Arc<AtomicUsize>,
    /// The most replies ever sent at once.
    pub max_active: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.addr.port())
    }
    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    /// A copy of the requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path().starts_with(prefix))
            .collect()
    }
}

/// Starts a server on 127.0.0.1 (a free port) answering with `handler`; it stops when the
/// [`Server`] is dropped. Must run inside a tokio runtime with I/O and time enabled.
///
/// # Panics
///
/// When no loopback port can be bound.
pub async fn serve(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Server {
    let (listener, addr) = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => match l.local_addr() {
            Ok(a) => (l, a),
            Err(e) => panic!("fake registry: local address: {e}"),
        },
        Err(e) => panic!("fake registry: binding 127.0.0.1:0: {e}"),
    };
    let requests = Arc::new(Mutex::new(Vec::new()));
    let active = Arc::new(AtomicUsize::new(0));
    let max_active = Arc::new(AtomicUsize::new(0));
    let handler: Handler = Arc::new(handler);
    let (r, a, m) = (requests.clone(), active.clone(), max_active.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (h, r, a, m) = (handler.clone(), r.clone(), a.clone(), m.clone());
            tokio::spawn(async move {
                let _ = connection(stream, addr.port(), h, r, a, m).await;
            });
        }
    });
    Server {
        addr,
        requests,
        active,
        max_active,
        task,
    }
}

async fn connection(
    mut stream: TcpStream,
    port: u16,
    handler: Handler,
    log: Arc<Mutex<Vec<Request>>>,
    active: Arc<AtomicUsize>,
    max_active: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Ok(());
        }
        if head.is_empty() && byte[0] == 0x16 {
            // A TLS ClientHello: this server speaks plain HTTP only.
            return Ok(());
        }
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
        if head.len() > 64 * 1024 {
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let request = Request {
        method,
        target,
        headers,
        body,
        port,
    };
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(request.clone());
    let reply = handler(&request);
    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
    max_active.fetch_max(now, Ordering::SeqCst);
    let result = send_reply(&mut stream, reply).await;
    active.fetch_sub(1, Ordering::SeqCst);
    result
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn send_reply(stream: &mut TcpStream, reply: Reply) -> std::io::Result<()> {
    if reply.fault == Fault::NoResponse {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(());
    }
    let (start, end) = reply.range.unwrap_or((0, reply.body.len()));
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status)
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !reply.no_content_length {
        head.push_str(&format!("Content-Length: {}\r\n", end - start));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let limit = match reply.fault {
        Fault::ResetAfter(n) | Fault::CloseAfter(n) | Fault::StallAfter(n) => (start + n).min(end),
        _ => end,
    };
    if let Fault::TrickleMillis(ms) = reply.fault {
        for at in start..limit {
            write_body(stream, &reply.body, at, at + 1).await?;
            stream.flush().await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    } else {
        write_body(stream, &reply.body, start, limit).await?;
    }
    match reply.fault {
        Fault::ResetAfter(_) => {
            stream.flush().await?;
            #[allow(deprecated)]
            stream.set_linger(Some(Duration::ZERO))?;
            Ok(())
        }
        Fault::StallAfter(_) => {
            stream.flush().await?;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        }
        _ => {
            stream.flush().await?;
            stream.shutdown().await
        }
    }
}

/// A deterministic pseudo-random pattern of `len` bytes (splitmix64 of `seed`).
pub fn pattern(seed: u64, len: usize) -> Arc<Vec<u8>> {
    let mut out = Vec::with_capacity(len + 8);
    let mut state = seed;
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    Arc::new(out)
}

/// The digest of a generated body, computed by streaming.
pub fn generated_digest(pattern: &[u8], len: u64) -> String {
    let mut d = Sha256::new();
    let mut off = 0u64;
    while off < len {
        let at = (off % pattern.len() as u64) as usize;
        let n = ((len - off) as usize).min(pattern.len() - at);
        d.update(&pattern[at..at + n]);
        off += n as u64;
    }
    format!("sha256:{}", hex::encode(d.finalize()))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn write_body(
    stream: &mut TcpStream,
    body: &Body,
    start: u64,
    end: u64,
) -> std::io::Result<()> {
    match body {
        Body::Bytes(b) => stream.write_all(&b[start as usize..end as usize]).await,
        Body::Generated { pattern, .. } => {
            let mut off = start;
            while off < end {
                let at = (off % pattern.len() as u64) as usize;
                let n = ((end - off) as usize)
                    .min(pattern.len() - at)
                    .min(256 * 1024);
                stream.write_all(&pattern[at..at + n]).await?;
                off += n as u64;
            }
            Ok(())
        }
    }
}

/// How the fake registry authenticates.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Anonymous access.
    None,
    /// HTTP Basic with these credentials.
    Basic {
        /// User name.
        user: String,
        /// Password.
        pass: String,
    },
    /// Bearer tokens from `/token` on the same server; `creds` required there if set.
    Bearer {
        /// Credentials the token endpoint requires (Basic), if any.
        creds: Option<(String, String)>,
        /// The token handed out and accepted.
        token: String,
    },
}

/// A registry model: manifests by "repo:ref", blobs by digest.
#[derive(Clone)]
pub struct Registry {
    /// `"repo:tag"` and `"repo:digest"` → (media type, bytes).
    pub manifests: HashMap<String, (String, Vec<u8>)>,
    /// Digest → body.
    pub blobs: HashMap<String, Body>,
    /// How requests authenticate.
    pub auth: Auth,
    /// Free for handlers to record a port in.
    pub port: Arc<AtomicUsize>,
}

impl Registry {
    /// An empty registry.
    pub fn new(auth: Auth) -> Registry {
        Registry {
            manifests: HashMap::new(),
            blobs: HashMap::new(),
            auth,
            port: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Adds a manifest under its tag and its digest; returns the digest.
    pub fn manifest(&mut self, repo: &str, tag: &str, media_type: &str, bytes: &[u8]) -> String {
        let d = sha256_digest(bytes);
        self.manifests.insert(
            format!("{repo}:{tag}"),
            (media_type.to_owned(), bytes.to_vec()),
        );
        self.manifests.insert(
            format!("{repo}:{d}"),
            (media_type.to_owned(), bytes.to_vec()),
        );
        d
    }

    /// Adds a blob; returns its digest.
    pub fn blob(&mut self, bytes: &[u8]) -> String {
        let d = sha256_digest(bytes);
        self.blobs
            .insert(d.to_string(), Body::Bytes(Arc::new(bytes.to_vec())));
        d
    }

    fn challenge(&self, port: u16) -> Option<String> {
        match &self.auth {
            Auth::None => None,
            Auth::Basic { .. } => Some("Basic realm=\"fake\"".to_owned()),
            Auth::Bearer { .. } => Some(format!(
                "Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake-registry\""
            )),
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        let got = req.header("authorization").unwrap_or("");
        match &self.auth {
            Auth::None => true,
            Auth::Basic { user, pass } => {
                got == format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
                )
            }
            Auth::Bearer { token, .. } => got == format!("Bearer {token}"),
        }
    }

    fn unauthorized(&self, req: &Request) -> Reply {
        let mut r = Reply::new(401)
            .json(r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#);
        if let Some(c) = self.challenge(req.port) {
            r = r.header("WWW-Authenticate", &c);
        }
        r
    }

    /// Answers `req` as a registry would: `/v2/`, `/token`, manifests, blobs (with `Range`).
    pub fn handle(&self, req: &Request) -> Reply {
        let path = req.path().to_owned();
        if path == "/token" {
            let Auth::Bearer { creds, token } = &self.auth else {
                return Reply::new(404);
            };
            if let Some((u, p)) = creds {
                let want = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
                );
                if req.header("authorization") != Some(want.as_str()) {
                    return Reply::new(401).json(r#"{"details":"incorrect username or password"}"#);
                }
            }
            return Reply::new(200).json(&format!(r#"{{"token":"{token}","expires_in":300}}"#));
        }
        if path == "/v2/" {
            if matches!(self.auth, Auth::None) {
                return Reply::new(200).json("{}");
            }
            return self.unauthorized(req);
        }
        if !self.authorized(req) {
            return self.unauthorized(req);
        }
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Reply::new(404);
        };
        if let Some((repo, reference)) = rest.split_once("/manifests/") {
            return match self.manifests.get(&format!("{repo}:{reference}")) {
                Some((mt, bytes)) => Reply::new(200)
                    .header("Content-Type", mt)
                    .bytes(bytes.clone()),
                None => Reply::new(404).json(
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
                ),
            };
        }
        if let Some((_repo, digest)) = rest.split_once("/blobs/") {
            let Some(body) = self.blobs.get(digest) else {
                return Reply::new(404)
                    .json(r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}"#);
            };
            return blob_reply(req, body.clone());
        }
        Reply::new(404)
    }
}

/// A blob reply honouring a `Range: bytes=N-` header with a 206.
pub fn blob_reply(req: &Request, body: Body) -> Reply {
    let len = body.len();
    let mut reply = Reply::new(200).header("Content-Type", "application/octet-stream");
    if let Some(start) = req
        .header("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|s| s.parse::<u64>().ok())
    {
        reply = Reply::new(206)
            .header("Content-Type", "application/octet-stream")
            .header(
                "Content-Range",
                &format!("bytes {start}-{}/{len}", len.saturating_sub(1)),
            );
        reply.range = Some((start.min(len), len));
    }
    reply.body = body;
    reply
}
