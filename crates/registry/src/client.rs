//! `RegistryClient`: one registry endpoint (host, scheme, TLS, credentials). Owns the `/v2/`
//! ping and scheme detection, Basic and bearer-token authentication with a token cache, request
//! retries (connection errors, 5xx, 429 with `Retry-After`), manual redirects that drop
//! `Authorization` when the host changes, the per-registry request semaphore, and manifest GETs
//! with the 4 MiB cap, media-type checks and digest verification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use podstore_reference::Digest;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

use crate::auth::{BearerToken, Challenge, Credentials, parse_challenge, parse_token_response};
use crate::error::{RegistryError, Result};
use crate::media::{self, ManifestKind};
use crate::platform::{IndexEntry, PlatformSelector, parse_index_entries};
use crate::tls::TlsMaterial;

/// Retry policy for connection errors, 5xx and 429 answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (1 = no retry).
    pub max_attempts: u32,
    /// First backoff; doubles after each wait.
    pub initial_backoff: Duration,
    /// Cap on any wait, `Retry-After` included.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Tunables shared by the clients of one [`crate::Registries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// `User-Agent` header.
    pub user_agent: String,
    /// Concurrent requests per registry host (blob bodies included).
    pub max_concurrent_requests: usize,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// No bytes (or no response) for this long → [`RegistryError::Stalled`].
    pub stall_timeout: Duration,
    /// Slowest accepted body transfer, in bytes per second averaged over each stall-timeout
    /// window: a slower trickle (a slowloris) → [`RegistryError::TooSlow`]. 0 disables it.
    pub min_transfer_rate: u64,
    /// Wait before re-requesting an interrupted blob with `Range`.
    pub resume_delay: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Size of the fixed buffer a blob is written to the sink in (default 256 KiB: a pull
    /// streams several layers at once and each may queue a few of these buffers).
    pub write_buffer_size: usize,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            user_agent: concat!("podstore/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_concurrent_requests: 6,
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(60),
            min_transfer_rate: 1024,
            resume_delay: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            write_buffer_size: 256 * 1024,
        }
    }
}

/// How to reach one registry endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointConfig {
    /// The registry as written in references: `host[:port]` (`docker.io` maps to
    /// `registry-1.docker.io` for API calls).
    pub registry: String,
    /// Skip TLS verification and allow the plain-HTTP fallback.
    pub insecure: bool,
    /// Credentials (`None` = anonymous).
    pub credentials: Option<Credentials>,
    /// CA certificates and client identity from certs.d.
    pub tls: TlsMaterial,
}

/// A tag or a digest: what to fetch a manifest by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ManifestTarget {
    /// A tag.
    Tag(String),
    /// A digest; the manifest is verified against it.
    Digest(Digest),
}

impl std::fmt::Display for ManifestTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestTarget::Tag(t) => f.write_str(t),
            ManifestTarget::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A manifest as received: exact bytes, media type and digest (computed locally).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The exact bytes served.
    pub bytes: Vec<u8>,
    /// What kind of manifest (from `Content-Type`).
    pub kind: ManifestKind,
    /// sha256 (or the requested digest's algorithm) of `bytes`.
    pub digest: Digest,
}

impl Manifest {
    /// The media type string.
    pub fn media_type(&self) -> &'static str {
        self.kind.media_type()
    }

    /// The entries of an index / manifest list (error for an image manifest).
    pub fn index_entries(&self) -> Result<Vec<IndexEntry>> {
        if !self.kind.is_index() {
            return Err(RegistryError::InvalidManifest {
                reference: self.digest.to_string(),
                reason: "not an index or manifest list".to_owned(),
            });
        }
        parse_index_entries(&self.bytes, &self.digest.to_string())
    }
}

#[derive(Debug, Clone)]
struct PingInfo {
    scheme: &'static str,
    challenges: Vec<Challenge>,
}

