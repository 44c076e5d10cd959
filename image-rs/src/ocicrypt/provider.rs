//! The Confidential Containers key-provider wrapping: the private options
//! encrypted under a key-encryption key (KEK) that the guest fetches from the
//! KBS after attestation, carried in
//! `org.opencontainers.image.enc.keys.provider.attestation-agent` as the
//! base64 of an annotation packet:
//!
//! ```json
//! {"kid":"kbs:///default/key/1","wrapped_data":"<b64>","iv":"<b64>","wrap_type":"A256GCM"}
//! ```
//!
//! (v1; v2 adds `version`, `provider`, `provider_settings`, `annotations`,
//! and only its `kbs` provider is supported here). `A256GCM`:
//! `wrapped_data` = ciphertext || 16-byte tag, 12-byte iv. `A256CTR`: plain
//! AES-256-CTR with a 16-byte iv and **no integrity** — accepted because
//! CoCo tooling can produce it, and safe only because the unwrapped options
//! are then used to check the layer (a forged key fails the HMAC, a forged
//! digest fails the digest check); prefer A256GCM.
//!
//! The KEK comes from a [`KeyProvider`]. The trait is async (a boxed future,
//! so it stays object safe without `async-trait`) because the real
//! implementation, in the attestation crate, talks to the KBS over HTTPS on
//! the pull pipeline's tokio runtime: a blocking trait would force it to
//! `block_on` inside the runtime, which panics on worker threads.
//! [`FileKeyProvider`] serves tests and development from a directory laid
//! out like the KBS resource tree.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Largest packet we parse.
const MAX_PACKET_LEN: usize = 64 * 1024;
/// Largest KEK file [`FileKeyProvider`] reads.
const MAX_KEK_FILE: u64 = 4096;

/// Why the provider wrapping could not be opened (or made). Never carries
/// key material.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The annotation is not a CoCo annotation packet.
    #[error("parsing the key-provider annotation packet: {0}; the image was not encrypted for a Confidential Containers key provider or its annotation was modified")]
    Malformed(String),
    /// The packet's `kid` is not a usable `kbs:///repo/type/tag` URI.
    #[error("key id {kid:?}: {reason}; expected kbs:///<repository>/<type>/<tag>")]
    BadKid {
        /// The key id (truncated).
        kid: String,
        /// The rule it broke.
        reason: String,
    },
    /// A wrap type, version or provider we do not implement.
    #[error("key-provider annotation packet: {0}")]
    Unsupported(String),
    /// The provider could not supply the KEK.
    #[error("fetching key-encryption key {kid}: {reason}")]
    Kek {
        /// The key id.
        kid: String,
        /// What went wrong and what to try.
        reason: String,
    },
    /// The KEK did not open the packet.
    #[error("unwrapping the layer key with key-encryption key {kid} ({wrap_type}) failed: the key is not the one the image was encrypted with, or the packet was modified")]
    Unwrap {
        /// The key id.
        kid: String,
        /// The wrap type.
        wrap_type: WrapType,
    },
}

/// How `wrapped_data` is encrypted under the KEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapType {
    /// AES-256-GCM, 12-byte iv, tag appended.
    A256Gcm,
    /// AES-256-CTR, 16-byte iv, no integrity.
    A256Ctr,
}

impl WrapType {
    /// The packet's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WrapType::A256Gcm => "A256GCM",
            WrapType::A256Ctr => "A256CTR",
        }
    }
}

impl fmt::Display for WrapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed annotation packet (v1, or v2 with the `kbs` provider).
#[derive(Debug, Clone)]
pub struct AnnotationPacket {
    /// The KEK's resource URI.
    pub kid: ResourceUri,
    /// The wrapped private options.
    pub wrapped_data: Vec<u8>,
    /// The wrap IV.
    pub iv: Vec<u8>,
    /// The wrap algorithm.
    pub wrap_type: WrapType,
}

