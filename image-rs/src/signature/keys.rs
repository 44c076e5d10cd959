//! Public keys for sigstore signatures (PEM SubjectPublicKeyInfo: ECDSA
//! P-256/P-384, Ed25519, RSA) and how policy keys are fetched: files, inline
//! data, or `kbs:///` resources through the ocicrypt [`KeyProvider`] trait
//! (the attestation crate implements it with the KBS, so image-rs does not
//! depend on attestation).

use std::path::Path;
use std::sync::Arc;

use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::ecdsa::signature::Verifier;
use pkcs8::DecodePublicKey;
use sha2::Digest as _;
use zeroize::Zeroizing;

use super::policy::KeySource;
use super::SignatureError;
use crate::ocicrypt::provider::KeyProvider;

/// Largest key or keyring read (1 MiB).
pub const MAX_KEY_SIZE: u64 = 1 << 20;

/// A public key that verifies sigstore signatures.
#[derive(Clone)]
pub enum PublicKey {
    /// ECDSA P-256 (cosign's default), SHA-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECDSA P-384 (SHA-256 as containers/image hashes, or SHA-384).
    P384(p384::ecdsa::VerifyingKey),
    /// Ed25519 over the payload.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// RSA PKCS#1 v1.5 or PSS with SHA-256 (2048 bits or more).
    Rsa(rsa::RsaPublicKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind())
    }
}

impl PublicKey {
    /// Parses the first `PUBLIC KEY` (or `RSA PUBLIC KEY`) PEM block.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not PEM text")?;
        let begin = text
            .find("-----BEGIN ")
            .ok_or("no PEM block (expected -----BEGIN PUBLIC KEY-----)")?;
        let end_marker = text[begin..]
            .find("-----END ")
            .ok_or("unterminated PEM block")?;
        let end = text[begin + end_marker..]
            .find('\n')
            .map(|i| begin + end_marker + i + 1)
            .unwrap_or(text.len());
        let (label, der) = pkcs8::der::pem::decode_vec(&text.as_bytes()[begin..end])
            .map_err(|e| format!("bad PEM: {e}"))?;
        match label {
            "PUBLIC KEY" => Self::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                use rsa::pkcs1::DecodeRsaPublicKey;
                let k = rsa::RsaPublicKey::from_pkcs1_der(&der)
                    .map_err(|e| format!("bad RSA PUBLIC KEY: {e}"))?;
                Self::rsa(k)
            }
            other => Err(format!(
                "PEM label {other:?} is not a public key (expected PUBLIC KEY)"
            )),
        }
    }

    /// Parses DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P256(k.into()));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Ok(PublicKey::P384(k.into()));
        }
        if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(der) {
            return Ok(PublicKey::Ed25519(k));
        }
        if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
            return Self::rsa(k);
        }
        Err("not an ECDSA P-256/P-384, Ed25519 or RSA public key".into())
    }

    fn rsa(k: rsa::RsaPublicKey) -> Result<Self, String> {
        use rsa::traits::PublicKeyParts;
        if k.n().bits() < 2048 {
            return Err(format!(
                "RSA key of {} bits is too weak (2048 or more)",
                k.n().bits()
            ));
        }
        Ok(PublicKey::Rsa(k))
    }

    /// What kind of key this is (for messages).
    pub fn kind(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ECDSA P-256",
            PublicKey::P384(_) => "ECDSA P-384",
            PublicKey::Ed25519(_) => "Ed25519",
            PublicKey::Rsa(_) => "RSA",
        }
    }

    /// Verifies `sig` over `msg` as cosign and containers/image sign it.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        let bad = || {
            format!(
                "the signature does not verify with this {} key",
                self.kind()
            )
        };
        match self {
            PublicKey::P256(k) => {
                let s = p256::ecdsa::Signature::from_der(sig)
                    .or_else(|_| p256::ecdsa::Signature::from_slice(sig))
                    .map_err(|_| "not an ECDSA P-256 signature".to_string())?;
                k.verify(msg, &s).map_err(|_| bad())
            }
            PublicKey::P384(k) => {
                let s = p384::ecdsa::Signature::from_der(sig)
                    .or_else(|_| p384::ecdsa::Signature::from_slice(sig))
                    .map_err(|_| "not an ECDSA P-384 signature".to_string())?;
                k.verify_prehash(&sha2::Sha256::digest(msg), &s)
                    .or_else(|_| k.verify(msg, &s))
                    .map_err(|_| bad())
            }
            PublicKey::Ed25519(k) => {
                let s = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| "not an Ed25519 signature".to_string())?;
                k.verify_strict(msg, &s).map_err(|_| bad())
            }
            PublicKey::Rsa(k) => {
                let h = sha2::Sha256::digest(msg);
                k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &h, sig)
                    .or_else(|_| k.verify(rsa::Pss::new::<sha2::Sha256>(), &h, sig))
                    .map_err(|_| bad())
            }
        }
    }
}

