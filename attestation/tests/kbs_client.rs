//! The KBS client against the real development KBS (`dev-kbs`, this crate's binary) on
//! 127.0.0.1: the RCAR handshake, session reuse and renewal, the KBS's errors passed on
//! with their kind and step, and an encrypted image (Confidential Containers key-provider
//! wrapping) pulled by image-rs with its key released by the KBS after attestation.
//!
//! The TEE is the sample TEE (this machine has none). Each test owns its KBS, registry and
//! temp dirs, all removed on drop.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attestation::attester::sample::SampleAttester;
use attestation::kbs::protocol::InitDataPayload;
use attestation::kbs::{KbsClient, KbsConfig, KbsError, Step};
use attestation::provider::KbsKeyProvider;
use attestation::tee_key::TeeKeyAlgorithm;
use attestation::{Attester, AttesterError, Tee};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use image_rs::copy::{copy, CopyOptions, Location};
use image_rs::ocicrypt::layer::{DecryptionKeys, Recipient};
use image_rs::ocicrypt::provider::ResourceUri;
use image_rs::{Layout, PullOptions, Puller, RegistryClient, RegistryConfig, Store};
use integration_tests::fstree;
use integration_tests::images;
use integration_tests::kbs::{DevKbs, DevKbsOptions};
use integration_tests::layout::OciLayout;
use integration_tests::registry::{Registry, RegistryOptions};
use serde_json::Value;

fn dev_kbs(opts: DevKbsOptions) -> DevKbs {
    DevKbs::start(Path::new(env!("CARGO_BIN_EXE_dev-kbs")), opts)
}

fn sample() -> Arc<dyn Attester> {
    Arc::new(SampleAttester::new(None))
}

fn client(kbs: &DevKbs, key: TeeKeyAlgorithm) -> KbsClient {
    let mut config = KbsConfig::new(kbs.url());
    config.tee_key = key;
    config.timeout = Duration::from_secs(10);
    KbsClient::new(config, sample()).unwrap()
}

fn uri(s: &str) -> ResourceUri {
    ResourceUri::parse(s).unwrap()
}

fn kbs_kind(e: &KbsError) -> (Option<Step>, Option<&str>) {
    (e.step(), e.kbs_kind())
}

#[tokio::test]
async fn resource_is_released_after_attestation_and_the_session_is_reused() {
    let kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", b"secret one");
    kbs.put_resource("default/key/2", b"secret two");
    let c = client(&kbs, TeeKeyAlgorithm::EcP256);
    assert_eq!(
        &c.get_resource(&uri("kbs:///default/key/1")).await.unwrap()[..],
        b"secret one"
    );
    assert_eq!(
        &c.get_resource(&uri("kbs:///default/key/2")).await.unwrap()[..],
        b"secret two"
    );
    assert_eq!(c.handshakes(), 1, "the second resource reused the session");
}

#[tokio::test]
async fn rsa_tee_key_works_too() {
    let kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", b"rsa secret");
    let c = client(&kbs, TeeKeyAlgorithm::Rsa);
    assert_eq!(
        &c.get_resource(&uri("kbs:///default/key/1")).await.unwrap()[..],
        b"rsa secret"
    );
}

#[tokio::test]
async fn a_kbs_that_lost_the_session_gets_one_reattestation() {
    let mut kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", b"k");
    let c = client(&kbs, TeeKeyAlgorithm::EcP256);
    c.get_resource(&uri("kbs:///default/key/1")).await.unwrap();
    // A restarted KBS has forgotten the session (and its token signing key): the
    // cookie now gets TokenNotFound, which triggers one new handshake.
    kbs.restart();
    assert_eq!(
        &c.get_resource(&uri("kbs:///default/key/1")).await.unwrap()[..],
        b"k"
    );
    assert_eq!(c.handshakes(), 2);
}

