//! One layer descriptor at a time: find the layer key in its annotations
//! (decrypt side), or encrypt a blob and produce its annotations (encrypt
//! side, for `image-rs copy` and tests).

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::cipher::{DecryptReader, EncryptReader, Encrypted};
use super::keys::{PrivateKey, PublicKey};
use super::options::{PrivateOptions, PublicOptions};
use super::provider::{AnnotationPacket, KeyProvider};
use super::spec::{
    self, ANNOTATION_JWE, ANNOTATION_KEYS_PREFIX, ANNOTATION_PROVIDER_PREFIX, ANNOTATION_PUBOPTS,
    COCO_PROVIDER_NAME,
};
use super::{jwe, Error};
use crate::digest::Digest;
use crate::manifest::Descriptor;

/// Everything the guest may use to open layer keys: local private keys (for
/// JWE recipients) and a key provider (for CoCo provider packets).
#[derive(Clone, Default)]
pub struct DecryptionKeys {
    /// Private keys tried on every JWE recipient.
    pub private_keys: Vec<PrivateKey>,
    /// Asked for the KEK of a provider packet's `kid`.
    pub provider: Option<Arc<dyn KeyProvider>>,
}

impl fmt::Debug for DecryptionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptionKeys")
            .field("private_keys", &self.private_keys)
            .field("provider", &self.provider)
            .finish()
    }
}

impl DecryptionKeys {
    /// True when there is nothing to try (encrypted layers will fail).
    pub fn is_empty(&self) -> bool {
        self.private_keys.is_empty() && self.provider.is_none()
    }
}

/// The unwrapped options of one layer.
#[derive(Debug, Clone)]
pub struct LayerKeys {
    /// Layer key, nonce and the digest the decrypted blob must have.
    pub private: PrivateOptions,
    /// Cipher and HMAC.
    pub public: PublicOptions,
}

impl LayerKeys {
    /// A decrypting reader over the layer's ciphertext. The caller must read
    /// it to EOF (or call [`DecryptReader::finish`]) before committing
    /// anything, and check the decrypted bytes against `private.digest`.
    pub fn decrypt<R: Read>(&self, ciphertext: R) -> DecryptReader<R> {
        DecryptReader::new(ciphertext, &self.private, &self.public)
    }
}

/// Finds the layer key of an encrypted layer from its descriptor
/// annotations: the JWE wrapping first (local keys, no network), then every
/// `...enc.keys.provider.*` packet through `keys.provider`. The error names
/// the recipients and key ids found and the keys tried.
pub async fn layer_keys(
    annotations: &BTreeMap<String, String>,
    keys: &DecryptionKeys,
) -> Result<LayerKeys, Error> {
    let public = PublicOptions::from_annotation(
        annotations
            .get(ANNOTATION_PUBOPTS)
            .ok_or(Error::MissingPubopts)?,
    )?;
    let finish = |plain: Zeroizing<Vec<u8>>| -> Result<LayerKeys, Error> {
        Ok(LayerKeys {
            private: PrivateOptions::from_json(&plain)?,
            public: public.clone(),
        })
    };

    let mut jwe_error = None;
    if let Some(value) = annotations.get(ANNOTATION_JWE) {
        match jwe::unwrap(value, &keys.private_keys) {
            Ok(plain) => return finish(plain),
            Err(e) => jwe_error = Some(e),
        }
    }

    let mut provider_errors = Vec::new();
    for (name, value) in annotations {
        let Some(provider_name) = name.strip_prefix(ANNOTATION_PROVIDER_PREFIX) else {
            continue;
        };
        let Some(provider) = &keys.provider else {
            let kid = AnnotationPacket::from_annotation(value)
                .map(|p| p.kid.to_string())
                .unwrap_or_else(|_| "an unreadable packet".to_string());
            provider_errors.push(format!(
                "key provider {provider_name:?} holds the key as {kid}, but no key provider is configured; give this guest a KBS (attestation) configuration so the key can be fetched"
            ));
            continue;
        };
        match super::provider::unwrap_packet(value, provider.as_ref()).await {
            Ok(plain) => return finish(plain),
            Err(e) => provider_errors.push(format!("key provider {provider_name:?}: {e}")),
        }
    }

    let unsupported: Vec<String> = annotations
        .keys()
        .filter_map(|k| k.strip_prefix(ANNOTATION_KEYS_PREFIX))
        .filter(|s| *s != "jwe" && !s.starts_with("provider."))
        .map(str::to_string)
        .collect();
    if jwe_error.is_none() && provider_errors.is_empty() && unsupported.is_empty() {
        return Err(Error::NoWrappedKey);
    }
    Err(Error::NoLayerKey {
        jwe: jwe_error,
        providers: provider_errors,
        unsupported,
    })
}

