//! JWE (RFC 7516) key wrapping of the private options, as ocicrypt does it
//! with go-jose: the annotation value is standard base64 of a JWE in JSON
//! serialization (flattened for one recipient, general for several), and
//! several such wrappings may be joined with `,`.
//!
//! Unwrap accepts `RSA-OAEP` (SHA-1), `RSA-OAEP-256`, `ECDH-ES` and
//! `ECDH-ES+A128KW/A192KW/A256KW` on P-256/P-384/P-521 (Concat KDF per
//! RFC 7518 §4.6 with `apu`/`apv`), content encryption `A128GCM`, `A192GCM`,
//! `A256GCM`. Wrap writes what ocicrypt writes: `RSA-OAEP` for RSA keys,
//! `ECDH-ES+A256KW` for EC keys, `A256GCM`.
//!
//! A failed RSA unwrap continues with a random content key (RFC 7516 §11.5),
//! and every failure ends in the same error, so the annotation cannot be used
//! as a padding oracle against the guest's key.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{AesGcm, KeyInit};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use elliptic_curve::generic_array::typenum::{Unsigned, U12};
use elliptic_curve::sec1::{EncodedPoint, FromEncodedPoint, ModulusSize, ToEncodedPoint};
use elliptic_curve::{AffinePoint, CurveArithmetic, FieldBytes, FieldBytesSize, SecretKey};
use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::Oaep;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::keys::{KeyKind, PrivateKey, PublicKey};

/// `alg` ocicrypt uses for RSA recipients (OAEP with SHA-1).
pub const ALG_RSA_OAEP: &str = "RSA-OAEP";
/// `alg` for RSA OAEP with SHA-256.
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
/// `alg` for direct ECDH key agreement.
pub const ALG_ECDH_ES: &str = "ECDH-ES";
/// `alg` for ECDH with a 128-bit AES key wrap.
pub const ALG_ECDH_ES_A128KW: &str = "ECDH-ES+A128KW";
/// `alg` for ECDH with a 192-bit AES key wrap.
pub const ALG_ECDH_ES_A192KW: &str = "ECDH-ES+A192KW";
/// `alg` ocicrypt uses for EC recipients.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// `enc` ocicrypt uses.
pub const ENC_A256GCM: &str = "A256GCM";

/// Largest annotation we parse; real ones are a few KiB per recipient.
const MAX_ANNOTATION_LEN: usize = 1024 * 1024;

/// base64url as JOSE uses it; padding tolerated on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why the layer key could not be unwrapped. Lists what the annotation asked
/// for and what was tried; never key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    /// Nothing in the annotation could be parsed as a JWE.
    #[error("unwrapping the layer key from the {annotation} annotation: {reason}; the image's annotations were modified or written by an incompatible tool")]
    Malformed {
        /// The annotation name.
        annotation: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Recipients were found but no key opened any of them.
    #[error("{}", no_key_message(.recipients, .keys, .notes))]
    NoMatchingKey {
        /// Each recipient as `alg (key type)`, e.g. `RSA-OAEP (RSA 2048)`.
        recipients: Vec<String>,
        /// The kinds of the private keys tried.
        keys: Vec<KeyKind>,
        /// Recipients or wrappings that could not be used at all, and why.
        notes: Vec<String>,
    },
}

fn no_key_message(recipients: &[String], keys: &[KeyKind], notes: &[String]) -> String {
    let tried = if keys.is_empty() {
        "no private keys were given".to_string()
    } else {
        let kinds: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        format!(
            "none of the {} private key{} tried ({}) could unwrap it",
            keys.len(),
            if keys.len() == 1 { "" } else { "s" },
            kinds.join(", ")
        )
    };
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    format!(
        "unwrapping the layer key (JWE): {tried}; the layer is encrypted for: {}{notes}; pass the private key of one of these recipients (--decryption-key FILE[:PASSWORD])",
        if recipients.is_empty() { "no usable recipient".to_string() } else { recipients.join(", ") }
    )
}

/// Why wrapping failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// No recipients were given.
    #[error("wrapping the layer key (JWE): no recipients given; pass at least one public key")]
    NoRecipients,
    /// The RSA key cannot carry the content key (too small).
    #[error("wrapping the layer key (JWE) for an {kind} key: {reason}; use an RSA key of at least 2048 bits")]
    Rsa {
        /// The recipient key.
        kind: KeyKind,
        /// The library's reason.
        reason: String,
    },
}

/// One recipient of a parsed JWE with its merged header.
struct Recipient {
    alg: String,
    enc: String,
    epk: Option<Epk>,
    apu: Vec<u8>,
    apv: Vec<u8>,
    encrypted_key: Vec<u8>,
    /// Why this recipient cannot be used, if it cannot.
    unusable: Option<String>,
}

struct Epk {
    crv: String,
    x: Vec<u8>,
    y: Vec<u8>,
}

impl Recipient {
    fn describe(&self) -> String {
        let key = if self.alg.starts_with("RSA-") {
            format!("RSA {}", self.encrypted_key.len() * 8)
        } else if let Some(epk) = &self.epk {
            epk.crv.clone()
        } else {
            "unknown key".to_string()
        };
        format!("{} ({key})", self.alg)
    }
}

