//! The OCI runtime behind a trait, youki-style. [`LibcontainerRuntime`]
//! drives youki's libcontainer; [`HelperRuntime`] runs each operation in a
//! fresh single-threaded process (the agent binary re-executed with
//! [`HELPER_ARG`]) that uses [`LibcontainerRuntime`].
//!
//! Why a helper process: libcontainer starts the container's helper
//! processes with a raw `clone3`, which skips the C library's fork handlers.
//! In the multi-threaded agent, another thread may hold the allocator's lock
//! at that instant, and the clone then deadlocks in `malloc` while the agent
//! waits for it forever (seen under 10 concurrent creates). It also
//! `chdir()`s, which is process-wide. A single-threaded helper has neither
//! problem. The helper exits after each operation; the container processes
//! it started are re-parented to the agent (a child subreaper), whose
//! reaper collects their exit statuses.
//!
//! Every runtime call holds [`RUNTIME_LOCK`], and the reaper takes it too,
//! so the reaper never collects a helper the agent is waiting for.

use std::collections::HashMap;
use std::fmt;
use std::io::Read as _;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// Serializes every libcontainer call (and the reaper).
pub static RUNTIME_LOCK: Mutex<()> = Mutex::new(());

/// Why the runtime failed. The message is libcontainer's, with the step.
#[derive(Debug, thiserror::Error)]
#[error("{step} container {id}: {reason}")]
pub struct RuntimeError {
    /// What was being done.
    pub step: &'static str,
    /// The container.
    pub id: String,
    /// What failed.
    pub reason: String,
}

/// The process's standard streams as the runtime hands them to it.
#[derive(Debug, Default)]
pub struct StdioFds {
    /// Read end of the stdin pipe.
    pub stdin: Option<OwnedFd>,
    /// Write end of the stdout pipe.
    pub stdout: Option<OwnedFd>,
    /// Write end of the stderr pipe.
    pub stderr: Option<OwnedFd>,
    /// With a terminal: the unix socket where the runtime sends the PTY
    /// master.
    pub console_socket: Option<PathBuf>,
}

/// A process to run in an existing container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// argv.
    pub args: Vec<String>,
    /// `K=V` environment.
    pub env: Vec<String>,
    /// Working directory in the container.
    pub cwd: Option<String>,
    /// User and group.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
}

/// An OCI runtime.
pub trait Runtime: Send + Sync + fmt::Debug {
    /// Creates container `id` from `bundle` (its init prepared, the user
    /// process not started); returns the init's PID.
    fn create(&self, id: &str, bundle: &Path, stdio: StdioFds) -> Result<i32, RuntimeError>;
    /// Starts the user process of a created container.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Runs another process in a running container; returns its PID.
    fn exec(&self, id: &str, spec: &ExecSpec, stdio: StdioFds) -> Result<i32, RuntimeError>;
    /// Sends `signal` to every process of the container.
    fn kill_all(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;
    /// Freezes the container.
    fn pause(&self, id: &str) -> Result<(), RuntimeError>;
    /// Thaws it.
    fn resume(&self, id: &str) -> Result<(), RuntimeError>;
    /// Deletes the container's state (and its cgroup), killing what is left.
    fn delete(&self, id: &str) -> Result<(), RuntimeError>;
}

/// youki's libcontainer, cgroups v1 or v2, no systemd. Used only inside
/// the single-threaded helper process (see the module doc): never call it
/// from the multi-threaded agent.
#[derive(Debug, Clone)]
pub struct LibcontainerRuntime {
    /// libcontainer's state root (one directory per container).
    pub root: PathBuf,
}

fn err(step: &'static str, id: &str, e: impl fmt::Display) -> RuntimeError {
    RuntimeError {
        step,
        id: id.to_string(),
        reason: e.to_string(),
    }
}

impl LibcontainerRuntime {
    fn load(
        &self,
        step: &'static str,
        id: &str,
    ) -> Result<libcontainer::container::Container, RuntimeError> {
        libcontainer::container::Container::load(self.root.join(id)).map_err(|e| err(step, id, e))
    }

    fn builder(
        &self,
        step: &'static str,
        id: &str,
        stdio: StdioFds,
    ) -> Result<libcontainer::container::builder::ContainerBuilder, RuntimeError> {
        use libcontainer::container::builder::ContainerBuilder;
        use libcontainer::syscall::syscall::SyscallType;
        let mut b = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(&self.root)
            .map_err(|e| err(step, id, e))?
            .with_console_socket(stdio.console_socket.as_ref());
        if let Some(fd) = stdio.stdin {
            b = b.with_stdin(fd);
        }
        if let Some(fd) = stdio.stdout {
            b = b.with_stdout(fd);
        }
        if let Some(fd) = stdio.stderr {
            b = b.with_stderr(fd);
        }
        Ok(b)
    }
}

impl Runtime for LibcontainerRuntime {
    fn create(&self, id: &str, bundle: &Path, stdio: StdioFds) -> Result<i32, RuntimeError> {
        let result = self
            .builder("creating", id, stdio)?
            .as_init(bundle)
            .with_systemd(false)
            .with_detach(true)
            .build();
        match result {
            Ok(c) => c
                .pid()
                .map(|p| p.as_raw())
                .ok_or_else(|| err("creating", id, "the runtime reported no init PID")),
            Err(e) => {
                // A half-made container keeps a blocked init and a state dir:
                // remove both at once.
                if let Ok(mut c) = libcontainer::container::Container::load(self.root.join(id)) {
                    let _ = c.delete(true);
                }
                let _ = std::fs::remove_dir_all(self.root.join(id));
                Err(err("creating", id, e))
            }
        }
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.load("starting", id)?
            .start()
            .map_err(|e| err("starting", id, e))
    }

