//! An HTTP/1.1 forwarding proxy on 127.0.0.1 in front of a plain-HTTP registry, to see
//! and disturb what a client does: it logs every request, can cut responses short
//! ([`Proxy::drop_after`]) and can enforce bearer-token auth itself ([`TokenAuth`]).
//!
//! Each client connection carries one request: the proxy rewrites `Connection: close`
//! into the request it forwards and into the response it returns, so keep-alive clients
//! simply open a new connection per request. Request bodies are streamed through
//! unparsed. Plain HTTP only: a connection that opens with a TLS handshake is closed at
//! once, so clients that try HTTPS first fall back to HTTP without waiting for a
//! handshake timeout. The proxy runs on its own tokio runtime (in the background), so it works
//! from both plain `#[test]`s and `#[tokio::test]`s; dropping it stops everything.
//!
//! Token mode (the registry itself unauthenticated): a `/v2/...` request without a valid
//! `Authorization: Bearer` gets `401` with
//! `WWW-Authenticate: Bearer realm="http://ADDR/token",service="SERVICE",scope="repository:NAME:pull"`
//! (no scope for `/v2/` itself; `pull,push` for write methods). `GET /token?service=..&scope=..`
//! with the right Basic credentials returns `{"token","access_token","expires_in":300,"issued_at"}`
//! granting `pull` (never `push`) on the repositories named by its scopes; wrong or missing
//! credentials get `401`. A token is only accepted for `GET`/`HEAD` on its repositories.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::http::find;

/// Largest request or response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
/// A connection idle for this long is dropped (bounded waits in tests).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// First byte of a TLS record carrying a handshake (a ClientHello on a fresh connection).
const TLS_HANDSHAKE: u8 = 0x16;
/// What `expires_in` says (tokens are not actually expired by time).
const TOKEN_TTL_SECS: u64 = 300;

/// One request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Request method.
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
    /// Whether an `Authorization` header was present.
    pub has_authorization: bool,
    /// The `Authorization` scheme (`Basic`, `Bearer`), if present.
    pub auth_scheme: Option<String>,
    /// For `/token` requests, the scopes asked for.
    pub scopes: Vec<String>,
    /// Response status sent to the client (None if the exchange broke before one).
    pub status: Option<u16>,
    /// Whether the response was cut short by a [`Proxy::drop_after`] rule.
    pub dropped: bool,
}

/// Token-auth settings for [`ProxyOptions::token_auth`].
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// `(user, password)` the token endpoint requires in Basic auth; `None` hands tokens to
    /// anonymous clients too.
    pub credentials: Option<(String, String)>,
    /// The `service` named in challenges.
    pub service: String,
}

impl Default for TokenAuth {
    fn default() -> Self {
        TokenAuth {
            credentials: None,
            service: "test-registry".to_string(),
        }
    }
}

/// How to start a [`Proxy`].
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// Enforce bearer-token auth in front of the upstream.
    pub token_auth: Option<TokenAuth>,
}

#[derive(Debug)]
struct DropRule {
    path_substring: String,
    n_bytes: u64,
    times: usize,
}

#[derive(Debug, Default)]
struct State {
    log: Vec<RequestRecord>,
    rules: Vec<DropRule>,
    /// token -> repositories it may pull.
    tokens: HashMap<String, Vec<String>>,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    addr: String,
    auth: Option<TokenAuth>,
    state: Mutex<State>,
    counter: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection task must not poison the log for the test.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; dropping it shuts its runtime down and closes every connection.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// Starts a logging proxy to `upstream` (`"127.0.0.1:PORT"`, plain HTTP).
    pub fn start(upstream: &str) -> Proxy {
        Proxy::start_with(upstream, ProxyOptions::default())
    }

    /// Starts a proxy to `upstream` with `opts`.
    pub fn start_with(upstream: &str, opts: ProxyOptions) -> Proxy {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind proxy on 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("build proxy runtime");
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            addr,
            auth: opts.token_auth,
            state: Mutex::new(State::default()),
            counter: AtomicU64::new(0),
        });
        let s = shared.clone();
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("register proxy listener");
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(IDLE_TIMEOUT * 10, handle(client, s)).await;
                });
            }
        });
        Proxy {
            shared,
            runtime: Some(runtime),
        }
    }

    /// `127.0.0.1:PORT`, where clients should connect instead of the registry.
    pub fn addr(&self) -> String {
        self.shared.addr.clone()
    }

    /// The token realm URL (`http://ADDR/token`) advertised in token mode.
    pub fn token_realm(&self) -> String {
        format!("http://{}/token", self.shared.addr)
    }

    /// Every request seen so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().log.clone()
    }

    /// How many requests so far had a path containing `path_substring`.
    pub fn count(&self, path_substring: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.path.contains(path_substring))
            .count()
    }

    /// Forgets the request log (e.g. between the phases of a test).
    pub fn clear(&self) {
        self.shared.lock().log.clear();
    }

    /// For the next `times` requests whose path contains `path_substring`, forwards only
    /// the first `n_bytes` of the response body, then closes the client connection.
    pub fn drop_after(&self, path_substring: &str, n_bytes: u64, times: usize) {
        self.shared.lock().rules.push(DropRule {
            path_substring: path_substring.to_string(),
            n_bytes,
            times,
        });
    }

    /// Invalidates every token issued so far (clients must fetch a new one).
    pub fn revoke_tokens(&self) {
        self.shared.lock().tokens.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Non-blocking, so dropping a proxy inside an async test is fine.
            rt.shutdown_background();
        }
    }
}

