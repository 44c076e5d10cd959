//! The real `guest-agent` binary as a child process on a unix socket, driven
//! from outside (by `agentctl`, as a host would), and torn down completely.
//!
//! The agent runs as its own process, never in the test process: its SIGCHLD
//! reaper reaps every child of the process it runs in. Its files live in a
//! directory the caller owns ([`GuestAgentOptions::dir`]), so an agent can be
//! stopped and a new one started on the same state (a restart). On drop (also
//! when the test panics) the agent is stopped (SIGTERM, then SIGKILL), the
//! container processes it left are killed through their cgroups, mounts under
//! its state dir are detached deepest first, and its log is printed if the
//! test is failing. The caller's directory itself is the caller's to remove.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound for a command the tests run (an `agentctl` call, a container run).
pub const WAIT: Duration = Duration::from_secs(90);
/// How long the agent may take to answer its first `check`.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the agent may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the agent puts every container's cgroup (`/sealpod/<id>`).
const CGROUP_PARENT: &str = "sealpod";

/// How to start a [`GuestAgent`].
#[derive(Debug, Clone)]
pub struct GuestAgentOptions {
    /// The `guest-agent` binary.
    pub bin: PathBuf,
    /// The `agentctl` binary (readiness checks and [`GuestAgent::agentctl`]).
    pub agentctl: PathBuf,
    /// Directory for the socket (`agent.sock`), state (`state/`) and log
    /// (`agent.log`); reusing it across agents is a restart.
    pub dir: PathBuf,
    /// The kernel command line the agent reads its `agent.*` parameters from.
    pub cmdline: String,
    /// `--policy` file.
    pub policy: Option<PathBuf>,
    /// `--initdata` file.
    pub initdata: Option<PathBuf>,
    /// Extra environment (e.g. the sample TEE's launch config).
    pub env: Vec<(String, String)>,
}

impl GuestAgentOptions {
    /// Options for an agent in `dir` with an empty command line and nothing else.
    pub fn new(bin: impl Into<PathBuf>, agentctl: impl Into<PathBuf>, dir: &Path) -> Self {
        GuestAgentOptions {
            bin: bin.into(),
            agentctl: agentctl.into(),
            dir: dir.to_path_buf(),
            cmdline: String::new(),
            policy: None,
            initdata: None,
            env: Vec::new(),
        }
    }
}

/// Why [`GuestAgent::start`] did not give a serving agent.
#[derive(Debug)]
pub struct StartFailure {
    /// The exit status, if the agent exited (`None`: it hung without serving).
    pub status: Option<std::process::ExitStatus>,
    /// Its log (stderr).
    pub log: String,
}

/// A running `guest-agent` child (stopped and cleaned up on drop).
#[derive(Debug)]
pub struct GuestAgent {
    child: Option<Child>,
    opts: GuestAgentOptions,
}

impl GuestAgent {
    /// Starts the agent and waits until `agentctl check` succeeds; panics with
    /// its log if it does not.
    pub fn start(opts: GuestAgentOptions) -> GuestAgent {
        match Self::try_start(opts) {
            Ok(a) => a,
            Err(f) => panic!(
                "guest-agent did not start serving (exit: {:?})\n--- agent log ---\n{}",
                f.status, f.log
            ),
        }
    }

    /// Starts the agent; an agent that exits (or does not serve within the
    /// start timeout) is a [`StartFailure`] carrying its status and log.
    pub fn try_start(opts: GuestAgentOptions) -> Result<GuestAgent, StartFailure> {
        std::fs::create_dir_all(&opts.dir).expect("agent dir");
        let cmdline = opts.dir.join("cmdline");
        std::fs::write(&cmdline, &opts.cmdline).expect("write cmdline file");
        let log = opts.dir.join("agent.log");
        let mut cmd = Command::new(&opts.bin);
        cmd.arg("--server-addr")
            .arg(format!("unix://{}", opts.dir.join("agent.sock").display()))
            .arg("--state-dir")
            .arg(opts.dir.join("state"))
            .arg("--cmdline-file")
            .arg(&cmdline)
            .env_remove("KATA_AGENT_SERVER_ADDR")
            .env_remove("KATA_AGENT_LOG_LEVEL")
            .env_remove("KATA_AGENT_POLICY_FILE")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(opts.dir.join("agent.stdout")).expect("stdout file"))
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .expect("log file"),
            );
        if let Some(p) = &opts.policy {
            cmd.arg("--policy").arg(p);
        }
        if let Some(p) = &opts.initdata {
            cmd.arg("--initdata").arg(p);
        }
        let child = cmd.spawn().expect("spawn guest-agent");
        let mut agent = GuestAgent {
            child: Some(child),
            opts,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = agent
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let log = agent.log();
                agent.child = None;
                return Err(StartFailure {
                    status: Some(status),
                    log,
                });
            }
            let out = agent.agentctl_with_timeout(&["check"], Duration::from_secs(5));
            if out.status.success() {
                return Ok(agent);
            }
            if Instant::now() > deadline {
                let log = agent.log();
                return Err(StartFailure { status: None, log });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `unix:///.../agent.sock`, as agentctl's `--addr` takes it.
    pub fn addr(&self) -> String {
        format!("unix://{}", self.opts.dir.join("agent.sock").display())
    }

    /// The agent's state directory (`<dir>/state`; images in `state/images`).
    pub fn state_dir(&self) -> PathBuf {
        self.opts.dir.join("state")
    }

    /// The agent's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the agent process has exited (it is reaped if so).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => false,
            Some(_) | None => true,
        }
    }

    /// The agent's log (its stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read(self.opts.dir.join("agent.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Runs `agentctl --addr ADDR --timeout 60 ARGS...`, killed after [`WAIT`].
    pub fn agentctl(&self, args: &[&str]) -> Output {
        self.agentctl_with_timeout(args, WAIT)
    }

    fn agentctl_with_timeout(&self, args: &[&str], limit: Duration) -> Output {
        let mut all: Vec<OsString> = vec![
            "--addr".into(),
            self.addr().into(),
            "--timeout".into(),
            limit.as_secs().to_string().into(),
        ];
        all.extend(args.iter().map(OsString::from));
        run_bounded(&self.opts.agentctl, &all, limit)
    }

    /// Stops the agent (SIGTERM, then SIGKILL after a grace period) and
    /// cleans up what it left; the directory stays (for a restart).
    pub fn stop(&mut self) {
        let family = self.stop_process();
        clean_leftovers(&self.state_dir(), &family);
    }

    /// Stops the process and returns what descended from it just before.
    fn stop_process(&mut self) -> Vec<Proc> {
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
}

