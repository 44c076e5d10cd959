//! A real agent on a unix socket in a temp dir, served in-process, and
//! clients for it. Everything lives in the temp dir, which is removed when
//! the test ends (also when it fails).

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use agent::addr::ServerAddr;
use agent::client::{AgentClient, ConnectOptions};
use agent::config::AgentConfig;
use agent::policy::Policy;
use agent::server::AgentServer;
use agent::state::AgentState;

/// An agent serving on `<tmp>/agent.sock`, with its shared dir at
/// `<tmp>/state/shared/containers`.
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub addr: ServerAddr,
    pub state: Arc<AgentState>,
    server: Option<AgentServer>,
}

impl TestAgent {
    /// Starts an agent without a policy (everything allowed).
    pub async fn start() -> Self {
        Self::start_with(Policy::allow_all()).await
    }

    /// Starts an agent gated by the Rego text `policy`.
    pub async fn with_policy(policy: &str) -> Self {
        Self::start_with(Policy::from_rego("test policy", policy).expect("test policy loads")).await
    }

    async fn start_with(policy: Policy) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = ServerAddr::Unix(dir.path().join("agent.sock"));
        let state_dir = dir.path().join("state");
        let config = AgentConfig {
            server_addr: addr.clone(),
            shared_dir: state_dir.join("shared/containers"),
            state_dir,
            ..AgentConfig::default()
        };
        let state = Arc::new(AgentState::new(config, policy));
        let mut server = AgentServer::bind(&addr, state.clone())
            .await
            .expect("bind test agent");
        server.start().await.expect("start test agent");
        TestAgent {
            dir,
            addr,
            state,
            server: Some(server),
        }
    }

    /// The socket file.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    /// The shared directory CopyFile writes below.
    pub fn shared_dir(&self) -> PathBuf {
        self.state.config.shared_dir.clone()
    }

    /// A new connection.
    pub async fn client(&self) -> AgentClient {
        AgentClient::connect(&ConnectOptions {
            addr: self.addr.clone(),
            hybrid_vsock_port: None,
            timeout: Some(Duration::from_secs(10)),
        })
        .await
        .expect("connect to test agent")
    }

    /// Stops the server (also done on drop).
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// A ttrpc context with a timeout, so a hung agent fails the test instead of
/// hanging it.
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(Duration::from_secs(10))
}

/// The status code name and message of a failed call.
pub fn status_of<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (String, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (
            format!("{:?}", s.code.enum_value().expect("known code")),
            s.message,
        ),
        other => panic!("expected an error status, got {other:?}"),
    }
}
