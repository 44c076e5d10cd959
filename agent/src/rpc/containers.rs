//! Container lifecycle RPCs: decode, then call [`crate::container`]; errors
//! map to ttrpc codes by kind.

use std::time::Duration;

use ttrpc::Code;

use super::status;
use crate::container::ContainerError;
use crate::methods::proto::agent::{
    CreateContainerRequest, ExecProcessRequest, PauseContainerRequest, RemoveContainerRequest,
    ResumeContainerRequest, SignalProcessRequest, StartContainerRequest, StatsContainerRequest,
    StatsContainerResponse, WaitProcessRequest, WaitProcessResponse,
};
use crate::methods::proto::agent::{GetOOMEventRequest, OOMEvent, UpdateContainerRequest};
use crate::methods::proto::empty::Empty;
use crate::state::AgentState;

super::not_implemented_yet! {
    UpdateEphemeralMounts update_ephemeral_mounts;
    RemoveStaleVirtiofsShareMounts remove_stale_virtiofs_share_mounts;
    GetDiagnosticData get_diagnostic_data;
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

/// StatsContainer: cgroup figures of the container.
pub(crate) async fn stats_container(
    state: &AgentState,
    req: StatsContainerRequest,
) -> ttrpc::Result<StatsContainerResponse> {
    use crate::methods::proto::agent::{
        CgroupStats, CpuStats, CpuUsage, MemoryData, MemoryStats, PidsStats, ThrottlingData,
    };
    let s = state
        .containers
        .stats(&req.container_id)
        .map_err(to_status)?;
    let mut cpu_usage = CpuUsage::new();
    cpu_usage.total_usage = s.cpu_total_ns;
    cpu_usage.percpu_usage = s.cpu_percpu_ns;
    cpu_usage.usage_in_kernelmode = s.cpu_kernel_ns;
    cpu_usage.usage_in_usermode = s.cpu_user_ns;
    let mut throttling = ThrottlingData::new();
    throttling.periods = s.throttle_periods;
    throttling.throttled_periods = s.throttled_periods;
    throttling.throttled_time = s.throttled_ns;
    let mut cpu = CpuStats::new();
    cpu.cpu_usage = Some(cpu_usage).into();
    cpu.throttling_data = Some(throttling).into();
    let mut usage = MemoryData::new();
    usage.usage = s.memory_usage;
    usage.max_usage = s.memory_max_usage;
    usage.failcnt = s.memory_failcnt;
    usage.limit = s.memory_limit;
    let mut swap = MemoryData::new();
    swap.usage = s.swap_usage;
    let mut memory = MemoryStats::new();
    memory.cache = s.memory_cache;
    memory.usage = Some(usage).into();
    memory.swap_usage = Some(swap).into();
    memory.use_hierarchy = true;
    memory.stats = s.memory_stat;
    let mut pids = PidsStats::new();
    pids.current = s.pids_current;
    pids.limit = s.pids_limit;
    let mut cg = CgroupStats::new();
    cg.cpu_stats = Some(cpu).into();
    cg.memory_stats = Some(memory).into();
    cg.pids_stats = Some(pids).into();
    let mut resp = StatsContainerResponse::new();
    resp.cgroup_stats = Some(cg).into();
    Ok(resp)
}

/// GetOOMEvent: waits for the next container with an OOM kill.
pub(crate) async fn get_oom_event(
    state: &AgentState,
    _req: GetOOMEventRequest,
) -> ttrpc::Result<OOMEvent> {
    let id = state.containers.next_oom().await.map_err(to_status)?;
    let mut ev = OOMEvent::new();
    ev.container_id = id;
    Ok(ev)
}

/// UpdateContainer: new cgroup limits for a running container.
pub(crate) async fn update_container(
    state: &AgentState,
    req: UpdateContainerRequest,
) -> ttrpc::Result<Empty> {
    let resources = req.resources.as_ref().cloned().unwrap_or_default();
    state
        .containers
        .update(&req.container_id, &resources)
        .await
        .map_err(to_status)?;
    Ok(Empty::new())
}