#[derive(Deserialize)]
struct PacketJson {
    kid: String,
    wrapped_data: String,
    iv: Option<String>,
    wrap_type: Option<String>,
    version: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    provider_settings: serde_json::Value,
    #[serde(default)]
    #[allow(dead_code)]
    annotations: serde_json::Value,
}

#[derive(Serialize)]
struct PacketOut<'a> {
    kid: &'a str,
    wrapped_data: String,
    iv: String,
    wrap_type: &'static str,
}

impl AnnotationPacket {
    /// Parses the annotation value (standard base64 of the packet JSON).
    pub fn from_annotation(value: &str) -> Result<Self, ProviderError> {
        let bad = |s: &str| ProviderError::Malformed(s.to_string());
        if value.len() > MAX_PACKET_LEN {
            return Err(bad("the annotation is implausibly large"));
        }
        let json = STANDARD
            .decode(value.trim())
            .map_err(|_| bad("the annotation is not standard base64"))?;
        let p: PacketJson = serde_json::from_slice(&json)
            .map_err(|e| ProviderError::Malformed(format!("not the expected JSON ({e})")))?;
        if let Some(v) = &p.version {
            if v != "0.1.0" {
                return Err(ProviderError::Unsupported(format!(
                    "packet version {v:?} is not supported (0.1.0 is)"
                )));
            }
        }
        if let Some(provider) = &p.provider {
            if provider != "kbs" {
                return Err(ProviderError::Unsupported(format!(
                    "KMS provider {provider:?} is not supported; only keys from the KBS (provider \"kbs\") are"
                )));
            }
        }
        let wrap_type = match p.wrap_type.as_deref() {
            Some("A256GCM") => WrapType::A256Gcm,
            Some("A256CTR") => WrapType::A256Ctr,
            Some(other) => {
                return Err(ProviderError::Unsupported(format!(
                    "wrap_type {other:?} is not supported (A256GCM and A256CTR are)"
                )))
            }
            None => return Err(bad("no wrap_type")),
        };
        let iv = STANDARD
            .decode(p.iv.ok_or_else(|| bad("no iv"))?)
            .map_err(|_| bad("iv is not standard base64"))?;
        let iv_len = match wrap_type {
            WrapType::A256Gcm => 12,
            WrapType::A256Ctr => 16,
        };
        if iv.len() != iv_len {
            return Err(ProviderError::Malformed(format!(
                "iv is {} bytes, {wrap_type} needs {iv_len}",
                iv.len()
            )));
        }
        let wrapped_data = STANDARD
            .decode(&p.wrapped_data)
            .map_err(|_| bad("wrapped_data is not standard base64"))?;
        Ok(AnnotationPacket {
            kid: ResourceUri::parse(&p.kid)?,
            wrapped_data,
            iv,
            wrap_type,
        })
    }

    /// Decrypts `wrapped_data` with `kek` (32 bytes).
    pub fn unwrap_with(&self, kek: &[u8]) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let kid = self.kid.to_string();
        let kek: &[u8; 32] = kek.try_into().map_err(|_| ProviderError::Kek {
            kid: kid.clone(),
            reason: format!(
                "the key is {} bytes, {} needs 32; the KBS resource is not an AES-256 key",
                kek.len(),
                self.wrap_type
            ),
        })?;
        let mut buf = Zeroizing::new(self.wrapped_data.clone());
        match self.wrap_type {
            WrapType::A256Gcm => {
                let unwrap_err = || ProviderError::Unwrap {
                    kid: kid.clone(),
                    wrap_type: self.wrap_type,
                };
                if buf.len() < 16 {
                    return Err(unwrap_err());
                }
                let split = buf.len() - 16;
                let (ct, tag) = buf.split_at_mut(split);
                let tag = aes_gcm::Tag::<aes_gcm::aead::consts::U16>::clone_from_slice(tag);
                Aes256Gcm::new(kek.into())
                    .decrypt_in_place_detached(
                        aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::from_slice(&self.iv),
                        b"",
                        ct,
                        &tag,
                    )
                    .map_err(|_| unwrap_err())?;
                buf.truncate(split);
            }
            WrapType::A256Ctr => {
                let iv: &[u8; 16] =
                    self.iv.as_slice().try_into().map_err(|_| {
                        ProviderError::Malformed("A256CTR iv is not 16 bytes".into())
                    })?;
                super::cipher::Aes256Ctr::new(kek.into(), iv.into()).apply_keystream(&mut buf);
            }
        }
        Ok(buf)
    }
}