/// A parsed request or response head.
struct Head {
    first_line: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Serializes with hop-by-hop connection headers replaced by `Connection: close`.
    fn to_bytes_close(&self) -> Vec<u8> {
        let mut s = format!("{}\r\n", self.first_line);
        for (k, v) in &self.headers {
            let hop = ["connection", "keep-alive", "proxy-connection"]
                .iter()
                .any(|h| k.eq_ignore_ascii_case(h));
            if !hop {
                s.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        s.push_str("Connection: close\r\n\r\n");
        s.into_bytes()
    }
}

/// Reads a head (up to `\r\n\r\n`) from `s`; returns it and any bytes read past it.
async fn read_head(s: &mut TcpStream) -> Option<(Head, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = text.split("\r\n");
            let first_line = lines.next()?.to_string();
            let headers = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect();
            return Some((
                Head {
                    first_line,
                    headers,
                },
                buf[end + 4..].to_vec(),
            ));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = tokio::time::timeout(IDLE_TIMEOUT, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf[0] == TLS_HANDSHAKE {
            // A client trying HTTPS first (e.g. Go with tls-verify off): close at once so
            // it falls back to HTTP now instead of after its handshake timeout.
            return None;
        }
    }
}

async fn handle(mut client: TcpStream, s: Arc<Shared>) {
    let Some((req, body_start)) = read_head(&mut client).await else {
        return;
    };
    let mut parts = req.first_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let authz = req.get("authorization").map(str::to_string);
    let scopes = if path.starts_with("/token") {
        query_values(&path, "scope")
    } else {
        Vec::new()
    };
    let idx = {
        let mut st = s.lock();
        st.log.push(RequestRecord {
            method: method.clone(),
            path: path.clone(),
            range: req.get("range").map(str::to_string),
            has_authorization: authz.is_some(),
            auth_scheme: authz
                .as_deref()
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_string),
            scopes: scopes.clone(),
            status: None,
            dropped: false,
        });
        st.log.len() - 1
    };
    let set_status = |status: u16, dropped: bool| {
        let mut st = s.lock();
        st.log[idx].status = Some(status);
        st.log[idx].dropped = dropped;
    };

    if let Some(auth) = &s.auth {
        if path.starts_with("/token") {
            let (status, resp) = token_endpoint(&s, auth, authz.as_deref(), &scopes);
            set_status(status, false);
            let _ = client.write_all(&resp).await;
            return;
        }
        if path.starts_with("/v2/") {
            if let Some(resp) = check_bearer(&s, auth, &method, &path, authz.as_deref()) {
                set_status(401, false);
                let _ = client.write_all(&resp).await;
                let _ = client.shutdown().await;
                return;
            }
        }
    }

    // Only requests that reach the upstream consume a drop rule.
    let drop_at = s
        .lock()
        .rules
        .iter_mut()
        .find(|r| r.times > 0 && path.contains(&r.path_substring))
        .map(|r| {
            r.times -= 1;
            r.n_bytes
        });
    let Ok(mut upstream) = TcpStream::connect(&s.upstream).await else {
        set_status(502, false);
        let _ = client
            .write_all(&simple_response(
                502,
                "Bad Gateway",
                &[],
                b"upstream unreachable",
            ))
            .await;
        return;
    };
    if upstream.write_all(&req.to_bytes_close()).await.is_err()
        || upstream.write_all(&body_start).await.is_err()
    {
        return;
    }
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut up_rd, mut up_wr) = upstream.into_split();
    // Request body (if any): stream the rest of the client's bytes upstream.
    // No shutdown of the upstream's write side when the client half-closes: the server
    // might take that as a cancelled request.
    let pump = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_rd, &mut up_wr).await;
        std::future::pending::<()>().await;
    });
    if let Some((status, dropped)) = forward_response(&mut up_rd, &mut client_wr, drop_at).await {
        set_status(status, dropped);
    }
    let _ = client_wr.shutdown().await;
    pump.abort();
}

