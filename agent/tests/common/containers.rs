//! Fixtures of the container tests: the real `guest-agent` binary as a child
//! process (never in-process: its SIGCHLD reaper reaps every child of the
//! process it runs in), the busybox image in the test's own registry, and
//! helpers for the Kata stdio pull model.
//!
//! Everything a test makes is its own (registry, temp dirs, agent, container
//! IDs unique to the test process) and is torn down on drop, also when the
//! test panics: the agent is stopped (SIGTERM, then SIGKILL), container
//! processes it left are killed through their cgroups, mounts under its
//! state dir are detached deepest first, and the temp dir is removed.

#![allow(dead_code)] // each test uses a different part

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent::addr::ServerAddr;
use agent::client::{AgentClient, ClientError, ConnectOptions};
pub use integration_tests::agent::{dir_names, mounts_under};
use integration_tests::agent::{GuestAgent, GuestAgentOptions};
use integration_tests::images::BusyboxInRegistry;
use integration_tests::registry::Registry;
use serde_json::{json, Value};

/// The agent binary under test.
pub const GUEST_AGENT: &str = env!("CARGO_BIN_EXE_guest-agent");
/// The host-side CLI under test.
pub const AGENTCTL: &str = env!("CARGO_BIN_EXE_agentctl");

/// Bound for every wait of a test (a call, a stream to EOF, a process exit).
pub const WAIT: Duration = Duration::from_secs(60);
/// Bytes asked for per ReadStdout/ReadStderr.
const READ_LEN: u32 = 64 * 1024;
/// A container ID unique to this test process and call: container cgroups
/// are named after the ID alone (`/sealpod/<id>`), so agents running at the
/// same time on this host must never share one.
pub fn unique_id(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------
// The image
// ---------------------------------------------------------------------------

/// The busybox fixture image in a registry of its own.
#[derive(Debug)]
pub struct TestImage {
    /// The registry serving it (killed on drop).
    pub registry: Registry,
    /// `127.0.0.1:PORT/sealpod/busybox:latest`.
    pub reference: String,
    /// Digests of the image's layer blobs (what a puller downloads).
    pub layers: Vec<String>,
    /// The layers' diff_ids (what names an unpacked layer in the store).
    pub diff_ids: Vec<String>,
    _layout: tempfile::TempDir,
}

impl TestImage {
    /// Builds busybox ([`images::build_busybox`]) into a fresh layout and
    /// pushes it to a fresh registry (off the async workers).
    pub async fn busybox() -> TestImage {
        tokio::task::spawn_blocking(|| {
            let BusyboxInRegistry {
                registry,
                layout,
                dir,
            } = BusyboxInRegistry::start("sealpod/busybox:latest");
            let layers = layout.manifest("latest")["layers"]
                .as_array()
                .expect("manifest layers")
                .iter()
                .map(|l| l["digest"].as_str().expect("layer digest").to_string())
                .collect();
            let diff_ids = layout.config("latest")["rootfs"]["diff_ids"]
                .as_array()
                .expect("config diff_ids")
                .iter()
                .map(|d| d.as_str().expect("diff_id").to_string())
                .collect();
            let reference = format!("{}/sealpod/busybox:latest", registry.addr());
            TestImage {
                registry,
                reference,
                layers,
                diff_ids,
                _layout: dir,
            }
        })
        .await
        .expect("building the busybox image")
    }

    /// The same image reached through `addr` (e.g. a proxy) instead.
    pub fn via(&self, addr: &str) -> String {
        format!("{addr}/sealpod/busybox:latest")
    }
}

// ---------------------------------------------------------------------------
// The agent process
// ---------------------------------------------------------------------------

/// A `guest-agent` process on `<tmp>/agent.sock` with state in `<tmp>/state`
/// ([`GuestAgent`], which stops it and cleans up what it left on drop).
#[derive(Debug)]
pub struct AgentProcess {
    // Dropped before `dir`: the agent is stopped before its files go.
    inner: GuestAgent,
    dir: tempfile::TempDir,
    /// `unix://<tmp>/agent.sock`.
    pub addr: ServerAddr,
    /// `<tmp>/state`.
    pub state_dir: PathBuf,
}

impl AgentProcess {
    /// Starts an agent without a policy (everything allowed).
    pub async fn start() -> AgentProcess {
        Self::spawn(None).await
    }

    /// Starts an agent with `--policy` = a file holding `rego`.
    pub async fn with_policy(rego: &str) -> AgentProcess {
        Self::spawn(Some(rego)).await
    }

    async fn spawn(policy: Option<&str>) -> AgentProcess {
        let dir = tempfile::Builder::new()
            .prefix("sealpod-ctr-agent-")
            .tempdir()
            .expect("agent temp dir");
        let mut opts = GuestAgentOptions::new(GUEST_AGENT, AGENTCTL, dir.path());
        if let Some(rego) = policy {
            let file = dir.path().join("policy.rego");
            std::fs::write(&file, rego).expect("write policy");
            opts.policy = Some(file);
        }
        let inner = tokio::task::spawn_blocking(move || GuestAgent::start(opts))
            .await
            .expect("starting guest-agent");
        AgentProcess {
            addr: ServerAddr::Unix(dir.path().join("agent.sock")),
            state_dir: inner.state_dir(),
            inner,
            dir,
        }
    }

    /// The agent's address as agentctl takes it.
    pub fn addr_arg(&self) -> String {
        self.addr.to_string()
    }

    /// A connection whose calls are bounded by [`WAIT`].
    pub async fn client(&self) -> AgentClient {
        self.connect(Some(WAIT)).await
    }

    /// A connection without a call timeout, for calls that block (reads,
    /// waits); bound them with [`bounded`].
    pub async fn streaming_client(&self) -> AgentClient {
        self.connect(None).await
    }

    async fn connect(&self, timeout: Option<Duration>) -> AgentClient {
        let opts = ConnectOptions {
            addr: self.addr.clone(),
            hybrid_vsock_port: None,
            timeout,
        };
        bounded("connecting to the agent", AgentClient::connect(&opts))
            .await
            .expect("connect to agent")
    }

    /// The agent's log (its stderr) so far.
    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// `<state>/containers`.
    pub fn containers_dir(&self) -> PathBuf {
        self.state_dir.join("containers")
    }

    /// `<state>/containers/<id>`, a container's bundle.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }

    /// The temp dir everything of this agent lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Entries of `<state>/containers` (bundles), sorted.
    pub fn bundles(&self) -> Vec<String> {
        dir_names(&self.containers_dir())
    }

    /// Mount points at or below the state dir, from `/proc/self/mountinfo`.
    pub fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.state_dir)
    }

    /// Runs `agentctl --addr ADDR ARGS...` (off the async workers), bounded
    /// by [`WAIT`].
    pub async fn agentctl(&self, args: &[&str]) -> Output {
        run_bounded(AGENTCTL, self.agentctl_args(args)).await
    }

    /// `--addr ADDR --timeout 30 ARGS...`, agentctl's command line.
    pub fn agentctl_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![
            "--addr".to_string(),
            self.addr_arg(),
            "--timeout".to_string(),
            "30".to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    /// Asserts the container `id` left nothing: no bundle, no runtime
    /// state, no mount under the state dir.
    pub fn assert_gone(&self, id: &str) {
        assert!(
            !self.bundle(id).exists(),
            "bundle of {id} still there: {:?}",
            dir_names(&self.bundle(id))
        );
        assert!(
            !self.state_dir.join("runtime").join(id).exists(),
            "runtime state of {id} still there"
        );
        let m: Vec<PathBuf> = self
            .mounts()
            .into_iter()
            .filter(|m| m.starts_with(self.bundle(id)))
            .collect();
        assert!(m.is_empty(), "mounts of {id} left: {m:?}");
    }
}

