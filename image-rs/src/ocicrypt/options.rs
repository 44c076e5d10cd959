//! The two option documents of an encrypted layer, parsed and written byte
//! for byte as Go ocicrypt does (Go `[]byte` fields are standard base64).
//!
//! - [`PublicOptions`] sit in the clear in the `pubopts` annotation: the
//!   cipher name and the HMAC of the ciphertext.
//! - [`PrivateOptions`] are the wrapped secret (JWE or key-provider packet):
//!   the layer key, the CTR nonce and the digest of the plain blob.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::spec::CIPHER_AES_256_CTR_HMAC_SHA256;
use crate::digest::Digest;

/// Length of the AES-256 layer key.
pub const SYMKEY_LEN: usize = 32;
/// Length of the AES-CTR initial counter block.
pub const NONCE_LEN: usize = 16;
/// Length of the HMAC-SHA256 tag in the public options.
pub const HMAC_LEN: usize = 32;

/// Largest option document we parse (they are a few hundred bytes), against
/// memory abuse through a hostile annotation.
const MAX_OPTIONS_LEN: usize = 64 * 1024;

/// Why an options document was refused. Messages name the field and never
/// quote secret values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    /// Base64 or JSON syntax, or a missing/ill-typed field.
    #[error("parsing the layer's {which}: {reason}; the image was not encrypted by ocicrypt or its annotations were modified")]
    Malformed {
        /// `public options (pubopts annotation)` or `private options`.
        which: &'static str,
        /// What is wrong (no secret content).
        reason: String,
    },
    /// A cipher other than the one ocicrypt defines.
    #[error("layer cipher {0:?} is not supported: ocicrypt defines only AES_256_CTR_HMAC_SHA256; the image was encrypted by an incompatible tool")]
    UnsupportedCipher(String),
}

fn malformed(which: &'static str, reason: impl Into<String>) -> OptionsError {
    OptionsError::Malformed {
        which,
        reason: reason.into(),
    }
}

const PUBLIC: &str = "public options (pubopts annotation)";
const PRIVATE: &str = "private options";

/// `org.opencontainers.image.enc.pubopts`: what anyone may see about the
/// layer cipher. Parsing refuses any cipher but AES_256_CTR_HMAC_SHA256 and
/// an HMAC that is not 32 bytes, so later code can rely on both.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicOptions {
    /// Cipher name (always [`CIPHER_AES_256_CTR_HMAC_SHA256`] once parsed).
    pub cipher: String,
    /// HMAC-SHA256 of the whole ciphertext, keyed with the layer key.
    pub hmac: Vec<u8>,
    /// Cipher options (empty for this cipher; kept to round-trip).
    pub cipheroptions: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for PublicOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicOptions")
            .field("cipher", &self.cipher)
            .field("hmac", &hex::encode(&self.hmac))
            .field("cipheroptions", &self.cipheroptions.keys())
            .finish()
    }
}

#[derive(Deserialize)]
struct PublicJson {
    cipher: Option<String>,
    hmac: Option<String>,
    cipheroptions: Option<BTreeMap<String, String>>,
}

impl PublicOptions {
    /// Public options for a layer encrypted with AES_256_CTR_HMAC_SHA256.
    pub fn new(hmac: [u8; HMAC_LEN]) -> Self {
        PublicOptions {
            cipher: CIPHER_AES_256_CTR_HMAC_SHA256.to_string(),
            hmac: hmac.to_vec(),
            cipheroptions: BTreeMap::new(),
        }
    }

    /// Parses the annotation value (standard base64 of the JSON).
    pub fn from_annotation(value: &str) -> Result<Self, OptionsError> {
        if value.len() > MAX_OPTIONS_LEN {
            return Err(malformed(PUBLIC, "annotation is implausibly large"));
        }
        let json = STANDARD
            .decode(value.trim())
            .map_err(|_| malformed(PUBLIC, "annotation is not standard base64"))?;
        Self::from_json(&json)
    }

    /// Parses the JSON document.
    pub fn from_json(json: &[u8]) -> Result<Self, OptionsError> {
        let raw: PublicJson = serde_json::from_slice(json)
            .map_err(|e| malformed(PUBLIC, format!("not the expected JSON ({e})")))?;
        let cipher = raw
            .cipher
            .ok_or_else(|| malformed(PUBLIC, "no \"cipher\" field"))?;
        if cipher != CIPHER_AES_256_CTR_HMAC_SHA256 {
            return Err(OptionsError::UnsupportedCipher(
                cipher.chars().take(100).collect(),
            ));
        }
        let hmac = raw
            .hmac
            .ok_or_else(|| malformed(PUBLIC, "no \"hmac\" field"))?;
        let hmac = STANDARD
            .decode(hmac)
            .map_err(|_| malformed(PUBLIC, "\"hmac\" is not standard base64"))?;
        if hmac.len() != HMAC_LEN {
            return Err(malformed(
                PUBLIC,
                format!("\"hmac\" is {} bytes, HMAC-SHA256 is 32", hmac.len()),
            ));
        }
        let mut cipheroptions = BTreeMap::new();
        for (k, v) in raw.cipheroptions.unwrap_or_default() {
            let v = STANDARD.decode(v).map_err(|_| {
                malformed(
                    PUBLIC,
                    format!("cipheroptions {k:?} is not standard base64"),
                )
            })?;
            cipheroptions.insert(k, v);
        }
        Ok(PublicOptions {
            cipher,
            hmac,
            cipheroptions,
        })
    }

