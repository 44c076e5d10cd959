//! Manifests, indexes and image configs: parsing, media types, size caps,
//! platform selection.
//!
//! We parse into our own small structs rather than `oci-spec`'s: we need the
//! Docker schema 2 media types as first-class citizens, digests validated by
//! our own [`Digest`] (which also serves as a safe path component), and a
//! reader that rejects anything we do not know how to verify.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::digest::Digest;
use crate::error::Error;
use crate::platform::Platform;

/// Largest manifest, index or config we read (4 MiB), against memory abuse.
pub const MAX_DOCUMENT_SIZE: u64 = 4 * 1024 * 1024;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header for manifest requests: everything we can handle.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (also Docker's `rootfs.diff.tar.gzip`).
    Gzip,
    /// zstd.
    Zstd,
}

/// Classifies a layer media type, refusing the ones we must not or cannot
/// apply (foreign/non-distributable, encrypted, unknown).
pub fn layer_compression(media_type: &str, digest: &Digest) -> Result<Compression, Error> {
    let refuse = |reason: String| Error::Manifest {
        what: format!("layer {digest}"),
        reason,
    };
    match media_type {
        "application/vnd.oci.image.layer.v1.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd" => Ok(Compression::Zstd),
        m if m.contains("nondistributable") || m.contains("foreign") => Err(refuse(format!(
            "foreign/non-distributable layer ({m}) refused: its content lives outside the registry and cannot be verified from here; mirror the image without foreign layers"
        ))),
        m if m.ends_with("+encrypted") => Err(refuse(format!(
            "encrypted layer ({m}): this build cannot decrypt ocicrypt layers yet"
        ))),
        m => Err(refuse(format!(
            "unknown layer media type {m:?}; supported: OCI tar, tar+gzip, tar+zstd and Docker tar.gzip"
        ))),
    }
}

/// A content descriptor.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform (index entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An image manifest (OCI or Docker schema 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    /// Always 2.
    pub schema_version: u32,
    /// The media type field, if present.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The image config.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIndex {
    /// Always 2.
    pub schema_version: u32,
    /// The media type field, if present.
    #[serde(default)]
    pub media_type: Option<String>,
    /// The images.
    pub manifests: Vec<Descriptor>,
}

/// The parts of an image config we verify and use.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    /// Platform fields.
    #[serde(default)]
    pub architecture: String,
    /// Platform fields.
    #[serde(default)]
    pub os: String,
    /// The uncompressed layer digests, base first.
    pub rootfs: RootFs,
}

/// `rootfs` of an image config.
#[derive(Debug, Clone, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Digest of each layer's uncompressed tar.
    pub diff_ids: Vec<Digest>,
}

/// A manifest endpoint's answer, classified.
#[derive(Debug, Clone)]
pub enum ManifestKind {
    /// A single-platform image.
    Image(ImageManifest),
    /// A multi-platform index.
    Index(ImageIndex),
}

/// Parses manifest bytes, using the `Content-Type` and the `mediaType` field
/// (they must agree when both are present).
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
    what: &str,
) -> Result<ManifestKind, Error> {
    let bad = |reason: String| Error::Manifest {
        what: what.to_string(),
        reason,
    };
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        #[serde(default)]
        media_type: Option<String>,
        #[serde(default)]
        schema_version: Option<u32>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if probe.schema_version != Some(2) {
        return Err(bad(format!(
            "unsupported schemaVersion {:?} (only schema 2 / OCI are supported)",
            probe.schema_version
        )));
    }
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "text/plain");
    if let (Some(ct), Some(mt)) = (ct, probe.media_type.as_deref()) {
        if ct != mt {
            return Err(bad(format!(
                "Content-Type {ct} disagrees with mediaType {mt}"
            )));
        }
    }
    let kind = probe
        .media_type
        .as_deref()
        .or(ct)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if probe.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    match kind.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed image manifest: {e}")))?;
            if m.config.media_type != OCI_CONFIG && m.config.media_type != DOCKER_CONFIG {
                return Err(bad(format!(
                    "config media type {:?} is not an image config (an artifact, not a runnable image?)",
                    m.config.media_type
                )));
            }
            if m.config.size > MAX_DOCUMENT_SIZE {
                return Err(bad(format!("config is {} bytes, over the 4 MiB limit", m.config.size)));
            }
            if m.layers.is_empty() {
                return Err(bad("manifest has no layers".into()));
            }
            Ok(ManifestKind::Image(m))
        }
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let i: ImageIndex =
                serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed image index: {e}")))?;
            Ok(ManifestKind::Index(i))
        }
        other => Err(bad(format!(
            "unknown manifest media type {other:?}; supported: OCI manifest/index, Docker schema 2 manifest/list"
        ))),
    }
}