/// Forwards the response head(s) and body; with `drop_at`, stops after that many body
/// bytes. Returns the final status and whether the body was cut.
async fn forward_response(
    up: &mut tokio::net::tcp::OwnedReadHalf,
    client: &mut tokio::net::tcp::OwnedWriteHalf,
    drop_at: Option<u64>,
) -> Option<(u16, bool)> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    // Heads: skip over 1xx interim responses.
    let (status, mut body) = loop {
        let end = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return None;
            }
            let n = tokio::time::timeout(IDLE_TIMEOUT, up.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = text.split("\r\n");
        let first_line = lines.next()?.to_string();
        let status: u16 = first_line.split_whitespace().nth(1)?.parse().ok()?;
        let head = Head {
            first_line,
            headers: lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect(),
        };
        let rest = buf[end + 4..].to_vec();
        if (100..200).contains(&status) {
            client.write_all(&buf[..end + 4]).await.ok()?;
            buf = rest;
            continue;
        }
        client.write_all(&head.to_bytes_close()).await.ok()?;
        break (status, rest);
    };
    let mut sent: u64 = 0;
    loop {
        if let Some(limit) = drop_at {
            let room = (limit - sent.min(limit)) as usize;
            if body.len() >= room {
                let _ = client.write_all(&body[..room]).await;
                return Some((status, true));
            }
        }
        client.write_all(&body).await.ok()?;
        sent += body.len() as u64;
        let n = match tokio::time::timeout(IDLE_TIMEOUT, up.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => return Some((status, false)),
        };
        if n == 0 {
            return Some((status, false));
        }
        body = chunk[..n].to_vec();
    }
}

/// Answers `/token`: checks Basic credentials, grants pull on the scoped repositories.
fn token_endpoint(
    s: &Shared,
    auth: &TokenAuth,
    authz: Option<&str>,
    scopes: &[String],
) -> (u16, Vec<u8>) {
    if let Some((user, password)) = &auth.credentials {
        let given = authz
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if given.as_deref() != Some(&format!("{user}:{password}")) {
            let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
            return (
                401,
                simple_response(
                    401,
                    "Unauthorized",
                    &[
                        ("WWW-Authenticate", "Basic realm=\"token\""),
                        ("Content-Type", "application/json"),
                    ],
                    body,
                ),
            );
        }
    }
    let repos: Vec<String> = scopes
        .iter()
        .filter_map(|sc| {
            let mut it = sc.splitn(3, ':');
            let (kind, name, actions) = (it.next()?, it.next()?, it.next()?);
            (kind == "repository" && actions.split(',').any(|a| a == "pull" || a == "*"))
                .then(|| name.to_string())
        })
        .collect();
    let n = s.counter.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let seed = format!("{n}/{}/{}/{}", now.as_nanos(), std::process::id(), s.addr);
    let token = hex::encode(Sha256::digest(seed.as_bytes()));
    s.lock().tokens.insert(token.clone(), repos);
    let body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": TOKEN_TTL_SECS,
        "issued_at": "2024-01-01T00:00:00Z",
    })
    .to_string();
    (
        200,
        simple_response(
            200,
            "OK",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        ),
    )
}

/// `None` if the request carries a token good for it; otherwise the 401 to send.
fn check_bearer(
    s: &Shared,
    auth: &TokenAuth,
    method: &str,
    path: &str,
    authz: Option<&str>,
) -> Option<Vec<u8>> {
    let repo = repository_of(path);
    let read = matches!(method, "GET" | "HEAD");
    let token = authz.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
    let ok = token.is_some_and(|t| match s.lock().tokens.get(t) {
        None => false,
        Some(repos) => match &repo {
            None => true, // `/v2/` itself: any valid token
            Some(r) => read && repos.iter().any(|x| x == r),
        },
    });
    if ok {
        return None;
    }
    let mut challenge = format!(
        "Bearer realm=\"http://{}/token\",service=\"{}\"",
        s.addr, auth.service
    );
    if let Some(r) = &repo {
        let actions = if read { "pull" } else { "pull,push" };
        challenge.push_str(&format!(",scope=\"repository:{r}:{actions}\""));
    }
    if token.is_some() {
        challenge.push_str(",error=\"insufficient_scope\"");
    }
    let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
    Some(simple_response(
        401,
        "Unauthorized",
        &[
            ("WWW-Authenticate", &challenge),
            ("Content-Type", "application/json; charset=utf-8"),
            ("Docker-Distribution-Api-Version", "registry/2.0"),
        ],
        body,
    ))
}

/// The repository name in a v2 API path (`/v2/<name>/manifests/...` etc.), if any.
pub fn repository_of(path: &str) -> Option<String> {
    let p = path.split('?').next()?.strip_prefix("/v2/")?;
    ["/manifests/", "/blobs/", "/tags/", "/referrers/"]
        .iter()
        .filter_map(|m| p.rfind(m))
        .max()
        .map(|i| p[..i].to_string())
        .filter(|n| !n.is_empty())
}

/// All values of query parameter `key` (percent-decoded), in order.
fn query_values(path: &str, key: &str) -> Vec<String> {
    let Some((_, q)) = path.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn simple_response(status: u16, reason: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_repository_and_scopes() {
        assert_eq!(
            repository_of("/v2/a/b/manifests/latest").as_deref(),
            Some("a/b")
        );
        assert_eq!(
            repository_of("/v2/x/blobs/uploads/123?digest=sha256:1").as_deref(),
            Some("x")
        );
        assert_eq!(repository_of("/v2/"), None);
        assert_eq!(
            query_values(
                "/token?service=s&scope=repository%3Aa%2Fb%3Apull&scope=x",
                "scope"
            ),
            ["repository:a/b:pull", "x"]
        );
    }
}
