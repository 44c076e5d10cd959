//! End-to-end tests of encrypted (ocicrypt) image pulls with the `image_rs` library against
//! real peers: a real `docker-registry` on 127.0.0.1, images encrypted by the real
//! `skopeo copy --encryption-key jwe:PUB.pem` (skopeo 1.9.3 / ocicrypt 1.0.3), the shared
//! vectors (`../../shared/vectors/ocicrypt`: skopeo-made layouts, a Confidential Containers
//! key-provider image and their keys), and umoci's unpack of the plain image as the reference
//! rootfs.
//!
//! Every test owns its registry, proxy, layouts, stores and rootfs targets (temp dirs removed
//! on drop, overlay mounts unmounted by [`MountGuard`] even when a test panics), so the tests
//! run in parallel. Run as root (owners, overlay mounts). When the vectors (which hold the
//! keys) are absent, each test prints why and returns.

mod common;
use common::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use image_rs::ocicrypt::jwe::{self, UnwrapError};
use image_rs::ocicrypt::options::{PrivateOptions, PublicOptions};
use image_rs::ocicrypt::spec::{ANNOTATION_JWE, ANNOTATION_PUBOPTS};
use image_rs::ocicrypt::{self, DecryptionKeys, FileKeyProvider, PrivateKey, PublicKey};
use image_rs::{
    Error, Layout, PullOptions, PullReport, Puller, RegistryClient, RegistryConfig, Store,
};
use integration_tests::cmd;
use integration_tests::compress::Compression;
use integration_tests::fsedit;
use integration_tests::fstree::{self, CompareOptions, Tree};
use integration_tests::images::{self, LayerBuilder};
use integration_tests::layout::{self, OciLayout};
use integration_tests::proxy::{Proxy, RequestRecord};
use integration_tests::push::{self, ManifestFormat, PushOptions};
use integration_tests::raw::{self, RawImage};
use integration_tests::registry::{Registry, RegistryOptions};
use integration_tests::tar_builder::TarBuilder;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The shared ocicrypt vectors (layouts and keys), relative to this crate.
fn vectors() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/ocicrypt");
    let needed = [
        "keys/rsa-pub.pem",
        "keys/rsa-priv.pem",
        "keys/wrong-rsa-priv.pem",
        "keys/ec256-pub.pem",
        "keys/ec384-pub.pem",
        "keys/kbs/default/key/1",
        "coco-enc/index.json",
        "skopeo-enc/index.json",
        "plain/index.json",
    ];
    match needed.iter().find(|p| !dir.join(p).exists()) {
        None => Some(dir),
        Some(missing) => {
            eprintln!(
                "SKIPPED: the ocicrypt vectors are absent ({} does not exist); they hold the \
                 keys these tests encrypt and decrypt with",
                dir.join(missing).display()
            );
            None
        }
    }
}

/// The vectors directory, or return from the test (after saying why).
macro_rules! vectors_or_skip {
    () => {
        match vectors() {
            Some(v) => v,
            None => return,
        }
    };
}

fn key_path(v: &Path, name: &str) -> PathBuf {
    v.join("keys").join(name)
}

/// A test's scratch space: layouts, stores, rootfs targets and umoci references live here.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("sealpod-decrypt-")
                .tempdir()
                .expect("create scratch dir"),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn store(&self, rel: &str) -> Store {
        let p = self.path(rel);
        Store::open(&p).unwrap_or_else(|e| panic!("open store {}: {e}", p.display()))
    }

    /// umoci's unpack of `tag`, snapshotted: the reference result.
    fn umoci(&self, l: &OciLayout, tag: &str, name: &str) -> Tree {
        let root = images::umoci_unpack(l, tag, &self.path(&format!("umoci-{name}")));
        fstree::snapshot(&root)
    }
}

fn anonymous() -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(RegistryConfig::default()).expect("build registry client"))
}

/// Private keys loaded from the vectors' `keys/` (no provider).
fn private_keys(v: &Path, names: &[&str]) -> DecryptionKeys {
    DecryptionKeys {
        private_keys: names
            .iter()
            .map(|n| {
                let p = key_path(v, n);
                PrivateKey::from_file(&p, None)
                    .unwrap_or_else(|e| panic!("load {}: {e}", p.display()))
            })
            .collect(),
        provider: None,
    }
}

fn opts(layout: Layout, keys: DecryptionKeys) -> PullOptions {
    PullOptions {
        layout,
        decryption: Arc::new(keys),
        ..PullOptions::default()
    }
}

fn flat_with(keys: DecryptionKeys) -> PullOptions {
    opts(Layout::Flat, keys)
}

/// Compares the tree at `root` with `expected` (umoci's unpack) entry by entry.
fn assert_same_tree(what: &str, expected: &Tree, root: &Path) {
    let actual = fstree::snapshot(root);
    assert!(
        !actual.entries.is_empty(),
        "{what}: {} is empty",
        root.display()
    );
    if let Err(d) = fstree::compare_with(expected, &actual, &CompareOptions::default()) {
        panic!(
            "{what}: rootfs {} differs from umoci's unpack of the plain image:\n{d}",
            root.display()
        );
    }
}

/// Compares the store with `before`, ignoring lock files (a pull may create them), and
/// checks that `tmp/` is empty.
fn assert_store_unchanged(what: &str, before: &Tree, store: &Store) {
    let opts = CompareOptions {
        ignore_paths: vec![PathBuf::from("locks"), PathBuf::from(".lock")],
        ..CompareOptions::default()
    };
    if let Err(d) = fstree::compare_with(before, &fstree::snapshot(store.root()), &opts) {
        panic!("{what}: the refused pull changed the store:\n{d}");
    }
    assert_eq!(
        dir_names(&store.root().join("tmp")),
        Vec::<String>::new(),
        "{what}: store tmp/ not empty"
    );
}