#[tokio::test]
async fn an_expired_token_is_renewed_by_attesting_again() {
    let kbs = dev_kbs(DevKbsOptions {
        token_ttl: Some(1),
        ..Default::default()
    });
    kbs.put_resource("default/key/1", b"k");
    let c = client(&kbs, TeeKeyAlgorithm::EcP256);
    c.get_resource(&uri("kbs:///default/key/1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.get_resource(&uri("kbs:///default/key/1")).await.unwrap();
    assert_eq!(c.handshakes(), 2, "the expired token was not reused");
}

#[tokio::test]
async fn a_missing_resource_reports_the_kbs_error_without_reattesting() {
    let kbs = dev_kbs(DevKbsOptions::default());
    let c = client(&kbs, TeeKeyAlgorithm::EcP256);
    let e = c
        .get_resource(&uri("kbs:///default/key/nope"))
        .await
        .unwrap_err();
    assert_eq!(
        kbs_kind(&e),
        (Some(Step::Resource), Some("PluginInternalError")),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("HTTP 401") && msg.contains("does not exist"),
        "{msg}"
    );
    assert_eq!(c.handshakes(), 1);
}

#[tokio::test]
async fn a_policy_denial_is_passed_on() {
    let kbs = dev_kbs(DevKbsOptions {
        policy: Some("deny-sample".into()),
        ..Default::default()
    });
    kbs.put_resource("default/key/1", b"top-secret-bytes");
    let c = client(&kbs, TeeKeyAlgorithm::EcP256);
    let e = c
        .get_resource(&uri("kbs:///default/key/1"))
        .await
        .unwrap_err();
    assert_eq!(
        kbs_kind(&e),
        (Some(Step::Resource), Some("PolicyDeny")),
        "{e}"
    );
    assert!(e.to_string().contains("Access denied by policy"), "{e}");
    assert!(!e.to_string().contains("top-secret"), "{e}");
    assert_eq!(
        c.handshakes(),
        1,
        "a denial is not retried with a new session"
    );
}

/// An attester that binds other report data than it is given: the KBS must refuse it.
#[derive(Debug)]
struct UnboundAttester(SampleAttester);

impl Attester for UnboundAttester {
    fn tee(&self) -> Tee {
        Tee::Sample
    }
    fn evidence(&self, report_data: &[u8]) -> Result<Value, AttesterError> {
        let mut other = report_data.to_vec();
        other[0] ^= 1;
        self.0.evidence(&other)
    }
    fn launch_config(&self) -> Result<Option<Vec<u8>>, AttesterError> {
        Ok(None)
    }
}

#[tokio::test]
async fn evidence_not_bound_to_the_session_is_refused_at_attest() {
    let kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", b"k");
    let c = KbsClient::new(
        KbsConfig::new(kbs.url()),
        Arc::new(UnboundAttester(SampleAttester::new(None))),
    )
    .unwrap();
    let e = c
        .get_resource(&uri("kbs:///default/key/1"))
        .await
        .unwrap_err();
    assert_eq!(
        kbs_kind(&e),
        (Some(Step::Attest), Some("AttestationError")),
        "{e}"
    );
    assert!(e.to_string().contains("did not accept the evidence"), "{e}");
}

#[tokio::test]
async fn a_kbs_that_is_down_is_a_transport_error_after_bounded_retries() {
    let mut kbs = dev_kbs(DevKbsOptions::default());
    let url = kbs.url().to_string();
    kbs.stop();
    let mut config = KbsConfig::new(url);
    config.attempts = 3;
    config.backoff = Duration::from_millis(10);
    let c = KbsClient::new(config, sample()).unwrap();
    let e = c
        .get_resource(&uri("kbs:///default/key/1"))
        .await
        .unwrap_err();
    match &e {
        KbsError::Transport { step, attempts, .. } => {
            assert_eq!((*step, *attempts), (Step::Auth, 3), "{e}");
        }
        other => panic!("expected a transport error, got {other}"),
    }
}

#[tokio::test]
async fn initdata_reaches_the_kbs_and_its_token() {
    let kbs = dev_kbs(DevKbsOptions::default());
    let toml = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
    let mut config = KbsConfig::new(kbs.url());
    config.initdata = Some(InitDataPayload {
        format: "toml".into(),
        body: toml.into(),
    });
    let c = KbsClient::new(config, sample()).unwrap();
    let token = c.token().await.unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let text = claims.to_string();
    assert!(
        text.contains("package agent_policy"),
        "init data not in the token claims: {text}"
    );
    // Asking again reuses the token.
    assert_eq!(c.token().await.unwrap(), token);
    assert_eq!(c.handshakes(), 1);
}

#[tokio::test]
async fn the_cli_prints_the_resource_and_refuses_to_guess_a_tee() {
    let kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", b"cli secret\n");
    let bin = env!("CARGO_BIN_EXE_attestation-agent");
    let out = std::process::Command::new(bin)
        .args([
            "get-resource",
            "--kbs-url",
            kbs.url(),
            "--tee",
            "sample",
            "kbs:///default/key/1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"cli secret\n");
    // No TEE here, and auto-detection never falls back to the sample TEE.
    let out = std::process::Command::new(bin)
        .args([
            "get-resource",
            "--kbs-url",
            kbs.url(),
            "kbs:///default/key/1",
        ])
        .env_remove("SEALPOD_TEE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no TEE found") && err.contains("--tee sample"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// An image whose layer key is wrapped under a KBS key (`kbs:///default/key/1`) pulls
/// with the key fetched through attestation, and does not pull when the KBS refuses.
#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_image_pulls_with_the_key_from_the_kbs() {
    let t = tempfile::tempdir().unwrap();
    let plain = t.path().join("plain");
    let l = OciLayout::new(&plain);
    images::build_busybox(&l, "bb");
    let reg = Registry::start(RegistryOptions::default());
    let registry = RegistryClient::new(RegistryConfig::default()).unwrap();
    let kek = zeroize::Zeroizing::new((0u8..32).map(|i| i.wrapping_mul(7)).collect::<Vec<u8>>());
    let opts = CopyOptions {
        recipients: vec![Recipient::Provider {
            kid: "kbs:///default/key/1".into(),
            kek: kek.clone(),
        }],
        ..Default::default()
    };
    let src: Location = format!("oci:{}:bb", plain.display()).parse().unwrap();
    let dst: Location = format!("docker://{}/enc/bb:v1", reg.addr())
        .parse()
        .unwrap();
    let rep = copy(&registry, &src, &dst, &opts).await.unwrap();
    assert!(!rep.encrypted_layers.is_empty());
    let Location::Registry(r) = &dst else {
        unreachable!()
    };
    let puller = Puller::new(
        Arc::new(registry),
        Store::open(t.path().join("store")).unwrap(),
    );

    // A KBS that refuses the sample TEE: no key, no image.
    let denying = dev_kbs(DevKbsOptions {
        policy: Some("deny-sample".into()),
        ..Default::default()
    });
    denying.put_resource("default/key/1", &kek);
    let keys = |kbs: &DevKbs| {
        let client = KbsClient::new(KbsConfig::new(kbs.url()), sample()).unwrap();
        Arc::new(DecryptionKeys {
            private_keys: vec![],
            provider: Some(Arc::new(KbsKeyProvider::new(Arc::new(client)))),
        })
    };
    let denied = t.path().join("denied");
    let err = puller
        .pull(
            r,
            &denied,
            &PullOptions {
                layout: Layout::Flat,
                decryption: keys(&denying),
                ..Default::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kbs:///default/key/1") && err.contains("PolicyDeny"),
        "{err}"
    );
    assert!(!denied.exists());

    // A KBS that releases it: the same tree as the plain image.
    let kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", &kek);
    let rootfs = t.path().join("rootfs");
    puller
        .pull(
            r,
            &rootfs,
            &PullOptions {
                layout: Layout::Flat,
                decryption: keys(&kbs),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let expected = fstree::snapshot(&images::umoci_unpack(&l, "bb", &t.path().join("umoci")));
    fstree::compare(&expected, &fstree::snapshot(&rootfs)).unwrap();
}

#[tokio::test]
async fn https_with_an_extra_ca_and_refused_without_it() {
    let tls = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dev-kbs-tls");
    let kbs = dev_kbs(DevKbsOptions {
        extra_args: vec![
            "--tls-cert".into(),
            tls.join("cert.pem").display().to_string(),
            "--tls-key".into(),
            tls.join("key.pem").display().to_string(),
        ],
        ..Default::default()
    });
    assert!(kbs.url().starts_with("https://"), "{}", kbs.url());
    kbs.put_resource("default/key/1", b"over tls");
    let mut config = KbsConfig::new(kbs.url());
    config.ca_pem = Some(std::fs::read(tls.join("ca.pem")).unwrap());
    let c = KbsClient::new(config, sample()).unwrap();
    assert_eq!(
        &c.get_resource(&uri("kbs:///default/key/1")).await.unwrap()[..],
        b"over tls"
    );

    let mut config = KbsConfig::new(kbs.url());
    config.attempts = 1;
    let c = KbsClient::new(config, sample()).unwrap();
    let e = c
        .get_resource(&uri("kbs:///default/key/1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            KbsError::Transport {
                step: Step::Auth,
                ..
            }
        ) && e.to_string().contains("certificate"),
        "{e}"
    );
}

#[test]
fn the_cli_refuses_initdata_the_tee_was_not_launched_with() {
    let kbs = dev_kbs(DevKbsOptions::default());
    kbs.put_resource("default/key/1", b"bound");
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("initdata.toml");
    std::fs::write(
        &file,
        "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault AllowRequestsFailingPolicy := false\\n\"\n",
    )
    .unwrap();
    let initdata = attestation::initdata::InitData::from_file(&file).unwrap();
    let good = hex::encode(initdata.expected_field_for(Tee::Sample).unwrap());
    let run = |launch: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_attestation-agent"))
            .args([
                "get-resource",
                "--kbs-url",
                kbs.url(),
                "--tee",
                "sample",
                "--initdata",
            ])
            .arg(&file)
            .arg("kbs:///default/key/1")
            .env("SEALPOD_SAMPLE_LAUNCH_CONFIG", launch)
            .output()
            .unwrap()
    };
    let out = run(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"bound");
    // The "host" launched the TEE with other initdata: refuse before talking to the KBS.
    let mut bad = initdata.expected_field_for(Tee::Sample).unwrap();
    bad[0] ^= 0xff;
    let log_before = kbs.log().len();
    let out = run(&hex::encode(bad));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&good[..16]),
        "the error shows the expected digest: {err}"
    );
    let new_log = kbs.log()[log_before..].to_string();
    assert!(
        !new_log.contains("session"),
        "the KBS was contacted: {new_log}"
    );
}
