//! Images built with the real tool (umoci 0.4.7) in an [`OciLayout`], and umoci's own
//! unpack as the reference result an unpacker must match.
//!
//! What umoci 0.4.7 puts in a layer (checked on Debian 12):
//! - A deleted file becomes a whiteout `dir/.wh.NAME`.
//! - An "opaque" change (directory removed and recreated with other content) does **not**
//!   produce `.wh..wh..opq`: umoci emits the directory entry, one `.wh.NAME` per vanished
//!   child, then the new children. Tests of `.wh..wh..opq` build the tar themselves
//!   ([`crate::tar_builder`]) and add it with [`append_tar_layer`]; `umoci unpack` does
//!   honour the marker, so it still gives the reference result.
//! - A directory replaced by a file yields the file entry followed by whiteouts *under* it
//!   (`d` then `d/.wh.sub`), which an unpacker must tolerate; umoci's own unpack does.
//! - xattrs (`user.*`, and `trusted.*` as root) are kept, as PAX `SCHILY.xattr.*` records,
//!   and restored by `umoci unpack`.
//! - `umoci unpack` 0.4.7 reads only `tar` and `tar+gzip` layers; it refuses `tar+zstd`
//!   ("blob is not correct mediatype"), so take the reference result from the image
//!   before [`crate::push::recompress`]ing it to zstd.
//! - Hard links inside a layer are kept as tar hard links (type `1`); setuid/setgid bits,
//!   owners and fifos are kept. Note `chown` clears setuid/setgid: chown first, chmod last
//!   ([`crate::fsedit`] helpers do that).

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::cmd;
use crate::compress::{self, Compression};
use crate::fsedit;
use crate::layout::{descriptor, sha256_digest, DigestAlgorithm, OciLayout, OCI_CONFIG, OCI_INDEX};

/// Applets linked to busybox in the fixture image (`/bin/<name> -> busybox`).
pub const BUSYBOX_APPLETS: &[&str] = &["sh", "ls", "echo", "cat"];
/// Content of `/etc/motd` in the busybox image, for assertions after unpack.
pub const MOTD: &str = "sealpod busybox fixture\n";

/// The busybox image ([`build_busybox`], tag `latest`) in an OCI layout of its own,
/// pushed with skopeo to a fresh registry: what the end-to-end tests of guest pulls
/// start from. Dropping it stops the registry and removes the layout.
#[derive(Debug)]
pub struct BusyboxInRegistry {
    /// The registry serving the image.
    pub registry: crate::registry::Registry,
    /// The layout holding tag `latest` (to push or encrypt more variants from).
    pub layout: OciLayout,
    /// The temp dir of the layout, for the test's other files.
    pub dir: tempfile::TempDir,
}

impl BusyboxInRegistry {
    /// Builds the image and pushes it as `repo_tag` (`"repo/name:tag"`) to a new registry.
    pub fn start(repo_tag: &str) -> BusyboxInRegistry {
        let registry =
            crate::registry::Registry::start(crate::registry::RegistryOptions::default());
        let dir = tempfile::Builder::new()
            .prefix("sealpod-busybox-")
            .tempdir()
            .expect("layout temp dir");
        let layout = OciLayout::new(dir.path().join("layout"));
        build_busybox(&layout, "latest");
        crate::push::push(
            &layout,
            "latest",
            &registry,
            repo_tag,
            crate::push::PushOptions::default(),
        );
        BusyboxInRegistry {
            registry,
            layout,
            dir,
        }
    }

    /// `HOST:PORT/<repo_tag>` in this registry.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.addr())
    }
}

