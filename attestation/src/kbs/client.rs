//! The KBS client: the RCAR handshake (auth, attest), token reuse, and
//! resource retrieval.
//!
//! One [`KbsClient`] holds at most one session: its cookie, its token and
//! the ephemeral key the token is bound to (a resource is encrypted to the
//! key in the token, so the two live and die together). Requests reuse the
//! session until the token expires; a 401 that says the session is gone
//! (`TokenNotFound`, `TokenVerifierError`) triggers one re-attestation.
//! Transport failures and 5xx answers are retried a bounded number of times
//! with exponential backoff. Policy denials and missing resources are not
//! retried: another attempt would get the same answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use image_rs::ocicrypt::provider::ResourceUri;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};
use zeroize::Zeroizing;

use super::error::{KbsError, Step};
use super::protocol::{
    Attestation, AttestationResponse, Challenge, CompositeEvidence, ErrorInformation,
    InitDataPayload, Request, RuntimeData, API_PREFIX, PROTOCOL_VERSION, SESSION_COOKIE,
};
use crate::attester::Attester;
use crate::canon::{runtime_data_digest, HashAlgorithm};
use crate::tee_key::{TeeKey, TeeKeyAlgorithm};

/// Largest response body read (a JWE of a key is < 1 KiB; resources such as
/// policies or certificates stay well below this).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// A token this close to its expiry is renewed first.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// How the client reaches the KBS.
#[derive(Debug, Clone)]
pub struct KbsConfig {
    /// The KBS base URL (`http://127.0.0.1:8080`, `https://kbs.example`).
    pub url: String,
    /// Extra CA certificates (PEM) trusted for HTTPS.
    pub ca_pem: Option<Vec<u8>>,
    /// The kind of ephemeral key.
    pub tee_key: TeeKeyAlgorithm,
    /// Initdata sent in `/attest` (the KBS exposes it to its policies).
    pub initdata: Option<InitDataPayload>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attempts per request on transport errors and 5xx (at least 1).
    pub attempts: u32,
    /// First backoff delay; doubled after each failed attempt.
    pub backoff: Duration,
}

impl KbsConfig {
    /// A configuration for `url` with the defaults: EC P-256 key, 30 s
    /// timeout, 4 attempts starting at 250 ms backoff.
    pub fn new(url: impl Into<String>) -> Self {
        KbsConfig {
            url: url.into(),
            ca_pem: None,
            tee_key: TeeKeyAlgorithm::default(),
            initdata: None,
            timeout: Duration::from_secs(30),
            attempts: 4,
            backoff: Duration::from_millis(250),
        }
    }
}

/// An attested session.
#[derive(Debug)]
struct Session {
    cookie: Zeroizing<String>,
    token: Zeroizing<String>,
    /// From the token's `exp` claim; `None` if it has none.
    expires: Option<SystemTime>,
    key: TeeKey,
}

impl Session {
    fn fresh(&self) -> bool {
        self.expires
            .is_none_or(|exp| SystemTime::now() + EXPIRY_MARGIN < exp)
    }
}

/// A client of one KBS, attesting with one TEE. Cheap to share (`Arc`);
/// concurrent callers share the session and attest at most once at a time.
#[derive(Debug)]
pub struct KbsClient {
    base: String,
    config: KbsConfig,
    http: reqwest::Client,
    attester: Arc<dyn Attester>,
    session: Mutex<Option<Session>>,
    handshakes: AtomicU64,
}

/// A response body that was read in full (within [`MAX_BODY`]).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Zeroizing<Vec<u8>>,
}