/// A KBS resource URI `kbs:///<repository>/<type>/<tag>`, validated so that
/// each part is safe as a path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceUri {
    /// Repository (e.g. `default`).
    pub repository: String,
    /// Resource type (e.g. `key`).
    pub kind: String,
    /// Tag (e.g. `1`).
    pub tag: String,
}

impl ResourceUri {
    /// Parses and validates a key id. Only the `kbs` scheme with an empty
    /// host (the KBS the guest is configured with) is accepted; each of the
    /// three parts must be non-empty, not `.` or `..`, and free of `/`, `\`,
    /// NUL and other control characters.
    pub fn parse(kid: &str) -> Result<Self, ProviderError> {
        let bad = |reason: &str| ProviderError::BadKid {
            kid: kid.chars().take(200).collect(),
            reason: reason.to_string(),
        };
        let rest = kid
            .strip_prefix("kbs://")
            .ok_or_else(|| bad("only the kbs:// scheme is supported"))?;
        let path = rest.strip_prefix('/').ok_or_else(|| {
            bad("a host in the key id is not supported; the guest asks the KBS it attested to (use kbs:///...)")
        })?;
        if path.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let [repository, kind, tag] = parts[..] else {
            return Err(bad("it must have exactly three path parts"));
        };
        for part in [repository, kind, tag] {
            if part.is_empty() {
                return Err(bad("a path part is empty"));
            }
            if part == "." || part == ".." {
                return Err(bad("a path part is . or .."));
            }
            if part.chars().any(|c| c == '\\' || c.is_control()) {
                return Err(bad("a path part contains a backslash or control character"));
            }
        }
        Ok(ResourceUri {
            repository: repository.to_string(),
            kind: kind.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The relative path `<repository>/<type>/<tag>`.
    pub fn relative_path(&self) -> PathBuf {
        Path::new(&self.repository).join(&self.kind).join(&self.tag)
    }
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kbs:///{}/{}/{}", self.repository, self.kind, self.tag)
    }
}

/// The future a [`KeyProvider`] returns.
pub type KekFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Zeroizing<Vec<u8>>, ProviderError>> + Send + 'a>>;

/// Supplies key-encryption keys by key id. The attestation crate implements
/// it over the KBS (attest, then fetch the resource named by the `kbs:///`
/// URI); [`FileKeyProvider`] reads a local directory. Implementations get a
/// `kid` already validated by [`ResourceUri::parse`] and must not log the
/// key.
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Fetches the KEK named `kid` (`kbs:///<repository>/<type>/<tag>`).
    fn get_kek<'a>(&'a self, kid: &'a str) -> KekFuture<'a>;
}

/// A [`KeyProvider`] over a directory laid out like the KBS resource tree:
/// kid `kbs:///<repo>/<type>/<tag>` is the file `root/<repo>/<type>/<tag>`.
/// For tests and development; a guest gets its keys from the KBS.
#[derive(Debug, Clone)]
pub struct FileKeyProvider {
    /// The resource tree root.
    pub root: PathBuf,
}

impl FileKeyProvider {
    /// A provider over `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileKeyProvider { root: root.into() }
    }

