//! Guest-wide RPCs: GetGuestDetails, GetMetrics, SetGuestDateTime, CopyFile,
//! SetPolicy; the rest of the misc group (hotplug, swap, volumes, mem-agent,
//! reseeding) answers UNIMPLEMENTED for now.

use ttrpc::Code;

use super::{blocking, status};
use crate::clock::{self, ClockError};
use crate::copy_file::{CopyFileError, CopyRequest, PolicyCopyFileRequest};
use crate::guest;
use crate::methods::proto::agent::{
    AgentDetails, CopyFileRequest, GetMetricsRequest, GuestDetailsRequest, GuestDetailsResponse,
    Metrics, SetGuestDateTimeRequest, SetPolicyRequest,
};
use crate::methods::proto::empty::Empty;
use crate::state::AgentState;

super::not_implemented_yet! {
    MemAgentMemcgSet mem_agent_memcg_set;
    MemAgentCompactSet mem_agent_compact_set;
    OnlineCPUMem online_cpu_mem;
    ReseedRandomDev reseed_random_dev;
    MemHotplugByProbe mem_hotplug_by_probe;
    AddSwap add_swap;
    AddSwapPath add_swap_path;
    GetVolumeStats get_volume_stats;
    ResizeVolume resize_volume;
}

/// GetGuestDetails: what this agent is and, when asked, the memory hotplug
/// facts of the guest.
pub(crate) async fn get_guest_details(
    state: &AgentState,
    req: GuestDetailsRequest,
) -> ttrpc::Result<GuestDetailsResponse> {
    let mut resp = GuestDetailsResponse::new();
    if req.mem_block_size {
        match state.sysfs.memory_block_size() {
            Ok(Some(size)) => resp.mem_block_size_bytes = size,
            Ok(None) => tracing::info!("no memory hotplug in this kernel: block size 0"),
            Err(e) => return Err(status(Code::INTERNAL, e.to_string())),
        }
    }
    if req.mem_hotplug_probe {
        resp.support_mem_hotplug_probe = state.sysfs.memory_probe_supported();
    }
    let mut details = AgentDetails::new();
    details.version = crate::AGENT_VERSION.to_string();
    details.init_daemon = guest::is_init_process();
    details.device_handlers = guest::DEVICE_HANDLERS
        .iter()
        .map(|s| s.to_string())
        .collect();
    details.storage_handlers = guest::STORAGE_HANDLERS
        .iter()
        .map(|s| s.to_string())
        .collect();
    details.supports_seccomp = false;
    resp.agent_details = Some(details).into();
    Ok(resp)
}

/// GetMetrics: Prometheus text.
pub(crate) async fn get_metrics(
    state: &AgentState,
    _req: GetMetricsRequest,
) -> ttrpc::Result<Metrics> {
    let mut resp = Metrics::new();
    resp.metrics = state.metrics.render();
    Ok(resp)
}

/// SetGuestDateTime: sets the wall clock (the policy decided it may).
pub(crate) async fn set_guest_date_time(
    _state: &AgentState,
    req: SetGuestDateTimeRequest,
) -> ttrpc::Result<Empty> {
    clock::set_realtime(req.Sec, req.Usec).map_err(|e| match &e {
        ClockError::Invalid { .. } => status(Code::INVALID_ARGUMENT, e.to_string()),
        ClockError::Os(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            status(Code::PERMISSION_DENIED, e.to_string())
        }
        ClockError::Os(_) => status(Code::INTERNAL, e.to_string()),
    })?;
    tracing::info!(sec = req.Sec, usec = req.Usec, "guest clock set");
    Ok(Empty::new())
}

fn copy_request(req: &CopyFileRequest) -> CopyRequest<'_> {
    CopyRequest {
        path: &req.path,
        file_size: req.file_size,
        file_mode: req.file_mode,
        dir_mode: req.dir_mode,
        uid: req.uid,
        gid: req.gid,
        offset: req.offset,
        data: &req.data,
    }
}

/// The policy sees CopyFile preprocessed (file type, symlink target, no
/// data), as `PolicyCopyFileRequest` (Kata's shape).
pub(crate) fn copy_file_policy_input(req: &CopyFileRequest) -> Result<serde_json::Value, String> {
    let view = PolicyCopyFileRequest::new(&copy_request(req)).map_err(|e| e.to_string())?;
    serde_json::to_value(view).map_err(|e| e.to_string())
}

/// CopyFile: one chunk, file, directory or symlink below the shared dir.
pub(crate) async fn copy_file(state: &AgentState, req: CopyFileRequest) -> ttrpc::Result<Empty> {
    let shared = state.shared_dir.clone();
    blocking("CopyFile", move || shared.copy(&copy_request(&req)))
        .await?
        .map_err(|e| {
            let code = match e {
                CopyFileError::Escape { .. } => Code::PERMISSION_DENIED,
                CopyFileError::Io { .. } => Code::INTERNAL,
                _ => Code::INVALID_ARGUMENT,
            };
            tracing::warn!(error = %e, "CopyFile refused");
            status(code, e.to_string())
        })?;
    Ok(Empty::new())
}

/// SetPolicy: the current policy allowed it; the new one replaces it.
pub(crate) async fn set_policy(state: &AgentState, req: SetPolicyRequest) -> ttrpc::Result<Empty> {
    state
        .policy
        .replace("SetPolicy", &req.policy)
        .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
    Ok(Empty::new())
}
