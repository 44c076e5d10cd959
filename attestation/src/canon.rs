//! RFC 8785 (JCS) canonical JSON and the `report_data` binding.
//!
//! The KBS binds evidence to a session by hashing the canonical JSON of
//! `{"additional-evidence", "nonce", "tee-pubkey"}` into the TEE's report
//! data. Canonicalization uses `serde_json_canonicalizer`, the same
//! implementation the reference client and verifier use, so the bytes match.

use serde::Serialize;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use crate::attester::REPORT_DATA_LEN;

/// The hash used for the `report_data` binding, negotiated in the
/// challenge's `extra-params.selected-hash-algorithm` (SHA-384 when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// SHA-256.
    Sha256,
    /// SHA-384 (the protocol default).
    #[default]
    Sha384,
    /// SHA-512.
    Sha512,
}

impl HashAlgorithm {
    /// The names the client offers in `supported-hash-algorithms`.
    pub const SUPPORTED: [&'static str; 3] = ["sha256", "sha384", "sha512"];

    /// Parses a protocol name (`sha256`, `sha384`, `sha512`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sha256" => Some(HashAlgorithm::Sha256),
            "sha384" => Some(HashAlgorithm::Sha384),
            "sha512" => Some(HashAlgorithm::Sha512),
            _ => None,
        }
    }

    /// The protocol name.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha256 => Sha256::digest(data).to_vec(),
            HashAlgorithm::Sha384 => Sha384::digest(data).to_vec(),
            HashAlgorithm::Sha512 => Sha512::digest(data).to_vec(),
        }
    }
}

/// The RFC 8785 canonical form of `value`.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(value)
}

/// The object the report data commits to, in the protocol's key names.
#[derive(Serialize)]
struct RuntimeDataBinding<'a> {
    #[serde(rename = "additional-evidence")]
    additional_evidence: &'a str,
    nonce: &'a str,
    #[serde(rename = "tee-pubkey")]
    tee_pubkey: &'a serde_json::Value,
}

/// The digest (unpadded) of the canonical
/// `{"additional-evidence","nonce","tee-pubkey"}` object.
pub fn runtime_data_digest(
    hash: HashAlgorithm,
    nonce: &str,
    tee_pubkey: &serde_json::Value,
    additional_evidence: &str,
) -> Vec<u8> {
    let binding = RuntimeDataBinding {
        additional_evidence,
        nonce,
        tee_pubkey,
    };
    // Serializing strings and an already-parsed JSON value cannot fail.
    let bytes = canonical_json(&binding).unwrap_or_default();
    hash.digest(&bytes)
}

/// The 64-byte report data: [`runtime_data_digest`] zero-padded (SHA-512
/// fills it exactly).
pub fn report_data(
    hash: HashAlgorithm,
    nonce: &str,
    tee_pubkey: &serde_json::Value,
    additional_evidence: &str,
) -> [u8; REPORT_DATA_LEN] {
    let digest = runtime_data_digest(hash, nonce, tee_pubkey, additional_evidence);
    let mut out = [0u8; REPORT_DATA_LEN];
    out[..digest.len()].copy_from_slice(&digest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_drops_whitespace() {
        let v = json!({"b": [1, 2.0, {"z": null, "a": "x"}], "a": "\u{20ac}\n", "c": 1e21});
        let got = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        // RFC 8785: keys sorted by UTF-16 code units, 2.0 -> 2, 1e21 -> 1e+21,
        // non-ASCII kept as UTF-8, control characters escaped.
        assert_eq!(
            got,
            "{\"a\":\"\u{20ac}\\n\",\"b\":[1,2,{\"a\":\"x\",\"z\":null}],\"c\":1e+21}"
        );
    }

    #[test]
    fn rfc8785_key_order_is_by_utf16_units() {
        // From RFC 8785 §3.2.3: "\u{20ac}" (U+20AC) sorts before "\u{1f600}"
        // (a surrogate pair starting 0xD83D) and after "\r".
        let v = json!({"\u{1f600}": 1, "\u{20ac}": 2, "\r": 3, "1": 4});
        let got = String::from_utf8(canonical_json(&v).unwrap()).unwrap();
        assert_eq!(got, "{\"\\r\":3,\"1\":4,\"\u{20ac}\":2,\"\u{1f600}\":1}");
    }

    #[test]
    fn report_data_is_sha384_of_the_canonical_binding_padded() {
        let pk = json!({"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"AA","y":"BB"});
        let rd = report_data(HashAlgorithm::Sha384, "n0nce", &pk, "");
        let expected_json = r#"{"additional-evidence":"","nonce":"n0nce","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"AA","y":"BB"}}"#;
        let expected = Sha384::digest(expected_json.as_bytes());
        assert_eq!(&rd[..48], expected.as_slice());
        assert_eq!(&rd[48..], &[0u8; 16]);
        // Another nonce or key gives other report data.
        assert_ne!(rd, report_data(HashAlgorithm::Sha384, "n0nce2", &pk, ""));
        let sha512 = report_data(HashAlgorithm::Sha512, "n0nce", &pk, "");
        assert_eq!(
            &sha512[..],
            Sha512::digest(expected_json.as_bytes()).as_slice()
        );
    }

    #[test]
    fn hash_names() {
        assert_eq!(
            HashAlgorithm::from_name("SHA384"),
            Some(HashAlgorithm::Sha384)
        );
        assert_eq!(HashAlgorithm::from_name("sm3"), None);
        assert_eq!(HashAlgorithm::default().name(), "sha384");
    }
}