    /// The lookup itself (synchronous; the files are tiny).
    pub fn read_kek(&self, kid: &str) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        use std::io::Read as _;
        let uri = ResourceUri::parse(kid)?;
        let path = self.root.join(uri.relative_path());
        let err = |reason: String| ProviderError::Kek {
            kid: uri.to_string(),
            reason,
        };
        let file = std::fs::File::open(&path)
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        let mut kek = Zeroizing::new(Vec::with_capacity(64));
        file.take(MAX_KEK_FILE + 1)
            .read_to_end(&mut kek)
            .map_err(|e| err(format!("reading {}: {e}", path.display())))?;
        if kek.len() as u64 > MAX_KEK_FILE {
            return Err(err(format!("{} is too large for a key", path.display())));
        }
        Ok(kek)
    }
}

impl KeyProvider for FileKeyProvider {
    fn get_kek<'a>(&'a self, kid: &'a str) -> KekFuture<'a> {
        Box::pin(std::future::ready(self.read_kek(kid)))
    }
}

/// Opens a key-provider annotation: parses the packet, asks `provider` for
/// the KEK named by its `kid`, and returns the private options JSON.
pub async fn unwrap_packet(
    annotation: &str,
    provider: &dyn KeyProvider,
) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
    let packet = AnnotationPacket::from_annotation(annotation)?;
    let kid = packet.kid.to_string();
    let kek = provider.get_kek(&kid).await?;
    packet.unwrap_with(&kek)
}