/// What a request is about, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject<'a> {
    Manifest(&'a str),
    Blob(&'a Digest),
}

/// A client for one registry endpoint. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct RegistryClient {
    registry: String,
    api_host: String,
    insecure: bool,
    http: reqwest::Client,
    credentials: Option<Credentials>,
    ping: OnceCell<PingInfo>,
    tokens: Mutex<HashMap<String, BearerToken>>,
    warnings_seen: Mutex<std::collections::HashSet<String>>,
    permits: Arc<Semaphore>,
    pub(crate) options: ClientOptions,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("registry", &self.registry)
            .field("api_host", &self.api_host)
            .field("insecure", &self.insecure)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// A response together with the concurrency permit it holds until dropped.
pub(crate) struct Held {
    pub(crate) response: reqwest::Response,
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl RegistryClient {
    /// A client with its own request semaphore of `options.max_concurrent_requests`.
    pub fn new(endpoint: EndpointConfig, options: ClientOptions) -> Result<RegistryClient> {
        let permits = Arc::new(Semaphore::new(options.max_concurrent_requests.max(1)));
        RegistryClient::with_semaphore(endpoint, options, permits)
    }

    /// A client sharing `permits` with other clients of the same registry.
    pub fn with_semaphore(
        endpoint: EndpointConfig,
        options: ClientOptions,
        permits: Arc<Semaphore>,
    ) -> Result<RegistryClient> {
        let registry = endpoint.registry.clone();
        validate_registry(&registry)?;
        let tls_err = |message: String| RegistryError::Tls {
            registry: registry.clone(),
            message,
        };
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(options.user_agent.clone())
            .danger_accept_invalid_certs(endpoint.insecure);
        for pem in &endpoint.tls.ca_pems {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| tls_err(format!("CA certificate in {:?}: {e}", endpoint.tls.dir)))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let Some(pem) = &endpoint.tls.identity_pem {
            let id = reqwest::Identity::from_pem(pem).map_err(|e| {
                tls_err(format!("client certificate in {:?}: {e}", endpoint.tls.dir))
            })?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(|e| tls_err(error_chain(&e)))?;
        let api_host = if registry == "docker.io" {
            "registry-1.docker.io".to_owned()
        } else {
            registry.clone()
        };
        Ok(RegistryClient {
            registry,
            api_host,
            insecure: endpoint.insecure,
            http,
            credentials: endpoint.credentials.filter(|c| !c.is_empty()),
            ping: OnceCell::new(),
            tokens: Mutex::new(HashMap::new()),
            warnings_seen: Mutex::new(std::collections::HashSet::new()),
            permits,
            options,
        })
    }

    /// The registry as written in references (`host[:port]`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The scheme the ping settled on (`https` or `http`), once pinged.
    pub fn scheme(&self) -> Option<&'static str> {
        self.ping.get().map(|p| p.scheme)
    }

    /// Pings `/v2/` (once per client) and returns the scheme in use.
    pub async fn ping(&self) -> Result<&'static str> {
        Ok(self.ping_info().await?.scheme)
    }

    async fn ping_info(&self) -> Result<&PingInfo> {
        self.ping.get_or_try_init(|| self.do_ping()).await
    }

    async fn do_ping(&self) -> Result<PingInfo> {
        let mut schemes = vec!["https"];
        if self.insecure {
            schemes.push("http");
        }
        let mut last = String::new();
        for scheme in schemes {
            let url = format!("{scheme}://{}/v2/", self.api_host);
            let mut backoff = self.options.retry.initial_backoff;
            let mut attempt = 0;
            let outcome = loop {
                attempt += 1;
                let req = self
                    .http
                    .get(&url)
                    .header("Docker-Distribution-API-Version", "registry/2.0");
                match tokio::time::timeout(self.options.stall_timeout, req.send()).await {
                    Err(_) => {
                        break Err(format!(
                            "{url}: no response in {:?}",
                            self.options.stall_timeout
                        ));
                    }
                    Ok(Err(e)) => break Err(format!("{url}: {}", error_chain(&e))),
                    Ok(Ok(resp)) => {
                        let status = resp.status();
                        if status == StatusCode::TOO_MANY_REQUESTS
                            && attempt < self.options.retry.max_attempts
                        {
                            let wait =
                                retry_wait(resp.headers(), backoff, self.options.retry.max_backoff);
                            tokio::time::sleep(wait).await;
                            backoff = backoff
                                .saturating_mul(2)
                                .min(self.options.retry.max_backoff);
                            continue;
                        }
                        if status == StatusCode::OK || status == StatusCode::UNAUTHORIZED {
                            let challenges = resp
                                .headers()
                                .get_all(header::WWW_AUTHENTICATE)
                                .iter()
                                .filter_map(|v| v.to_str().ok())
                                .filter_map(parse_challenge)
                                .collect();
                            break Ok(PingInfo { scheme, challenges });
                        }
                        break Err(format!("{url}: unexpected HTTP status {status}"));
                    }
                }
            };
            match outcome {
                Ok(info) => {
                    tracing::debug!(registry = %self.registry, scheme, "ping succeeded");
                    return Ok(info);
                }
                Err(e) => {
                    tracing::debug!(registry = %self.registry, error = %e, "ping failed");
                    last = e;
                }
            }
        }
        Err(RegistryError::Ping {
            registry: self.registry.clone(),
            message: last,
        })
    }

    /// The `Authorization` value for requests about `repository`, per the ping's challenges.
    async fn authorization(
        &self,
        repository: &str,
        extra_scope: Option<&str>,
    ) -> Result<Option<HeaderValue>> {
        let ping = self.ping_info().await?;
        let Some(challenge) = ping
            .challenges
            .iter()
            .find(|c| c.scheme == "basic" || c.scheme == "bearer")
        else {
            return Ok(None);
        };
        let value = if challenge.scheme == "basic" {
            let (user, pass) = match &self.credentials {
                Some(c) => (c.username.as_str(), c.password.expose()),
                None => ("", ""),
            };
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            format!("Basic {encoded}")
        } else {
            let token = self
                .bearer_token(challenge, repository, extra_scope)
                .await?;
            format!("Bearer {}", token.token.expose())
        };
        let mut v = HeaderValue::from_str(&value).map_err(|_| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: repository.to_owned(),
            message: "credentials or token contain characters not allowed in an HTTP header"
                .to_owned(),
        })?;
        v.set_sensitive(true);
        Ok(Some(v))
    }

    async fn bearer_token(
        &self,
        challenge: &Challenge,
        repository: &str,
        extra_scope: Option<&str>,
    ) -> Result<BearerToken> {
        let mut scopes = vec![format!("repository:{repository}:pull")];
        if let Some(extra) = extra_scope.filter(|s| !s.is_empty()) {
            scopes.push(extra.to_owned());
        }
        let realm = challenge.param("realm").unwrap_or_default();
        let service = challenge.param("service").unwrap_or_default();
        let cache_key = format!("{realm}\n{service}\n{}", scopes.join(" "));
        if let Ok(cache) = self.tokens.lock() {
            if let Some(t) = cache.get(&cache_key) {
                if t.is_valid_at(Instant::now()) {
                    return Ok(t.clone());
                }
            }
        }
        let unauthorized = |message: String| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            repository: repository.to_owned(),
            message,
        };
        if realm.is_empty() {
            return Err(unauthorized(
                "missing realm in bearer auth challenge".to_owned(),
            ));
        }
        let mut url = Url::parse(realm).map_err(|e| RegistryError::InvalidInput {
            what: "bearer realm",
            input: realm.to_owned(),
            reason: e.to_string(),
        })?;
        let creds = self.credentials.clone().unwrap_or_default();
        let request = match &creds.identity_token {
            Some(refresh) if !refresh.is_empty() => {
                let mut form: Vec<(&str, &str)> = Vec::new();
                if !service.is_empty() {
                    form.push(("service", service));
                }
                for scope in &scopes {
                    form.push(("scope", scope));
                }
                form.push(("grant_type", "refresh_token"));
                form.push(("refresh_token", refresh.expose()));
                form.push(("client_id", "containers/image"));
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{k}={}", url_encode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.http
                    .post(url)
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if !creds.username.is_empty() {
                        q.append_pair("account", &creds.username);
                    }
                    if !service.is_empty() {
                        q.append_pair("service", service);
                    }
                    for scope in &scopes {
                        q.append_pair("scope", scope);
                    }
                }
                let mut req = self.http.get(url);
                if !creds.username.is_empty() && !creds.password.is_empty() {
                    req = req.basic_auth(&creds.username, Some(creds.password.expose()));
                }
                req
            }
        };
        let started = Instant::now();
        let resp = tokio::time::timeout(self.options.stall_timeout, request.send())
            .await
            .map_err(|_| RegistryError::Stalled {
                registry: self.registry.clone(),
                repository: repository.to_owned(),
                what: format!("bearer token from {realm}"),
                seconds: self.options.stall_timeout.as_secs(),
                bytes: 0,
            })?
            .map_err(|e| RegistryError::Transport {
                url: realm.to_owned(),
                message: error_chain(&e),
            })?;
        let status = resp.status();
        let body = read_limited(resp, 1024 * 1024, &self.options)
            .await
            .map_err(|e| RegistryError::Transport {
                url: realm.to_owned(),
                message: e,
            })?;
        match status {
            StatusCode::OK => {}
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                return Err(unauthorized(format!(
                    "unable to retrieve auth token: invalid username/password: {}",
                    registry_error_text(status, &body)
                )));
            }
            StatusCode::TOO_MANY_REQUESTS => {
                return Err(RegistryError::Http {
                    method: "GET",
                    url: realm.to_owned(),
                    status: status.as_u16(),
                    message: "too many requests to registry".to_owned(),
                });
            }
            _ => {
                return Err(RegistryError::Http {
                    method: "GET",
                    url: realm.to_owned(),
                    status: status.as_u16(),
                    message: format!(
                        "requesting bearer token: {}",
                        registry_error_text(status, &body)
                    ),
                });
            }
        }
        let token = parse_token_response(&body, started).map_err(|m| RegistryError::Transport {
            url: realm.to_owned(),
            message: m,
        })?;
        if let Ok(mut cache) = self.tokens.lock() {
            cache.insert(cache_key, token.clone());
        }
        Ok(token)
    }

    /// Sends an authenticated GET of `/v2/<repository>/<suffix>`, retrying connection errors,
    /// 5xx and 429, and following redirects. The returned response may have any other status.
    pub(crate) async fn get(
        &self,
        repository: &str,
        suffix: &str,
        extra: HeaderMap,
    ) -> Result<Held> {
        let scheme = self.ping_info().await?.scheme;
        let url_text = format!("{scheme}://{}/v2/{repository}/{suffix}", self.api_host);
        let url = Url::parse(&url_text).map_err(|e| RegistryError::InvalidInput {
            what: "request URL",
            input: url_text.clone(),
            reason: e.to_string(),
        })?;
        let policy = self.options.retry.clone();
        let mut backoff = policy.initial_backoff;
        let mut attempt = 0u32;
        let mut extra_scope: Option<String> = None;
        loop {
            attempt += 1;
            let auth = self
                .authorization(repository, extra_scope.as_deref())
                .await?;
            let permit = Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| RegistryError::Transport {
                    url: url_text.clone(),
                    message: "request semaphore closed".to_owned(),
                })?;
            let last_error;
            let mut wait = backoff;
            match self
                .send_following_redirects(url.clone(), &extra, auth)
                .await
            {
                Ok(response) => {
                    self.log_warnings(response.headers());
                    let status = response.status();
                    if status == StatusCode::UNAUTHORIZED && attempt == 1 && extra_scope.is_none() {
                        if let Some(scope) = insufficient_scope(response.headers()) {
                            tracing::debug!(url = %url_text, %scope, "insufficient_scope: retrying with the extra scope");
                            extra_scope = Some(scope);
                            drop(permit);
                            continue;
                        }
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                        wait = retry_wait(response.headers(), backoff, policy.max_backoff);
                        last_error = format!("HTTP status {status}");
                    } else {
                        return Ok(Held {
                            response,
                            _permit: permit,
                        });
                    }
                }
                Err(SendError::Retryable(message)) => last_error = message,
                Err(SendError::Fatal(e)) => return Err(e),
            }
            drop(permit);
            if attempt >= policy.max_attempts {
                return Err(RegistryError::TooManyRetries {
                    url: url_text,
                    attempts: attempt,
                    last: last_error,
                });
            }
            tracing::info!(url = %url_text, attempt, error = %last_error, wait_ms = wait.as_millis() as u64, "retrying");
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2).min(policy.max_backoff);
        }
    }

    /// Logs `Warning: 299 - "text"` headers, once per distinct text per client.
    fn log_warnings(&self, headers: &HeaderMap) {
        for value in headers.get_all(header::WARNING) {
            let Some(text) = value.to_str().ok().and_then(parse_warning_299) else {
                continue;
            };
            let first = self
                .warnings_seen
                .lock()
                .map(|mut seen| seen.insert(text.clone()))
                .unwrap_or(false);
            if first {
                tracing::warn!(registry = %self.registry, "warning from registry: {text}");
            }
        }
    }

    /// GETs an external URL (a descriptor's `urls`) with no credentials at all, following
    /// redirects; one attempt, under the registry's request semaphore.
    pub(crate) async fn get_external(&self, url: Url, extra: HeaderMap) -> Result<Held> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| RegistryError::Transport {
                url: url.to_string(),
                message: "request semaphore closed".to_owned(),
            })?;
        match self
            .send_following_redirects(url.clone(), &extra, None)
            .await
        {
            Ok(response) => Ok(Held {
                response,
                _permit: permit,
            }),
            Err(SendError::Retryable(message)) => Err(RegistryError::Transport {
                url: url.to_string(),
                message,
            }),
            Err(SendError::Fatal(e)) => Err(e),
        }
    }

    async fn send_following_redirects(
        &self,
        mut url: Url,
        extra: &HeaderMap,
        auth: Option<HeaderValue>,
    ) -> std::result::Result<reqwest::Response, SendError> {
        let original_host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let mut auth = auth;
        for _ in 0..=10 {
            let mut req = self
                .http
                .get(url.clone())
                .header("Docker-Distribution-API-Version", "registry/2.0")
                .headers(extra.clone());
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a.clone());
            }
            let response = match tokio::time::timeout(self.options.stall_timeout, req.send()).await
            {
                Err(_) => {
                    return Err(SendError::Fatal(RegistryError::Stalled {
                        registry: self.registry.clone(),
                        repository: String::new(),
                        what: url.to_string(),
                        seconds: self.options.stall_timeout.as_secs(),
                        bytes: 0,
                    }));
                }
                Ok(Err(e)) => return Err(self.classify_send_error(&url, &e)),
                Ok(Ok(r)) => r,
            };
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED
            {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    SendError::Fatal(RegistryError::Redirect {
                        url: url.to_string(),
                        reason: format!("status {} without a Location header", response.status()),
                    })
                })?;
            let next = url.join(location).map_err(|e| {
                SendError::Fatal(RegistryError::Redirect {
                    url: url.to_string(),
                    reason: format!("bad Location {location:?}: {e}"),
                })
            })?;
            let next_host = next.host_str().unwrap_or_default().to_ascii_lowercase();
            if auth.is_some() && !same_or_subdomain(&next_host, &original_host) {
                tracing::debug!(from = %url, to = %next, "redirect to another host: dropping Authorization");
                auth = None;
            }
            url = next;
        }
        Err(SendError::Fatal(RegistryError::Redirect {
            url: url.to_string(),
            reason: "stopped after 10 redirects".to_owned(),
        }))
    }

    fn classify_send_error(&self, url: &Url, e: &reqwest::Error) -> SendError {
        let chain = error_chain(e);
        let lower = chain.to_ascii_lowercase();
        if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
            return SendError::Fatal(RegistryError::Tls {
                registry: self.registry.clone(),
                message: format!("{url}: {chain}"),
            });
        }
        if e.is_builder() {
            return SendError::Fatal(RegistryError::Transport {
                url: url.to_string(),
                message: chain,
            });
        }
        SendError::Retryable(chain)
    }

    /// Maps a non-success response to an error naming the subject; reads the error body.
    pub(crate) async fn status_error(
        &self,
        held: Held,
        repository: &str,
        subject: Subject<'_>,
    ) -> RegistryError {
        let status = held.response.status();
        let url = held.response.url().to_string();
        let body = read_limited(held.response, 1024 * 1024, &self.options)
            .await
            .unwrap_or_default();
        let message = registry_error_text(status, &body);
        let code = first_error_code(&body);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                repository: repository.to_owned(),
                message,
            },
            s if s == StatusCode::NOT_FOUND
                || code.as_deref() == Some("MANIFEST_UNKNOWN")
                || code.as_deref() == Some("BLOB_UNKNOWN") =>
            {
                match subject {
                    Subject::Manifest(r) => RegistryError::ManifestUnknown {
                        registry: self.registry.clone(),
                        repository: repository.to_owned(),
                        reference: r.to_owned(),
                        message,
                    },
                    Subject::Blob(d) => RegistryError::BlobUnknown {
                        registry: self.registry.clone(),
                        repository: repository.to_owned(),
                        digest: d.clone(),
                        message,
                    },
                }
            }
            _ => RegistryError::Http {
                method: "GET",
                url,
                status: status.as_u16(),
                message,
            },
        }
    }

    /// GETs a manifest by tag or digest: `Accept` for OCI and Docker schema2 manifests and
    /// indexes, type from `Content-Type`, at most 4 MiB, verified when fetched by digest.
    /// Schema1 and unknown types are refused.
    pub async fn get_manifest(
        &self,
        repository: &str,
        target: &ManifestTarget,
    ) -> Result<Manifest> {
        validate_repository(repository)?;
        let reference = target.to_string();
        let mut accept = HeaderMap::new();
        for a in media::MANIFEST_ACCEPT {
            accept.append(header::ACCEPT, HeaderValue::from_static(a));
        }
        let held = self
            .get(repository, &format!("manifests/{reference}"), accept)
            .await?;
        if held.response.status() != StatusCode::OK {
            return Err(self
                .status_error(held, repository, Subject::Manifest(&reference))
                .await);
        }
        let content_type = held
            .response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(media::strip_parameters)
            .unwrap_or_default();
        let kind = match ManifestKind::from_media_type(&content_type) {
            Some(k) => k,
            None if media::is_schema1(&content_type) => {
                return Err(RegistryError::UnsupportedSchema1 {
                    registry: self.registry.clone(),
                    repository: repository.to_owned(),
                    reference,
                    media_type: content_type,
                });
            }
            None => {
                return Err(RegistryError::UnsupportedMediaType {
                    registry: self.registry.clone(),
                    repository: repository.to_owned(),
                    reference,
                    media_type: content_type,
                });
            }
        };
        let bytes = self
            .read_capped(held, repository, &reference, media::MAX_MANIFEST_BYTES)
            .await?;
        let digest = match target {
            ManifestTarget::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &bytes);
                if &actual != expected {
                    return Err(RegistryError::DigestMismatch {
                        registry: self.registry.clone(),
                        repository: repository.to_owned(),
                        what: "manifest",
                        expected: expected.clone(),
                        actual,
                    });
                }
                actual
            }
            ManifestTarget::Tag(_) => Digest::sha256_of(&bytes),
        };
        check_manifest_shape(
            &bytes,
            kind,
            &format!("{}/{repository}:{reference}", self.registry),
        )?;
        Ok(Manifest {
            bytes,
            kind,
            digest,
        })
    }

    /// Fetches `target`; when it is an index, chooses the instance for `selector` and fetches it
    /// (verified by the entry's digest). Returns (top-level manifest, image manifest); they are the
    /// same when `target` is not an index.
    pub async fn get_image_manifest(
        &self,
        repository: &str,
        target: &ManifestTarget,
        selector: &PlatformSelector,
    ) -> Result<(Manifest, Manifest)> {
        let top = self.get_manifest(repository, target).await?;
        if !top.kind.is_index() {
            return Ok((top.clone(), top));
        }
        let entries = top.index_entries()?;
        let chosen = selector.choose(top.kind, &entries)?;
        let instance = self
            .get_manifest(repository, &ManifestTarget::Digest(chosen.digest.clone()))
            .await?;
        if instance.kind.is_index() {
            return Err(RegistryError::InvalidManifest {
                reference: format!("{}/{repository}@{}", self.registry, chosen.digest),
                reason:
                    "Unexpectedly received a manifest list instead of a manifest for a single image"
                        .to_owned(),
            });
        }
        Ok((top, instance))
    }

    /// Reads a whole small blob (an image config) into memory, at most `limit` bytes, verified
    /// against `digest`.
    pub async fn fetch_blob_bytes(
        &self,
        repository: &str,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>> {
        validate_repository(repository)?;
        let held = self
            .get(repository, &format!("blobs/{digest}"), HeaderMap::new())
            .await?;
        if held.response.status() != StatusCode::OK {
            return Err(self
                .status_error(held, repository, Subject::Blob(digest))
                .await);
        }
        let bytes = self
            .read_capped(held, repository, &digest.to_string(), limit)
            .await?;
        let actual = Digest::of(digest.algorithm(), &bytes);
        if &actual != digest {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                repository: repository.to_owned(),
                what: "blob",
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    async fn read_capped(
        &self,
        held: Held,
        repository: &str,
        reference: &str,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let too_large = || RegistryError::TooLarge {
            registry: self.registry.clone(),
            repository: repository.to_owned(),
            reference: reference.to_owned(),
            limit,
        };
        if held.response.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut response = held.response;
        let mut out = Vec::new();
        let mut watch = BodyWatch::new(&self.options);
        loop {
            let chunk = match watch.next(response.chunk()).await {
                Watched::Chunk(chunk) => chunk,
                Watched::Failed(e) => {
                    return Err(RegistryError::Transport {
                        url: response.url().to_string(),
                        message: error_chain(&e),
                    });
                }
                other => {
                    return Err(other.into_error(
                        &self.registry,
                        repository,
                        reference,
                        out.len() as u64,
                        self.options.stall_timeout,
                    ));
                }
            };
            let Some(chunk) = chunk else {
                return Ok(out);
            };
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
    }
}

pub(crate) enum SendError {
    Retryable(String),
    Fatal(RegistryError),
}

/// The scope of a Bearer challenge with `error="insufficient_scope"` whose scope has exactly
/// three `:`-separated parts.
fn insufficient_scope(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        .find_map(|c| {
            let scope = c.param("scope")?;
            (c.scheme == "bearer"
                && c.param("error") == Some("insufficient_scope")
                && scope.split(':').count() == 3)
                .then(|| scope.to_owned())
        })
}

/// The text of a `299 - "text"` warning (quoted-pairs unescaped); `None` for any other form,
/// control characters, or anything after the closing quote.
fn parse_warning_299(value: &str) -> Option<String> {
    let quoted = value.strip_prefix("299 - \"")?;
    let mut out = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return chars.as_str().is_empty().then_some(out),
            c if c.is_control() => return None,
            c => out.push(c),
        }
    }
    None
}

/// Go's rule: keep `Authorization` when the new host equals the old one or is a subdomain of it.
fn same_or_subdomain(new_host: &str, original: &str) -> bool {
    new_host == original || new_host.ends_with(&format!(".{original}"))
}

/// The wait before a retry: `Retry-After` (seconds, or an HTTP date in the future) if present,
/// else `backoff`; capped at `max`.
fn retry_wait(headers: &HeaderMap, backoff: Duration, max: Duration) -> Duration {
    let from_header = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let v = v.trim();
            match v.parse::<u64>() {
                Ok(secs) => Some(Duration::from_secs(secs)),
                Err(_) => parse_http_date(v)?
                    .duration_since(std::time::SystemTime::now())
                    .ok(),
            }
        });
    from_header.unwrap_or(backoff).min(max)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn parse_http_date(s: &str) -> Option<std::time::SystemTime> {
    let rest = s.split_once(", ")?.1;
    let mut parts = rest.split(' ');
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, mi, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + mi * 60 + sec).ok()?;
    Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// The error and its sources joined with `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// What [`BodyWatch::next`] saw.
