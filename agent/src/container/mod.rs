//! Containers: create (image pulled in the guest, bundle written, init
//! prepared), start, exec, signal, wait, stdio, pause/resume, remove. One
//! file per operation; the OCI runtime is behind [`runtime::Runtime`].
//!
//! Paths are built only from validated IDs ([`id::validate`]); the rootfs
//! location is the agent's choice, never the host's.

pub mod create;
pub mod exec;
pub mod id;
pub mod image;
pub mod io;
pub mod oom;
pub mod pause;
pub mod reaper;
pub mod remove;
pub mod runtime;
pub mod signal;
pub mod spec;
pub mod start;
pub mod stats;
pub mod stdio;
pub mod update;
pub mod wait;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use self::image::ImageService;
use self::reaper::{ExitStatus, Reaper};
use self::runtime::Runtime;
use self::stdio::ProcessIo;

/// Why a container operation failed; the RPC layer maps each kind to a
/// ttrpc code.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// A bad argument (ID, spec, storage).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such container or process.
    #[error("{0}")]
    NotFound(String),
    /// The ID is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// The operation does not fit the container's state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The image could not be pulled, verified or decrypted.
    #[error("pulling the image: {0}")]
    Pull(String),
    /// The OCI runtime failed.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl ContainerError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
        let what = what.into();
        move |source| ContainerError::Io { what, source }
    }
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, user process not started.
    Created,
    /// Started.
    Running,
    /// Frozen.
    Paused,
    /// Its init exited.
    Stopped,
}

/// A process the agent started (a container's init or an exec).
#[derive(Debug)]
pub struct Process {
    /// Its PID (in the agent's PID namespace).
    pub pid: i32,
    /// Its streams.
    pub io: ProcessIo,
    /// `Some(status)` once it exited.
    pub exit: watch::Receiver<Option<ExitStatus>>,
}

/// One container.
#[derive(Debug)]
pub struct Container {
    /// The validated ID.
    pub id: String,
    /// `<state>/containers/<id>`: `config.json`, `rootfs/`.
    pub bundle: PathBuf,
    /// The init process.
    pub init: Arc<Process>,
    /// Exec'd processes by exec ID.
    pub execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Where it is in its life.
    pub status: Mutex<Status>,
    /// Held while the container is being removed, so concurrent removals
    /// run one after the other (the second finds it gone).
    pub removal: tokio::sync::Mutex<()>,
}

impl Container {
    /// The process `exec_id` names; the init for an empty one.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>, ContainerError> {
        if exec_id.is_empty() {
            return Ok(Arc::clone(&self.init));
        }
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                ContainerError::NotFound(format!(
                    "container {} has no process {exec_id:?}",
                    self.id
                ))
            })
    }

    /// The current status (Stopped once the init exited).
    pub fn status(&self) -> Status {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if self.init.exit.borrow().is_some() {
            *s = Status::Stopped;
        }
        *s
    }

    fn set_status(&self, status: Status) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }
}

/// All containers of the sandbox.
#[derive(Debug)]
pub struct Containers {
    root: PathBuf,
    runtime: Arc<dyn Runtime>,
    reaper: Reaper,
    images: Arc<ImageService>,
    table: Mutex<HashMap<String, Arc<Container>>>,
    /// IDs being created (so a second create of the same ID fails fast).
    creating: Mutex<HashSet<String>>,
    /// Containers that had an OOM kill, for GetOOMEvent.
    oom: oom::OomEvents,
}

impl Containers {
    /// Containers under `root` (bundles), run by `runtime`, images from
    /// `images`, exits from `reaper`.
    pub fn new(
        root: PathBuf,
        runtime: Arc<dyn Runtime>,
        reaper: Reaper,
        images: Arc<ImageService>,
    ) -> Self {
        Containers {
            root,
            runtime,
            reaper,
            images,
            table: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            oom: oom::OomEvents::default(),
        }
    }

    /// The container `id`.
    pub fn get(&self, id: &str) -> Result<Arc<Container>, ContainerError> {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::NotFound(format!("no container {id:?}")))
    }

    /// IDs of all containers.
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }

    /// The image service (shared store, KBS keys).
    pub fn images(&self) -> &Arc<ImageService> {
        &self.images
    }
}

/// How long the runtime may take to hand over a terminal.
const CONSOLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Starts a process through `launch`, which gets the runtime's side of its
/// streams: a PTY (received on `console_socket`) when `terminal`, else
/// pipes. Returns the agent's side and the PID.
async fn launch_with_stdio(
    terminal: bool,
    console_socket: PathBuf,
    launch: impl FnOnce(runtime::StdioFds) -> Result<i32, ContainerError> + Send + 'static,
) -> Result<(ProcessIo, i32), ContainerError> {
    if !terminal {
        let (io, fds) =
            ProcessIo::pipes(true).map_err(ContainerError::io("creating stdio pipes"))?;
        let pid = blocking(move || launch(fds)).await?;
        return Ok((io, pid));
    }
    let _ = std::fs::remove_file(&console_socket);
    let sock = stdio::ConsoleSocket::bind(&console_socket)
        .map_err(ContainerError::io("binding the console socket"))?;
    let receiver = std::thread::spawn(move || sock.accept(CONSOLE_TIMEOUT));
    let fds = runtime::StdioFds {
        console_socket: Some(console_socket.clone()),
        ..Default::default()
    };
    let pid = blocking(move || launch(fds)).await;
    let _ = std::fs::remove_file(&console_socket);
    let pid = pid?;
    let master = receiver
        .join()
        .map_err(|_| ContainerError::Io {
            what: "receiving the terminal".into(),
            source: std::io::Error::other("console thread panicked"),
        })?
        .map_err(ContainerError::io("receiving the terminal"))?;
    let io = ProcessIo::tty(master).map_err(ContainerError::io("setting up the terminal"))?;
    Ok((io, pid))
}

/// Runs blocking runtime work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ContainerError> + Send + 'static,
) -> Result<T, ContainerError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ContainerError::Io {
            what: "runtime task".into(),
            source: std::io::Error::other(e.to_string()),
        })?
}