    fn exec(&self, id: &str, spec: &ExecSpec, stdio: StdioFds) -> Result<i32, RuntimeError> {
        let env: HashMap<String, String> = spec
            .env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let pid = self
            .builder("exec in", id, stdio)?
            .as_tenant()
            .with_container_args(spec.args.clone())
            .with_env(env)
            .with_cwd(spec.cwd.as_ref())
            .with_user(Some(spec.uid))
            .with_group(Some(spec.gid))
            .with_additional_gids(spec.additional_gids.clone())
            .with_detach(true)
            .build()
            .map_err(|e| err("exec in", id, e))?;
        Ok(pid.as_raw())
    }

    fn kill_all(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        use libcontainer::signal::Signal;
        let sig = Signal::try_from(signal).map_err(|e| err("signalling", id, e))?;
        let mut c = self.load("signalling", id)?;
        c.kill(sig, true).map_err(|e| err("signalling", id, e))
    }

    fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.load("pausing", id)?
            .pause()
            .map_err(|e| err("pausing", id, e))
    }

    fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.load("resuming", id)?
            .resume()
            .map_err(|e| err("resuming", id, e))
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.root.join(id);
        if !dir.exists() {
            return Ok(());
        }
        let r = self.load("deleting", id)?.delete(true);
        let _ = std::fs::remove_dir_all(&dir);
        r.map_err(|e| err("deleting", id, e))
    }
}

/// The first argument that makes the agent binary a runtime helper.
pub const HELPER_ARG: &str = "__sealpod_runtime";
/// Where the helper finds the process's stdin, stdout and stderr.
const HELPER_FDS: [i32; 3] = [3, 4, 5];

/// Runs each runtime operation in a fresh process: `exe HELPER_ARG OP ...`.
#[derive(Debug, Clone)]
pub struct HelperRuntime {
    /// The agent binary (`/proc/self/exe`).
    pub exe: PathBuf,
    /// libcontainer's state root.
    pub root: PathBuf,
}