/// A parsed JWE (one wrapping).
struct Jwe {
    /// The `protected` member exactly as sent (it is the AAD).
    protected_b64: String,
    aad_b64: Option<String>,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
    tag: Vec<u8>,
    recipients: Vec<Recipient>,
}

fn b64url(field: &str, v: &str) -> Result<Vec<u8>, String> {
    B64URL
        .decode(v)
        .map_err(|_| format!("{field} is not base64url"))
}

fn obj(v: Option<Value>, what: &str) -> Result<Map<String, Value>, String> {
    match v {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(format!("{what} is not a JSON object")),
    }
}

fn str_field(v: &Value, field: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{field} is not a string"))
}

fn parse_jwe(json: &[u8]) -> Result<Jwe, String> {
    let mut top: Map<String, Value> = match serde_json::from_slice(json) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("not a JSON object".into()),
        Err(e) => return Err(format!("not JSON ({e})")),
    };
    let take_str = |m: &mut Map<String, Value>, k: &str| -> Result<Option<String>, String> {
        m.remove(k).map(|v| str_field(&v, k)).transpose()
    };
    let protected_b64 = take_str(&mut top, "protected")?.unwrap_or_default();
    let protected: Map<String, Value> = if protected_b64.is_empty() {
        Map::new()
    } else {
        let raw = b64url("protected", &protected_b64)?;
        match serde_json::from_slice(&raw) {
            Ok(Value::Object(m)) => m,
            _ => return Err("protected header is not a JSON object".into()),
        }
    };
    let shared = obj(top.remove("unprotected"), "unprotected")?;
    let iv = b64url("iv", &take_str(&mut top, "iv")?.ok_or("no iv")?)?;
    let ciphertext = b64url(
        "ciphertext",
        &take_str(&mut top, "ciphertext")?.ok_or("no ciphertext")?,
    )?;
    let tag = b64url("tag", &take_str(&mut top, "tag")?.ok_or("no tag")?)?;
    let aad_b64 = take_str(&mut top, "aad")?;

    // General form: `recipients`; flattened: `header` + `encrypted_key` at
    // the top. (go-jose also copies the first recipient's encrypted_key to
    // the top of the general form; it is ignored there, as go-jose does.)
    let raw_recipients: Vec<(Map<String, Value>, Option<String>)> = match top.remove("recipients") {
        Some(Value::Array(list)) if !list.is_empty() => list
            .into_iter()
            .map(|r| {
                let Value::Object(mut r) = r else {
                    return Err("a recipient is not a JSON object".to_string());
                };
                let header = obj(r.remove("header"), "recipient header")?;
                let ek = take_str(&mut r, "encrypted_key")?;
                Ok((header, ek))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("recipients is not a non-empty array".into()),
        None => vec![(
            obj(top.remove("header"), "header")?,
            take_str(&mut top, "encrypted_key")?,
        )],
    };

    let mut recipients = Vec::new();
    for (header, ek) in raw_recipients {
        recipients.push(recipient(&protected, &shared, header, ek)?);
    }
    Ok(Jwe {
        protected_b64,
        aad_b64,
        iv,
        ciphertext,
        tag,
        recipients,
    })
}

/// Merges the three header sources (which RFC 7516 requires to be disjoint)
/// and reads the parameters we use.
fn recipient(
    protected: &Map<String, Value>,
    shared: &Map<String, Value>,
    own: Map<String, Value>,
    encrypted_key: Option<String>,
) -> Result<Recipient, String> {
    let mut h = protected.clone();
    for (k, v) in shared
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .chain(own)
    {
        if h.contains_key(&k) {
            return Err(format!("header parameter {k:?} appears more than once"));
        }
        h.insert(k, v);
    }
    let alg = h.get("alg").map(|v| str_field(v, "alg")).transpose()?;
    let enc = h.get("enc").map(|v| str_field(v, "enc")).transpose()?;
    let (Some(alg), Some(enc)) = (alg, enc) else {
        return Err("a recipient has no alg or enc".into());
    };
    let epk = match h.get("epk") {
        None => None,
        Some(Value::Object(e)) => {
            let get = |k: &str| -> Result<String, String> {
                e.get(k)
                    .ok_or_else(|| format!("epk has no {k}"))
                    .and_then(|v| str_field(v, k))
            };
            if get("kty")? != "EC" {
                return Err("epk is not an EC key".into());
            }
            Some(Epk {
                crv: get("crv")?,
                x: b64url("epk.x", &get("x")?)?,
                y: b64url("epk.y", &get("y")?)?,
            })
        }
        Some(_) => return Err("epk is not a JSON object".into()),
    };
    let bytes = |k: &str| -> Result<Vec<u8>, String> {
        h.get(k)
            .map(|v| str_field(v, k).and_then(|s| b64url(k, &s)))
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let apu = bytes("apu")?;
    let apv = bytes("apv")?;
    let encrypted_key = match encrypted_key {
        Some(s) => b64url("encrypted_key", &s)?,
        None => Vec::new(),
    };
    let mut unusable = None;
    if h.contains_key("zip") {
        unusable = Some("compressed (zip) JWE is not supported".to_string());
    } else if h
        .get("crit")
        .is_some_and(|c| c.as_array().is_none_or(|a| !a.is_empty()))
    {
        unusable = Some("critical header extensions are not supported".to_string());
    } else if enc_key_len(&enc).is_none() {
        unusable = Some(format!("content encryption {enc:?} is not supported"));
    } else if !matches!(
        alg.as_str(),
        ALG_RSA_OAEP
            | ALG_RSA_OAEP_256
            | ALG_ECDH_ES
            | ALG_ECDH_ES_A128KW
            | ALG_ECDH_ES_A192KW
            | ALG_ECDH_ES_A256KW
    ) {
        unusable = Some(format!("key wrapping {alg:?} is not supported"));
    } else if alg.starts_with("ECDH-ES") && epk.is_none() {
        unusable = Some(format!("{alg} recipient without epk"));
    }
    Ok(Recipient {
        alg,
        enc,
        epk,
        apu,
        apv,
        encrypted_key,
        unusable,
    })
}

fn enc_key_len(enc: &str) -> Option<usize> {
    match enc {
        "A128GCM" => Some(16),
        "A192GCM" => Some(24),
        "A256GCM" => Some(32),
        _ => None,
    }
}

/// Concat KDF (NIST SP 800-56A, RFC 7518 §4.6.2) with SHA-256.
fn concat_kdf(
    z: &[u8],
    alg_id: &str,
    apu: &[u8],
    apv: &[u8],
    key_len: usize,
) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(key_len + 32));
    let mut counter = 1u32;
    while out.len() < key_len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        for part in [alg_id.as_bytes(), apu, apv] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(((key_len * 8) as u32).to_be_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(key_len);
    out
}

/// A public point from JWK coordinates (left-padded if short), validated to
/// be on the curve.
fn point_from_xy<C>(x: &[u8], y: &[u8]) -> Option<elliptic_curve::PublicKey<C>>
where
    C: CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
{
    let n = FieldBytesSize::<C>::USIZE;
    if x.len() > n || y.len() > n {
        return None;
    }
    let mut xb = FieldBytes::<C>::default();
    let mut yb = FieldBytes::<C>::default();
    xb[n - x.len()..].copy_from_slice(x);
    yb[n - y.len()..].copy_from_slice(y);
    let point = EncodedPoint::<C>::from_affine_coordinates(&xb, &yb, false);
    Option::from(elliptic_curve::PublicKey::<C>::from_encoded_point(&point))
}

fn ecdh<C: CurveArithmetic>(
    secret: &SecretKey<C>,
    public: &elliptic_curve::PublicKey<C>,
) -> Zeroizing<Vec<u8>> {
    let shared =
        elliptic_curve::ecdh::diffie_hellman(secret.to_nonzero_scalar(), public.as_affine());
    Zeroizing::new(shared.raw_secret_bytes().to_vec())
}

/// ECDH of `key` with the recipient's `epk`; `None` if the curves differ or
/// the point is invalid.
fn ecdh_with_epk(key: &PrivateKey, epk: &Epk) -> Option<Zeroizing<Vec<u8>>> {
    if key.kind().curve_name() != Some(epk.crv.as_str()) {
        return None;
    }
    match key {
        PrivateKey::Rsa(_) => None,
        PrivateKey::P256(k) => Some(ecdh(k, &point_from_xy(&epk.x, &epk.y)?)),
        PrivateKey::P384(k) => Some(ecdh(k, &point_from_xy(&epk.x, &epk.y)?)),
        PrivateKey::P521(k) => Some(ecdh(k, &point_from_xy(&epk.x, &epk.y)?)),
    }
}

fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // aes-kw checks the rest (multiple of 8 bytes).
    if wrapped.len() < 24 {
        return None;
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    let ok = match kek.len() {
        16 => aes_kw::KekAes128::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        24 => aes_kw::KekAes192::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        32 => aes_kw::KekAes256::try_from(kek)
            .ok()?
            .unwrap(wrapped, &mut out),
        _ => return None,
    };
    ok.ok().map(|_| out)
}

/// The content key of `r` under `key`: `None` if the key does not fit the
/// recipient (type, curve, size), `Some(cek)` otherwise, where a failed RSA
/// unwrap yields a random key so that failure shows only at the GCM tag.
fn content_key(r: &Recipient, key: &PrivateKey) -> Option<Zeroizing<Vec<u8>>> {
    let cek_len = enc_key_len(&r.enc)?;
    match (r.alg.as_str(), key) {
        (ALG_RSA_OAEP | ALG_RSA_OAEP_256, PrivateKey::Rsa(k)) => {
            if r.encrypted_key.len() != k.size() {
                return None;
            }
            let result = if r.alg == ALG_RSA_OAEP {
                k.decrypt_blinded(&mut OsRng, Oaep::new::<sha1::Sha1>(), &r.encrypted_key)
            } else {
                k.decrypt_blinded(&mut OsRng, Oaep::new::<Sha256>(), &r.encrypted_key)
            };
            Some(match result {
                Ok(cek) if cek.len() == cek_len => Zeroizing::new(cek),
                other => {
                    drop(other.map(Zeroizing::new));
                    let mut random = Zeroizing::new(vec![0u8; cek_len]);
                    OsRng.fill_bytes(&mut random);
                    random
                }
            })
        }
        (alg, _) if alg.starts_with("ECDH-ES") => {
            let z = ecdh_with_epk(key, r.epk.as_ref()?)?;
            let (alg_id, kdf_len) = match alg {
                ALG_ECDH_ES => (r.enc.as_str(), cek_len),
                ALG_ECDH_ES_A128KW => (alg, 16),
                ALG_ECDH_ES_A192KW => (alg, 24),
                ALG_ECDH_ES_A256KW => (alg, 32),
                _ => return None,
            };
            let derived = concat_kdf(&z, alg_id, &r.apu, &r.apv, kdf_len);
            if alg == ALG_ECDH_ES {
                return Some(derived);
            }
            match aes_kw_unwrap(&derived, &r.encrypted_key) {
                Some(cek) if cek.len() == cek_len => Some(cek),
                _ => {
                    // Wrong key: an invalid KW check value. Same outcome as
                    // a failed GCM tag.
                    let mut random = Zeroizing::new(vec![0u8; cek_len]);
                    OsRng.fill_bytes(&mut random);
                    Some(random)
                }
            }
        }
        _ => None,
    }
}

/// AES-GCM decryption of the JWE content; `None` on authentication failure.
fn decrypt_content(jwe: &Jwe, enc: &str, cek: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if jwe.iv.len() != 12 || jwe.tag.len() != 16 {
        return None;
    }
    let mut aad = jwe.protected_b64.as_bytes().to_vec();
    if let Some(extra) = &jwe.aad_b64 {
        aad.push(b'.');
        aad.extend_from_slice(extra.as_bytes());
    }
    let mut buf = Zeroizing::new(jwe.ciphertext.clone());
    let nonce = aes_gcm::Nonce::<U12>::from_slice(&jwe.iv);
    let tag = aes_gcm::Tag::<aes_gcm::aead::consts::U16>::from_slice(&jwe.tag);
    let ok = match (enc, cek.len()) {
        ("A128GCM", 16) => AesGcm::<aes::Aes128, U12>::new_from_slice(cek)
            .ok()?
            .decrypt_in_place_detached(nonce, &aad, &mut buf, tag),
        ("A192GCM", 24) => AesGcm::<aes::Aes192, U12>::new_from_slice(cek)
            .ok()?
            .decrypt_in_place_detached(nonce, &aad, &mut buf, tag),
        ("A256GCM", 32) => AesGcm::<aes::Aes256, U12>::new_from_slice(cek)
            .ok()?
            .decrypt_in_place_detached(nonce, &aad, &mut buf, tag),
        _ => return None,
    };
    ok.ok().map(|_| buf)
}

/// Tries every key on every recipient of one parsed JWE; records what the
/// recipients were and why unusable ones were skipped.
fn open_jwe(
    jwe: &Jwe,
    keys: &[PrivateKey],
    descriptions: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Option<Zeroizing<Vec<u8>>> {
    for r in &jwe.recipients {
        descriptions.push(r.describe());
        if let Some(why) = &r.unusable {
            notes.push(format!("{}: {why}", r.describe()));
            continue;
        }
        for key in keys {
            let Some(cek) = content_key(r, key) else {
                continue;
            };
            if let Some(plain) = decrypt_content(jwe, &r.enc, &cek) {
                return Some(plain);
            }
        }
    }
    None
}

/// Decrypts one JWE in JSON serialization (flattened or general) given as
/// the JSON text itself, as a KBS returns a resource (`ECDH-ES+A256KW` or
/// `RSA-OAEP-256` to the guest's ephemeral key, `A256GCM`).
pub fn decrypt_json(json: &[u8], keys: &[PrivateKey]) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    if json.len() > MAX_ANNOTATION_LEN * 16 {
        return Err(UnwrapError::Malformed {
            annotation: "JWE",
            reason: "the JWE is implausibly large".into(),
        });
    }
    let jwe = parse_jwe(json).map_err(|reason| UnwrapError::Malformed {
        annotation: "JWE",
        reason,
    })?;
    let mut descriptions = Vec::new();
    let mut notes = Vec::new();
    open_jwe(&jwe, keys, &mut descriptions, &mut notes).ok_or_else(|| UnwrapError::NoMatchingKey {
        recipients: descriptions,
        keys: keys.iter().map(PrivateKey::kind).collect(),
        notes,
    })
}

/// Encrypts `plaintext` to one recipient as a flattened JWE JSON text (all
/// headers protected), as a KBS answers a resource request: RSA keys with
/// `RSA-OAEP-256`, EC keys with `ECDH-ES+A256KW`; `A256GCM`.
pub fn encrypt_json(plaintext: &[u8], recipient: &PublicKey) -> Result<String, WrapError> {
    let alg = match recipient {
        PublicKey::Rsa(_) => WrapAlg::RsaOaep256,
        _ => WrapAlg::EcdhEsKw(ALG_ECDH_ES_A256KW, 32),
    };
    let json = wrap_json(plaintext, &[(recipient, alg)])?;
    Ok(String::from_utf8(json).unwrap_or_default())
}

/// Unwraps the private options from an `...enc.keys.jwe` annotation value,
/// trying every key on every recipient of every comma-separated wrapping.
pub fn unwrap(annotation: &str, keys: &[PrivateKey]) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
    let malformed = |reason: String| UnwrapError::Malformed {
        annotation: super::spec::ANNOTATION_JWE,
        reason,
    };
    if annotation.len() > MAX_ANNOTATION_LEN {
        return Err(malformed("the annotation is implausibly large".into()));
    }
    let mut descriptions = Vec::new();
    let mut notes = Vec::new();
    let mut parsed_any = false;
    let blobs: Vec<&str> = annotation
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    for (i, blob) in blobs.iter().enumerate() {
        let which = if blobs.len() > 1 {
            format!("wrapping {} of {}: ", i + 1, blobs.len())
        } else {
            String::new()
        };
        let jwe = match STANDARD
            .decode(blob)
            .map_err(|_| "not standard base64".to_string())
            .and_then(|json| parse_jwe(&json))
        {
            Ok(j) => j,
            Err(e) => {
                notes.push(format!("{which}{e}"));
                continue;
            }
        };
        parsed_any = true;
        if let Some(plain) = open_jwe(&jwe, keys, &mut descriptions, &mut notes) {
            return Ok(plain);
        }
    }
    if !parsed_any {
        return Err(malformed(if notes.is_empty() {
            "the annotation is empty".into()
        } else {
            notes.join("; ")
        }));
    }
    Err(UnwrapError::NoMatchingKey {
        recipients: descriptions,
        keys: keys.iter().map(PrivateKey::kind).collect(),
        notes,
    })
}

