//! Sandbox lifecycle (CreateSandbox, DestroySandbox).
//!
//! CreateSandbox records the sandbox and, when the agent is the VM's init,
//! sets the guest hostname (never outside a VM: that would rename the
//! machine the agent runs on). DestroySandbox removes every container and,
//! when the agent is the VM's init, then powers the VM off (after the reply
//! has gone out), as a Kata guest does.

use std::time::Duration;

use tracing::{info, warn};

use crate::guest;
use crate::methods::proto::agent::{CreateSandboxRequest, DestroySandboxRequest};
use crate::methods::proto::empty::Empty;
use crate::state::AgentState;

/// How long the VM lives after DestroySandbox answered (the reply must
/// reach the host before the vsock device goes away).
const POWER_OFF_DELAY: Duration = Duration::from_millis(200);

/// CreateSandbox.
pub(crate) async fn create_sandbox(
    _state: &AgentState,
    req: CreateSandboxRequest,
) -> ttrpc::Result<Empty> {
    if !req.hostname.is_empty() && guest::is_init_process() {
        if let Err(e) = rustix::system::sethostname(req.hostname.as_bytes()) {
            warn!(error = %e, hostname = %req.hostname, "setting the hostname");
        }
    }
    info!(sandbox = %req.sandbox_id, hostname = %req.hostname, "sandbox created");
    Ok(Empty::new())
}

/// DestroySandbox: every container is killed and removed.
pub(crate) async fn destroy_sandbox(
    state: &AgentState,
    _req: DestroySandboxRequest,
) -> ttrpc::Result<Empty> {
    for id in state.containers.ids() {
        if let Err(e) = state.containers.remove(&id, Duration::from_secs(10)).await {
            warn!(container = %id, error = %e, "removing at sandbox destruction");
        }
    }
    info!("sandbox destroyed");
    if guest::is_init_process() {
        crate::init::shutdown::power_off_after(POWER_OFF_DELAY);
    }
    Ok(Empty::new())
}