/// A refused pull left nothing: no rootfs, no layer for any of `diff_ids`, store as before.
fn assert_nothing_left(
    what: &str,
    before: &Tree,
    store: &Store,
    rootfs: &Path,
    diff_ids: &[String],
) {
    assert!(
        !rootfs.exists(),
        "{what}: rootfs {} created",
        rootfs.display()
    );
    assert_store_unchanged(what, before, store);
    for d in diff_ids {
        assert!(!store.has_layer(&digest(d)), "{what}: layer {d} stored");
    }
}

fn media_types(m: &Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["mediaType"].as_str().expect("mediaType").to_string())
        .collect()
}

fn config_diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|d| d.as_str().expect("diff_id").to_string())
        .collect()
}

/// The manifest the pull verified and stored, parsed.
fn pulled_manifest(store: &Store, rep: &PullReport) -> Value {
    let b = store
        .read_blob(&rep.manifest_digest)
        .expect("the pulled manifest is in the store");
    serde_json::from_slice(&b).expect("manifest JSON")
}

/// Runs the real encrypter: `skopeo copy --encryption-key jwe:PUB... [--encrypt-layer=N]
/// SRC DEST` (with the registry's TLS/credential flags when DEST is on `registry`), and
/// returns the digest of the manifest it wrote.
fn skopeo_encrypt(
    src: &str,
    dest: &str,
    public_keys: &[PathBuf],
    encrypt_layer: Option<i32>,
    registry: Option<&Registry>,
) -> String {
    let tmp = tempfile::tempdir().expect("temp dir for the digest file");
    let digestfile = tmp.path().join("digest");
    let mut c = Command::new("skopeo");
    c.args(["--insecure-policy", "copy", "--quiet", "--retry-times", "0"])
        .arg("--digestfile")
        .arg(&digestfile);
    for k in public_keys {
        c.arg("--encryption-key")
            .arg(format!("jwe:{}", k.display()));
    }
    if let Some(n) = encrypt_layer {
        c.arg(format!("--encrypt-layer={n}"));
    }
    if let Some(r) = registry {
        push::dest_args(&mut c, r);
    }
    c.arg(src).arg(dest);
    cmd::run(&mut c);
    fs::read_to_string(&digestfile)
        .expect("skopeo wrote the digest file")
        .trim()
        .to_string()
}

/// Two small layers of an "application" whose content names `id`.
fn small_tars(id: &str) -> Vec<Vec<u8>> {
    vec![
        TarBuilder::new()
            .dir("etc", 0o755)
            .file("etc/base", 0o644, b"base layer\n")
            .symlink("etc/link", "base")
            .finish(),
        TarBuilder::new()
            .dir("app", 0o750)
            .file("app/id", 0o640, id.as_bytes())
            .file_owned("app/secret", 0o600, 1000, 1000, b"confidential payload\n")
            .finish(),
    ]
}

/// Writes `image` as tag `tag` of a new plain layout at `dir` (no umoci needed).
fn raw_layout(dir: PathBuf, tag: &str, image: &RawImage) -> OciLayout {
    let l = OciLayout::init_plain(dir);
    raw::write_raw_layout(&l, tag, image);
    l
}

/// `n` pseudo-random bytes (xorshift): incompressible, so a gzip layer stays large.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The JWE recipients' `alg`s of an `...enc.keys.jwe` annotation (flattened or general).
fn jwe_recipient_algs(annotation: &str) -> Vec<String> {
    let mut algs = Vec::new();
    for part in annotation.split(',') {
        let jwe: Value =
            serde_json::from_slice(&STANDARD.decode(part).expect("JWE base64")).expect("JWE JSON");
        let protected = |b64: &str| -> Value {
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(b64.trim_end_matches('='))
                .expect("protected header base64url");
            serde_json::from_slice(&raw).expect("protected header JSON")
        };
        match jwe["recipients"].as_array() {
            Some(rs) => {
                for r in rs {
                    algs.push(r["header"]["alg"].as_str().expect("alg").to_string());
                }
            }
            None => {
                let h = protected(jwe["protected"].as_str().expect("protected"));
                algs.push(h["alg"].as_str().expect("alg").to_string());
            }
        }
    }
    algs
}

