//! The `kernel-config` binary end to end: output shapes and exit codes.

use std::path::Path;
use std::process::{Command, Output};

fn kc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kernel-config"))
        .args(args)
        .output()
        .expect("run kernel-config")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_shows_every_fragment_and_the_defaults() {
    let o = kc(&["list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for name in [
        "base",
        "vsock",
        "container",
        "snp",
        "tdx",
        "storage",
        "hardening",
        "measured",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{text}"
        );
    }
    assert!(text.contains("default features: base,vsock,container,snp,tdx,storage,hardening"));

    let o = kc(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let snp = v
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "snp")
        .unwrap();
    let tsm = snp["options"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["option"] == "CONFIG_TSM_REPORTS")
        .unwrap();
    assert_eq!(tsm["min_kernel"], "6.7");
    assert_eq!(tsm["accepted"], serde_json::json!(["y", "m"]));
}

#[test]
fn merge_writes_a_fragment_with_requirements_first() {
    let o = kc(&["merge", "--features", "vsock,snp"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let base = text.find("CONFIG_VIRTIO_PCI=y").unwrap();
    let vsock = text.find("CONFIG_VIRTIO_VSOCKETS=y").unwrap();
    assert!(base < vsock, "base (required by vsock) comes first");
    assert!(text.contains("# [snp] /dev/sev-guest"));
    assert!(text.contains("CONFIG_SEV_GUEST=y"));
    assert!(
        !text.contains("CONFIG_DEVMEM"),
        "hardening was not asked for"
    );

    let o = kc(&["merge", "--features", "base,nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown feature \"nosuch\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn merge_reports_conflicts_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("debug.config"),
        "# wants debugfs\n\n# for tracing\nCONFIG_DEBUG_FS=y\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("hard.config"),
        "# forbids it\n\n# leaks\n# CONFIG_DEBUG_FS is not set\n",
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    let o = kc(&["--fragments-dir", d, "merge", "--features", "debug,hard"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("CONFIG_DEBUG_FS: debug (line 4) wants y, hard (line 4) wants off"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
}

fn write_config(dir: &Path, body: &str) -> String {
    let p = dir.join("config");
    std::fs::write(
        &p,
        format!("# Linux/x86 6.1.0 Kernel Configuration\n{body}"),
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn check_exit_codes_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    // vsock needs base; give a config with exactly what base + vsock want.
    let merged = stdout(&kc(&["merge", "--features", "vsock"]));
    let good = write_config(dir.path(), &merged);
    let o = kc(&["check", "--config", &good, "--features", "vsock"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    let summary = text.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("OK: ") && summary.contains(" 0 failed, 0 too new"),
        "{text}"
    );

    // Drop vsock, make a module of something, then check again: exit 1, each named.
    let bad_body = merged
        .replace("CONFIG_VIRTIO_VSOCKETS=y", "")
        .replace("CONFIG_VIRTIO_BLK=y", "CONFIG_VIRTIO_BLK=m");
    let bad = write_config(dir.path(), &bad_body);
    let o = kc(&["check", "--config", &bad, "--features", "vsock"]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("FAIL CONFIG_VIRTIO_VSOCKETS"), "{text}");
    assert!(text.contains("FAIL CONFIG_VIRTIO_BLK"), "{text}");
    assert!(text.contains("built as a module"), "{text}");

    let o = kc(&[
        "check",
        "--config",
        &bad,
        "--features",
        "vsock",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["summary"]["failed"], 2);
    let statuses: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["severity"] == "failure")
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["module-not-builtin", "missing"]);
}

#[test]
fn too_new_is_a_warning_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    // A 6.1 kernel with SNP but without configfs-tsm (which came in 6.7).
    let body = stdout(&kc(&["merge", "--features", "snp"])).replace("CONFIG_TSM_REPORTS=y", "");
    let cfg = write_config(dir.path(), &body);
    let o = kc(&["check", "--config", &cfg, "--features", "snp"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("WARN CONFIG_TSM_REPORTS"), "{text}");
    assert!(
        text.contains("too new for this kernel (needs 6.7, kernel is 6.1.0)"),
        "{text}"
    );
    let o = kc(&["check", "--config", &cfg, "--features", "snp", "--strict"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn check_needs_exactly_one_source_and_says_what_went_wrong() {
    assert_eq!(kc(&["check"]).status.code(), Some(2));
    assert_eq!(
        kc(&["check", "--running", "--config", "x"]).status.code(),
        Some(2)
    );
    let o = kc(&["check", "--config", "/nonexistent/config"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/config"), "{}", stderr(&o));
}