pub(crate) enum Watched<C> {
    /// The next chunk (`None` at the end of the body).
    Chunk(Option<C>),
    /// No bytes for the stall timeout.
    Stalled,
    /// Bytes trickle slower than the minimum rate over a whole stall window.
    TooSlow {
        /// The rate seen in that window, bytes per second.
        rate: u64,
    },
    /// The connection failed.
    Failed(reqwest::Error),
}

impl<C> Watched<C> {
    /// The typed error for [`Watched::Stalled`] / [`Watched::TooSlow`] / [`Watched::Failed`]
    /// (a chunk is not an error; it maps to a stall only if a caller asks).
    pub(crate) fn into_error(
        self,
        registry: &str,
        repository: &str,
        what: &str,
        bytes: u64,
        stall: Duration,
    ) -> RegistryError {
        match self {
            Watched::TooSlow { rate } => RegistryError::TooSlow {
                registry: registry.to_owned(),
                repository: repository.to_owned(),
                what: what.to_owned(),
                rate,
                bytes,
            },
            Watched::Failed(e) => RegistryError::Transport {
                url: e.url().map(ToString::to_string).unwrap_or_default(),
                message: error_chain(&e),
            },
            Watched::Stalled | Watched::Chunk(_) => RegistryError::Stalled {
                registry: registry.to_owned(),
                repository: repository.to_owned(),
                what: what.to_owned(),
                seconds: stall.as_secs(),
                bytes,
            },
        }
    }
}

