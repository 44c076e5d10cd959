//! End-to-end tests of the `dev-kbs` binary: each test starts the real
//! binary on a free port with its own resource directory, and speaks raw
//! HTTP to it, doing the KBS protocol by hand with the library's pieces
//! (TEE key, RFC 8785 binding, sample evidence, JWE decryption), so what is
//! checked is the wire: status codes, error `type`s and texts from the
//! reference tables, cookies, tokens and the resource JWE.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use attestation::attester::sample::SampleAttester;
use attestation::canon::{runtime_data_digest, HashAlgorithm};
use attestation::kbs::protocol::ErrorInformation;
use attestation::tee_key::{TeeKey, TeeKeyAlgorithm};
use attestation::Attester as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use integration_tests::kbs::{DevKbs, DevKbsOptions};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

const SECRET: &[u8] = b"the development secret";
const ATTEST_FAILED: &str = "Attestation error: RCAR handshake Attest failed";

/// A running dev-kbs (the shared fixture: killed on drop, its log printed
/// when the test fails) and an HTTP client for it.
struct Kbs {
    dev: DevKbs,
    url: String,
    client: reqwest::Client,
}

/// How a resource request authenticates.
enum Auth<'a> {
    None,
    Cookie(&'a str),
    Bearer(&'a str),
}

/// One HTTP answer.
struct Answer {
    status: StatusCode,
    set_cookie: Option<String>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts an error answer of `status` and `kind`; returns its detail.
    #[track_caller]
    fn error(&self, status: u16, kind: &str) -> String {
        let text = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status.as_u16(), status, "body: {text}");
        let info: ErrorInformation =
            serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(
            info.error_type,
            format!("https://github.com/confidential-containers/kbs/errors/{kind}")
        );
        info.detail
    }
}

impl Kbs {
    /// Starts dev-kbs with `default/key/1` and `default/key/2` in its
    /// resource directory, plus `args`.
    fn start(args: &[&str]) -> Kbs {
        Self::start_with(args, None)
    }

    fn start_with(args: &[&str], tls_ca: Option<&Path>) -> Kbs {
        let dev = DevKbs::start(
            Path::new(env!("CARGO_BIN_EXE_dev-kbs")),
            DevKbsOptions {
                extra_args: args.iter().map(|a| a.to_string()).collect(),
                ..Default::default()
            },
        );
        dev.put_resource("default/key/1", SECRET);
        dev.put_resource("default/key/2", b"two");
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30));
        if let Some(ca) = tls_ca {
            let pem = std::fs::read(ca).unwrap();
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        let url = dev.url().to_string();
        assert!(!url.ends_with(":0"), "the real port is printed: {url}");
        Kbs {
            dev,
            url,
            client: builder.build().unwrap(),
        }
    }

    fn log(&self) -> String {
        self.dev.log()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Answer {
        let r = build(self.client.request(method, format!("{}{path}", self.url)))
            .send()
            .await
            .unwrap();
        Answer {
            status: r.status(),
            set_cookie: r
                .headers()
                .get(SET_COOKIE)
                .map(|v| v.to_str().unwrap().to_string()),
            body: r.bytes().await.unwrap().to_vec(),
        }
    }

    async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        cookie: Option<&str>,
    ) -> Answer {
        self.send(reqwest::Method::POST, path, |mut b| {
            b = b.header(CONTENT_TYPE, "application/json").body(body);
            if let Some(c) = cookie {
                b = b.header(COOKIE, format!("kbs-session-id={c}"));
            }
            b
        })
        .await
    }

    async fn auth_raw(&self, version: &str, tee: &str) -> Answer {
        let body = json!({"version": version, "tee": tee,
                          "extra-params": {"supported-hash-algorithms": ["sha256", "sha384", "sha512", "sm3"]}});
        self.post("/kbs/v0/auth", body.to_string(), None).await
    }

    /// `/auth` for the sample TEE: the session id and the nonce.
    async fn auth(&self) -> (String, String) {
        let a = self.auth_raw("0.4.0", "sample").await;
        assert_eq!(a.status, StatusCode::OK);
        let id = session_id(&a);
        let nonce = a.json()["nonce"].as_str().unwrap().to_string();
        (id, nonce)
    }

    async fn attest(&self, cookie: Option<&str>, body: &Value) -> Answer {
        self.post("/kbs/v0/attest", body.to_string(), cookie).await
    }

    /// A full handshake: the session id, the key and the token.
    async fn handshake(&self, alg: TeeKeyAlgorithm) -> (String, TeeKey, String) {
        let (id, nonce) = self.auth().await;
        let key = TeeKey::generate(alg).unwrap();
        let a = self
            .attest(Some(&id), &bound_attestation(&nonce, &key))
            .await;
        assert_eq!(
            a.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&a.body)
        );
        let token = a.json()["token"].as_str().unwrap().to_string();
        (id, key, token)
    }

    async fn get(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.send(reqwest::Method::GET, path, |b| match auth {
            Auth::None => b,
            Auth::Cookie(c) => b.header(COOKIE, format!("kbs-session-id={c}")),
            Auth::Bearer(t) => b.header(AUTHORIZATION, format!("Bearer {t}")),
        })
        .await
    }

    async fn resource(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.get(&format!("/kbs/v0/resource/{path}"), auth).await
    }

    /// A request with a path reqwest would normalise (`..`), over raw TCP.
    fn raw_get(&self, path: &str, cookie: &str) -> (u16, Vec<u8>) {
        let addr = self.url.strip_prefix("http://").unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: kbs-session-id={cookie}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        s.read_to_end(&mut response).unwrap();
        let text = String::from_utf8_lossy(&response).to_string();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad response {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.as_bytes().to_vec())
            .unwrap_or_default();
        (status, body)
    }
}

