//! Asymmetric keys for JWE recipients, loaded the way skopeo/ocicrypt takes
//! them: PEM (or DER) PKCS#8, password-protected PKCS#8, PKCS#1 RSA and SEC1
//! EC private keys; SubjectPublicKeyInfo public keys. RSA up to 4096 bits
//! and the NIST curves P-256, P-384 and P-521 are what JWE (`RSA-OAEP*`,
//! `ECDH-ES*`) and go-jose use.
//!
//! Private material lives in the RustCrypto key types, which zeroize on drop;
//! file contents and decoded DER are held in [`Zeroizing`] buffers. Errors say
//! which file and what format was expected, never key bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use elliptic_curve::pkcs8::AssociatedOid;
use pkcs8::der::Decode;
use pkcs8::{DecodePrivateKey, DecodePublicKey, ObjectIdentifier};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

/// Largest key file we read; real keys are a few KiB.
const MAX_KEY_FILE: u64 = 1024 * 1024;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Why a key could not be loaded. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("reading key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Parsing failed.
    #[error("loading {what}: {reason}")]
    Parse {
        /// The file (or "key" when parsed from memory).
        what: String,
        /// What was wrong and what to try.
        reason: String,
    },
    /// The `FILE[:PASSWORD]` argument named no existing file.
    #[error("decryption key {arg:?}: no such key file (the argument is FILE or FILE:PASSWORD; PASSWORD may be pass=..., file=PATH or the literal password)")]
    NoSuchFile {
        /// The argument up to the first ':' (the password is never echoed).
        arg: String,
    },
}

/// The kind and size of a key, for messages ("RSA 2048", "P-384").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA with this modulus size.
    Rsa {
        /// Modulus bits.
        bits: usize,
    },
    /// NIST P-256 (secp256r1).
    P256,
    /// NIST P-384 (secp384r1).
    P384,
    /// NIST P-521 (secp521r1).
    P521,
}

impl KeyKind {
    /// The JWK `crv` name of an EC kind.
    pub fn curve_name(self) -> Option<&'static str> {
        match self {
            KeyKind::Rsa { .. } => None,
            KeyKind::P256 => Some("P-256"),
            KeyKind::P384 => Some("P-384"),
            KeyKind::P521 => Some("P-521"),
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyKind::Rsa { bits } => write!(f, "RSA {bits}"),
            other => f.write_str(other.curve_name().unwrap_or("?")),
        }
    }
}

/// A private key that can unwrap JWE recipients. Debug shows only the kind.
#[derive(Clone)]
pub enum PrivateKey {
    /// RSA (for `RSA-OAEP`, `RSA-OAEP-256`).
    Rsa(Box<rsa::RsaPrivateKey>),
    /// P-256 (for `ECDH-ES*`).
    P256(p256::SecretKey),
    /// P-384.
    P384(p384::SecretKey),
    /// P-521.
    P521(p521::SecretKey),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.kind())
    }
}

/// A public key to encrypt a layer key to (a JWE recipient).
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA (wrapped with `RSA-OAEP`, as ocicrypt does).
    Rsa(rsa::RsaPublicKey),
    /// P-256 (wrapped with `ECDH-ES+A256KW`).
    P256(p256::PublicKey),
    /// P-384.
    P384(p384::PublicKey),
    /// P-521.
    P521(p521::PublicKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.kind())
    }
}

fn parse_err(what: &str, reason: impl Into<String>) -> KeyError {
    KeyError::Parse {
        what: what.to_string(),
        reason: reason.into(),
    }
}

/// One PEM block of a file: its label and decoded DER (zeroized).
struct PemBlock {
    label: String,
    der: Zeroizing<Vec<u8>>,
}

