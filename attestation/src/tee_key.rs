//! The guest's ephemeral TEE key: generated per KBS session, its public half
//! sent as `tee-pubkey` (a JWK) and bound into the evidence, its private
//! half used once to open the resource JWE and never written anywhere.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use image_rs::ocicrypt::jwe;
use image_rs::ocicrypt::keys::{PrivateKey, PublicKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// The `alg` sent with an EC key.
pub const ALG_EC: &str = "ECDH-ES+A256KW";
/// The `alg` sent with an RSA key.
pub const ALG_RSA: &str = "RSA-OAEP-256";
/// RSA modulus size for ephemeral RSA keys.
const RSA_BITS: usize = 2048;

/// Which kind of ephemeral key to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TeeKeyAlgorithm {
    /// EC P-256 with `ECDH-ES+A256KW` (the reference client's default).
    #[default]
    EcP256,
    /// RSA 2048 with `RSA-OAEP-256`.
    Rsa,
}

impl FromStr for TeeKeyAlgorithm {
    type Err = String;

    /// Accepts `ec`/`rsa` and the reference agent's config names
    /// (`ECDH-ES+A256KW-P256`, `RSA-OAEP-256`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ec" | "ECDH-ES+A256KW-P256" | "ECDH-ES+A256KW" => Ok(TeeKeyAlgorithm::EcP256),
            "rsa" | "RSA-OAEP-256" => Ok(TeeKeyAlgorithm::Rsa),
            other => Err(format!(
                "unknown TEE key algorithm {other:?}; expected ec (ECDH-ES+A256KW, P-256) or rsa (RSA-OAEP-256)"
            )),
        }
    }
}

/// Why a key could not be made or a JWK not read.
#[derive(Debug, thiserror::Error)]
pub enum TeeKeyError {
    /// Key generation failed (RSA only; EC generation cannot fail).
    #[error("generating the ephemeral RSA key: {0}")]
    Generate(String),
    /// A `tee-pubkey` JWK is not one this protocol uses.
    #[error("tee-pubkey: {0}")]
    BadJwk(String),
}

/// An ephemeral key pair. Debug shows only the kind; the private half is
/// zeroized when dropped (the RustCrypto key types zeroize themselves).
pub struct TeeKey {
    private: PrivateKey,
    jwk: Value,
}

impl fmt::Debug for TeeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TeeKey({:?})", self.private.kind())
    }
}

impl TeeKey {
    /// A fresh key of kind `alg`.
    pub fn generate(alg: TeeKeyAlgorithm) -> Result<Self, TeeKeyError> {
        match alg {
            TeeKeyAlgorithm::EcP256 => {
                let sk = p256::SecretKey::random(&mut OsRng);
                let p = sk.public_key().to_encoded_point(false);
                let coord = |c: Option<&p256::FieldBytes>| {
                    URL_SAFE_NO_PAD.encode(c.map(|c| c.as_slice()).unwrap_or_default())
                };
                let jwk = json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": ALG_EC,
                    "x": coord(p.x()),
                    "y": coord(p.y()),
                });
                Ok(TeeKey {
                    private: PrivateKey::P256(sk),
                    jwk,
                })
            }
            TeeKeyAlgorithm::Rsa => {
                let sk = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                    .map_err(|e| TeeKeyError::Generate(e.to_string()))?;
                let jwk = json!({
                    "kty": "RSA",
                    "alg": ALG_RSA,
                    "n": URL_SAFE_NO_PAD.encode(sk.n().to_bytes_be()),
                    "e": URL_SAFE_NO_PAD.encode(sk.e().to_bytes_be()),
                });
                Ok(TeeKey {
                    private: PrivateKey::Rsa(Box::new(sk)),
                    jwk,
                })
            }
        }
    }

    /// The public half as the `tee-pubkey` JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Opens a resource JWE (flattened JSON) sent to this key.
    pub fn decrypt(&self, jwe_json: &[u8]) -> Result<Zeroizing<Vec<u8>>, jwe::UnwrapError> {
        jwe::decrypt_json(jwe_json, std::slice::from_ref(&self.private))
    }
}