/// The session id from a `Set-Cookie` of the reference shape.
fn session_id(a: &Answer) -> String {
    let c = a.set_cookie.as_deref().expect("Set-Cookie");
    let (pair, expires) = c.split_once("; Expires=").expect("Expires attribute");
    assert!(expires.ends_with(" GMT") && !expires.contains(';'), "{c}");
    let id = pair.strip_prefix("kbs-session-id=").expect("cookie name");
    assert_eq!(id.len(), 32, "{c}");
    assert!(
        id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{c}"
    );
    id.to_string()
}

/// An `/attest` body whose sample evidence carries `report_data`.
fn attestation_with(nonce: &str, key: &TeeKey, report_data: &[u8]) -> Value {
    let evidence = SampleAttester::new(None).evidence(report_data).unwrap();
    json!({
        "init-data": null,
        "runtime-data": {"nonce": nonce, "tee-pubkey": key.jwk()},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    })
}

/// An `/attest` body correctly bound to `nonce` and `key`.
fn bound_attestation(nonce: &str, key: &TeeKey) -> Value {
    let digest = runtime_data_digest(HashAlgorithm::Sha384, nonce, key.jwk(), "");
    attestation_with(nonce, key, &digest)
}

/// A JWT part decoded as JSON.
fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Decrypts a resource answer and returns the JWE's protected header too.
fn open(a: &Answer, key: &TeeKey) -> (Vec<u8>, Value) {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let jwe = a.json();
    for member in ["protected", "encrypted_key", "iv", "ciphertext", "tag"] {
        assert!(jwe[member].is_string(), "{member} in {jwe}");
    }
    let protected: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwe["protected"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    (key.decrypt(&a.body).unwrap().to_vec(), protected)
}

async fn full_flow(alg: TeeKeyAlgorithm, wrap_alg: &str) {
    let kbs = Kbs::start(&[]);
    // The upstream client's first try: no credentials.
    kbs.resource("default/key/1", Auth::None)
        .await
        .error(401, "TokenNotFound");

    let a = kbs.auth_raw("0.4.0", "sample").await;
    assert_eq!(a.status, StatusCode::OK);
    let id = session_id(&a);
    let challenge = a.json();
    assert_eq!(challenge["extra-params"], "");
    let nonce = challenge["nonce"].as_str().unwrap().to_string();
    assert_eq!(STANDARD.decode(&nonce).unwrap().len(), 32);

    let key = TeeKey::generate(alg).unwrap();
    let a = kbs
        .attest(Some(&id), &bound_attestation(&nonce, &key))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(session_id(&a), id, "the cookie is re-sent");
    let token = a.json()["token"].as_str().unwrap().to_string();

    let header = jwt_part(&token, 0);
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "JWT");
    assert_eq!(header["jwk"]["kty"], "EC");
    assert_eq!(header["jwk"]["crv"], "P-256");
    let claims = jwt_part(&token, 1);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        300
    );
    assert!(claims["iss"].is_string());
    assert_eq!(
        claims["eat_profile"],
        "tag:github.com,2024:confidential-containers/Trustee"
    );
    let cpu0 = &claims["submods"]["cpu0"];
    assert!(cpu0["ear.status"].is_string());
    let annotated = &cpu0["ear.veraison.annotated-evidence"];
    assert_eq!(
        annotated["runtime_data_claims"],
        json!({"additional-evidence": "", "nonce": nonce, "tee-pubkey": key.jwk()})
    );
    assert_eq!(annotated["sample"]["svn"], "1");
    assert!(annotated.get("init_data_claims").is_none());

    // Re-attesting an attested session gives the same token, whatever the body.
    let other = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
    let again = kbs.attest(Some(&id), &bound_attestation("x", &other)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["token"], token.as_str());

    // The resource, with the cookie and with the token (passport mode).
    let (plain, protected) = open(
        &kbs.resource("default/key/1", Auth::Cookie(&id)).await,
        &key,
    );
    assert_eq!(plain, SECRET);
    assert_eq!(protected["alg"], wrap_alg);
    assert_eq!(protected["enc"], "A256GCM");
    let (plain, _) = open(
        &kbs.resource("default/key/2", Auth::Bearer(&token)).await,
        &key,
    );
    assert_eq!(plain, b"two");
    // Another key cannot open it.
    assert!(other
        .decrypt(&kbs.resource("default/key/1", Auth::Cookie(&id)).await.body)
        .is_err());
}

