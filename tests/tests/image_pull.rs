//! End-to-end tests of the `image_rs` library against real peers: a real `docker-registry`
//! on 127.0.0.1 (plain, htpasswd, TLS), images built with umoci and pushed with skopeo or
//! raw v2 calls, a fault-injecting / token-auth proxy, and umoci's own unpack as the
//! reference rootfs.
//!
//! Every test owns its registry, proxy, layout, stores and rootfs targets (temp dirs removed
//! on drop; overlay mounts unmounted by [`MountGuard`] even when a test panics), so the
//! tests run in parallel. Run as root (owners, xattrs, overlay mounts).

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image_rs::registry::Login;
use image_rs::unpack::{Limits, UnpackError};
use image_rs::{
    Credentials, Error, Layout, Platform, PullOptions, Puller, RegistryClient, RegistryConfig,
    Store,
};
use integration_tests::compress::{self, Compression};
use integration_tests::fsedit;
use integration_tests::fstree::{self, CompareOptions, Kind, Tree};
use integration_tests::images::{self, LayerBuilder};
use integration_tests::layout::{self, DigestAlgorithm, OciLayout};
use integration_tests::proxy::{Proxy, ProxyOptions, RequestRecord, TokenAuth};
use integration_tests::push::{self, ManifestFormat, PushOptions};
use integration_tests::raw::{self, RawBlob, RawImage};
use integration_tests::registry::{Registry, RegistryOptions};
use integration_tests::tar_builder::{self, TarBuilder};
use serde_json::{json, Value};
use sha2::Digest as _;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A test's scratch space: layout, stores, rootfs targets and umoci references live here.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("sealpod-pull-")
                .tempdir()
                .expect("create scratch dir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn layout(&self) -> OciLayout {
        OciLayout::new(self.path("layout"))
    }

    fn store(&self, rel: &str) -> Store {
        let p = self.path(rel);
        Store::open(&p).unwrap_or_else(|e| panic!("open store {}: {e}", p.display()))
    }

    /// umoci's unpack of `tag`, snapshotted: the reference result.
    fn umoci(&self, l: &OciLayout, tag: &str) -> Tree {
        let root = images::umoci_unpack(l, tag, &self.path(&format!("umoci-{tag}")));
        fstree::snapshot(&root)
    }
}

fn client(config: RegistryConfig) -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(config).expect("build registry client"))
}

fn anonymous() -> Arc<RegistryClient> {
    client(RegistryConfig::default())
}

fn login(user: &str, password: &str) -> Credentials {
    // `Credentials` has private fields (auth-file entries): set `explicit` on a default.
    let mut c = Credentials::anonymous();
    c.explicit = Some(Login {
        username: user.to_string(),
        password: Zeroizing::new(password.to_string()),
    });
    c
}

fn flat() -> PullOptions {
    PullOptions {
        layout: Layout::Flat,
        ..PullOptions::default()
    }
}

fn overlay() -> PullOptions {
    PullOptions {
        layout: Layout::Overlay,
        ..PullOptions::default()
    }
}

/// Compares the tree at `root` with `expected` (umoci's unpack) entry by entry.
fn assert_same_tree(what: &str, expected: &Tree, root: &Path, opts: &CompareOptions) {
    let actual = fstree::snapshot(root);
    assert!(
        actual.entries.len() > 3,
        "{what}: {} is (nearly) empty",
        root.display()
    );
    if let Err(d) = fstree::compare_with(expected, &actual, opts) {
        panic!(
            "{what}: rootfs {} differs from umoci's unpack:\n{d}",
            root.display()
        );
    }
}

fn entry<'a>(t: &'a Tree, p: &str) -> &'a fstree::Entry {
    t.entries
        .get(Path::new(p))
        .unwrap_or_else(|| panic!("no {p} in the tree"))
}

/// Unpacked layers in the store (`layers/<alg>/<hex>`), as `alg:hex`.
fn store_layers(store: &Store) -> Vec<String> {
    let mut v = Vec::new();
    for alg in ["sha256", "sha512"] {
        for h in dir_names(&store.root().join("layers").join(alg)) {
            v.push(format!("{alg}:{h}"));
        }
    }
    v
}

/// A snapshot of the whole store, to check with [`assert_store_unchanged`] that a
/// refused pull changed nothing.
fn store_state(store: &Store) -> Tree {
    fstree::snapshot(store.root())
}

/// Compares the store with `before`, ignoring lock files (a pull may create them), and
/// checks that `tmp/` is empty.
fn assert_store_unchanged(what: &str, before: &Tree, store: &Store) {
    let opts = CompareOptions {
        ignore_paths: vec![PathBuf::from("locks"), PathBuf::from(".lock")],
        ..CompareOptions::default()
    };
    if let Err(d) = fstree::compare_with(before, &store_state(store), &opts) {
        panic!("{what}: the refused pull changed the store:\n{d}");
    }
    assert_eq!(
        dir_names(&store.root().join("tmp")),
        Vec::<String>::new(),
        "{what}: store tmp/ not empty"
    );
}