/// Builds tag `tag` in `layout`: one layer with the host's static busybox at
/// `/bin/busybox`, relative symlinks for [`BUSYBOX_APPLETS`], a hard link
/// `/bin/busybox-hl`, `/etc/motd` ([`MOTD`]), and `Cmd ["/bin/sh"]`.
pub fn build_busybox(layout: &OciLayout, tag: &str) {
    cmd::run(
        Command::new("umoci")
            .args(["new", "--image"])
            .arg(layout.image_ref(tag)),
    );
    LayerBuilder::new(layout, tag, tag).layer(|root| {
        fsedit::mkdir(root, "bin", 0o755)?;
        fsedit::mkdir(root, "etc", 0o755)?;
        std::fs::copy(busybox_path(), root.join("bin/busybox"))?;
        fsedit::chmod(&root.join("bin/busybox"), 0o755)?;
        for applet in BUSYBOX_APPLETS {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
        }
        std::fs::hard_link(root.join("bin/busybox"), root.join("bin/busybox-hl"))?;
        fsedit::write(root, "etc/motd", MOTD.as_bytes(), 0o644)?;
        Ok(())
    });
    set_config(layout, tag, &["--config.cmd", "/bin/sh"]);
}

/// The static busybox binary copied into fixture images: the first `busybox` on `PATH`
/// (Debian's `busybox-static` puts it in `/usr/bin`).
pub fn busybox_path() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("busybox"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no busybox on PATH (apt-get install busybox-static)"))
}

/// Runs `umoci config --image LAYOUT:TAG ARGS...` (e.g. `--config.cmd`, `--architecture`),
/// rewriting the config and manifest of `tag` in place.
pub fn set_config(layout: &OciLayout, tag: &str, args: &[&str]) {
    cmd::run(
        Command::new("umoci")
            .args(["config", "--image"])
            .arg(layout.image_ref(tag))
            .args(args),
    );
}

/// Adds layers on top of an image by editing an unpacked rootfs, the way a Dockerfile
/// `RUN` step would: `umoci unpack` once, then each [`LayerBuilder::layer`] edits the
/// rootfs and `umoci repack --refresh-bundle`s it into a new layer of the target tag.
#[derive(Debug)]
pub struct LayerBuilder {
    layout: OciLayout,
    to_tag: String,
    bundle: tempfile::TempDir,
}

impl LayerBuilder {
    /// Unpacks `from_tag` into a private bundle; layers will be written to `to_tag`
    /// (which may equal `from_tag`).
    pub fn new(layout: &OciLayout, from_tag: &str, to_tag: &str) -> LayerBuilder {
        let bundle = tempfile::Builder::new()
            .prefix("sealpod-bundle-")
            .tempdir()
            .expect("create bundle temp dir");
        let dir = bundle.path().join("b");
        cmd::run(
            Command::new("umoci")
                .args(["unpack", "--image"])
                .arg(layout.image_ref(from_tag))
                .arg(&dir),
        );
        LayerBuilder {
            layout: layout.clone(),
            to_tag: to_tag.to_string(),
            bundle,
        }
    }

    /// The unpacked rootfs being edited.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.path().join("b/rootfs")
    }

    /// Lets `edit` change the rootfs, then records the changes as one new layer of the
    /// target tag. Panics if `edit` fails.
    pub fn layer(&mut self, edit: impl FnOnce(&Path) -> io::Result<()>) -> &mut Self {
        let root = self.rootfs();
        edit(&root).unwrap_or_else(|e| panic!("editing rootfs {} failed: {e}", root.display()));
        cmd::run(
            Command::new("umoci")
                .args(["repack", "--refresh-bundle", "--image"])
                .arg(self.layout.image_ref(&self.to_tag))
                .arg(self.bundle.path().join("b")),
        );
        self
    }
}

/// One-shot [`LayerBuilder`]: tag `to_tag` = `from_tag` plus one layer made by `edit`.
pub fn add_layer(
    layout: &OciLayout,
    from_tag: &str,
    to_tag: &str,
    edit: impl FnOnce(&Path) -> io::Result<()>,
) {
    LayerBuilder::new(layout, from_tag, to_tag).layer(edit);
}

/// Unpacks `tag` with `umoci unpack` into `dest` (which must not exist yet) and returns the
/// rootfs path: the reference tree an unpacker under test is compared with. Layers must be
/// uncompressed or gzip (umoci 0.4.7 cannot read zstd).
pub fn umoci_unpack(layout: &OciLayout, tag: &str, dest: &Path) -> PathBuf {
    cmd::run(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(layout.image_ref(tag))
            .arg(dest),
    );
    dest.join("rootfs")
}