#[tokio::test]
async fn full_flow_with_an_ec_key() {
    full_flow(TeeKeyAlgorithm::EcP256, "ECDH-ES+A256KW").await;
}

#[tokio::test]
async fn full_flow_with_an_rsa_key() {
    full_flow(TeeKeyAlgorithm::Rsa, "RSA-OAEP-256").await;
}

#[tokio::test]
async fn init_data_goes_into_the_token() {
    let kbs = Kbs::start(&[]);
    let (id, nonce) = kbs.auth().await;
    let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
    let mut body = bound_attestation(&nonce, &key);
    body["init-data"] = json!({"format": "toml", "body":
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = \"x = 1\"\n"});
    let a = kbs.attest(Some(&id), &body).await;
    assert_eq!(a.status, StatusCode::OK);
    let claims = jwt_part(a.json()["token"].as_str().unwrap(), 1);
    let init = &claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["init_data_claims"];
    assert_eq!(init["algorithm"], "sha384");
    assert_eq!(init["data"]["aa.toml"], "x = 1");
}

#[tokio::test]
async fn auth_errors_match_the_reference() {
    let kbs = Kbs::start(&[]);
    let auth_failed = "Attestation error: RCAR handshake Auth failed: ";
    for (version, detail) in [
        (
            "0.3.0",
            "KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.3.0",
        ),
        (
            "0.4.1",
            "KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.4.1",
        ),
        ("1.0", "failed to parse KBS version"),
    ] {
        let d = kbs
            .auth_raw(version, "sample")
            .await
            .error(401, "AttestationError");
        assert_eq!(d, format!("{auth_failed}{detail}"));
    }
    let d = kbs
        .auth_raw("0.4.0", "no-such-tee")
        .await
        .error(401, "AttestationError");
    assert_eq!(d, format!("{auth_failed}deserialize Request"));
    let d = kbs
        .post("/kbs/v0/auth", "not json", None)
        .await
        .error(401, "AttestationError");
    assert_eq!(d, format!("{auth_failed}deserialize Request"));
    // `extra-params` may be "" and any TEE is accepted at /auth.
    let a = kbs
        .post(
            "/kbs/v0/auth",
            r#"{"version":"0.4.0","tee":"tdx","extra-params":""}"#,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);

    let d = kbs
        .get("/kbs/v0/auth", Auth::None)
        .await
        .error(404, "PluginNotFound");
    assert_eq!(d, "Plugin auth not found");
    let d = kbs
        .get("/kbs/v0/attest", Auth::None)
        .await
        .error(404, "PluginNotFound");
    assert_eq!(d, "Plugin attest not found");
    let d = kbs
        .get("/kbs/v0/nosuchplugin/a/b", Auth::None)
        .await
        .error(404, "PluginNotFound");
    assert_eq!(d, "Plugin nosuchplugin not found");
    assert_eq!(kbs.get("/healthz", Auth::None).await.status, StatusCode::OK);
    // Bodies are capped.
    let huge = vec![b' '; 2 * 1024 * 1024];
    assert!(kbs
        .post("/kbs/v0/auth", huge, None)
        .await
        .status
        .is_client_error());
}

#[tokio::test]
async fn attest_errors_match_the_reference() {
    let kbs = Kbs::start(&[]);
    let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
    let (id, nonce) = kbs.auth().await;

    // Wrong nonce, then the retry on the same session succeeds.
    let wrong = STANDARD.encode([0u8; 32]);
    let d = kbs
        .attest(Some(&id), &bound_attestation(&wrong, &key))
        .await
        .error(401, "AttestationError");
    assert_eq!(d, ATTEST_FAILED);

    // Unbound report data: other bytes, another key's binding, sha256.
    let other = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
    let unbound = [
        runtime_data_digest(HashAlgorithm::Sha384, &nonce, key.jwk(), "x"),
        runtime_data_digest(HashAlgorithm::Sha384, &nonce, other.jwk(), ""),
        runtime_data_digest(HashAlgorithm::Sha256, &nonce, key.jwk(), ""),
    ];
    for rd in unbound {
        let d = kbs
            .attest(Some(&id), &attestation_with(&nonce, &key, &rd))
            .await
            .error(401, "AttestationError");
        assert_eq!(d, ATTEST_FAILED);
    }
    // No cookie, unknown cookie, missing fields, not JSON.
    let body = bound_attestation(&nonce, &key);
    assert_eq!(
        kbs.attest(None, &body).await.error(401, "AttestationError"),
        ATTEST_FAILED
    );
    assert_eq!(
        kbs.attest(Some("00112233445566778899aabbccddeeff"), &body)
            .await
            .error(401, "AttestationError"),
        ATTEST_FAILED
    );
    assert_eq!(
        kbs.attest(Some(&id), &json!({}))
            .await
            .error(401, "AttestationError"),
        ATTEST_FAILED
    );
    assert_eq!(
        kbs.post("/kbs/v0/attest", "{", Some(&id))
            .await
            .error(401, "AttestationError"),
        ATTEST_FAILED
    );
    // The zero-padded 64-byte form of the digest is accepted too, and the
    // failed attempts did not consume the session.
    let mut padded = runtime_data_digest(HashAlgorithm::Sha384, &nonce, key.jwk(), "");
    padded.resize(64, 0);
    let a = kbs
        .attest(Some(&id), &attestation_with(&nonce, &key, &padded))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json()["token"].is_string());

    // A session for a hardware TEE cannot attest: nothing is verified here.
    let a = kbs.auth_raw("0.4.0", "snp").await;
    let snp = session_id(&a);
    let nonce = a.json()["nonce"].as_str().unwrap().to_string();
    assert_eq!(
        kbs.attest(Some(&snp), &bound_attestation(&nonce, &key))
            .await
            .error(401, "AttestationError"),
        ATTEST_FAILED
    );
    // The reasons are in the log, not in the answers.
    let log = kbs.log();
    assert!(log.contains("nonce"), "{log}");
    assert!(log.contains("REPORT_DATA"), "{log}");
}