/// Chooses the index entry for `wanted`. Entries that are not image manifests
/// (attestations, signatures) are skipped.
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
    reference: &str,
) -> Result<&'a Descriptor, Error> {
    let images = index
        .manifests
        .iter()
        .filter(|d| d.media_type == OCI_MANIFEST || d.media_type == DOCKER_MANIFEST);
    let mut best: Option<&Descriptor> = None;
    for d in images.clone() {
        let Some(p) = &d.platform else { continue };
        if wanted.matches(p) {
            // Prefer an exact variant match over a variant-less wanted match.
            let exact = p.variant == wanted.variant;
            if best.is_none() || exact {
                best = Some(d);
                if exact {
                    break;
                }
            }
        }
    }
    best.ok_or_else(|| Error::NoMatchingPlatform {
        reference: reference.to_string(),
        wanted: wanted.to_string(),
        available: {
            let list: Vec<String> = images
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            }
        },
    })
}

/// Parses and checks an image config against its manifest.
pub fn parse_config(
    bytes: &[u8],
    manifest: &ImageManifest,
    what: &str,
) -> Result<ImageConfig, Error> {
    let bad = |reason: String| Error::Manifest {
        what: what.to_string(),
        reason,
    };
    let c: ImageConfig =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed image config: {e}")))?;
    if c.rootfs.kind != "layers" {
        return Err(bad(format!(
            "rootfs.type is {:?}, expected \"layers\"",
            c.rootfs.kind
        )));
    }
    if c.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(bad(format!(
            "config lists {} diff_ids but the manifest has {} layers",
            c.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest_json(layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":10}},"layers":[{{"mediaType":"{layer_type}","digest":"{D2}","size":20}}]}}"#
        )
    }

    #[test]
    fn parses_manifest_and_checks_layers() {
        let j = manifest_json("application/vnd.oci.image.layer.v1.tar+zstd");
        let ManifestKind::Image(m) = parse_manifest(j.as_bytes(), Some(OCI_MANIFEST), "m").unwrap()
        else {
            panic!("not an image")
        };
        assert_eq!(
            layer_compression(&m.layers[0].media_type, &m.layers[0].digest).unwrap(),
            Compression::Zstd
        );
        for refused in [
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted",
            "application/x-unknown",
        ] {
            let err = layer_compression(refused, &m.layers[0].digest)
                .unwrap_err()
                .to_string();
            assert!(err.contains(D2), "{err}");
        }
    }

    #[test]
    fn rejects_mismatched_content_type_and_unknown_kinds() {
        let j = manifest_json("application/vnd.oci.image.layer.v1.tar");
        assert!(parse_manifest(j.as_bytes(), Some(DOCKER_MANIFEST), "m").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":1}"#, None, "m").is_err());
        assert!(parse_manifest(br#"{"schemaVersion":2,"mediaType":"x/y"}"#, None, "m").is_err());
        assert!(parse_manifest(b"not json", None, "m").is_err());
    }

    #[test]
    fn selects_platform() {
        let j = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let ManifestKind::Index(i) = parse_manifest(j.as_bytes(), None, "i").unwrap() else {
            panic!()
        };
        let pick =
            |p: &str| select_platform(&i, &p.parse().unwrap(), "r").map(|d| d.digest.to_string());
        assert_eq!(pick("linux/amd64").unwrap(), D2);
        assert_eq!(pick("linux/arm64").unwrap(), D1);
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert!(err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    }
}