fn diff_ids(image: &RawImage) -> Vec<String> {
    let cfg: Value = serde_json::from_slice(&image.config.bytes).expect("config JSON");
    cfg["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect()
}

/// Two small layers: a shared-looking base and an app layer naming `id`.
fn small_tars(id: &str) -> Vec<Vec<u8>> {
    vec![
        TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/base", 0o644, b"base layer\n")
            .symlink("etc/link", "base")
            .finish(),
        TarBuilder::new()
            .dir("app", 0o755)
            .file("app/id", 0o644, id.as_bytes())
            .finish(),
    ]
}

// ---------------------------------------------------------------------------------------
// 1. busybox in every format, flat and overlay
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn busybox_in_every_format_pulls_flat_like_umoci() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    images::build_busybox(&l, "bb");
    let expected = s.umoci(&l, "bb");
    let diff_id = l.config("bb")["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_string();

    let cases = [
        (
            "oci-gzip",
            PushOptions::default(),
            layout::OCI_MANIFEST,
            layout::OCI_LAYER_GZIP,
        ),
        (
            "docker-v2s2",
            PushOptions {
                format: ManifestFormat::DockerV2s2,
                ..PushOptions::default()
            },
            layout::DOCKER_MANIFEST,
            layout::DOCKER_LAYER_GZIP,
        ),
        (
            "zstd",
            PushOptions {
                compression: Some(Compression::Zstd),
                ..PushOptions::default()
            },
            layout::OCI_MANIFEST,
            layout::OCI_LAYER_ZSTD,
        ),
        (
            "uncompressed",
            PushOptions {
                compression: Some(Compression::None),
                ..PushOptions::default()
            },
            layout::OCI_MANIFEST,
            layout::OCI_LAYER_TAR,
        ),
    ];
    for (name, opts, manifest_type, layer_type) in cases {
        let pushed = push::push(&l, "bb", &reg, &format!("formats/bb:{name}"), opts);
        let resp = raw::get_manifest(&reg.addr(), "formats/bb", name, None);
        assert_eq!(
            resp.header("Content-Type"),
            Some(manifest_type),
            "{name}: pushed manifest type"
        );
        let m = resp.json();
        assert_eq!(
            m["layers"][0]["mediaType"], layer_type,
            "{name}: layer type"
        );
        let layer_size = m["layers"][0]["size"].as_u64().unwrap();

        // A fresh store per format: layers are keyed by diff_id, so a shared store would
        // skip every download after the first and never decompress zstd or plain tar.
        let store = s.store(&format!("store-{name}"));
        let puller = Puller::new(anonymous(), store.clone());
        let rootfs = s.path(&format!("rootfs-{name}"));
        let r = reference(&format!("{}/formats/bb:{name}", reg.addr()));
        let rep = puller
            .pull(&r, &rootfs, &flat())
            .await
            .unwrap_or_else(|e| panic!("{name}: pull failed: {e}"));
        assert_eq!(rep.manifest_digest.to_string(), pushed, "{name}");
        assert_eq!(rep.index_digest, None, "{name}");
        assert_eq!(rep.layers.len(), 1, "{name}");
        let lo = &rep.layers[0];
        assert!(!lo.cached, "{name}: fresh store, layer cannot be cached");
        assert_eq!(lo.diff_id.to_string(), diff_id, "{name}: diff_id");
        assert_eq!(lo.fetched_bytes, layer_size, "{name}: bytes fetched");
        assert_eq!((lo.requests, lo.range_requests), (1, 0), "{name}");
        assert!(lo.unpacked.entries >= 9, "{name}: {:?}", lo.unpacked);
        assert_eq!(rep.blobs_fetched, 2, "{name}: config + layer");
        assert!(store.has_layer(&lo.diff_id), "{name}");
        assert_eq!(rep.rootfs, rootfs);
        assert_same_tree(name, &expected, &rootfs, &CompareOptions::default());
        assert_eq!(
            fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
            images::MOTD
        );
        let recs = store.images().unwrap();
        assert_eq!(recs.len(), 1, "{name}");
        assert_eq!(recs[0].manifest_digest.to_string(), pushed, "{name}");
        assert_eq!(recs[0].reference, r.to_string(), "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn busybox_overlay_mount_matches_umoci_and_keeps_the_store_read_only() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    images::build_busybox(&l, "bb");
    let expected = s.umoci(&l, "bb");
    let pushed = push::push(&l, "bb", &reg, "ovl/bb:v1", PushOptions::default());

    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let rootfs = s.path("rootfs");
    let guard = MountGuard::new(&puller, &rootfs);
    let rep = puller
        .pull(
            &reference(&format!("{}/ovl/bb:v1", reg.addr())),
            &rootfs,
            &overlay(),
        )
        .await
        .expect("overlay pull");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert!(is_mount_point(&rootfs), "rootfs is not a mount point");
    assert_same_tree("overlay", &expected, &rootfs, &CompareOptions::default());

    // Writes go to the private upper dir, never into the shared layer.
    let layer = store.layer_path(&rep.layers[0].diff_id);
    let layer_before = fstree::snapshot(&layer);
    fs::write(rootfs.join("etc/motd"), b"changed in the container\n").unwrap();
    fs::remove_file(rootfs.join("bin/sh")).unwrap();
    fs::write(rootfs.join("new-file"), b"x").unwrap();
    fstree::compare(&layer_before, &fstree::snapshot(&layer))
        .unwrap_or_else(|d| panic!("writing into the overlay changed the store layer:\n{d}"));
    assert_eq!(dir_names(&store.root().join("mounts")).len(), 1);

    puller.unmount(&rootfs).expect("unmount");
    assert!(!is_mount_point(&rootfs));
    assert_eq!(
        dir_names(&rootfs),
        Vec::<String>::new(),
        "mount point left with content"
    );
    assert_eq!(
        dir_names(&store.root().join("mounts")),
        Vec::<String>::new(),
        "the private upper dir was not removed"
    );
    drop(guard);
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_platform_index_picks_the_platform() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    let mp = images::make_multiplatform_index(&l, "multi");
    let pushed = push::push(
        &l,
        "multi",
        &reg,
        "multi/bb:v1",
        PushOptions {
            all: true,
            ..PushOptions::default()
        },
    );
    assert_eq!(pushed, mp.index_digest);
    let r = reference(&format!("{}/multi/bb:v1", reg.addr()));
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());

    let umoci_amd64 = s.umoci(&l, "multi-amd64");
    let umoci_arm64 = s.umoci(&l, "multi-arm64");
    let current = Platform::current();
    let (default_arch, default_digest, default_tree) = match current.architecture.as_str() {
        "amd64" => ("amd64", &mp.amd64_digest, &umoci_amd64),
        "arm64" => ("arm64", &mp.arm64_digest, &umoci_arm64),
        other => panic!("this test needs an amd64 or arm64 host, not {other}"),
    };
    let root_default = s.path("rootfs-default");
    let rep = puller
        .pull(&r, &root_default, &flat())
        .await
        .expect("pull with the default platform");
    assert_eq!(rep.manifest_digest.to_string(), *default_digest);
    assert_eq!(
        rep.index_digest.as_ref().map(|d| d.to_string()),
        Some(mp.index_digest.clone())
    );
    assert_eq!(
        fs::read_to_string(root_default.join("etc/arch")).unwrap(),
        format!("{default_arch}\n")
    );
    assert_same_tree(
        "default platform",
        default_tree,
        &root_default,
        &CompareOptions::default(),
    );

    for (platform, arch, want, tree) in [
        ("linux/arm64", "arm64", &mp.arm64_digest, &umoci_arm64),
        ("linux/amd64", "amd64", &mp.amd64_digest, &umoci_amd64),
    ] {
        let root = s.path(&format!("rootfs-{arch}"));
        let opts = PullOptions {
            platform: Some(platform.parse().unwrap()),
            ..flat()
        };
        let rep = puller
            .pull(&r, &root, &opts)
            .await
            .unwrap_or_else(|e| panic!("pull {platform}: {e}"));
        assert_eq!(rep.manifest_digest.to_string(), *want, "{platform}");
        assert_eq!(
            fs::read_to_string(root.join("etc/arch")).unwrap(),
            format!("{arch}\n"),
            "{platform}"
        );
        // The busybox base layer is shared by both images and already in the store.
        assert!(
            rep.layers[0].cached,
            "{platform}: base layer should be cached"
        );
        assert_same_tree(platform, tree, &root, &CompareOptions::default());
    }

    let root = s.path("rootfs-s390x");
    let e = expect_err(
        "platform missing from the index",
        puller
            .pull(
                &r,
                &root,
                &PullOptions {
                    platform: Some("linux/s390x".parse().unwrap()),
                    ..flat()
                },
            )
            .await,
    );
    assert!(matches!(e, Error::NoMatchingPlatform { .. }), "{e:?}");
    assert_mentions(
        "no matching platform",
        &e,
        &["linux/s390x", "linux/amd64", "linux/arm64", "--platform"],
    );
    assert!(!root.exists());
}

/// Rewrites image `src` of `l` as `dst` with every digest sha512: config, layers, the
/// config's diff_ids and the manifest blob itself.
fn make_sha512_image(l: &OciLayout, src: &str, dst: &str) {
    let mut m = l.manifest(src);
    let mut cfg = l.config(src);
    let mut diff_ids = Vec::new();
    for layer in m["layers"].as_array_mut().unwrap() {
        let blob = l.read_blob(layer["digest"].as_str().unwrap());
        diff_ids.push(layout::digest(
            DigestAlgorithm::Sha512,
            &compress::decompress(&blob),
        ));
        layer["digest"] = json!(l.write_blob(DigestAlgorithm::Sha512, &blob));
    }
    cfg["rootfs"]["diff_ids"] = json!(diff_ids);
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cfg_digest = l.write_blob(DigestAlgorithm::Sha512, &cfg_bytes);
    m["config"] = layout::descriptor(layout::OCI_CONFIG, &cfg_digest, cfg_bytes.len());
    l.put_manifest(dst, &m, DigestAlgorithm::Sha512);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_sha512_image_pulls_like_umoci() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    images::build_busybox(&l, "bb");
    let expected = s.umoci(&l, "bb");
    make_sha512_image(&l, "bb", "bb512");
    let m = l.manifest("bb512");
    let pushed = push::push_layout_raw(&l, "bb512", &reg, "sha/bb", "v1");

    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let rootfs = s.path("rootfs");
    let rep = puller
        .pull(
            &reference(&format!("{}/sha/bb:v1", reg.addr())),
            &rootfs,
            &flat(),
        )
        .await
        .expect("pull the sha512 image");
    // The registry names manifests by sha256 whatever their content uses.
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert_eq!(
        rep.config_digest.to_string(),
        m["config"]["digest"].as_str().unwrap()
    );
    let lo = &rep.layers[0];
    assert_eq!(lo.digest.to_string(), layer_digests(&m)[0]);
    assert!(lo.digest.to_string().starts_with("sha512:"));
    assert!(lo.diff_id.to_string().starts_with("sha512:"));
    assert!(store.has_layer(&lo.diff_id));
    assert!(store
        .layer_path(&lo.diff_id)
        .starts_with(store.root().join("layers/sha512")));
    assert_same_tree("sha512", &expected, &rootfs, &CompareOptions::default());
}

// ---------------------------------------------------------------------------------------
// 2. whiteouts, opaque dirs, links, owners, special bits, xattrs, fifos
// ---------------------------------------------------------------------------------------

/// busybox + two umoci layers of tricky changes + a hand-made layer with a real
/// `.wh..wh..opq`, tagged `rich`.
fn build_rich_image(l: &OciLayout) {
    images::build_busybox(l, "bb");
    LayerBuilder::new(l, "bb", "rich-umoci")
        .layer(|r| {
            fsedit::mkdir(r, "opq", 0o755)?;
            fsedit::write(r, "opq/a", b"a", 0o644)?;
            fsedit::write(r, "opq/b", b"b", 0o644)?;
            fsedit::write(r, "data/keep", b"keep", 0o644)?;
            fsedit::write(r, "etc/gone", b"bye", 0o644)?;
            fsedit::mkdir(r, "dir2file/sub", 0o755)?;
            fsedit::write(r, "dir2file/sub/f", b"f", 0o644)?;
            fsedit::write(r, "file2dir", b"a file first", 0o644)?;
            fsedit::mkdir(r, "gone-dir/deep", 0o755)?;
            fsedit::write(r, "gone-dir/deep/x", b"x", 0o644)?;
            fsedit::write(r, "replaced-link", b"a file first", 0o644)?;
            fsedit::write(r, "link-target/sub/kept", b"must survive", 0o644)?;
            fsedit::write(r, "dir2link/sub/g", b"g", 0o644)
        })
        .layer(|r| {
            fsedit::remove(r, "etc/gone")?;
            fsedit::remove(r, "opq")?;
            fsedit::mkdir(r, "opq", 0o700)?;
            fsedit::write(r, "opq/c", b"c", 0o644)?;
            fsedit::remove(r, "dir2file")?;
            fsedit::write(r, "dir2file", b"now a file", 0o644)?;
            fsedit::remove(r, "file2dir")?;
            fsedit::mkdir(r, "file2dir", 0o750)?;
            fsedit::write(r, "file2dir/inner", b"inner", 0o600)?;
            fsedit::remove(r, "gone-dir")?;
            fsedit::remove(r, "replaced-link")?;
            // A directory replaced by a symlink to another directory: umoci writes
            // `dir2link` (the symlink) then `dir2link/.wh.sub`, which must not delete
            // `link-target/sub`.
            fsedit::remove(r, "dir2link")?;
            fsedit::symlink(r, "dir2link", "link-target")?;
            fsedit::symlink(r, "replaced-link", "etc/motd")?;
            fsedit::write_owned(r, "usr/bin/suid", b"#!/bin/sh\n", 0o4755, 0, 0)?;
            fsedit::write_owned(r, "usr/bin/sgid", b"#!/bin/sh\n", 0o2711, 0, 42)?;
            fsedit::write_owned(r, "srv/owned", b"owned by 1234", 0o2750, 1234, 5678)?;
            fsedit::hard_link(r, "srv/owned", "srv/owned-hl")?;
            fsedit::mkdir(r, "srv/tmp", 0o1777)?;
            fsedit::chown(&r.join("srv"), 1000, 1001)?;
            fsedit::set_xattr(&r.join("etc/motd"), "user.sealpod", b"kept")?;
            fsedit::set_xattr(&r.join("data"), "user.on-a-dir", b"dir value")?;
            fsedit::mkfifo(r, "run-fifo", 0o640)?;
            fsedit::symlink(r, "abs-link", "/etc/motd")?;
            fsedit::symlink(r, "dangling", "does/not/exist")?;
            fsedit::symlink(r, "owned-link", "srv/owned")?;
            fsedit::chown(&r.join("owned-link"), 77, 88)
        });
    // Every path in this layer has its parents in the layer too (or at the root):
    // implicit parents are a separate test.
    let tar = TarBuilder::new()
        .dir("opq", 0o755)
        .opaque("opq")
        .file("opq/d", 0o644, b"d")
        .whiteout("abs-link")
        .dir("run", 0o755)
        .file_with_xattrs(
            "run/xattrs",
            0o640,
            b"two xattrs",
            &[("user.one", b"1"), ("user.two", b"second value")],
        )
        .fifo("run/fifo2", 0o620)
        .file("run/hl-src", 0o644, b"linked in a tar layer")
        .hardlink("run/hl-dst", "run/hl-src")
        .finish();
    images::append_tar_layer(l, "rich-umoci", "rich", &tar, Compression::Gzip);
}

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_opaque_links_owners_xattrs_fifos_flat_and_overlay_match_umoci() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    build_rich_image(&l);
    let expected = s.umoci(&l, "rich");
    // Sanity of the reference itself: the test is only as good as the image.
    assert!(!expected.entries.contains_key(Path::new("opq/a")));
    assert!(!expected.entries.contains_key(Path::new("opq/c")));
    assert!(!expected.entries.contains_key(Path::new("abs-link")));
    assert!(!expected.entries.contains_key(Path::new("etc/gone")));
    assert!(!expected.entries.contains_key(Path::new("gone-dir")));
    assert_eq!(entry(&expected, "dir2file").kind, Kind::File);
    assert_eq!(entry(&expected, "file2dir").kind, Kind::Dir);
    assert_eq!(entry(&expected, "replaced-link").kind, Kind::Symlink);
    assert_eq!(entry(&expected, "dir2link").kind, Kind::Symlink);
    // umoci 0.4.7 writes `dir2link/.wh.sub` after the new symlink and its own unpack
    // follows the link and deletes `link-target/sub`, which the image never deleted
    // (the rootfs it was built from still has it). The whiteout names the lower-layer
    // path `dir2link/sub`, already hidden by the symlink: image-rs keeps
    // `link-target/sub`. That subtree is compared by hand below.
    assert!(!expected.entries.contains_key(Path::new("link-target/sub")));
    let opts = CompareOptions {
        ignore_paths: vec![PathBuf::from("link-target")],
        ..CompareOptions::default()
    };
    let check_link_target = |what: &str, root: &Path| {
        assert_eq!(
            fs::read(root.join("link-target/sub/kept")).unwrap_or_else(|e| panic!(
                "{what}: link-target/sub/kept must survive the whiteout below the symlink: {e}"
            )),
            b"must survive"
        );
        assert_eq!(dir_names(&root.join("link-target")), ["sub"], "{what}");
    };
    assert_eq!(entry(&expected, "usr/bin/suid").mode, 0o4755);
    assert_eq!(entry(&expected, "usr/bin/sgid").mode, 0o2711);
    assert_eq!(entry(&expected, "srv/tmp").mode, 0o1777);
    assert_eq!(entry(&expected, "run-fifo").kind, Kind::Fifo);
    assert_eq!(entry(&expected, "run/fifo2").kind, Kind::Fifo);
    assert_eq!(
        (
            entry(&expected, "owned-link").uid,
            entry(&expected, "owned-link").gid
        ),
        (77, 88)
    );
    assert_eq!(
        entry(&expected, "run/xattrs")
            .xattrs
            .get("user.two")
            .map(Vec::as_slice),
        Some(&b"second value"[..])
    );
    assert!(expected
        .hardlinks
        .iter()
        .any(|g| g.contains(Path::new("run/hl-dst"))));

    let pushed = push::push(&l, "rich", &reg, "rich/img:v1", PushOptions::default());
    let r = reference(&format!("{}/rich/img:v1", reg.addr()));
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());

    let root_flat = s.path("rootfs-flat");
    let rep = puller
        .pull(&r, &root_flat, &flat())
        .await
        .expect("flat pull");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert_eq!(rep.layers.len(), 4);
    assert_same_tree("flat", &expected, &root_flat, &opts);
    check_link_target("flat", &root_flat);

    let root_ovl = s.path("rootfs-overlay");
    let _guard = MountGuard::new(&puller, &root_ovl);
    let rep = puller
        .pull(&r, &root_ovl, &overlay())
        .await
        .expect("overlay pull");
    assert!(rep.layers.iter().all(|l| l.cached), "{:?}", rep.layers);
    assert!(is_mount_point(&root_ovl));
    assert_same_tree("overlay", &expected, &root_ovl, &opts);
    check_link_target("overlay", &root_ovl);
}