/// Tag `to_tag` = image `from_tag` plus `tar` (an uncompressed layer, e.g. from
/// [`crate::tar_builder`]) compressed with `c`, with the config's diff_ids and history
/// extended. For layers umoci cannot produce (`.wh..wh..opq`, device nodes, odd names)
/// whose reference result should still come from [`umoci_unpack`]. Returns the new
/// manifest digest.
pub fn append_tar_layer(
    layout: &OciLayout,
    from_tag: &str,
    to_tag: &str,
    tar: &[u8],
    c: Compression,
) -> String {
    let mut m = layout.manifest(from_tag);
    let mut config = layout.config(from_tag);
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .expect("config has diff_ids")
        .push(json!(sha256_digest(tar)));
    if let Some(h) = config["history"].as_array_mut() {
        h.push(json!({ "created_by": "integration_tests::images::append_tar_layer" }));
    }
    let config_bytes = serde_json::to_vec(&config).expect("serialize config");
    let config_digest = layout.write_blob(DigestAlgorithm::Sha256, &config_bytes);
    m["config"] = descriptor(OCI_CONFIG, &config_digest, config_bytes.len());
    let blob = compress::compress(tar, c);
    let layer_digest = layout.write_blob(DigestAlgorithm::Sha256, &blob);
    m["layers"]
        .as_array_mut()
        .expect("manifest has layers")
        .push(descriptor(c.oci_media_type(), &layer_digest, blob.len()));
    let desc = layout.put_manifest(to_tag, &m, DigestAlgorithm::Sha256);
    desc["digest"].as_str().expect("digest").to_string()
}

/// What [`make_multiplatform_index`] made: digests of the index and its two images.
#[derive(Debug, Clone)]
pub struct MultiPlatform {
    /// Digest of the OCI image index (tagged `tag`).
    pub index_digest: String,
    /// Digest of the linux/amd64 image manifest (tagged `TAG-amd64`).
    pub amd64_digest: String,
    /// Digest of the linux/arm64 (variant v8) image manifest (tagged `TAG-arm64`).
    pub arm64_digest: String,
}

/// Builds two busybox images, linux/amd64 and linux/arm64/v8, each with `/etc/arch`
/// holding its architecture name (so a test can tell which one was unpacked), and an
/// OCI image index listing both with `platform` objects, tagged `tag` (push it with
/// `PushOptions { all: true, .. }`). The arm64 image's binary is still the host's one:
/// only the config says arm64.
pub fn make_multiplatform_index(layout: &OciLayout, tag: &str) -> MultiPlatform {
    let base = format!("{tag}-base");
    build_busybox(layout, &base);
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8"))] {
        let t = format!("{tag}-{arch}");
        add_layer(layout, &base, &t, |root| {
            fsedit::write(root, "etc/arch", format!("{arch}\n").as_bytes(), 0o644)
        });
        // umoci 0.4.7 has no --variant flag; the index's platform object carries it.
        set_config(layout, &t, &["--architecture", arch, "--os", "linux"]);
        let d = layout.descriptor(&t);
        let mut platform = json!({ "architecture": arch, "os": "linux" });
        if let Some(v) = variant {
            platform["variant"] = json!(v);
        }
        let mut entry = descriptor(
            d["mediaType"].as_str().expect("mediaType"),
            d["digest"].as_str().expect("digest"),
            d["size"].as_u64().expect("size") as usize,
        );
        entry["platform"] = platform;
        digests.push(d["digest"].as_str().expect("digest").to_string());
        entries.push(entry);
    }
    let index: Value = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    let desc = layout.put_manifest(tag, &index, DigestAlgorithm::Sha256);
    MultiPlatform {
        index_digest: desc["digest"].as_str().expect("digest").to_string(),
        amd64_digest: digests[0].clone(),
        arm64_digest: digests[1].clone(),
    }
}
