//! The two binaries: `agentctl` against an agent, and the real
//! `guest-agent` started as a process.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestAgent;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

const AGENTCTL: &str = env!("CARGO_BIN_EXE_agentctl");
const GUEST_AGENT: &str = env!("CARGO_BIN_EXE_guest-agent");

/// Runs agentctl off the async runtime (the agent under test runs on it).
async fn agentctl(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(AGENTCTL)
            .args(&args)
            .output()
            .expect("run agentctl")
    })
    .await
    .unwrap()
}

fn args(addr: &str, rest: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--addr".to_string(),
        addr.to_string(),
        "--timeout".into(),
        "10".into(),
    ];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn json_out(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "agentctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("agentctl prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentctl_check_version_call() {
    let agent = TestAgent::with_policy(
        "package agent_policy\ndefault GuestDetailsRequest := true\ndefault GetMetricsRequest := true\n\
         default ListInterfacesRequest := false\ndefault SetPolicyRequest := true\n\
         default StartContainerRequest := true\ndefault UpdateEphemeralMountsRequest := true",
    )
    .await;
    let addr = agent.addr.to_string();

    let out = agentctl(args(&addr, &["check"])).await;
    assert_eq!(json_out(&out), serde_json::json!({"status": 1}));

    let out = agentctl(args(&addr, &["version"])).await;
    assert_eq!(json_out(&out)["agent_version"], agent::AGENT_VERSION);

    let out = agentctl(args(
        &addr,
        &["call", "GetGuestDetails", r#"{"mem_block_size": true}"#],
    ))
    .await;
    let v = json_out(&out);
    assert_eq!(
        v["agent_details"]["storage_handlers"][0],
        "image_guest_pull"
    );
    assert_eq!(v["agent_details"]["version"], agent::AGENT_VERSION);

    let out = agentctl(args(&addr, &["guest-details"])).await;
    assert!(json_out(&out)["agent_details"].is_object());

    let out = agentctl(args(&addr, &["call", "grpc.Health/Check"])).await;
    assert_eq!(json_out(&out)["status"], 1);

    let out = agentctl(args(&addr, &["metrics"])).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sealpod_agent_rpc_requests_total{method=\"Check\"} 2"),
        "{text}"
    );

    // Failures exit 1 with the reason on stderr.
    let out = agentctl(args(&addr, &["call", "ListInterfaces"])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PERMISSION_DENIED"), "{err}");
    assert!(
        err.contains("ListInterfacesRequest is blocked by policy"),
        "{err}"
    );

    let out = agentctl(args(&addr, &["call", "UpdateEphemeralMounts", r#"{}"#])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("UpdateEphemeralMounts is not implemented yet"));

    let out = agentctl(args(
        &addr,
        &["call", "StartContainer", r#"{"container_id": "c1"}"#],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("NOT_FOUND") || err.contains("no container \"c1\""),
        "{err}"
    );

    let out = agentctl(args(&addr, &["call", "NoSuchMethod"])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown method"));

    let out = agentctl(args(
        &addr,
        &["call", "GetGuestDetails", r#"{"mem_block_size": "yes"}"#],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));

    // set-policy from a file.
    let policy = agent.dir.path().join("next.rego");
    std::fs::write(
        &policy,
        "package agent_policy\ndefault ListInterfacesRequest := true",
    )
    .unwrap();
    let out = agentctl(args(&addr, &["set-policy", &policy.display().to_string()])).await;
    assert_eq!(json_out(&out), serde_json::json!({}));
    let out = agentctl(args(&addr, &["call", "ListInterfaces"])).await;
    assert!(json_out(&out)["Interfaces"].is_array());

    // Nobody listening.
    let missing = format!("unix://{}", agent.dir.path().join("missing.sock").display());
    let out = agentctl(args(&missing, &["check"])).await;
    assert_eq!(out.status.code(), Some(1));
}

/// A stand-in for a Firecracker/Cloud Hypervisor hybrid-vsock socket: expects
/// `CONNECT <port>\n`, answers `OK <port>\n`, then relays to the agent.
async fn hybrid_vsock_proxy(listen: PathBuf, agent: PathBuf, port: u32) {
    let listener = tokio::net::UnixListener::bind(&listen).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let agent = agent.clone();
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                let mut line = String::new();
                if conn.read_line(&mut line).await.is_err() {
                    return;
                }
                if line != format!("CONNECT {port}\n") {
                    let _ = conn.get_mut().write_all(b"FAILURE\n").await;
                    return;
                }
                conn.get_mut()
                    .write_all(format!("OK {port}\n").as_bytes())
                    .await
                    .unwrap();
                let mut upstream = tokio::net::UnixStream::connect(&agent).await.unwrap();
                let mut conn = conn.into_inner();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentctl_over_hybrid_vsock() {
    let agent = TestAgent::start().await;
    let hv = agent.dir.path().join("vm.vsock");
    hybrid_vsock_proxy(hv.clone(), agent.socket(), 1024).await;
    let addr = format!("unix://{}", hv.display());

    let out = agentctl(args(&addr, &["--hybrid-vsock", "check"])).await;
    assert_eq!(json_out(&out), serde_json::json!({"status": 1}));

    // The wrong port is refused by the VMM: a clear error.
    let out = agentctl(args(
        &addr,
        &["--hybrid-vsock", "--hybrid-vsock-port", "2048", "version"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hybrid vsock handshake"), "{err}");
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(path: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("guest-agent exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "guest-agent did not listen in time"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn guest_agent_binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let policy = dir.path().join("policy.rego");
    std::fs::write(
        &policy,
        "package agent_policy\ndefault GuestDetailsRequest := false",
    )
    .unwrap();
    let child = Command::new(GUEST_AGENT)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--cmdline-file")
        .arg(dir.path().join("no-cmdline"))
        .env(
            "KATA_AGENT_SERVER_ADDR",
            format!("unix://{}", sock.display()),
        )
        .env("KATA_AGENT_POLICY_FILE", &policy)
        .env("KATA_AGENT_LOG_LEVEL", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn guest-agent");
    let mut guard = ChildGuard(child);
    wait_for_socket(&sock, &mut guard.0);
    let addr = format!("unix://{}", sock.display());

    let run = |rest: &[&str]| {
        Command::new(AGENTCTL)
            .args(args(&addr, rest))
            .output()
            .expect("run agentctl")
    };
    assert_eq!(json_out(&run(&["check"])), serde_json::json!({"status": 1}));
    let out = run(&["guest-details"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GuestDetailsRequest is blocked by policy")
    );

    // SIGTERM: clean exit, socket removed, JSON logs on a non-terminal stderr.
    let pid = rustix::process::Pid::from_raw(guard.0.id() as i32).expect("child pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "guest-agent ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "socket file left behind");
    let mut stderr = String::new();
    std::io::Read::read_to_string(guard.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let first = stderr.lines().next().expect("some logs");
    let log: serde_json::Value = serde_json::from_str(first).expect("JSON log lines");
    assert_eq!(log["level"], "INFO");
    assert!(stderr.contains("request denied by policy"), "{stderr}");
}

#[test]
fn guest_agent_refuses_a_broken_policy_and_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("broken.rego");
    std::fs::write(&policy, "package agent_policy\nthis is not rego").unwrap();
    let base = |cmd: &mut Command| {
        cmd.arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--cmdline-file")
            .arg(dir.path().join("no-cmdline"))
            .arg("--server-addr")
            .arg(format!("unix://{}", dir.path().join("a.sock").display()));
    };
    let mut cmd = Command::new(GUEST_AGENT);
    base(&mut cmd);
    let out = cmd.arg("--policy").arg(&policy).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loading the agent policy"), "{err}");

    let cmdline = dir.path().join("cmdline");
    std::fs::write(&cmdline, "quiet agent.image_pull_timeout=soon\n").unwrap();
    let out = Command::new(GUEST_AGENT)
        .arg("--cmdline-file")
        .arg(&cmdline)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.image_pull_timeout"), "{err}");
}
