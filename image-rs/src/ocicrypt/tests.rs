//! End-to-end tests over the shared vectors (skopeo-made and CoCo-style
//! encrypted OCI layouts) and against skopeo itself.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;
use zeroize::Zeroizing;

use super::keys::tests::vectors;
use super::layer::{encrypt_blob, layer_keys, DecryptionKeys, Recipient};
use super::options::PrivateOptions;
use super::spec;
use super::{Error, FileKeyProvider, HmacMismatch, PrivateKey, PublicKey};
use crate::digest::{Algorithm, Digest};

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

/// The manifest of `tag` in an OCI layout.
fn manifest(layout: &Path, tag: &str) -> Value {
    let index = json(&layout.join("index.json"));
    let desc = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()));
    json(&blob_path(layout, desc["digest"].as_str().unwrap()))
}

fn annotations(layer: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(layer["annotations"].clone()).unwrap_or_default()
}

fn private_key(v: &Path, name: &str) -> PrivateKey {
    PrivateKey::from_file(&v.join("keys").join(name), None).unwrap()
}

fn keys(v: &Path, names: &[&str]) -> DecryptionKeys {
    DecryptionKeys {
        private_keys: names.iter().map(|n| private_key(v, n)).collect(),
        provider: None,
    }
}

fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("+gzip") {
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .unwrap();
    } else if media_type.ends_with("+zstd") {
        zstd::stream::read::Decoder::new(blob)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
    } else {
        out = blob.to_vec();
    }
    out
}

/// Decrypts the (single) layer of `tag` in `layout` with `keys` and checks
/// the whole chain: ciphertext digest, HMAC, plain digest = the plain
/// layout's blob, uncompressed digest = the config's diff_id.
fn check_encrypted_image(v: &Path, layout: &Path, tag: &str, keys: &DecryptionKeys) {
    let m = manifest(layout, tag);
    let layer = &m["layers"][0];
    let media_type = layer["mediaType"].as_str().unwrap();
    assert!(spec::is_encrypted(media_type), "{media_type}");
    let ct_path = blob_path(layout, layer["digest"].as_str().unwrap());
    let ct = std::fs::read(&ct_path).unwrap();
    let ct_digest: Digest = layer["digest"].as_str().unwrap().parse().unwrap();
    ct_digest.verify("ciphertext", &ct).unwrap();
    assert_eq!(ct.len() as u64, layer["size"].as_u64().unwrap());

    let lk = block_on(layer_keys(&annotations(layer), keys)).unwrap();
    let mut d = lk.decrypt(&ct[..]);
    let mut plain = Vec::new();
    d.read_to_end(&mut plain).unwrap();
    assert!(d.verified(), "{tag}: HMAC not verified");
    assert_eq!(plain.len(), ct.len());
    lk.private.digest.verify("decrypted blob", &plain).unwrap();
    // The same bytes as the plain original.
    let original = std::fs::read(blob_path(&v.join("plain"), &lk.private.digest.to_string()))
        .unwrap_or_else(|e| panic!("{tag}: plain layout has no blob {}: {e}", lk.private.digest));
    assert_eq!(plain, original);
    // And the uncompressed tar is the config's diff_id.
    let config = json(&blob_path(layout, m["config"]["digest"].as_str().unwrap()));
    let diff_id: Digest = config["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let tar = decompress(spec::decrypted_media_type(media_type), &plain);
    diff_id.verify("uncompressed layer", &tar).unwrap();
}

#[test]
fn decrypts_every_skopeo_vector() {
    let Some(v) = vectors() else { return };
    let layout = v.join("skopeo-enc");
    for (tag, key) in [
        ("rsa", "rsa-priv.pem"),
        ("ec256", "ec256-priv.pem"),
        ("rsa-ec384", "rsa-priv.pem"),
        ("rsa-ec384", "ec384-priv.pem"),
        ("rsa-zstd", "rsa-priv.pem"),
    ] {
        check_encrypted_image(&v, &layout, tag, &keys(&v, &[key]));
    }
    // The zstd image really is zstd inside.
    let m = manifest(&layout, "rsa-zstd");
    assert_eq!(m["layers"][0]["mediaType"], spec::LAYER_TAR_ZSTD_ENCRYPTED);
}

#[test]
fn decrypts_coco_vector_through_file_provider() {
    let Some(v) = vectors() else { return };
    let keys = DecryptionKeys {
        private_keys: vec![private_key(&v, "rsa-priv.pem")],
        provider: Some(Arc::new(FileKeyProvider::new(v.join("keys/kbs")))),
    };
    check_encrypted_image(&v, &v.join("coco-enc"), "coco", &keys);

    // Without a provider the error names the kid.
    let no_provider = DecryptionKeys {
        private_keys: vec![],
        provider: None,
    };
    let m = manifest(&v.join("coco-enc"), "coco");
    let e = block_on(layer_keys(&annotations(&m["layers"][0]), &no_provider)).unwrap_err();
    assert!(e.to_string().contains("kbs:///default/key/1"), "{e}");
    assert!(e.to_string().contains("no key provider"), "{e}");
    // A provider without that key: the error says which file was missing.
    let empty = tempfile::tempdir().unwrap();
    let wrong = DecryptionKeys {
        private_keys: vec![],
        provider: Some(Arc::new(FileKeyProvider::new(empty.path()))),
    };
    let e = block_on(layer_keys(&annotations(&m["layers"][0]), &wrong)).unwrap_err();
    assert!(e.to_string().contains("default/key/1"), "{e}");
}

#[test]
fn wrong_key_names_recipients_and_keys_tried() {
    let Some(v) = vectors() else { return };
    let m = manifest(&v.join("skopeo-enc"), "rsa-ec384");
    let e = block_on(layer_keys(
        &annotations(&m["layers"][0]),
        &keys(&v, &["wrong-rsa-priv.pem"]),
    ))
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::NoLayerKey { .. }));
    assert!(msg.contains("RSA-OAEP (RSA 2048)"), "{msg}");
    assert!(msg.contains("ECDH-ES+A256KW (P-384)"), "{msg}");
    assert!(
        msg.contains("none of the 1 private key tried (RSA 2048)"),
        "{msg}"
    );
    // No key bytes in the message: the wrong key's modulus in base64 would be long.
    assert!(msg.len() < 600, "{msg}");
}

