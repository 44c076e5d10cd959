//! A small OCI distribution (v2) client: manifests, blobs, auth.
//!
//! Written on `reqwest` rather than taken from `oci-client` because the pull
//! pipeline needs things that crate does not expose together: a blob body
//! streamed into a bounded channel feeding a blocking unpacker, resume with
//! `Range` from the exact byte where a connection dropped, hard caps on
//! manifest sizes before they are buffered, `sha512` digests, and HTTPS to
//! loopback registries with fallback to plain HTTP.
//!
//! Redirects (blob storage on another host) are followed by reqwest, which
//! drops the `Authorization` header when the host changes.

pub mod auth;
pub mod credentials;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode};
use tokio::sync::mpsc;
use zeroize::Zeroizing;

pub use credentials::{Credentials, Login};

use crate::digest::Digest;
use crate::error::Error;
use crate::manifest::{Descriptor, MANIFEST_ACCEPT, MAX_DOCUMENT_SIZE};
use crate::reference::Reference;
use auth::{parse_challenge, Challenge, TokenResponse};

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Use plain HTTP for every registry (loopback registries may use it
    /// without this: HTTPS is tried first, then HTTP).
    pub plain_http: bool,
    /// Registries (`host[:port]`, as in references) reached over plain
    /// HTTP only, e.g. a host's registry behind a VMM's user-mode network;
    /// every other registry keeps HTTPS. Content is still verified by digest.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA certificates to trust (self-signed registries).
    pub ca_files: Vec<PathBuf>,
    /// Credentials for registries that ask.
    pub credentials: Credentials,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence on a connection before it counts as dropped.
    pub read_timeout: Duration,
    /// How many times a blob download resumes after a dropped connection.
    pub max_resume_attempts: u32,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            plain_http: false,
            insecure_registries: Vec::new(),
            ca_files: Vec::new(),
            credentials: Credentials::anonymous(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            max_resume_attempts: 5,
        }
    }
}

/// One message on a blob channel.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes of the blob, in order.
    Data(Bytes),
    /// The whole blob has been sent.
    End,
    /// After `End`: what the sender computed over the bytes it sent (done on
    /// the sending side so it runs beside the receiver's work).
    Summary(BlobSummary),
}

/// Size and digest of a streamed blob.
#[derive(Debug, Clone)]
pub struct BlobSummary {
    /// Digest of all bytes sent; `None` when the receiver hashes them itself
    /// (an encrypted layer, hashed while it is decrypted).
    pub digest: Option<Digest>,
    /// Number of bytes sent.
    pub size: u64,
}

enum CachedAuth {
    Basic,
    Bearer {
        header: Zeroizing<String>,
        expires: Instant,
    },
}

