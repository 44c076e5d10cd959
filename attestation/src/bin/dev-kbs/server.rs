//! The HTTP side: routes, handlers and the error answers, with the status
//! codes and `type`/`detail` texts a stock Trustee KBS gives (see the
//! project's KBS protocol reference, sections 1, 2, 4 and 6).
//!
//! Everything under `/kbs/v0/` goes through one dispatcher so that unknown
//! plugins and wrong methods get the KBS's own 404 `PluginNotFound` rather
//! than the router's.

use std::collections::HashMap;
use std::sync::Arc;

use attestation::kbs::protocol::{
    errors, Attestation, AttestationResponse, Challenge, ErrorInformation, Request, API_PREFIX,
    PROTOCOL_VERSION, SESSION_COOKIE,
};
use attestation::tee_key::public_key_from_jwk;
use attestation::Tee;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use image_rs::ocicrypt::jwe::encrypt_json;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq as _;
use tracing::{info, warn};

use crate::policy::Policy;
use crate::resources::{ResourceStore, MAX_RESOURCE_LEN};
use crate::session::{Session, Sessions};
use crate::token::{TokenSigner, TEE_PUBKEY_POINTER};
use crate::verify::verify_sample;

/// Largest request body accepted.
const MAX_BODY: usize = 1024 * 1024;
/// Error kinds a stock KBS uses that the library's client does not need.
const INVALID_REQUEST_PATH: &str = "InvalidRequestPath";
const ADMIN_AUTH_ACCESS: &str = "AdminAuthAccess";
const ADMIN_AUTH_INITIALIZATION: &str = "AdminAuthInitialization";
const POLICY_ENGINE_ERROR: &str = "PolicyEngineError";
/// What a stock KBS says when an admin request has no bearer token.
const NO_BEARER: &str = "Failed to parse HTTP Auth Bearer header";

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// RCAR sessions.
    pub sessions: Sessions,
    /// Token signing key.
    pub signer: TokenSigner,
    /// The resource policy.
    pub policy: Policy,
    /// The resource directory.
    pub resources: ResourceStore,
    /// Bearer token enabling resource writes, if any.
    pub admin_token: Option<String>,
}

/// The routes: `/healthz`, and the KBS API under `/kbs/v0/`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { StatusCode::OK }))
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// A failed request, as the KBS reports it.
#[derive(Debug)]
enum KbsError {
    /// `/auth` refused: the detail follows "RCAR handshake Auth failed: ".
    Auth(String),
    /// `/attest` refused (the reason is logged, never sent).
    Attest,
    /// No token: no or unknown or unattested or expired session.
    TokenNotFound,
    /// A token that does not verify.
    TokenVerifier,
    /// The policy said no.
    PolicyDeny,
    /// The policy could not be evaluated.
    PolicyEngine,
    /// Resource missing, bad path, or a storage failure.
    PluginInternal,
    /// Unknown plugin or wrong method.
    PluginNotFound(String),
    /// Nothing after `/kbs/v0/`.
    InvalidRequestPath,
    /// A policy/reference-value admin endpoint (not implemented here).
    AdminAccess { endpoint: String, reason: String },
    /// A resource write without the admin token.
    AdminInit(String),
}

