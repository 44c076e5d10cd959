//! The ttrpc server: binds the listen address, registers the agent and
//! health services and serves every connection concurrently (Kata's client
//! opens two before it sends anything).
//!
//! Framing is ttrpc's: a frame over 4 MiB is discarded and answered with an
//! error, a payload that does not decode gets an error status, and a broken
//! connection ends only itself.

use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::fs::FileTypeExt as _;
use std::os::unix::net::{SocketAddr, UnixListener as StdUnixListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ttrpc::r#async::transport::Listener;

use crate::addr::ServerAddr;
use crate::rpc;
use crate::state::AgentState;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address cannot be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A non-socket file is in the way of the socket path.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    PathInUse {
        /// The path.
        path: PathBuf,
    },
    /// ttrpc refused to start.
    #[error("starting the ttrpc server on {addr}: {message}")]
    Start {
        /// The address.
        addr: String,
        /// ttrpc's error.
        message: String,
    },
}

/// A bound (and, after [`AgentServer::start`], serving) agent.
pub struct AgentServer {
    server: ttrpc::r#async::Server,
    addr: ServerAddr,
    socket_file: Option<PathBuf>,
}

impl std::fmt::Debug for AgentServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AgentServer {
    /// Binds `addr` and registers the services over `state`. Must run inside
    /// a tokio runtime.
    pub async fn bind(addr: &ServerAddr, state: Arc<AgentState>) -> Result<Self, ServerError> {
        let bind_err = |source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        };
        let (listener, socket_file) = match addr {
            ServerAddr::Unix(path) => {
                prepare_socket_path(path)?;
                let std = StdUnixListener::bind(path).map_err(bind_err)?;
                (unix_listener(std).map_err(bind_err)?, Some(path.clone()))
            }
            ServerAddr::UnixAbstract(name) => {
                let sa = SocketAddr::from_abstract_name(name.as_bytes()).map_err(bind_err)?;
                let std = StdUnixListener::bind_addr(&sa).map_err(bind_err)?;
                (unix_listener(std).map_err(bind_err)?, None)
            }
            ServerAddr::Vsock { cid, port } => {
                let l = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(*cid, *port))
                    .map_err(bind_err)?;
                (Listener::from(l), None)
            }
        };
        let server = ttrpc::r#async::Server::new()
            .add_listener(listener)
            .register_service(rpc::services(state));
        tracing::info!(%addr, "agent listening");
        Ok(AgentServer {
            server,
            addr: addr.clone(),
            socket_file,
        })
    }

    /// The address served.
    pub fn addr(&self) -> &ServerAddr {
        &self.addr
    }

    /// Starts accepting connections (in background tasks) and returns.
    pub async fn start(&mut self) -> Result<(), ServerError> {
        self.server.start().await.map_err(|e| ServerError::Start {
            addr: self.addr.to_string(),
            message: e.to_string(),
        })
    }

    /// Stops accepting, closes connections and removes the socket file.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown().await {
            tracing::warn!(error = %e, "ttrpc shutdown");
        }
        self.remove_socket_file();
    }

    fn remove_socket_file(&mut self) {
        if let Some(path) = self.socket_file.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "removing the socket file");
                }
            }
        }
    }
}

impl Drop for AgentServer {
    fn drop(&mut self) {
        self.remove_socket_file();
    }
}

/// Creates the socket's directory and removes a stale socket left by an
/// earlier run; any other file at the path is an error.
fn prepare_socket_path(path: &Path) -> Result<(), ServerError> {
    let bind_err = |source| ServerError::Bind {
        addr: format!("unix://{}", path.display()),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bind_err)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(bind_err),
        Ok(_) => Err(ServerError::PathInUse {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bind_err(e)),
    }
}

fn unix_listener(std: StdUnixListener) -> std::io::Result<Listener> {
    std.set_nonblocking(true)?;
    Ok(Listener::from(tokio::net::UnixListener::from_std(std)?))
}