#[derive(Serialize)]
struct EpkOut {
    kty: &'static str,
    crv: &'static str,
    x: String,
    y: String,
}

/// Header members in go-jose's order (it serializes a sorted map).
#[derive(Serialize)]
struct HeaderOut {
    #[serde(skip_serializing_if = "Option::is_none")]
    alg: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enc: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epk: Option<EpkOut>,
}

#[derive(Serialize)]
struct RecipientOut {
    header: HeaderOut,
    encrypted_key: String,
}

#[derive(Serialize)]
struct JweOut {
    protected: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<RecipientOut>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encrypted_key: Option<String>,
    iv: String,
    ciphertext: String,
    tag: String,
}

/// Which key-management algorithm a recipient is wrapped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WrapAlg {
    RsaOaep,
    RsaOaep256,
    EcdhEsKw(&'static str, usize),
}

fn ephemeral<C>(recipient: &elliptic_curve::PublicKey<C>) -> (Zeroizing<Vec<u8>>, Vec<u8>, Vec<u8>)
where
    C: CurveArithmetic,
    FieldBytesSize<C>: ModulusSize,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
{
    let eph = SecretKey::<C>::random(&mut OsRng);
    let z = ecdh(&eph, recipient);
    let p = eph.public_key().to_encoded_point(false);
    let x = p.x().map(|x| x.to_vec()).unwrap_or_default();
    let y = p.y().map(|y| y.to_vec()).unwrap_or_default();
    (z, x, y)
}

