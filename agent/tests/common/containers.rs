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
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use agent::addr::ServerAddr;
use agent::client::{AgentClient, ClientError, ConnectOptions};
use integration_tests::images;
use integration_tests::layout::OciLayout;
use integration_tests::push::{self, PushOptions};
use integration_tests::registry::{Registry, RegistryOptions};
use serde_json::{json, Value};

/// The agent binary under test.
pub const GUEST_AGENT: &str = env!("CARGO_BIN_EXE_guest-agent");
/// The host-side CLI under test.
pub const AGENTCTL: &str = env!("CARGO_BIN_EXE_agentctl");

/// Bound for every wait of a test (a call, a stream to EOF, a process exit).
pub const WAIT: Duration = Duration::from_secs(60);
/// How long the agent may take to answer its first Check.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the agent may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes asked for per ReadStdout/ReadStderr.
const READ_LEN: u32 = 64 * 1024;
/// Where the agent puts every container's cgroup (`/sealpod/<id>`).
const CGROUP_PARENT: &str = "sealpod";

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
            let registry = Registry::start(RegistryOptions::default());
            let dir = tempfile::Builder::new()
                .prefix("sealpod-ctr-layout-")
                .tempdir()
                .expect("layout temp dir");
            let layout = OciLayout::new(dir.path().join("layout"));
            images::build_busybox(&layout, "latest");
            push::push(
                &layout,
                "latest",
                &registry,
                "sealpod/busybox:latest",
                PushOptions::default(),
            );
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

/// A `guest-agent` process on `<tmp>/agent.sock` with state in `<tmp>/state`.
#[derive(Debug)]
pub struct AgentProcess {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    /// `unix://<tmp>/agent.sock`.
    pub addr: ServerAddr,
    /// `<tmp>/state`.
    pub state_dir: PathBuf,
    log: PathBuf,
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
        let sock = dir.path().join("agent.sock");
        let state_dir = dir.path().join("state");
        let log = dir.path().join("agent.log");
        let mut cmd = Command::new(GUEST_AGENT);
        cmd.arg("--server-addr")
            .arg(format!("unix://{}", sock.display()))
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--cmdline-file")
            .arg("/dev/null")
            .env_remove("KATA_AGENT_SERVER_ADDR")
            .env_remove("KATA_AGENT_LOG_LEVEL")
            .env_remove("KATA_AGENT_POLICY_FILE")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("agent.stdout")).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(rego) = policy {
            let file = dir.path().join("policy.rego");
            std::fs::write(&file, rego).expect("write policy");
            cmd.arg("--policy").arg(file);
        }
        let child = cmd.spawn().expect("spawn guest-agent");
        let mut agent = AgentProcess {
            child: Some(child),
            addr: ServerAddr::Unix(sock),
            state_dir,
            log,
            dir: Some(dir),
        };
        agent.wait_ready().await;
        agent
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "guest-agent exited with {status} before serving\n--- agent log ---\n{}",
                    self.log()
                );
            }
            let opts = ConnectOptions {
                addr: self.addr.clone(),
                hybrid_vsock_port: None,
                timeout: Some(Duration::from_secs(2)),
            };
            if let Ok(c) = AgentClient::connect(&opts).await {
                if c.call_json("grpc.Health/Check", &json!({})).await.is_ok() {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "guest-agent did not answer Check within {START_TIMEOUT:?}\n--- agent log ---\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
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
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
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
        self.dir.as_ref().expect("agent dir").path()
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

    /// Stops the agent (SIGTERM, then SIGKILL) and returns what descended
    /// from it just before: processes it may have left behind.
    fn stop(&mut self) -> Vec<Proc> {
        let Some(mut child) = self.child.take() else {
            return Vec::new();
        };
        let pid = child.id() as libc::pid_t;
        let family = descendants(pid);
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on our own child, not yet reaped (try_wait said
            // it is still running), so the PID cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        family
    }

    /// After the agent is gone: kills what it left (container processes,
    /// runtime helpers), removes the containers' cgroups, detaches mounts
    /// under the state dir.
    fn clean_leftovers(&self, family: &[Proc]) {
        let mut ids = dir_names(&self.containers_dir());
        ids.extend(dir_names(&self.state_dir.join("runtime")));
        ids.sort();
        ids.dedup();
        for id in &ids {
            thaw_cgroup(id);
        }
        for p in family {
            if proc_stat(p.pid).is_some_and(|s| s.starttime == p.starttime) {
                // SAFETY: kill(2) takes no pointers; same PID and start time
                // as the agent's descendant seen before it stopped.
                unsafe { libc::kill(p.pid, libc::SIGKILL) };
            }
        }
        for id in &ids {
            let state = self.state_dir.join("runtime").join(id).join("state.json");
            let init = std::fs::read(&state)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["pid"].as_i64());
            kill_cgroup(id, init.map(|p| p as libc::pid_t));
        }
        let mut mounts = self.mounts();
        // Deepest first, so nothing is unmounted from under another mount.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in mounts {
            use std::os::unix::ffi::OsStrExt as _;
            let Ok(path) = std::ffi::CString::new(m.as_os_str().as_bytes()) else {
                continue;
            };
            // SAFETY: umount2 with a valid NUL-terminated path and flags.
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let family = self.stop();
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.addr, self.log());
            // A hang is easier to place knowing what the agent had forked
            // (e.g. a runtime helper stuck in a futex).
            eprintln!("--- agent's descendants before it was stopped ---");
            for p in &family {
                eprintln!("{p}");
            }
        }
        self.clean_leftovers(&family);
        if let Some(dir) = self.dir.take() {
            if let Err(e) = std::fs::remove_dir_all(dir.path()) {
                eprintln!("removing {}: {e}", dir.path().display());
            }
        }
    }
}

