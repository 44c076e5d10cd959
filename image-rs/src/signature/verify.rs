//! Applies a [`SignaturePolicy`] to one image: finds the signatures its
//! requirements need, verifies them, and either says what was accepted or
//! refuses with one line naming the scope, the requirement and every
//! signature found with why it failed.

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::keys::{load_key_bytes, PublicKey};
use super::policy::{KeySource, Requirement, SignaturePolicy, SignedIdentity};
use super::simple_signing::{Payload, TYPE_ATOMIC, TYPE_COSIGN};
use super::{gpg, lookaside, referrers, sigstore, RegistriesD, SignatureError};
use crate::digest::Digest;
use crate::ocicrypt::provider::KeyProvider;
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// What a policy accepted.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Accepted {
    /// The image as checked.
    pub image: String,
    /// The manifest digest checked.
    pub digest: String,
    /// The policy scope that applied.
    pub scope: String,
    /// Each requirement and what satisfied it.
    pub requirements: Vec<String>,
}

/// Checks images against a policy. Cheap to share (`Arc`) across pulls.
pub struct SignatureVerifier {
    policy: SignaturePolicy,
    registries_d: RegistriesD,
    key_provider: Option<Arc<dyn KeyProvider>>,
}

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureVerifier")
            .field("policy", &self.policy)
            .field("registries_d", &self.registries_d)
            .field("key_provider", &self.key_provider.is_some())
            .finish()
    }
}

impl SignatureVerifier {
    /// A verifier for `policy`, with no lookaside storage and no key provider.
    pub fn new(policy: SignaturePolicy) -> Self {
        SignatureVerifier {
            policy,
            registries_d: RegistriesD::empty(),
            key_provider: None,
        }
    }

    /// Where GPG signatures are looked up (registries.d).
    pub fn with_registries_d(mut self, r: RegistriesD) -> Self {
        self.registries_d = r;
        self
    }

    /// Resolves `kbs:///` key paths (the attestation crate's KBS provider in
    /// a guest, [`crate::ocicrypt::provider::FileKeyProvider`] in tests).
    pub fn with_key_provider(mut self, p: Arc<dyn KeyProvider>) -> Self {
        self.key_provider = Some(p);
        self
    }

    /// The policy.
    pub fn policy(&self) -> &SignaturePolicy {
        &self.policy
    }

    /// Checks `image` (the reference as the user gave it) whose top-level
    /// manifest (the index for a multi-platform image) has `digest`.
    pub async fn check(
        &self,
        client: &RegistryClient,
        image: &Reference,
        digest: &Digest,
    ) -> Result<Accepted, SignatureError> {
        let (scope, reqs) = self.policy.requirements_for(image);
        let sigstore_sigs = OnceCell::new();
        let gpg_sigs = OnceCell::new();
        let mut accepted = Vec::new();
        for req in reqs {
            let deny = |found: String| SignatureError::Denied {
                image: image.to_string(),
                digest: digest.to_string(),
                scope: scope.clone(),
                requirement: req.to_string(),
                found,
            };
            match req {
                Requirement::InsecureAcceptAnything => {
                    accepted.push("insecureAcceptAnything".to_string())
                }
                Requirement::Reject => {
                    return Err(deny("the policy rejects every image in this scope".into()))
                }
                Requirement::SigstoreSigned { keys, identity } => {
                    let sigs = sigstore_sigs
                        .get_or_try_init(|| self.find_sigstore(client, image, digest))
                        .await?;
                    let keys = self.public_keys(keys).await?;
                    match check_sigstore(sigs, &keys, image, digest, identity) {
                        Ok(s) => accepted.push(format!("{req}: {s}")),
                        Err(found) => return Err(deny(found)),
                    }
                }
                Requirement::SignedBy { keys, identity } => {
                    let sigs = gpg_sigs
                        .get_or_try_init(|| self.find_gpg(client, image, digest))
                        .await?;
                    let mut ring = Vec::new();
                    for k in keys {
                        let bytes = load_key_bytes(k, self.key_provider.as_ref()).await?;
                        ring.extend(gpg::parse_keyring(&bytes).map_err(|reason| {
                            SignatureError::Key {
                                key: k.to_string(),
                                reason,
                            }
                        })?);
                    }
                    match check_gpg(sigs, &ring, image, digest, identity) {
                        Ok(s) => accepted.push(format!("{req}: {s}")),
                        Err(found) => return Err(deny(found)),
                    }
                }
            }
        }
        Ok(Accepted {
            image: image.to_string(),
            digest: digest.to_string(),
            scope,
            requirements: accepted,
        })
    }

