//! An OCI image layout on disk (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
//!
//! umoci and skopeo both read and write this format, so it is where fixture images are
//! built and rewritten (recompressed, rehashed, hand-made) before they are pushed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

use crate::cmd;

/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd OCI layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Media type of a Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Media type of a Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Media type of a gzip Docker layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Media type of an uncompressed Docker layer.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The index.json annotation that names a tag.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Digest algorithms the fixtures can name blobs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// `sha256:` (what every tool uses).
    Sha256,
    /// `sha512:` (allowed by the OCI spec; skopeo 1.9.3 cannot push it).
    Sha512,
}

impl DigestAlgorithm {
    /// The algorithm's name as written in a digest (`sha256`, `sha512`).
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Sha512 => "sha512",
        }
    }
}

/// `alg:hex` digest of `bytes`.
pub fn digest(alg: DigestAlgorithm, bytes: &[u8]) -> String {
    let hex = match alg {
        DigestAlgorithm::Sha256 => hex::encode(Sha256::digest(bytes)),
        DigestAlgorithm::Sha512 => hex::encode(Sha512::digest(bytes)),
    };
    format!("{}:{hex}", alg.name())
}

/// `sha256:hex` of `bytes`, the common case.
pub fn sha256_digest(bytes: &[u8]) -> String {
    digest(DigestAlgorithm::Sha256, bytes)
}

/// A descriptor object (`mediaType`, `digest`, `size`) for `bytes` under `digest`.
pub fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({ "mediaType": media_type, "digest": digest, "size": size })
}

/// An OCI image layout directory; cheap handle, does not own the directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Opens the layout at `dir`, creating it with `umoci init` when it has no
    /// `oci-layout` file yet (`dir` may exist if it is empty, e.g. a fresh temp dir).
    pub fn new(dir: impl Into<PathBuf>) -> OciLayout {
        let dir = dir.into();
        if !dir.join("oci-layout").exists() {
            if dir.exists() {
                // umoci init refuses an existing directory; an empty one is ours to replace.
                fs::remove_dir(&dir).unwrap_or_else(|e| {
                    panic!("{} exists and is not an empty dir: {e}", dir.display())
                });
            }
            cmd::run(Command::new("umoci").arg("init").arg("--layout").arg(&dir));
        }
        OciLayout { dir }
    }

    /// Creates an empty layout at `dir` without umoci (for hand-made images).
    pub fn init_plain(dir: impl Into<PathBuf>) -> OciLayout {
        let dir = dir.into();
        fs::create_dir_all(dir.join("blobs/sha256")).expect("create blobs dir");
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        if !dir.join("index.json").exists() {
            fs::write(
                dir.join("index.json"),
                r#"{"schemaVersion":2,"manifests":[]}"#,
            )
            .expect("write index.json");
        }
        OciLayout { dir }
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `DIR:TAG`, the form umoci's `--image` takes.
    pub fn image_ref(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// `oci:DIR:TAG`, the form skopeo takes.
    pub fn skopeo_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// The parsed `index.json`.
    pub fn index(&self) -> Value {
        read_json(&self.dir.join("index.json"))
    }

    /// The index.json descriptor tagged `tag` (panics when there is none).
    pub fn descriptor(&self, tag: &str) -> Value {
        self.index()["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["annotations"][REF_NAME] == tag)
            .cloned()
            .unwrap_or_else(|| panic!("no tag {tag:?} in {}", self.dir.display()))
    }

    /// Digest of the manifest (or index) tagged `tag`.
    pub fn manifest_digest(&self, tag: &str) -> String {
        self.descriptor(tag)["digest"]
            .as_str()
            .expect("descriptor digest")
            .to_string()
    }

    /// The manifest (or index) tagged `tag`, parsed.
    pub fn manifest(&self, tag: &str) -> Value {
        let bytes = self.read_blob(&self.manifest_digest(tag));
        serde_json::from_slice(&bytes).expect("manifest is JSON")
    }

    /// The image config of the manifest tagged `tag`, parsed.
    pub fn config(&self, tag: &str) -> Value {
        let m = self.manifest(tag);
        let bytes = self.read_blob(m["config"]["digest"].as_str().expect("config digest"));
        serde_json::from_slice(&bytes).expect("config is JSON")
    }

    /// Path of blob `digest` (`alg:hex`) in this layout.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (alg, hex) = digest
            .split_once(':')
            .unwrap_or_else(|| panic!("not a digest: {digest}"));
        self.dir.join("blobs").join(alg).join(hex)
    }

    /// Bytes of blob `digest`.
    pub fn read_blob(&self, digest: &str) -> Vec<u8> {
        let p = self.blob_path(digest);
        fs::read(&p).unwrap_or_else(|e| panic!("read blob {}: {e}", p.display()))
    }

    /// Stores `bytes` as a blob named by their `alg` digest and returns that digest.
    pub fn write_blob(&self, alg: DigestAlgorithm, bytes: &[u8]) -> String {
        let d = digest(alg, bytes);
        self.write_blob_as(&d, bytes);
        d
    }

    /// Stores `bytes` under the name `digest` even if they do not hash to it (hostile
    /// layouts).
    pub fn write_blob_as(&self, digest: &str, bytes: &[u8]) {
        let p = self.blob_path(digest);
        fs::create_dir_all(p.parent().expect("blob dir")).expect("create blob dir");
        fs::write(&p, bytes).unwrap_or_else(|e| panic!("write blob {}: {e}", p.display()));
    }

    /// Points `tag` at `descriptor` in index.json (replacing any previous entry for it).
    pub fn set_tag(&self, tag: &str, descriptor: &Value) {
        let mut d = descriptor.clone();
        d["annotations"][REF_NAME] = json!(tag);
        let mut index = self.index();
        let list = index["manifests"]
            .as_array_mut()
            .expect("index.json has manifests");
        list.retain(|x| x["annotations"][REF_NAME] != tag);
        list.push(d);
        let bytes = serde_json::to_vec(&index).expect("serialize index.json");
        fs::write(self.dir.join("index.json"), bytes).expect("write index.json");
    }

    /// Serializes `manifest` as a blob (named with `alg`) and tags it; returns its
    /// descriptor (without the tag annotation). `mediaType` is taken from the manifest.
    pub fn put_manifest(&self, tag: &str, manifest: &Value, alg: DigestAlgorithm) -> Value {
        let bytes = serde_json::to_vec(manifest).expect("serialize manifest");
        let media_type = manifest["mediaType"].as_str().unwrap_or(OCI_MANIFEST);
        let d = self.write_blob(alg, &bytes);
        let desc = descriptor(media_type, &d, bytes.len());
        self.set_tag(tag, &desc);
        desc
    }

    /// Tags in index.json, in order.
    pub fn tags(&self) -> Vec<String> {
        self.index()["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["annotations"][REF_NAME].as_str().map(String::from))
            .collect()
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}
