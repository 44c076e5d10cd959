//! Signature policy (issue 9) with real peers: images signed by skopeo
//! (sigstore attachments and GPG lookaside), verified and pulled by image-rs;
//! unsigned, wrongly signed and re-tagged images refused before any layer is
//! fetched; referrers listed from the fallback tag; image-rs signatures
//! verified by skopeo.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use image_rs::copy::{copy, CopyOptions, Location};
use image_rs::ocicrypt::provider::FileKeyProvider;
use image_rs::signature::{RegistriesD, SigningKey};
use image_rs::{
    Digest, Layout, PullOptions, Puller, Reference, RegistryClient, RegistryConfig,
    SignaturePolicy, SignatureVerifier, Store,
};
use integration_tests::images::{self, LayerBuilder};
use integration_tests::layout::{self, OciLayout};
use integration_tests::proxy::Proxy;
use integration_tests::push::{self, PushOptions};
use integration_tests::raw::{self, RawBlob};
use integration_tests::registry::{Registry, RegistryOptions};
use integration_tests::signing::{self, GpgHome, SkopeoSign};
use serde_json::json;

/// One test's world: a registry, a scratch dir, a busybox layout (tag `bb`)
/// and a second image with one more layer (tag `bb2`).
struct World {
    registry: Registry,
    dir: tempfile::TempDir,
    layout: OciLayout,
}

impl World {
    fn new() -> World {
        let registry = Registry::start(RegistryOptions::default());
        let dir = tempfile::Builder::new()
            .prefix("sealpod-sig-")
            .tempdir()
            .expect("scratch dir");
        let layout = OciLayout::new(dir.path().join("layout"));
        images::build_busybox(&layout, "bb");
        LayerBuilder::new(&layout, "bb", "bb2")
            .layer(|root| fs::write(root.join("etc/moved-tag"), b"other content\n"));
        World {
            registry,
            dir,
            layout,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn reference(&self, repo_tag: &str) -> Reference {
        format!("{}/{repo_tag}", self.registry.addr())
            .parse()
            .expect("reference")
    }

    /// A sigstore key made by openssl, also as a cosign encrypted key.
    fn sigstore_key(&self, name: &str) -> TestKey {
        let (openssl_private, public, der) = signing::openssl_p256_key(self.dir.path(), name);
        let k = SigningKey::from_pkcs8_der(&der).expect("openssl's PKCS#8 key");
        let key = self.path(&format!("{name}.key"));
        let pass = self.path(&format!("{name}.pass"));
        fs::write(&key, k.to_encrypted_pem(b"pass phrase").unwrap()).unwrap();
        fs::write(&pass, b"pass phrase\n").unwrap();
        TestKey {
            key,
            pass,
            public,
            openssl_private,
        }
    }

    /// Pushes `tag` of the layout as `repo_tag`, signed with `k` as a
    /// sigstore attachment: by skopeo when it supports sigstore, else
    /// (Debian's skopeo) pushed by skopeo and signed by openssl.
    fn push_sigstore_signed(&self, tag: &str, repo_tag: &str, regd: &Path, k: &TestKey) {
        if skopeo_sigstore(self, regd, k) {
            signing::skopeo_push_signed(
                &self.layout,
                tag,
                &self.registry,
                repo_tag,
                regd,
                SkopeoSign::Sigstore {
                    key: &k.key,
                    passphrase_file: &k.pass,
                },
            );
        } else {
            push::push(
                &self.layout,
                tag,
                &self.registry,
                repo_tag,
                PushOptions::default(),
            );
            let (repo, t) = repo_tag.rsplit_once(':').unwrap();
            signing::attach_openssl_sigstore(
                &self.registry,
                repo,
                t,
                &k.openssl_private,
                self.dir.path(),
            );
        }
    }

    fn write_policy(&self, name: &str, scope: &str, req: serde_json::Value) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, signing::policy_json(scope, req)).unwrap();
        p
    }

    fn store(&self, name: &str) -> Store {
        Store::open(self.path(name)).expect("store")
    }
}

struct TestKey {
    /// Cosign-format encrypted private key.
    key: PathBuf,
    /// Its passphrase file.
    pass: PathBuf,
    /// Public key PEM (openssl).
    public: PathBuf,
    /// Private key PEM (openssl).
    openssl_private: PathBuf,
}