    async fn public_keys(
        &self,
        keys: &[KeySource],
    ) -> Result<Vec<(String, PublicKey)>, SignatureError> {
        let mut out = Vec::new();
        for k in keys {
            let bytes = load_key_bytes(k, self.key_provider.as_ref()).await?;
            let pk = PublicKey::from_pem(&bytes).map_err(|reason| SignatureError::Key {
                key: k.to_string(),
                reason,
            })?;
            out.push((k.to_string(), pk));
        }
        Ok(out)
    }

    async fn find_sigstore(
        &self,
        client: &RegistryClient,
        image: &Reference,
        digest: &Digest,
    ) -> Result<Found<sigstore::SigstoreSignature>, SignatureError> {
        let tag = sigstore::signature_tag(digest);
        // Both places at once: on a registry without the referrers API the
        // second costs two 404s, which then add no latency.
        let (sigs, refs) = tokio::join!(
            sigstore::fetch_from_manifest(client, image, &tag, None),
            referrers::list(
                client,
                image,
                digest,
                Some(sigstore::COSIGN_SIG_ARTIFACT_TYPE),
            )
        );
        let (mut sigs, refs) = (sigs?, refs?);
        let mut looked = vec![format!("attachment tag {tag}")];
        looked.push(match refs.source {
            referrers::ReferrersSource::Api => "referrers API".into(),
            referrers::ReferrersSource::FallbackTag | referrers::ReferrersSource::None => {
                format!("referrers tag {}", referrers::fallback_tag(digest))
            }
        });
        for m in refs.manifests.iter().take(super::MAX_SIGNATURES) {
            sigs.extend(
                sigstore::fetch_from_manifest(
                    client,
                    image,
                    &m.digest.to_string(),
                    Some(&m.digest),
                )
                .await?,
            );
        }
        Ok(Found {
            items: sigs,
            looked,
        })
    }

    async fn find_gpg(
        &self,
        client: &RegistryClient,
        image: &Reference,
        digest: &Digest,
    ) -> Result<Found<(String, Vec<u8>)>, SignatureError> {
        match self.registries_d.lookaside_for(image) {
            Some(base) => Ok(Found {
                items: lookaside::fetch(client, base, image, digest).await?,
                looked: vec![format!("lookaside {base}")],
            }),
            None => Ok(Found {
                items: Vec::new(),
                looked: vec![
                    "no lookaside storage configured for this image in registries.d".into(),
                ],
            }),
        }
    }
}

struct Found<T> {
    items: Vec<T>,
    looked: Vec<String>,
}

fn summary(kind: &str, looked: &[String], failures: &[String]) -> String {
    if failures.is_empty() {
        format!(
            "found 0 {kind} signatures (looked in {})",
            looked.join(", ")
        )
    } else {
        format!(
            "found {} {kind} signature(s), none acceptable: {}",
            failures.len(),
            failures.join("; ")
        )
    }
}

fn check_sigstore(
    found: &Found<sigstore::SigstoreSignature>,
    keys: &[(String, PublicKey)],
    image: &Reference,
    digest: &Digest,
    identity: &SignedIdentity,
) -> Result<String, String> {
    let mut failures = Vec::new();
    for (i, s) in found.items.iter().enumerate() {
        let mut why = Vec::new();
        let mut verified = false;
        for (name, k) in keys {
            match k.verify(&s.payload, &s.signature) {
                Ok(()) => {
                    verified = true;
                    let checked = Payload::parse(&s.payload, TYPE_COSIGN)
                        .and_then(|p| p.check(image, digest, identity));
                    match checked {
                        Ok(()) => {
                            return Ok(format!(
                                "sigstore signature {} verified with key {name}",
                                s.source
                            ))
                        }
                        Err(e) => why.push(e),
                    }
                    break;
                }
                Err(e) => why.push(format!("key {name}: {e}")),
            }
        }
        if !verified && keys.len() == 1 {
            why = vec![format!(
                "not signed by key {} ({})",
                keys[0].0,
                keys[0].1.kind()
            )];
        }
        failures.push(format!(
            "sigstore #{} ({}): {}",
            i + 1,
            s.source,
            why.join(", ")
        ));
    }
    Err(summary("sigstore", &found.looked, &failures))
}

fn check_gpg(
    found: &Found<(String, Vec<u8>)>,
    ring: &[gpg::GpgKey],
    image: &Reference,
    digest: &Digest,
    identity: &SignedIdentity,
) -> Result<String, String> {
    let mut failures = Vec::new();
    for (i, (url, bytes)) in found.items.iter().enumerate() {
        let why = match gpg::verify_message(bytes, ring) {
            Ok(v) => match Payload::parse(&v.content, TYPE_ATOMIC)
                .and_then(|p| p.check(image, digest, identity))
            {
                Ok(()) => {
                    return Ok(format!("GPG signature {url} by key {}", v.signer));
                }
                Err(e) => e,
            },
            Err(e) => e,
        };
        failures.push(format!("gpg #{} ({url}): {why}", i + 1));
    }
    Err(summary("GPG", &found.looked, &failures))
}