fn wrap_key(cek: &[u8], key: &PublicKey, alg: WrapAlg) -> Result<(HeaderOut, Vec<u8>), WrapError> {
    if let PublicKey::Rsa(k) = key {
        let (name, ek) = match alg {
            WrapAlg::RsaOaep256 => (
                ALG_RSA_OAEP_256,
                k.encrypt(&mut OsRng, Oaep::new::<Sha256>(), cek),
            ),
            _ => (
                ALG_RSA_OAEP,
                k.encrypt(&mut OsRng, Oaep::new::<sha1::Sha1>(), cek),
            ),
        };
        let ek = ek.map_err(|e| WrapError::Rsa {
            kind: key.kind(),
            reason: e.to_string(),
        })?;
        return Ok((header(name, None), ek));
    }
    let (alg, kw_len) = match alg {
        WrapAlg::EcdhEsKw(alg, kw_len) => (alg, kw_len),
        _ => (ALG_ECDH_ES_A256KW, 32),
    };
    let (z, x, y) = match key {
        PublicKey::P256(k) => ephemeral(k),
        PublicKey::P384(k) => ephemeral(k),
        PublicKey::P521(k) => ephemeral(k),
        PublicKey::Rsa(_) => unreachable!("RSA keys returned above"),
    };
    let kek = concat_kdf(&z, alg, &[], &[], kw_len);
    let mut ek = vec![0u8; cek.len() + 8];
    let wrapped = match kw_len {
        16 => aes_kw::KekAes128::try_from(&kek[..]).map(|k| k.wrap(cek, &mut ek)),
        24 => aes_kw::KekAes192::try_from(&kek[..]).map(|k| k.wrap(cek, &mut ek)),
        _ => aes_kw::KekAes256::try_from(&kek[..]).map(|k| k.wrap(cek, &mut ek)),
    };
    // The KEK length and a 32-byte CEK are always valid for AES-KW.
    debug_assert!(matches!(wrapped, Ok(Ok(()))));
    let epk = EpkOut {
        kty: "EC",
        crv: key.kind().curve_name().unwrap_or_default(),
        x: B64URL.encode(x),
        y: B64URL.encode(y),
    };
    Ok((header(alg, Some(epk)), ek))
}

