//! Pushing layout images to a [`Registry`] with skopeo 1.9.3, in the formats a puller must
//! handle: OCI or Docker v2s2 manifests; gzip, zstd or uncompressed layers; image indexes;
//! `sha512:` digests.
//!
//! What skopeo 1.9.3 does against distribution 2.8.2 (checked on Debian 12):
//! - `--dest-compress-format zstd` does **not** recompress layers that are already gzip
//!   (only uncompressed ones), and its blob-info cache (`/var/lib/containers/cache`) may
//!   substitute a layer already in the registry in another compression. So zstd and
//!   uncompressed images are rewritten here ([`recompress`]) and pushed with
//!   `--preserve-digests`, which pushes the manifest byte for byte (no recompression, no
//!   substitution): uncompressed `application/vnd.oci.image.layer.v1.tar` layers then
//!   reach the registry as they are.
//! - skopeo's `oci:` source only finds index.json entries typed as OCI manifests or
//!   indexes, so a Docker v2s2 manifest made here is tagged with an OCI descriptor type;
//!   `--preserve-digests` then pushes it unchanged with its Docker `Content-Type`.
//! - Without format conversion every push uses `--preserve-digests`, so the pushed digest
//!   is the layout's manifest digest.
//! - A layout with `sha512:` blobs is read, but skopeo recomputes sha256 while uploading and
//!   fails ("blob with digest sha512:... saved with digest sha256:..."). [`push_layout_raw`]
//!   pushes such an image with plain v2 API calls instead, which the registry accepts.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::cmd;
use crate::compress::{self, Compression};
use crate::layout::{
    self, DigestAlgorithm, OciLayout, DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_INDEX,
    OCI_MANIFEST,
};
use crate::raw::{self, RawBlob};
use crate::registry::Registry;

/// Manifest format to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ManifestFormat {
    /// OCI image manifest (what umoci builds).
    #[default]
    Oci,
    /// Docker image manifest v2 schema 2.
    DockerV2s2,
}

/// How [`push`] sends an image.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// Manifest format on the registry.
    pub format: ManifestFormat,
    /// Recompress every layer first (`None`: keep the layout's blobs as they are).
    pub compression: Option<Compression>,
    /// The tag is an image index: push it and every image it lists (`skopeo copy --all`).
    pub all: bool,
}

/// Pushes `tag` of `layout` to `registry` as `repo_tag` (`"repo/name:tag"`) with
/// `skopeo copy`, handling TLS (`--dest-cert-dir`) and credentials (`--dest-creds`), and
/// returns the digest of the manifest pushed (`--digestfile`).
pub fn push(
    layout: &OciLayout,
    tag: &str,
    registry: &Registry,
    repo_tag: &str,
    opts: PushOptions,
) -> String {
    let mut src_tag = tag.to_string();
    let mut skopeo_format = None;
    match (opts.compression, opts.format) {
        (Some(c), format) => {
            assert!(
                !opts.all,
                "recompressing an index is not supported; push each image"
            );
            src_tag = format!("{tag}--{c:?}-{format:?}").to_lowercase();
            recompress(layout, tag, &src_tag, c, format);
        }
        (None, ManifestFormat::DockerV2s2) => skopeo_format = Some("v2s2"),
        (None, ManifestFormat::Oci) => {}
    }
    let tmp = tempfile::tempdir().expect("temp dir for digest file");
    let digestfile = tmp.path().join("digest");
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy", "copy", "--quiet", "--retry-times", "0"])
        .arg("--digestfile")
        .arg(&digestfile);
    match skopeo_format {
        Some(f) => c.args(["--format", f]),
        None => c.arg("--preserve-digests"),
    };
    if opts.all {
        c.arg("--all");
    }
    dest_args(&mut c, registry);
    c.arg(layout.skopeo_ref(&src_tag))
        .arg(format!("docker://{}/{repo_tag}", registry.addr()));
    cmd::run(&mut c);
    read_digest(&digestfile)
}

/// Adds skopeo's destination TLS and credential flags for `registry`.
pub fn dest_args(c: &mut Command, registry: &Registry) {
    match registry.cert_dir() {
        Some(dir) => c
            .arg("--dest-tls-verify=true")
            .arg("--dest-cert-dir")
            .arg(dir),
        None => c.arg("--dest-tls-verify=false"),
    };
    match registry.credentials() {
        Some((u, p)) => c.arg("--dest-creds").arg(format!("{u}:{p}")),
        None => c.arg("--dest-no-creds"),
    };
}

