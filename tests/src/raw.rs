//! Hand-built images pushed straight through the registry's v2 API: arbitrary bytes,
//! media types, declared digests and sizes, for hostile layers, tampered digests, wrong
//! diff_ids and unknown media types that no real tool would produce.
//!
//! A blob whose declared digest matches its bytes is uploaded through the API; one that
//! does not is planted in the registry's storage ([`Registry::plant_blob`]), because the
//! API verifies uploads. Plain HTTP registries only (the HTTP client has no TLS).

use serde_json::{json, Value};

use crate::compress::{self, Compression};
use crate::http;
use crate::layout::{self, DigestAlgorithm, OciLayout, OCI_CONFIG, OCI_MANIFEST};
use crate::registry::Registry;

/// A blob as a manifest will describe it: declared media type, digest and size, and the
/// bytes the registry will actually serve (which need not match).
#[derive(Debug, Clone)]
pub struct RawBlob {
    /// Media type written in the descriptor.
    pub media_type: String,
    /// Bytes stored in the registry.
    pub bytes: Vec<u8>,
    /// Digest written in the descriptor and used as the blob's name.
    pub digest: String,
    /// Size written in the descriptor (defaults to `bytes.len()`).
    pub size: u64,
}

impl RawBlob {
    /// A truthful blob: sha256 digest and size of `bytes`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> RawBlob {
        RawBlob {
            media_type: media_type.to_string(),
            digest: layout::sha256_digest(&bytes),
            size: bytes.len() as u64,
            bytes,
        }
    }

    /// A truthful blob named by its sha512 digest.
    pub fn sha512(media_type: &str, bytes: Vec<u8>) -> RawBlob {
        let mut b = RawBlob::new(media_type, bytes);
        b.digest = layout::digest(DigestAlgorithm::Sha512, &b.bytes);
        b
    }

    /// Declares another digest (a tampered blob if it does not match the bytes).
    pub fn with_digest(mut self, digest: &str) -> RawBlob {
        self.digest = digest.to_string();
        self
    }

    /// Declares another size in the descriptor.
    pub fn with_size(mut self, size: u64) -> RawBlob {
        self.size = size;
        self
    }

    /// The descriptor (`mediaType`, `digest`, `size`) a manifest lists for this blob.
    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }

    /// Whether the declared digest really is the hash of the bytes.
    pub fn is_truthful(&self) -> bool {
        let alg = match self.digest.split_once(':').map(|(a, _)| a) {
            Some("sha256") => DigestAlgorithm::Sha256,
            Some("sha512") => DigestAlgorithm::Sha512,
            _ => return false,
        };
        layout::digest(alg, &self.bytes) == self.digest
    }
}

/// A hand-built single-platform image: config and layers plus manifest details.
#[derive(Debug, Clone)]
pub struct RawImage {
    /// Manifest `mediaType` (also the `Content-Type` of the manifest PUT).
    pub manifest_media_type: String,
    /// The config blob.
    pub config: RawBlob,
    /// Layer blobs, bottom first.
    pub layers: Vec<RawBlob>,
    /// Manifest annotations, if any.
    pub annotations: Option<Value>,
}

impl RawImage {
    /// An OCI image from uncompressed layer tars: each layer compressed with `c`, a config
    /// whose diff_ids are the sha256 of the tars (linux/amd64, `Cmd ["/bin/sh"]`).
    pub fn from_tars(tars: &[Vec<u8>], c: Compression) -> RawImage {
        let layers = tars
            .iter()
            .map(|t| RawBlob::new(c.oci_media_type(), compress::compress(t, c)))
            .collect();
        let diff_ids: Vec<String> = tars.iter().map(|t| layout::sha256_digest(t)).collect();
        RawImage {
            manifest_media_type: OCI_MANIFEST.to_string(),
            config: RawBlob::new(OCI_CONFIG, config_json(&diff_ids)),
            layers,
            annotations: None,
        }
    }

    /// The manifest JSON describing the blobs as declared.
    pub fn manifest(&self) -> Value {
        let mut m = json!({
            "schemaVersion": 2,
            "mediaType": self.manifest_media_type,
            "config": self.config.descriptor(),
            "layers": self.layers.iter().map(RawBlob::descriptor).collect::<Vec<_>>(),
        });
        if let Some(a) = &self.annotations {
            m["annotations"] = a.clone();
        }
        m
    }

    /// The manifest serialized (what is pushed and hashed).
    pub fn manifest_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.manifest()).expect("serialize manifest")
    }
}

/// An image config (linux/amd64, `Cmd ["/bin/sh"]`) with the given diff_ids, as bytes.
pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .expect("serialize config")
}