#[tokio::test]
async fn resource_authorisation_errors() {
    let kbs = Kbs::start(&[]);
    let (authed, _) = kbs.auth().await;
    let (_, _, token) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;

    for auth in [
        Auth::None,
        Auth::Cookie(&authed),
        Auth::Cookie("00112233445566778899aabbccddeeff"),
    ] {
        let d = kbs
            .resource("default/key/1", auth)
            .await
            .error(401, "TokenNotFound");
        assert_eq!(d, "Attestation Token not found");
    }
    let d = kbs
        .resource("default/key/1", Auth::Bearer("garbage"))
        .await
        .error(401, "TokenVerifierError");
    assert_eq!(d, "Token Verifier error");

    // Tampered signature, and tampered claims under the old signature.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[5] ^= 0x01;
    let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode(&sig));
    kbs.resource("default/key/1", Auth::Bearer(&tampered))
        .await
        .error(401, "TokenVerifierError");
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = jwt_part(&token, 1);
    claims["exp"] = json!(u64::MAX / 2);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    kbs.resource("default/key/1", Auth::Bearer(&forged))
        .await
        .error(401, "TokenVerifierError");

    // A token from another dev-kbs (another signing key) is refused.
    let other = Kbs::start(&[]);
    let (_, _, foreign) = other.handshake(TeeKeyAlgorithm::EcP256).await;
    kbs.resource("default/key/1", Auth::Bearer(&foreign))
        .await
        .error(401, "TokenVerifierError");
}