/// Reads a `tee-pubkey` JWK (what a KBS does to answer a resource request):
/// EC P-256/P-384/P-521 or RSA, with the `alg` this protocol pairs with it.
pub fn public_key_from_jwk(jwk: &Value) -> Result<PublicKey, TeeKeyError> {
    let bad = |m: &str| TeeKeyError::BadJwk(m.to_string());
    let field = |k: &str| -> Result<Vec<u8>, TeeKeyError> {
        let s = jwk
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("no {k}")))?;
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| bad(&format!("{k} is not base64url")))
    };
    match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => {
            let x = field("x")?;
            let y = field("y")?;
            let mut sec1 = vec![4u8];
            sec1.extend_from_slice(&x);
            sec1.extend_from_slice(&y);
            let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
            let invalid = |_| bad("the point is not on the curve");
            match crv {
                "P-256" => p256::PublicKey::from_sec1_bytes(&sec1)
                    .map(PublicKey::P256)
                    .map_err(invalid),
                "P-384" => p384::PublicKey::from_sec1_bytes(&sec1)
                    .map(PublicKey::P384)
                    .map_err(invalid),
                "P-521" => p521::PublicKey::from_sec1_bytes(&sec1)
                    .map(PublicKey::P521)
                    .map_err(invalid),
                other => Err(bad(&format!("unsupported curve {other:?}"))),
            }
        }
        Some("RSA") => {
            let n = rsa::BigUint::from_bytes_be(&field("n")?);
            let e = rsa::BigUint::from_bytes_be(&field("e")?);
            rsa::RsaPublicKey::new(n, e)
                .map(PublicKey::Rsa)
                .map_err(|e| TeeKeyError::BadJwk(format!("RSA key: {e}")))
        }
        Some(other) => Err(bad(&format!("unsupported kty {other:?}"))),
        None => Err(bad("no kty")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_key_round_trips_a_kbs_style_jwe() {
        let key = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
        assert_eq!(key.jwk()["alg"], ALG_EC);
        let public = public_key_from_jwk(key.jwk()).unwrap();
        let jwe = jwe::encrypt_json(b"the secret", &public).unwrap();
        let v: Value = serde_json::from_str(&jwe).unwrap();
        let protected: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(v["protected"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(protected["alg"], "ECDH-ES+A256KW");
        assert_eq!(protected["enc"], "A256GCM");
        assert_eq!(protected["epk"]["crv"], "P-256");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(v["encrypted_key"].as_str().unwrap())
                .unwrap()
                .len(),
            40
        );
        assert_eq!(&key.decrypt(jwe.as_bytes()).unwrap()[..], b"the secret");
        // Another key cannot open it.
        let other = TeeKey::generate(TeeKeyAlgorithm::EcP256).unwrap();
        assert!(other.decrypt(jwe.as_bytes()).is_err());
    }

    #[test]
    fn rsa_key_round_trips_with_oaep_256() {
        let key = TeeKey::generate(TeeKeyAlgorithm::Rsa).unwrap();
        assert_eq!(key.jwk()["e"], "AQAB");
        let public = public_key_from_jwk(key.jwk()).unwrap();
        let jwe = jwe::encrypt_json(b"k", &public).unwrap();
        let v: Value = serde_json::from_str(&jwe).unwrap();
        let protected: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(v["protected"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(protected["alg"], "RSA-OAEP-256");
        assert_eq!(&key.decrypt(jwe.as_bytes()).unwrap()[..], b"k");
    }

    #[test]
    fn bad_jwks_are_refused() {
        assert!(public_key_from_jwk(&json!({"kty":"oct"})).is_err());
        assert!(public_key_from_jwk(&json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"})).is_err());
        assert!(
            public_key_from_jwk(&json!({"kty":"EC","crv":"X25519","x":"AA","y":"AA"})).is_err()
        );
    }
}