/// Pulls `r` flat and as an overlay mount into a fresh store of `s` and
/// compares both with `expected`, reporting every difference under `why`.
async fn assert_flat_and_overlay_match(
    s: &Scratch,
    r: &image_rs::Reference,
    expected: &Tree,
    why: &str,
) {
    let puller = Puller::new(anonymous(), s.store("store"));
    let root_flat = s.path("rootfs-flat");
    puller
        .pull(r, &root_flat, &flat())
        .await
        .expect("flat pull");
    let root_ovl = s.path("rootfs-overlay");
    let _guard = MountGuard::new(&puller, &root_ovl);
    puller
        .pull(r, &root_ovl, &overlay())
        .await
        .expect("overlay pull");
    let mut failures = Vec::new();
    for (what, root) in [("flat", &root_flat), ("overlay", &root_ovl)] {
        if let Err(d) = fstree::compare(expected, &fstree::snapshot(root)) {
            failures.push(format!("{what}: {d}"));
        }
    }
    assert!(failures.is_empty(), "{why}:\n{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn implicit_parent_dirs_keep_the_lower_layers_metadata() {
    // Layer 1 makes `data` (0750, 1000:1001, a user xattr); layer 2 adds `data/b`
    // without a `data/` entry, as tar layers from tools other than docker and umoci
    // (and hand-made ones) often do. The merged rootfs keeps data's metadata from
    // layer 1, as umoci's unpack (and containerd, which applies onto the mounted
    // parent) do.
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let mut base = TarBuilder::new();
    base.pax(&[("SCHILY.xattr.user.kept", b"from layer 1")]);
    let mut h = tar_builder::header(tar::EntryType::Directory, "data/", 0o750, 0);
    h.set_uid(1000);
    h.set_gid(1001);
    base.raw(h, b"").file("data/a", 0o644, b"a\n");
    let tars = vec![
        base.finish(),
        TarBuilder::new().file("data/b", 0o644, b"b\n").finish(),
    ];
    let image = RawImage::from_tars(&tars, Compression::Gzip);
    raw::push_raw(&reg, "implicit/app", "v1", &image);
    let l = OciLayout::init_plain(s.path("layout"));
    raw::write_raw_layout(&l, "implicit", &image);
    let expected = s.umoci(&l, "implicit");
    let data = entry(&expected, "data");
    assert_eq!((data.mode, data.uid, data.gid), (0o750, 1000, 1001));
    assert_eq!(
        data.xattrs.get("user.kept").map(Vec::as_slice),
        Some(&b"from layer 1"[..])
    );

    let r = reference(&format!("{}/implicit/app:v1", reg.addr()));
    assert_flat_and_overlay_match(&s, &r, &expected, "a directory implied by a later layer must not override its metadata from the layer that made it").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn directory_metadata_changed_by_a_later_layer() {
    // Layer 1 makes `owned` (0755, 1000:1001, a user xattr); layer 2 has an explicit
    // `owned/` entry back to root:root 0700 without the xattr, as `RUN chown root:root
    // /owned && chmod 700 /owned && setfattr -x user.x /owned` would produce. Every
    // attribute of the later entry wins (umoci's unpack clears xattrs first, overlay
    // shows the upper directory).
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let mut l1 = TarBuilder::new();
    l1.pax(&[("SCHILY.xattr.user.x", b"from layer 1")]);
    let mut h = tar_builder::header(tar::EntryType::Directory, "owned/", 0o755, 0);
    h.set_uid(1000);
    h.set_gid(1001);
    l1.raw(h, b"").file("owned/f", 0o644, b"f\n");
    let l2 = TarBuilder::new().dir("owned", 0o700).finish();
    let image = RawImage::from_tars(&[l1.finish(), l2], Compression::Gzip);
    raw::push_raw(&reg, "chown/app", "v1", &image);
    let l = OciLayout::init_plain(s.path("layout"));
    raw::write_raw_layout(&l, "chown", &image);
    let expected = s.umoci(&l, "chown");
    let owned = entry(&expected, "owned");
    assert_eq!((owned.mode, owned.uid, owned.gid), (0o700, 0, 0));
    assert!(owned.xattrs.is_empty(), "{:?}", owned.xattrs);

    let r = reference(&format!("{}/chown/app:v1", reg.addr()));
    assert_flat_and_overlay_match(
        &s,
        &r,
        &expected,
        "a later layer's directory entry must set all of its metadata",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// 3. registry auth
// ---------------------------------------------------------------------------------------

/// Writes a docker `config.json` with one `auths` entry for `key` and returns its path.
fn write_auth_file(dir: &Path, key: &str, user: &str, password: &str) -> PathBuf {
    use base64::Engine as _;
    let p = dir.join("config.json");
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    fs::write(
        &p,
        serde_json::to_vec(&json!({ "auths": { key: { "auth": b64 } } })).unwrap(),
    )
    .unwrap();
    p
}

/// A flat pull of `r` into `root` with `creds`, through a fresh client.
async fn pull_flat_as(
    creds: Credentials,
    store: &Store,
    r: &image_rs::Reference,
    root: PathBuf,
) -> Result<image_rs::PullReport, image_rs::Error> {
    let puller = Puller::new(
        client(RegistryConfig {
            credentials: creds,
            ..RegistryConfig::default()
        }),
        store.clone(),
    );
    puller.pull(r, &root, &flat()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_with_htpasswd_registry() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret".into())),
        ..RegistryOptions::default()
    });
    let image = RawImage::from_tars(&small_tars("auth"), Compression::Gzip);
    let pushed = raw::push_raw(&reg, "auth/app", "v1", &image);
    let r = reference(&format!("{}/auth/app:v1", reg.addr()));
    let store = s.store("store");
    let pull = |creds: Credentials, root: &str| pull_flat_as(creds, &store, &r, s.path(root));

    let rep = pull(login("alice", "s3cret"), "rootfs-ok")
        .await
        .expect("pull with the right password");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert_eq!(fs::read(s.path("rootfs-ok/app/id")).unwrap(), b"auth");

    let e = expect_err(
        "wrong password",
        pull(login("alice", "wrong"), "rootfs-wrong").await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_mentions(
        "wrong password",
        &e,
        &[&reg.addr(), "refused the credentials", "auth/app"],
    );
    assert!(!s.path("rootfs-wrong").exists());

    let e = expect_err(
        "no credentials",
        pull(Credentials::anonymous(), "rootfs-anon").await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_mentions(
        "no credentials",
        &e,
        &[&reg.addr(), "requires a login", "--username"],
    );

    // docker config.json: the right entry works, a wrong one is refused.
    let dir = s.path("docker-good");
    fs::create_dir(&dir).unwrap();
    let f = write_auth_file(&dir, &reg.addr(), "alice", "s3cret");
    let rep = pull(Credentials::from_auth_file(&f).unwrap(), "rootfs-authfile")
        .await
        .expect("pull with credentials from an auth file");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    let dir = s.path("docker-bad");
    fs::create_dir(&dir).unwrap();
    let f = write_auth_file(&dir, &format!("http://{}/", reg.addr()), "alice", "nope");
    let e = expect_err(
        "auth file with a wrong password",
        pull(
            Credentials::from_auth_file(&f).unwrap(),
            "rootfs-authfile-bad",
        )
        .await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_over_tls_needs_the_ca() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions {
        tls: true,
        htpasswd: Some(("carol".into(), "pw".into())),
    });
    // The fixture HTTP client has no TLS: write the image into a layout, push with skopeo.
    let image = RawImage::from_tars(&small_tars("tls"), Compression::Gzip);
    let l = OciLayout::init_plain(s.path("layout"));
    raw::write_raw_layout(&l, "tls", &image);
    let pushed = push::push(&l, "tls", &reg, "tls/app:v1", PushOptions::default());
    let r = reference(&format!("{}/tls/app:v1", reg.addr()));
    let ca = reg.ca_pem_path().unwrap();
    let store = s.store("store");
    let pull = |ca_files: Vec<PathBuf>, creds: Credentials, root: &str| {
        let puller = Puller::new(
            client(RegistryConfig {
                ca_files,
                credentials: creds,
                ..RegistryConfig::default()
            }),
            store.clone(),
        );
        let root = s.path(root);
        let r = r.clone();
        async move { puller.pull(&r, &root, &flat()).await }
    };

    let rep = pull(vec![ca.clone()], login("carol", "pw"), "rootfs-ok")
        .await
        .expect("pull over TLS with the CA and the password");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert_eq!(fs::read(s.path("rootfs-ok/app/id")).unwrap(), b"tls");

    let e = expect_err(
        "TLS with a wrong password",
        pull(vec![ca.clone()], login("carol", "bad"), "rootfs-bad").await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");

    let e = expect_err(
        "TLS without credentials",
        pull(vec![ca], Credentials::anonymous(), "rootfs-anon").await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");

    let e = expect_err(
        "TLS without the CA",
        pull(Vec::new(), login("carol", "pw"), "rootfs-noca").await,
    );
    let msg = e.to_string();
    assert!(
        msg.contains("certificate") && msg.contains("--ca-file"),
        "an untrusted server certificate must be named as such, with the --ca-file hint: {msg}\n({e:?})"
    );
    assert!(!s.path("rootfs-noca").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn token_auth_through_proxy() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let image = RawImage::from_tars(&small_tars("token"), Compression::Gzip);
    let pushed = raw::push_raw(&reg, "team/app", "v1", &image);
    let proxy = Proxy::start_with(
        &reg.addr(),
        ProxyOptions {
            token_auth: Some(TokenAuth {
                credentials: Some(("dave".into(), "t0ken-pw".into())),
                ..TokenAuth::default()
            }),
        },
    );
    let r = reference(&format!("{}/team/app:v1", proxy.addr()));
    let store = s.store("store");
    let pull = |creds: Credentials, root: &str| pull_flat_as(creds, &store, &r, s.path(root));

    let rep = pull(login("dave", "t0ken-pw"), "rootfs-ok")
        .await
        .expect("pull through token auth");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert_eq!(fs::read(s.path("rootfs-ok/app/id")).unwrap(), b"token");
    let reqs = proxy.requests();
    let token_reqs: Vec<&RequestRecord> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/token"))
        .collect();
    assert!(!token_reqs.is_empty(), "no token request: {reqs:#?}");
    for t in &token_reqs {
        assert_eq!(t.scopes, ["repository:team/app:pull"], "{reqs:#?}");
        assert_eq!(t.auth_scheme.as_deref(), Some("Basic"), "{reqs:#?}");
        assert_eq!(t.status, Some(200), "{reqs:#?}");
    }
    let blobs = blob_gets(&reqs);
    assert_eq!(blobs.len(), 3, "config + 2 layers: {reqs:#?}");
    for b in blobs {
        // (The proxy records a status once it has forwarded the whole body, which may
        // be after the client moved on: not asserted.)
        assert_eq!(b.auth_scheme.as_deref(), Some("Bearer"), "{b:?}");
    }

    let e = expect_err(
        "token with a wrong password",
        pull(login("dave", "wrong"), "rootfs-wrong").await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_mentions(
        "token with a wrong password",
        &e,
        &["token", "401", "repository:team/app:pull"],
    );

    let e = expect_err(
        "token without credentials",
        pull(Credentials::anonymous(), "rootfs-anon").await,
    );
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    assert_mentions("token without credentials", &e, &["401", "credentials"]);
}

// ---------------------------------------------------------------------------------------
// 4. hostile layers
// ---------------------------------------------------------------------------------------

/// sha256 of the gunzipped `blob`, streamed (for diff_ids of gzip bombs).
fn gunzip_sha256(blob: &[u8]) -> String {
    let mut d = flate2::read::GzDecoder::new(blob);
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut d, &mut h).expect("gunzip");
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn image_from_gzip_blob(blob: Vec<u8>) -> RawImage {
    let diff_id = gunzip_sha256(&blob);
    RawImage {
        manifest_media_type: layout::OCI_MANIFEST.into(),
        config: RawBlob::new(layout::OCI_CONFIG, raw::config_json(&[diff_id])),
        layers: vec![RawBlob::new(layout::OCI_LAYER_GZIP, blob)],
        annotations: None,
    }
}

/// Every path under `root` (not following symlinks) whose file name contains `needle`.
fn find_named(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

struct HostileCase {
    name: &'static str,
    image: RawImage,
    limits: Limits,
    is_expected: fn(&Error) -> bool,
    mentions: Vec<String>,
}

fn is_hostile(e: &Error) -> bool {
    matches!(
        e,
        Error::Unpack {
            source: UnpackError::Hostile { .. },
            ..
        }
    )
}

fn is_limit(e: &Error) -> bool {
    matches!(
        e,
        Error::Unpack {
            source: UnpackError::Limit { .. },
            ..
        }
    )
}

fn is_confined_fs_error(e: &Error) -> bool {
    matches!(
        e,
        Error::Unpack {
            source: UnpackError::Fs { .. },
            ..
        }
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_layers_are_refused_and_leave_nothing_behind() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    // A sentinel dir on the host side that the attacks aim at.
    let host = s.path("host");
    fs::create_dir(&host).unwrap();
    let victim = host.join("victim");
    fs::write(&victim, b"original\n").unwrap();
    let host_s = host.to_str().unwrap().to_string();
    let victim_s = victim.to_str().unwrap().to_string();
    let abs_target = format!("{host_s}/abs-file");

    let tar_image = |tar: Vec<u8>| RawImage::from_tars(&[tar], Compression::Gzip);
    let small = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        l
    };
    let cases = vec![
        HostileCase {
            name: "dotdot",
            image: tar_image(tar_builder::dotdot_escape("sealpod-escape-dotdot")),
            limits: Limits::default(),
            is_expected: is_hostile,
            mentions: vec![
                "hostile entry".into(),
                "`..`".into(),
                "../sealpod-escape-dotdot".into(),
            ],
        },
        HostileCase {
            name: "absolute",
            image: tar_image(tar_builder::absolute_path(&abs_target)),
            limits: Limits::default(),
            is_expected: is_hostile,
            mentions: vec!["absolute path".into(), abs_target.clone()],
        },
        HostileCase {
            name: "symlink-escape",
            image: tar_image(tar_builder::symlink_escape(&host_s)),
            limits: Limits::default(),
            is_expected: is_confined_fs_error,
            mentions: vec!["evil/pwned".into(), "symlink".into()],
        },
        HostileCase {
            name: "hardlink-dotdot",
            image: tar_image(tar_builder::hardlink_dotdot()),
            limits: Limits::default(),
            is_expected: is_hostile,
            mentions: vec!["`..`".into(), "../../etc/passwd".into()],
        },
        HostileCase {
            name: "hardlink-absolute",
            image: tar_image(tar_builder::hardlink_escape(&victim_s)),
            limits: Limits::default(),
            is_expected: is_hostile,
            mentions: vec!["absolute path".into(), victim_s.clone()],
        },
        HostileCase {
            name: "hardlink-etc-passwd",
            image: tar_image(tar_builder::hardlink_absolute()),
            limits: Limits::default(),
            is_expected: is_hostile,
            mentions: vec!["absolute path".into(), "/etc/passwd".into()],
        },
        HostileCase {
            name: "gzip-bomb",
            image: image_from_gzip_blob(tar_builder::gzip_bomb("zeros", 32 << 20)),
            limits: small(|l| l.max_layer_bytes = 1 << 20),
            is_expected: is_limit,
            mentions: vec!["unpacked layer size".into(), (1u64 << 20).to_string()],
        },
        HostileCase {
            name: "sparse-1tib",
            image: tar_image(tar_builder::sparse_huge(1 << 40)),
            limits: Limits::default(),
            is_expected: is_limit,
            mentions: vec![
                "unpacked layer size".into(),
                Limits::default().max_layer_bytes.to_string(),
            ],
        },
        HostileCase {
            name: "too-many-entries",
            image: tar_image(tar_builder::many_entries(300)),
            limits: small(|l| l.max_entries = 100),
            is_expected: is_limit,
            mentions: vec!["entry count".into(), "100".into()],
        },
    ];

    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    for case in &cases {
        let name = case.name;
        let repo = format!("hostile/{name}");
        raw::push_raw(&reg, &repo, "v1", &case.image);
        let parent = s.path(&format!("roots/{name}"));
        fs::create_dir_all(&parent).unwrap();
        let rootfs = parent.join("rootfs");
        let before = store_state(&store);
        let opts = PullOptions {
            limits: case.limits,
            ..flat()
        };
        let e = expect_err(
            name,
            puller
                .pull(
                    &reference(&format!("{}/{repo}:v1", reg.addr())),
                    &rootfs,
                    &opts,
                )
                .await,
        );
        assert!(
            (case.is_expected)(&e),
            "{name}: unexpected error kind: {e:?}"
        );
        let mut mentions = case.mentions.clone();
        mentions.push(case.image.layers[0].digest.clone());
        let refs: Vec<&str> = mentions.iter().map(String::as_str).collect();
        assert_mentions(name, &e, &refs);

        assert!(!rootfs.exists(), "{name}: rootfs left behind");
        assert_eq!(
            dir_names(&parent),
            Vec::<String>::new(),
            "{name}: staging debris next to the rootfs"
        );
        for d in diff_ids(&case.image) {
            assert!(
                !store.has_layer(&digest(&d)),
                "{name}: refused layer {d} is in the store"
            );
        }
        assert_store_unchanged(name, &before, &store);
        assert!(store.images().unwrap().is_empty(), "{name}: image recorded");
    }

    // The same refusal with an overlay target: nothing is mounted or created.
    let rootfs = s.path("roots/overlay/rootfs");
    let e = expect_err(
        "dotdot (overlay)",
        puller
            .pull(
                &reference(&format!("{}/hostile/dotdot:v1", reg.addr())),
                &rootfs,
                &overlay(),
            )
            .await,
    );
    assert!(is_hostile(&e), "{e:?}");
    assert!(
        !rootfs.exists(),
        "overlay target created for a refused image"
    );
    assert_eq!(
        dir_names(&store.root().join("mounts")),
        Vec::<String>::new()
    );

    // Nothing reached the host side.
    assert_eq!(
        dir_names(&host),
        ["victim"],
        "something was written into {host_s}"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"original\n");
    assert!(!Path::new(&abs_target).exists());
    assert_eq!(
        find_named(s.dir.path(), "sealpod-escape"),
        Vec::<PathBuf>::new()
    );
    assert_eq!(store_layers(&store), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn relative_symlink_escape_stays_inside_the_root() {
    // `evil -> ../../../../../../../..` then `evil/NAME`: resolved inside the root the
    // link points at the root itself, so NAME lands at ROOT/NAME (as with any runtime
    // that confines symlinks), never at /NAME on the host.
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let name = format!("sealpod-symdotdot-{}", std::process::id());
    let image = RawImage::from_tars(
        &[tar_builder::symlink_dotdot_escape(&name)],
        Compression::Gzip,
    );
    raw::push_raw(&reg, "hostile/symdotdot", "v1", &image);
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let rootfs = s.path("rootfs");
    let result = puller
        .pull(
            &reference(&format!("{}/hostile/symdotdot:v1", reg.addr())),
            &rootfs,
            &flat(),
        )
        .await;
    let host_path = Path::new("/").join(&name);
    assert!(
        !host_path.exists(),
        "the layer wrote {} on the host",
        host_path.display()
    );
    let rep = result.expect("a confined relative symlink is harmless");
    assert_eq!(rep.layers.len(), 1);
    assert_eq!(
        fs::read(rootfs.join(&name)).unwrap(),
        b"written through a .. symlink\n"
    );
    assert_eq!(
        fs::read_link(rootfs.join("evil")).unwrap(),
        Path::new("../../../../../../../..")
    );
}

// ---------------------------------------------------------------------------------------
// 5. tampering, wrong diff_ids, refused media types, digest pinning
// ---------------------------------------------------------------------------------------

/// A byte of `bytes` inside `marker` flipped (same length, other digest).
fn flip_in(bytes: &[u8], marker: &[u8]) -> Vec<u8> {
    let pos = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in bytes");
    let mut out = bytes.to_vec();
    out[pos] ^= 0x20;
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_blobs_and_wrong_diff_ids_are_refused_and_leave_the_store_unchanged() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());

    // A good image first, so that "unchanged" covers a populated store.
    let good = RawImage::from_tars(&small_tars("good"), Compression::Gzip);
    raw::push_raw(&reg, "tamper/good", "v1", &good);
    puller
        .pull(
            &reference(&format!("{}/tamper/good:v1", reg.addr())),
            &s.path("rootfs-good"),
            &flat(),
        )
        .await
        .expect("pull the good image");

    // Planted blobs are global in the registry's storage: every case gets its own
    // content, so no two cases share a layer or config digest.
    let payload = |case: &str| {
        TarBuilder::new()
            .file(
                "payload",
                0o644,
                format!("payload that the registry will alter ({case})\n").as_bytes(),
            )
            .finish()
    };
    let mismatch: fn(&Error) -> bool = |e| matches!(e, Error::DigestMismatch { .. });
    // (repo, image, words the message must contain)
    let mut cases: Vec<(&str, RawImage, Vec<String>)> = Vec::new();

    // Uncompressed layer served with one byte changed: it unpacks fine, only the digest
    // can tell.
    // (Single-layer images: with several layers, verified sibling layers may be
    // committed while the tampered one is refused, see the report.)
    let mut img = RawImage::from_tars(&[payload("plain")], Compression::None);
    img.layers[0].bytes = flip_in(&img.layers[0].bytes, b"payload that");
    let words = vec!["digest mismatch".to_string(), img.layers[0].digest.clone()];
    cases.push(("tamper/plain-layer", img, words));

    // gzip layer with a corrupted deflate stream: decompression fails first, but the
    // digest mismatch is the precise explanation.
    let mut img = RawImage::from_tars(&[payload("gzip")], Compression::Gzip);
    let n = img.layers[0].bytes.len();
    img.layers[0].bytes[n / 2] ^= 0xff;
    let words = vec!["digest mismatch".to_string(), img.layers[0].digest.clone()];
    cases.push(("tamper/gzip-layer", img, words));

    // The config served with one byte changed.
    let mut img = RawImage::from_tars(&[payload("config")], Compression::Gzip);
    img.config.bytes = flip_in(&img.config.bytes, b"amd64");
    let words = vec!["digest mismatch".to_string(), img.config.digest.clone()];
    cases.push(("tamper/config", img, words));

    // A truthful layer whose config claims another diff_id.
    let tar = payload("diff-id");
    let mut img = RawImage::from_tars(std::slice::from_ref(&tar), Compression::Gzip);
    let wrong = layout::sha256_digest(b"not the layer");
    img.config = RawBlob::new(
        layout::OCI_CONFIG,
        raw::config_json(std::slice::from_ref(&wrong)),
    );
    let words = vec!["diff_id".to_string(), wrong, layout::sha256_digest(&tar)];
    cases.push(("tamper/diff-id", img, words));

    for (repo, img, words) in &cases {
        raw::push_raw(&reg, repo, "v1", img);
        let before = store_state(&store);
        let rootfs = s.path(&format!("rootfs-{}", repo.replace('/', "-")));
        let e = expect_err(
            repo,
            puller
                .pull(
                    &reference(&format!("{}/{repo}:v1", reg.addr())),
                    &rootfs,
                    &flat(),
                )
                .await,
        );
        assert!(mismatch(&e), "{repo}: unexpected error kind: {e:?}");
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        assert_mentions(repo, &e, &refs);
        assert!(!rootfs.exists(), "{repo}: rootfs left behind");
        assert_store_unchanged(repo, &before, &store);
        for d in diff_ids(img) {
            assert!(!store.has_layer(&digest(&d)), "{repo}: layer {d} stored");
        }
        assert_eq!(store.images().unwrap().len(), 1, "{repo}: image recorded");
    }
}

/// Makes `registry` serve `bytes` as manifest `repo:tag` by writing distribution's
/// storage directly (blob, revision link, tag links), bypassing the validation of a
/// manifest PUT. The registry runs without a cache, so it reads these on the next GET.
fn plant_manifest(registry: &Registry, repo: &str, tag: &str, bytes: &[u8]) -> String {
    let d = layout::sha256_digest(bytes);
    registry.plant_blob(repo, &d, bytes);
    let hex = d.trim_start_matches("sha256:");
    let manifests = registry
        .storage_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests");
    for dir in [
        manifests.join("revisions/sha256").join(hex),
        manifests.join("tags").join(tag).join("current"),
        manifests
            .join("tags")
            .join(tag)
            .join("index/sha256")
            .join(hex),
    ] {
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("link"), &d).unwrap();
    }
    d
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_and_foreign_layer_media_types_are_refused_before_any_blob_fetch() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let proxy = Proxy::start(&reg.addr());
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let tar = TarBuilder::new().file("f", 0o644, b"f\n").finish();

    // Unknown media type (the registry accepts any).
    let mut unknown = RawImage::from_tars(std::slice::from_ref(&tar), Compression::Gzip);
    unknown.layers[0].media_type = "application/vnd.example.layer.v1.tar+lz4".into();
    raw::push_raw(&reg, "media/unknown", "v1", &unknown);

    // Foreign / non-distributable layers: OCI non-distributable in an OCI manifest,
    // Docker foreign in a Docker one, each with `urls` and no blob in the registry.
    // distribution 2.8.2 refuses such manifest PUTs unless its config allow-lists the
    // URLs ("invalid URL on layer"), so they are planted in its storage instead.
    let foreign = |manifest_type: &str, config_type: &str, layer_type: &str, repo: &str| {
        let mut img = RawImage::from_tars(std::slice::from_ref(&tar), Compression::Gzip);
        img.manifest_media_type = manifest_type.into();
        img.config.media_type = config_type.into();
        img.layers[0].media_type = layer_type.into();
        raw::push_raw_blob(&reg, repo, &img.config);
        let mut m = img.manifest();
        m["layers"][0]["urls"] = json!(["https://example.invalid/layer.tar.gz"]);
        plant_manifest(&reg, repo, "v1", &serde_json::to_vec(&m).unwrap());
        let served = raw::get_manifest(&reg.addr(), repo, "v1", None);
        assert_eq!(
            served.status,
            200,
            "{repo}: planted manifest not served: {}",
            served.text()
        );
        assert_eq!(served.header("Content-Type"), Some(manifest_type), "{repo}");
    };
    foreign(
        layout::OCI_MANIFEST,
        layout::OCI_CONFIG,
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "media/oci-foreign",
    );
    foreign(
        layout::DOCKER_MANIFEST,
        layout::DOCKER_CONFIG,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "media/docker-foreign",
    );

    for (repo, words) in [
        (
            "media/unknown",
            vec![
                "unknown layer media type",
                "application/vnd.example.layer.v1.tar+lz4",
            ],
        ),
        (
            "media/oci-foreign",
            vec!["non-distributable", "nondistributable"],
        ),
        ("media/docker-foreign", vec!["non-distributable", "foreign"]),
    ] {
        proxy.clear();
        let rootfs = s.path(&format!("rootfs-{}", repo.replace('/', "-")));
        let e = expect_err(
            repo,
            puller
                .pull(
                    &reference(&format!("{}/{repo}:v1", proxy.addr())),
                    &rootfs,
                    &flat(),
                )
                .await,
        );
        assert!(matches!(e, Error::Manifest { .. }), "{repo}: {e:?}");
        assert_mentions(repo, &e, &words);
        let reqs = proxy.requests();
        assert!(
            reqs.iter().any(|r| r.path.contains("/manifests/v1")),
            "{repo}: the manifest was not even fetched: {reqs:#?}"
        );
        assert_eq!(
            blob_gets(&reqs),
            Vec::<&RequestRecord>::new(),
            "{repo}: a blob was fetched before the refusal"
        );
        assert!(!rootfs.exists());
    }
    assert!(store.images().unwrap().is_empty());
    assert_eq!(store_layers(&store), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn digest_pinning_accepts_the_right_digest_and_refuses_others() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let image = RawImage::from_tars(&small_tars("pinned"), Compression::Gzip);
    let pushed = raw::push_raw(&reg, "pin/app", "v1", &image);
    let base = format!("{}/pin/app", reg.addr());

    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let rep = puller
        .pull(
            &reference(&format!("{base}@{pushed}")),
            &s.path("r1"),
            &flat(),
        )
        .await
        .expect("pull by the right digest");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    let rep = puller
        .pull(
            &reference(&format!("{base}:v1@{pushed}")),
            &s.path("r2"),
            &flat(),
        )
        .await
        .expect("pull by tag and the right digest");
    assert_eq!(rep.manifest_digest.to_string(), pushed);

    let wrong = layout::sha256_digest(b"some other manifest");
    let e = expect_err(
        "unknown digest",
        puller
            .pull(
                &reference(&format!("{base}@{wrong}")),
                &s.path("r3"),
                &flat(),
            )
            .await,
    );
    assert!(matches!(e, Error::Registry { status: 404, .. }), "{e:?}");
    assert_mentions("unknown digest", &e, &[&wrong, "404"]);
    let e = expect_err(
        "tag with a digest the tag does not have",
        puller
            .pull(
                &reference(&format!("{base}:v1@{wrong}")),
                &s.path("r4"),
                &flat(),
            )
            .await,
    );
    assert!(matches!(e, Error::Registry { status: 404, .. }), "{e:?}");

    // The registry serves other bytes for the pinned digest: refused. A fresh store, so
    // the verified manifest stored by the pulls above is not used.
    let mut m = image.manifest();
    m["annotations"] = json!({ "evil": "swapped" });
    reg.plant_blob("pin/app", &pushed, &serde_json::to_vec(&m).unwrap());
    let store2 = s.store("store2");
    let puller2 = Puller::new(anonymous(), store2.clone());
    let e = expect_err(
        "swapped manifest",
        puller2
            .pull(
                &reference(&format!("{base}@{pushed}")),
                &s.path("r5"),
                &flat(),
            )
            .await,
    );
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
    assert_mentions("swapped manifest", &e, &["manifest", &pushed]);
    assert!(store2.images().unwrap().is_empty());
    assert_eq!(store_layers(&store2), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------
// 6. fault injection: resume with Range
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_download_resumes_with_range_requests() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    images::build_busybox(&l, "bb");
    let expected = s.umoci(&l, "bb");
    push::push(&l, "bb", &reg, "flaky/bb:v1", PushOptions::default());
    let m = l.manifest("bb");
    let layer = layer_digests(&m)[0].clone();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    const CUT: u64 = 200_000;
    assert!(
        size > 3 * CUT,
        "busybox layer too small ({size} bytes) for this test"
    );

    let proxy = Proxy::start(&reg.addr());
    proxy.drop_after(&format!("/blobs/{layer}"), CUT, 2);
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let rootfs = s.path("rootfs");
    let rep = puller
        .pull(
            &reference(&format!("{}/flaky/bb:v1", proxy.addr())),
            &rootfs,
            &flat(),
        )
        .await
        .expect("the pull must survive two cut connections");
    assert_same_tree("resumed", &expected, &rootfs, &CompareOptions::default());

    let reqs = proxy.requests();
    let gets: Vec<&RequestRecord> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:#?}");
    assert_eq!(gets.iter().filter(|r| r.dropped).count(), 2, "{gets:#?}");
    let ranges: Vec<Option<&str>> = gets.iter().map(|r| r.range.as_deref()).collect();
    let (r1, r2) = (format!("bytes={CUT}-"), format!("bytes={}-", 2 * CUT));
    assert_eq!(
        ranges,
        [None, Some(r1.as_str()), Some(r2.as_str())],
        "each resume must start at the exact byte where the cut happened"
    );
    // (The last status may not be recorded yet: the proxy logs it after the body.)
    assert!(
        gets[1..]
            .iter()
            .all(|r| matches!(r.status, None | Some(206))),
        "{gets:#?}"
    );

    let lo = &rep.layers[0];
    assert_eq!((lo.requests, lo.range_requests), (3, 2), "{lo:?}");
    assert!(lo.range_requests >= 1);
    assert_eq!(lo.fetched_bytes, size, "no byte fetched twice");
}

// ---------------------------------------------------------------------------------------
// 7. concurrent pulls share downloads; 8. re-pull; 9. gc
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_download_each_shared_layer_once() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = s.layout();
    images::build_busybox(&l, "base");
    LayerBuilder::new(&l, "base", "a")
        .layer(|r| fsedit::write(r, "etc/common", b"same in both\n", 0o644))
        .layer(|r| fsedit::write(r, "a.txt", b"image a\n", 0o644));
    LayerBuilder::new(&l, "base", "b")
        .layer(|r| fsedit::write(r, "etc/common", b"same in both\n", 0o644))
        .layer(|r| fsedit::write(r, "b.txt", b"image b\n", 0o600));
    let (ma, mb) = (l.manifest("a"), l.manifest("b"));
    let (la, lb) = (layer_digests(&ma), layer_digests(&mb));
    assert_eq!(la[0], lb[0], "base layer should be shared");
    push::push(&l, "a", &reg, "share/a:v1", PushOptions::default());
    push::push(&l, "b", &reg, "share/b:v1", PushOptions::default());
    let proxy = Proxy::start(&reg.addr());

    // Two pullers (two clients, two Store handles) on one store dir, like two processes.
    let store_dir = s.path("store");
    let p1 = Puller::new(anonymous(), Store::open(&store_dir).unwrap());
    let p2 = Puller::new(anonymous(), Store::open(&store_dir).unwrap());
    let (ra, rb) = (
        reference(&format!("{}/share/a:v1", proxy.addr())),
        reference(&format!("{}/share/b:v1", proxy.addr())),
    );
    let (root_a, root_b) = (s.path("rootfs-a"), s.path("rootfs-b"));
    let opts = flat();
    let (rep_a, rep_b) = tokio::join!(p1.pull(&ra, &root_a, &opts), p2.pull(&rb, &root_b, &opts));
    let (rep_a, rep_b) = (rep_a.expect("pull a"), rep_b.expect("pull b"));

    let reqs = proxy.requests();
    let mut all_layers: Vec<&String> = la.iter().chain(lb.iter()).collect();
    all_layers.sort();
    all_layers.dedup();
    for d in all_layers {
        let n = reqs
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(&format!("/blobs/{d}")))
            .count();
        assert_eq!(n, 1, "layer {d} was downloaded {n} times: {reqs:#?}");
    }
    for i in 0..la.len() {
        if la[i] == lb[i] {
            assert!(
                rep_a.layers[i].cached != rep_b.layers[i].cached,
                "shared layer {i}: exactly one pull fetches it ({:?} / {:?})",
                rep_a.layers[i],
                rep_b.layers[i]
            );
        }
    }
    assert_same_tree("a", &s.umoci(&l, "a"), &root_a, &CompareOptions::default());
    assert_same_tree("b", &s.umoci(&l, "b"), &root_b, &CompareOptions::default());
    assert_eq!(
        dir_names(&store_dir.join("tmp")),
        Vec::<String>::new(),
        "tmp debris"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repull_of_a_present_image_fetches_no_blob() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let image = RawImage::from_tars(&small_tars("again"), Compression::Gzip);
    let pushed = raw::push_raw(&reg, "again/app", "v1", &image);
    let proxy = Proxy::start(&reg.addr());
    let r = reference(&format!("{}/again/app:v1", proxy.addr()));
    let store_dir = s.path("store");

    let puller = Puller::new(anonymous(), Store::open(&store_dir).unwrap());
    let first = puller
        .pull(&r, &s.path("rootfs-1"), &flat())
        .await
        .expect("first pull");
    assert_eq!(first.blobs_fetched, 3, "config + 2 layers");
    assert_eq!(blob_gets(&proxy.requests()).len(), 3);
    proxy.clear();

    // A new puller and store handle: what a later process would see.
    let puller = Puller::new(anonymous(), Store::open(&store_dir).unwrap());
    let again = puller
        .pull(&r, &s.path("rootfs-2"), &flat())
        .await
        .expect("second pull");
    assert_eq!(again.manifest_digest.to_string(), pushed);
    assert_eq!(again.blobs_fetched, 0, "{again:#?}");
    assert_eq!(again.bytes_fetched, 0, "{again:#?}");
    assert!(again
        .layers
        .iter()
        .all(|l| l.cached && l.fetched_bytes == 0));
    let reqs = proxy.requests();
    assert_eq!(blob_gets(&reqs), Vec::<&RequestRecord>::new(), "{reqs:#?}");
    fstree::compare(
        &fstree::snapshot(&s.path("rootfs-1")),
        &fstree::snapshot(&s.path("rootfs-2")),
    )
    .unwrap();

    // Overlay from the store alone, too.
    proxy.clear();
    let root_ovl = s.path("rootfs-ovl");
    let _guard = MountGuard::new(&puller, &root_ovl);
    let rep = puller
        .pull(&r, &root_ovl, &overlay())
        .await
        .expect("overlay re-pull");
    assert_eq!(rep.blobs_fetched, 0);
    assert_eq!(blob_gets(&proxy.requests()), Vec::<&RequestRecord>::new());
    assert_eq!(fs::read(root_ovl.join("app/id")).unwrap(), b"again");
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_keeps_referenced_layers_and_removes_orphans() {
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let img_a = RawImage::from_tars(&small_tars("a"), Compression::Gzip);
    let img_b = RawImage::from_tars(&small_tars("b"), Compression::Gzip);
    assert_eq!(img_a.layers[0].digest, img_b.layers[0].digest);
    raw::push_raw(&reg, "gc/a", "v1", &img_a);
    raw::push_raw(&reg, "gc/b", "v1", &img_b);
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let ra = reference(&format!("{}/gc/a:v1", reg.addr()));
    let rb = reference(&format!("{}/gc/b:v1", reg.addr()));
    puller
        .pull(&ra, &s.path("ra"), &flat())
        .await
        .expect("pull a");
    let rep_b = puller
        .pull(&rb, &s.path("rb"), &flat())
        .await
        .expect("pull b");
    assert_eq!(
        rep_b.blobs_fetched, 2,
        "config + own layer; base from the store"
    );

    let layers = store_layers(&store);
    assert_eq!(layers.len(), 3, "base + a + b: {layers:?}");
    let images_before = store.images().unwrap();
    assert_eq!(images_before.len(), 2);

    // An orphan layer and an orphan blob, as an interrupted older version might leave.
    let orphan = digest(&layout::sha256_digest(b"orphan layer"));
    let orphan_dir = store.layer_path(&orphan);
    fs::create_dir_all(orphan_dir.join("usr")).unwrap();
    fs::write(orphan_dir.join("usr/file"), b"x").unwrap();
    let orphan_blob = store
        .root()
        .join("blobs/sha256")
        .join(digest(&layout::sha256_digest(b"orphan blob")).hex());
    fs::write(&orphan_blob, b"orphan blob").unwrap();
    assert_eq!(store_layers(&store).len(), 4);

    let report = store.gc().expect("gc");
    assert_eq!(report.layers_removed, 1, "{report:?}");
    assert_eq!(report.blobs_removed, 1, "{report:?}");
    assert!(!orphan_dir.exists());
    assert!(!orphan_blob.exists());
    assert_eq!(store_layers(&store), layers, "referenced layers must stay");
    assert_eq!(store.images().unwrap(), images_before);

    // A second gc has nothing to do, and both images re-pull from the store alone.
    let report = store.gc().expect("second gc");
    assert_eq!((report.layers_removed, report.blobs_removed), (0, 0));
    for (r, root) in [(&ra, "ra2"), (&rb, "rb2")] {
        let rep = puller
            .pull(r, &s.path(root), &flat())
            .await
            .expect("re-pull");
        assert_eq!(rep.blobs_fetched, 0, "{r}: {rep:#?}");
    }
}