/// A registry client shared by all pulls of a process (connection reuse,
/// token cache).
pub struct RegistryClient {
    http: reqwest::Client,
    config: RegistryConfig,
    auth: Mutex<HashMap<(String, String), CachedAuth>>,
    schemes: Mutex<HashMap<String, &'static str>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("plain_http", &self.config.plain_http)
            .finish()
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl RegistryClient {
    /// Builds a client; fails if a CA file cannot be read or parsed.
    pub fn new(config: RegistryConfig) -> Result<Self, Error> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .user_agent(concat!("sealpod-image-rs/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16);
        for f in &config.ca_files {
            let pem = std::fs::read(f)
                .map_err(|e| Error::Config(format!("CA file {}: cannot read: {e}", f.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                Error::Config(format!(
                    "CA file {}: not a PEM certificate bundle: {e}",
                    f.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::Config(format!(
                    "CA file {}: no certificate in it",
                    f.display()
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {}", chain(&e))))?;
        Ok(RegistryClient {
            http,
            config,
            auth: Mutex::new(HashMap::new()),
            schemes: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Whether `r`'s registry is reached over plain HTTP only.
    fn plain_http_for(&self, r: &Reference) -> bool {
        self.config.plain_http
            || self
                .config
                .insecure_registries
                .iter()
                .any(|h| h == r.registry() || h == r.api_host())
    }

    fn schemes_to_try(&self, r: &Reference) -> Vec<&'static str> {
        if self.plain_http_for(r) {
            return vec!["http"];
        }
        if let Some(s) = self
            .schemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(r.api_host())
        {
            return vec![s];
        }
        if r.is_loopback() && self.config.ca_files.is_empty() {
            vec!["https", "http"]
        } else {
            vec!["https"]
        }
    }

    /// Sends a request to `path` (under `/v2/<repo>/`), authenticating as
    /// the registry asks. Returns the response whatever its status.
    async fn send(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
        action: &str,
    ) -> Result<reqwest::Response, Error> {
        self.send_body(r, method, path, headers, None, action).await
    }

    /// [`RegistryClient::send`] with a request body.
    async fn send_body(
        &self,
        r: &Reference,
        method: Method,
        path: &str,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
        body: Option<&Bytes>,
        action: &str,
    ) -> Result<reqwest::Response, Error> {
        let schemes = self.schemes_to_try(r);
        let mut first_err = None;
        for scheme in &schemes {
            let url = format!("{scheme}://{}/v2/{}/{}", r.api_host(), r.repository(), path);
            match self
                .send_authenticated(r, &method, &url, headers, body, action)
                .await
            {
                Ok(resp) => {
                    // An HTTPS-only server answers the plain-HTTP fallback with a bare
                    // 400 ("Client sent an HTTP request to an HTTPS server."), not an
                    // API error: the HTTPS failure (typically a certificate we do not
                    // trust) is the real explanation.
                    if *scheme == "http"
                        && resp.status() == StatusCode::BAD_REQUEST
                        && !resp
                            .headers()
                            .contains_key("docker-distribution-api-version")
                    {
                        if let Some(e) = first_err.take() {
                            return Err(e);
                        }
                    }
                    if schemes.len() > 1 {
                        self.schemes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(r.api_host().to_string(), scheme);
                    }
                    return Ok(resp);
                }
                Err(e @ Error::Transport { .. }) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(first_err.unwrap_or_else(|| Error::Internal("no scheme to try".into())))
    }

    fn cached_header(&self, key: &(String, String)) -> Option<Zeroizing<String>> {
        let map = self.auth.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(key)? {
            CachedAuth::Bearer { header, expires } if *expires > Instant::now() => {
                Some(header.clone())
            }
            CachedAuth::Basic => {
                let repo = key.1.strip_suffix("#push").unwrap_or(&key.1);
                let login = self.config.credentials.lookup(&key.0, repo)?;
                Some(basic_header(login))
            }
            _ => None,
        }
    }

    async fn send_authenticated(
        &self,
        r: &Reference,
        method: &Method,
        url: &str,
        headers: &[(reqwest::header::HeaderName, HeaderValue)],
        body: Option<&Bytes>,
        action: &str,
    ) -> Result<reqwest::Response, Error> {
        // Writes need a push token; reads a pull-only one (least privilege).
        let push = !matches!(*method, Method::GET | Method::HEAD);
        let key = (
            r.registry().to_string(),
            if push {
                format!("{}#push", r.repository())
            } else {
                r.repository().to_string()
            },
        );
        let mut retried = false;
        loop {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(k, v.clone());
            }
            if let Some(b) = body {
                req = req.body(b.clone());
            }
            if let Some(h) = self.cached_header(&key) {
                let mut v = HeaderValue::from_str(&h)
                    .map_err(|_| Error::Internal("bad auth header".into()))?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            let resp = req.send().await.map_err(|e| Error::Transport {
                action: action.to_string(),
                url: url.to_string(),
                detail: format!(
                    "{}; check that the registry is reachable{}",
                    chain(&e),
                    if e.is_connect() && url.starts_with("https") {
                        " and serves HTTPS with a certificate we trust (--ca-file), or use --plain-http"
                    } else {
                        ""
                    }
                ),
            })?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            let scope = format!(
                "repository:{}:{}",
                r.repository(),
                if push { "pull,push" } else { "pull" }
            );
            if retried {
                return Err(Error::Auth {
                    registry: r.registry().to_string(),
                    scope,
                    reason: "the registry refused the credentials (401 after authenticating)"
                        .into(),
                });
            }
            retried = true;
            let challenge = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .filter_map(parse_challenge)
                .next()
                .ok_or_else(|| Error::Auth {
                    registry: r.registry().to_string(),
                    scope: scope.clone(),
                    reason: "401 without a usable WWW-Authenticate challenge".into(),
                })?;
            let cached = match challenge {
                Challenge::Basic => {
                    if self
                        .config
                        .credentials
                        .lookup(r.registry(), r.repository())
                        .is_none()
                    {
                        return Err(Error::Auth {
                            registry: r.registry().to_string(),
                            scope,
                            reason: "the registry requires a login and none is configured".into(),
                        });
                    }
                    CachedAuth::Basic
                }
                Challenge::Bearer { realm, service, .. } => {
                    self.fetch_token(r, &realm, service.as_deref(), &scope)
                        .await?
                }
            };
            self.auth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone(), cached);
        }
    }

    async fn fetch_token(
        &self,
        r: &Reference,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<CachedAuth, Error> {
        let auth_err = |reason: String| Error::Auth {
            registry: r.registry().to_string(),
            scope: scope.to_string(),
            reason,
        };
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| auth_err(format!("token realm {realm:?} is not a URL: {e}")))?;
        if url.scheme() != "https"
            && !(url.scheme() == "http" && (self.plain_http_for(r) || r.is_loopback()))
        {
            return Err(auth_err(format!("token realm {realm:?} is not HTTPS")));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", scope);
        }
        let mut req = self.http.get(url.clone());
        if let Some(login) = self.config.credentials.lookup(r.registry(), r.repository()) {
            let mut v = HeaderValue::from_str(&basic_header(login))
                .map_err(|_| auth_err("bad credentials".into()))?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let started = Instant::now();
        let resp = req
            .send()
            .await
            .map_err(|e| auth_err(format!("token request to {realm} failed: {}", chain(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(auth_err(format!("token server {realm} answered {status}")));
        }
        let body = read_capped(resp, 1 << 20)
            .await
            .map_err(|e| auth_err(format!("reading token from {realm}: {e}")))?;
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| auth_err(format!("token answer from {realm} is not JSON: {e}")))?;
        let token = Zeroizing::new(
            t.token
                .filter(|s| !s.is_empty())
                .or(t.access_token)
                .ok_or_else(|| auth_err(format!("token answer from {realm} has no token")))?,
        );
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).max(10));
        Ok(CachedAuth::Bearer {
            header: Zeroizing::new(format!("Bearer {}", token.as_str())),
            expires: started + life - Duration::from_secs(5),
        })
    }

    fn status_error(
        r: &Reference,
        action: &str,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> Error {
        let excerpt: String = String::from_utf8_lossy(&body[..body.len().min(300)])
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let hint = match status.as_u16() {
            404 => "; check the repository name and tag (or digest) exist in that registry",
            403 => "; the credentials lack pull access to this repository",
            429 => "; the registry is rate limiting: retry later",
            500..=599 => "; the registry failed: retry later",
            _ => "",
        };
        Error::Registry {
            action: action.to_string(),
            url: format!("{}/v2/{}/{}", r.api_host(), r.repository(), path),
            status: status.as_u16(),
            body: if excerpt.is_empty() {
                String::new()
            } else {
                format!(" ({excerpt})")
            },
            hint,
        }
    }

    /// Fetches a manifest or index by tag or digest, capped at 4 MiB.
    /// Returns the bytes and the `Content-Type`.
    pub async fn fetch_manifest(
        &self,
        r: &Reference,
        selector: &str,
    ) -> Result<(Vec<u8>, Option<String>), Error> {
        let action = "fetching manifest".to_string();
        let path = format!("manifests/{selector}");
        let resp = self
            .send(
                r,
                Method::GET,
                &path,
                &[(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT))],
                &action,
            )
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(Self::status_error(r, &action, &path, status, &body));
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_capped(resp, MAX_DOCUMENT_SIZE)
            .await
            .map_err(|e| Error::Manifest {
                what: format!("manifest {selector} of {r}"),
                reason: e,
            })?;
        Ok((body, ct))
    }

    /// Fetches a small blob (a config) whole, capped at 4 MiB, and verifies it.
    pub async fn fetch_small_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
    ) -> Result<Vec<u8>, Error> {
        if desc.size > MAX_DOCUMENT_SIZE {
            return Err(Error::Manifest {
                what: format!("blob {}", desc.digest),
                reason: format!("{} bytes is over the 4 MiB limit for configs", desc.size),
            });
        }
        let action = "fetching config blob of".to_string();
        let path = format!("blobs/{}", desc.digest);
        let resp = self.send(r, Method::GET, &path, &[], &action).await?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(Self::status_error(r, &action, &path, status, &body));
        }
        let body = read_capped(resp, desc.size)
            .await
            .map_err(|e| Error::Manifest {
                what: format!("blob {}", desc.digest),
                reason: e,
            })?;
        desc.digest
            .verify(&format!("config blob {}", desc.digest), &body)?;
        Ok(body)
    }

    /// Streams a blob into `tx` in order, resuming with `Range` requests when
    /// the connection drops (at most `max_resume_attempts` times).
    /// `on_chunk` sees (and may transform, e.g. decrypt) every chunk, with the
    /// running byte count, before it is sent. Sends
    /// [`Chunk::End`] after exactly `desc.size` bytes. The receiver verifies
    /// the digest over the whole stream. `progress` sees the running count.
    pub async fn stream_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        tx: mpsc::Sender<Chunk>,
        mut on_chunk: impl FnMut(Bytes, u64) -> Bytes,
    ) -> Result<BlobStats, Error> {
        let path = format!("blobs/{}", desc.digest);
        let action = format!("downloading layer {} of", desc.digest);
        let mut offset = 0u64;
        let mut stats = BlobStats::default();
        let mut attempt = 0u32;
        let mut last_err: Option<String>;
        loop {
            let mut headers = Vec::new();
            if offset > 0 {
                headers.push((
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={offset}-")).expect("ascii"),
                ));
                stats.range_requests += 1;
            }
            stats.requests += 1;
            match self.send(r, Method::GET, &path, &headers, &action).await {
                Ok(resp) => {
                    let status = resp.status();
                    let mut skip = 0u64;
                    if offset > 0 && status == StatusCode::PARTIAL_CONTENT {
                        let cr = resp
                            .headers()
                            .get(CONTENT_RANGE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        if !cr.starts_with(&format!("bytes {offset}-")) {
                            return Err(Error::Transport {
                                action,
                                url: path,
                                detail: format!("resume at byte {offset} got Content-Range {cr:?}"),
                            });
                        }
                    } else if status == StatusCode::OK {
                        skip = offset; // server ignored Range: discard what we have
                    } else {
                        let body = read_capped(resp, 4096).await.unwrap_or_default();
                        return Err(Self::status_error(r, &action, &path, status, &body));
                    }
                    let mut resp = resp;
                    loop {
                        match resp.chunk().await {
                            Ok(Some(mut c)) => {
                                if skip > 0 {
                                    let n = (skip as usize).min(c.len());
                                    skip -= n as u64;
                                    c = c.slice(n..);
                                    if c.is_empty() {
                                        continue;
                                    }
                                }
                                offset += c.len() as u64;
                                if offset > desc.size {
                                    return Err(Error::SizeMismatch {
                                        digest: desc.digest.clone(),
                                        expected: desc.size,
                                        actual: offset,
                                    });
                                }
                                stats.bytes += c.len() as u64;
                                let c = on_chunk(c, offset);
                                if tx.send(Chunk::Data(c)).await.is_err() {
                                    return Ok(stats); // consumer stopped: it reports why
                                }
                            }
                            Ok(None) => {
                                last_err = Some("connection closed early".into());
                                break;
                            }
                            Err(e) => {
                                last_err = Some(chain(&e));
                                break;
                            }
                        }
                    }
                    if offset == desc.size {
                        let _ = tx.send(Chunk::End).await;
                        return Ok(stats);
                    }
                }
                Err(e @ Error::Transport { .. }) => last_err = Some(e.to_string()),
                Err(e) => return Err(e),
            }
            attempt += 1;
            if attempt > self.config.max_resume_attempts {
                return Err(Error::Transport {
                    action,
                    url: format!("{}/v2/{}/{}", r.api_host(), r.repository(), path),
                    detail: format!(
                        "connection kept failing at byte {offset} of {} after {} resumes: {}; check the network and retry",
                        desc.size,
                        self.config.max_resume_attempts,
                        last_err.unwrap_or_default()
                    ),
                });
            }
            tracing::info!(digest = %desc.digest, offset, attempt, "blob download interrupted, resuming with a Range request");
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
        }
    }

    /// Convenience for tests and tools: fetch a whole blob into memory
    /// (capped) and verify its digest.
    pub async fn fetch_blob_verified(
        &self,
        r: &Reference,
        digest: &Digest,
        cap: u64,
    ) -> Result<Vec<u8>, Error> {
        let path = format!("blobs/{digest}");
        let action = "fetching blob of".to_string();
        let resp = self.send(r, Method::GET, &path, &[], &action).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Self::status_error(r, &action, &path, status, b""));
        }
        let body = read_capped(resp, cap).await.map_err(|e| Error::Manifest {
            what: format!("blob {digest}"),
            reason: e,
        })?;
        digest.verify(&format!("blob {digest}"), &body)?;
        Ok(body)
    }
}

impl RegistryClient {
    fn base_url(&self, r: &Reference) -> String {
        let scheme = if self.plain_http_for(r) {
            "http"
        } else {
            self.schemes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(r.api_host())
                .copied()
                .unwrap_or("https")
        };
        format!("{scheme}://{}", r.api_host())
    }

    /// Whether the repository already has the blob (so a push can skip it).
    pub async fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<bool, Error> {
        let path = format!("blobs/{digest}");
        let resp = self
            .send(r, Method::HEAD, &path, &[], "checking for blob")
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(Self::status_error(r, "checking for blob", &path, s, b"")),
        }
    }

    /// Uploads a blob (monolithic upload: POST, then PUT with the digest).
    /// The registry verifies the digest on its side too.
    pub async fn push_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        data: Bytes,
    ) -> Result<(), Error> {
        if self.blob_exists(r, digest).await? {
            return Ok(());
        }
        let action = format!("uploading blob {digest} to");
        let resp = self
            .send(r, Method::POST, "blobs/uploads/", &[], &action)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            let status = resp.status();
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(Self::status_error(
                r,
                &action,
                "blobs/uploads/",
                status,
                &body,
            ));
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Registry {
                action: action.clone(),
                url: format!("{}/v2/{}/blobs/uploads/", r.api_host(), r.repository()),
                status: 202,
                body: " (no Location header)".into(),
                hint: "",
            })?
            .to_string();
        let mut url = if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else {
            format!("{}{location}", self.base_url(r))
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={digest}"));
        let headers = [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )];
        let resp = self
            .send_authenticated(r, &Method::PUT, &url, &headers, Some(&data), &action)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(Self::status_error(
                r,
                &action,
                "blobs/uploads/...",
                status,
                &body,
            ));
        }
        Ok(())
    }

    /// Uploads a manifest under `reference` (a tag or its digest).
    pub async fn push_manifest(
        &self,
        r: &Reference,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<(), Error> {
        let action = format!("uploading manifest {reference} to");
        let path = format!("manifests/{reference}");
        let ct = HeaderValue::from_str(media_type)
            .map_err(|_| Error::Config(format!("bad media type {media_type:?}")))?;
        let resp = self
            .send_body(
                r,
                Method::PUT,
                &path,
                &[(CONTENT_TYPE, ct)],
                Some(&bytes),
                &action,
            )
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(Self::status_error(r, &action, &path, status, &body));
        }
        Ok(())
    }
}

impl RegistryClient {
    /// GETs `path` under `/v2/<repo>/` (a tag manifest, the referrers API),
    /// capped at `cap` bytes. `Ok(None)` when the registry answers 404 (no
    /// such tag, or no such API). Used by the signature checks.
    pub async fn get_optional(
        &self,
        r: &Reference,
        path: &str,
        accept: &str,
        cap: u64,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, Error> {
        let action = format!("fetching {path} of");
        let accept = HeaderValue::from_str(accept)
            .map_err(|_| Error::Internal(format!("bad Accept header {accept:?}")))?;
        let resp = self
            .send(r, Method::GET, path, &[(ACCEPT, accept)], &action)
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let body = read_capped(resp, 4096).await.unwrap_or_default();
            return Err(Self::status_error(r, &action, path, status, &body));
        }
        let ct = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = read_capped(resp, cap).await.map_err(|e| Error::Manifest {
            what: format!("{path} of {r}"),
            reason: e,
        })?;
        Ok(Some((body, ct)))
    }

    /// GETs an absolute `http(s)://` URL outside the registry API (lookaside
    /// signature storage), without credentials, capped at `cap` bytes.
    /// `Ok(None)` on 404.
    pub async fn get_url_optional(&self, url: &str, cap: u64) -> Result<Option<Vec<u8>>, Error> {
        let action = "fetching".to_string();
        let resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| Error::Transport {
                action: action.clone(),
                url: url.to_string(),
                detail: chain(&e),
            })?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(Error::Registry {
                action,
                url: url.to_string(),
                status: status.as_u16(),
                body: String::new(),
                hint: "",
            });
        }
        read_capped(resp, cap)
            .await
            .map(Some)
            .map_err(|e| Error::Transport {
                action,
                url: url.to_string(),
                detail: e,
            })
    }
}

/// What one blob download took.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct BlobStats {
    /// HTTP requests made (1 unless resumed).
    pub requests: u32,
    /// Of those, requests with a `Range` header.
    pub range_requests: u32,
    /// Body bytes received.
    pub bytes: u64,
}

fn basic_header(login: &Login) -> Zeroizing<String> {
    use base64::Engine;
    let raw = Zeroizing::new(format!("{}:{}", login.username, login.password.as_str()));
    Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())
    ))
}

