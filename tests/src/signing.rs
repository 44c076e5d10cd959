//! Signing fixtures: GPG keys in a private `GNUPGHOME`, `registries.d`
//! directories, containers policies, and `skopeo copy` with
//! `--sign-by` (GPG simple signing into lookaside storage) or
//! `--sign-by-sigstore-private-key` (sigstore attachments).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cmd;
use crate::layout::OciLayout;
use crate::push::dest_args;
use crate::registry::Registry;

/// A GPG home with one signing key; the agent is killed and the directory
/// removed on drop. The path is short (agent sockets must fit in 108 bytes).
#[derive(Debug)]
pub struct GpgHome {
    dir: tempfile::TempDir,
    /// Fingerprint of the key (uppercase hex).
    pub fingerprint: String,
}

impl GpgHome {
    /// Creates a home and a key of `algo` (`rsa2048`, `ed25519`, ...) without
    /// a passphrase.
    pub fn new(algo: &str) -> GpgHome {
        let dir = tempfile::Builder::new()
            .prefix("spg-")
            .tempdir_in("/tmp")
            .expect("create GNUPGHOME");
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod GNUPGHOME");
        let mut home = GpgHome {
            dir,
            fingerprint: String::new(),
        };
        cmd::run(home.gpg().args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            &format!("Sealpod Test {algo} <test-{algo}@sealpod.invalid>"),
            algo,
            "sign",
            "never",
        ]));
        let out = cmd::run(home.gpg().args(["--batch", "--with-colons", "--list-keys"]));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let fpr = text
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap_or_else(|| panic!("no fingerprint in gpg --list-keys output: {text}"))
            .to_string();
        home.fingerprint = fpr;
        home
    }

    /// The GNUPGHOME path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A `gpg` command using this home.
    pub fn gpg(&self) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", self.path());
        c
    }

    /// Writes the armored public key to `dest` and returns `dest`.
    pub fn export_public(&self, dest: &Path) -> PathBuf {
        let out = cmd::run(
            self.gpg()
                .args(["--batch", "--armor", "--export", &self.fingerprint]),
        );
        assert!(!out.stdout.is_empty(), "gpg --export wrote nothing");
        fs::write(dest, &out.stdout).expect("write exported key");
        dest.to_path_buf()
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.dir.path())
            .args(["--kill", "all"])
            .output();
    }
}

/// Writes `dir/sealpod.yaml` for `registry`: sigstore attachments on, and
/// GPG lookaside storage (read and staging) at `lookaside` if given.
pub fn write_registries_d(dir: &Path, registry: &Registry, lookaside: Option<&Path>) {
    fs::create_dir_all(dir).expect("create registries.d");
    let mut y = format!(
        "docker:\n  {}:\n    use-sigstore-attachments: true\n",
        registry.addr()
    );
    if let Some(l) = lookaside {
        y.push_str(&format!(
            "    lookaside: file://{0}\n    lookaside-staging: file://{0}\n",
            l.display()
        ));
    }
    fs::write(dir.join("sealpod.yaml"), y).expect("write registries.d file");
}

/// A containers policy: reject by default, `requirement` for `scope`.
pub fn policy_json(scope: &str, requirement: serde_json::Value) -> String {
    serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {scope: [requirement]}},
    })
    .to_string()
}

/// How `skopeo copy` signs.
#[derive(Debug, Clone)]
pub enum SkopeoSign<'a> {
    /// Do not sign.
    None,
    /// `--sign-by FINGERPRINT` with this GPG home.
    Gpg(&'a GpgHome),
    /// `--sign-by-sigstore-private-key KEY --sign-passphrase-file FILE`.
    Sigstore {
        /// The encrypted private key.
        key: &'a Path,
        /// The passphrase file.
        passphrase_file: &'a Path,
    },
}

/// `skopeo copy` of `tag` of `layout` to `registry` as `repo_tag`, signing
/// as asked, with `registries_d` telling skopeo where signatures go.
pub fn skopeo_push_signed(
    layout: &OciLayout,
    tag: &str,
    registry: &Registry,
    repo_tag: &str,
    registries_d: &Path,
    sign: SkopeoSign<'_>,
) {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy")
        .arg("--registries.d")
        .arg(registries_d)
        .args([
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--preserve-digests",
        ]);
    match &sign {
        SkopeoSign::None => {}
        SkopeoSign::Gpg(home) => {
            c.env("GNUPGHOME", home.path())
                .args(["--sign-by", &home.fingerprint]);
        }
        SkopeoSign::Sigstore {
            key,
            passphrase_file,
        } => {
            c.arg("--sign-by-sigstore-private-key")
                .arg(key)
                .arg("--sign-passphrase-file")
                .arg(passphrase_file);
        }
    }
    dest_args(&mut c, registry);
    c.arg(layout.skopeo_ref(tag))
        .arg(format!("docker://{}/{repo_tag}", registry.addr()));
    cmd::run(&mut c);
}