impl KbsError {
    /// The status and body a stock KBS answers with.
    fn info(&self) -> (StatusCode, ErrorInformation) {
        let unauthorized = StatusCode::UNAUTHORIZED;
        match self {
            KbsError::Auth(detail) => (
                unauthorized,
                ErrorInformation::new(
                    errors::ATTESTATION_ERROR,
                    format!("Attestation error: RCAR handshake Auth failed: {detail}"),
                ),
            ),
            KbsError::Attest => (
                unauthorized,
                ErrorInformation::new(
                    errors::ATTESTATION_ERROR,
                    "Attestation error: RCAR handshake Attest failed",
                ),
            ),
            KbsError::TokenNotFound => (
                unauthorized,
                ErrorInformation::new(errors::TOKEN_NOT_FOUND, "Attestation Token not found"),
            ),
            KbsError::TokenVerifier => (
                unauthorized,
                ErrorInformation::new(errors::TOKEN_VERIFIER_ERROR, "Token Verifier error"),
            ),
            KbsError::PolicyDeny => (
                unauthorized,
                ErrorInformation::new(errors::POLICY_DENY, "Access denied by policy"),
            ),
            KbsError::PolicyEngine => (
                unauthorized,
                ErrorInformation::new(
                    POLICY_ENGINE_ERROR,
                    "Policy engine error: evaluation failed",
                ),
            ),
            KbsError::PluginInternal => (
                unauthorized,
                ErrorInformation::new(errors::PLUGIN_INTERNAL_ERROR, "Plugin internal error"),
            ),
            KbsError::PluginNotFound(name) => (
                StatusCode::NOT_FOUND,
                ErrorInformation::new(errors::PLUGIN_NOT_FOUND, format!("Plugin {name} not found")),
            ),
            KbsError::InvalidRequestPath => (
                StatusCode::NOT_FOUND,
                ErrorInformation::new(INVALID_REQUEST_PATH, "Invalid request path"),
            ),
            KbsError::AdminAccess { endpoint, reason } => (
                unauthorized,
                ErrorInformation::new(
                    ADMIN_AUTH_ACCESS,
                    format!("admin access denied for endpoint {endpoint}: {reason}"),
                ),
            ),
            KbsError::AdminInit(reason) => (
                unauthorized,
                ErrorInformation::new(
                    ADMIN_AUTH_INITIALIZATION,
                    format!("failed to initialize [admin] configuration: {reason}"),
                ),
            ),
        }
    }
}

impl IntoResponse for KbsError {
    /// The JSON body without a JSON content type, like a stock KBS.
    fn into_response(self) -> Response {
        let (status, info) = self.info();
        let body = serde_json::to_vec(&info).unwrap_or_default();
        (status, Body::from(body)).into_response()
    }
}