/// Watches a response body: no chunk for the stall timeout is a stall, and fewer bytes than
/// `min_transfer_rate` per second over a whole stall-timeout window is a slowloris (like curl's
/// low-speed limit), so a body that trickles cannot hold a pull forever.
pub(crate) struct BodyWatch {
    window: Duration,
    min_rate: u64,
    start: tokio::time::Instant,
    bytes: u64,
}

impl BodyWatch {
    pub(crate) fn new(options: &ClientOptions) -> BodyWatch {
        BodyWatch {
            window: options.stall_timeout,
            min_rate: options.min_transfer_rate,
            start: tokio::time::Instant::now(),
            bytes: 0,
        }
    }

    /// The next chunk of `response`, or why there is none.
    pub(crate) async fn next<C: AsRef<[u8]>>(
        &mut self,
        chunk: impl Future<Output = reqwest::Result<Option<C>>>,
    ) -> Watched<C> {
        let chunk = match tokio::time::timeout(self.window, chunk).await {
            Err(_) => return Watched::Stalled,
            Ok(Err(e)) => return Watched::Failed(e),
            Ok(Ok(chunk)) => chunk,
        };
        let Some(chunk) = chunk else {
            return Watched::Chunk(None);
        };
        self.bytes += chunk.as_ref().len() as u64;
        let elapsed = self.start.elapsed();
        if elapsed >= self.window {
            let rate = (self.bytes as f64 / elapsed.as_secs_f64()) as u64;
            if rate < self.min_rate {
                return Watched::TooSlow { rate };
            }
            self.start = tokio::time::Instant::now();
            self.bytes = 0;
        }
        Watched::Chunk(Some(chunk))
    }
}