    /// The JSON document, field for field as Go's `encoding/json` writes it.
    pub fn to_json(&self) -> Vec<u8> {
        let map: serde_json::Map<String, serde_json::Value> = self
            .cipheroptions
            .iter()
            .map(|(k, v)| (k.clone(), STANDARD.encode(v).into()))
            .collect();
        format!(
            "{{\"cipher\":{},\"hmac\":\"{}\",\"cipheroptions\":{}}}",
            serde_json::Value::from(self.cipher.as_str()),
            STANDARD.encode(&self.hmac),
            serde_json::Value::Object(map)
        )
        .into_bytes()
    }

    /// The annotation value: standard base64 of [`to_json`](Self::to_json).
    pub fn to_annotation(&self) -> String {
        STANDARD.encode(self.to_json())
    }
}

/// The wrapped secret of a layer: whoever holds it can decrypt the layer.
/// Debug output shows only the digest; the key is zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateOptions {
    /// AES-256 key of the layer cipher, also the HMAC key.
    pub symkey: Zeroizing<[u8; SYMKEY_LEN]>,
    /// Initial AES-CTR counter block.
    pub nonce: [u8; NONCE_LEN],
    /// Digest of the plain (still compressed) blob. A decrypter must check
    /// the decrypted stream against it: the HMAC only proves the ciphertext
    /// came from someone holding the key.
    pub digest: Digest,
}

impl fmt::Debug for PrivateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateOptions")
            .field("symkey", &"<redacted>")
            .field("nonce", &"<redacted>")
            .field("digest", &format_args!("{}", self.digest))
            .finish()
    }
}

/// A base64 JSON string decoded straight into zeroized memory.
struct SecretB64(Zeroizing<Vec<u8>>);

impl<'de> Deserialize<'de> for SecretB64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SecretB64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a standard base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SecretB64, E> {
                // Reserve first so decoding never reallocates (which would
                // leave an unzeroized copy behind).
                let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 4 * 3 + 3));
                STANDARD
                    .decode_vec(s, &mut out)
                    .map_err(|_| E::custom("a value is not standard base64"))?;
                Ok(SecretB64(out))
            }
        }
        d.deserialize_str(V)
    }
}

#[derive(Deserialize)]
struct PrivateJson {
    symkey: Option<SecretB64>,
    digest: Option<String>,
    cipheroptions: Option<BTreeMap<String, SecretB64>>,
}

impl PrivateOptions {
    /// Options from their parts.
    pub fn new(symkey: [u8; SYMKEY_LEN], nonce: [u8; NONCE_LEN], digest: Digest) -> Self {
        PrivateOptions {
            symkey: Zeroizing::new(symkey),
            nonce,
            digest,
        }
    }