#[tokio::test]
async fn resource_path_errors() {
    let kbs = Kbs::start(&[]);
    let (id, _, _) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;
    // A link out of the resource directory.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        kbs.dev.resources().join("default/key/out"),
    )
    .unwrap();
    for path in [
        "default/key/does-not-exist",
        "nosuchrepo/key/1",
        "default/key",
        "default/key/1/extra",
        "default//1",
        "default/key%2F1/x",
        "default/%2E%2E/1",
        "default/key/out",
    ] {
        let d = kbs
            .resource(path, Auth::Cookie(&id))
            .await
            .error(401, "PluginInternalError");
        assert_eq!(d, "Plugin internal error", "{path}");
    }
    // A literal `..` (which HTTP clients normalise away) over raw TCP.
    for path in [
        "/kbs/v0/resource/default/../1",
        "/kbs/v0/resource/../default/key",
    ] {
        let (status, body) = kbs.raw_get(path, &id);
        assert_eq!(status, 401, "{path}");
        let info: ErrorInformation = serde_json::from_slice(&body).unwrap();
        assert_eq!(info.kind(), "PluginInternalError", "{path}");
    }
    // The control still works.
    assert_eq!(
        kbs.resource("default/key/1", Auth::Cookie(&id))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn deny_sample_policy_denies_before_the_lookup() {
    let kbs = Kbs::start(&["--policy", "deny-sample"]);
    let (id, _, token) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;
    for path in ["default/key/1", "default/key/does-not-exist"] {
        let d = kbs
            .resource(path, Auth::Cookie(&id))
            .await
            .error(401, "PolicyDeny");
        assert_eq!(d, "Access denied by policy");
    }
    kbs.resource("default/key/1", Auth::Bearer(&token))
        .await
        .error(401, "PolicyDeny");
}

#[tokio::test]
async fn a_rego_policy_allows_one_path_only() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("one.rego");
    std::fs::write(
        &policy,
        r#"package policy

default allow = false

allow if {
    data.plugin == "resource"
    data["resource-path"] == ["default", "key", "1"]
    input.submods.cpu0["ear.veraison.annotated-evidence"].sample.svn == "1"
    not data.query.nope
}
"#,
    )
    .unwrap();
    let kbs = Kbs::start(&["--policy", policy.to_str().unwrap()]);
    let (id, key, _) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;
    let (plain, _) = open(
        &kbs.resource("default/key/1", Auth::Cookie(&id)).await,
        &key,
    );
    assert_eq!(plain, SECRET);
    kbs.resource("default/key/2", Auth::Cookie(&id))
        .await
        .error(401, "PolicyDeny");
    kbs.resource("default/key/1?nope=1", Auth::Cookie(&id))
        .await
        .error(401, "PolicyDeny");
    // A policy that does not compile stops the start.
    let bad = dir.path().join("bad.rego");
    std::fs::write(&bad, "not rego").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dev-kbs"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--policy",
            bad.to_str().unwrap(),
            "--resources",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn expired_tokens_and_sessions() {
    // A 2 s lifetime leaves at least 1 s of validity (claims are in whole seconds).
    let kbs = Kbs::start(&["--token-ttl", "2", "--session-ttl", "2"]);
    let (authed, nonce) = kbs.auth().await;
    let (id, key, token) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;
    assert_eq!(
        kbs.resource("default/key/1", Auth::Bearer(&token))
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(3100)).await;
    kbs.resource("default/key/1", Auth::Bearer(&token))
        .await
        .error(401, "TokenVerifierError");
    kbs.resource("default/key/1", Auth::Cookie(&id))
        .await
        .error(401, "TokenNotFound");
    let d = kbs
        .attest(Some(&authed), &bound_attestation(&nonce, &key))
        .await
        .error(401, "AttestationError");
    assert_eq!(d, ATTEST_FAILED);
}

#[tokio::test]
async fn the_oldest_sessions_are_dropped_beyond_the_cap() {
    let kbs = Kbs::start(&["--max-sessions", "2"]);
    let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
    let (first, first_nonce) = kbs.auth().await;
    kbs.auth().await;
    let (third, third_nonce) = kbs.auth().await;
    kbs.attest(Some(&first), &bound_attestation(&first_nonce, &key))
        .await
        .error(401, "AttestationError");
    let a = kbs
        .attest(Some(&third), &bound_attestation(&third_nonce, &key))
        .await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn admin_writes_need_the_admin_token() {
    // Without --admin-token: the reference's answer, even when attested.
    let plain = Kbs::start(&[]);
    let (id, _, _) = plain.handshake(TeeKeyAlgorithm::EcP256).await;
    let write = |kbs: &Kbs, bearer: Option<&str>, body: &'static [u8]| {
        let cookie = id.clone();
        let bearer = bearer.map(str::to_string);
        let url = format!("{}/kbs/v0/resource/default/key/new", kbs.url);
        let mut r = kbs
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(COOKIE, format!("kbs-session-id={cookie}"))
            .body(body);
        if let Some(b) = bearer {
            r = r.header(AUTHORIZATION, format!("Bearer {b}"));
        }
        async move {
            let r = r.send().await.unwrap();
            Answer {
                status: r.status(),
                set_cookie: None,
                body: r.bytes().await.unwrap().to_vec(),
            }
        }
    };
    let d = write(&plain, None, b"x")
        .await
        .error(401, "AdminAuthInitialization");
    assert_eq!(
        d,
        "failed to initialize [admin] configuration: Failed to parse HTTP Auth Bearer header"
    );
    write(&plain, Some("anything"), b"x")
        .await
        .error(401, "AdminAuthInitialization");
    let d = plain
        .post("/kbs/v0/resource-policy", r#"{"policy":""}"#, None)
        .await
        .error(401, "AdminAuthAccess");
    assert_eq!(
        d,
        "admin access denied for endpoint resource-policy: Failed to parse HTTP Auth Bearer header"
    );
    assert!(!plain.dev.resources().join("default/key/new").exists());

    // With --admin-token: the right bearer writes, then the resource is served.
    let kbs = Kbs::start(&["--admin-token", "s3cret-admin"]);
    let (id, key, _) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;
    write(&kbs, Some("wrong"), b"x")
        .await
        .error(401, "AdminAuthInitialization");
    let a = write(&kbs, Some("s3cret-admin"), b"written by admin").await;
    assert_eq!(a.status, StatusCode::OK);
    let (got, _) = open(
        &kbs.resource("default/key/new", Auth::Cookie(&id)).await,
        &key,
    );
    assert_eq!(got, b"written by admin");
    let a = kbs
        .send(
            reqwest::Method::DELETE,
            "/kbs/v0/resource/default/key/new",
            |b| b.header(AUTHORIZATION, "Bearer s3cret-admin"),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    kbs.resource("default/key/new", Auth::Cookie(&id))
        .await
        .error(401, "PluginInternalError");
}

#[tokio::test]
async fn serves_https_with_the_given_certificate() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/dev-kbs-tls");
    let cert = data.join("cert.pem");
    let key_pem = data.join("key.pem");
    let kbs = Kbs::start_with(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
        Some(&data.join("ca.pem")),
    );
    assert!(kbs.url.starts_with("https://127.0.0.1:"), "{}", kbs.url);
    let (id, key, _) = kbs.handshake(TeeKeyAlgorithm::EcP256).await;
    let (plain, _) = open(
        &kbs.resource("default/key/1", Auth::Cookie(&id)).await,
        &key,
    );
    assert_eq!(plain, SECRET);
}

#[test]
fn says_loudly_that_it_verifies_no_hardware_evidence() {
    let out = Command::new(env!("CARGO_BIN_EXE_dev-kbs"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("NO hardware evidence"), "{help}");
    assert!(
        help.contains("--policy") && help.contains("--token-ttl"),
        "{help}"
    );

    let kbs = Kbs::start(&[]);
    let log = kbs.log();
    assert!(
        log.contains("WARN") && log.contains("NO hardware evidence"),
        "{log}"
    );
}