/// Splits a PEM file into its blocks, tolerating text around them (OpenSSL
/// "Bag Attributes", comments). `Ok(None)` means the input is not PEM at all.
fn pem_blocks(data: &[u8], what: &str) -> Result<Option<Vec<PemBlock>>, KeyError> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let mut blocks = Vec::new();
    let mut rest = data;
    while let Some(start) = find(rest, BEGIN) {
        let from = &rest[start..];
        let label_end = find(&from[BEGIN.len()..], b"-----")
            .ok_or_else(|| parse_err(what, "unterminated PEM BEGIN line"))?;
        let label = &from[BEGIN.len()..BEGIN.len() + label_end];
        let mut end_marker = b"-----END ".to_vec();
        end_marker.extend_from_slice(label);
        end_marker.extend_from_slice(b"-----");
        let end = find(from, &end_marker).ok_or_else(|| {
            parse_err(
                what,
                format!(
                    "PEM block {:?} has no END line",
                    String::from_utf8_lossy(label)
                ),
            )
        })? + end_marker.len();
        let block = &from[..end];
        let label = String::from_utf8_lossy(label).into_owned();
        if find(block, b"Proc-Type:").is_some() {
            return Err(parse_err(
                what,
                format!("{label} is encrypted in the legacy OpenSSL PEM format, which is not supported; convert it with `openssl pkcs8 -topk8 -v2 aes256 -in KEY -out KEY.p8` and pass KEY.p8:PASSWORD"),
            ));
        }
        let (_, der) = pkcs8::der::pem::decode_vec(block)
            .map_err(|e| parse_err(what, format!("PEM block {label:?} is malformed: {e}")))?;
        blocks.push(PemBlock {
            label,
            der: Zeroizing::new(der),
        });
        rest = &from[end..];
    }
    Ok(if blocks.is_empty() {
        None
    } else {
        Some(blocks)
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn read_key_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use std::io::Read as _;
    let read_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut data = Zeroizing::new(Vec::with_capacity(8192));
    file.take(MAX_KEY_FILE + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_KEY_FILE {
        return Err(parse_err(
            &path.display().to_string(),
            "file is larger than 1 MiB, not a key",
        ));
    }
    Ok(data)
}

impl PrivateKey {
    /// The key's kind and size.
    pub fn kind(&self) -> KeyKind {
        match self {
            PrivateKey::Rsa(k) => KeyKind::Rsa { bits: k.size() * 8 },
            PrivateKey::P256(_) => KeyKind::P256,
            PrivateKey::P384(_) => KeyKind::P384,
            PrivateKey::P521(_) => KeyKind::P521,
        }
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            PrivateKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            PrivateKey::P256(k) => PublicKey::P256(k.public_key()),
            PrivateKey::P384(k) => PublicKey::P384(k.public_key()),
            PrivateKey::P521(k) => PublicKey::P521(k.public_key()),
        }
    }

    /// Loads a key from a `FILE[:PASSWORD]` argument, as skopeo's
    /// `--decryption-key` takes it (see [`parse_key_arg`]).
    pub fn from_key_arg(arg: &str) -> Result<Self, KeyError> {
        let ka = parse_key_arg(arg)?;
        Self::from_file(&ka.path, ka.password.as_ref().map(|p| p.as_slice()))
    }

    /// Loads a key file (PEM or DER). `password` is needed for encrypted
    /// PKCS#8 and ignored otherwise.
    pub fn from_file(path: &Path, password: Option<&[u8]>) -> Result<Self, KeyError> {
        let data = read_key_file(path)?;
        Self::parse(&data, password, &path.display().to_string())
    }

    /// Parses a key from memory (PEM or DER).
    pub fn from_bytes(data: &[u8], password: Option<&[u8]>) -> Result<Self, KeyError> {
        Self::parse(data, password, "private key")
    }

    fn parse(data: &[u8], password: Option<&[u8]>, what: &str) -> Result<Self, KeyError> {
        let Some(blocks) = pem_blocks(data, what)? else {
            return Self::from_der_any(data, password, what);
        };
        let mut labels = Vec::new();
        for b in &blocks {
            match b.label.as_str() {
                "PRIVATE KEY" => return Self::from_pkcs8(&b.der, what),
                "ENCRYPTED PRIVATE KEY" => {
                    return Self::from_encrypted_pkcs8(&b.der, password, what)
                }
                "RSA PRIVATE KEY" => return Self::from_pkcs1(&b.der, what),
                "EC PRIVATE KEY" => return Self::from_sec1(&b.der, what),
                other => labels.push(other.to_string()),
            }
        }
        let hint = if labels
            .iter()
            .any(|l| l.contains("PUBLIC KEY") || l == "CERTIFICATE")
        {
            "; this is a public key or certificate: decryption needs the private key"
        } else {
            ""
        };
        Err(parse_err(
            what,
            format!(
                "no private key in the PEM file (found {}); expected PRIVATE KEY, ENCRYPTED PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY{hint}",
                labels.join(", ")
            ),
        ))
    }

    fn from_der_any(der: &[u8], password: Option<&[u8]>, what: &str) -> Result<Self, KeyError> {
        if pkcs8::PrivateKeyInfo::from_der(der).is_ok() {
            return Self::from_pkcs8(der, what);
        }
        if pkcs8::EncryptedPrivateKeyInfo::from_der(der).is_ok() {
            return Self::from_encrypted_pkcs8(der, password, what);
        }
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs1_der(der) {
            return Ok(PrivateKey::Rsa(Box::new(k)));
        }
        if sec1::EcPrivateKey::from_der(der).is_ok() {
            return Self::from_sec1(der, what);
        }
        Err(parse_err(
            what,
            "not a PEM or DER private key (PKCS#8, encrypted PKCS#8, PKCS#1 RSA or SEC1 EC); JWK, PGP and PKCS#11 keys are not supported",
        ))
    }

    fn from_pkcs8(der: &[u8], what: &str) -> Result<Self, KeyError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der)
            .map_err(|e| parse_err(what, format!("malformed PKCS#8: {e}")))?;
        let bad = |e: &dyn fmt::Display| parse_err(what, format!("invalid key in PKCS#8: {e}"));
        match info.algorithm.oid {
            OID_RSA => rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map(|k| PrivateKey::Rsa(Box::new(k)))
                .map_err(|e| bad(&e)),
            OID_EC => {
                let curve = info
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| parse_err(what, "EC key without a named curve"))?;
                match curve {
                    c if c == p256::NistP256::OID => p256::SecretKey::from_pkcs8_der(der)
                        .map(PrivateKey::P256)
                        .map_err(|e| bad(&e)),
                    c if c == p384::NistP384::OID => p384::SecretKey::from_pkcs8_der(der)
                        .map(PrivateKey::P384)
                        .map_err(|e| bad(&e)),
                    c if c == p521::NistP521::OID => p521::SecretKey::from_pkcs8_der(der)
                        .map(PrivateKey::P521)
                        .map_err(|e| bad(&e)),
                    c => Err(unsupported_curve(what, c)),
                }
            }
            oid => Err(parse_err(
                what,
                format!("key algorithm {oid} is not supported (RSA and EC P-256/P-384/P-521 are)"),
            )),
        }
    }

    fn from_encrypted_pkcs8(
        der: &[u8],
        password: Option<&[u8]>,
        what: &str,
    ) -> Result<Self, KeyError> {
        let Some(password) = password else {
            return Err(parse_err(
                what,
                "the private key is password protected but no password was given; pass it as FILE:PASSWORD",
            ));
        };
        let info = pkcs8::EncryptedPrivateKeyInfo::from_der(der)
            .map_err(|e| parse_err(what, format!("malformed encrypted PKCS#8: {e}")))?;
        let doc = info.decrypt(password).map_err(|e| {
            parse_err(
                what,
                format!("decrypting the private key failed ({e}): wrong password, or an encryption scheme other than PBES2 (PBKDF2 or scrypt with AES-CBC)"),
            )
        })?;
        Self::from_pkcs8(doc.as_bytes(), what)
    }

    fn from_pkcs1(der: &[u8], what: &str) -> Result<Self, KeyError> {
        rsa::RsaPrivateKey::from_pkcs1_der(der)
            .map(|k| PrivateKey::Rsa(Box::new(k)))
            .map_err(|e| parse_err(what, format!("invalid PKCS#1 RSA private key: {e}")))
    }

    fn from_sec1(der: &[u8], what: &str) -> Result<Self, KeyError> {
        let key = sec1::EcPrivateKey::from_der(der)
            .map_err(|e| parse_err(what, format!("malformed SEC1 EC private key: {e}")))?;
        let curve = key.parameters.and_then(|p| p.named_curve());
        let bad = |e: &dyn fmt::Display| parse_err(what, format!("invalid SEC1 EC key: {e}"));
        // Without parameters the scalar length tells the curve.
        match (curve, key.private_key.len()) {
            (Some(c), _) if c == p256::NistP256::OID => p256::SecretKey::from_sec1_der(der)
                .map(PrivateKey::P256)
                .map_err(|e| bad(&e)),
            (Some(c), _) if c == p384::NistP384::OID => p384::SecretKey::from_sec1_der(der)
                .map(PrivateKey::P384)
                .map_err(|e| bad(&e)),
            (Some(c), _) if c == p521::NistP521::OID => p521::SecretKey::from_sec1_der(der)
                .map(PrivateKey::P521)
                .map_err(|e| bad(&e)),
            (Some(c), _) => Err(unsupported_curve(what, c)),
            (None, 32) => p256::SecretKey::from_slice(key.private_key)
                .map(PrivateKey::P256)
                .map_err(|e| bad(&e)),
            (None, 48) => p384::SecretKey::from_slice(key.private_key)
                .map(PrivateKey::P384)
                .map_err(|e| bad(&e)),
            (None, 66) => p521::SecretKey::from_slice(key.private_key)
                .map(PrivateKey::P521)
                .map_err(|e| bad(&e)),
            (None, n) => Err(parse_err(
                what,
                format!("SEC1 EC key without curve parameters and a {n}-byte scalar"),
            )),
        }
    }
}

