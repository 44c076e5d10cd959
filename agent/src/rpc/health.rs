//! `grpc.Health`: the runtime probes readiness with Check before anything
//! else; Version reports what it talks to.

use crate::methods::proto::health::{
    health_check_response::ServingStatus, CheckRequest, HealthCheckResponse, VersionCheckResponse,
};
use crate::state::AgentState;

/// The protocol version reported as `grpc_version` (Kata's API version).
pub const PROTOCOL_VERSION: &str = "0.0.1";

/// Check: the agent answers, so it is serving.
pub(crate) async fn check(
    _state: &AgentState,
    _req: CheckRequest,
) -> ttrpc::Result<HealthCheckResponse> {
    let mut resp = HealthCheckResponse::new();
    resp.status = ServingStatus::SERVING.into();
    Ok(resp)
}

/// Version: the agent build and the protocol version.
pub(crate) async fn version(
    _state: &AgentState,
    _req: CheckRequest,
) -> ttrpc::Result<VersionCheckResponse> {
    let mut resp = VersionCheckResponse::new();
    resp.agent_version = crate::AGENT_VERSION.to_string();
    resp.grpc_version = PROTOCOL_VERSION.to_string();
    Ok(resp)
}