/// The unpacked layers in the agent's image store, as `alg:hex` diff_ids.
pub fn store_layers(state_dir: &Path) -> Vec<String> {
    let root = state_dir.join("images/layers");
    let mut v: Vec<String> = dir_names(&root)
        .into_iter()
        .flat_map(|alg| {
            dir_names(&root.join(&alg))
                .into_iter()
                .map(move |hex| format!("{alg}:{hex}"))
        })
        .collect();
    v.sort();
    v
}

/// Runs `program ARGS...` to completion off the async workers; kills it and
/// panics if it takes longer than [`WAIT`].
pub async fn run_bounded(program: &str, args: Vec<String>) -> Output {
    let program = PathBuf::from(program);
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    tokio::task::spawn_blocking(move || {
        integration_tests::agent::run_bounded(&program, &args, WAIT)
    })
    .await
    .expect("child runner")
}

// ---------------------------------------------------------------------------
// Requests and streams
// ---------------------------------------------------------------------------

/// `f` bounded by [`WAIT`]: a hang fails the test with `what`.
pub async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {WAIT:?}"))
}

/// A CreateContainer request running `args` from `image` (pulled in the
/// guest), with or without a terminal.
pub fn create_request(id: &str, image: &str, args: &[&str], terminal: bool) -> Value {
    json!({
        "container_id": id,
        "exec_id": id,
        "storages": [{"driver": "image_guest_pull", "source": image}],
        "OCI": {
            "Version": "1.1.0",
            "Process": {"Terminal": terminal, "Args": args, "Cwd": "/"},
            "Root": {"Path": "rootfs"},
        },
    })
}