/// Reads a file whole, refusing anything over `cap` bytes.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other(format!("larger than {cap} bytes")));
    }
    Ok(buf)
}

/// Fetches the bytes of a policy key: a file, inline data, or a KBS
/// resource through `provider`.
pub async fn load_key_bytes(
    src: &KeySource,
    provider: Option<&Arc<dyn KeyProvider>>,
) -> Result<Zeroizing<Vec<u8>>, SignatureError> {
    let err = |reason: String| SignatureError::Key {
        key: src.to_string(),
        reason,
    };
    match src {
        KeySource::Data(d) => Ok(Zeroizing::new(d.clone())),
        KeySource::Path(p) => read_capped(p, MAX_KEY_SIZE)
            .map(Zeroizing::new)
            .map_err(|e| err(format!("cannot read: {e}"))),
        KeySource::Kbs(kid) => {
            let p = provider.ok_or_else(|| {
                err("a kbs:/// key needs a key provider (the KBS in a guest; --key-provider-dir for development)".into())
            })?;
            let bytes = p.get_kek(kid).await.map_err(|e| err(e.to_string()))?;
            if bytes.len() as u64 > MAX_KEY_SIZE {
                return Err(err(format!("larger than {MAX_KEY_SIZE} bytes")));
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Signer;
    use pkcs8::EncodePublicKey;

    #[test]
    fn p256_verifies_and_rejects() {
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = p256::PublicKey::from(sk.verifying_key())
            .to_public_key_pem(pkcs8::LineEnding::LF)
            .unwrap();
        let k = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(k.kind(), "ECDSA P-256");
        let sig: p256::ecdsa::Signature = sk.sign(b"payload");
        assert!(k.verify(b"payload", sig.to_der().as_bytes()).is_ok());
        assert!(k.verify(b"payloaD", sig.to_der().as_bytes()).is_err());
        assert!(k.verify(b"payload", b"garbage").is_err());
        let other = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let sig2: p256::ecdsa::Signature = other.sign(b"payload");
        assert!(k.verify(b"payload", sig2.to_der().as_bytes()).is_err());
    }

    #[test]
    fn ed25519_and_p384_and_rsa() {
        use ed25519_dalek::Signer as _;
        let sk = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let pem = sk
            .verifying_key()
            .to_public_key_pem(pkcs8::LineEnding::LF)
            .unwrap();
        let k = PublicKey::from_pem(pem.as_bytes()).unwrap();
        assert_eq!(k.kind(), "Ed25519");
        let s = sk.sign(b"m");
        assert!(k.verify(b"m", &s.to_bytes()).is_ok());
        assert!(k.verify(b"n", &s.to_bytes()).is_err());

        let sk = p384::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let pem = p384::PublicKey::from(sk.verifying_key())
            .to_public_key_pem(pkcs8::LineEnding::LF)
            .unwrap();
        let k = PublicKey::from_pem(pem.as_bytes()).unwrap();
        let s: p384::ecdsa::Signature =
            p384::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(
                &sk,
                &sha2::Sha256::digest(b"m"),
            )
            .unwrap();
        assert!(k.verify(b"m", s.to_der().as_bytes()).is_ok());
        assert!(k.verify(b"x", s.to_der().as_bytes()).is_err());

        let rsa_key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = rsa_key
            .to_public_key()
            .to_public_key_pem(pkcs8::LineEnding::LF)
            .unwrap();
        let k = PublicKey::from_pem(pem.as_bytes()).unwrap();
        let h = sha2::Sha256::digest(b"m");
        let s = rsa_key
            .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &h)
            .unwrap();
        assert!(k.verify(b"m", &s).is_ok());
        assert!(k.verify(b"x", &s).is_err());
        assert!(PublicKey::from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
    }
}