fn header(alg: &'static str, epk: Option<EpkOut>) -> HeaderOut {
    HeaderOut {
        alg: Some(alg),
        enc: None,
        epk,
    }
}

fn default_alg(key: &PublicKey) -> WrapAlg {
    match key {
        PublicKey::Rsa(_) => WrapAlg::RsaOaep,
        _ => WrapAlg::EcdhEsKw(ALG_ECDH_ES_A256KW, 32),
    }
}

/// Wraps `plaintext` (the private options JSON) for `recipients` the way
/// ocicrypt/go-jose does: `RSA-OAEP` for RSA keys, `ECDH-ES+A256KW` for EC
/// keys, `A256GCM`, flattened JSON for one recipient and general JSON for
/// several. Returns the annotation value (standard base64 of the JSON).
pub fn wrap(plaintext: &[u8], recipients: &[PublicKey]) -> Result<String, WrapError> {
    let with_algs: Vec<(&PublicKey, WrapAlg)> =
        recipients.iter().map(|k| (k, default_alg(k))).collect();
    wrap_with(plaintext, &with_algs)
}

fn wrap_with(plaintext: &[u8], recipients: &[(&PublicKey, WrapAlg)]) -> Result<String, WrapError> {
    Ok(STANDARD.encode(wrap_json(plaintext, recipients)?))
}

