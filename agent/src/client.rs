//! Host side of the protocol (`agentctl`, tests): connect to an agent over
//! a unix socket, vsock, or a Firecracker/Cloud Hypervisor hybrid-vsock unix
//! socket, and call any method with JSON in and out.
//!
//! Hybrid vsock: connect to the VMM's unix socket, send `CONNECT <port>\n`,
//! read `OK <n>\n`; from then on the socket is a byte stream to the guest's
//! vsock port.

use std::os::linux::net::SocketAddrExt as _;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use ttrpc::r#async::transport::Socket;

use crate::addr::ServerAddr;
use crate::methods::{self, MethodInfo};
use crate::protocols::{agent_ttrpc::AgentServiceClient, health_ttrpc::HealthClient};

/// The longest handshake reply accepted from a hybrid-vsock socket.
const MAX_HANDSHAKE_REPLY: usize = 64;

/// How to reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The agent's (or, with `hybrid_vsock_port`, the VMM's) address.
    pub addr: ServerAddr,
    /// Guest vsock port to `CONNECT` to through a hybrid-vsock unix socket.
    pub hybrid_vsock_port: Option<u32>,
    /// Bound for connecting and for each call.
    pub timeout: Option<Duration>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection.
    #[error("connecting to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The hybrid-vsock handshake failed.
    #[error("hybrid vsock handshake with {addr}: {message}")]
    Handshake {
        /// The address.
        addr: String,
        /// What went wrong.
        message: String,
    },
    /// Hybrid vsock needs a unix socket.
    #[error("--hybrid-vsock needs a unix socket address, not {0}")]
    HybridNeedsUnix(String),
    /// Connecting took longer than the timeout.
    #[error("connecting to {0}: timed out")]
    ConnectTimeout(String),
    /// The method name is not part of the protocol.
    #[error(
        "unknown method {0:?} (methods are named as in the proto, e.g. GetGuestDetails or Check)"
    )]
    UnknownMethod(String),
    /// The JSON does not fit the request message.
    #[error("request for {method} ({request}): {message}")]
    BadRequest {
        /// The method.
        method: String,
        /// The request message.
        request: String,
        /// The decoding error.
        message: String,
    },
    /// The agent answered with an error status.
    #[error("{method}: {code}: {message}")]
    Status {
        /// The method.
        method: String,
        /// The ttrpc status code name (`PERMISSION_DENIED`, ...).
        code: String,
        /// The agent's message.
        message: String,
    },
    /// The transport failed or the call timed out.
    #[error("{method}: {message}")]
    Transport {
        /// The method.
        method: String,
        /// ttrpc's error.
        message: String,
    },
    /// The response payload did not decode.
    #[error("{method}: bad response: {message}")]
    BadResponse {
        /// The method.
        method: String,
        /// The decoding error.
        message: String,
    },
}