/// Whether skopeo here signs with sigstore keys (probed once per process).
fn skopeo_sigstore(w: &World, regd: &Path, k: &TestKey) -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        let has = signing::skopeo_has_sigstore(regd, &w.registry, &k.key, &k.pass, &w.layout, "bb");
        if !has {
            eprintln!("note: this skopeo is built without sigstore (Debian); sigstore signatures are made with openssl in the same layout instead");
        }
        has
    })
}

fn client() -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(RegistryConfig::default()).expect("client"))
}

fn opts(verifier: SignatureVerifier) -> PullOptions {
    PullOptions {
        layout: Layout::Flat,
        signature: Some(Arc::new(verifier)),
        ..PullOptions::default()
    }
}

fn verifier(policy: &Path) -> SignatureVerifier {
    SignatureVerifier::new(SignaturePolicy::from_file(policy).expect("policy"))
}

/// Files (recursively) under the store's layers and blobs, and its images.
fn store_contents(store: &Store) -> usize {
    fn count(p: &Path) -> usize {
        fs::read_dir(p)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            1 + count(&p)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(&store.root().join("layers"))
        + count(&store.root().join("blobs"))
        + store.images().expect("images").len()
}

/// The manifest digest `r` resolves to (through a scratch store).
async fn manifest_digest(w: &World, r: &Reference) -> Digest {
    Puller::new(client(), w.store("digests"))
        .manifest_digest(r)
        .await
        .unwrap()
}

/// Pulls expecting a refusal; checks the error is one line naming the
/// policy, and that nothing reached the store. Returns the message.
async fn expect_denied(w: &World, r: &Reference, v: SignatureVerifier, store: &str) -> String {
    let st = w.store(store);
    let e = Puller::new(client(), st.clone())
        .pull(r, &w.path(&format!("{store}-rootfs")), &opts(v))
        .await
        .expect_err("the policy should refuse this image")
        .to_string();
    assert!(!e.contains('\n'), "not one line: {e}");
    assert!(e.contains("rejected by the signature policy"), "{e}");
    assert_eq!(store_contents(&st), 0, "a refused pull changed the store");
    assert!(!w.path(&format!("{store}-rootfs")).exists());
    e
}

#[tokio::test(flavor = "multi_thread")]
async fn sigstore_signed_by_skopeo_verifies_and_pulls() {
    let w = World::new();
    let regd = w.path("registries.d");
    signing::write_registries_d(&regd, &w.registry, None);
    let k = w.sigstore_key("team");
    let public = k.public.clone();
    w.push_sigstore_signed("bb", "sig/app:v1", &regd, &k);
    let scope = format!("{}/sig", w.registry.addr());
    let policy = w.write_policy(
        "policy.json",
        &scope,
        json!({"type": "sigstoreSigned", "keyPath": public}),
    );
    let r = w.reference("sig/app:v1");
    let st = w.store("store");
    let rootfs = w.path("rootfs");
    let report = Puller::new(client(), st.clone())
        .pull(&r, &rootfs, &opts(verifier(&policy)))
        .await
        .expect("a skopeo-signed image passes the policy");
    assert!(rootfs.join("bin/busybox").is_file());
    assert!(!report.layers.is_empty());

    // The same check without pulling says what was accepted.
    let accepted = Puller::new(client(), w.store("store2"))
        .check_signatures(&r, &verifier(&policy))
        .await
        .expect("verify");
    assert_eq!(accepted.scope, format!("transports.docker[{scope:?}]"));
    assert!(
        accepted.requirements[0].contains("sigstore signature sha256-"),
        "{:?}",
        accepted.requirements
    );
    assert_eq!(accepted.digest, report.manifest_digest.to_string());

    // A kbs:/// keyPath is resolved through the KeyProvider trait.
    let kbs_dir = w.path("kbs");
    fs::create_dir_all(kbs_dir.join("default/cosign")).unwrap();
    fs::copy(&public, kbs_dir.join("default/cosign/team-pub")).unwrap();
    let kbs_policy = w.write_policy(
        "kbs-policy.json",
        &scope,
        json!({"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign/team-pub"}),
    );
    let v = verifier(&kbs_policy).with_key_provider(Arc::new(FileKeyProvider::new(&kbs_dir)));
    let accepted = Puller::new(client(), w.store("store3"))
        .check_signatures(&r, &v)
        .await
        .expect("verify with a KBS key");
    assert!(accepted.requirements[0].contains("kbs:///default/cosign/team-pub"));
    // Without a provider the kbs:/// key is an error, not an accept.
    let e = Puller::new(client(), w.store("store4"))
        .check_signatures(&r, &verifier(&kbs_policy))
        .await
        .expect_err("no key provider");
    assert!(e.to_string().contains("key provider"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn unsigned_other_key_and_moved_tag_are_rejected_before_any_layer() {
    let w = World::new();
    let regd = w.path("registries.d");
    signing::write_registries_d(&regd, &w.registry, None);
    let team = w.sigstore_key("team");
    let intruder = w.sigstore_key("intruder");
    let policy = w.write_policy(
        "policy.json",
        &w.registry.addr(),
        json!({"type": "sigstoreSigned", "keyPath": team.public}),
    );
    // Unsigned, through a proxy that records every request.
    push::push(
        &w.layout,
        "bb",
        &w.registry,
        "sig/unsigned:v1",
        PushOptions::default(),
    );
    let proxy = Proxy::start(&w.registry.addr());
    let via_proxy: Reference = format!("{}/sig/unsigned:v1", proxy.addr()).parse().unwrap();
    let proxied_policy = w.write_policy(
        "proxied.json",
        &proxy.addr(),
        json!({"type": "sigstoreSigned", "keyPath": team.public}),
    );
    let e = expect_denied(&w, &via_proxy, verifier(&proxied_policy), "s1").await;
    assert!(e.contains("found 0 sigstore signatures"), "{e}");
    assert!(
        e.contains(&format!("transports.docker[\"{}\"]", proxy.addr())),
        "{e}"
    );
    let m = raw::get_manifest(&w.registry.addr(), "sig/unsigned", "v1", None).json();
    let layers: Vec<String> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let reqs = proxy.requests();
    assert!(
        reqs.iter().any(|r| r.path.contains("/manifests/")),
        "proxy saw nothing: {reqs:?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.path.contains("/blobs/") && layers.iter().any(|l| r.path.ends_with(l))),
        "a refused pull fetched a layer: {reqs:?}"
    );

    // Signed by another key.
    w.push_sigstore_signed("bb", "sig/other:v1", &regd, &intruder);
    let e = expect_denied(&w, &w.reference("sig/other:v1"), verifier(&policy), "s2").await;
    assert!(
        e.contains("found 1 sigstore signature(s), none acceptable"),
        "{e}"
    );
    assert!(e.contains("not signed by key"), "{e}");

    // Signed, then the tag moved to other (unsigned) content.
    w.push_sigstore_signed("bb", "sig/app:v1", &regd, &team);
    let r = w.reference("sig/app:v1");
    Puller::new(client(), w.store("ok"))
        .check_signatures(&r, &verifier(&policy))
        .await
        .expect("signed before the move");
    push::push(
        &w.layout,
        "bb2",
        &w.registry,
        "sig/app:v1",
        PushOptions::default(),
    );
    let e = expect_denied(&w, &r, verifier(&policy), "s3").await;
    assert!(e.contains("found 0 sigstore signatures"), "{e}");

    // A valid signature (of sig/other's manifest) copied to the moved tag's
    // attachment: it verifies with its key but names another digest.
    let moved = manifest_digest(&w, &r).await;
    let other = manifest_digest(&w, &w.reference("sig/other:v1")).await;
    let sig_manifest = raw::get_manifest(
        &w.registry.addr(),
        "sig/other",
        &format!("sha256-{}.sig", other.hex()),
        None,
    );
    assert_eq!(sig_manifest.status, 200, "no attachment for sig/other");
    let sm = sig_manifest.json();
    for d in std::iter::once(&sm["config"]).chain(sm["layers"].as_array().unwrap().iter()) {
        let digest = d["digest"].as_str().unwrap();
        let blob = raw::get_blob(&w.registry.addr(), "sig/other", digest, None).expect("blob");
        raw::push_raw_blob(
            &w.registry,
            "sig/app",
            &RawBlob::new(d["mediaType"].as_str().unwrap(), blob.body),
        );
    }
    raw::push_raw_manifest(
        &w.registry,
        "sig/app",
        &format!("sha256-{}.sig", moved.hex()),
        layout::OCI_MANIFEST,
        &sig_manifest.body,
    );
    let trusting_intruder = w.write_policy(
        "intruder.json",
        &w.registry.addr(),
        json!({"type": "sigstoreSigned", "keyPath": intruder.public,
               "signedIdentity": {"type": "matchRepository"}}),
    );
    let e = expect_denied(&w, &r, verifier(&trusting_intruder), "s4").await;
    assert!(e.contains("is not the pulled"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn gpg_signed_by_skopeo_with_lookaside_verifies() {
    let w = World::new();
    let lookaside = w.path("lookaside");
    let regd = w.path("registries.d");
    signing::write_registries_d(&regd, &w.registry, Some(&lookaside));
    let rsa = GpgHome::new("rsa2048");
    let ed = GpgHome::new("ed25519");
    let rsa_pub = rsa.export_public(&w.path("rsa.asc"));
    let ed_pub = ed.export_public(&w.path("ed.asc"));
    signing::skopeo_push_signed(
        &w.layout,
        "bb",
        &w.registry,
        "gpg/app:v1",
        &regd,
        SkopeoSign::Gpg(&rsa),
    );
    signing::skopeo_push_signed(
        &w.layout,
        "bb2",
        &w.registry,
        "gpg/ed:v1",
        &regd,
        SkopeoSign::Gpg(&ed),
    );
    let files: Vec<_> = walk(&lookaside);
    assert_eq!(files.len(), 2, "skopeo wrote {files:?}");
    assert!(files.iter().all(|f| f.ends_with("signature-1")));

    let regs = RegistriesD::load_dir(&regd).unwrap();
    let scope = format!("{}/gpg", w.registry.addr());
    let policy = w.write_policy(
        "policy.json",
        &scope,
        json!({"type": "signedBy", "keyType": "GPGKeys", "keyPath": rsa_pub}),
    );
    let r = w.reference("gpg/app:v1");
    let st = w.store("store");
    Puller::new(client(), st.clone())
        .pull(
            &r,
            &w.path("rootfs"),
            &opts(verifier(&policy).with_registries_d(regs.clone())),
        )
        .await
        .expect("a GPG-signed image passes the policy");
    assert!(w.path("rootfs/bin/busybox").is_file());

    // Ed25519 (EdDSA) signatures verify too, with keyPaths.
    let both = w.write_policy(
        "both.json",
        &scope,
        json!({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": [rsa_pub, ed_pub]}),
    );
    let a = Puller::new(client(), w.store("v"))
        .check_signatures(
            &w.reference("gpg/ed:v1"),
            &verifier(&both).with_registries_d(regs.clone()),
        )
        .await
        .expect("ed25519 GPG signature");
    assert!(
        a.requirements[0].contains(&ed.fingerprint),
        "{:?}",
        a.requirements
    );

    // Signed by a key the policy does not trust.
    let e = expect_denied(
        &w,
        &w.reference("gpg/ed:v1"),
        verifier(&policy).with_registries_d(regs.clone()),
        "s1",
    )
    .await;
    assert!(e.contains("not in the policy's keyring"), "{e}");

    // No lookaside configured: nothing found, refused.
    let e = expect_denied(&w, &r, verifier(&policy), "s2").await;
    assert!(e.contains("no lookaside storage configured"), "{e}");

    // A valid signature moved to another image's location: the payload
    // names another digest.
    let app_digest = manifest_digest(&w, &r).await;
    let ed_digest = manifest_digest(&w, &w.reference("gpg/ed:v1")).await;
    let src = lookaside.join(format!("gpg/app@sha256={}/signature-1", app_digest.hex()));
    let dst = lookaside.join(format!("gpg/ed@sha256={}/signature-2", ed_digest.hex()));
    fs::copy(&src, &dst).unwrap();
    let e = expect_denied(
        &w,
        &w.reference("gpg/ed:v1"),
        verifier(&policy).with_registries_d(regs.clone()),
        "s3",
    )
    .await;
    assert!(e.contains("found 2 GPG signature(s)"), "{e}");
    assert!(e.contains("is not the pulled"), "{e}");

    // A tampered signature file fails.
    let mut bytes = fs::read(&src).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x55;
    fs::write(&src, &bytes).unwrap();
    expect_denied(&w, &r, verifier(&policy).with_registries_d(regs), "s4").await;
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_fallback_tag_lists_an_sbom() {
    let w = World::new();
    let digest = push::push(
        &w.layout,
        "bb",
        &w.registry,
        "ref/app:v1",
        PushOptions::default(),
    );
    let subject = raw::get_manifest(&w.registry.addr(), "ref/app", "v1", None);
    // An SBOM artifact referring to the image.
    let empty = RawBlob::new("application/vnd.oci.empty.v1+json", b"{}".to_vec());
    let sbom = RawBlob::new(
        "application/spdx+json",
        br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec(),
    );
    raw::push_raw_blob(&w.registry, "ref/app", &empty);
    raw::push_raw_blob(&w.registry, "ref/app", &sbom);
    let artifact = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": layout::OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": empty.descriptor(),
        "layers": [sbom.descriptor()],
        "subject": {"mediaType": layout::OCI_MANIFEST, "digest": digest, "size": subject.body.len()},
        "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }))
    .unwrap();
    let artifact_digest = layout::sha256_digest(&artifact);
    raw::push_raw_manifest(
        &w.registry,
        "ref/app",
        &artifact_digest,
        layout::OCI_MANIFEST,
        &artifact,
    );
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": layout::OCI_INDEX,
        "manifests": [{
            "mediaType": layout::OCI_MANIFEST, "digest": artifact_digest, "size": artifact.len(),
            "artifactType": "application/spdx+json",
            "annotations": {"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
        }],
    }))
    .unwrap();
    let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    raw::push_raw_manifest(&w.registry, "ref/app", &tag, layout::OCI_INDEX, &index);

    let r = w.reference("ref/app:v1");
    let d: image_rs::Digest = digest.parse().unwrap();
    let list = image_rs::signature::referrers::list(&client(), &r, &d, None)
        .await
        .unwrap();
    assert_eq!(
        list.source,
        image_rs::signature::referrers::ReferrersSource::FallbackTag
    );
    assert_eq!(list.manifests.len(), 1);
    assert_eq!(list.manifests[0].digest.to_string(), artifact_digest);
    let filtered = image_rs::signature::referrers::list(
        &client(),
        &r,
        &d,
        Some("application/vnd.example+json"),
    )
    .await
    .unwrap();
    assert!(filtered.manifests.is_empty());

    // The CLI lists it too.
    let bin = integration_tests::agent::workspace_bin("image-rs");
    let out = Command::new(&bin)
        .args([
            "referrers",
            &r.to_string(),
            "--artifact-type",
            "application/spdx+json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&artifact_digest), "{stdout}");
    assert!(stdout.contains("application/spdx+json"), "{stdout}");
    assert!(
        stdout.contains("org.opencontainers.image.created=2026-01-01T00:00:00Z"),
        "{stdout}"
    );
    // No referrers: an empty list, not an error.
    let none = push::push(
        &w.layout,
        "bb2",
        &w.registry,
        "ref/none:v1",
        PushOptions::default(),
    );
    let list = image_rs::signature::referrers::list(
        &client(),
        &w.reference("ref/none:v1"),
        &none.parse().unwrap(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        list.source,
        image_rs::signature::referrers::ReferrersSource::None
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn image_rs_signature_verifies_with_skopeo() {
    let w = World::new();
    let regd = w.path("registries.d");
    signing::write_registries_d(&regd, &w.registry, None);
    let team = w.sigstore_key("team");
    let other = w.sigstore_key("other");
    push::push(
        &w.layout,
        "bb",
        &w.registry,
        "src/app:v1",
        PushOptions::default(),
    );
    let has_sigstore = skopeo_sigstore(&w, &regd, &team);

    // Library copy with signing.
    let signing_key =
        SigningKey::from_encrypted_pem(&fs::read(&team.key).unwrap(), b"pass phrase").unwrap();
    let src: Location = format!("docker://{}/src/app:v1", w.registry.addr())
        .parse()
        .unwrap();
    let dst: Location = format!("docker://{}/signed/app:v1", w.registry.addr())
        .parse()
        .unwrap();
    let rep = copy(
        &client(),
        &src,
        &dst,
        &CopyOptions {
            sign_by_sigstore_key: Some(signing_key),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(rep.signature_manifest.is_some());
    let good = w.write_policy(
        "good.json",
        &w.registry.addr(),
        json!({"type": "sigstoreSigned", "keyPath": team.public}),
    );
    let bad = w.write_policy(
        "bad.json",
        &w.registry.addr(),
        json!({"type": "sigstoreSigned", "keyPath": other.public}),
    );
    let check_with_peer = |repo: &str, out_name: &str| {
        if has_sigstore {
            let out = signing::skopeo_pull_with_policy(
                &w.registry,
                &format!("{repo}:v1"),
                &good,
                &regd,
                &w.path(out_name),
            );
            assert!(
                out.status.success(),
                "skopeo refused image-rs's signature: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let out = signing::skopeo_pull_with_policy(
                &w.registry,
                &format!("{repo}:v1"),
                &bad,
                &regd,
                &w.path(&format!("{out_name}-bad")),
            );
            assert!(
                !out.status.success(),
                "skopeo accepted a signature by the wrong key"
            );
        } else {
            // skopeo here cannot read sigstore signatures: check the stored
            // attachment byte for byte with openssl and the documented layout.
            use base64::Engine as _;
            let m = raw::get_manifest(&w.registry.addr(), repo, "v1", None);
            let digest = layout::sha256_digest(&m.body);
            let sm = raw::get_manifest(
                &w.registry.addr(),
                repo,
                &format!("sha256-{}.sig", digest.trim_start_matches("sha256:")),
                None,
            );
            assert_eq!(sm.status, 200, "no sha256-<hex>.sig attachment");
            let sm = sm.json();
            assert_eq!(sm["mediaType"], layout::OCI_MANIFEST);
            let l = &sm["layers"][0];
            assert_eq!(
                l["mediaType"],
                "application/vnd.dev.cosign.simplesigning.v1+json"
            );
            let sig = base64::engine::general_purpose::STANDARD
                .decode(
                    l["annotations"]["dev.cosignproject.cosign/signature"]
                        .as_str()
                        .unwrap(),
                )
                .unwrap();
            let payload = raw::get_blob(
                &w.registry.addr(),
                repo,
                l["digest"].as_str().unwrap(),
                None,
            )
            .unwrap()
            .body;
            let p: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(
                p["critical"]["image"]["docker-manifest-digest"],
                digest.as_str()
            );
            assert_eq!(p["critical"]["type"], "cosign container image signature");
            assert_eq!(
                p["critical"]["identity"]["docker-reference"],
                format!("{}/{repo}:v1", w.registry.addr())
            );
            assert!(
                signing::openssl_verify(&team.public, &payload, &sig, w.dir.path()),
                "openssl refused image-rs's signature"
            );
            assert!(
                !signing::openssl_verify(&other.public, &payload, &sig, w.dir.path()),
                "openssl accepted the wrong key"
            );
        }
    };
    check_with_peer("signed/app", "o1");

    // The CLI: copy --sign-by-sigstore-private-key, verify, and a denied pull.
    let bin = integration_tests::agent::workspace_bin("image-rs");
    let out = Command::new(&bin)
        .args([
            "copy",
            &format!("docker://{}/src/app:v1", w.registry.addr()),
            &format!("docker://{}/cli/app:v1", w.registry.addr()),
        ])
        .arg("--sign-by-sigstore-private-key")
        .arg(&team.key)
        .arg("--sign-passphrase-file")
        .arg(&team.pass)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_with_peer("cli/app", "o2");
    let out = Command::new(&bin)
        .args([
            "verify",
            &format!("{}/cli/app:v1", w.registry.addr()),
            "--policy",
        ])
        .arg(&good)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("accepted "), "{stdout}");
    let out = Command::new(&bin)
        .args([
            "verify",
            &format!("{}/cli/app:v1", w.registry.addr()),
            "--policy",
        ])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success(), "verify accepted the wrong key");
    let out = Command::new(&bin)
        .args([
            "pull",
            &format!("{}/src/app:v1", w.registry.addr()),
            "--layout",
            "flat",
            "--progress",
            "none",
        ])
        .arg("--rootfs")
        .arg(w.path("cli-rootfs"))
        .arg("--store")
        .arg(w.path("cli-store"))
        .arg("--policy")
        .arg(&good)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let line = stderr
        .lines()
        .find(|l| l.starts_with("image-rs: error:"))
        .unwrap_or_default();
    assert!(
        line.contains("rejected by the signature policy")
            && line.contains("found 0 sigstore signatures"),
        "{stderr}"
    );
    assert!(!w.path("cli-rootfs").exists());
}