#[test]
fn tampering_is_detected() {
    let Some(v) = vectors() else { return };
    let layout = v.join("skopeo-enc");
    let m = manifest(&layout, "rsa");
    let layer = &m["layers"][0];
    let ct = std::fs::read(blob_path(&layout, layer["digest"].as_str().unwrap())).unwrap();
    let keys = keys(&v, &["rsa-priv.pem"]);
    let ann = annotations(layer);
    let lk = block_on(layer_keys(&ann, &keys)).unwrap();

    // A flipped ciphertext byte: the read to EOF fails with HmacMismatch.
    let mut bad = ct.clone();
    bad[ct.len() / 2] ^= 0x20;
    let err = lk
        .decrypt(&bad[..])
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(HmacMismatch::is(&err), "{err}");

    // A different pubopts HMAC: same.
    let mut public = lk.public.clone();
    public.hmac[31] ^= 1;
    let mut ann2 = ann.clone();
    ann2.insert(spec::ANNOTATION_PUBOPTS.into(), public.to_annotation());
    let lk2 = block_on(layer_keys(&ann2, &keys)).unwrap();
    let err = lk2
        .decrypt(&ct[..])
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(HmacMismatch::is(&err), "{err}");

    // Private options re-wrapped with another digest (anyone holding the
    // public key can do that): the HMAC still matches, so the caller's check
    // of the decrypted bytes against `private.digest` is what catches it —
    // and the manifest digest / signature is what makes the JWE itself
    // trustworthy.
    let forged = PrivateOptions::new(
        *lk.private.symkey,
        lk.private.nonce,
        Digest::of(Algorithm::Sha256, b"something else"),
    );
    let mut ann3 = ann.clone();
    ann3.insert(
        spec::ANNOTATION_JWE.into(),
        super::jwe::wrap(
            &forged.to_json(),
            &[private_key(&v, "rsa-priv.pem").public_key()],
        )
        .unwrap(),
    );
    let lk3 = block_on(layer_keys(&ann3, &keys)).unwrap();
    let mut plain = Vec::new();
    let mut d = lk3.decrypt(&ct[..]);
    d.read_to_end(&mut plain).unwrap();
    assert!(d.verified());
    assert!(lk3.private.digest.verify("decrypted blob", &plain).is_err());

    // A pubopts with another cipher is refused up front.
    let mut ann4 = ann.clone();
    ann4.insert(
        spec::ANNOTATION_PUBOPTS.into(),
        STANDARD.encode(br#"{"cipher":"AES_256_GCM","hmac":"","cipheroptions":{}}"#),
    );
    let e = block_on(layer_keys(&ann4, &keys)).unwrap_err();
    assert!(e.to_string().contains("AES_256_GCM"), "{e}");
}

#[test]
fn unsupported_and_missing_wrappings() {
    let Some(v) = vectors() else { return };
    let m = manifest(&v.join("skopeo-enc"), "rsa");
    let mut ann = annotations(&m["layers"][0]);
    let jwe = ann.remove(spec::ANNOTATION_JWE).unwrap();
    let keys = keys(&v, &["rsa-priv.pem"]);
    assert!(matches!(
        block_on(layer_keys(&ann, &keys)),
        Err(Error::NoWrappedKey)
    ));
    ann.insert("org.opencontainers.image.enc.keys.pgp".into(), jwe);
    let e = block_on(layer_keys(&ann, &keys)).unwrap_err();
    assert!(e.to_string().contains("pgp (not supported"), "{e}");
    ann.remove(spec::ANNOTATION_PUBOPTS);
    assert!(matches!(
        block_on(layer_keys(&ann, &keys)),
        Err(Error::MissingPubopts)
    ));
}

#[test]
fn encrypt_blob_for_every_recipient_kind() {
    let Some(v) = vectors() else { return };
    let plain_blob = std::fs::read(v.join(
        "plain/blobs/sha256/62df51ff6fab7430b3b43ac47859922c02b0a64e403b42a0d1fa31552d44c892",
    ))
    .unwrap();
    let kbs = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(kbs.path().join("default/key")).unwrap();
    std::fs::write(kbs.path().join("default/key/9"), [42u8; 32]).unwrap();
    let p521 = PrivateKey::P521(p521::SecretKey::random(&mut rand_core::OsRng));
    let recipients = [
        Recipient::Jwe(private_key(&v, "rsa-priv.pem").public_key()),
        Recipient::Jwe(p521.public_key()),
        Recipient::Provider {
            kid: "kbs:///default/key/9".into(),
            kek: Zeroizing::new(vec![42u8; 32]),
        },
    ];
    let mut ct = Vec::new();
    let enc = encrypt_blob(&plain_blob[..], &mut ct, spec::LAYER_TAR_GZIP, &recipients).unwrap();
    assert_eq!(enc.media_type, spec::LAYER_TAR_GZIP_ENCRYPTED);
    assert_eq!(enc.size, plain_blob.len() as u64);
    enc.digest.verify("ciphertext", &ct).unwrap();
    assert_eq!(enc.plain_digest, Digest::of(Algorithm::Sha256, &plain_blob));
    assert_eq!(enc.annotations.len(), 3);
    assert!(format!("{:?}", recipients[2]).contains("kbs:///default/key/9"));
    assert!(!format!("{:?}", recipients[2]).contains("42"));

    let by_rsa = keys(&v, &["rsa-priv.pem"]);
    let by_p521 = DecryptionKeys {
        private_keys: vec![p521],
        provider: None,
    };
    let by_kbs = DecryptionKeys {
        private_keys: vec![],
        provider: Some(Arc::new(FileKeyProvider::new(kbs.path()))),
    };
    for keys in [by_rsa, by_p521, by_kbs] {
        let lk = block_on(layer_keys(&enc.annotations, &keys)).unwrap();
        let mut out = Vec::new();
        let mut d = lk.decrypt(&ct[..]);
        d.read_to_end(&mut out).unwrap();
        assert!(d.verified());
        assert_eq!(out, plain_blob);
    }
    assert!(matches!(
        encrypt_blob(
            &b""[..],
            Vec::new(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &recipients
        ),
        Err(Error::MediaType(_))
    ));
    assert!(matches!(
        encrypt_blob(&b""[..], Vec::new(), spec::LAYER_TAR, &[]),
        Err(Error::NoRecipients)
    ));
}

// --- interop with skopeo -------------------------------------------------

fn skopeo(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("skopeo")
        .arg("--insecure-policy")
        .args(args)
        .output()
    {
        Ok(o) => Some(o),
        Err(e) => {
            eprintln!("skipping: skopeo not runnable: {e}");
            None
        }
    }
}

fn write_blob(layout: &Path, data: &[u8]) -> Digest {
    let d = Digest::of(Algorithm::Sha256, data);
    let p = blob_path(layout, &d.to_string());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    d
}

/// Builds an OCI layout holding the `plain` vector image with its layer
/// encrypted by our code for `recipients`, tagged `tag`.
fn build_encrypted_layout(v: &Path, dir: &Path, tag: &str, recipients: &[Recipient]) {
    let plain = v.join("plain");
    let mut m = manifest(&plain, "plain");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let config = std::fs::read(blob_path(&plain, m["config"]["digest"].as_str().unwrap())).unwrap();
    write_blob(dir, &config);
    let layer = m["layers"][0].clone();
    let plain_blob = std::fs::read(blob_path(&plain, layer["digest"].as_str().unwrap())).unwrap();
    let mut ct = Vec::new();
    let enc = encrypt_blob(
        &plain_blob[..],
        &mut ct,
        layer["mediaType"].as_str().unwrap(),
        recipients,
    )
    .unwrap();
    assert_eq!(write_blob(dir, &ct), enc.digest);
    m["layers"][0] = serde_json::json!({
        "mediaType": enc.media_type,
        "digest": enc.digest.to_string(),
        "size": enc.size,
        "annotations": enc.annotations,
    });
    let mbytes = serde_json::to_vec(&m).unwrap();
    let md = write_blob(dir, &mbytes);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(),
            "size": mbytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn skopeo_decrypts_what_we_encrypt() {
    let Some(v) = vectors() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let plain_layer = manifest(&v.join("plain"), "plain")["layers"][0].clone();
    let rsa_pub = PublicKey::from_file(&v.join("keys/rsa-pub.pem")).unwrap();
    let ec384_pub = PublicKey::from_file(&v.join("keys/ec384-pub.pem")).unwrap();
    let ec256_pub = PublicKey::from_file(&v.join("keys/ec256-pub.pem")).unwrap();
    for (name, recipients, key) in [
        ("one", vec![Recipient::Jwe(rsa_pub.clone())], "rsa-priv.pem"),
        ("ec", vec![Recipient::Jwe(ec256_pub)], "ec256-priv.pem"),
        (
            "two",
            vec![Recipient::Jwe(rsa_pub), Recipient::Jwe(ec384_pub)],
            "ec384-priv.pem",
        ),
    ] {
        let enc = tmp.path().join(format!("enc-{name}"));
        let out = tmp.path().join(format!("out-{name}"));
        build_encrypted_layout(&v, &enc, "enc", &recipients);
        let key = v.join("keys").join(key);
        let Some(o) = skopeo(&[
            "copy",
            "--decryption-key",
            key.to_str().unwrap(),
            &format!("oci:{}:enc", enc.display()),
            &format!("oci:{}:dec", out.display()),
        ]) else {
            return;
        };
        assert!(
            o.status.success(),
            "skopeo could not decrypt our {name}-recipient image: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let layer = &manifest(&out, "dec")["layers"][0];
        assert_eq!(layer["digest"], plain_layer["digest"], "{name}");
        assert_eq!(layer["mediaType"], spec::LAYER_TAR_GZIP);
        assert!(layer
            .get("annotations")
            .is_none_or(|a| a.as_object().is_none_or(|a| !a
                .keys()
                .any(|k| k.starts_with("org.opencontainers.image.enc")))));
    }
    // And with the wrong key skopeo refuses it too.
    let enc = tmp.path().join("enc-one");
    let wrong = v.join("keys/wrong-rsa-priv.pem");
    if let Some(o) = skopeo(&[
        "copy",
        "--decryption-key",
        wrong.to_str().unwrap(),
        &format!("oci:{}:enc", enc.display()),
        &format!("oci:{}:dec", tmp.path().join("out-wrong").display()),
    ]) {
        assert!(!o.status.success());
    }
}

#[test]
fn we_decrypt_what_skopeo_encrypts_for_p521() {
    let Some(v) = vectors() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (privp, pubp) = (tmp.path().join("p521.pem"), tmp.path().join("p521-pub.pem"));
    let gen = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-521",
            "-out",
        ])
        .arg(&privp)
        .status();
    if !matches!(gen, Ok(s) if s.success()) {
        eprintln!("skipping: openssl could not make a P-521 key");
        return;
    }
    let st = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&privp)
        .arg("-out")
        .arg(&pubp)
        .status()
        .unwrap();
    assert!(st.success());
    let enc = tmp.path().join("enc");
    for tag in ["plain", "plain-zstd"] {
        let Some(o) = skopeo(&[
            "copy",
            "--encryption-key",
            &format!("jwe:{}", pubp.display()),
            &format!("oci:{}:{tag}", v.join("plain").display()),
            &format!("oci:{}:{tag}", enc.display()),
        ]) else {
            return;
        };
        assert!(
            o.status.success(),
            "skopeo encrypt: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let keys = DecryptionKeys {
            private_keys: vec![PrivateKey::from_file(&privp, None).unwrap()],
            provider: None,
        };
        check_encrypted_image(&v, &enc, tag, &keys);
    }
}