/// Writes `image` into `layout` (blobs under their declared digests, manifest as a sha256
/// blob) and tags it `tag`; returns the manifest descriptor.
pub fn write_raw_layout(layout: &OciLayout, tag: &str, image: &RawImage) -> Value {
    layout.write_blob_as(&image.config.digest, &image.config.bytes);
    for l in &image.layers {
        layout.write_blob_as(&l.digest, &l.bytes);
    }
    let bytes = image.manifest_bytes();
    let d = layout.write_blob(DigestAlgorithm::Sha256, &bytes);
    let desc = layout::descriptor(&image.manifest_media_type, &d, bytes.len());
    layout.set_tag(tag, &desc);
    desc
}

/// Pushes `image` as `repo:reference` (blobs first, then the manifest) and returns the
/// manifest digest the registry reports.
pub fn push_raw(registry: &Registry, repo: &str, reference: &str, image: &RawImage) -> String {
    push_raw_blob(registry, repo, &image.config);
    for l in &image.layers {
        push_raw_blob(registry, repo, l);
    }
    push_raw_manifest(
        registry,
        repo,
        reference,
        &image.manifest_media_type,
        &image.manifest_bytes(),
    )
}

/// Makes `blob` available as `repo`'s blob `blob.digest`: monolithic upload (`POST` then
/// `PUT ?digest=`) when truthful, planted in storage otherwise.
pub fn push_raw_blob(registry: &Registry, repo: &str, blob: &RawBlob) {
    if !blob.is_truthful() {
        registry.plant_blob(repo, &blob.digest, &blob.bytes);
        return;
    }
    let addr = checked_addr(registry);
    let auth = auth_header(registry);
    let hdrs = |extra: Option<(&'static str, &'static str)>| {
        let mut h: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        h.extend(extra);
        h
    };
    let r = http::request(
        &addr,
        "POST",
        &format!("/v2/{repo}/blobs/uploads/"),
        &hdrs(None),
        b"",
    )
    .expect("POST blob upload");
    assert_eq!(
        r.status,
        202,
        "starting upload to {repo} failed: {}",
        r.text()
    );
    let loc = r.header("location").expect("upload Location");
    let target = http::request_target(loc);
    let sep = if target.contains('?') { '&' } else { '?' };
    let put = format!("{target}{sep}digest={}", blob.digest);
    let r = http::request(
        &addr,
        "PUT",
        &put,
        &hdrs(Some(("Content-Type", "application/octet-stream"))),
        &blob.bytes,
    )
    .expect("PUT blob");
    assert_eq!(
        r.status,
        201,
        "uploading blob {} failed: {}",
        blob.digest,
        r.text()
    );
}

/// `PUT /v2/<repo>/manifests/<reference>` with any bytes and `Content-Type`; returns the
/// `Docker-Content-Digest` the registry answers, panicking on a non-201 answer.
pub fn push_raw_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> String {
    let r = try_push_raw_manifest(registry, repo, reference, media_type, bytes);
    assert_eq!(
        r.status,
        201,
        "PUT manifest {repo}:{reference} failed: {}",
        r.text()
    );
    r.header("docker-content-digest")
        .expect("Docker-Content-Digest")
        .to_string()
}

/// Like [`push_raw_manifest`] but returns the registry's answer whatever it is, to test
/// what the registry refuses.
pub fn try_push_raw_manifest(
    registry: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> http::Response {
    let addr = checked_addr(registry);
    let auth = auth_header(registry);
    let mut h = vec![("Content-Type", media_type)];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    http::request(
        &addr,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &h,
        bytes,
    )
    .expect("PUT manifest")
}

/// `Authorization` value for `registry`'s Basic credentials, if it has any.
pub fn auth_header(registry: &Registry) -> Option<String> {
    registry.credentials().map(|(u, p)| http::basic_auth(u, p))
}

fn checked_addr(registry: &Registry) -> String {
    assert!(
        !registry.is_tls(),
        "raw v2 pushes need a plain-HTTP registry (the fixture HTTP client has no TLS)"
    );
    registry.addr()
}

/// `Accept` value listing every manifest type (OCI and Docker, images and indexes).
pub const ACCEPT_ALL_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json";

/// `GET /v2/<repo>/manifests/<reference>` from `addr` (a registry or a proxy in front of
/// one) accepting every manifest type, with an optional `Authorization` value.
pub fn get_manifest(
    addr: &str,
    repo: &str,
    reference: &str,
    authorization: Option<&str>,
) -> http::Response {
    let mut h = vec![("Accept", ACCEPT_ALL_MANIFESTS)];
    if let Some(a) = authorization {
        h.push(("Authorization", a));
    }
    http::request(
        addr,
        "GET",
        &format!("/v2/{repo}/manifests/{reference}"),
        &h,
        b"",
    )
    .expect("GET manifest")
}

/// `GET /v2/<repo>/blobs/<digest>` from `addr`; `Err` when the body is cut short.
pub fn get_blob(
    addr: &str,
    repo: &str,
    digest: &str,
    authorization: Option<&str>,
) -> std::io::Result<http::Response> {
    let mut h = Vec::new();
    if let Some(a) = authorization {
        h.push(("Authorization", a));
    }
    http::request(addr, "GET", &format!("/v2/{repo}/blobs/{digest}"), &h, b"")
}