/// `skopeo --policy POLICY copy docker://REF oci:DEST` (the verifying side);
/// returns the output (success or not).
pub fn skopeo_pull_with_policy(
    registry: &Registry,
    repo_tag: &str,
    policy: &Path,
    registries_d: &Path,
    dest: &Path,
) -> std::process::Output {
    let mut c = Command::new("skopeo");
    c.arg("--policy")
        .arg(policy)
        .arg("--registries.d")
        .arg(registries_d)
        .args([
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{}/{repo_tag}", registry.addr()))
        .arg(format!("oci:{}:x", dest.display()));
    cmd::run_unchecked(&mut c)
}

/// Whether this skopeo can make and check sigstore signatures (Debian's
/// 1.9.3 build is patched to refuse with "sigstore disabled").
pub fn skopeo_has_sigstore(
    registries_d: &Path,
    registry: &Registry,
    key: &Path,
    pass: &Path,
    layout: &OciLayout,
    tag: &str,
) -> bool {
    let mut c = Command::new("skopeo");
    c.arg("--insecure-policy")
        .arg("--registries.d")
        .arg(registries_d)
        .args([
            "copy",
            "--quiet",
            "--retry-times",
            "0",
            "--preserve-digests",
        ])
        .arg("--sign-by-sigstore-private-key")
        .arg(key)
        .arg("--sign-passphrase-file")
        .arg(pass);
    dest_args(&mut c, registry);
    c.arg(layout.skopeo_ref(tag))
        .arg(format!("docker://{}/probe/sigstore:probe", registry.addr()));
    let out = cmd::run_unchecked(&mut c);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("sigstore disabled"),
        "skopeo sigstore probe failed: {err}"
    );
    out.status.success()
}

/// An ECDSA P-256 key made by `openssl`: (private PEM, public PEM, PKCS#8 DER).
pub fn openssl_p256_key(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let private = dir.join(format!("{name}-openssl.pem"));
    let public = dir.join(format!("{name}-openssl.pub"));
    cmd::run(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
            ])
            .arg(&private),
    );
    cmd::run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
    );
    let der = cmd::run(
        Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(&private),
    )
    .stdout;
    (private, public, der)
}

/// Signs `data` with `openssl dgst -sha256 -sign` (ECDSA DER signature).
pub fn openssl_sign(private: &Path, data: &[u8], dir: &Path) -> Vec<u8> {
    let input = tempfile::NamedTempFile::new_in(dir).expect("temp file");
    fs::write(input.path(), data).expect("write data");
    cmd::run(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(private)
            .arg(input.path()),
    )
    .stdout
}

/// Whether `openssl dgst -sha256 -verify public` accepts `sig` over `data`.
pub fn openssl_verify(public: &Path, data: &[u8], sig: &[u8], dir: &Path) -> bool {
    let input = tempfile::NamedTempFile::new_in(dir).expect("temp file");
    let sigf = tempfile::NamedTempFile::new_in(dir).expect("temp file");
    fs::write(input.path(), data).expect("write data");
    fs::write(sigf.path(), sig).expect("write sig");
    cmd::run_unchecked(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(public)
            .arg("-signature")
            .arg(sigf.path())
            .arg(input.path()),
    )
    .status
    .success()
}

/// Writes a sigstore attachment for `repo:tag` of `registry` the way
/// skopeo/cosign lay it out (`sha256-<hex>.sig` OCI manifest, simple signing
/// payload layer, `dev.cosignproject.cosign/signature` annotation), with the
/// signature made by `openssl` with `private`. Independent of image-rs: the
/// stand-in for skopeo where skopeo is built without sigstore.
pub fn attach_openssl_sigstore(
    registry: &Registry,
    repo: &str,
    tag: &str,
    private: &Path,
    dir: &Path,
) -> String {
    use base64::Engine as _;
    let m = crate::raw::get_manifest(&registry.addr(), repo, tag, None);
    assert_eq!(m.status, 200, "manifest {repo}:{tag}");
    let digest = crate::layout::sha256_digest(&m.body);
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": format!("{}/{repo}:{tag}", registry.addr())},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .expect("payload");
    let sig = openssl_sign(private, &payload, dir);
    let layer =
        crate::raw::RawBlob::new("application/vnd.dev.cosign.simplesigning.v1+json", payload);
    let config = crate::raw::RawBlob::new(
        crate::layout::OCI_CONFIG,
        serde_json::to_vec(&serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        }))
        .expect("config"),
    );
    crate::raw::push_raw_blob(registry, repo, &layer);
    crate::raw::push_raw_blob(registry, repo, &config);
    let mut ld = layer.descriptor();
    ld["annotations"] = serde_json::json!({
        "dev.cosignproject.cosign/signature": base64::engine::general_purpose::STANDARD.encode(&sig)
    });
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::layout::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [ld],
    }))
    .expect("manifest");
    let sig_tag = format!("sha256-{}.sig", digest.trim_start_matches("sha256:"));
    crate::raw::push_raw_manifest(
        registry,
        repo,
        &sig_tag,
        crate::layout::OCI_MANIFEST,
        &manifest,
    );
    digest
}