impl Drop for GuestAgent {
    fn drop(&mut self) {
        let family = self.stop_process();
        if std::thread::panicking() {
            eprintln!("--- agent log ({}) ---\n{}", self.addr(), self.log());
            // A hang is easier to place knowing what the agent had forked
            // (e.g. a runtime helper stuck in a futex).
            eprintln!("--- agent's descendants before it was stopped ---");
            for p in &family {
                eprintln!("{p}");
            }
        }
        clean_leftovers(&self.state_dir(), &family);
    }
}

/// After an agent is gone: kills what it left (container processes, runtime
/// helpers), removes the containers' cgroups, detaches mounts under its
/// state dir.
pub fn clean_leftovers(state_dir: &Path, family: &[Proc]) {
    let mut ids = dir_names(&state_dir.join("containers"));
    ids.extend(dir_names(&state_dir.join("runtime")));
    ids.sort();
    ids.dedup();
    for id in &ids {
        thaw_cgroup(id);
    }
    for p in family {
        if proc_stat(p.pid).is_some_and(|s| s.starttime == p.starttime) {
            // SAFETY: kill(2) takes no pointers; same PID and start time as
            // the agent's descendant seen before it stopped.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
    }
    for id in &ids {
        let state = state_dir.join("runtime").join(id).join("state.json");
        let init = std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["pid"].as_i64());
        kill_cgroup(id, init.map(|p| p as libc::pid_t));
    }
    let mut mounts = mounts_under(state_dir);
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

/// Runs `program ARGS...` to completion; kills it and panics if it takes
/// longer than `limit`.
pub fn run_bounded(program: &Path, args: &[OsString], limit: Duration) -> Output {
    let shown = format!(
        "{} {}",
        program.display(),
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) takes no pointers; the child is still ours (the
            // waiting thread has not reaped it: it would have sent).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            true
        } else {
            false
        }
    });
    let out = child.wait_with_output().expect("wait for child");
    let _ = tx.send(());
    let killed = watchdog.join().unwrap_or(false);
    assert!(!killed, "`{shown}` did not finish within {limit:?}");
    out
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

/// The path of a binary of this workspace (`target/<profile>/<name>`), next
/// to the running test's `deps/` directory. `cargo test --workspace` builds
/// every package's binaries before any test runs; a test binary run on its
/// own may not have them, and then this panics saying how to build them
/// (building from here would wait forever on the lock the running cargo
/// holds).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let bin = profile_dir.join(name);
    assert!(
        bin.is_file(),
        "{} is not built: run the tests with `cargo test --workspace` (or `cargo build --workspace --bins` first)",
        bin.display()
    );
    bin
}

/// A pod's agent policy (what initdata carries in the tests and demos):
/// everything a pod needs, including the network set-up of a VM, except
/// exec into a container (and SetPolicy, which no rule allows).
pub const POD_POLICY: &str = include_str!("../../scripts/pod-policy.rego");

/// An initdata document (version 0.1.0, sha384) naming the KBS at `kbs_url`
/// in `aa.toml`, with [`POD_POLICY`] as `policy.rego`, plus `extra` `[data]`
/// entries (name, text).
pub fn initdata_toml(kbs_url: &str, extra: &[(&str, &str)]) -> String {
    let mut text = format!(
        "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"{kbs_url}\"\n'''\n\"policy.rego\" = '''\n{POD_POLICY}'''\n"
    );
    for (name, value) in extra {
        text.push_str(&format!("\"{name}\" = '''\n{value}'''\n"));
    }
    text
}

/// The sample TEE's 64-byte launch field for the sha384 initdata `toml`, in
/// hex (`SEALPOD_SAMPLE_LAUNCH_CONFIG`): the digest zero padded, as a VMM
/// sets SNP HOST_DATA / TDX MRCONFIGID.
pub fn sample_launch_config(toml: &str) -> String {
    use sha2::Digest as _;
    let mut field = sha2::Sha384::digest(toml.as_bytes()).to_vec();
    field.resize(64, 0);
    hex::encode(field)
}
