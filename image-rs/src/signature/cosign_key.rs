//! Cosign's encrypted private key format, which skopeo's
//! `--sign-by-sigstore-private-key` also reads: a PEM block labelled
//! `ENCRYPTED SIGSTORE PRIVATE KEY` (or `ENCRYPTED COSIGN PRIVATE KEY`)
//! whose body is JSON:
//!
//! ```json
//! {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": "<b64>"},
//!  "cipher": {"name": "nacl/secretbox", "nonce": "<b64>"},
//!  "ciphertext": "<b64>"}
//! ```
//!
//! The secretbox key is scrypt(passphrase, salt); the plaintext is the
//! PKCS#8 DER private key; the ciphertext is NaCl's `tag || box`.
//! Every intermediate secret is zeroized.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer;
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use xsalsa20poly1305::aead::{AeadInPlace, KeyInit};
use xsalsa20poly1305::XSalsa20Poly1305;
use zeroize::Zeroizing;

use super::SignatureError;

/// PEM label skopeo/containers-image writes.
pub const LABEL_SIGSTORE: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label cosign writes.
pub const LABEL_COSIGN: &str = "ENCRYPTED COSIGN PRIVATE KEY";

/// A private key that signs sigstore payloads (ECDSA, as cosign makes them).
#[derive(Clone)]
pub enum SigningKey {
    /// ECDSA P-256 with SHA-256 (cosign's default).
    P256(p256::ecdsa::SigningKey),
    /// ECDSA P-384 with SHA-256 (as containers/image verifies).
    P384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::P256(_) => "SigningKey(ECDSA P-256, redacted)",
            SigningKey::P384(_) => "SigningKey(ECDSA P-384, redacted)",
        })
    }
}

fn key_err(reason: impl Into<String>) -> SignatureError {
    SignatureError::Key {
        key: "sigstore private key".into(),
        reason: reason.into(),
    }
}

impl SigningKey {
    /// A new random P-256 key.
    pub fn generate_p256() -> Self {
        SigningKey::P256(p256::ecdsa::SigningKey::random(&mut OsRng))
    }

