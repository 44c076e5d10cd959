//! The OCI runtime behind a trait, youki-style: [`LibcontainerRuntime`]
//! drives youki's libcontainer in-process; tests of the agent's logic can
//! use a double.
//!
//! libcontainer `chdir()`s into the container's state directory while it
//! creates and starts containers (to keep the notify socket path short), and
//! the working directory is process-wide: concurrent creates race and hang
//! (measured, see the platform notes). Every runtime call therefore holds
//! [`RUNTIME_LOCK`]; the reaper takes it too, so it never steals the status
//! of a helper process libcontainer is waiting for. Nothing else in the
//! agent may depend on the current directory.

use std::collections::HashMap;
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
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

/// youki's libcontainer, in-process, cgroups v1 or v2, no systemd.
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
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
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
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.load("starting", id)?
            .start()
            .map_err(|e| err("starting", id, e))
    }

    fn exec(&self, id: &str, spec: &ExecSpec, stdio: StdioFds) -> Result<i32, RuntimeError> {
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
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
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let sig = Signal::try_from(signal).map_err(|e| err("signalling", id, e))?;
        let mut c = self.load("signalling", id)?;
        c.kill(sig, true).map_err(|e| err("signalling", id, e))
    }

    fn pause(&self, id: &str) -> Result<(), RuntimeError> {
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.load("pausing", id)?
            .pause()
            .map_err(|e| err("pausing", id, e))
    }

    fn resume(&self, id: &str) -> Result<(), RuntimeError> {
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        self.load("resuming", id)?
            .resume()
            .map_err(|e| err("resuming", id, e))
    }

    fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let _lock = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let dir = self.root.join(id);
        if !dir.exists() {
            return Ok(());
        }
        let r = self.load("deleting", id)?.delete(true);
        let _ = std::fs::remove_dir_all(&dir);
        r.map_err(|e| err("deleting", id, e))
    }
}
