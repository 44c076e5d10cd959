//! The attestation token: an ES256 JWT shaped like the EAR token Trustee's
//! attestation service issues, signed by a P-256 key made at startup (so
//! tokens die with the process).
//!
//! Encoding and verification are written out here: a JWT is base64url JSON
//! plus a raw `r || s` ECDSA P-256/SHA-256 signature, which is less code
//! than wiring a JOSE crate, and only our own tokens are ever verified.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand_core::OsRng;
use serde_json::{json, Map, Value};

/// The `iss` claim.
pub const ISSUER: &str = "sealpod-dev-kbs";
/// The `eat_profile` claim Trustee's tokens carry (policies may check it).
pub const EAT_PROFILE: &str = "tag:github.com,2024:confidential-containers/Trustee";
/// Where the TEE's public key sits in the claims (a JSON pointer).
pub const TEE_PUBKEY_POINTER: &str =
    "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey";
/// Longest token accepted for verification (bounds the decoding work).
const MAX_TOKEN_LEN: usize = 256 * 1024;

/// Why a token does not verify.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header names another algorithm.
    #[error("the token is not ES256")]
    Algorithm,
    /// The signature is not ours.
    #[error("bad token signature")]
    Signature,
    /// Past its `exp`.
    #[error("the token expired at {0}")]
    Expired(u64),
    /// Signing failed (should not happen with a valid key).
    #[error("signing the token: {0}")]
    Sign(String),
}

/// Signs and verifies the tokens.
#[derive(Debug)]
pub struct TokenSigner {
    key: SigningKey,
    verifying: VerifyingKey,
    header_b64: String,
    ttl: Duration,
}

impl TokenSigner {
    /// A signer with a fresh key; tokens it signs live `ttl`.
    pub fn generate(ttl: Duration) -> Self {
        let key = SigningKey::random(&mut OsRng);
        let verifying = *key.verifying_key();
        let point = verifying.to_encoded_point(false);
        let coord = |c: Option<&p256::FieldBytes>| {
            URL_SAFE_NO_PAD.encode(c.map(|c| c.as_slice()).unwrap_or_default())
        };
        let header = json!({
            "alg": "ES256",
            "typ": "JWT",
            "jwk": {"kty": "EC", "crv": "P-256", "alg": "ES256", "x": coord(point.x()), "y": coord(point.y())},
        });
        TokenSigner {
            key,
            verifying,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            ttl,
        }
    }

    /// The claims of a token for sample evidence appraised now:
    /// `annotated_evidence` goes under `submods.cpu0`, like Trustee's EAR.
    pub fn claims(&self, annotated_evidence: Value) -> Value {
        let iat = unix_now();
        let exp = iat.saturating_add(self.ttl.as_secs());
        json!({
            "eat_profile": EAT_PROFILE,
            "iat": iat,
            "exp": exp,
            "iss": ISSUER,
            "ear.verifier-id": {
                "developer": "sealpod",
                "build": concat!("dev-kbs ", env!("CARGO_PKG_VERSION")),
            },
            "submods": {
                "cpu0": {
                    // What Trustee's default appraisal gives the sample TEE:
                    // its evidence proves nothing.
                    "ear.status": "contraindicated",
                    "ear.trustworthiness-vector": {
                        "instance-identity": 0, "configuration": 2, "executables": 33,
                        "file-system": 0, "hardware": 97, "runtime-opaque": 0,
                        "storage-opaque": 0, "sourced-data": 0,
                    },
                    "ear.appraisal-policy-id": "default",
                    "ear.veraison.annotated-evidence": annotated_evidence,
                    "ear.trustee.identifiers": {"validated": {}},
                },
            },
        })
    }

    /// Signs `claims` into a compact JWT.
    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{}.{payload}", self.header_b64);
        let sig: Signature = self
            .key
            .try_sign(input.as_bytes())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(sig.to_bytes())
        ))
    }

    /// The claims of `token` if we signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three parts"));
        };
        let header: Value = decode_json(h)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let sig = Signature::from_slice(&sig).map_err(|_| TokenError::Signature)?;
        let input = &token[..h.len() + 1 + p.len()];
        self.verifying
            .verify(input.as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = decode_json(p)?;
        let Value::Object(claims) = claims else {
            return Err(TokenError::Malformed("claims are not an object"));
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(TokenError::Malformed("no exp"))?;
        if unix_now() >= exp {
            return Err(TokenError::Expired(exp));
        }
        Ok(claims)
    }
}

/// Decodes one base64url JSON part of a token.
fn decode_json(part: &str) -> Result<Value, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed("part is not base64url"))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed("part is not JSON"))
}

/// Seconds since the epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let signer = TokenSigner::generate(Duration::from_secs(60));
        let claims = signer.claims(json!({"sample": {"svn": "1"}}));
        let token = signer.sign(&claims).unwrap();
        let got = signer.verify(&token).unwrap();
        assert_eq!(Value::Object(got), claims);

        let header: Value = decode_json(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["jwk"]["crv"], "P-256");

        // Another signer's token, a changed payload, a changed signature.
        let other = TokenSigner::generate(Duration::from_secs(60));
        assert!(signer.verify(&other.sign(&claims).unwrap()).is_err());
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(json!({"exp": u64::MAX}).to_string());
        assert!(matches!(
            signer.verify(&parts.join(".")),
            Err(TokenError::Signature)
        ));
        let mut sig = URL_SAFE_NO_PAD
            .decode(token.rsplit('.').next().unwrap())
            .unwrap();
        sig[10] ^= 1;
        let (head, _) = token.rsplit_once('.').unwrap();
        let bad = format!("{head}.{}", URL_SAFE_NO_PAD.encode(sig));
        assert!(signer.verify(&bad).is_err());
        for junk in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "..",
            "\u{e9}.\u{e9}.\u{e9}",
        ] {
            assert!(signer.verify(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let signer = TokenSigner::generate(Duration::from_secs(60));
        let mut claims = signer.claims(json!({}));
        claims["exp"] = json!(unix_now() - 1);
        let token = signer.sign(&claims).unwrap();
        assert!(matches!(signer.verify(&token), Err(TokenError::Expired(_))));
    }
}
