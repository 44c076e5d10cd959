//! The KBS protocol 0.4.0 messages, with the exact key names seen on the
//! wire (kebab-case at the top, snake_case inside `tee-evidence`). Shared by
//! the client and the development KBS so the two cannot drift apart.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tee::Tee;

/// The protocol version a KBS accepts (exact match).
pub const PROTOCOL_VERSION: &str = "0.4.0";
/// Every API path starts with this.
pub const API_PREFIX: &str = "/kbs/v0";
/// The session cookie's name.
pub const SESSION_COOKIE: &str = "kbs-session-id";
/// Error `type` URIs start with this; the rest is the error kind.
pub const ERROR_TYPE_PREFIX: &str = "https://github.com/confidential-containers/kbs/errors/";

/// `POST /kbs/v0/auth` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Must be [`PROTOCOL_VERSION`].
    pub version: String,
    /// The TEE the evidence will come from.
    pub tee: Tee,
    /// `{"supported-hash-algorithms": [...]}` (or `""`).
    #[serde(rename = "extra-params")]
    pub extra_params: Value,
}

/// `/auth` response: the nonce to bind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    /// Standard base64 of 32 random bytes; bound as the string itself.
    pub nonce: String,
    /// `""`, or `{"selected-hash-algorithm": "sha512"}`.
    #[serde(rename = "extra-params", default)]
    pub extra_params: Value,
}

/// `init-data` of the attestation request: the plaintext initdata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitDataPayload {
    /// `"toml"`.
    pub format: String,
    /// The TOML text, exactly as measured.
    pub body: String,
}

/// `runtime-data`: what the report data commits to (with the additional
/// evidence string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeData {
    /// The challenge nonce.
    pub nonce: String,
    /// The ephemeral public key as a JWK.
    #[serde(rename = "tee-pubkey")]
    pub tee_pubkey: Value,
}

/// `tee-evidence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompositeEvidence {
    /// The TEE's evidence JSON.
    pub primary_evidence: Value,
    /// A JSON map `{tee: evidence}` of device evidence as a *string*; `""`
    /// when there is none.
    #[serde(default)]
    pub additional_evidence: String,
}

/// `POST /kbs/v0/attest` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attestation {
    /// The initdata, or `null`.
    #[serde(rename = "init-data")]
    pub init_data: Option<InitDataPayload>,
    /// Nonce and key.
    #[serde(rename = "runtime-data")]
    pub runtime_data: RuntimeData,
    /// The evidence.
    #[serde(rename = "tee-evidence")]
    pub tee_evidence: CompositeEvidence,
}

/// `/attest` response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttestationResponse {
    /// The attestation token (an EAR JWT).
    pub token: String,
}

/// An RFC 7807 error body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInformation {
    /// [`ERROR_TYPE_PREFIX`] + the kind.
    #[serde(rename = "type")]
    pub error_type: String,
    /// Human-readable text.
    pub detail: String,
}

impl ErrorInformation {
    /// An error of `kind` (e.g. `PolicyDeny`).
    pub fn new(kind: &str, detail: impl Into<String>) -> Self {
        ErrorInformation {
            error_type: format!("{ERROR_TYPE_PREFIX}{kind}"),
            detail: detail.into(),
        }
    }

    /// The kind: the last part of the `type` URI.
    pub fn kind(&self) -> &str {
        self.error_type
            .strip_prefix(ERROR_TYPE_PREFIX)
            .unwrap_or(&self.error_type)
    }
}

/// Error kinds (the `type` suffix) that the client and the development KBS
/// use; the full list is in the reference notes.
pub mod errors {
    /// `/auth` or `/attest` failed.
    pub const ATTESTATION_ERROR: &str = "AttestationError";
    /// No (valid) session or token for a resource request.
    pub const TOKEN_NOT_FOUND: &str = "TokenNotFound";
    /// A bearer token did not verify.
    pub const TOKEN_VERIFIER_ERROR: &str = "TokenVerifierError";
    /// The resource policy denied the request.
    pub const POLICY_DENY: &str = "PolicyDeny";
    /// The plugin failed (also: resource not found, bad path).
    pub const PLUGIN_INTERNAL_ERROR: &str = "PluginInternalError";
    /// Unknown plugin or wrong method.
    pub const PLUGIN_NOT_FOUND: &str = "PluginNotFound";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn attestation_uses_the_wire_key_names() {
        let a = Attestation {
            init_data: None,
            runtime_data: RuntimeData {
                nonce: "n".into(),
                tee_pubkey: json!({"kty":"EC"}),
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: json!({"svn":"1"}),
                additional_evidence: String::new(),
            },
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            json!({"init-data": null, "runtime-data": {"nonce":"n","tee-pubkey":{"kty":"EC"}},
                   "tee-evidence": {"primary_evidence":{"svn":"1"},"additional_evidence":""}})
        );
        let r = Request {
            version: PROTOCOL_VERSION.into(),
            tee: Tee::Sample,
            extra_params: json!(""),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"version":"0.4.0","tee":"sample","extra-params":""})
        );
        assert!(serde_json::from_value::<Request>(
            json!({"version":"0.4.0","tee":"no-such-tee","extra-params":""})
        )
        .is_err());
    }

    #[test]
    fn error_kind() {
        let e: ErrorInformation = serde_json::from_str(
            r#"{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"Access denied by policy"}"#,
        )
        .unwrap();
        assert_eq!(e.kind(), "PolicyDeny");
        assert_eq!(
            ErrorInformation::new("PolicyDeny", "x"),
            ErrorInformation {
                detail: "x".into(),
                ..e
            }
        );
    }
}
