//! The `image-rs` binary against a real registry: what a user or a script sees on stdout,
//! stderr and in the exit status. Images are small hand-made ones pushed through the v2
//! API (the fixtures of the `integration-tests` crate); every test has its own registry
//! and temp dirs. Run as root (the pull keeps owners).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use integration_tests::compress::Compression;
use integration_tests::raw::{self, RawImage};
use integration_tests::registry::{Registry, RegistryOptions};
use integration_tests::tar_builder::TarBuilder;
use serde_json::Value;

/// A registry with one two-layer image pushed as `cli/app:v1`, and a scratch dir.
struct Setup {
    reg: Registry,
    dir: tempfile::TempDir,
    digest: String,
}

impl Setup {
    fn new(opts: RegistryOptions) -> Setup {
        let reg = Registry::start(opts);
        let image = RawImage::from_tars(
            &[
                TarBuilder::new()
                    .dir("etc", 0o755)
                    .file("etc/motd", 0o644, b"hello from the cli test\n")
                    .finish(),
                TarBuilder::new()
                    .dir("bin", 0o755)
                    .file("bin/app", 0o755, b"#!/bin/sh\necho app\n")
                    .symlink("bin/sh", "app")
                    .finish(),
            ],
            Compression::Gzip,
        );
        let digest = raw::push_raw(&reg, "cli/app", "v1", &image);
        let dir = tempfile::Builder::new()
            .prefix("sealpod-cli-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("docker")).unwrap();
        Setup { reg, dir, digest }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn reference(&self, tag: &str) -> String {
        format!("{}/cli/app:{tag}", self.reg.addr())
    }

    /// `image-rs` with a clean environment: no auth file of the host user, no
    /// IMAGE_RS_* settings.
    fn image_rs(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_image-rs"));
        c.env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("IMAGE_RS_LOG")
            .env_remove("IMAGE_RS_STORE")
            .env("DOCKER_CONFIG", self.path("docker"))
            .stdin(Stdio::null());
        c
    }

    /// `image-rs pull --store S --rootfs R --layout flat EXTRA... REF`.
    fn pull(&self, reference: &str, rootfs: &str, extra: &[&str]) -> Command {
        let mut c = self.image_rs();
        c.arg("pull")
            .arg("--store")
            .arg(self.path("store"))
            .arg("--rootfs")
            .arg(self.path(rootfs))
            .args(["--layout", "flat"])
            .args(extra)
            .arg(reference);
        c
    }
}

fn run(c: &mut Command) -> Output {
    c.output().expect("run image-rs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn assert_success(o: &Output) {
    assert!(o.status.success(), "image-rs failed:\n{}", show(o));
}

/// The one error line of a failed run, checked for shape.
fn error_line(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "image-rs should have failed:\n{}",
        show(o)
    );
    assert_eq!(o.status.code(), Some(1), "{}", show(o));
    assert!(
        o.stdout.is_empty(),
        "nothing on stdout on failure:\n{}",
        show(o)
    );
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr:\n{}", show(o));
    assert!(
        lines[0].starts_with("image-rs: error: "),
        "error line prefix:\n{}",
        show(o)
    );
    lines[0].to_string()
}

#[test]
fn pull_prints_exactly_the_manifest_digest() {
    let s = Setup::new(RegistryOptions::default());
    let o = run(&mut s.pull(&s.reference("v1"), "rootfs", &[]));
    assert_success(&o);
    assert_eq!(text(&o.stdout), format!("{}\n", s.digest), "{}", show(&o));
    assert_eq!(
        std::fs::read(s.path("rootfs/etc/motd")).unwrap(),
        b"hello from the cli test\n"
    );
    assert_eq!(
        std::fs::read_link(s.path("rootfs/bin/sh")).unwrap(),
        Path::new("app")
    );
    // Non-terminal stderr gets the plain progress lines and a summary, never stdout.
    let err = text(&o.stderr);
    assert!(err.contains("pulled "), "{}", show(&o));
}

#[test]
fn progress_json_emits_json_lines_with_layer_events() {
    let s = Setup::new(RegistryOptions::default());
    let o = run(&mut s.pull(&s.reference("v1"), "rootfs", &["--progress", "json"]));
    assert_success(&o);
    assert_eq!(text(&o.stdout), format!("{}\n", s.digest));
    let mut events: Vec<Value> = Vec::new();
    for line in text(&o.stderr).lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line:?}\n{}", show(&o)));
        events.push(v);
    }
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    let count = |n: &str| names.iter().filter(|x| **x == n).count();
    assert_eq!(count("resolved"), 1, "{names:?}");
    assert_eq!(count("layer_started"), 2, "{names:?}");
    assert_eq!(count("layer_done"), 2, "{names:?}");
    assert_eq!(count("done"), 1, "{names:?}");
    assert_eq!(names.first(), Some(&"resolved"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    for e in events.iter().filter(|e| e["event"] == "layer_done") {
        assert_eq!(e["cached"], false, "{e}");
        assert!(e["fetched_bytes"].as_u64().unwrap() > 0, "{e}");
        assert!(e["digest"].as_str().unwrap().starts_with("sha256:"), "{e}");
    }
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["manifest"], s.digest.as_str());

    // Again into another rootfs: everything is in the store now.
    let o = run(&mut s.pull(&s.reference("v1"), "rootfs2", &["--progress", "json"]));
    assert_success(&o);
    let cached: Vec<bool> = text(&o.stderr)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .filter(|e| e["event"] == "layer_done")
        .map(|e| e["cached"].as_bool().unwrap())
        .collect();
    assert_eq!(cached, [true, true]);
}

#[test]
fn failure_is_one_error_line_naming_the_reference_with_a_hint() {
    let s = Setup::new(RegistryOptions::default());
    let reference = s.reference("no-such-tag");
    let o = run(&mut s.pull(&reference, "rootfs", &[]));
    let line = error_line(&o);
    assert!(line.contains(&reference), "names the reference: {line}");
    assert!(line.contains("404"), "{line}");
    assert!(
        line.contains("check the repository name and tag"),
        "hint: {line}"
    );
    assert!(!s.path("rootfs").exists());

    // A malformed reference and a rootfs that is in the way fail the same way.
    let o = run(&mut s.pull("UPPER/case:v1", "rootfs", &[]));
    let line = error_line(&o);
    assert!(line.contains("UPPER/case:v1"), "{line}");
    std::fs::create_dir(s.path("busy")).unwrap();
    std::fs::write(s.path("busy/file"), b"x").unwrap();
    let o = run(&mut s.pull(&s.reference("v1"), "busy", &[]));
    let line = error_line(&o);
    assert!(line.contains("not empty"), "{line}");
}

#[test]
fn images_lists_the_reference_and_digest() {
    let s = Setup::new(RegistryOptions::default());
    assert_success(&run(&mut s.pull(&s.reference("v1"), "rootfs", &[])));
    let mut c = s.image_rs();
    c.arg("images").arg("--store").arg(s.path("store"));
    let o = run(&mut c);
    assert_success(&o);
    let out = text(&o.stdout);
    let reference = s.reference("v1");
    assert!(
        out.lines()
            .any(|l| l.contains(&reference) && l.contains(&s.digest)),
        "no line with {reference} and {}:\n{out}",
        s.digest
    );

    let mut c = s.image_rs();
    c.args(["images", "--json", "--store"]).arg(s.path("store"));
    let o = run(&mut c);
    assert_success(&o);
    let v: Value = serde_json::from_slice(&o.stdout).expect("images --json is JSON");
    assert_eq!(v[0]["reference"], reference.as_str());
    assert_eq!(v[0]["manifest_digest"], s.digest.as_str());
    assert_eq!(v[0]["layers"].as_array().unwrap().len(), 2);
}

#[test]
fn username_and_password_stdin_against_htpasswd_registry() {
    let s = Setup::new(RegistryOptions {
        htpasswd: Some(("erin".into(), "pa55 word".into())),
        ..RegistryOptions::default()
    });
    let pull_with = |password: &str, rootfs: &str| {
        let mut c = s.pull(
            &s.reference("v1"),
            rootfs,
            &["--username", "erin", "--password-stdin"],
        );
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn image-rs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(password.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let o = pull_with("pa55 word\n", "rootfs");
    assert_success(&o);
    assert_eq!(text(&o.stdout), format!("{}\n", s.digest));
    assert!(
        !text(&o.stderr).contains("pa55"),
        "password echoed:\n{}",
        show(&o)
    );

    let o = pull_with("xyzzy-not-it\n", "rootfs-wrong");
    let line = error_line(&o);
    assert!(line.contains("refused the credentials"), "{line}");
    assert!(!line.contains("xyzzy"), "password in the error: {line}");
    assert!(!s.path("rootfs-wrong").exists());

    // Without any credentials: one line saying a login is needed and how to give one.
    let o = run(&mut s.pull(&s.reference("v1"), "rootfs-anon", &[]));
    let line = error_line(&o);
    assert!(line.contains("requires a login"), "{line}");
    assert!(line.contains("--password-stdin"), "{line}");
}

#[test]
fn help_works() {
    let bin = || Command::new(env!("CARGO_BIN_EXE_image-rs"));
    let o = run(bin().arg("--help"));
    assert_success(&o);
    let out = text(&o.stdout);
    for sub in ["pull", "images", "gc", "unmount"] {
        assert!(out.contains(sub), "--help lists {sub}:\n{out}");
    }
    let o = run(bin().args(["pull", "--help"]));
    assert_success(&o);
    let out = text(&o.stdout);
    for flag in [
        "--rootfs",
        "--layout",
        "--ca-file",
        "--auth-file",
        "--username",
        "--password-stdin",
        "--platform",
        "--progress",
    ] {
        assert!(out.contains(flag), "pull --help lists {flag}:\n{out}");
    }
    let o = run(bin().arg("--version"));
    assert_success(&o);
    assert!(text(&o.stdout).starts_with("image-rs "));
}

// ---------------------------------------------------------------------------------------
// Encrypted images (ocicrypt): --decryption-key
// ---------------------------------------------------------------------------------------

/// The shared ocicrypt vectors (skopeo-encrypted layouts and their keys), or `None` with
/// the reason printed when they are absent.
fn ocicrypt_vectors() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/ocicrypt");
    for needed in [
        "skopeo-enc/index.json",
        "keys/rsa-priv.pem",
        "keys/wrong-rsa-priv.pem",
    ] {
        if !dir.join(needed).exists() {
            eprintln!(
                "SKIPPED: the ocicrypt vectors are absent ({} does not exist)",
                dir.join(needed).display()
            );
            return None;
        }
    }
    Some(dir)
}

/// [`Setup`] plus the vector image `skopeo-enc:rsa` (made by `skopeo copy --encryption-key
/// jwe:rsa-pub.pem`) pushed byte for byte as `cli/enc:v1`; returns its digest.
fn push_encrypted_vector(s: &Setup, vectors: &Path) -> String {
    let enc = integration_tests::layout::OciLayout::new(vectors.join("skopeo-enc"));
    let digest = integration_tests::push::push(
        &enc,
        "rsa",
        &s.reg,
        "cli/enc:v1",
        integration_tests::push::PushOptions::default(),
    );
    assert_eq!(digest, enc.manifest_digest("rsa"));
    digest
}

#[test]
fn encrypted_image_pulls_with_decryption_key_and_fails_clearly_without() {
    let Some(v) = ocicrypt_vectors() else { return };
    let s = Setup::new(RegistryOptions::default());
    let digest = push_encrypted_vector(&s, &v);
    let reference = format!("{}/cli/enc:v1", s.reg.addr());

    // No key: one line naming the recipient and the flag to use. (The default plain
    // progress prints "resolved ..." first; the error is still exactly one line.)
    let o = run(&mut s.pull(&reference, "rootfs-nokey", &[]));
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(o.stdout.is_empty(), "{}", show(&o));
    let err = text(&o.stderr);
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("image-rs: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{}", show(&o));
    assert_eq!(err.lines().last(), Some(errors[0]), "{}", show(&o));
    let o = run(&mut s.pull(&reference, "rootfs-nokey", &["--progress", "none"]));
    let line = error_line(&o);
    assert!(line.contains("encrypted for"), "{line}");
    assert!(line.contains("RSA-OAEP (RSA 2048)"), "{line}");
    assert!(line.contains("--decryption-key"), "{line}");
    assert!(line.contains(&reference), "names the reference: {line}");
    assert_eq!(line, errors[0], "the same error with and without progress");
    assert!(!s.path("rootfs-nokey").exists());

    // The wrong key: the same kind of line, saying which key was tried.
    let wrong = v.join("keys/wrong-rsa-priv.pem");
    let o = run(&mut s.pull(
        &reference,
        "rootfs-wrong",
        &[
            "--progress",
            "none",
            "--decryption-key",
            wrong.to_str().unwrap(),
        ],
    ));
    let line = error_line(&o);
    assert!(line.contains("1 private key tried (RSA 2048)"), "{line}");
    assert!(!s.path("rootfs-wrong").exists());

    // The right key (after a wrong one: every key is tried).
    let key = v.join("keys/rsa-priv.pem");
    let o = run(&mut s.pull(
        &reference,
        "rootfs",
        &[
            "--decryption-key",
            wrong.to_str().unwrap(),
            "--decryption-key",
            key.to_str().unwrap(),
        ],
    ));
    assert_success(&o);
    assert_eq!(text(&o.stdout), format!("{digest}\n"), "{}", show(&o));
    assert_eq!(
        std::fs::read(s.path("rootfs/etc/harness-arch")).unwrap(),
        b"amd64\n"
    );
}

#[test]
fn password_protected_decryption_key_works_and_the_password_is_never_printed() {
    let Some(v) = ocicrypt_vectors() else { return };
    let s = Setup::new(RegistryOptions::default());
    let digest = push_encrypted_vector(&s, &v);
    let reference = format!("{}/cli/enc:v1", s.reg.addr());
    let protected = s.path("rsa-priv-pkcs8-aes256.pem");
    integration_tests::cmd::run(
        Command::new("openssl")
            .args([
                "pkcs8",
                "-topk8",
                "-v2",
                "aes256",
                "-passout",
                "pass:s3cret",
            ])
            .arg("-in")
            .arg(v.join("keys/rsa-priv.pem"))
            .arg("-out")
            .arg(&protected),
    );
    assert!(std::fs::read_to_string(&protected)
        .unwrap()
        .contains("BEGIN ENCRYPTED PRIVATE KEY"));
    let arg = |password: &str| format!("{}:{password}", protected.display());

    let o = run(&mut s.pull(&reference, "rootfs", &["--decryption-key", &arg("s3cret")]));
    assert_success(&o);
    assert_eq!(text(&o.stdout), format!("{digest}\n"), "{}", show(&o));
    assert_eq!(
        std::fs::read(s.path("rootfs/etc/harness-arch")).unwrap(),
        b"amd64\n"
    );
    assert!(!text(&o.stderr).contains("s3cret"), "{}", show(&o));

    // A wrong password: one error line, about the key file, without the password.
    let o = run(&mut s.pull(
        &reference,
        "rootfs-wrong",
        &[
            "--progress",
            "none",
            "--decryption-key",
            &arg("Wr0ng-pa55phrase"),
        ],
    ));
    let line = error_line(&o);
    assert!(line.contains("--decryption-key"), "{line}");
    assert!(line.contains("wrong password"), "{line}");
    assert!(
        line.contains(&protected.display().to_string()),
        "names the key file: {line}"
    );
    let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        !all.contains("Wr0ng-pa55phrase"),
        "password printed:\n{}",
        show(&o)
    );
    assert!(
        !all.contains("pa55"),
        "part of the password printed:\n{}",
        show(&o)
    );
    assert!(!s.path("rootfs-wrong").exists());

    // No password for the encrypted key: refused too, without a pull.
    let o = run(&mut s.pull(
        &reference,
        "rootfs-nopass",
        &[
            "--progress",
            "none",
            "--decryption-key",
            protected.to_str().unwrap(),
        ],
    ));
    let line = error_line(&o);
    assert!(line.contains("--decryption-key"), "{line}");
    assert!(line.contains("no password was given"), "{line}");
    assert!(!s.path("rootfs-nopass").exists());

    // A key file that does not exist, with a password: the password is not echoed.
    let missing = format!("{}:Sec0nd-pa55phrase", s.path("no-such-key.pem").display());
    let o = run(&mut s.pull(
        &reference,
        "rootfs-missing",
        &["--progress", "none", "--decryption-key", &missing],
    ));
    let line = error_line(&o);
    assert!(line.contains("no such key file"), "{line}");
    assert!(!line.contains("Sec0nd"), "password printed: {line}");
}

#[test]
fn key_provider_dir_opens_a_coco_image() {
    let Some(v) = ocicrypt_vectors() else { return };
    if !v.join("coco-enc/index.json").exists() || !v.join("keys/kbs/default/key/1").exists() {
        eprintln!("SKIPPED: the coco-enc vector or its KBS key is absent");
        return;
    }
    let s = Setup::new(RegistryOptions::default());
    let coco = integration_tests::layout::OciLayout::new(v.join("coco-enc"));
    let digest = integration_tests::push::push(
        &coco,
        "coco",
        &s.reg,
        "cli/coco:v1",
        integration_tests::push::PushOptions::default(),
    );
    let reference = format!("{}/cli/coco:v1", s.reg.addr());

    let o = run(&mut s.pull(&reference, "rootfs-nokbs", &["--progress", "none"]));
    let line = error_line(&o);
    assert!(
        line.contains("kbs:///default/key/1"),
        "names the kid: {line}"
    );
    assert!(!s.path("rootfs-nokbs").exists());

    let kbs = v.join("keys/kbs");
    let o = run(&mut s.pull(
        &reference,
        "rootfs",
        &["--key-provider-dir", kbs.to_str().unwrap()],
    ));
    assert_success(&o);
    assert_eq!(text(&o.stdout), format!("{digest}\n"), "{}", show(&o));
    assert_eq!(
        std::fs::read(s.path("rootfs/etc/harness-arch")).unwrap(),
        b"amd64\n"
    );
}