/// Reads at most `limit` bytes of a body (more is cut off), watched for stalls and trickles.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    options: &ClientOptions,
) -> std::result::Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut watch = BodyWatch::new(options);
    while out.len() < limit {
        match watch.next(response.chunk()).await {
            Watched::Stalled => return Err(format!("no data for {:?}", options.stall_timeout)),
            Watched::TooSlow { rate } => {
                return Err(format!(
                    "body trickled at {rate} bytes/s (minimum {} bytes/s)",
                    options.min_transfer_rate
                ));
            }
            Watched::Failed(e) => return Err(error_chain(&e)),
            Watched::Chunk(None) => break,
            Watched::Chunk(Some(c)) => {
                let take = c.len().min(limit - out.len());
                out.extend_from_slice(&c[..take]);
            }
        }
    }
    Ok(out)
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    details: Option<String>,
}

#[derive(serde::Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    detail: serde_json::Value,
}

fn first_error_code(body: &[u8]) -> Option<String> {
    let parsed: ErrorBody = serde_json::from_slice(body).ok()?;
    parsed.errors.into_iter().next().map(|e| e.code)
}

/// The registry's error text: first `errors[]` entry, or `details`, or the body's first 50 bytes.
pub(crate) fn registry_error_text(status: StatusCode, body: &[u8]) -> String {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        if let Some(e) = parsed.errors.into_iter().next() {
            let mut s = format!("{}: {}", e.code, e.message);
            if !e.detail.is_null() {
                s.push_str(&format!(" ({})", e.detail));
            }
            return s;
        }
        if let Some(d) = parsed.details {
            return d;
        }
    }
    let head = String::from_utf8_lossy(&body[..body.len().min(50)]).into_owned();
    format!("StatusCode: {}, {head:?}", status.as_u16())
}

