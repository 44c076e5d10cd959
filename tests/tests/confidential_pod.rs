//! The whole confidential pod flow on one machine, with real peers: a real
//! `docker-registry` on 127.0.0.1, a busybox image built by umoci and pushed
//! by skopeo three times (plain; encrypted by `skopeo copy --encryption-key
//! jwe:`; encrypted by `image-rs copy` for the Confidential Containers
//! `kbs:///` key provider), `dev-kbs` holding the keys, and the real
//! `guest-agent` binary started with an initdata file (policy + KBS URL)
//! bound to the sample TEE's launch field, driven by `agentctl` as a host
//! would drive it.
//!
//! What it proves: the guest runs plain and encrypted images with keys it gets
//! only by attesting; the policy from initdata refuses what it does not
//! allow; a guest the KBS does not accept cannot decrypt; a KBS that is down
//! gives a clear CreateContainer error and the agent keeps serving; a
//! restarted agent keeps its image store (nothing fetched again); an agent
//! given initdata the TEE was not launched with refuses to start.
//!
//! The TEE is the sample one (no TEE hardware here): the same code path as
//! SNP/TDX, with the launch field taken from `SEALPOD_SAMPLE_LAUNCH_CONFIG`,
//! which stands in for what a VMM sets as SNP HOST_DATA / TDX MRCONFIGID.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use integration_tests::agent::{
    initdata_toml, sample_launch_config, workspace_bin, GuestAgent, GuestAgentOptions,
};
use integration_tests::cmd;
use integration_tests::images::{BusyboxInRegistry, MOTD};
use integration_tests::kbs::{DevKbs, DevKbsOptions};
use integration_tests::proxy::Proxy;
use integration_tests::push;
use integration_tests::registry::Registry;

/// The KBS resource holding the KEK of the `kbs:///` provider image.
const KEK_ID: &str = "default/key/1";
/// The KBS resource holding the private key of the skopeo (JWE) image.
const JWE_KEY_ID: &str = "default/image-key/rsa";

