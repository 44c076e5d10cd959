//! Container lifecycle RPCs: decode, then call [`crate::container`]; errors
//! map to ttrpc codes by kind.

use std::time::Duration;

use ttrpc::Code;

use super::status;
use crate::container::ContainerError;
use crate::methods::proto::agent::{
    CreateContainerRequest, ExecProcessRequest, PauseContainerRequest, RemoveContainerRequest,
    ResumeContainerRequest, SignalProcessRequest, StartContainerRequest, WaitProcessRequest,
    WaitProcessResponse,
};
use crate::methods::proto::empty::Empty;
use crate::state::AgentState;

super::not_implemented_yet! {
    UpdateContainer update_container;
    UpdateEphemeralMounts update_ephemeral_mounts;
    StatsContainer stats_container;
    RemoveStaleVirtiofsShareMounts remove_stale_virtiofs_share_mounts;
    GetDiagnosticData get_diagnostic_data;
    GetOOMEvent get_oom_event;
}

/// The ttrpc status of a container error.
pub(crate) fn to_status(e: ContainerError) -> ttrpc::Error {
    let code = match &e {
        ContainerError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
        ContainerError::NotFound(_) => Code::NOT_FOUND,
        ContainerError::AlreadyExists(_) => Code::ALREADY_EXISTS,
        ContainerError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
        ContainerError::Pull(_) | ContainerError::Runtime(_) | ContainerError::Io { .. } => {
            Code::INTERNAL
        }
    };
    tracing::warn!(error = %e, "container request failed");
    status(code, e.to_string())
}

/// CreateContainer: pull the image in the guest and prepare the container.
pub(crate) async fn create_container(
    state: &AgentState,
    req: CreateContainerRequest,
) -> ttrpc::Result<Empty> {
    let spec = req.OCI.as_ref().cloned().unwrap_or_default();
    state
        .containers
        .create(&req.container_id, &spec, &req.storages)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// StartContainer.
pub(crate) async fn start_container(
    state: &AgentState,
    req: StartContainerRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .start(&req.container_id)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// RemoveContainer (`timeout` seconds bounds the wait after SIGKILL).
pub(crate) async fn remove_container(
    state: &AgentState,
    req: RemoveContainerRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .remove(&req.container_id, Duration::from_secs(req.timeout.into()))
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// ExecProcess.
pub(crate) async fn exec_process(
    state: &AgentState,
    req: ExecProcessRequest,
) -> ttrpc::Result<Empty> {
    let process = req.process.as_ref().cloned().unwrap_or_default();
    state
        .containers
        .exec(&req.container_id, &req.exec_id, &process)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// SignalProcess.
pub(crate) async fn signal_process(
    state: &AgentState,
    req: SignalProcessRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .signal(&req.container_id, &req.exec_id, req.signal)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// WaitProcess.
pub(crate) async fn wait_process(
    state: &AgentState,
    req: WaitProcessRequest,
) -> ttrpc::Result<WaitProcessResponse> {
    let s = state
        .containers
        .wait(&req.container_id, &req.exec_id)
        .await
        .map_err(to_status)?;
    let mut resp = WaitProcessResponse::new();
    resp.status = s;
    Ok(resp)
}

/// PauseContainer.
pub(crate) async fn pause_container(
    state: &AgentState,
    req: PauseContainerRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .pause(&req.container_id)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}

/// ResumeContainer.
pub(crate) async fn resume_container(
    state: &AgentState,
    req: ResumeContainerRequest,
) -> ttrpc::Result<Empty> {
    state
        .containers
        .resume(&req.container_id)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}