/// The JWE JSON serialization of `plaintext` for `recipients`.
fn wrap_json(plaintext: &[u8], recipients: &[(&PublicKey, WrapAlg)]) -> Result<Vec<u8>, WrapError> {
    if recipients.is_empty() {
        return Err(WrapError::NoRecipients);
    }
    let mut cek = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(cek.as_mut_slice());
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);

    let mut wrapped = recipients
        .iter()
        .map(|(k, alg)| wrap_key(cek.as_slice(), k, *alg))
        .collect::<Result<Vec<_>, _>>()?;

    let (protected_header, recipients_out, top_key) = if wrapped.len() == 1 {
        let (mut h, ek) = wrapped.remove(0);
        h.enc = Some(ENC_A256GCM);
        (h, None, Some(B64URL.encode(ek)))
    } else {
        let list = wrapped
            .into_iter()
            .map(|(header, ek)| RecipientOut {
                header,
                encrypted_key: B64URL.encode(ek),
            })
            .collect();
        let h = HeaderOut {
            alg: None,
            enc: Some(ENC_A256GCM),
            epk: None,
        };
        (h, Some(list), None)
    };
    let protected = B64URL.encode(serde_json::to_vec(&protected_header).unwrap_or_default());

    let mut buf = plaintext.to_vec();
    let tag = AesGcm::<aes::Aes256, U12>::new_from_slice(cek.as_slice())
        .expect("32-byte key")
        .encrypt_in_place_detached(
            aes_gcm::Nonce::<U12>::from_slice(&iv),
            protected.as_bytes(),
            &mut buf,
        )
        .expect("GCM encryption of a small buffer cannot fail");
    let out = JweOut {
        protected,
        recipients: recipients_out,
        encrypted_key: top_key,
        iv: B64URL.encode(iv),
        ciphertext: B64URL.encode(&buf),
        tag: B64URL.encode(tag),
    };
    Ok(serde_json::to_vec(&out).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocicrypt::keys::tests::vectors;
    use std::path::Path;

    fn key(dir: &Path, name: &str) -> PrivateKey {
        PrivateKey::from_file(&dir.join("keys").join(name), None).unwrap()
    }

    /// The JWE annotation of the first layer of a skopeo-enc tag.
    pub(crate) fn vector_jwe(dir: &Path, tag: &str) -> String {
        let layout = dir.join("skopeo-enc");
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap();
        let digest = m["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap();
        let manifest: Value = serde_json::from_slice(
            &std::fs::read(layout.join("blobs/sha256").join(digest)).unwrap(),
        )
        .unwrap();
        manifest["layers"][0]["annotations"][super::super::spec::ANNOTATION_JWE]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn looks_like_private_options(plain: &[u8]) {
        let opts = super::super::options::PrivateOptions::from_json(plain).unwrap();
        // The unwrapped bytes are exactly what we would write ourselves: our
        // serialization matches Go's byte for byte.
        assert_eq!(opts.to_json().as_slice(), plain);
    }

    #[test]
    fn unwraps_skopeo_vectors() {
        let Some(v) = vectors() else { return };
        let rsa = key(&v, "rsa-priv.pem");
        let ec256 = key(&v, "ec256-priv.pem");
        let ec384 = key(&v, "ec384-priv.pem");
        looks_like_private_options(
            &unwrap(&vector_jwe(&v, "rsa"), std::slice::from_ref(&rsa)).unwrap(),
        );
        looks_like_private_options(
            &unwrap(&vector_jwe(&v, "ec256"), std::slice::from_ref(&ec256)).unwrap(),
        );
        let both = vector_jwe(&v, "rsa-ec384");
        let a = unwrap(&both, std::slice::from_ref(&rsa)).unwrap();
        let b = unwrap(&both, std::slice::from_ref(&ec384)).unwrap();
        assert_eq!(a, b);
        looks_like_private_options(&a);
        // Keys that do not fit are skipped, the right one still found.
        assert_eq!(unwrap(&both, &[ec256, ec384.clone(), rsa]).unwrap(), a);
    }

    #[test]
    fn wrong_key_lists_recipients() {
        let Some(v) = vectors() else { return };
        let wrong = key(&v, "wrong-rsa-priv.pem");
        let ec256 = key(&v, "ec256-priv.pem");
        let e = unwrap(&vector_jwe(&v, "rsa-ec384"), &[wrong, ec256]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("RSA-OAEP (RSA 2048), ECDH-ES+A256KW (P-384)"),
            "{msg}"
        );
        assert!(
            msg.contains("none of the 2 private keys tried (RSA 2048, P-256)"),
            "{msg}"
        );
        let e = unwrap(&vector_jwe(&v, "ec256"), &[]).unwrap_err();
        assert!(e.to_string().contains("no private keys were given"), "{e}");
        assert!(matches!(
            unwrap("bm90IGpzb24=", &[]),
            Err(UnwrapError::Malformed { .. })
        ));
    }

    #[test]
    fn tampered_jwe_is_refused() {
        let Some(v) = vectors() else { return };
        let rsa = key(&v, "rsa-priv.pem");
        let json = STANDARD.decode(vector_jwe(&v, "rsa")).unwrap();
        let mut jwe: Value = serde_json::from_slice(&json).unwrap();
        // Flip one ciphertext character: GCM must notice.
        let ct = jwe["ciphertext"].as_str().unwrap().to_string();
        let flipped = if ct.starts_with('A') { "B" } else { "A" };
        jwe["ciphertext"] = Value::from(format!("{flipped}{}", &ct[1..]));
        let ann = STANDARD.encode(serde_json::to_vec(&jwe).unwrap());
        assert!(matches!(
            unwrap(&ann, &[rsa]),
            Err(UnwrapError::NoMatchingKey { .. })
        ));
    }

    fn round_trip(keys: &[PrivateKey]) {
        let publics: Vec<PublicKey> = keys.iter().map(PrivateKey::public_key).collect();
        let secret = b"{\"symkey\":\"secret\"}";
        let ann = wrap(secret, &publics).unwrap();
        let json: Value = serde_json::from_slice(&STANDARD.decode(&ann).unwrap()).unwrap();
        if keys.len() == 1 {
            assert!(json.get("recipients").is_none());
            let h: Value = serde_json::from_slice(
                &B64URL.decode(json["protected"].as_str().unwrap()).unwrap(),
            )
            .unwrap();
            assert_eq!(h["enc"], ENC_A256GCM);
        } else {
            assert_eq!(json["recipients"].as_array().unwrap().len(), keys.len());
        }
        for k in keys {
            assert_eq!(
                unwrap(&ann, std::slice::from_ref(k)).unwrap().as_slice(),
                secret
            );
        }
    }

    #[test]
    fn wrap_round_trips_all_key_types() {
        let Some(v) = vectors() else { return };
        let rsa = key(&v, "rsa-priv.pem");
        let p256 = PrivateKey::P256(p256::SecretKey::random(&mut OsRng));
        let p384 = PrivateKey::P384(p384::SecretKey::random(&mut OsRng));
        let p521 = PrivateKey::P521(p521::SecretKey::random(&mut OsRng));
        for k in [&rsa, &p256, &p384, &p521] {
            round_trip(std::slice::from_ref(k));
        }
        round_trip(&[rsa.clone(), p521.clone()]);
        round_trip(&[p256.clone(), p384.clone(), rsa.clone()]);
        // A key that is not a recipient does not open it.
        let ann = wrap(b"x", &[p256.public_key()]).unwrap();
        let other = PrivateKey::P256(p256::SecretKey::random(&mut OsRng));
        assert!(unwrap(&ann, &[other, p384]).is_err());
        // Comma-joined wrappings: each opens with its own key.
        let joined = format!(
            "{},{}",
            wrap(b"x", &[p521.public_key()]).unwrap(),
            wrap(b"x", &[rsa.public_key()]).unwrap()
        );
        assert_eq!(unwrap(&joined, &[rsa]).unwrap().as_slice(), b"x");
        assert_eq!(unwrap(&joined, &[p521]).unwrap().as_slice(), b"x");
        assert!(matches!(wrap(b"x", &[]), Err(WrapError::NoRecipients)));
    }

    #[test]
    fn other_algorithms_round_trip() {
        let Some(v) = vectors() else { return };
        let rsa = key(&v, "rsa-priv.pem");
        let p384 = PrivateKey::P384(p384::SecretKey::random(&mut OsRng));
        let (rp, ep) = (rsa.public_key(), p384.public_key());
        let ann = wrap_with(
            b"opts",
            &[
                (&rp, WrapAlg::RsaOaep256),
                (&ep, WrapAlg::EcdhEsKw(ALG_ECDH_ES_A128KW, 16)),
            ],
        )
        .unwrap();
        assert_eq!(unwrap(&ann, &[rsa]).unwrap().as_slice(), b"opts");
        assert_eq!(
            unwrap(&ann, std::slice::from_ref(&p384))
                .unwrap()
                .as_slice(),
            b"opts"
        );
        let ann = wrap_with(b"opts", &[(&ep, WrapAlg::EcdhEsKw(ALG_ECDH_ES_A192KW, 24))]).unwrap();
        assert_eq!(unwrap(&ann, &[p384]).unwrap().as_slice(), b"opts");
    }

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES, enc A128GCM, apu "Alice", apv "Bob".
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(
            k.as_slice(),
            [86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167, 16, 26]
        );
    }

    /// An independent JWE producer (Python `cryptography`), for the
    /// algorithms skopeo never writes: RSA-OAEP-256, ECDH-ES+A128KW with
    /// apu/apv on P-521, direct ECDH-ES, A128GCM/A192GCM.
    #[test]
    fn unwraps_python_cryptography_jwe() {
        let Some(v) = vectors() else { return };
        let dir = tempfile::tempdir().unwrap();
        let script = r#"
import base64, json, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def kdf(z, alg, apu, apv, n):
    other = b"".join(len(x).to_bytes(4, "big") + x for x in (alg.encode(), apu, apv)) + (n * 8).to_bytes(4, "big")
    return ConcatKDFHash(hashes.SHA256(), n, other).derive(z)
out, rsa_pem, p521_file = sys.argv[1], sys.argv[2], sys.argv[3]
rsa = serialization.load_pem_public_key(open(rsa_pem, "rb").read())
p521 = ec.generate_private_key(ec.SECP521R1())
open(p521_file, "wb").write(p521.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
def epk_for(priv_pub):
    eph = ec.generate_private_key(priv_pub.curve)
    z = eph.exchange(ec.ECDH(), priv_pub)
    n = eph.public_key().public_numbers()
    size = (priv_pub.curve.key_size + 7) // 8
    crv = {"secp521r1": "P-521", "secp256r1": "P-256", "secp384r1": "P-384"}[priv_pub.curve.name]
    return z, {"kty": "EC", "crv": crv, "x": b64(n.x.to_bytes(size, "big")), "y": b64(n.y.to_bytes(size, "big"))}
msg = b'{"hello":"world"}'
blobs = []
# General form, A128GCM, RSA-OAEP-256 + ECDH-ES+A128KW with apu/apv.
cek = os.urandom(16)
prot = b64(json.dumps({"enc": "A128GCM"}).encode())
z, epk = epk_for(p521.public_key())
kek = kdf(z, "ECDH-ES+A128KW", b"Alice", b"Bob", 16)
recips = [
    {"header": {"alg": "RSA-OAEP-256"}, "encrypted_key": b64(rsa.encrypt(cek, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None)))},
    {"header": {"alg": "ECDH-ES+A128KW", "epk": epk, "apu": b64(b"Alice"), "apv": b64(b"Bob")}, "encrypted_key": b64(aes_key_wrap(kek, cek))},
]
iv = os.urandom(12)
ct = AESGCM(cek).encrypt(iv, msg, prot.encode())
blobs.append({"protected": prot, "recipients": recips, "iv": b64(iv), "ciphertext": b64(ct[:-16]), "tag": b64(ct[-16:])})
# Flattened, direct ECDH-ES, A192GCM, alg in the unprotected header.
z, epk = epk_for(p521.public_key())
cek = kdf(z, "A192GCM", b"", b"", 24)
prot = b64(json.dumps({"enc": "A192GCM"}).encode())
iv = os.urandom(12)
ct = AESGCM(cek).encrypt(iv, msg, prot.encode())
blobs.append({"protected": prot, "header": {"alg": "ECDH-ES", "epk": epk}, "iv": b64(iv), "ciphertext": b64(ct[:-16]), "tag": b64(ct[-16:])})
open(out, "w").write(json.dumps([base64.b64encode(json.dumps(b).encode()).decode() for b in blobs]))
"#;
        let out = dir.path().join("out.json");
        let p521_file = dir.path().join("p521.pem");
        let status = std::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&out)
            .arg(v.join("keys/rsa-pub.pem"))
            .arg(&p521_file)
            .status();
        match status {
            Ok(s) if s.success() => {}
            other => {
                eprintln!(
                    "skipping: python3 with the cryptography package is not usable: {other:?}"
                );
                return;
            }
        }
        let blobs: Vec<String> = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let rsa = key(&v, "rsa-priv.pem");
        let p521 = PrivateKey::from_file(&p521_file, None).unwrap();
        let msg: &[u8] = b"{\"hello\":\"world\"}";
        assert_eq!(
            unwrap(&blobs[0], std::slice::from_ref(&rsa))
                .unwrap()
                .as_slice(),
            msg
        );
        assert_eq!(
            unwrap(&blobs[0], std::slice::from_ref(&p521))
                .unwrap()
                .as_slice(),
            msg
        );
        assert_eq!(
            unwrap(&blobs[1], std::slice::from_ref(&p521))
                .unwrap()
                .as_slice(),
            msg
        );
        let e = unwrap(&blobs[1], &[rsa]).unwrap_err().to_string();
        assert!(e.contains("ECDH-ES (P-521)"), "{e}");
        // Tampering with apu changes the derived key: refused.
        let mut j: Value = serde_json::from_slice(&STANDARD.decode(&blobs[0]).unwrap()).unwrap();
        j["recipients"][1]["header"]["apu"] = Value::from(B64URL.encode(b"Mallory"));
        let ann = STANDARD.encode(serde_json::to_vec(&j).unwrap());
        assert!(unwrap(&ann, &[p521]).is_err());
    }
}
