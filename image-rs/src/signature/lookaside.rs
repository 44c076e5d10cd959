//! Lookaside signature storage for GPG simple signing, configured like
//! containers' `registries.d(5)`: YAML files with
//!
//! ```yaml
//! default-docker:
//!   lookaside: file:///var/lib/containers/sigstore
//! docker:
//!   registry.example.com/team:
//!     lookaside: https://sigs.example.com/team
//! ```
//!
//! (`sigstore` is the older name of `lookaside`; `*-staging` keys are for
//! writers and ignored here). The signatures of manifest `sha256:<hex>` of
//! `host/ns/repo` are at `<url>/ns/repo@sha256=<hex>/signature-1`, `-2`, ...
//! until one is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{scope, SignatureError, MAX_SIGNATURES, MAX_SIGNATURE_SIZE};
use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// One registries.d entry.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Entry {
    /// Where signatures are read from.
    #[serde(default)]
    pub lookaside: Option<String>,
    /// Older name of `lookaside`.
    #[serde(default)]
    pub sigstore: Option<String>,
    /// Where writers put signatures (ignored by reads).
    #[serde(default)]
    pub lookaside_staging: Option<String>,
    /// Older name of `lookaside-staging`.
    #[serde(default)]
    pub sigstore_staging: Option<String>,
    /// Whether sigstore signatures are attachments (always read here).
    #[serde(default)]
    pub use_sigstore_attachments: Option<bool>,
}

impl Entry {
    fn read_url(&self) -> Option<&str> {
        self.lookaside.as_deref().or(self.sigstore.as_deref())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct File {
    #[serde(default)]
    default_docker: Option<Entry>,
    #[serde(default)]
    docker: BTreeMap<String, Entry>,
}

/// The merged contents of a registries.d directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesD {
    default_docker: Option<Entry>,
    docker: BTreeMap<String, Entry>,
}

/// Largest registries.d file read.
const MAX_FILE: u64 = 1 << 20;

impl RegistriesD {
    /// No lookaside configured (GPG signatures cannot be found).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads every `*.yaml` file of `dir`; a scope in two files is an error.
    pub fn load_dir(dir: &Path) -> Result<Self, SignatureError> {
        let err = |path: &Path, reason: String| SignatureError::RegistriesD {
            path: path.display().to_string(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| err(dir, format!("cannot read the directory: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        let mut out = RegistriesD::default();
        for f in files {
            let bytes = super::keys::read_capped(&f, MAX_FILE)
                .map_err(|e| err(&f, format!("cannot read: {e}")))?;
            out.merge(&bytes).map_err(|e| err(&f, e))?;
        }
        Ok(out)
    }

    /// Parses one registries.d YAML document (for callers that get it as bytes).
    pub fn from_yaml(bytes: &[u8]) -> Result<Self, SignatureError> {
        let mut out = RegistriesD::default();
        out.merge(bytes)
            .map_err(|reason| SignatureError::RegistriesD {
                path: "YAML".into(),
                reason,
            })?;
        Ok(out)
    }

    fn merge(&mut self, bytes: &[u8]) -> Result<(), String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let f: File = serde_yaml::from_slice(bytes).map_err(|e| format!("invalid YAML: {e}"))?;
        if let Some(d) = f.default_docker {
            if self.default_docker.is_some() {
                return Err("default-docker is defined in more than one file".into());
            }
            self.default_docker = Some(d);
        }
        for (k, v) in f.docker {
            scope::validate(&k)?;
            if self.docker.contains_key(&k) {
                return Err(format!(
                    "docker scope {k:?} is defined in more than one file"
                ));
            }
            for u in [
                v.read_url(),
                v.lookaside_staging.as_deref(),
                v.sigstore_staging.as_deref(),
            ]
            .into_iter()
            .flatten()
            {
                check_url(u)?;
            }
            self.docker.insert(k, v);
        }
        Ok(())
    }

    /// The lookaside base URL for `r` (most specific scope, then default-docker).
    pub fn lookaside_for(&self, r: &Reference) -> Option<&str> {
        if let Some(s) = scope::best_match(r, self.docker.keys()) {
            if let Some(u) = self.docker[&s].read_url() {
                return Some(u);
            }
        }
        self.default_docker.as_ref().and_then(Entry::read_url)
    }
}

fn check_url(u: &str) -> Result<(), String> {
    if u.starts_with("file:///") || u.starts_with("http://") || u.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "lookaside URL {u:?} must be file:///, http:// or https://"
        ))
    }
}

/// The URL of signature `n` (1-based) of `digest` of `r` under `base`.
pub fn signature_url(base: &str, r: &Reference, digest: &Digest, n: usize) -> String {
    format!(
        "{}/{}@{}={}/signature-{n}",
        base.trim_end_matches('/'),
        r.repository(),
        digest.algorithm().name(),
        digest.hex()
    )
}

/// Reads the signatures of `digest` from lookaside storage `base`, stopping
/// at the first missing `signature-N`. Returns (URL, bytes) pairs.
pub async fn fetch(
    client: &RegistryClient,
    base: &str,
    r: &Reference,
    digest: &Digest,
) -> Result<Vec<(String, Vec<u8>)>, SignatureError> {
    check_url(base).map_err(|reason| SignatureError::Lookaside {
        url: base.to_string(),
        reason,
    })?;
    let mut out = Vec::new();
    for n in 1..=MAX_SIGNATURES {
        let url = signature_url(base, r, digest, n);
        let got = if let Some(path) = url.strip_prefix("file://") {
            match super::keys::read_capped(Path::new(path), MAX_SIGNATURE_SIZE) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    return Err(SignatureError::Lookaside {
                        url,
                        reason: e.to_string(),
                    })
                }
            }
        } else {
            client
                .get_url_optional(&url, MAX_SIGNATURE_SIZE)
                .await
                .map_err(|e| SignatureError::Lookaside {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
        };
        match got {
            Some(b) => out.push((url, b)),
            None => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_urls() {
        let d = RegistriesD::from_yaml(
            b"default-docker:\n  sigstore: file:///var/sigs\ndocker:\n  reg.io/team:\n    lookaside: http://127.0.0.1:9/team\n  reg.io/team/app:\n    lookaside-staging: file:///tmp/x\n",
        )
        .unwrap();
        let r: Reference = "reg.io/team/db:v1".parse().unwrap();
        assert_eq!(d.lookaside_for(&r), Some("http://127.0.0.1:9/team"));
        // A more specific scope without a read URL falls back to default-docker.
        let r2: Reference = "reg.io/team/app:v1".parse().unwrap();
        assert_eq!(d.lookaside_for(&r2), Some("file:///var/sigs"));
        let dg: Digest = format!("sha256:{}", "0".repeat(64)).parse().unwrap();
        assert_eq!(
            signature_url("file:///s/", &r, &dg, 2),
            format!("file:///s/team/db@sha256={}/signature-2", "0".repeat(64))
        );
        assert!(RegistriesD::from_yaml(b"docker:\n  r.io:\n    lookaside: ftp://x\n").is_err());
        assert!(RegistriesD::from_yaml(b"unknown: 1\n").is_err());
        assert_eq!(RegistriesD::empty().lookaside_for(&r), None);
    }
}
