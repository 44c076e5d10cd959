//! Sigstore (cosign) signatures stored in the registry.
//!
//! Attachment scheme (cosign, and skopeo with `use-sigstore-attachments`):
//! an OCI manifest tagged `sha256-<hex>.sig` in the image's repository whose
//! layers are simple signing payloads (media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`), each with its
//! base64 signature in the `dev.cosignproject.cosign/signature` annotation.
//! Cosign's OCI 1.1 mode lists the same kind of manifest as a referrer
//! with artifact type `application/vnd.dev.cosign.artifact.sig.v1+json`.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use super::{SignatureError, MAX_SIGNATURES, MAX_SIGNATURE_SIZE};
use crate::digest::{Algorithm, Digest};
use crate::manifest::{MAX_DOCUMENT_SIZE, OCI_CONFIG, OCI_MANIFEST};
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// Layer media type of a simple signing payload.
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Artifact type of cosign signatures in the referrers API.
pub const COSIGN_SIG_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

/// One sigstore signature found for an image.
#[derive(Debug, Clone)]
pub struct SigstoreSignature {
    /// The signed payload (simple signing JSON).
    pub payload: Vec<u8>,
    /// The raw signature (decoded from base64).
    pub signature: Vec<u8>,
    /// Where it was found (for messages).
    pub source: String,
}

/// The attachment tag for a manifest digest: `sha256-<hex>.sig`.
pub fn signature_tag(d: &Digest) -> String {
    format!("{}-{}.sig", d.algorithm().name(), d.hex())
}

#[derive(Deserialize, serde::Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct SigDescriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigDescriptor>,
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Reads the signatures of the signature manifest `selector` (a tag or
/// digest). `Ok(vec![])` when it does not exist.
pub async fn fetch_from_manifest(
    client: &RegistryClient,
    r: &Reference,
    selector: &str,
    expected_digest: Option<&Digest>,
) -> Result<Vec<SigstoreSignature>, SignatureError> {
    let Some((bytes, _)) = client
        .get_optional(
            r,
            &format!("manifests/{selector}"),
            ACCEPT,
            MAX_DOCUMENT_SIZE,
        )
        .await
        .map_err(|e| SignatureError::fetch(format!("reading signature manifest {selector}"), e))?
    else {
        return Ok(Vec::new());
    };
    if let Some(d) = expected_digest {
        d.verify(&format!("signature manifest {selector}"), &bytes)
            .map_err(|e| SignatureError::fetch("reading a referrer", e))?;
    }
    let m: SigManifest = serde_json::from_slice(&bytes).map_err(|e| SignatureError::Fetch {
        action: format!("parsing signature manifest {selector}"),
        source: Box::new(crate::Error::Manifest {
            what: format!("signature manifest {selector} of {r}"),
            reason: e.to_string(),
        }),
    })?;
    let mut out = Vec::new();
    for (i, l) in m.layers.iter().enumerate().take(MAX_SIGNATURES) {
        if l.media_type != SIMPLESIGNING_MEDIA_TYPE {
            continue;
        }
        let source = format!("{selector} layer {i}");
        let Some(sig_b64) = l.annotations.get(SIGNATURE_ANNOTATION) else {
            continue;
        };
        let Ok(signature) = STANDARD.decode(sig_b64.trim()) else {
            out.push(SigstoreSignature {
                payload: Vec::new(),
                signature: Vec::new(),
                source: format!("{source} (signature annotation is not base64)"),
            });
            continue;
        };
        if l.size > MAX_SIGNATURE_SIZE {
            continue;
        }
        let payload = client
            .fetch_blob_verified(r, &l.digest, MAX_SIGNATURE_SIZE)
            .await
            .map_err(|e| {
                SignatureError::fetch(format!("reading signature payload {}", l.digest), e)
            })?;
        out.push(SigstoreSignature {
            payload,
            signature,
            source,
        });
    }
    Ok(out)
}

/// Adds a signature to the `sha256-<hex>.sig` attachment of `digest`
/// (keeping the ones already there), as skopeo and cosign write it.
/// Returns the digest of the new signature manifest.
pub async fn attach(
    client: &RegistryClient,
    r: &Reference,
    digest: &Digest,
    payload: &[u8],
    signature: &[u8],
) -> Result<Digest, SignatureError> {
    let tag = signature_tag(digest);
    let mut layers: Vec<SigDescriptor> = match client
        .get_optional(r, &format!("manifests/{tag}"), ACCEPT, MAX_DOCUMENT_SIZE)
        .await
        .map_err(|e| SignatureError::fetch(format!("reading signature manifest {tag}"), e))?
    {
        Some((b, _)) => serde_json::from_slice::<SigManifest>(&b)
            .map(|m| m.layers)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let payload_digest = Digest::of(Algorithm::Sha256, payload);
    let sig_b64 = STANDARD.encode(signature);
    if !layers.iter().any(|l| {
        l.digest == payload_digest && l.annotations.get(SIGNATURE_ANNOTATION) == Some(&sig_b64)
    }) {
        layers.push(SigDescriptor {
            media_type: SIMPLESIGNING_MEDIA_TYPE.into(),
            digest: payload_digest.clone(),
            size: payload.len() as u64,
            annotations: BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), sig_b64)]),
        });
    }
    let push_err = |e| SignatureError::fetch(format!("writing signature {tag}"), e);
    client
        .push_blob(r, &payload_digest, Bytes::copy_from_slice(payload))
        .await
        .map_err(push_err)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "", "os": "", "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.to_string()).collect::<Vec<_>>()},
    }))
    .map_err(|e| SignatureError::Sign { what: tag.clone(), reason: e.to_string() })?;
    let config_digest = Digest::of(Algorithm::Sha256, &config);
    let config_len = config.len();
    client
        .push_blob(r, &config_digest, Bytes::from(config))
        .await
        .map_err(push_err)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest.to_string(), "size": config_len},
        "layers": layers,
    }))
    .map_err(|e| SignatureError::Sign { what: tag.clone(), reason: e.to_string() })?;
    let d = Digest::of(Algorithm::Sha256, &manifest);
    client
        .push_manifest(r, &tag, OCI_MANIFEST, Bytes::from(manifest))
        .await
        .map_err(push_err)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_scheme() {
        let d: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "ab".repeat(32)));
    }
}
