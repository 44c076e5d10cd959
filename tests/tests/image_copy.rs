//! `image-rs copy` encrypts images that the real peer (skopeo) decrypts, and
//! that image-rs pulls back through JWE keys and the CoCo key provider.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use image_rs::copy::{copy, CopyOptions, Location};
use image_rs::ocicrypt::keys::{PrivateKey, PublicKey};
use image_rs::ocicrypt::layer::{DecryptionKeys, Recipient};
use image_rs::ocicrypt::provider::FileKeyProvider;
use image_rs::{Layout, PullOptions, Puller, RegistryClient, RegistryConfig, Store};
use integration_tests::fstree;
use integration_tests::images;
use integration_tests::layout::OciLayout;
use integration_tests::registry::{Registry, RegistryOptions};

fn vectors() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/ocicrypt/keys");
    p.is_dir().then_some(p)
}

/// Layer digests of the manifest tagged `tag` in an OCI layout.
fn layer_digests(layout: &Path, tag: &str) -> Vec<String> {
    let l = OciLayout::new(layout);
    let m = l.manifest(tag);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["digest"].as_str().unwrap().to_string())
        .collect()
}

fn media_types(layout: &Path, tag: &str) -> Vec<String> {
    let m = OciLayout::new(layout).manifest(tag);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["mediaType"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_by_image_rs_decrypts_with_skopeo_and_pulls_back() {
    let Some(keys) = vectors() else {
        eprintln!("skipped: ../shared/vectors/ocicrypt not present");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("plain");
    let l = OciLayout::new(&plain);
    images::build_busybox(&l, "bb");
    let plain_layers = layer_digests(&plain, "bb");
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();

    // Two JWE recipients (RSA and EC P-384), every layer, to an OCI layout.
    let enc = t.path().join("enc");
    let opts = CopyOptions {
        recipients: vec![
            Recipient::Jwe(PublicKey::from_file(&keys.join("rsa-pub.pem")).unwrap()),
            Recipient::Jwe(PublicKey::from_file(&keys.join("ec384-pub.pem")).unwrap()),
        ],
        ..Default::default()
    };
    let src: Location = format!("oci:{}:bb", plain.display()).parse().unwrap();
    let dst: Location = format!("oci:{}:enc", enc.display()).parse().unwrap();
    let rep = copy(&client, &src, &dst, &opts).await.unwrap();
    assert_eq!(
        rep.encrypted_layers,
        (0..plain_layers.len()).collect::<Vec<_>>()
    );
    assert!(media_types(&enc, "enc")
        .iter()
        .all(|m| m.ends_with("+encrypted")));
    assert!(
        layer_digests(&enc, "enc")
            .iter()
            .all(|d| !plain_layers.contains(d)),
        "ciphertext equals plaintext?"
    );

    // skopeo decrypts it with either key, and the layers are the plain ones again.
    for key in ["rsa-priv.pem", "ec384-priv.pem"] {
        let out = t.path().join(format!("dec-{key}"));
        let st = Command::new("skopeo")
            .args(["copy", "-q", "--decryption-key"])
            .arg(keys.join(key))
            .arg(format!("oci:{}:enc", enc.display()))
            .arg(format!("oci:{}:dec", out.display()))
            .status()
            .unwrap();
        assert!(st.success(), "skopeo could not decrypt with {key}");
        assert_eq!(layer_digests(&out, "dec"), plain_layers, "{key}");
    }
    // And refuses a wrong key.
    let st = Command::new("skopeo")
        .args(["copy", "-q", "--decryption-key"])
        .arg(keys.join("wrong-rsa-priv.pem"))
        .arg(format!("oci:{}:enc", enc.display()))
        .arg(format!("oci:{}:x", t.path().join("nope").display()))
        .output()
        .unwrap();
    assert!(!st.status.success());

    // Push to a registry (docker:// destination) and pull back with image-rs.
    let reg = Registry::start(RegistryOptions::default());
    let pushed: Location = format!("docker://{}/enc/bb:v1", reg.addr())
        .parse()
        .unwrap();
    copy(&client, &dst, &pushed, &CopyOptions::default())
        .await
        .unwrap();
    let store = Store::open(t.path().join("store")).unwrap();
    let puller = Puller::new(Arc::new(client), store);
    let opts = PullOptions {
        layout: Layout::Flat,
        decryption: Arc::new(DecryptionKeys {
            private_keys: vec![PrivateKey::from_file(&keys.join("ec384-priv.pem"), None).unwrap()],
            provider: None,
        }),
        ..Default::default()
    };
    let Location::Registry(r) = &pushed else {
        unreachable!()
    };
    let rootfs = t.path().join("rootfs");
    puller.pull(r, &rootfs, &opts).await.unwrap();
    let expected = fstree::snapshot(&images::umoci_unpack(&l, "bb", &t.path().join("umoci")));
    fstree::compare(&expected, &fstree::snapshot(&rootfs)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_recipient_pulls_through_the_file_key_provider() {
    let Some(keys) = vectors() else {
        eprintln!("skipped: ../shared/vectors/ocicrypt not present");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("plain");
    let l = OciLayout::new(&plain);
    images::build_busybox(&l, "bb");
    let reg = Registry::start(RegistryOptions::default());
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();
    let kek = std::fs::read(keys.join("kbs/default/key/1")).unwrap();
    let opts = CopyOptions {
        recipients: vec![Recipient::Provider {
            kid: "kbs:///default/key/1".into(),
            kek: zeroize::Zeroizing::new(kek),
        }],
        encrypt_layers: Some(vec![-1]),
        ..Default::default()
    };
    let src: Location = format!("oci:{}:bb", plain.display()).parse().unwrap();
    let dst: Location = format!("docker://{}/coco/bb:v1", reg.addr())
        .parse()
        .unwrap();
    let rep = copy(&client, &src, &dst, &opts).await.unwrap();
    assert_eq!(rep.encrypted_layers.len(), 1);
    let Location::Registry(r) = &dst else {
        unreachable!()
    };
    let puller = Puller::new(
        Arc::new(client),
        Store::open(t.path().join("store")).unwrap(),
    );
    // Without the provider: refused, naming the key id.
    let err = puller
        .pull(
            r,
            &t.path().join("denied"),
            &PullOptions {
                layout: Layout::Flat,
                ..Default::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("kbs:///default/key/1"), "{err}");
    assert!(!t.path().join("denied").exists());
    // With it: the same tree as the plain image.
    let opts = PullOptions {
        layout: Layout::Flat,
        decryption: Arc::new(DecryptionKeys {
            private_keys: vec![],
            provider: Some(Arc::new(FileKeyProvider::new(keys.join("kbs")))),
        }),
        ..Default::default()
    };
    let rootfs = t.path().join("rootfs");
    puller.pull(r, &rootfs, &opts).await.unwrap();
    let expected = fstree::snapshot(&images::umoci_unpack(&l, "bb", &t.path().join("umoci")));
    fstree::compare(&expected, &fstree::snapshot(&rootfs)).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_non_distributable_layers_decrypt() {
    let Some(keys) = vectors() else {
        eprintln!("skipped: ../shared/vectors/ocicrypt not present");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("plain");
    let l = OciLayout::new(&plain);
    images::build_busybox(&l, "bb");
    let client = RegistryClient::new(RegistryConfig::default()).unwrap();
    let enc = t.path().join("enc");
    let opts = CopyOptions {
        recipients: vec![Recipient::Jwe(
            PublicKey::from_file(&keys.join("rsa-pub.pem")).unwrap(),
        )],
        ..Default::default()
    };
    let src: Location = format!("oci:{}:bb", plain.display()).parse().unwrap();
    let dst: Location = format!("oci:{}:enc", enc.display()).parse().unwrap();
    copy(&client, &src, &dst, &opts).await.unwrap();

    // Mark the encrypted layers non-distributable (as ocicrypt can produce),
    // then push blobs and the rewritten manifest to a registry.
    let el = OciLayout::new(&enc);
    let mut m = el.manifest("enc");
    for layer in m["layers"].as_array_mut().unwrap() {
        let mt = layer["mediaType"]
            .as_str()
            .unwrap()
            .replace(".layer.v1.", ".layer.nondistributable.v1.");
        layer["mediaType"] = serde_json::Value::from(mt);
    }
    let reg = Registry::start(RegistryOptions::default());
    let r: image_rs::Reference = format!("{}/nd/bb:v1", reg.addr()).parse().unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["digest"].as_str().unwrap().to_string()),
    );
    for d in blobs {
        let digest: image_rs::Digest = d.parse().unwrap();
        let data = std::fs::read(enc.join("blobs/sha256").join(digest.hex())).unwrap();
        client
            .push_blob(&r, &digest, bytes::Bytes::from(data))
            .await
            .unwrap();
    }
    let mb = serde_json::to_vec(&m).unwrap();
    client
        .push_manifest(
            &r,
            "v1",
            "application/vnd.oci.image.manifest.v1+json",
            bytes::Bytes::from(mb),
        )
        .await
        .unwrap();

    let puller = Puller::new(
        Arc::new(client),
        Store::open(t.path().join("store")).unwrap(),
    );
    let opts = PullOptions {
        layout: Layout::Flat,
        decryption: Arc::new(DecryptionKeys {
            private_keys: vec![PrivateKey::from_file(&keys.join("rsa-priv.pem"), None).unwrap()],
            provider: None,
        }),
        ..Default::default()
    };
    let rootfs = t.path().join("rootfs");
    puller.pull(&r, &rootfs, &opts).await.unwrap();
    let expected = fstree::snapshot(&images::umoci_unpack(&l, "bb", &t.path().join("umoci")));
    fstree::compare(&expected, &fstree::snapshot(&rootfs)).unwrap();
}