impl KbsClient {
    /// A client for `config.url`, attesting with `attester`.
    pub fn new(config: KbsConfig, attester: Arc<dyn Attester>) -> Result<Self, KbsError> {
        let base = config.url.trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| KbsError::Config(format!("KBS URL {base:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(KbsError::Config(format!(
                "KBS URL {base:?}: the scheme must be http or https"
            )));
        }
        let mut b = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| KbsError::Config(format!("the KBS CA certificate: {e}")))?;
            if certs.is_empty() {
                return Err(KbsError::Config(
                    "the KBS CA file holds no PEM certificate".into(),
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let http = b
            .build()
            .map_err(|e| KbsError::Config(format!("building the HTTP client: {e}")))?;
        Ok(KbsClient {
            base,
            config,
            http,
            attester,
            session: Mutex::new(None),
            handshakes: AtomicU64::new(0),
        })
    }

    /// The TEE this client attests with.
    pub fn attester(&self) -> &Arc<dyn Attester> {
        &self.attester
    }

    /// How many handshakes this client has started (for metrics, and to
    /// show that sessions are reused).
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::Relaxed)
    }

    /// Runs the RCAR handshake now (replacing any session) and returns the
    /// attestation token.
    pub async fn attest(&self) -> Result<Zeroizing<String>, KbsError> {
        self.session_token(true).await
    }

    /// The token of the current session, attesting first if there is none
    /// or it is about to expire.
    pub async fn token(&self) -> Result<Zeroizing<String>, KbsError> {
        self.session_token(false).await
    }

    async fn session_token(&self, renew: bool) -> Result<Zeroizing<String>, KbsError> {
        let mut guard = self.session.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| !renew && s.fresh()) {
            return Ok(s.token.clone());
        }
        let s = self.handshake().await?;
        let token = s.token.clone();
        *guard = Some(s);
        Ok(token)
    }

    /// Fetches and decrypts the resource `uri` (`kbs:///repo/type/tag`).
    pub async fn get_resource(&self, uri: &ResourceUri) -> Result<Zeroizing<Vec<u8>>, KbsError> {
        let path = format!(
            "{API_PREFIX}/resource/{}/{}/{}",
            segment(&uri.repository),
            segment(&uri.kind),
            segment(&uri.tag)
        );
        let url = format!("{}{path}", self.base);
        let mut guard = self.session.lock().await;
        let mut reattested = false;
        loop {
            if guard.as_ref().is_none_or(|s| !s.fresh()) {
                *guard = Some(self.handshake().await?);
                reattested = true;
            }
            let Some(session) = guard.as_ref() else {
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.insert(COOKIE, cookie_header(&session.cookie)?);
            let reply = self
                .send(Step::Resource, reqwest::Method::GET, &url, headers, None)
                .await?;
            if reply.status == StatusCode::OK {
                let plain = session
                    .key
                    .decrypt(&reply.body)
                    .map_err(|e| KbsError::Decrypt {
                        resource: uri.to_string(),
                        reason: e.to_string(),
                    })?;
                info!(resource = %uri, "KBS released the resource");
                return Ok(plain);
            }
            let err = kbs_error(Step::Resource, &url, &reply);
            let session_gone = reply.status == StatusCode::UNAUTHORIZED
                && matches!(err.kbs_kind(), Some("TokenNotFound" | "TokenVerifierError"));
            if session_gone && !reattested {
                info!("the KBS no longer accepts the session; attesting again");
                *guard = None;
                continue;
            }
            return Err(err);
        }
    }

    /// auth -> evidence -> attest: a new session.
    async fn handshake(&self) -> Result<Session, KbsError> {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        let tee = self.attester.tee();
        let auth_url = format!("{}{API_PREFIX}/auth", self.base);
        let request = Request {
            version: PROTOCOL_VERSION.to_string(),
            tee,
            extra_params: json!({ "supported-hash-algorithms": HashAlgorithm::SUPPORTED }),
        };
        let reply = self
            .send_json(Step::Auth, &auth_url, HeaderMap::new(), &request)
            .await?;
        if reply.status != StatusCode::OK {
            return Err(kbs_error(Step::Auth, &auth_url, &reply));
        }
        let cookie = session_cookie(&reply.headers).ok_or_else(|| KbsError::Protocol {
            step: Step::Auth,
            url: auth_url.clone(),
            reason: format!("no {SESSION_COOKIE} cookie in the answer"),
        })?;
        let challenge: Challenge =
            serde_json::from_slice(&reply.body).map_err(|e| KbsError::Protocol {
                step: Step::Auth,
                url: auth_url.clone(),
                reason: format!("the challenge is not JSON of the expected shape: {e}"),
            })?;
        let hash = selected_hash(&challenge.extra_params).map_err(|reason| KbsError::Protocol {
            step: Step::Auth,
            url: auth_url.clone(),
            reason,
        })?;
        debug!(%tee, hash = hash.name(), "KBS challenge received");

        let alg = self.config.tee_key;
        let key = tokio::task::spawn_blocking(move || TeeKey::generate(alg))
            .await
            .map_err(|e| KbsError::Config(format!("key generation task: {e}")))??;
        let tee_pubkey = key.jwk().clone();
        let additional_evidence = String::new();
        let digest = runtime_data_digest(hash, &challenge.nonce, &tee_pubkey, &additional_evidence);
        let attester = Arc::clone(&self.attester);
        let evidence = tokio::task::spawn_blocking(move || attester.evidence(&digest))
            .await
            .map_err(|e| KbsError::Config(format!("evidence task: {e}")))??;

        let attest_url = format!("{}{API_PREFIX}/attest", self.base);
        let body = Attestation {
            init_data: self.config.initdata.clone(),
            runtime_data: RuntimeData {
                nonce: challenge.nonce,
                tee_pubkey,
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: evidence,
                additional_evidence,
            },
        };
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, cookie_header(&cookie)?);
        let reply = self
            .send_json(Step::Attest, &attest_url, headers, &body)
            .await?;
        if reply.status != StatusCode::OK {
            return Err(kbs_error(Step::Attest, &attest_url, &reply));
        }
        let resp: AttestationResponse =
            serde_json::from_slice(&reply.body).map_err(|e| KbsError::Protocol {
                step: Step::Attest,
                url: attest_url.clone(),
                reason: format!("the answer is not {{\"token\": ...}}: {e}"),
            })?;
        // The attest answer re-sends the cookie; keep the newest.
        let cookie = session_cookie(&reply.headers).unwrap_or(cookie);
        let expires = token_expiry(&resp.token);
        info!(%tee, "attested to the KBS");
        Ok(Session {
            cookie,
            token: Zeroizing::new(resp.token),
            expires,
            key,
        })
    }

    async fn send_json<T: serde::Serialize>(
        &self,
        step: Step,
        url: &str,
        mut headers: HeaderMap,
        body: &T,
    ) -> Result<Reply, KbsError> {
        let body = serde_json::to_vec(body).map_err(|e| KbsError::Protocol {
            step,
            url: url.to_string(),
            reason: format!("encoding the request: {e}"),
        })?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        self.send(step, reqwest::Method::POST, url, headers, Some(body))
            .await
    }

    /// One request with bounded retries on transport errors and 5xx.
    async fn send(
        &self,
        step: Step,
        method: reqwest::Method,
        url: &str,
        headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<Reply, KbsError> {
        let attempts = self.config.attempts.max(1);
        let mut delay = self.config.backoff;
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(delay).await;
                delay = delay.saturating_mul(2);
            }
            let mut req = self
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    match read_capped(resp).await {
                        Ok(body) if status.is_server_error() && attempt < attempts => {
                            drop(body);
                            warn!(%step, %status, attempt, "KBS server error; retrying");
                            last = format!("HTTP {status}");
                        }
                        Ok(body) => {
                            return Ok(Reply {
                                status,
                                headers,
                                body,
                            })
                        }
                        Err(e) => {
                            warn!(%step, attempt, error = %e, "reading the KBS answer failed");
                            last = e;
                        }
                    }
                }
                Err(e) => {
                    let reason = transport_reason(&e);
                    warn!(%step, attempt, error = %reason, "KBS request failed");
                    last = reason;
                }
            }
        }
        Err(KbsError::Transport {
            step,
            url: url.to_string(),
            reason: last,
            attempts,
        })
    }
}