    /// Parses the (unwrapped) JSON document. Errors describe the field, never
    /// its value.
    pub fn from_json(json: &[u8]) -> Result<Self, OptionsError> {
        if json.len() > MAX_OPTIONS_LEN {
            return Err(malformed(PRIVATE, "document is implausibly large"));
        }
        // serde_json messages can quote input; report only the position.
        let raw: PrivateJson = serde_json::from_slice(json).map_err(|e| {
            malformed(
                PRIVATE,
                format!(
                    "not the expected JSON ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let symkey = raw
            .symkey
            .ok_or_else(|| malformed(PRIVATE, "no \"symkey\" field"))?;
        let symkey: [u8; SYMKEY_LEN] = symkey.0.as_slice().try_into().map_err(|_| {
            malformed(
                PRIVATE,
                format!("\"symkey\" is {} bytes, AES-256 needs 32", symkey.0.len()),
            )
        })?;
        let symkey = Zeroizing::new(symkey);
        let opts = raw.cipheroptions.unwrap_or_default();
        let nonce = opts
            .get("nonce")
            .ok_or_else(|| malformed(PRIVATE, "no \"cipheroptions.nonce\" field"))?;
        let nonce: [u8; NONCE_LEN] = nonce.0.as_slice().try_into().map_err(|_| {
            malformed(
                PRIVATE,
                format!("\"nonce\" is {} bytes, AES-CTR needs 16", nonce.0.len()),
            )
        })?;
        let digest = raw
            .digest
            .ok_or_else(|| malformed(PRIVATE, "no \"digest\" field"))?;
        let digest: Digest = digest
            .parse()
            .map_err(|e| malformed(PRIVATE, format!("\"digest\": {e}")))?;
        Ok(PrivateOptions {
            symkey,
            nonce,
            digest,
        })
    }

    /// The JSON document exactly as Go ocicrypt writes it
    /// (`{"symkey":..,"digest":..,"cipheroptions":{"nonce":..}}`), in
    /// zeroized memory.
    pub fn to_json(&self) -> Zeroizing<Vec<u8>> {
        let mut key_b64 = Zeroizing::new(String::with_capacity(48));
        STANDARD.encode_string(self.symkey.as_slice(), &mut key_b64);
        let nonce_b64 = STANDARD.encode(self.nonce);
        let digest = self.digest.to_string();
        let parts: [&[u8]; 7] = [
            b"{\"symkey\":\"",
            key_b64.as_bytes(),
            b"\",\"digest\":\"",
            digest.as_bytes(),
            b"\",\"cipheroptions\":{\"nonce\":\"",
            nonce_b64.as_bytes(),
            b"\"}}",
        ];
        let mut out = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
        for p in parts {
            out.extend_from_slice(p);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn public_options_round_trip_go_bytes() {
        // The pubopts annotation of the skopeo-made `rsa` vector.
        let ann = "eyJjaXBoZXIiOiJBRVNfMjU2X0NUUl9ITUFDX1NIQTI1NiIsImhtYWMiOiJFcWRIbVJaOTVOMFA0UzlHSmhoeEg3R3VkeXJnc3RhTll5RTlRTUZVbHdvPSIsImNpcGhlcm9wdGlvbnMiOnt9fQ==";
        let p = PublicOptions::from_annotation(ann).unwrap();
        assert_eq!(p.cipher, CIPHER_AES_256_CTR_HMAC_SHA256);
        assert_eq!(p.hmac.len(), 32);
        assert!(p.cipheroptions.is_empty());
        assert_eq!(p.to_annotation(), ann);
        assert_eq!(PublicOptions::new(p.hmac.clone().try_into().unwrap()), p);
    }

    #[test]
    fn public_options_refuse_other_ciphers_and_bad_hmac() {
        let other = br#"{"cipher":"AES_128_GCM","hmac":"AAAA","cipheroptions":{}}"#;
        let e = PublicOptions::from_json(other).unwrap_err();
        assert!(matches!(e, OptionsError::UnsupportedCipher(ref c) if c == "AES_128_GCM"));
        assert!(e.to_string().contains("AES_256_CTR_HMAC_SHA256"));
        let short = br#"{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"AAAA","cipheroptions":{}}"#;
        assert!(PublicOptions::from_json(short)
            .unwrap_err()
            .to_string()
            .contains("3 bytes"));
        assert!(PublicOptions::from_annotation("not base64!").is_err());
        // Go writes a nil map as null.
        let null = br#"{"cipher":"AES_256_CTR_HMAC_SHA256","hmac":"EqdHmRZ95N0P4S9GJhhxH7GudyrgstaNYyE9QMFUlwo=","cipheroptions":null}"#;
        assert!(PublicOptions::from_json(null).is_ok());
    }

    #[test]
    fn private_options_round_trip_and_redaction() {
        let digest = Digest::of(Algorithm::Sha256, b"blob");
        let p = PrivateOptions::new([7u8; 32], [9u8; 16], digest.clone());
        let json = p.to_json();
        let text = std::str::from_utf8(&json).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"symkey\":\"{}\",\"digest\":\"{digest}\",\"cipheroptions\":{{\"nonce\":\"{}\"}}}}",
                STANDARD.encode([7u8; 32]),
                STANDARD.encode([9u8; 16])
            )
        );
        let back = PrivateOptions::from_json(&json).unwrap();
        assert_eq!(back, p);
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("7, 7") && !dbg.contains("BwcH"), "{dbg}");
        assert!(dbg.contains(&digest.to_string()));
    }

    #[test]
    fn private_options_errors_do_not_quote_the_key() {
        let key = STANDARD.encode([0x41u8; 31]);
        let short = format!(
            r#"{{"symkey":"{key}","digest":"sha256:{}","cipheroptions":{{"nonce":"AAAAAAAAAAAAAAAAAAAAAA=="}}}}"#,
            "0".repeat(64)
        );
        let e = PrivateOptions::from_json(short.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("31 bytes"), "{e}");
        assert!(!e.to_string().contains(&key));
        let bad = br#"{"symkey":"QUFB#UFB","digest":"x"}"#;
        let e = PrivateOptions::from_json(bad).unwrap_err().to_string();
        assert!(!e.contains("QUFB"), "{e}");
        let missing_nonce = format!(
            r#"{{"symkey":"{}","digest":"sha256:{}"}}"#,
            STANDARD.encode([1u8; 32]),
            "0".repeat(64)
        );
        assert!(PrivateOptions::from_json(missing_nonce.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("nonce"));
    }
}