// ---------------------------------------------------------------------------------------
// 1. busybox + a layer, encrypted by skopeo for every key type; flat and overlay
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_encrypted_busybox_pulls_like_umoci_for_every_key_type() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let l = OciLayout::new(s.path("layout"));
    images::build_busybox(&l, "base");
    LayerBuilder::new(&l, "base", "bb").layer(|r| {
        fsedit::mkdir(r, "srv", 0o750)?;
        fsedit::write(r, "srv/app.conf", b"mode = confidential\n", 0o640)?;
        fsedit::write_owned(
            r,
            "srv/key.material",
            b"not really a key\n",
            0o600,
            1000,
            100,
        )?;
        fsedit::remove(r, "etc/motd")
    });
    let plain = l.manifest("bb");
    assert_eq!(plain["layers"].as_array().unwrap().len(), 2, "two layers");
    let plain_layers = layer_digests(&plain);
    let diff_ids = config_diff_ids(&l.config("bb"));
    let expected = s.umoci(&l, "bb", "bb");
    assert!(fstree::snapshot(&s.path("umoci-bb/rootfs"))
        .entries
        .contains_key(Path::new("srv/key.material")));
    // zstd: recompressed first (skopeo 1.9.3 does not recompress gzip layers), then
    // encrypted by skopeo like the others. Same config, so the same reference tree.
    push::recompress(&l, "bb", "bb-zstd", Compression::Zstd, ManifestFormat::Oci);

    let gzip = layout::OCI_LAYER_GZIP;
    let zstd = layout::OCI_LAYER_ZSTD;
    struct Case {
        name: &'static str,
        src_tag: &'static str,
        public: Vec<&'static str>,
        encrypt_layer: Option<i32>,
        /// Which layers end up encrypted.
        encrypted: [bool; 2],
        layer_type: &'static str,
        /// JWE recipient algorithms skopeo must have written.
        algs: Vec<&'static str>,
        /// Each set of private keys alone must open the image.
        key_sets: Vec<Vec<&'static str>>,
    }
    let cases = vec![
        Case {
            name: "rsa",
            src_tag: "bb",
            public: vec!["rsa-pub.pem"],
            encrypt_layer: None,
            encrypted: [true, true],
            layer_type: gzip,
            algs: vec!["RSA-OAEP"],
            key_sets: vec![vec!["rsa-priv.pem"]],
        },
        Case {
            name: "ec256",
            src_tag: "bb",
            public: vec!["ec256-pub.pem"],
            encrypt_layer: None,
            encrypted: [true, true],
            layer_type: gzip,
            algs: vec!["ECDH-ES+A256KW"],
            key_sets: vec![vec!["ec256-priv.pem"]],
        },
        Case {
            name: "ec384",
            src_tag: "bb",
            public: vec!["ec384-pub.pem"],
            encrypt_layer: None,
            encrypted: [true, true],
            layer_type: gzip,
            algs: vec!["ECDH-ES+A256KW"],
            key_sets: vec![vec!["ec384-priv.pem"]],
        },
        Case {
            name: "rsa-ec384",
            src_tag: "bb",
            public: vec!["rsa-pub.pem", "ec384-pub.pem"],
            encrypt_layer: None,
            encrypted: [true, true],
            layer_type: gzip,
            algs: vec!["RSA-OAEP", "ECDH-ES+A256KW"],
            // Each recipient alone; and a wrong key listed before the right one.
            key_sets: vec![
                vec!["rsa-priv.pem"],
                vec!["ec384-priv.pem"],
                vec!["wrong-rsa-priv.pem", "ec256-priv.pem", "ec384-priv.pem"],
            ],
        },
        Case {
            name: "zstd",
            src_tag: "bb-zstd",
            public: vec!["rsa-pub.pem"],
            encrypt_layer: None,
            encrypted: [true, true],
            layer_type: zstd,
            algs: vec!["RSA-OAEP"],
            key_sets: vec![vec!["rsa-priv.pem"]],
        },
        Case {
            name: "last-layer",
            src_tag: "bb",
            public: vec!["ec256-pub.pem"],
            encrypt_layer: Some(-1),
            encrypted: [false, true],
            layer_type: gzip,
            algs: vec!["ECDH-ES+A256KW"],
            key_sets: vec![vec!["ec256-priv.pem"]],
        },
    ];

    for case in &cases {
        let name = case.name;
        let repo_tag = format!("enc/bb:{name}");
        let pubs: Vec<PathBuf> = case.public.iter().map(|k| key_path(&v, k)).collect();
        let pushed = skopeo_encrypt(
            &l.skopeo_ref(case.src_tag),
            &format!("docker://{}/{repo_tag}", reg.addr()),
            &pubs,
            case.encrypt_layer,
            Some(&reg),
        );

        // What skopeo put in the registry.
        let resp = raw::get_manifest(&reg.addr(), "enc/bb", name, None);
        assert_eq!(resp.status, 200, "{name}: {}", resp.text());
        assert_eq!(
            resp.header("Content-Type"),
            Some(layout::OCI_MANIFEST),
            "{name}"
        );
        let m = resp.json();
        let src_layers = layer_digests(&l.manifest(case.src_tag));
        let types = media_types(&m);
        let digests = layer_digests(&m);
        for i in 0..2 {
            let ann = &m["layers"][i]["annotations"];
            if case.encrypted[i] {
                assert_eq!(
                    types[i],
                    format!("{}+encrypted", case.layer_type),
                    "{name}: layer {i}"
                );
                assert_ne!(digests[i], src_layers[i], "{name}: layer {i} not encrypted");
                let algs = jwe_recipient_algs(ann[ANNOTATION_JWE].as_str().expect("jwe"));
                assert_eq!(algs, case.algs, "{name}: layer {i} JWE recipients");
                assert!(ann[ANNOTATION_PUBOPTS].is_string(), "{name}: {ann}");
            } else {
                assert_eq!(types[i], case.layer_type, "{name}: layer {i}");
                assert_eq!(digests[i], src_layers[i], "{name}: plain layer {i} changed");
                assert!(ann.get(ANNOTATION_JWE).is_none(), "{name}: {ann}");
            }
        }

        for (k, keys) in case.key_sets.iter().enumerate() {
            let what = format!("{name} with {keys:?}");
            // A fresh store per pull: layers are keyed by diff_id, so a shared store
            // would skip every download (and decryption) after the first.
            let store = s.store(&format!("store-{name}-{k}"));
            let puller = Puller::new(anonymous(), store.clone());
            let rootfs = s.path(&format!("rootfs-{name}-{k}"));
            let r = reference(&format!("{}/{repo_tag}", reg.addr()));
            let rep = puller
                .pull(&r, &rootfs, &flat_with(private_keys(&v, keys)))
                .await
                .unwrap_or_else(|e| panic!("{what}: pull failed: {e}"));
            assert_eq!(rep.manifest_digest.to_string(), pushed, "{what}");
            assert_eq!(rep.layers.len(), 2, "{what}");
            for (i, lo) in rep.layers.iter().enumerate() {
                assert!(!lo.cached, "{what}: fresh store");
                assert_eq!(lo.digest.to_string(), digests[i], "{what}: layer {i}");
                assert_eq!(lo.diff_id.to_string(), diff_ids[i], "{what}: layer {i}");
                assert!(store.has_layer(&lo.diff_id), "{what}: layer {i}");
            }
            assert_eq!(rep.blobs_fetched, 3, "{what}: config + 2 layers");
            assert_eq!(media_types(&pulled_manifest(&store, &rep)), types, "{what}");
            assert_same_tree(&what, &expected, &rootfs);
            assert!(
                !rootfs.join("etc/motd").exists(),
                "{what}: the whiteout was not applied"
            );
            assert_eq!(
                fs::read(rootfs.join("srv/key.material")).unwrap(),
                b"not really a key\n"
            );
            let recs = store.images().unwrap();
            assert_eq!(recs.len(), 1, "{what}");
            assert_eq!(recs[0].manifest_digest.to_string(), pushed, "{what}");
        }
    }
    assert_ne!(plain_layers, layer_digests(&l.manifest("bb-zstd")));

    // Overlay: the decrypted layers in the store, mounted.
    let store = s.store("store-overlay");
    let puller = Puller::new(anonymous(), store.clone());
    let rootfs = s.path("rootfs-overlay");
    let guard = MountGuard::new(&puller, &rootfs);
    let rep = puller
        .pull(
            &reference(&format!("{}/enc/bb:rsa-ec384", reg.addr())),
            &rootfs,
            &opts(Layout::Overlay, private_keys(&v, &["ec384-priv.pem"])),
        )
        .await
        .expect("overlay pull");
    assert!(is_mount_point(&rootfs), "rootfs is not a mount point");
    assert!(rep.layers.iter().all(|l| !l.cached));
    assert_same_tree("overlay", &expected, &rootfs);
    puller.unmount(&rootfs).expect("unmount");
    drop(guard);

    // Two recipients, neither key given: the error lists both and the key tried.
    let store = s.store("store-wrong");
    let before = fstree::snapshot(store.root());
    let rootfs = s.path("rootfs-wrong");
    let e = expect_err(
        "rsa-ec384 with the P-256 key",
        Puller::new(anonymous(), store.clone())
            .pull(
                &reference(&format!("{}/enc/bb:rsa-ec384", reg.addr())),
                &rootfs,
                &flat_with(private_keys(&v, &["ec256-priv.pem"])),
            )
            .await,
    );
    assert!(matches!(e, Error::Decrypt { .. }), "{e:?}");
    assert_mentions(
        "rsa-ec384 with the P-256 key",
        &e,
        &[
            "RSA-OAEP (RSA 2048)",
            "ECDH-ES+A256KW (P-384)",
            "1 private key tried (P-256)",
        ],
    );
    assert_nothing_left("rsa-ec384 wrong key", &before, &store, &rootfs, &diff_ids);
    assert!(store.images().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// 2. the vectors: Confidential Containers key-provider image; skopeo-made layouts
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn coco_key_provider_image_opens_with_the_kbs_key_only() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let enc = OciLayout::new(v.join("coco-enc"));
    let plain = OciLayout::new(v.join("plain"));
    let pushed = push::push(&enc, "coco", &reg, "coco/app:v1", PushOptions::default());
    assert_eq!(pushed, enc.manifest_digest("coco"), "pushed byte for byte");
    let expected = s.umoci(&plain, "plain", "plain");
    let diff_ids = config_diff_ids(&enc.config("coco"));
    assert_eq!(diff_ids, config_diff_ids(&plain.config("plain")));
    let enc_layer = layer_digests(&enc.manifest("coco"))[0].clone();
    let r = reference(&format!("{}/coco/app:v1", reg.addr()));
    let kid = "kbs:///default/key/1";

    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let before = fstree::snapshot(store.root());

    // A KEK directory with another 32-byte key under the same kid.
    let wrong_kbs = s.path("wrong-kbs");
    fs::create_dir_all(wrong_kbs.join("default/key")).unwrap();
    fs::write(wrong_kbs.join("default/key/1"), [0x42u8; 32]).unwrap();
    let provider = |dir: &Path| DecryptionKeys {
        private_keys: Vec::new(),
        provider: Some(Arc::new(FileKeyProvider::new(dir))),
    };
    let refusals: Vec<(&str, DecryptionKeys, Vec<&str>)> = vec![
        (
            "no provider",
            DecryptionKeys::default(),
            vec![kid, "attestation-agent", "no key provider is configured"],
        ),
        (
            "only a private key",
            private_keys(&v, &["rsa-priv.pem"]),
            vec![kid, "no key provider is configured"],
        ),
        (
            "provider without the key",
            provider(&s.path("empty-kbs")),
            vec![kid, "fetching key-encryption key"],
        ),
        (
            "provider with another key",
            provider(&wrong_kbs),
            vec![kid, "unwrapping the layer key with key-encryption key"],
        ),
    ];
    for (what, keys, words) in refusals {
        let rootfs = s.path(&format!("rootfs-{}", what.replace(' ', "-")));
        let e = expect_err(what, puller.pull(&r, &rootfs, &flat_with(keys)).await);
        match &e {
            Error::Decrypt { digest, .. } => assert_eq!(digest.to_string(), enc_layer, "{what}"),
            other => panic!("{what}: expected Error::Decrypt, got {other:?}"),
        }
        assert_mentions(what, &e, &words);
        assert_nothing_left(what, &before, &store, &rootfs, &diff_ids);
        assert!(store.images().unwrap().is_empty(), "{what}");
    }

    // The KBS resource tree of the vectors holds the right KEK.
    let rootfs = s.path("rootfs");
    let rep = puller
        .pull(&r, &rootfs, &flat_with(provider(&key_path(&v, "kbs"))))
        .await
        .expect("pull with the key provider");
    assert_eq!(rep.manifest_digest.to_string(), pushed);
    assert_eq!(rep.layers.len(), 1);
    assert!(!rep.layers[0].cached);
    assert_eq!(rep.layers[0].diff_id.to_string(), diff_ids[0]);
    assert_eq!(
        media_types(&pulled_manifest(&store, &rep)),
        ["application/vnd.oci.image.layer.v1.tar+gzip+encrypted"]
    );
    assert_same_tree("coco", &expected, &rootfs);
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_vector_layouts_pull_like_the_plain_vector() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let enc = OciLayout::new(v.join("skopeo-enc"));
    let plain = OciLayout::new(v.join("plain"));
    let expected = s.umoci(&plain, "plain", "plain");
    let diff_ids = config_diff_ids(&plain.config("plain"));
    for (tag, key, layer_type) in [
        ("rsa", "rsa-priv.pem", "tar+gzip+encrypted"),
        ("ec256", "ec256-priv.pem", "tar+gzip+encrypted"),
        ("rsa-ec384", "ec384-priv.pem", "tar+gzip+encrypted"),
        ("rsa-zstd", "rsa-priv.pem", "tar+zstd+encrypted"),
    ] {
        let pushed = push::push(
            &enc,
            tag,
            &reg,
            &format!("vec/app:{tag}"),
            PushOptions::default(),
        );
        assert_eq!(pushed, enc.manifest_digest(tag), "{tag}: byte for byte");
        let store = s.store(&format!("store-{tag}"));
        let puller = Puller::new(anonymous(), store.clone());
        let rootfs = s.path(&format!("rootfs-{tag}"));
        let rep = puller
            .pull(
                &reference(&format!("{}/vec/app:{tag}", reg.addr())),
                &rootfs,
                &flat_with(private_keys(&v, &[key])),
            )
            .await
            .unwrap_or_else(|e| panic!("{tag}: pull failed: {e}"));
        assert_eq!(rep.manifest_digest.to_string(), pushed, "{tag}");
        assert_eq!(rep.layers[0].diff_id.to_string(), diff_ids[0], "{tag}");
        assert_eq!(
            media_types(&pulled_manifest(&store, &rep)),
            [format!("application/vnd.oci.image.layer.v1.{layer_type}")],
            "{tag}"
        );
        assert_same_tree(tag, &expected, &rootfs);
    }
}