fn read_digest(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("skopeo wrote no digest file {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Rewrites image `src_tag` into `dst_tag` with every layer recompressed to `c` and the
/// manifest in `format` (Docker media types for [`ManifestFormat::DockerV2s2`]; Docker has
/// no zstd type, so that combination panics). Configs keep their content (diff_ids do not
/// depend on compression). Returns the new manifest digest.
pub fn recompress(
    layout: &OciLayout,
    src_tag: &str,
    dst_tag: &str,
    c: Compression,
    format: ManifestFormat,
) -> String {
    let mut m = layout.manifest(src_tag);
    assert!(
        m.get("layers").is_some(),
        "{src_tag} is not an image manifest"
    );
    let docker = format == ManifestFormat::DockerV2s2;
    let layer_type = if docker {
        c.docker_media_type()
            .unwrap_or_else(|| panic!("Docker v2s2 has no media type for {c:?} layers"))
    } else {
        c.oci_media_type()
    };
    for l in m["layers"].as_array_mut().expect("layers") {
        let blob = layout.read_blob(l["digest"].as_str().expect("layer digest"));
        let out = compress::compress(&compress::decompress(&blob), c);
        let d = layout.write_blob(DigestAlgorithm::Sha256, &out);
        *l = layout::descriptor(layer_type, &d, out.len());
    }
    m["mediaType"] = json!(if docker {
        DOCKER_MANIFEST
    } else {
        OCI_MANIFEST
    });
    m["config"]["mediaType"] = json!(if docker { DOCKER_CONFIG } else { OCI_CONFIG });
    let mut desc = layout.put_manifest(dst_tag, &m, DigestAlgorithm::Sha256);
    if docker {
        // skopeo 1.9.3 only finds index.json entries typed as OCI manifests/indexes; it then
        // pushes the (Docker) blob byte for byte, with the Docker Content-Type.
        desc["mediaType"] = json!(OCI_MANIFEST);
        layout.set_tag(dst_tag, &desc);
    }
    desc["digest"].as_str().expect("digest").to_string()
}

/// Rewrites image `src_tag` into `dst_tag` with config, layers and the manifest blob itself
/// named by `sha512:` digests (files under `blobs/sha512/`). Returns the manifest's sha512
/// digest. Push it with [`push_layout_raw`] (skopeo 1.9.3 cannot).
pub fn rehash_sha512(layout: &OciLayout, src_tag: &str, dst_tag: &str) -> String {
    let mut m = layout.manifest(src_tag);
    let rehash = |d: &mut Value| {
        let bytes = layout.read_blob(d["digest"].as_str().expect("digest"));
        d["digest"] = json!(layout.write_blob(DigestAlgorithm::Sha512, &bytes));
    };
    rehash(&mut m["config"]);
    for l in m["layers"].as_array_mut().expect("layers") {
        rehash(l);
    }
    let desc = layout.put_manifest(dst_tag, &m, DigestAlgorithm::Sha512);
    desc["digest"].as_str().expect("digest").to_string()
}

/// Pushes image `tag` of `layout` with plain v2 API calls (monolithic `POST` + `PUT
/// ?digest=`, then `PUT` manifest by `reference`), keeping every digest as written in the
/// manifest (sha256 or sha512). Returns the registry's `Docker-Content-Digest` for the
/// manifest (always sha256 with distribution 2.8.2). Indexes are pushed with their child
/// manifests first (by digest; children must then be sha256-named).
pub fn push_layout_raw(
    layout: &OciLayout,
    tag: &str,
    registry: &Registry,
    repo: &str,
    reference: &str,
) -> String {
    let digest = layout.manifest_digest(tag);
    push_manifest_tree(layout, &digest, registry, repo, reference)
}

fn push_manifest_tree(
    layout: &OciLayout,
    digest: &str,
    registry: &Registry,
    repo: &str,
    reference: &str,
) -> String {
    let bytes = layout.read_blob(digest);
    let m: Value = serde_json::from_slice(&bytes).expect("manifest is JSON");
    let media_type = m["mediaType"].as_str().unwrap_or(OCI_MANIFEST).to_string();
    if media_type == OCI_INDEX || m.get("manifests").is_some() {
        for child in m["manifests"].as_array().expect("manifests") {
            let cd = child["digest"].as_str().expect("child digest");
            push_manifest_tree(layout, cd, registry, repo, cd);
        }
    } else {
        let mut descs = vec![m["config"].clone()];
        descs.extend(m["layers"].as_array().expect("layers").iter().cloned());
        for d in descs {
            let dg = d["digest"].as_str().expect("digest");
            let blob = RawBlob::new(d["mediaType"].as_str().unwrap_or(""), layout.read_blob(dg))
                .with_digest(dg);
            raw::push_raw_blob(registry, repo, &blob);
        }
    }
    raw::push_raw_manifest(registry, repo, reference, &media_type, &bytes)
}