/// The images of one test, in its own registry.
struct Images {
    registry: Registry,
    /// `HOST:PORT/pod/busybox:plain`.
    plain: String,
    /// Encrypted by `skopeo copy --encryption-key jwe:` for an RSA key.
    jwe: String,
    /// Encrypted by `image-rs copy` for the `kbs:///default/key/1` provider.
    kbs: String,
    /// The KEK of `kbs` and the private key of `jwe` (PEM).
    kek: Vec<u8>,
    jwe_private_pem: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Images {
    fn build() -> Images {
        let BusyboxInRegistry {
            registry,
            layout,
            dir,
        } = BusyboxInRegistry::start("pod/busybox:plain");

        let key = dir.path().join("key.pem");
        let public = dir.path().join("key.pub.pem");
        cmd::run(
            Command::new("openssl")
                .args(["genrsa", "-out"])
                .arg(&key)
                .arg("2048"),
        );
        cmd::run(
            Command::new("openssl")
                .args(["rsa", "-pubout", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&public),
        );
        let mut c = Command::new("skopeo");
        c.args(["--insecure-policy", "copy", "--quiet", "--retry-times", "0"])
            .arg("--encryption-key")
            .arg(format!("jwe:{}", public.display()));
        push::dest_args(&mut c, &registry);
        c.arg(layout.skopeo_ref("latest"))
            .arg(format!("docker://{}/pod/busybox:jwe", registry.addr()));
        cmd::run(&mut c);

        let kek: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let kek_file = dir.path().join("kek");
        std::fs::write(&kek_file, &kek).expect("write kek");
        cmd::run(
            Command::new(workspace_bin("image-rs"))
                .arg("copy")
                .arg(layout.skopeo_ref("latest"))
                .arg(format!("docker://{}/pod/busybox:kbs", registry.addr()))
                .arg("--encryption-key")
                .arg(format!("provider:kbs:///{KEK_ID}={}", kek_file.display())),
        );
        let addr = registry.addr();
        Images {
            plain: format!("{addr}/pod/busybox:plain"),
            jwe: format!("{addr}/pod/busybox:jwe"),
            kbs: format!("{addr}/pod/busybox:kbs"),
            jwe_private_pem: std::fs::read(&key).expect("read key"),
            kek,
            registry,
            _dir: dir,
        }
    }

    /// A KBS holding both keys, with resource policy `policy`.
    fn kbs(&self, policy: &str) -> DevKbs {
        let kbs = DevKbs::start(
            &workspace_bin("dev-kbs"),
            DevKbsOptions {
                policy: Some(policy.into()),
                ..DevKbsOptions::default()
            },
        );
        kbs.put_resource(KEK_ID, &self.kek);
        kbs.put_resource(JWE_KEY_ID, &self.jwe_private_pem);
        kbs
    }
}

/// The pod's initdata (policy + KBS URL) and the launch field a VMM would
/// set for it.
struct InitData {
    file: PathBuf,
    /// Hex of the 64-byte sample launch field: SHA-384 of the file, zero padded.
    launch_config: String,
}

impl InitData {
    fn write(dir: &Path, kbs_url: &str) -> InitData {
        Self::write_with(dir, kbs_url, &[])
    }

    /// Initdata with more `[data]` entries (name, text).
    fn write_with(dir: &Path, kbs_url: &str, extra: &[(&str, &str)]) -> InitData {
        let text = initdata_toml(kbs_url, extra);
        let file = dir.join("initdata.toml");
        std::fs::write(&file, &text).expect("write initdata");
        InitData {
            file,
            launch_config: sample_launch_config(&text),
        }
    }
}

/// An agent over `dir` with `initdata`, the sample TEE, and the JWE image's
/// private key named as a KBS resource.
fn agent_options(dir: &Path, initdata: &InitData) -> GuestAgentOptions {
    let mut opts =
        GuestAgentOptions::new(workspace_bin("guest-agent"), workspace_bin("agentctl"), dir);
    opts.cmdline = format!("agent.tee=sample agent.image_decryption_keys=kbs:///{JWE_KEY_ID}");
    opts.initdata = Some(initdata.file.clone());
    opts.env = vec![(
        "SEALPOD_SAMPLE_LAUNCH_CONFIG".into(),
        initdata.launch_config.clone(),
    )];
    opts
}

/// One pod: its images, a KBS holding their keys, its initdata, and the
/// directory its agent (or agents, across a restart) live in.
struct Pod {
    images: Images,
    kbs: DevKbs,
    initdata: InitData,
    dir: tempfile::TempDir,
}

impl Pod {
    /// Images built and pushed, a KBS with resource policy `kbs_policy`, and
    /// initdata naming that KBS.
    fn new(kbs_policy: &str) -> Pod {
        let images = Images::build();
        let kbs = images.kbs(kbs_policy);
        let dir = tempfile::Builder::new()
            .prefix("sealpod-pod-")
            .tempdir()
            .expect("temp dir");
        let initdata = InitData::write(dir.path(), kbs.url());
        Pod {
            images,
            kbs,
            initdata,
            dir,
        }
    }

    /// Starts the pod's agent (on the same state every time).
    fn start_agent(&self) -> GuestAgent {
        GuestAgent::start(agent_options(
            &self.dir.path().join("agent"),
            &self.initdata,
        ))
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `agentctl run IMAGE -- cat /etc/motd`, asserted to print the image's motd.
fn run_motd(agent: &GuestAgent, image: &str) {
    let out = agent.agentctl(&["run", image, "--", "/bin/cat", "/etc/motd"]);
    assert!(
        out.status.success(),
        "running {image}: {}\nstderr: {}",
        out.status,
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), MOTD, "output of {image}");
}

/// `agentctl run IMAGE -- true`, asserted to fail; returns its stderr.
fn run_fails(agent: &GuestAgent, image: &str) -> String {
    let out: Output = agent.agentctl(&["run", image, "--", "/bin/true"]);
    assert!(
        !out.status.success(),
        "running {image} succeeded; stdout: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn pod_runs_plain_and_encrypted_images_with_keys_from_attestation() {
    let pod = Pod::new("allow-all");
    let (images, kbs) = (&pod.images, &pod.kbs);
    let agent = pod.start_agent();
    assert!(
        agent
            .log()
            .contains("initdata matches the TEE's launch measurement"),
        "{}",
        agent.log()
    );

    run_motd(&agent, &images.plain);
    // Nothing encrypted yet: no key has left the KBS.
    assert_eq!(count(&kbs.log(), "resource released"), 0, "{}", kbs.log());

    // skopeo's JWE image: the private key is a KBS resource the guest gets by attesting.
    run_motd(&agent, &images.jwe);
    let log = kbs.log();
    assert!(log.contains("token issued"), "no attestation seen: {log}");
    assert!(log.contains(JWE_KEY_ID), "{log}");

    // The CoCo provider image: the KEK is a KBS resource.
    run_motd(&agent, &images.kbs);
    assert!(kbs.log().contains(KEK_ID), "{}", kbs.log());

    // The initdata policy refuses exec before anything happens.
    let out = agent.agentctl(&["exec", "some-container", "--", "/bin/sh"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("ExecProcessRequest") && err.contains("policy"),
        "{err}"
    );
    // ... and the agent keeps serving.
    assert!(agent.agentctl(&["check"]).status.success());
}

#[test]
fn a_guest_the_kbs_does_not_accept_cannot_decrypt() {
    // The KBS's resource policy refuses the sample TEE (as a real KBS's default does).
    let pod = Pod::new("deny-sample");
    let (images, kbs) = (&pod.images, &pod.kbs);
    let agent = pod.start_agent();

    for image in [&images.kbs, &images.jwe] {
        let err = run_fails(&agent, image);
        assert!(err.contains("CreateContainer"), "{image}: {err}");
        assert!(
            err.contains("PolicyDeny") || err.contains("denied"),
            "{image}: the error should say the KBS refused: {err}"
        );
    }
    assert_eq!(count(&kbs.log(), "resource released"), 0, "{}", kbs.log());
    // Nothing of the refused images was committed to the store.
    let layers = agent.state_dir().join("images/layers");
    assert!(
        integration_tests::agent::dir_names(&layers)
            .iter()
            .all(|alg| integration_tests::agent::dir_names(&layers.join(alg)).is_empty()),
        "layers stored for images the guest could not decrypt"
    );
    // The plain image still runs.
    run_motd(&agent, &images.plain);
}

#[test]
fn a_kbs_that_is_down_gives_a_clear_error_and_the_agent_keeps_serving() {
    let mut pod = Pod::new("allow-all");
    let agent = pod.start_agent();
    let (images, kbs) = (&pod.images, &mut pod.kbs);
    let url = kbs.url().to_string();
    kbs.stop();

    let err = run_fails(&agent, &images.kbs);
    assert!(err.contains("CreateContainer"), "{err}");
    assert!(
        err.contains(&url) || err.contains("KBS"),
        "the error should name the KBS: {err}"
    );
    assert!(err.contains(KEK_ID), "the error should name the key: {err}");
    assert!(agent.agentctl(&["check"]).status.success());
    run_motd(&agent, &images.plain);

    // The KBS is back: the same agent now gets the key.
    kbs.restart();
    run_motd(&agent, &images.kbs);
}

#[test]
fn a_restarted_agent_keeps_its_image_store() {
    let pod = Pod::new("allow-all");
    let (images, kbs) = (&pod.images, &pod.kbs);
    let proxy = Proxy::start(&images.registry.addr());
    let via = |r: &str| r.replacen(&images.registry.addr(), &proxy.addr(), 1);

    let mut agent = pod.start_agent();
    run_motd(&agent, &via(&images.plain));
    run_motd(&agent, &via(&images.kbs));
    assert!(proxy.count("/blobs/") > 0, "the first run fetched nothing?");
    agent.stop();

    proxy.clear();
    let released = count(&kbs.log(), "resource released");
    let agent = pod.start_agent();
    run_motd(&agent, &via(&images.plain));
    run_motd(&agent, &via(&images.kbs));
    let blobs: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/blobs/"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        blobs.is_empty(),
        "the restarted agent fetched blobs again: {blobs:?}"
    );
    // The store does not hand out the encrypted image without its key: the
    // new agent attested and fetched the KEK again.
    assert!(
        count(&kbs.log(), "resource released") > released,
        "{}",
        kbs.log()
    );
}

#[test]
fn an_agent_given_tampered_initdata_refuses_to_start() {
    let dir = tempfile::Builder::new()
        .prefix("sealpod-pod-")
        .tempdir()
        .unwrap();
    let initdata = InitData::write(dir.path(), "http://127.0.0.1:9");
    // The host swaps the policy after launch: the digest no longer matches.
    let text = std::fs::read_to_string(&initdata.file)
        .unwrap()
        .replace("ExecProcessRequest := false", "ExecProcessRequest := true");
    std::fs::write(&initdata.file, text).unwrap();

    let failure = match GuestAgent::try_start(agent_options(&dir.path().join("agent"), &initdata)) {
        Ok(agent) => panic!("the agent started:\n{}", agent.log()),
        Err(f) => f,
    };
    let status = failure.status.expect("the agent should exit, not hang");
    assert!(!status.success(), "{status}");
    assert!(
        failure.log.contains("initdata") && failure.log.contains("launch"),
        "the log should say why: {}",
        failure.log
    );
}

#[test]
fn images_must_be_signed_when_the_pod_says_so() {
    let mut pod = Pod::new("allow-all");
    let images = &pod.images;
    // The pod owner's signing key; its public half is a KBS resource.
    let keys = tempfile::tempdir().unwrap();
    let pass = keys.path().join("pass");
    std::fs::write(&pass, "pod owner passphrase\n").unwrap();
    let prefix = keys.path().join("owner");
    cmd::run(
        Command::new(workspace_bin("image-rs"))
            .arg("generate-sigstore-key")
            .arg("--output-prefix")
            .arg(&prefix)
            .arg("--passphrase-file")
            .arg(&pass),
    );
    let public = std::fs::read(keys.path().join("owner.pub")).unwrap();
    pod.kbs.put_resource("default/cosign-key/owner", &public);
    // The plain image, signed, under another tag.
    let signed = images.plain.replace(":plain", ":signed");
    cmd::run(
        Command::new(workspace_bin("image-rs"))
            .arg("copy")
            .arg(format!("docker://{}", images.plain))
            .arg(format!("docker://{signed}"))
            .arg("--sign-by-sigstore-private-key")
            .arg(keys.path().join("owner.private"))
            .arg("--sign-passphrase-file")
            .arg(&pass),
    );
    // Initdata: images from this registry must carry the owner's signature.
    let policy = format!(
        r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"{}/pod":[{{"type":"sigstoreSigned","keyPath":"kbs:///default/cosign-key/owner"}}]}}}}}}"#,
        images.registry.addr()
    );
    pod.initdata = InitData::write_with(
        pod.dir.path(),
        pod.kbs.url(),
        &[("image-policy.json", &policy)],
    );
    let agent = pod.start_agent();

    run_motd(&agent, &signed);
    let err = run_fails(&agent, &pod.images.plain);
    assert!(
        err.contains("sigstoreSigned") && err.contains("/pod"),
        "the error should name the requirement and the scope: {err}"
    );
    // Outside the policy's scopes the default rejects.
    let other = pod.images.plain.replace("/pod/", "/other/");
    cmd::run(
        Command::new(workspace_bin("image-rs"))
            .arg("copy")
            .arg(format!("docker://{}", pod.images.plain))
            .arg(format!("docker://{other}")),
    );
    let err = run_fails(&agent, &other);
    assert!(err.contains("reject"), "{err}");

    // A pod whose initdata policy is not JSON does not start.
    pod.initdata = InitData::write_with(
        pod.dir.path(),
        pod.kbs.url(),
        &[("image-policy.json", "{not json")],
    );
    drop(agent);
    let failure = match GuestAgent::try_start(agent_options(
        &pod.dir.path().join("agent-bad-policy"),
        &pod.initdata,
    )) {
        Ok(a) => panic!("started with an unreadable image policy:\n{}", a.log()),
        Err(f) => f,
    };
    assert!(failure.status.is_some_and(|s| !s.success()));
    assert!(failure.log.contains("image-policy.json"), "{}", failure.log);
}