// ---------------------------------------------------------------------------------------
// 3. wrong key, no key
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_key_is_refused_before_any_layer_is_fetched() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let image = RawImage::from_tars(&small_tars("wrong-key"), Compression::Gzip);
    let l = raw_layout(s.path("plain"), "app", &image);
    let expected = s.umoci(&l, "app", "app");
    let diff_ids = config_diff_ids(&l.config("app"));
    skopeo_encrypt(
        &l.skopeo_ref("app"),
        &format!("docker://{}/wrong/app:v1", reg.addr()),
        &[key_path(&v, "rsa-pub.pem")],
        None,
        Some(&reg),
    );
    let m = raw::get_manifest(&reg.addr(), "wrong/app", "v1", None).json();
    let enc_layers = layer_digests(&m);
    let proxy = Proxy::start(&reg.addr());
    let r = reference(&format!("{}/wrong/app:v1", proxy.addr()));
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let before = fstree::snapshot(store.root());

    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "the wrong RSA key",
            vec!["wrong-rsa-priv.pem"],
            vec![
                "encrypted for: RSA-OAEP (RSA 2048)",
                "none of the 1 private key tried (RSA 2048)",
                "--decryption-key",
            ],
        ),
        (
            "an EC key for an RSA recipient",
            vec!["ec256-priv.pem"],
            vec!["RSA-OAEP (RSA 2048)", "(P-256)"],
        ),
        (
            "two wrong keys",
            vec!["wrong-rsa-priv.pem", "ec384-priv.pem"],
            vec![
                "RSA-OAEP (RSA 2048)",
                "2 private keys tried (RSA 2048, P-384)",
            ],
        ),
        (
            "no key at all",
            vec![],
            vec![
                "no private keys were given",
                "RSA-OAEP (RSA 2048)",
                "--decryption-key",
            ],
        ),
    ];
    for (what, keys, words) in cases {
        proxy.clear();
        let rootfs = s.path(&format!("rootfs-{}", what.replace(' ', "-")));
        let e = expect_err(
            what,
            puller
                .pull(&r, &rootfs, &flat_with(private_keys(&v, &keys)))
                .await,
        );
        let Error::Decrypt { digest, source } = &e else {
            panic!("{what}: expected Error::Decrypt, got {e:?}");
        };
        assert_eq!(digest.to_string(), enc_layers[0], "{what}: first layer");
        match source.as_ref() {
            ocicrypt::Error::NoLayerKey {
                jwe:
                    Some(UnwrapError::NoMatchingKey {
                        recipients,
                        keys: tried,
                        ..
                    }),
                providers,
                unsupported,
            } => {
                assert_eq!(recipients, &["RSA-OAEP (RSA 2048)"], "{what}");
                assert_eq!(tried.len(), keys.len(), "{what}");
                assert!(providers.is_empty() && unsupported.is_empty(), "{what}");
            }
            other => panic!("{what}: unexpected cause {other:?}"),
        }
        assert_mentions(what, &e, &words);
        let msg = e.to_string();
        assert!(
            !msg.contains("BEGIN") && !msg.contains("PRIVATE"),
            "{what}: key material in {msg}"
        );
        assert_nothing_left(what, &before, &store, &rootfs, &diff_ids);
        assert!(store.images().unwrap().is_empty(), "{what}: image recorded");
        // The keys are unwrapped before any layer is used: no layer blob was even fetched.
        let reqs = proxy.requests();
        let layer_gets: Vec<&RequestRecord> = blob_gets(&reqs)
            .into_iter()
            .filter(|g| enc_layers.iter().any(|d| g.path.contains(d.as_str())))
            .collect();
        assert_eq!(layer_gets, Vec::<&RequestRecord>::new(), "{what}");
    }

    // The right key, same store: the refusals were about the key and nothing else.
    let rootfs = s.path("rootfs");
    let rep = puller
        .pull(&r, &rootfs, &flat_with(private_keys(&v, &["rsa-priv.pem"])))
        .await
        .expect("pull with the right key");
    assert!(rep.layers.iter().all(|l| !l.cached));
    assert_same_tree("right key", &expected, &rootfs);
    assert_eq!(
        fs::read(rootfs.join("app/secret")).unwrap(),
        b"confidential payload\n"
    );
}