/// c/image's "ambiguity" check: an image manifest may not carry `manifests`; an index may not
/// carry `config` or `layers`; neither may carry schema1's `fsLayers` / `history`.
/// Refuses a manifest whose JSON shape contradicts its media type (an index carrying `layers`,
/// an image manifest carrying `manifests`, schema1 fields), as containers/image does.
/// `reference` names the manifest in the error.
pub fn check_manifest_shape(bytes: &[u8], kind: ManifestKind, reference: &str) -> Result<()> {
    let invalid = |reason: String| RegistryError::InvalidManifest {
        reference: reference.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(invalid("not a JSON object".to_owned()));
    };
    let forbidden: &[&str] = if kind.is_index() {
        &["config", "fsLayers", "history", "layers"]
    } else {
        &["fsLayers", "history", "manifests"]
    };
    let found: Vec<&str> = forbidden
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if !found.is_empty() {
        return Err(invalid(format!(
            "rejecting ambiguous manifest, unexpected fields {found:?} in {}",
            kind.media_type()
        )));
    }
    Ok(())
}

fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checks a registry host[:port]: non-empty, no scheme, no path.
pub(crate) fn validate_registry(registry: &str) -> Result<()> {
    let ok = !registry.is_empty()
        && !registry.contains("://")
        && !registry.contains('/')
        && !registry.contains('@')
        && registry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidInput {
            what: "registry host",
            input: registry.to_owned(),
            reason: "expected host[:port]".to_owned(),
        })
    }
}