/// Someone an encrypted layer is made for.
#[derive(Clone)]
pub enum Recipient {
    /// A JWE recipient (RSA or EC public key), as `skopeo --encryption-key jwe:...`.
    Jwe(PublicKey),
    /// A Confidential Containers provider packet under a KBS key.
    Provider {
        /// `kbs:///<repo>/<type>/<tag>` of the KEK.
        kid: String,
        /// The 32-byte KEK.
        kek: Zeroizing<Vec<u8>>,
    },
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recipient::Jwe(k) => write!(f, "Recipient::Jwe({:?})", k.kind()),
            Recipient::Provider { kid, .. } => write!(f, "Recipient::Provider({kid})"),
        }
    }
}

/// The annotations of an encrypted layer: the private options wrapped for
/// every recipient (all JWE recipients in one JWE, as ocicrypt does; one
/// provider packet under `...provider.attestation-agent`) and the public
/// options.
pub fn encrypt_layer_annotations(
    private: &PrivateOptions,
    public: &PublicOptions,
    recipients: &[Recipient],
) -> Result<BTreeMap<String, String>, Error> {
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let plain = private.to_json();
    let mut out = BTreeMap::new();
    let jwe_keys: Vec<PublicKey> = recipients
        .iter()
        .filter_map(|r| match r {
            Recipient::Jwe(k) => Some(k.clone()),
            Recipient::Provider { .. } => None,
        })
        .collect();
    if !jwe_keys.is_empty() {
        out.insert(ANNOTATION_JWE.to_string(), jwe::wrap(&plain, &jwe_keys)?);
    }
    let providers: Vec<(&String, &Zeroizing<Vec<u8>>)> = recipients
        .iter()
        .filter_map(|r| match r {
            Recipient::Provider { kid, kek } => Some((kid, kek)),
            Recipient::Jwe(_) => None,
        })
        .collect();
    match providers[..] {
        [] => {}
        [(kid, kek)] => {
            out.insert(
                format!("{ANNOTATION_PROVIDER_PREFIX}{COCO_PROVIDER_NAME}"),
                super::provider::wrap_packet(&plain, kid, kek)?,
            );
        }
        _ => return Err(Error::TooManyProviderRecipients),
    }
    out.insert(ANNOTATION_PUBOPTS.to_string(), public.to_annotation());
    Ok(out)
}

/// An encrypted layer blob's descriptor fields.
#[derive(Debug, Clone)]
pub struct EncryptedBlob {
    /// The `+encrypted` media type.
    pub media_type: String,
    /// Digest of the ciphertext.
    pub digest: Digest,
    /// Size of the ciphertext (= the plain size).
    pub size: u64,
    /// The descriptor annotations (wrapped keys and pubopts).
    pub annotations: BTreeMap<String, String>,
    /// Digest of the plain blob as read, to compare with the source
    /// descriptor (the private options carry it too).
    pub plain_digest: Digest,
}

impl EncryptedBlob {
    /// The manifest layer descriptor of the encrypted blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            platform: None,
            annotations: self.annotations.clone(),
        }
    }
}

/// Encrypts one layer blob: reads the plain (compressed) blob from `plain`,
/// writes the ciphertext to `out` (e.g. a temp file to be renamed to
/// `blobs/sha256/<digest>` once the digest is known), and returns the new
/// descriptor fields for `media_type` (the plain layer's). A fresh key and
/// nonce are drawn for every call.
pub fn encrypt_blob<R: Read, W: Write>(
    plain: R,
    mut out: W,
    media_type: &str,
    recipients: &[Recipient],
) -> Result<EncryptedBlob, Error> {
    let media_type = spec::encrypted_media_type(media_type)?;
    if recipients.is_empty() {
        return Err(Error::NoRecipients);
    }
    let mut reader = EncryptReader::new(plain);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("reading the plain layer blob", e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| Error::io("writing the encrypted layer blob", e))?;
    }
    out.flush()
        .map_err(|e| Error::io("writing the encrypted layer blob", e))?;
    let Encrypted {
        private,
        public,
        digest,
        size,
    } = reader.finish();
    let annotations = encrypt_layer_annotations(&private, &public, recipients)?;
    Ok(EncryptedBlob {
        media_type,
        digest,
        size,
        annotations,
        plain_digest: private.digest.clone(),
    })
}