async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>, String> {
    if let Some(len) = resp.content_length() {
        if len > cap {
            return Err(format!("{len} bytes is over the {cap}-byte limit"));
        }
    }
    let mut out = Vec::new();
    while let Some(c) = resp.chunk().await.map_err(|e| chain(&e))? {
        if out.len() as u64 + c.len() as u64 > cap {
            return Err(format!("body is over the {cap}-byte limit"));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A one-request-per-connection HTTP server on 127.0.0.1 that answers
    /// with `respond(request_head)` and records every request head.
    async fn serve(
        respond: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (u16, Arc<Mutex<Vec<String>>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = Vec::new();
                let mut b = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&b[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                seen2.lock().unwrap().push(head.clone());
                let _ = s.write_all(respond(&head).as_bytes()).await;
            }
        });
        (port, seen)
    }

    #[test]
    fn insecure_registries_are_plain_http_and_only_they() {
        let client = RegistryClient::new(RegistryConfig {
            insecure_registries: vec!["10.0.2.100:5000".into()],
            ..RegistryConfig::default()
        })
        .unwrap();
        let insecure: Reference = "10.0.2.100:5000/team/app:v1".parse().unwrap();
        let other: Reference = "10.0.2.100:5001/team/app:v1".parse().unwrap();
        let remote: Reference = "registry.example/team/app:v1".parse().unwrap();
        assert_eq!(client.schemes_to_try(&insecure), ["http"]);
        assert_eq!(client.base_url(&insecure), "http://10.0.2.100:5000");
        assert_eq!(client.schemes_to_try(&other), ["https"]);
        assert_eq!(client.base_url(&remote), "https://registry.example");
    }

    #[tokio::test]
    async fn redirect_to_another_host_does_not_leak_credentials() {
        let (blob_port, blob_seen) = serve(|_| {
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_string()
        })
        .await;
        let (reg_port, reg_seen) = serve(move |head| {
            if head.contains("authorization: basic") {
                format!("HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{blob_port}/storage/blob\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            } else {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            }
        })
        .await;
        let mut creds = Credentials::anonymous();
        creds.explicit = Some(Login {
            username: "alice".into(),
            password: Zeroizing::new("secret".into()),
        });
        let client = RegistryClient::new(RegistryConfig {
            plain_http: true,
            credentials: creds,
            ..RegistryConfig::default()
        })
        .unwrap();
        let r: Reference = format!("127.0.0.1:{reg_port}/team/app:v1").parse().unwrap();
        let d = Digest::of(crate::digest::Algorithm::Sha256, b"hello");
        let body = client.fetch_blob_verified(&r, &d, 100).await.unwrap();
        assert_eq!(body, b"hello");
        assert!(reg_seen
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.contains("authorization: basic")));
        let blob = blob_seen.lock().unwrap();
        assert_eq!(blob.len(), 1, "blob host not reached");
        assert!(
            !blob[0].contains("authorization"),
            "credentials leaked to the redirect target: {}",
            blob[0]
        );
    }

    #[tokio::test]
    async fn oversized_manifest_is_refused_before_buffering() {
        let (port, _) = serve(|_| {
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n{".to_string()
        })
        .await;
        let client = RegistryClient::new(RegistryConfig {
            plain_http: true,
            ..RegistryConfig::default()
        })
        .unwrap();
        let r: Reference = format!("127.0.0.1:{port}/a:b").parse().unwrap();
        let e = client
            .fetch_manifest(&r, "b")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("limit"), "{e}");
    }
}