/// A process seen in `/proc`.
#[derive(Debug, Clone)]
pub struct Proc {
    /// Its PID.
    pub pid: i32,
    /// Its parent's PID.
    pub ppid: i32,
    /// Start time (clock ticks after boot): with the PID, its identity.
    pub starttime: u64,
    /// `comm`.
    pub comm: String,
    /// State letter (R, S, D, Z, ...).
    pub state: String,
    /// Where it sleeps in the kernel.
    pub wchan: String,
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ppid {} {:?} state {} wchan {}",
            self.pid, self.ppid, self.comm, self.state, self.wchan
        )
    }
}

/// `/proc/<pid>/stat` (and wchan) of `pid`.
pub fn proc_stat(pid: i32) -> Option<Proc> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    // After the comm: state (field 3), ppid (4), ... starttime (22).
    let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    Some(Proc {
        pid,
        ppid: rest.get(1)?.parse().ok()?,
        starttime: rest.get(19)?.parse().ok()?,
        comm,
        state: rest.first()?.to_string(),
        wchan: std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default(),
    })
}

/// Every descendant of `root` now.
pub fn descendants(root: i32) -> Vec<Proc> {
    let all: Vec<Proc> = dir_names(Path::new("/proc"))
        .into_iter()
        .filter_map(|n| n.parse::<i32>().ok())
        .filter_map(proc_stat)
        .collect();
    let mut out: Vec<Proc> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            frontier.push(p.pid);
            out.push(p.clone());
        }
    }
    out
}

/// Thaws the container's cgroups (a frozen process does not die).
fn thaw_cgroup(id: &str) {
    for d in cgroup_dirs(id) {
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
        let _ = std::fs::write(d.join("cgroup.freeze"), "0");
    }
}

/// The container's cgroup directories (v1: one per controller; v2: one).
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs: Vec<PathBuf> = dir_names(root)
        .into_iter()
        .map(|c| root.join(c).join(CGROUP_PARENT).join(id))
        .collect();
    dirs.push(root.join(CGROUP_PARENT).join(id));
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Kills what is left in the container's cgroups (thawed first) and
/// removes them.
fn kill_cgroup(id: &str, init: Option<libc::pid_t>) {
    let dirs = cgroup_dirs(id);
    thaw_cgroup(id);
    if let Some(pid) = init {
        // SAFETY: kill(2) takes no pointers; this is a best-effort cleanup of
        // a container init the agent left behind.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = 0;
        for d in &dirs {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                left += 1;
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if left == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Mount points at or below `dir` (mountinfo field 5, octal escapes decoded).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// Names of the entries of `dir`, sorted (empty if it does not exist).
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs `program ARGS...` to completion off the async workers; kills it and
/// panics if it takes longer than [`WAIT`].
pub async fn run_bounded(program: &str, args: Vec<String>) -> Output {
    let shown = format!("{program} {}", args.join(" "));
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if rx.recv_timeout(WAIT).is_err() {
                // SAFETY: kill(2) takes no pointers; the child is still ours
                // (the main thread has not reaped it: it would have sent).
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                true
            } else {
                false
            }
        });
        let out = child.wait_with_output().expect("wait for child");
        let _ = tx.send(());
        let killed = watchdog.join().unwrap_or(false);
        assert!(!killed, "`{shown}` did not finish within {WAIT:?}");
        out
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