impl ClientError {
    /// The ttrpc status code name, when the agent answered with an error.
    pub fn status_code(&self) -> Option<&str> {
        match self {
            ClientError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A connection to an agent.
#[derive(Clone)]
pub struct AgentClient {
    inner: ttrpc::r#async::Client,
    timeout: Option<Duration>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects (and does the hybrid-vsock handshake when asked).
    pub async fn connect(opts: &ConnectOptions) -> Result<Self, ClientError> {
        let fut = connect_socket(opts);
        let socket = match opts.timeout {
            Some(t) => tokio::time::timeout(t, fut)
                .await
                .map_err(|_| ClientError::ConnectTimeout(opts.addr.to_string()))??,
            None => fut.await?,
        };
        Ok(AgentClient {
            inner: ttrpc::r#async::Client::new(socket),
            timeout: opts.timeout,
        })
    }

    /// The typed AgentService client over this connection.
    pub fn agent(&self) -> AgentServiceClient {
        AgentServiceClient::new(self.inner.clone())
    }

    /// The typed Health client over this connection.
    pub fn health(&self) -> HealthClient {
        HealthClient::new(self.inner.clone())
    }

    /// A ttrpc context carrying the call timeout.
    pub fn context(&self) -> ttrpc::context::Context {
        match self.timeout {
            Some(t) => ttrpc::context::with_duration(t),
            None => ttrpc::context::Context::default(),
        }
    }

    /// Calls `method` (`GetGuestDetails`, `grpc.Health/Check`, ...) with a
    /// JSON request (proto field names; missing fields default) and returns
    /// the response as JSON.
    pub async fn call_json(&self, method: &str, request: &Value) -> Result<Value, ClientError> {
        let info: &MethodInfo = methods::lookup(method)
            .ok_or_else(|| ClientError::UnknownMethod(method.to_string()))?;
        let payload =
            (info.encode_request)(request).map_err(|message| ClientError::BadRequest {
                method: info.method.to_string(),
                request: info.request.to_string(),
                message,
            })?;
        let resp = self.call_raw(info, payload).await?;
        (info.decode_response)(&resp).map_err(|message| ClientError::BadResponse {
            method: info.method.to_string(),
            message,
        })
    }

    /// Sends an already encoded request of `info` and returns the payload.
    pub async fn call_raw(
        &self,
        info: &MethodInfo,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let mut req = ttrpc::Request::new();
        req.service = info.service.to_string();
        req.method = info.method.to_string();
        req.payload = payload;
        req.timeout_nano = self
            .timeout
            .map(|t| i64::try_from(t.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        match self.inner.request(req).await {
            Ok(resp) => Ok(resp.payload),
            Err(e) => Err(call_error(info.method, e)),
        }
    }
}

/// Maps a ttrpc error to a [`ClientError`], keeping the status code.
pub fn call_error(method: &str, e: ttrpc::Error) -> ClientError {
    match e {
        ttrpc::Error::RpcStatus(s) => ClientError::Status {
            method: method.to_string(),
            code: match s.code.enum_value() {
                Ok(c) => format!("{c:?}"),
                Err(n) => format!("code {n}"),
            },
            message: s.message,
        },
        other => ClientError::Transport {
            method: method.to_string(),
            message: other.to_string(),
        },
    }
}

async fn connect_socket(opts: &ConnectOptions) -> Result<Socket, ClientError> {
    let addr = opts.addr.to_string();
    let conn_err = |source| ClientError::Connect {
        addr: addr.clone(),
        source,
    };
    match (&opts.addr, opts.hybrid_vsock_port) {
        (ServerAddr::Vsock { .. }, Some(_)) => Err(ClientError::HybridNeedsUnix(addr.clone())),
        (ServerAddr::Vsock { cid, port }, None) => {
            let s = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port))
                .await
                .map_err(conn_err)?;
            Ok(Socket::from(s))
        }
        (unix, port) => {
            let mut stream = connect_unix(unix).await.map_err(conn_err)?;
            if let Some(port) = port {
                hybrid_vsock_handshake(&mut stream, port)
                    .await
                    .map_err(|message| ClientError::Handshake {
                        addr: addr.clone(),
                        message,
                    })?;
            }
            Ok(Socket::from(stream))
        }
    }
}

async fn connect_unix(addr: &ServerAddr) -> std::io::Result<tokio::net::UnixStream> {
    match addr {
        ServerAddr::Unix(path) => tokio::net::UnixStream::connect(path).await,
        ServerAddr::UnixAbstract(name) => {
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            let std = std::os::unix::net::UnixStream::connect_addr(&sa)?;
            std.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(std)
        }
        ServerAddr::Vsock { .. } => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a unix address",
        )),
    }
}

/// `CONNECT <port>\n` -> `OK <n>\n`.
pub async fn hybrid_vsock_handshake<S>(stream: &mut S, port: u32) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|e| format!("sending CONNECT: {e}"))?;
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        let n = stream
            .read(&mut b)
            .await
            .map_err(|e| format!("reading the reply: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed after {:?} (is port {port} listening in the guest?)",
                String::from_utf8_lossy(&line)
            ));
        }
        if b[0] == b'\n' {
            break;
        }
        line.push(b[0]);
        if line.len() > MAX_HANDSHAKE_REPLY {
            return Err("reply line too long".to_string());
        }
    }
    let reply = String::from_utf8_lossy(&line);
    if reply.starts_with("OK ") {
        Ok(())
    } else {
        Err(format!("expected \"OK <n>\", got {reply:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn handshake_accepts_ok_and_refuses_anything_else() {
        let cases: [(&[u8], bool); 4] = [
            (b"OK 1024\n", true),
            (b"FAILURE\n", false),
            (b"OK", false),
            (&[b'x'; 100], false),
        ];
        for (reply, ok) in cases {
            let (mut ours, mut theirs) = tokio::io::duplex(256);
            let reply = reply.to_vec();
            let peer = tokio::spawn(async move {
                let mut buf = [0u8; 13];
                theirs.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"CONNECT 1024\n");
                theirs.write_all(&reply).await.unwrap();
            });
            let r = hybrid_vsock_handshake(&mut ours, 1024).await;
            assert_eq!(r.is_ok(), ok, "{r:?}");
            peer.await.unwrap();
        }
    }
}