/// Routes a request under the API prefix.
async fn dispatch(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(rest) = uri.path().strip_prefix(API_PREFIX) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(rest) = rest.strip_prefix('/').filter(|r| !r.is_empty()) else {
        return KbsError::InvalidRequestPath.into_response();
    };
    let (plugin, tail) = match rest.split_once('/') {
        Some((p, t)) => (p, Some(t)),
        None => (rest, None),
    };
    let result = match (plugin, tail, &method) {
        ("auth", None, &Method::POST) => auth(&state, &body),
        ("attest", None, &Method::POST) => attest(&state, &headers, &body),
        ("auth" | "attest", _, _) => Err(KbsError::PluginNotFound(plugin.to_string())),
        ("resource", _, m) => {
            let segments = split_path(tail.unwrap_or(""));
            match *m {
                Method::GET => get_resource(&state, &uri, &headers, segments).await,
                Method::POST => write_resource(&state, &headers, segments, body).await,
                Method::DELETE => delete_resource(&state, &headers, segments).await,
                _ => {
                    info!(%method, "resource: method not supported");
                    Err(KbsError::PluginInternal)
                }
            }
        }
        ("attestation-policy" | "resource-policy" | "reference-value", _, _) => {
            Err(KbsError::AdminAccess {
                endpoint: plugin.to_string(),
                reason: match bearer(&headers) {
                    None => NO_BEARER.to_string(),
                    Some(_) => "not implemented by dev-kbs (use its --policy option)".to_string(),
                },
            })
        }
        _ => Err(KbsError::PluginNotFound(percent_decode(plugin))),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /kbs/v0/auth`: a new session and its challenge.
fn auth(state: &AppState, body: &[u8]) -> Result<Response, KbsError> {
    let request: Request = serde_json::from_slice(body).map_err(|e| {
        info!("auth refused: deserialize Request: {e}");
        KbsError::Auth("deserialize Request".into())
    })?;
    let version = semver::Version::parse(&request.version).map_err(|e| {
        info!(version = %request.version, "auth refused: {e}");
        KbsError::Auth("failed to parse KBS version".into())
    })?;
    let wanted = format!("={PROTOCOL_VERSION}");
    let matches = semver::VersionReq::parse(&wanted).is_ok_and(|req| req.matches(&version));
    if !matches {
        info!(version = %request.version, "auth refused: protocol version mismatch");
        return Err(KbsError::Auth(format!(
            "KBS Client Protocol Version Mismatch: expect {wanted} while the request is {}",
            request.version
        )));
    }
    if request.tee != Tee::Sample {
        warn!(
            tee = %request.tee,
            "auth for a hardware TEE: dev-kbs verifies only the sample TEE, so /attest will refuse it"
        );
    }
    let (id, session) = state.sessions.create(request.tee);
    info!(tee = %request.tee, session = %id, "auth: new session");
    let challenge = Challenge {
        nonce: session.nonce.clone(),
        extra_params: json!(""),
    };
    Ok(json_response(
        &challenge,
        Some(cookie_header(&id, &session)),
    ))
}

/// `POST /kbs/v0/attest`: checks the sample evidence and issues the token.
fn attest(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, KbsError> {
    let fail = |reason: &str| {
        info!("attest failed: {reason}");
        KbsError::Attest
    };
    let id = session_cookie(headers).ok_or_else(|| fail("cookie not found"))?;
    let session = state
        .sessions
        .get(&id)
        .ok_or_else(|| fail("session not found (unknown or expired)"))?;
    let cookie = Some(cookie_header(&id, &session));
    // An attested session answers with its token without looking at the
    // body, like a stock KBS.
    if let Some(token) = session.token {
        return Ok(json_response(&AttestationResponse { token }, cookie));
    }
    let attestation: Attestation =
        serde_json::from_slice(body).map_err(|e| fail(&format!("deserialize Attestation: {e}")))?;
    if session.tee != Tee::Sample {
        return Err(fail(&format!(
            "dev-kbs verifies only the sample TEE; this session is for {}",
            session.tee
        )));
    }
    let annotated = verify_sample(&attestation, &session.nonce)
        .map_err(|e| fail(&format!("verify TEE evidence failed: {e}")))?;
    let claims = state.signer.claims(annotated);
    let token = state
        .signer
        .sign(&claims)
        .map_err(|e| fail(&e.to_string()))?;
    let token = state
        .sessions
        .set_attested(&id, token)
        .ok_or_else(|| fail("session expired during attestation"))?;
    info!(session = %id, "attest: sample evidence bound to the session; token issued (the sample TEE proves nothing)");
    Ok(json_response(&AttestationResponse { token }, cookie))
}

/// `GET /kbs/v0/resource/<repository>/<type>/<tag>`: the resource as a JWE
/// to the attested TEE key, if the policy allows.
async fn get_resource(
    state: &AppState,
    uri: &Uri,
    headers: &HeaderMap,
    segments: Vec<String>,
) -> Result<Response, KbsError> {
    let claims = authorize(state, headers)?;
    let query = Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| {
            info!("resource: bad query string: {e}");
            KbsError::PluginInternal
        })?;
    let allowed = state
        .policy
        .allows(&claims, &segments, &query)
        .map_err(|e| {
            warn!("resource policy: {e}");
            KbsError::PolicyEngine
        })?;
    let name = segments.join("/");
    if !allowed {
        info!(resource = %name, "resource: denied by policy");
        return Err(KbsError::PolicyDeny);
    }
    let content = state.resources.read(&segments).await.map_err(|e| {
        info!("resource: {e}");
        KbsError::PluginInternal
    })?;
    let jwk = Value::Object(claims)
        .pointer(TEE_PUBKEY_POINTER)
        .cloned()
        .unwrap_or(Value::Null);
    let key = public_key_from_jwk(&jwk).map_err(|e| {
        info!("resource: the token's {e}");
        KbsError::PluginInternal
    })?;
    let jwe = encrypt_json(&content, &key).map_err(|e| {
        warn!("resource: encrypting: {e}");
        KbsError::PluginInternal
    })?;
    info!(resource = %name, "resource released (to a sample-TEE client: no real guarantee)");
    let mut response = Response::new(Body::from(jwe));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `POST /kbs/v0/resource/...` (admin): stores the body as the resource.
async fn write_resource(
    state: &AppState,
    headers: &HeaderMap,
    segments: Vec<String>,
    body: Bytes,
) -> Result<Response, KbsError> {
    admin(state, headers)?;
    if body.len() as u64 > MAX_RESOURCE_LEN {
        info!("resource write: {} bytes is too large", body.len());
        return Err(KbsError::PluginInternal);
    }
    state
        .resources
        .write(&segments, body.to_vec())
        .await
        .map_err(|e| {
            info!("resource write: {e}");
            KbsError::PluginInternal
        })?;
    info!(resource = %segments.join("/"), "resource written");
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /kbs/v0/resource/...` (admin): removes the resource.
async fn delete_resource(
    state: &AppState,
    headers: &HeaderMap,
    segments: Vec<String>,
) -> Result<Response, KbsError> {
    admin(state, headers)?;
    state.resources.delete(&segments).await.map_err(|e| {
        info!("resource delete: {e}");
        KbsError::PluginInternal
    })?;
    info!(resource = %segments.join("/"), "resource deleted");
    Ok(StatusCode::OK.into_response())
}

/// The claims of the request's token: the bearer token if there is one,
/// else the attested session's.
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<Map<String, Value>, KbsError> {
    let token = match bearer(headers) {
        Some(t) => t.to_string(),
        None => {
            let id = session_cookie(headers).ok_or(KbsError::TokenNotFound)?;
            let session = state.sessions.get(&id).ok_or(KbsError::TokenNotFound)?;
            session.token.ok_or(KbsError::TokenNotFound)?
        }
    };
    state.signer.verify(&token).map_err(|e| {
        info!("resource: {e}");
        KbsError::TokenVerifier
    })
}

/// Checks the admin bearer token (constant time).
fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), KbsError> {
    let Some(given) = bearer(headers) else {
        return Err(KbsError::AdminInit(NO_BEARER.into()));
    };
    match &state.admin_token {
        Some(expected) if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        Some(_) => {
            info!("admin: wrong bearer token");
            Err(KbsError::AdminInit("admin token mismatch".into()))
        }
        None => Err(KbsError::AdminInit(
            "admin writes are disabled (start dev-kbs with --admin-token)".into(),
        )),
    }
}

/// The `Authorization: Bearer` token, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `kbs-session-id` cookie, if any (in any `Cookie` header).
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_string())
}

