//! Signature policy: an encrypted image proves confidentiality, not origin,
//! so the guest refuses images the pod owner did not sign, by a policy the
//! host cannot change.
//!
//! The policy is `containers-policy.json(5)` ([`policy`], scopes in
//! [`scope`]); it is checked by [`SignatureVerifier`] after the manifest is
//! resolved and before any layer is fetched (see [`crate::pull`]).
//! Signatures are found where the containers and sigstore tools put them:
//! - sigstore/cosign attachments at the `sha256-<hex>.sig` tag ([`sigstore`]),
//!   and cosign signatures listed by the OCI 1.1 referrers API or its
//!   fallback tag ([`referrers`]);
//! - GPG "simple signing" signatures in lookaside storage configured by
//!   `registries.d` ([`lookaside`], verified by the small OpenPGP reader in
//!   [`gpg`]).
//!
//! Both kinds sign the same JSON payload ([`simple_signing`]) naming the
//! manifest digest and the docker reference. Public keys are PEM SPKI
//! ([`keys`]); cosign's encrypted private key format is in [`cosign_key`].
//!
//! Use from the agent (policy from initdata or a KBS resource, `kbs:///`
//! keys through the attestation crate's [`crate::ocicrypt::provider::KeyProvider`]):
//!
//! ```text
//! let verifier = SignatureVerifier::new(SignaturePolicy::from_json(&policy_json)?)
//!     .with_key_provider(kbs_provider)                 // Arc<dyn KeyProvider>
//!     .with_registries_d(RegistriesD::from_yaml(&y)?); // only for GPG lookaside
//! let opts = PullOptions { signature: Some(Arc::new(verifier)), ..Default::default() };
//! puller.pull(&reference, &rootfs, &opts).await?;    // refused before any layer
//! ```

pub mod cosign_key;
pub mod gpg;
pub mod keys;
pub mod lookaside;
pub mod policy;
pub mod referrers;
pub mod scope;
pub mod sigstore;
pub mod simple_signing;
pub mod verify;

pub use cosign_key::SigningKey;
pub use keys::PublicKey;
pub use lookaside::RegistriesD;
pub use policy::{KeySource, Requirement, SignaturePolicy, SignedIdentity};
pub use verify::{Accepted, SignatureVerifier};

/// Why a policy could not be loaded, a key could not be used, or an image
/// was refused. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The policy document is unreadable or invalid (never treated as accept).
    #[error("signature policy {origin}: {reason}")]
    Policy {
        /// Where the policy came from (file path or "JSON").
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `registries.d` file is unreadable or invalid.
    #[error("registries.d {path}: {reason}")]
    RegistriesD {
        /// The file or directory.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key named by the policy (or given for signing) cannot be used.
    #[error("key {key}: {reason}")]
    Key {
        /// Which key (path, `kbs:///` id or "inline keyData").
        key: String,
        /// What is wrong and what to try.
        reason: String,
    },
    /// Talking to the registry or lookaside storage failed.
    #[error("{action}: {source}")]
    Fetch {
        /// What was being fetched.
        action: String,
        /// The registry error.
        #[source]
        source: Box<crate::Error>,
    },
    /// Lookaside storage failed (file or HTTP).
    #[error("lookaside {url}: {reason}")]
    Lookaside {
        /// The signature URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The policy refused the image (one line: scope, requirement, what was found).
    #[error("image {image} (manifest {digest}) rejected by the signature policy: scope {scope} requires {requirement}; {found}")]
    Denied {
        /// The image reference as pulled.
        image: String,
        /// The manifest digest checked.
        digest: String,
        /// The policy scope that applied.
        scope: String,
        /// The requirement that failed.
        requirement: String,
        /// Signatures found and why each failed.
        found: String,
    },
    /// Signing failed.
    #[error("signing {what}: {reason}")]
    Sign {
        /// What was being signed.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

impl SignatureError {
    pub(crate) fn fetch(action: impl Into<String>, e: crate::Error) -> Self {
        SignatureError::Fetch {
            action: action.into(),
            source: Box::new(e),
        }
    }
}

impl From<SignatureError> for crate::Error {
    fn from(e: SignatureError) -> Self {
        crate::Error::Manifest {
            what: "signature check".into(),
            reason: e.to_string(),
        }
    }
}

/// Largest signature payload or signature file read (64 KiB): real ones are
/// well under 4 KiB.
pub const MAX_SIGNATURE_SIZE: u64 = 64 * 1024;
/// Most signatures considered per image (per source), against abuse.
pub const MAX_SIGNATURES: usize = 64;