/// Wraps `private_options` (JSON) under `kek` (32 bytes) for key id `kid`
/// with A256GCM and a fresh 12-byte iv; returns the annotation value (a v1
/// packet, which every CoCo version reads).
pub fn wrap_packet(private_options: &[u8], kid: &str, kek: &[u8]) -> Result<String, ProviderError> {
    let uri = ResourceUri::parse(kid)?;
    let kek: &[u8; 32] = kek.try_into().map_err(|_| ProviderError::Kek {
        kid: uri.to_string(),
        reason: format!("the key is {} bytes, A256GCM needs 32", kek.len()),
    })?;
    let mut iv = [0u8; 12];
    OsRng.fill_bytes(&mut iv);
    let mut buf = private_options.to_vec();
    let tag = Aes256Gcm::new(kek.into())
        .encrypt_in_place_detached(
            aes_gcm::Nonce::<aes_gcm::aead::consts::U12>::from_slice(&iv),
            b"",
            &mut buf,
        )
        .expect("GCM encryption of a small buffer cannot fail");
    buf.extend_from_slice(&tag);
    let kid = uri.to_string();
    let packet = PacketOut {
        kid: &kid,
        wrapped_data: STANDARD.encode(&buf),
        iv: STANDARD.encode(iv),
        wrap_type: WrapType::A256Gcm.as_str(),
    };
    Ok(STANDARD.encode(serde_json::to_vec(&packet).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocicrypt::keys::tests::vectors;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn resource_uri_validation() {
        let u = ResourceUri::parse("kbs:///default/key/1").unwrap();
        assert_eq!(u.relative_path(), Path::new("default/key/1"));
        assert_eq!(u.to_string(), "kbs:///default/key/1");
        for bad in [
            "kbs:///default/key",
            "kbs:///default/key/1/2",
            "kbs:///../key/1",
            "kbs:///default/./1",
            "kbs:///default//1",
            "kbs://host/default/key/1",
            "https:///default/key/1",
            "kbs:///default/key/1\0",
            "kbs:///default/key/a\\..",
            "kbs:///default/key/1?x=y",
            "/etc/passwd",
        ] {
            assert!(
                matches!(ResourceUri::parse(bad), Err(ProviderError::BadKid { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn file_provider_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), [1u8; 32]).unwrap();
        let p = FileKeyProvider::new(dir.path().join("root"));
        let e = p.read_kek("kbs:///../secret/x").unwrap_err();
        assert!(matches!(e, ProviderError::BadKid { .. }), "{e}");
        let e = p.read_kek("kbs:///a/b/c").unwrap_err();
        assert!(e.to_string().contains("kbs:///a/b/c"), "{e}");
    }

    #[test]
    fn packet_round_trip_and_wrong_kek() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/key")).unwrap();
        std::fs::write(dir.path().join("repo/key/7"), [5u8; 32]).unwrap();
        let p = FileKeyProvider::new(dir.path());
        let ann = wrap_packet(b"{\"opts\":1}", "kbs:///repo/key/7", &[5u8; 32]).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(&ann).unwrap()).unwrap();
        assert_eq!(json["wrap_type"], "A256GCM");
        assert_eq!(
            STANDARD.decode(json["iv"].as_str().unwrap()).unwrap().len(),
            12
        );
        assert_eq!(
            block_on(unwrap_packet(&ann, &p)).unwrap().as_slice(),
            b"{\"opts\":1}"
        );

        let wrong = wrap_packet(b"x", "kbs:///repo/key/7", &[6u8; 32]).unwrap();
        let e = block_on(unwrap_packet(&wrong, &p)).unwrap_err();
        assert!(matches!(e, ProviderError::Unwrap { .. }), "{e}");
        assert!(wrap_packet(b"x", "kbs:///repo/key/7", &[6u8; 16]).is_err());
    }

    #[test]
    fn v2_packets_and_ctr() {
        let kek = [9u8; 32];
        // A v2 packet with the kbs provider, A256CTR.
        let iv = [3u8; 16];
        let mut wrapped = b"{\"opts\":2}".to_vec();
        super::super::cipher::Aes256Ctr::new((&kek).into(), (&iv).into())
            .apply_keystream(&mut wrapped);
        let v2 = serde_json::json!({
            "version": "0.1.0",
            "kid": "kbs:///default/key/2",
            "wrapped_data": STANDARD.encode(&wrapped),
            "provider": "kbs",
            "iv": STANDARD.encode(iv),
            "wrap_type": "A256CTR",
            "provider_settings": {},
            "annotations": {},
        });
        let ann = STANDARD.encode(serde_json::to_vec(&v2).unwrap());
        let packet = AnnotationPacket::from_annotation(&ann).unwrap();
        assert_eq!(packet.wrap_type, WrapType::A256Ctr);
        assert_eq!(
            packet.unwrap_with(&kek).unwrap().as_slice(),
            b"{\"opts\":2}"
        );

        let mut other = v2.clone();
        other["provider"] = "aliyun".into();
        let ann = STANDARD.encode(serde_json::to_vec(&other).unwrap());
        let e = AnnotationPacket::from_annotation(&ann).unwrap_err();
        assert!(e.to_string().contains("aliyun"), "{e}");
        let mut other = v2;
        other["wrap_type"] = "A128KW".into();
        let ann = STANDARD.encode(serde_json::to_vec(&other).unwrap());
        assert!(matches!(
            AnnotationPacket::from_annotation(&ann),
            Err(ProviderError::Unsupported(_))
        ));
    }

    #[test]
    fn coco_vector_packet() {
        let Some(v) = vectors() else { return };
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(v.join(
                "coco-enc/blobs/sha256/7a45977f6631d0ebec10ed024337ef814833069c1ecf074cc99efda67d02da84",
            ))
            .unwrap(),
        )
        .unwrap();
        let ann = manifest["layers"][0]["annotations"]
            ["org.opencontainers.image.enc.keys.provider.attestation-agent"]
            .as_str()
            .unwrap();
        let p = FileKeyProvider::new(v.join("keys/kbs"));
        let opts = block_on(unwrap_packet(ann, &p)).unwrap();
        let opts = super::super::options::PrivateOptions::from_json(&opts).unwrap();
        assert_eq!(
            opts.digest.to_string(),
            "sha256:62df51ff6fab7430b3b43ac47859922c02b0a64e403b42a0d1fa31552d44c892"
        );
    }
}