/// An ExecProcess request.
pub fn exec_request(id: &str, exec_id: &str, args: &[&str], terminal: bool) -> Value {
    json!({
        "container_id": id,
        "exec_id": exec_id,
        "process": {
            "Terminal": terminal,
            "Args": args,
            "Env": ["PATH=/bin"],
            "Cwd": "/",
        },
    })
}

/// Calls `method`, panicking with the agent's error if it fails.
pub async fn call(client: &AgentClient, method: &str, req: Value) -> Value {
    bounded(method, client.call_json(method, &req))
        .await
        .unwrap_or_else(|e| panic!("{method} {req}: {e}"))
}

/// Calls `method`, expecting an error status; returns (code, message).
pub async fn call_err(client: &AgentClient, method: &str, req: Value) -> (String, String) {
    match bounded(method, client.call_json(method, &req)).await {
        Ok(v) => panic!("{method} {req}: expected an error, got {v}"),
        Err(ClientError::Status { code, message, .. }) => (code, message),
        Err(e) => panic!("{method} {req}: expected an error status, got {e}"),
    }
}

/// Creates and starts container `id` running `args`.
pub async fn run_container(client: &AgentClient, id: &str, image: &str, args: &[&str]) {
    call(
        client,
        "CreateContainer",
        create_request(id, image, args, false),
    )
    .await;
    call(client, "StartContainer", json!({"container_id": id})).await;
}

/// A `bytes` field of a JSON response (an array of numbers).
pub fn bytes_of(v: &Value) -> Vec<u8> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_u64().expect("byte") as u8).collect(),
        Value::Null => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => panic!("not bytes: {other}"),
    }
}

/// One ReadStdout/ReadStderr call; empty = EOF.
pub async fn read_once(client: &AgentClient, method: &str, id: &str, exec_id: &str) -> Vec<u8> {
    let resp = call(
        client,
        method,
        json!({"container_id": id, "exec_id": exec_id, "len": READ_LEN}),
    )
    .await;
    bytes_of(&resp["data"])
}

/// Reads `method` (ReadStdout or ReadStderr) until EOF, bounded by [`WAIT`].
pub async fn read_to_eof(client: &AgentClient, method: &str, id: &str, exec_id: &str) -> Vec<u8> {
    bounded(&format!("{method} of {id}/{exec_id} to EOF"), async {
        let mut all = Vec::new();
        loop {
            let chunk = read_once(client, method, id, exec_id).await;
            if chunk.is_empty() {
                return all;
            }
            all.extend(chunk);
        }
    })
    .await
}

/// WaitProcess, bounded by [`WAIT`].
pub async fn wait_status(client: &AgentClient, id: &str, exec_id: &str) -> i64 {
    let resp = call(
        client,
        "WaitProcess",
        json!({"container_id": id, "exec_id": exec_id}),
    )
    .await;
    resp["status"].as_i64().unwrap_or(0)
}

/// PIDs (in our namespace) whose command line is exactly `argv`.
pub fn pids_with_cmdline(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    dir_names(Path::new("/proc"))
        .into_iter()
        .filter_map(|n| n.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

/// Whether `pid` exists (a zombie counts).
pub fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}