// ---------------------------------------------------------------------------------------
// 4. tampering: ciphertext, HMAC annotation, private options digest
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn tampered_ciphertext_hmac_and_private_digest_are_refused_and_leave_the_store_unchanged() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    // One layer: with several, verified sibling layers may be committed while the
    // tampered one is refused (see image_pull.rs).
    let tar = TarBuilder::new()
        .dir("opt", 0o755)
        .file("opt/payload", 0o644, &noise(20_000, 7))
        .file("opt/readme", 0o644, b"an encrypted layer to tamper with\n")
        .finish();
    let image = RawImage::from_tars(std::slice::from_ref(&tar), Compression::Gzip);
    let plain_layer = image.layers[0].digest.clone();
    let l = raw_layout(s.path("plain"), "app", &image);
    let diff_ids = config_diff_ids(&l.config("app"));

    // skopeo encrypts into a layout; its blobs and manifest are then pushed as they are.
    let enc = OciLayout::init_plain(s.path("enc"));
    skopeo_encrypt(
        &l.skopeo_ref("app"),
        &enc.skopeo_ref("app"),
        &[key_path(&v, "rsa-pub.pem")],
        None,
        None,
    );
    let m = enc.manifest("app");
    let enc_layer = layer_digests(&m)[0].clone();
    assert_eq!(
        media_types(&m),
        [format!("{}+encrypted", layout::OCI_LAYER_GZIP)]
    );
    let repo = "tamper/app";
    let good = push::push_layout_raw(&enc, "app", &reg, repo, "good");
    let base = format!("{}/{repo}", reg.addr());
    let rsa = || flat_with(private_keys(&v, &["rsa-priv.pem"]));

    // Untampered, it pulls (in a store of its own: a stored layer is not fetched again).
    let rep = Puller::new(anonymous(), s.store("store-good"))
        .pull(
            &reference(&format!("{base}:good")),
            &s.path("rootfs-good"),
            &rsa(),
        )
        .await
        .expect("the untampered image pulls");
    assert_eq!(rep.manifest_digest.to_string(), good);

    // The store under test holds another image, so "unchanged" covers a populated store.
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let other = RawImage::from_tars(&small_tars("other"), Compression::Gzip);
    raw::push_raw(&reg, "tamper/other", "v1", &other);
    puller
        .pull(
            &reference(&format!("{}/tamper/other:v1", reg.addr())),
            &s.path("rootfs-other"),
            &rsa(),
        )
        .await
        .expect("pull another image");

    let with_layer_annotation = |name: &str, value: String| -> Vec<u8> {
        let mut m = m.clone();
        m["layers"][0]["annotations"][name] = json!(value);
        serde_json::to_vec(&m).unwrap()
    };
    let annotation = |name: &str| -> String {
        m["layers"][0]["annotations"][name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };

    // 1. The HMAC in pubopts changed (blobs untouched; a new manifest, pushed by tag).
    let mut public = PublicOptions::from_annotation(&annotation(ANNOTATION_PUBOPTS)).unwrap();
    assert_eq!(public.hmac.len(), 32);
    for b in public.hmac.iter_mut() {
        *b ^= 0x5a;
    }
    let hmac_manifest = with_layer_annotation(ANNOTATION_PUBOPTS, public.to_annotation());
    let hmac_digest =
        raw::push_raw_manifest(&reg, repo, "hmac", layout::OCI_MANIFEST, &hmac_manifest);
    assert_ne!(hmac_digest, good);

    // 2. The private options re-wrapped for the same RSA key with another plain digest:
    // the key and HMAC are right, only the decrypted blob's digest check can tell.
    let rsa_priv = PrivateKey::from_file(&key_path(&v, "rsa-priv.pem"), None).unwrap();
    let rsa_pub = PublicKey::from_file(&key_path(&v, "rsa-pub.pem")).unwrap();
    let plain_opts = jwe::unwrap(&annotation(ANNOTATION_JWE), &[rsa_priv]).expect("unwrap");
    let mut private = PrivateOptions::from_json(&plain_opts).unwrap();
    assert_eq!(
        private.digest.to_string(),
        plain_layer,
        "skopeo's private digest"
    );
    let forged = layout::sha256_digest(b"not the plain layer");
    private.digest = digest(&forged);
    let wrapped = jwe::wrap(&private.to_json(), &[rsa_pub]).expect("wrap");
    let private_manifest = with_layer_annotation(ANNOTATION_JWE, wrapped);
    raw::push_raw_manifest(
        &reg,
        repo,
        "private-digest",
        layout::OCI_MANIFEST,
        &private_manifest,
    );

    let check = |what: &str, rootfs: &Path, before: &Tree| {
        assert_nothing_left(what, before, &store, rootfs, &diff_ids);
        assert_eq!(store.images().unwrap().len(), 1, "{what}: image recorded");
    };

    let before = fstree::snapshot(store.root());
    let rootfs = s.path("rootfs-hmac");
    let e = expect_err(
        "hmac",
        puller
            .pull(&reference(&format!("{base}:hmac")), &rootfs, &rsa())
            .await,
    );
    match &e {
        Error::Hmac { digest } => assert_eq!(digest.to_string(), enc_layer),
        other => panic!("hmac: expected Error::Hmac, got {other:?}"),
    }
    assert_mentions("hmac", &e, &["HMAC", &enc_layer]);
    check("hmac", &rootfs, &before);

    let rootfs = s.path("rootfs-private-digest");
    let e = expect_err(
        "private digest",
        puller
            .pull(
                &reference(&format!("{base}:private-digest")),
                &rootfs,
                &rsa(),
            )
            .await,
    );
    match &e {
        Error::DigestMismatch {
            what,
            expected,
            actual,
        } => {
            assert!(what.contains("decrypted layer"), "{what}");
            assert_eq!(expected.to_string(), forged);
            assert_eq!(actual.to_string(), plain_layer);
        }
        other => panic!("private digest: expected Error::DigestMismatch, got {other:?}"),
    }
    check("private digest", &rootfs, &before);

    // 3. The ciphertext tampered and re-pointed: the registry also serves a rewritten
    // manifest naming the tampered blob's digest (it controls the tag), so only the HMAC
    // can tell. Byte 4 is the gzip header's MTIME, which decompressors ignore: the layer
    // unpacks completely and the HMAC at EOF is the only check that fails. A byte in the
    // middle breaks the deflate stream before EOF: the HMAC is still the explanation.
    let ciphertext = enc.read_blob(&enc_layer);
    for (pos, why) in [
        (4, "gzip MTIME byte"),
        (ciphertext.len() / 2, "deflate byte"),
    ] {
        let what = format!("re-pointed ciphertext, {why}");
        let mut bytes = ciphertext.clone();
        bytes[pos] ^= 0x01;
        let blob = raw::RawBlob::new(&media_types(&m)[0], bytes);
        raw::push_raw_blob(&reg, repo, &blob);
        let mut m2 = m.clone();
        m2["layers"][0]["digest"] = json!(blob.digest);
        let tag = format!("repointed-{pos}");
        let bytes = serde_json::to_vec(&m2).unwrap();
        raw::push_raw_manifest(&reg, repo, &tag, layout::OCI_MANIFEST, &bytes);
        let rootfs = s.path(&format!("rootfs-{tag}"));
        let e = expect_err(
            &what,
            puller
                .pull(&reference(&format!("{base}:{tag}")), &rootfs, &rsa())
                .await,
        );
        match &e {
            Error::Hmac { digest } => assert_eq!(digest.to_string(), blob.digest, "{what}"),
            other => panic!("{what}: expected Error::Hmac, got {other:?}"),
        }
        check(&what, &rootfs, &before);
    }

    // 4. The ciphertext: one byte flipped in the middle, served under the original
    // digest (the registry verifies uploads, so it is planted in its storage; blobs are
    // global there, hence this case comes last).
    let mut bytes = enc.read_blob(&enc_layer);
    let n = bytes.len();
    bytes[n / 2] ^= 0x01;
    reg.plant_blob(repo, &enc_layer, &bytes);
    let rootfs = s.path("rootfs-ciphertext");
    let e = expect_err(
        "ciphertext",
        puller
            .pull(&reference(&format!("{base}:good")), &rootfs, &rsa())
            .await,
    );
    match &e {
        Error::DigestMismatch { what, expected, .. } => {
            assert!(what.contains("layer blob"), "{what}");
            assert!(!what.contains("decrypted"), "{what}");
            assert_eq!(expected.to_string(), enc_layer);
        }
        other => panic!("ciphertext: expected Error::DigestMismatch, got {other:?}"),
    }
    check("ciphertext", &rootfs, &before);
}