fn unsupported_curve(what: &str, oid: ObjectIdentifier) -> KeyError {
    parse_err(
        what,
        format!("EC curve {oid} is not supported (P-256, P-384 and P-521 are, as in JWE)"),
    )
}

impl PublicKey {
    /// The key's kind and size.
    pub fn kind(&self) -> KeyKind {
        match self {
            PublicKey::Rsa(k) => KeyKind::Rsa { bits: k.size() * 8 },
            PublicKey::P256(_) => KeyKind::P256,
            PublicKey::P384(_) => KeyKind::P384,
            PublicKey::P521(_) => KeyKind::P521,
        }
    }

    /// Loads a public key file: PEM `PUBLIC KEY` (SubjectPublicKeyInfo, what
    /// skopeo's `--encryption-key jwe:FILE` takes), PEM `RSA PUBLIC KEY`
    /// (PKCS#1), or DER SubjectPublicKeyInfo.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let data = read_key_file(path)?;
        Self::parse(&data, &path.display().to_string())
    }

    /// Parses a public key from memory (see [`from_file`](Self::from_file)).
    pub fn from_bytes(data: &[u8]) -> Result<Self, KeyError> {
        Self::parse(data, "public key")
    }

    fn parse(data: &[u8], what: &str) -> Result<Self, KeyError> {
        let Some(blocks) = pem_blocks(data, what)? else {
            return Self::from_spki(data, what);
        };
        let mut labels = Vec::new();
        for b in &blocks {
            match b.label.as_str() {
                "PUBLIC KEY" => return Self::from_spki(&b.der, what),
                "RSA PUBLIC KEY" => {
                    return rsa::RsaPublicKey::from_pkcs1_der(&b.der)
                        .map(PublicKey::Rsa)
                        .map_err(|e| {
                            parse_err(what, format!("invalid PKCS#1 RSA public key: {e}"))
                        })
                }
                other => labels.push(other.to_string()),
            }
        }
        Err(parse_err(
            what,
            format!(
                "no public key in the PEM file (found {}); expected PUBLIC KEY (SubjectPublicKeyInfo); X.509 certificates are not supported, extract the key with `openssl x509 -pubkey -noout`",
                labels.join(", ")
            ),
        ))
    }

    fn from_spki(der: &[u8], what: &str) -> Result<Self, KeyError> {
        let info = pkcs8::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| parse_err(what, format!("not a SubjectPublicKeyInfo: {e}")))?;
        let bad = |e: &dyn fmt::Display| parse_err(what, format!("invalid public key: {e}"));
        match info.algorithm.oid {
            OID_RSA => rsa::RsaPublicKey::from_public_key_der(der)
                .map(PublicKey::Rsa)
                .map_err(|e| bad(&e)),
            OID_EC => {
                let curve = info
                    .algorithm
                    .parameters_oid()
                    .map_err(|_| parse_err(what, "EC key without a named curve"))?;
                match curve {
                    c if c == p256::NistP256::OID => p256::PublicKey::from_public_key_der(der)
                        .map(PublicKey::P256)
                        .map_err(|e| bad(&e)),
                    c if c == p384::NistP384::OID => p384::PublicKey::from_public_key_der(der)
                        .map(PublicKey::P384)
                        .map_err(|e| bad(&e)),
                    c if c == p521::NistP521::OID => p521::PublicKey::from_public_key_der(der)
                        .map(PublicKey::P521)
                        .map_err(|e| bad(&e)),
                    c => Err(unsupported_curve(what, c)),
                }
            }
            oid => Err(parse_err(
                what,
                format!("key algorithm {oid} is not supported (RSA and EC P-256/P-384/P-521 are)"),
            )),
        }
    }
}

