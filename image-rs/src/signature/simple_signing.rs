//! The "simple signing" payload both GPG and sigstore signatures sign:
//!
//! ```json
//! {"critical": {"identity": {"docker-reference": "reg.example.com/app:v1"},
//!               "image": {"docker-manifest-digest": "sha256:..."},
//!               "type": "cosign container image signature"},
//!  "optional": {...}}
//! ```
//!
//! The digest binds the signature to the manifest; the reference binds it to
//! a name, checked against the policy's `signedIdentity`.

use serde_json::Value;

use super::policy::SignedIdentity;
use crate::digest::Digest;
use crate::reference::Reference;

/// `critical.type` of a GPG (atomic) simple signing payload.
pub const TYPE_ATOMIC: &str = "atomic container signature";
/// `critical.type` of a cosign/sigstore payload.
pub const TYPE_COSIGN: &str = "cosign container image signature";

/// The fields of a payload that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`.
    pub manifest_digest: String,
    /// `critical.type`.
    pub kind: String,
}

impl Payload {
    /// Parses a payload strictly (`critical` must have exactly type, image
    /// and identity, as containers/image requires) and checks its type.
    pub fn parse(bytes: &[u8], expected_type: &str) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("payload is not JSON: {e}"))?;
        let c = v
            .get("critical")
            .and_then(Value::as_object)
            .ok_or("payload has no critical object")?;
        if let Some(k) = c
            .keys()
            .find(|k| !matches!(k.as_str(), "type" | "image" | "identity"))
        {
            return Err(format!("payload has unknown critical field {k:?}"));
        }
        let kind = c
            .get("type")
            .and_then(Value::as_str)
            .ok_or("payload has no critical.type")?;
        if kind != expected_type {
            return Err(format!("payload type {kind:?} is not {expected_type:?}"));
        }
        let manifest_digest = c
            .get("image")
            .and_then(|i| i.get("docker-manifest-digest"))
            .and_then(Value::as_str)
            .ok_or("payload has no critical.image.docker-manifest-digest")?;
        let docker_reference = c
            .get("identity")
            .and_then(|i| i.get("docker-reference"))
            .and_then(Value::as_str)
            .ok_or("payload has no critical.identity.docker-reference")?;
        Ok(Payload {
            docker_reference: docker_reference.to_string(),
            manifest_digest: manifest_digest.to_string(),
            kind: kind.to_string(),
        })
    }

    /// Builds a payload for signing, in the form skopeo writes.
    pub fn build(docker_reference: &str, digest: &Digest, kind: &str) -> Vec<u8> {
        let v = serde_json::json!({
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest.to_string()},
                "type": kind,
            },
            "optional": {"creator": concat!("sealpod image-rs ", env!("CARGO_PKG_VERSION"))},
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }

    /// Checks the digest and the identity against the pulled image.
    pub fn check(
        &self,
        image: &Reference,
        digest: &Digest,
        identity: &SignedIdentity,
    ) -> Result<(), String> {
        if self.manifest_digest != digest.to_string() {
            return Err(format!(
                "signed manifest digest {} is not the pulled {digest}",
                self.manifest_digest
            ));
        }
        check_identity(identity, image, &self.docker_reference)
    }
}

fn repo_of(r: &Reference) -> String {
    format!("{}/{}", r.registry(), r.repository())
}

fn exact(a: &Reference, b: &Reference) -> bool {
    repo_of(a) == repo_of(b) && a.tag() == b.tag() && a.digest() == b.digest()
}