/// Checks a repository path: lowercase components of `[a-z0-9._-]` separated by `/`.
pub(crate) fn validate_repository(repository: &str) -> Result<()> {
    let ok = !repository.is_empty()
        && repository.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(RegistryError::InvalidInput {
            what: "repository",
            input: repository.to_owned(),
            reason: "expected lowercase path components of [a-z0-9._-]".to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_header_table() {
        let cases = [
            (r#"299 - "deprecated API""#, Some("deprecated API")),
            (r#"299 - "say \"hi\"""#, Some("say \"hi\"")),
            (r#"299 - "trailing" junk"#, None),
            (r#"199 - "other code""#, None),
            (r#"299 - "unterminated"#, None),
            ("299 - \"bell\u{7}\"", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_warning_299(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn redirect_host_rule() {
        let cases = [
            ("registry.example", "registry.example", true),
            ("cdn.registry.example", "registry.example", true),
            ("localhost", "127.0.0.1", false),
            ("evilregistry.example", "registry.example", false),
        ];
        for (new, orig, keep) in cases {
            assert_eq!(same_or_subdomain(new, orig), keep, "{new} from {orig}");
        }
    }

    #[test]
    fn error_texts() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        let t = registry_error_text(StatusCode::NOT_FOUND, body);
        assert!(t.starts_with("MANIFEST_UNKNOWN: manifest unknown"), "{t}");
        assert_eq!(first_error_code(body).as_deref(), Some("MANIFEST_UNKNOWN"));
        assert_eq!(
            registry_error_text(StatusCode::UNAUTHORIZED, br#"{"details":"nope"}"#),
            "nope"
        );
        assert!(registry_error_text(StatusCode::BAD_GATEWAY, b"<html>").contains("502"));
    }

    #[test]
    fn input_validation_table() {
        for r in ["127.0.0.1:5000", "quay.io", "[::1]:5000", "localhost"] {
            assert!(validate_registry(r).is_ok(), "{r}");
        }
        for r in ["", "https://quay.io", "quay.io/ns", "a@b"] {
            assert!(validate_registry(r).is_err(), "{r}");
        }
        for r in ["library/busybox", "bench/big", "a"] {
            assert!(validate_repository(r).is_ok(), "{r}");
        }
        for r in ["", "Library/x", "a//b", "a/", "../x/y?"] {
            assert!(validate_repository(r).is_err(), "{r}");
        }
    }

    #[test]
    fn shape_check() {
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(check_manifest_shape(idx, ManifestKind::OciIndex, "r").is_ok());
        assert!(check_manifest_shape(idx, ManifestKind::OciManifest, "r").is_err());
        let m = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert!(check_manifest_shape(m, ManifestKind::DockerManifest, "r").is_ok());
        assert!(check_manifest_shape(m, ManifestKind::DockerManifestList, "r").is_err());
        assert!(check_manifest_shape(b"[1]", ManifestKind::OciManifest, "r").is_err());
    }

    #[test]
    fn retry_after() {
        let mut h = HeaderMap::new();
        let max = Duration::from_secs(60);
        assert_eq!(
            retry_wait(&h, Duration::from_secs(2), max),
            Duration::from_secs(2)
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            retry_wait(&h, Duration::from_secs(2), max),
            Duration::from_secs(7)
        );
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
        assert_eq!(retry_wait(&h, Duration::from_secs(2), max), max);
        // A date in the past: no wait from the header.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_wait(&h, Duration::from_secs(2), max),
            Duration::from_secs(2)
        );
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Fri, 01 Jan 2100 00:00:00 GMT"),
        );
        assert_eq!(retry_wait(&h, Duration::from_secs(2), max), max);
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(std::time::SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            784_111_777
        );
        assert!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT").is_none());
    }
}
