//! The error type of the library. Every message says what was being done, to
//! what, and (where there is one) what to try.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::unpack::UnpackError;

/// Errors from pulling, verifying, unpacking and storing images.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image reference could not be parsed.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// What was given (truncated).
        input: String,
        /// Which rule it broke.
        reason: String,
    },

    /// A digest string could not be parsed.
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest {
        /// What was given (truncated).
        input: String,
        /// Which rule it broke.
        reason: String,
    },

    /// Content did not hash to the digest it was referenced by.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}; the registry served different content than the reference/manifest names (tampering or corruption)")]
    DigestMismatch {
        /// Which blob or manifest.
        what: String,
        /// The digest we were given.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
    },

    /// A network-level failure talking to a registry.
    #[error("{action} {url}: {detail}")]
    Transport {
        /// What we were doing.
        action: String,
        /// The URL (without credentials).
        url: String,
        /// The underlying error chain and a hint.
        detail: String,
    },

    /// The registry answered with an HTTP error status.
    #[error("{action} {url}: registry answered {status}{body}{hint}")]
    Registry {
        /// What we were doing.
        action: String,
        /// The URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// A short excerpt of the registry's error body.
        body: String,
        /// What to try.
        hint: &'static str,
    },

    /// Authentication with the registry failed.
    #[error("authenticating to {registry} for {scope}: {reason}; check the credentials (--auth-file, --username/--password-stdin)")]
    Auth {
        /// The registry host.
        registry: String,
        /// The scope asked for.
        scope: String,
        /// What went wrong.
        reason: String,
    },

    /// A manifest, index or config was malformed or not acceptable.
    #[error("{what}: {reason}")]
    Manifest {
        /// Which document (with its digest or reference).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The index has no image for the requested platform.
    #[error("image index {reference} has no image for platform {wanted}; available: {available}; pick one with --platform")]
    NoMatchingPlatform {
        /// The reference pulled.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms the index lists.
        available: String,
    },

    /// A layer failed to unpack (hostile content, limits, I/O).
    #[error("unpacking layer {digest}: {source}")]
    Unpack {
        /// The layer's digest.
        digest: Digest,
        /// The cause.
        #[source]
        source: UnpackError,
    },

    /// The layer key of an encrypted layer could not be obtained.
    #[error("decrypting layer {digest}: {source}")]
    Decrypt {
        /// The layer's (ciphertext) digest.
        digest: Digest,
        /// Which recipients/kids were found and which keys were tried.
        #[source]
        source: Box<crate::ocicrypt::Error>,
    },

    /// A layer could not be encrypted (bad recipients, unsupported type).
    #[error("encrypting layer {digest}: {source}")]
    Encrypt {
        /// The plain layer's digest.
        digest: Digest,
        /// The cause.
        #[source]
        source: Box<crate::ocicrypt::Error>,
    },

    /// The HMAC over an encrypted layer's ciphertext did not match.
    #[error("layer {digest}: the HMAC over the ciphertext does not match the one in its annotations: the encrypted layer or its annotations were tampered with; nothing of it was kept")]
    Hmac {
        /// The layer's (ciphertext) digest.
        digest: Digest,
    },

    /// The layer blob's size differs from its descriptor.
    #[error("layer {digest}: size mismatch: descriptor says {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// From the manifest.
        expected: u64,
        /// What arrived.
        actual: u64,
    },

    /// A filesystem operation on the store or the rootfs failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What we were doing.
        action: String,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// The rootfs target is not usable.
    #[error("rootfs {path}: {reason}")]
    Rootfs {
        /// The target directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// Bad configuration (CA file, auth file, options).
    #[error("{0}")]
    Config(String),

    /// A background task died (a bug, reported instead of panicking).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Wraps an I/O error with what was being done and where.
    pub fn io(action: impl Into<String>, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action: action.into(),
            path: path.into(),
            source,
        }
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