/// Whether a signature naming `signed` satisfies `identity` for `image`
/// (the reference as the user gave it, before pinning to a digest).
pub fn check_identity(
    identity: &SignedIdentity,
    image: &Reference,
    signed: &str,
) -> Result<(), String> {
    let signed_ref: Reference = signed
        .parse()
        .map_err(|e| format!("signed docker-reference is invalid: {e}"))?;
    let mismatch = |what: &str| {
        Err(format!(
            "signed identity {signed:?} does not match {image} ({what})"
        ))
    };
    let repo_digest_or_exact = |img: &Reference| -> bool {
        // A digest pins the content: the signature need only name the
        // repository (also for name:tag@digest, as containers/image does).
        if img.digest().is_some() {
            repo_of(img) == repo_of(&signed_ref)
        } else {
            exact(img, &signed_ref)
        }
    };
    match identity {
        SignedIdentity::MatchExact => {
            if exact(image, &signed_ref) {
                Ok(())
            } else {
                mismatch("matchExact")
            }
        }
        SignedIdentity::MatchRepoDigestOrExact => {
            if repo_digest_or_exact(image) {
                Ok(())
            } else {
                mismatch("matchRepoDigestOrExact")
            }
        }
        SignedIdentity::MatchRepository => {
            if repo_of(image) == repo_of(&signed_ref) {
                Ok(())
            } else {
                mismatch("matchRepository")
            }
        }
        SignedIdentity::ExactReference(want) => {
            let w: Reference = want.parse().map_err(|e: crate::Error| e.to_string())?;
            if exact(&w, &signed_ref) {
                Ok(())
            } else {
                mismatch(&format!("exactReference {want}"))
            }
        }
        SignedIdentity::ExactRepository(want) => {
            let w: Reference = want.parse().map_err(|e: crate::Error| e.to_string())?;
            if repo_of(&w) == repo_of(&signed_ref) {
                Ok(())
            } else {
                mismatch(&format!("exactRepository {want}"))
            }
        }
        SignedIdentity::RemapIdentity {
            prefix,
            signed_prefix,
        } => {
            let full = image.to_string();
            let remapped = match full.strip_prefix(prefix.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with(['/', ':', '@']) => {
                    let s = format!("{signed_prefix}{rest}");
                    s.parse::<Reference>().map_err(|e| {
                        format!("remapIdentity made an invalid reference {s:?}: {e}")
                    })?
                }
                _ => image.clone(),
            };
            if repo_digest_or_exact(&remapped) {
                Ok(())
            } else {
                mismatch(&format!(
                    "remapIdentity {prefix} -> {signed_prefix}, as {remapped}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn r(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn payload_roundtrip_and_digest_binding() {
        let d: Digest = D.parse().unwrap();
        let p = Payload::build("reg.io/a/b:v1", &d, TYPE_COSIGN);
        let parsed = Payload::parse(&p, TYPE_COSIGN).unwrap();
        assert_eq!(parsed.docker_reference, "reg.io/a/b:v1");
        assert!(parsed
            .check(
                &r("reg.io/a/b:v1"),
                &d,
                &SignedIdentity::MatchRepoDigestOrExact
            )
            .is_ok());
        let other: Digest = format!("sha256:{}", "2".repeat(64)).parse().unwrap();
        let e = parsed
            .check(
                &r("reg.io/a/b:v1"),
                &other,
                &SignedIdentity::MatchRepoDigestOrExact,
            )
            .unwrap_err();
        assert!(e.contains("not the pulled"), "{e}");
        assert!(Payload::parse(&p, TYPE_ATOMIC).is_err());
        assert!(Payload::parse(br#"{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"x"},"identity":{"docker-reference":"a"},"extra":1}}"#, TYPE_ATOMIC).is_err());
        assert!(Payload::parse(b"not json", TYPE_ATOMIC).is_err());
    }

    #[test]
    fn identities() {
        use SignedIdentity::*;
        let pinned = r(&format!("reg.io/a/b@{D}"));
        let tagged = r("reg.io/a/b:v1");
        // matchRepoDigestOrExact
        assert!(check_identity(&MatchRepoDigestOrExact, &tagged, "reg.io/a/b:v1").is_ok());
        assert!(check_identity(&MatchRepoDigestOrExact, &tagged, "reg.io/a/b:v2").is_err());
        assert!(check_identity(&MatchRepoDigestOrExact, &pinned, "reg.io/a/b:v2").is_ok());
        assert!(check_identity(&MatchRepoDigestOrExact, &pinned, "reg.io/a/c:v2").is_err());
        let both = r(&format!("reg.io/a/b:v1@{D}"));
        assert!(check_identity(&MatchRepoDigestOrExact, &both, "reg.io/a/b:v7").is_ok());
        // matchExact
        assert!(check_identity(&MatchExact, &tagged, "reg.io/a/b:v1").is_ok());
        assert!(check_identity(&MatchExact, &pinned, "reg.io/a/b:v1").is_err());
        // matchRepository
        assert!(check_identity(&MatchRepository, &tagged, "reg.io/a/b:other").is_ok());
        assert!(check_identity(&MatchRepository, &tagged, "reg.io/a/bb:v1").is_err());
        // Docker Hub normalization.
        assert!(check_identity(
            &MatchRepository,
            &r("busybox:1"),
            "docker.io/library/busybox:2"
        )
        .is_ok());
        // exactReference / exactRepository
        assert!(check_identity(
            &ExactReference("reg.io/x/y:v9".into()),
            &tagged,
            "reg.io/x/y:v9"
        )
        .is_ok());
        assert!(check_identity(
            &ExactReference("reg.io/x/y:v9".into()),
            &tagged,
            "reg.io/a/b:v1"
        )
        .is_err());
        assert!(check_identity(
            &ExactRepository("reg.io/x/y".into()),
            &tagged,
            "reg.io/x/y:any"
        )
        .is_ok());
        assert!(check_identity(
            &ExactRepository("reg.io/x/y".into()),
            &tagged,
            "reg.io/x/z:any"
        )
        .is_err());
        // remapIdentity
        let remap = RemapIdentity {
            prefix: "mirror.io/m".into(),
            signed_prefix: "reg.io/a".into(),
        };
        assert!(check_identity(&remap, &r("mirror.io/m/b:v1"), "reg.io/a/b:v1").is_ok());
        assert!(check_identity(&remap, &r("mirror.io/m/b:v1"), "mirror.io/m/b:v1").is_err());
        assert!(check_identity(&remap, &r("mirror.io/mm/b:v1"), "reg.io/a/m/b:v1").is_err());
        // Garbage in the signature is a mismatch, not a panic.
        assert!(check_identity(&MatchRepository, &tagged, "NOT A REF").is_err());
    }
}