/// A `FILE[:PASSWORD]` key argument, split.
#[derive(Clone)]
pub struct KeyArg {
    /// The key file.
    pub path: PathBuf,
    /// The password, if one was given.
    pub password: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for KeyArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyArg")
            .field("path", &self.path)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Splits a `--decryption-key` argument the way skopeo/ocicrypt does:
/// `FILE` or `FILE:PASSWORD`, where PASSWORD is `pass=SECRET`, `file=PATH`
/// (the file's bytes, verbatim, as Go reads them) or the literal password.
///
/// Unlike ocicrypt, a path containing ':' works: the whole argument is tried
/// as a path first, then each split at a ':' from the right, taking the first
/// whose left part is an existing file. (ocicrypt's `fd=N` form is not
/// supported.)
pub fn parse_key_arg(arg: &str) -> Result<KeyArg, KeyError> {
    if Path::new(arg).is_file() {
        return Ok(KeyArg {
            path: PathBuf::from(arg),
            password: None,
        });
    }
    for (i, _) in arg.rmatch_indices(':') {
        let (file, pwd) = (&arg[..i], &arg[i + 1..]);
        if !Path::new(file).is_file() {
            continue;
        }
        let password = if let Some(p) = pwd.strip_prefix("pass=") {
            p.as_bytes().to_vec()
        } else if let Some(p) = pwd.strip_prefix("file=") {
            read_key_file(Path::new(p))?.to_vec()
        } else if pwd.starts_with("fd=") {
            return Err(parse_err(
                file,
                "password from a file descriptor (fd=N) is not supported; use file=PATH or pass=SECRET",
            ));
        } else {
            pwd.as_bytes().to_vec()
        };
        return Ok(KeyArg {
            path: PathBuf::from(file),
            password: Some(Zeroizing::new(password)),
        });
    }
    Err(KeyError::NoSuchFile {
        arg: arg.split(':').next().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// The vector directory, or `None` (with a note) when it is absent.
    pub(crate) fn vectors() -> Option<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/ocicrypt");
        if dir.join("keys").is_dir() {
            Some(dir)
        } else {
            eprintln!(
                "skipping: ocicrypt vectors not found at {} (they live in ../shared/vectors/ocicrypt beside the repository)",
                dir.display()
            );
            None
        }
    }

    fn openssl(args: &[&str]) -> bool {
        match Command::new("openssl").args(args).output() {
            Ok(o) if o.status.success() => true,
            Ok(o) => panic!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => {
                eprintln!("skipping: openssl not runnable: {e}");
                false
            }
        }
    }

    #[test]
    fn loads_vector_keys_and_kinds() {
        let Some(v) = vectors() else { return };
        let k = v.join("keys");
        let rsa = PrivateKey::from_file(&k.join("rsa-priv.pem"), None).unwrap();
        assert_eq!(rsa.kind(), KeyKind::Rsa { bits: 2048 });
        assert_eq!(rsa.kind().to_string(), "RSA 2048");
        let rsa_pub = PublicKey::from_file(&k.join("rsa-pub.pem")).unwrap();
        assert_eq!(rsa.public_key(), rsa_pub);
        let ec = PrivateKey::from_file(&k.join("ec384-priv.pem"), None).unwrap();
        assert_eq!(ec.kind().to_string(), "P-384");
        assert_eq!(
            ec.public_key(),
            PublicKey::from_file(&k.join("ec384-pub.pem")).unwrap()
        );
        let ec256 = PrivateKey::from_file(&k.join("ec256-priv.pem"), None).unwrap();
        assert_eq!(
            ec256.public_key(),
            PublicKey::from_file(&k.join("ec256-pub.pem")).unwrap()
        );
        assert_eq!(format!("{ec256:?}"), "PrivateKey(P-256)");
        // A public key file where a private key is expected.
        let e = PrivateKey::from_file(&k.join("rsa-pub.pem"), None).unwrap_err();
        assert!(e.to_string().contains("needs the private key"), "{e}");
    }

    #[test]
    fn traditional_der_and_encrypted_formats() {
        let Some(v) = vectors() else { return };
        let k = v.join("keys");
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
        let src = |n: &str| k.join(n).to_str().unwrap().to_string();
        let rsa = PrivateKey::from_file(&k.join("rsa-priv.pem"), None).unwrap();
        let ec = PrivateKey::from_file(&k.join("ec256-priv.pem"), None).unwrap();
        if !openssl(&[
            "rsa",
            "-traditional",
            "-in",
            &src("rsa-priv.pem"),
            "-out",
            &p("rsa1.pem"),
        ]) {
            return;
        }
        openssl(&["ec", "-in", &src("ec256-priv.pem"), "-out", &p("sec1.pem")]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-passout",
            "pass:secret",
            "-in",
            &src("ec256-priv.pem"),
            "-out",
            &p("enc.pem"),
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes256",
            "-passout",
            "pass:pw",
            "-in",
            &src("rsa-priv.pem"),
            "-outform",
            "DER",
            "-out",
            &p("enc.der"),
        ]);
        openssl(&[
            "pkey",
            "-in",
            &src("ec256-priv.pem"),
            "-outform",
            "DER",
            "-out",
            &p("ec.der"),
        ]);
        openssl(&[
            "ecparam",
            "-name",
            "secp521r1",
            "-genkey",
            "-out",
            &p("p521.pem"),
        ]);

        let rsa1 = std::fs::read(p("rsa1.pem")).unwrap();
        assert!(rsa1.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
        assert_eq!(
            PrivateKey::from_file(Path::new(&p("rsa1.pem")), None)
                .unwrap()
                .public_key(),
            rsa.public_key()
        );
        let sec1 = std::fs::read(p("sec1.pem")).unwrap();
        assert!(sec1.starts_with(b"-----BEGIN EC PRIVATE KEY-----"));
        assert_eq!(
            PrivateKey::from_file(Path::new(&p("sec1.pem")), None)
                .unwrap()
                .public_key(),
            ec.public_key()
        );
        assert_eq!(
            PrivateKey::from_file(Path::new(&p("ec.der")), None)
                .unwrap()
                .public_key(),
            ec.public_key()
        );
        // `ecparam -genkey` writes an EC PARAMETERS block first.
        assert_eq!(
            PrivateKey::from_file(Path::new(&p("p521.pem")), None)
                .unwrap()
                .kind(),
            KeyKind::P521
        );

        // Password-protected PKCS#8, through the skopeo-style argument.
        let enc = PrivateKey::from_key_arg(&format!("{}:secret", p("enc.pem"))).unwrap();
        assert_eq!(enc.public_key(), ec.public_key());
        let enc = PrivateKey::from_key_arg(&format!("{}:pass=secret", p("enc.pem"))).unwrap();
        assert_eq!(enc.public_key(), ec.public_key());
        std::fs::write(p("pw"), "pw").unwrap();
        let der = PrivateKey::from_key_arg(&format!("{}:file={}", p("enc.der"), p("pw"))).unwrap();
        assert_eq!(der.public_key(), rsa.public_key());
        let e = PrivateKey::from_key_arg(&format!("{}:wrong", p("enc.pem"))).unwrap_err();
        assert!(e.to_string().contains("wrong password"), "{e}");
        assert!(!e.to_string().contains("wrong\""));
        let e = PrivateKey::from_file(Path::new(&p("enc.pem")), None).unwrap_err();
        assert!(e.to_string().contains("password protected"), "{e}");
    }

    #[test]
    fn key_arg_with_colons_in_path() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a:b.pem");
        std::fs::write(&odd, "x").unwrap();
        let s = odd.to_str().unwrap();
        let ka = parse_key_arg(s).unwrap();
        assert_eq!(
            (ka.path.as_path(), ka.password.is_none()),
            (odd.as_path(), true)
        );
        let ka = parse_key_arg(&format!("{s}:pw:with:colons")).unwrap();
        assert_eq!(ka.path, odd);
        assert_eq!(ka.password.unwrap().as_slice(), b"pw:with:colons");
        let e = parse_key_arg("/nonexistent/key.pem:hunter2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(e, KeyError::NoSuchFile { .. }));
    }
}