    /// Parses PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SignatureError> {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Ok(SigningKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Ok(SigningKey::P384(k.into()));
        }
        Err(key_err(
            "the decrypted key is not an ECDSA P-256/P-384 PKCS#8 key (only ECDSA sigstore keys can sign here)",
        ))
    }

    /// Decrypts a cosign/sigstore encrypted private key.
    pub fn from_encrypted_pem(pem: &[u8], passphrase: &[u8]) -> Result<Self, SignatureError> {
        let (label, body) = pkcs8::der::pem::decode_vec(pem)
            .map_err(|e| key_err(format!("not a PEM file: {e}")))?;
        let body = Zeroizing::new(body);
        if label != LABEL_SIGSTORE && label != LABEL_COSIGN {
            return Err(key_err(format!(
                "PEM label {label:?} is not {LABEL_SIGSTORE:?} or {LABEL_COSIGN:?}"
            )));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| key_err(format!("the PEM body is not the expected JSON: {e}")))?;
        let s = |p: &str| v.pointer(p).and_then(Value::as_str);
        let n = |p: &str| v.pointer(p).and_then(Value::as_u64);
        if s("/kdf/name") != Some("scrypt") {
            return Err(key_err("kdf is not scrypt"));
        }
        if s("/cipher/name") != Some("nacl/secretbox") {
            return Err(key_err("cipher is not nacl/secretbox"));
        }
        let (big_n, r, p) = (
            n("/kdf/params/N").ok_or_else(|| key_err("no scrypt N"))?,
            n("/kdf/params/r").ok_or_else(|| key_err("no scrypt r"))?,
            n("/kdf/params/p").ok_or_else(|| key_err("no scrypt p"))?,
        );
        // Bounded so a hostile key file cannot ask for gigabytes of memory.
        if !big_n.is_power_of_two()
            || !(2..=1 << 20).contains(&big_n)
            || r == 0
            || r > 32
            || p == 0
            || p > 16
        {
            return Err(key_err(format!(
                "scrypt parameters N={big_n} r={r} p={p} are out of range"
            )));
        }
        let b64 = |p: &str| -> Result<Vec<u8>, SignatureError> {
            STANDARD
                .decode(s(p).ok_or_else(|| key_err(format!("no {p}")))?)
                .map_err(|_| key_err(format!("{p} is not base64")))
        };
        let salt = b64("/kdf/salt")?;
        let nonce = b64("/cipher/nonce")?;
        let ct = b64("/ciphertext")?;
        if nonce.len() != 24 || ct.len() < 16 {
            return Err(key_err("bad nonce or ciphertext length"));
        }
        let key = derive(
            passphrase,
            &salt,
            big_n.trailing_zeros() as u8,
            r as u32,
            p as u32,
        )?;
        let mut plain = Zeroizing::new(ct[16..].to_vec());
        XSalsa20Poly1305::new((&*key).into())
            .decrypt_in_place_detached(nonce.as_slice().into(), b"", &mut plain, ct[..16].into())
            .map_err(|_| {
                key_err("decryption failed: wrong passphrase, or the key file was modified")
            })?;
        Self::from_pkcs8_der(&plain)
    }

    /// Encrypts this key in the cosign format (scrypt N=32768, r=8, p=1),
    /// with the label skopeo writes.
    pub fn to_encrypted_pem(&self, passphrase: &[u8]) -> Result<String, SignatureError> {
        let der = match self {
            SigningKey::P256(k) => p256::SecretKey::from(k).to_pkcs8_der(),
            SigningKey::P384(k) => p384::SecretKey::from(k).to_pkcs8_der(),
        }
        .map_err(|e| key_err(format!("encoding: {e}")))?;
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut salt);
        OsRng.fill_bytes(&mut nonce);
        let key = derive(passphrase, &salt, 15, 8, 1)?;
        let mut buf = Zeroizing::new(der.as_bytes().to_vec());
        let tag = XSalsa20Poly1305::new((&*key).into())
            .encrypt_in_place_detached((&nonce).into(), b"", &mut buf)
            .map_err(|_| key_err("encryption failed"))?;
        let mut ct = tag.to_vec();
        ct.extend_from_slice(&buf);
        let json = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": STANDARD.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": STANDARD.encode(nonce)},
            "ciphertext": STANDARD.encode(&ct),
        });
        let body = serde_json::to_vec(&json).map_err(|e| key_err(e.to_string()))?;
        pkcs8::der::pem::encode_string(LABEL_SIGSTORE, pkcs8::LineEnding::LF, &body)
            .map_err(|e| key_err(format!("PEM: {e}")))
    }

    /// The public key as PEM SPKI (what goes in the policy's keyPath).
    pub fn public_key_pem(&self) -> Result<String, SignatureError> {
        match self {
            SigningKey::P256(k) => {
                p256::PublicKey::from(k.verifying_key()).to_public_key_pem(pkcs8::LineEnding::LF)
            }
            SigningKey::P384(k) => {
                p384::PublicKey::from(k.verifying_key()).to_public_key_pem(pkcs8::LineEnding::LF)
            }
        }
        .map_err(|e| key_err(format!("encoding the public key: {e}")))
    }

    /// Signs `msg` (ECDSA with SHA-256, DER signature, as cosign does).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_der().as_bytes().to_vec()
            }
            SigningKey::P384(k) => {
                use p384::ecdsa::signature::hazmat::PrehashSigner;
                use sha2::Digest as _;
                let s: p384::ecdsa::Signature = k
                    .sign_prehash(&sha2::Sha256::digest(msg))
                    .unwrap_or_else(|_| k.sign(msg));
                s.to_der().as_bytes().to_vec()
            }
        }
    }
}

fn derive(
    passphrase: &[u8],
    salt: &[u8],
    log_n: u8,
    r: u32,
    p: u32,
) -> Result<Zeroizing<[u8; 32]>, SignatureError> {
    let params = scrypt::Params::new(log_n, r, p, 32)
        .map_err(|e| key_err(format!("scrypt parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(passphrase, salt, &params, &mut *key)
        .map_err(|e| key_err(format!("scrypt: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_roundtrip_and_wrong_passphrase() {
        let k = SigningKey::generate_p256();
        let pem = k.to_encrypted_pem(b"secret").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
        let back = SigningKey::from_encrypted_pem(pem.as_bytes(), b"secret").unwrap();
        assert_eq!(back.public_key_pem().unwrap(), k.public_key_pem().unwrap());
        let e = SigningKey::from_encrypted_pem(pem.as_bytes(), b"wrong").unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        let pub_key =
            super::super::PublicKey::from_pem(k.public_key_pem().unwrap().as_bytes()).unwrap();
        let sig = back.sign(b"payload");
        assert!(pub_key.verify(b"payload", &sig).is_ok());
        // The cosign label is accepted too.
        let cosign = pem.replace(LABEL_SIGSTORE, LABEL_COSIGN);
        assert!(SigningKey::from_encrypted_pem(cosign.as_bytes(), b"secret").is_ok());
        assert!(SigningKey::from_encrypted_pem(b"garbage", b"secret").is_err());
    }
}
