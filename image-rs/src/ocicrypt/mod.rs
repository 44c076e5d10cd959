//! ocicrypt: encrypted OCI image layers, as written by `skopeo copy
//! --encryption-key jwe:...` (Go ocicrypt) and by Confidential Containers
//! tooling (key-provider packets whose KEK lives in the KBS).
//!
//! We wrote it ourselves because no published Rust crate implements the
//! format with streaming decryption: the reference Rust implementation
//! (guest-components' `ocicrypt-rs`) is not published on crates.io and pulls
//! in OpenSSL, and generic JOSE crates neither speak ocicrypt's annotations
//! nor decrypt a layer as it streams. The format is small (see
//! `reference/ocicrypt-format.md`), and the RustCrypto primitives used here
//! (AES-CTR/GCM/KW, HMAC, SHA-1/2, RSA-OAEP, ECDH on the NIST curves) are
//! pure Rust with run-time AES-NI/SHA-NI selection.
//!
//! Modules:
//! - [`spec`]: annotation names and `+encrypted` media types.
//! - [`options`]: the public (`pubopts`) and private (wrapped) options.
//! - [`keys`]: private/public keys from PEM/DER files, `FILE:PASSWORD`.
//! - [`jwe`]: JWE wrapping of the private options (RSA-OAEP, ECDH-ES+AxKW).
//! - [`provider`]: CoCo annotation packets and the [`provider::KeyProvider`] trait.
//! - [`cipher`]: streaming AES-256-CTR + HMAC-SHA256 ([`cipher::DecryptReader`]).
//! - [`layer`]: per-descriptor glue ([`layer::layer_keys`], [`layer::encrypt_blob`]).
//!
//! Decrypting a layer, the checks in order: the ciphertext digest (manifest
//! descriptor, checked by the puller as for any blob) → the HMAC at EOF
//! ([`cipher::DecryptReader`], an `io::Error` wrapping
//! [`cipher::HmacMismatch`]) → the decrypted blob's digest against
//! [`options::PrivateOptions::digest`] (the caller's hashing reader) → the
//! uncompressed diff_id from the config. Pick the decompressor from
//! [`spec::decrypted_media_type`].

pub mod cipher;
pub mod jwe;
pub mod keys;
pub mod layer;
pub mod options;
pub mod provider;
pub mod spec;

#[cfg(test)]
mod tests;

pub use cipher::{DecryptReader, HmacMismatch};
pub use keys::{PrivateKey, PublicKey};
pub use layer::{layer_keys, DecryptionKeys, LayerKeys, Recipient};
pub use provider::{FileKeyProvider, KeyProvider};

use jwe::{UnwrapError, WrapError};
use options::OptionsError;
use provider::ProviderError;
use spec::MediaTypeError;

/// Errors of the per-layer operations ([`layer`]). Messages name the layer
/// annotations, recipients and keys involved, never key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layer has an encrypted media type but no `pubopts`.
    #[error("encrypted layer has no {ANNOTATION} annotation, so its cipher and HMAC are unknown; the image is incomplete or was not made by ocicrypt", ANNOTATION = spec::ANNOTATION_PUBOPTS)]
    MissingPubopts,
    /// The layer has no key-wrapping annotation at all.
    #[error("encrypted layer carries no wrapped key (no org.opencontainers.image.enc.keys.* annotation); the image is incomplete")]
    NoWrappedKey,
    /// Wrapped keys were found but none could be opened.
    #[error("{}", no_layer_key(.jwe, .providers, .unsupported))]
    NoLayerKey {
        /// Why the JWE wrapping did not open (if there was one).
        jwe: Option<UnwrapError>,
        /// Why each provider packet did not open.
        providers: Vec<String>,
        /// Wrapping schemes present that we do not implement (pgp, pkcs7, pkcs11).
        unsupported: Vec<String>,
    },
    /// An options document was malformed or names another cipher.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// JWE wrapping failed.
    #[error(transparent)]
    Wrap(#[from] WrapError),
    /// Provider packet wrapping failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The layer's media type cannot be encrypted.
    #[error(transparent)]
    MediaType(#[from] MediaTypeError),
    /// Encrypting with no recipients would lose the layer.
    #[error("encrypting a layer: no recipients given; pass at least one public key or key-provider key id")]
    NoRecipients,
    /// Only one provider packet fits in the annotation.
    #[error("encrypting a layer: more than one key-provider recipient; the attestation-agent annotation holds one packet, so pick one kid")]
    TooManyProviderRecipients,
    /// Reading or writing a blob.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    fn io(action: &'static str, source: std::io::Error) -> Self {
        Error::Io { action, source }
    }
}

fn no_layer_key(jwe: &Option<UnwrapError>, providers: &[String], unsupported: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(e) = jwe {
        parts.push(e.to_string());
    }
    parts.extend(providers.iter().cloned());
    if !unsupported.is_empty() {
        parts.push(format!(
            "the layer is also wrapped with {} (not supported by this build)",
            unsupported.join(", ")
        ));
    }
    format!("no key could decrypt the layer: {}", parts.join("; also "))
}