/// Reads a body up to [`MAX_BODY`].
async fn read_capped(mut resp: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport_reason(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_reason(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The error for a non-200 answer: the RFC 7807 kind and detail if the body
/// is one, else the start of the body.
fn kbs_error(step: Step, url: &str, reply: &Reply) -> KbsError {
    let (kind, detail) = match serde_json::from_slice::<ErrorInformation>(&reply.body) {
        Ok(e) => (e.kind().to_string(), e.detail),
        Err(_) => (
            "unknown".to_string(),
            String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned(),
        ),
    };
    KbsError::Kbs {
        step,
        url: url.to_string(),
        status: reply.status.as_u16(),
        kind,
        detail,
    }
}

/// The `kbs-session-id` value from `Set-Cookie` headers.
fn session_cookie(headers: &HeaderMap) -> Option<Zeroizing<String>> {
    headers.get_all(SET_COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        let first = v.split(';').next()?.trim();
        let (name, value) = first.split_once('=')?;
        (name.trim() == SESSION_COOKIE && !value.is_empty())
            .then(|| Zeroizing::new(value.trim().to_string()))
    })
}

fn cookie_header(value: &str) -> Result<HeaderValue, KbsError> {
    let mut v = HeaderValue::from_str(&format!("{SESSION_COOKIE}={value}")).map_err(|_| {
        KbsError::Protocol {
            step: Step::Auth,
            url: String::new(),
            reason: "the session cookie is not a valid header value".into(),
        }
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The hash the KBS selected (`extra-params.selected-hash-algorithm`),
/// SHA-384 when it selected none.
fn selected_hash(extra: &Value) -> Result<HashAlgorithm, String> {
    match extra.get("selected-hash-algorithm") {
        None | Some(Value::Null) => Ok(HashAlgorithm::default()),
        Some(Value::String(name)) => HashAlgorithm::from_name(name).ok_or_else(|| {
            format!("the KBS selected hash {name:?}, which this client did not offer")
        }),
        Some(_) => Err("selected-hash-algorithm is not a string".into()),
    }
}

/// The token's `exp` claim, read without verifying the token: the client
/// uses it only to renew early, the KBS is the one that checks it.
fn token_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// Percent-encodes a resource path segment (the parts are validated by
/// [`ResourceUri::parse`] but may hold characters a URL path cannot).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(SET_COOKIE, HeaderValue::from_static("other=1"));
        h.append(
            SET_COOKIE,
            HeaderValue::from_static(
                "kbs-session-id=0123abcd; Expires=Sun, 29 Nov 2026 10:00:00 GMT",
            ),
        );
        assert_eq!(session_cookie(&h).unwrap().as_str(), "0123abcd");
        assert!(session_cookie(&HeaderMap::new()).is_none());
    }

    #[test]
    fn hash_selection_defaults_to_sha384() {
        assert_eq!(selected_hash(&json!("")).unwrap(), HashAlgorithm::Sha384);
        assert_eq!(
            selected_hash(&json!({"selected-hash-algorithm": "sha512"})).unwrap(),
            HashAlgorithm::Sha512
        );
        assert!(selected_hash(&json!({"selected-hash-algorithm": "sm3"})).is_err());
    }

    #[test]
    fn token_expiry_reads_exp() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"exp":2000000000}"#);
        let t = format!("e30.{claims}.sig");
        assert_eq!(
            token_expiry(&t),
            Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
        );
        assert_eq!(token_expiry("garbage"), None);
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("key-1.v2"), "key-1.v2");
        assert_eq!(segment("a b%"), "a%20b%25");
    }

    #[test]
    fn bad_urls_are_refused() {
        let att: Arc<dyn Attester> = Arc::new(crate::attester::sample::SampleAttester::new(None));
        assert!(KbsClient::new(KbsConfig::new("ftp://x"), Arc::clone(&att)).is_err());
        assert!(KbsClient::new(KbsConfig::new("not a url"), att).is_err());
    }
}