// ---------------------------------------------------------------------------------------
// 5. the store is no way around the keys
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn layers_in_the_store_do_not_open_an_encrypted_image_without_its_key() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let image = RawImage::from_tars(&small_tars("stored"), Compression::Gzip);
    let l = raw_layout(s.path("plain"), "app", &image);
    let diff_ids = config_diff_ids(&l.config("app"));
    raw::push_raw(&reg, "same/plain", "v1", &image);
    // Encrypted into a layout, then pushed byte for byte: no chance for skopeo to reuse
    // the plain blobs already in this registry.
    let enc = OciLayout::init_plain(s.path("enc"));
    skopeo_encrypt(
        &l.skopeo_ref("app"),
        &enc.skopeo_ref("app"),
        &[key_path(&v, "ec384-pub.pem")],
        None,
        None,
    );
    let enc_pushed = push::push(&enc, "app", &reg, "same/enc:v1", PushOptions::default());
    assert_eq!(
        config_diff_ids(&enc.config("app")),
        diff_ids,
        "same content"
    );
    assert!(media_types(&enc.manifest("app"))
        .iter()
        .all(|t| t.ends_with("+encrypted")));
    let proxy = Proxy::start(&reg.addr());

    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let plain_root = s.path("rootfs-plain");
    puller
        .pull(
            &reference(&format!("{}/same/plain:v1", proxy.addr())),
            &plain_root,
            &flat_with(DecryptionKeys::default()),
        )
        .await
        .expect("pull the plain image");
    for d in &diff_ids {
        assert!(store.has_layer(&digest(d)), "{d} in the store");
    }
    let r = reference(&format!("{}/same/enc:v1", proxy.addr()));

    let before = fstree::snapshot(store.root());
    for (what, keys, layout_) in [
        ("no key, flat", DecryptionKeys::default(), Layout::Flat),
        (
            "no key, overlay",
            DecryptionKeys::default(),
            Layout::Overlay,
        ),
        (
            "wrong key",
            private_keys(&v, &["ec256-priv.pem", "wrong-rsa-priv.pem"]),
            Layout::Flat,
        ),
    ] {
        let rootfs = s.path(&format!("rootfs-{}", what.replace([' ', ','], "-")));
        let e = expect_err(what, puller.pull(&r, &rootfs, &opts(layout_, keys)).await);
        assert!(matches!(e, Error::Decrypt { .. }), "{what}: {e:?}");
        assert_mentions(what, &e, &["ECDH-ES+A256KW (P-384)"]);
        assert!(!rootfs.exists(), "{what}: rootfs created");
        assert!(!is_mount_point(&rootfs), "{what}");
        assert_store_unchanged(what, &before, &store);
        assert_eq!(store.images().unwrap().len(), 1, "{what}: image recorded");
        assert!(
            dir_names(&store.root().join("mounts")).is_empty(),
            "{what}: overlay upper dir made"
        );
    }

    // The right key: everything comes from the store, nothing from the registry.
    proxy.clear();
    let rootfs = s.path("rootfs-enc");
    let rep = puller
        .pull(
            &r,
            &rootfs,
            &flat_with(private_keys(&v, &["ec384-priv.pem"])),
        )
        .await
        .expect("pull with the key");
    assert_eq!(rep.manifest_digest.to_string(), enc_pushed);
    assert!(rep.layers.iter().all(|l| l.cached), "{rep:#?}");
    assert_eq!(rep.blobs_fetched, 0, "{rep:#?}");
    assert_eq!(rep.bytes_fetched, 0, "{rep:#?}");
    let reqs = proxy.requests();
    assert_eq!(blob_gets(&reqs), Vec::<&RequestRecord>::new(), "{reqs:#?}");
    fstree::compare(&fstree::snapshot(&plain_root), &fstree::snapshot(&rootfs))
        .unwrap_or_else(|d| panic!("encrypted image's rootfs differs from the plain one:\n{d}"));
    assert_eq!(store.images().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------
// 6. resume with Range on an encrypted layer
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn interrupted_encrypted_layer_download_resumes_with_range_requests() {
    let v = vectors_or_skip!();
    let s = Scratch::new();
    let reg = Registry::start(RegistryOptions::default());
    let tar = TarBuilder::new()
        .dir("data", 0o755)
        .file("data/noise.bin", 0o644, &noise(900_000, 42))
        .file("data/readme", 0o644, b"resumed\n")
        .finish();
    let image = RawImage::from_tars(std::slice::from_ref(&tar), Compression::Gzip);
    let l = raw_layout(s.path("plain"), "big", &image);
    let expected = s.umoci(&l, "big", "big");
    skopeo_encrypt(
        &l.skopeo_ref("big"),
        &format!("docker://{}/flaky/enc:v1", reg.addr()),
        &[key_path(&v, "rsa-pub.pem")],
        None,
        Some(&reg),
    );
    let m = raw::get_manifest(&reg.addr(), "flaky/enc", "v1", None).json();
    let layer = layer_digests(&m)[0].clone();
    let size = m["layers"][0]["size"].as_u64().unwrap();
    assert!(media_types(&m)[0].ends_with("+encrypted"));
    const CUT: u64 = 200_000;
    assert!(
        size > 3 * CUT,
        "layer too small ({size} bytes) for this test"
    );

    let proxy = Proxy::start(&reg.addr());
    proxy.drop_after(&format!("/blobs/{layer}"), CUT, 2);
    let store = s.store("store");
    let puller = Puller::new(anonymous(), store.clone());
    let rootfs = s.path("rootfs");
    let rep = puller
        .pull(
            &reference(&format!("{}/flaky/enc:v1", proxy.addr())),
            &rootfs,
            &flat_with(private_keys(&v, &["rsa-priv.pem"])),
        )
        .await
        .expect("the pull must survive two cut connections");
    assert_same_tree("resumed", &expected, &rootfs);

    let reqs = proxy.requests();
    let gets: Vec<&RequestRecord> = reqs
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains(&format!("/blobs/{layer}")))
        .collect();
    assert_eq!(gets.len(), 3, "{gets:#?}");
    assert_eq!(gets.iter().filter(|r| r.dropped).count(), 2, "{gets:#?}");
    let ranges: Vec<Option<&str>> = gets.iter().map(|r| r.range.as_deref()).collect();
    let (r1, r2) = (format!("bytes={CUT}-"), format!("bytes={}-", 2 * CUT));
    assert_eq!(ranges, [None, Some(r1.as_str()), Some(r2.as_str())]);
    let lo = &rep.layers[0];
    assert_eq!((lo.requests, lo.range_requests), (3, 2), "{lo:?}");
    assert_eq!(lo.fetched_bytes, size, "no byte fetched twice");
    assert_eq!(fs::read(rootfs.join("data/readme")).unwrap(), b"resumed\n");
}
