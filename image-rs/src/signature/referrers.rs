//! The OCI 1.1 referrers API (`GET /v2/<name>/referrers/<digest>`, with an
//! `artifactType` filter) and, for registries without it (distribution 2.8),
//! the spec's fallback: an image index tagged `sha256-<hex>` listing the
//! referring manifests. Signatures, SBOMs and attestations are found here.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{SignatureError, MAX_SIGNATURES};
use crate::digest::Digest;
use crate::manifest::{MAX_DOCUMENT_SIZE, OCI_INDEX};
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// One manifest that refers to an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    /// Media type of the referring manifest.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// What it is (`application/spdx+json`, a cosign signature, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Where the list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReferrersSource {
    /// The registry's referrers API.
    Api,
    /// The `sha256-<hex>` fallback tag.
    FallbackTag,
    /// Neither exists: nothing refers to the image.
    None,
}

/// The referrers of one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Referrers {
    /// Where the list came from.
    pub source: ReferrersSource,
    /// The referring manifests (filtered by artifact type if asked).
    pub manifests: Vec<Referrer>,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Referrer>,
}

/// The fallback tag of a digest: `sha256-<hex>`.
pub fn fallback_tag(d: &Digest) -> String {
    format!("{}-{}", d.algorithm().name(), d.hex())
}

/// Lists what refers to `subject` in `r`'s repository, optionally only one
/// artifact type (filtered here too: registries may ignore the filter).
pub async fn list(
    client: &RegistryClient,
    r: &Reference,
    subject: &Digest,
    artifact_type: Option<&str>,
) -> Result<Referrers, SignatureError> {
    let mut path = format!("referrers/{subject}");
    if let Some(t) = artifact_type {
        path.push_str("?artifactType=");
        path.push_str(&t.replace('+', "%2B").replace('/', "%2F"));
    }
    let fetch_err = |what: &str, e| {
        SignatureError::fetch(format!("listing referrers of {subject} ({what})"), e)
    };
    // A registry without the API may answer 404, 400, 405...: any HTTP
    // error status means "use the fallback tag"; network errors are errors.
    let api = match client
        .get_optional(r, &path, OCI_INDEX, MAX_DOCUMENT_SIZE)
        .await
    {
        Ok(a) => a,
        Err(crate::Error::Registry { status, .. }) => {
            tracing::debug!(status, "no referrers API, using the fallback tag");
            None
        }
        Err(e) => return Err(fetch_err("API", e)),
    };
    // distribution 2.8 answers unknown routes with a 404 text page: only an
    // OCI index is an API answer.
    let (source, body) = match api {
        Some((b, ct)) if ct.as_deref().is_some_and(|c| c.starts_with(OCI_INDEX)) => {
            (ReferrersSource::Api, Some(b))
        }
        _ => {
            let tag = fallback_tag(subject);
            match client
                .get_optional(r, &format!("manifests/{tag}"), OCI_INDEX, MAX_DOCUMENT_SIZE)
                .await
                .map_err(|e| fetch_err("fallback tag", e))?
            {
                Some((b, _)) => (ReferrersSource::FallbackTag, Some(b)),
                None => (ReferrersSource::None, None),
            }
        }
    };
    let mut manifests = match body {
        Some(b) => {
            serde_json::from_slice::<Index>(&b)
                .map_err(|e| {
                    fetch_err(
                        "parsing",
                        crate::Error::Manifest {
                            what: format!("referrers index of {subject}"),
                            reason: e.to_string(),
                        },
                    )
                })?
                .manifests
        }
        None => Vec::new(),
    };
    if let Some(t) = artifact_type {
        manifests.retain(|m| m.artifact_type.as_deref() == Some(t));
    }
    manifests.truncate(MAX_SIGNATURES * 4);
    Ok(Referrers { source, manifests })
}