impl HelperRuntime {
    /// Runs `op` with `args`, handing it `stdio`; returns its stdout.
    fn call(
        &self,
        op: &'static str,
        id: &str,
        args: &[&str],
        stdio: StdioFds,
    ) -> Result<String, RuntimeError> {
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let mut cmd = Command::new(&self.exe);
        cmd.arg(HELPER_ARG).arg(&self.root).arg(id).args(args);
        if let Some(sock) = &stdio.console_socket {
            cmd.arg("--console-socket").arg(sock);
        }
        let fds = [
            stdio.stdin.as_ref(),
            stdio.stdout.as_ref(),
            stdio.stderr.as_ref(),
        ]
        .map(|f| f.map(|f| f.as_raw_fd()));
        let mask: String = fds
            .iter()
            .map(|f| if f.is_some() { '1' } else { '0' })
            .collect();
        cmd.arg("--fds").arg(mask);
        let (out_r, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| err(op, id, e))?;
        let (err_r, err_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| err(op, id, e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w));
        // SAFETY: the closure runs in the forked child before exec and only
        // calls fcntl and dup2, which are async-signal-safe; it allocates
        // nothing. Sources are first moved above the targets (close-on-exec
        // copies) so a source numbered 3-5 is not overwritten by an earlier
        // dup2; the dup2'd targets are inherited (dup2 clears CLOEXEC).
        unsafe {
            cmd.pre_exec(move || {
                let mut high = [-1i32; 3];
                for (i, fd) in fds.iter().enumerate() {
                    if let Some(fd) = fd {
                        high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                        if high[i] < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                }
                for (i, fd) in high.iter().enumerate() {
                    if *fd >= 0 && libc::dup2(*fd, HELPER_FDS[i]) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| err(op, id, format!("starting the runtime helper: {e}")))?;
        // Our copies must not keep the process's pipes open.
        drop(stdio);
        drop(cmd);
        let status = child.wait().map_err(|e| err(op, id, e))?;
        // The container's init inherits the helper's output pipes and keeps
        // them open until it execs: read what the helper wrote without
        // waiting for EOF.
        let read_now = |fd: OwnedFd| -> String {
            let _ = rustix::io::ioctl_fionbio(&fd, true);
            let mut s = String::new();
            let _ = std::fs::File::from(fd)
                .take(64 * 1024)
                .read_to_string(&mut s);
            s
        };
        let out = read_now(out_r);
        let errs = read_now(err_r);
        if status.success() {
            Ok(out.trim().to_string())
        } else {
            let reason = errs
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("the runtime helper failed without a message")
                .trim_start_matches("Error: ")
                .to_string();
            Err(err(op, id, reason))
        }
    }
}

impl Runtime for HelperRuntime {
    fn create(&self, id: &str, bundle: &Path, stdio: StdioFds) -> Result<i32, RuntimeError> {
        let bundle = bundle.to_string_lossy();
        let out = self.call("creating", id, &["create", &bundle], stdio)?;
        out.parse().map_err(|_| {
            err(
                "creating",
                id,
                format!("the runtime helper printed {out:?}, not a PID"),
            )
        })
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("starting", id, &["start"], StdioFds::default())
            .map(drop)
    }

    fn exec(&self, id: &str, spec: &ExecSpec, stdio: StdioFds) -> Result<i32, RuntimeError> {
        let json = serde_json::json!({
            "args": spec.args, "env": spec.env, "cwd": spec.cwd,
            "uid": spec.uid, "gid": spec.gid, "additional_gids": spec.additional_gids,
        })
        .to_string();
        let out = self.call("exec in", id, &["exec", &json], stdio)?;
        out.parse().map_err(|_| {
            err(
                "exec in",
                id,
                format!("the runtime helper printed {out:?}, not a PID"),
            )
        })
    }

    fn kill_all(&self, id: &str, signal: i32) -> Result<(), RuntimeError> {
        self.call(
            "signalling",
            id,
            &["kill", &signal.to_string()],
            StdioFds::default(),
        )
        .map(drop)
    }

    fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("pausing", id, &["pause"], StdioFds::default())
            .map(drop)
    }

    fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("resuming", id, &["resume"], StdioFds::default())
            .map(drop)
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("deleting", id, &["delete"], StdioFds::default())
            .map(drop)
    }
}

/// The helper's side: `args` are what follows [`HELPER_ARG`] (`ROOT ID OP
/// [OP-ARGS] [--console-socket PATH] --fds MASK`). Runs the operation with
/// [`LibcontainerRuntime`] and returns what to print.
pub fn helper_main(args: &[String]) -> Result<String, String> {
    let mut rest: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut take_opt = |name: &str| -> Option<String> {
        let i = rest.iter().position(|a| *a == name)?;
        let v = rest.get(i + 1).map(|s| s.to_string());
        rest.drain(i..(i + 2).min(rest.len()));
        v
    };
    let console_socket = take_opt("--console-socket").map(PathBuf::from);
    let mask = take_opt("--fds").unwrap_or_default();
    let [root, id, op, op_args @ ..] = rest.as_slice() else {
        return Err("usage: ROOT ID OP [ARGS] --fds MASK".into());
    };
    let fd = |i: usize| -> Option<OwnedFd> {
        // SAFETY: the agent put an open descriptor at HELPER_FDS[i] for
        // each '1' in the mask, and nothing else in this process owns it.
        (mask.as_bytes().get(i) == Some(&b'1'))
            .then(|| unsafe { OwnedFd::from_raw_fd(HELPER_FDS[i]) })
    };
    let stdio = StdioFds {
        stdin: fd(0),
        stdout: fd(1),
        stderr: fd(2),
        console_socket,
    };
    let rt = LibcontainerRuntime {
        root: PathBuf::from(root),
    };
    let id: &str = id;
    let e = |e: RuntimeError| e.to_string();
    match (*op, op_args) {
        ("create", [bundle]) => rt
            .create(id, Path::new(bundle), stdio)
            .map(|p| p.to_string())
            .map_err(e),
        ("start", []) => rt.start(id).map(|_| String::new()).map_err(e),
        ("exec", [json]) => {
            let v: serde_json::Value = serde_json::from_str(json).map_err(|x| x.to_string())?;
            let strings = |k: &str| -> Vec<String> {
                v[k].as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let spec = ExecSpec {
                args: strings("args"),
                env: strings("env"),
                cwd: v["cwd"].as_str().map(str::to_string),
                uid: v["uid"].as_u64().unwrap_or(0) as u32,
                gid: v["gid"].as_u64().unwrap_or(0) as u32,
                additional_gids: v["additional_gids"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|g| g.as_u64().map(|g| g as u32))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            rt.exec(id, &spec, stdio).map(|p| p.to_string()).map_err(e)
        }
        ("kill", [sig]) => {
            let sig: i32 = sig.parse().map_err(|_| format!("bad signal {sig:?}"))?;
            rt.kill_all(id, sig).map(|_| String::new()).map_err(e)
        }
        ("pause", []) => rt.pause(id).map(|_| String::new()).map_err(e),
        ("resume", []) => rt.resume(id).map(|_| String::new()).map_err(e),
        ("delete", []) => rt.delete(id).map(|_| String::new()).map_err(e),
        (other, _) => Err(format!("unknown runtime operation {other:?}")),
    }
}