/// `Set-Cookie: kbs-session-id=<id>; Expires=<date>`, as a stock KBS sends it.
fn cookie_header(id: &str, session: &Session) -> HeaderValue {
    let value = format!(
        "{SESSION_COOKIE}={id}; Expires={}",
        httpdate::fmt_http_date(session.expires_wall)
    );
    // Hex and an HTTP date are always valid header bytes.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A 200 JSON answer, with a cookie when given.
fn json_response<T: serde::Serialize>(body: &T, cookie: Option<HeaderValue>) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(c) = cookie {
        h.insert(header::SET_COOKIE, c);
    }
    response
}

/// The path segments after `resource/`, percent-decoded.
fn split_path(tail: &str) -> Vec<String> {
    tail.split('/').map(percent_decode).collect()
}

/// Percent-decodes one path segment; left as is when not valid UTF-8 after
/// decoding (the resource check then refuses it if it matters).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_bearers() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=b"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x=1; kbs-session-id=abc; y=2"),
        );
        assert_eq!(session_cookie(&h).as_deref(), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  t.o.k "),
        );
        assert_eq!(bearer(&h), Some("t.o.k"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic x"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("%2e%2E"), "..");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "%ff");
        assert_eq!(percent_decode("caf%C3%A9"), "caf\u{e9}");
    }

    #[test]
    fn set_cookie_has_the_reference_shape() {
        let sessions = Sessions::new(std::time::Duration::from_secs(300), 4);
        let (id, s) = sessions.create(Tee::Sample);
        let v = cookie_header(&id, &s);
        let v = v.to_str().unwrap();
        assert!(v.starts_with(&format!("kbs-session-id={id}; Expires=")));
        assert!(v.ends_with(" GMT"));
    }
}
