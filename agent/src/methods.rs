//! Every RPC of the agent protocol, as data, in one place.
//!
//! `for_each_agent_method!` and `for_each_health_method!` hand the list to a
//! callback macro; the server builds its service implementations from it (so
//! no method can be forgotten or routed to the wrong group) and the client
//! builds [`AGENT_METHODS`] and [`HEALTH_METHODS`], the registry `agentctl
//! call` uses to turn JSON into a request and a response back into JSON.
//!
//! A row reads `Method rust_name group (module::Request) => (module::Response)`,
//! optionally followed by `[policy_input_fn]` when the policy must see a
//! preprocessed request instead of the request itself. The policy rule of a
//! method is its request message name (so ReadStdout and ReadStderr share
//! `ReadStreamRequest`).

use serde_json::Value;

/// Message modules, for the type paths of the tables.
pub mod proto {
    pub use crate::protocols::{agent, csi, health, oci, types};

    /// `google.protobuf.Empty`.
    pub mod empty {
        pub use protobuf::well_known_types::empty::Empty;
    }
}

/// The ttrpc service name of the agent service.
pub const AGENT_SERVICE: &str = "grpc.AgentService";
/// The ttrpc service name of the health service.
pub const HEALTH_SERVICE: &str = "grpc.Health";

/// Calls `$callback!` with the 42 AgentService methods, in proto order.
macro_rules! for_each_agent_method {
    ($callback:ident) => {
        $callback! {
            // execution
            CreateContainer create_container containers (agent::CreateContainerRequest) => (empty::Empty);
            StartContainer start_container containers (agent::StartContainerRequest) => (empty::Empty);
            RemoveContainer remove_container containers (agent::RemoveContainerRequest) => (empty::Empty);
            ExecProcess exec_process containers (agent::ExecProcessRequest) => (empty::Empty);
            SignalProcess signal_process containers (agent::SignalProcessRequest) => (empty::Empty);
            WaitProcess wait_process containers (agent::WaitProcessRequest) => (agent::WaitProcessResponse);
            UpdateContainer update_container containers (agent::UpdateContainerRequest) => (empty::Empty);
            UpdateEphemeralMounts update_ephemeral_mounts containers (agent::UpdateEphemeralMountsRequest) => (empty::Empty);
            StatsContainer stats_container containers (agent::StatsContainerRequest) => (agent::StatsContainerResponse);
            PauseContainer pause_container containers (agent::PauseContainerRequest) => (empty::Empty);
            ResumeContainer resume_container containers (agent::ResumeContainerRequest) => (empty::Empty);
            RemoveStaleVirtiofsShareMounts remove_stale_virtiofs_share_mounts containers (agent::RemoveStaleVirtiofsShareMountsRequest) => (empty::Empty);
            GetDiagnosticData get_diagnostic_data containers (agent::GetDiagnosticDataRequest) => (agent::GetDiagnosticDataResponse);
            // stdio
            WriteStdin write_stdin stdio (agent::WriteStreamRequest) => (agent::WriteStreamResponse);
            ReadStdout read_stdout stdio (agent::ReadStreamRequest) => (agent::ReadStreamResponse);
            ReadStderr read_stderr stdio (agent::ReadStreamRequest) => (agent::ReadStreamResponse);
            CloseStdin close_stdin stdio (agent::CloseStdinRequest) => (empty::Empty);
            TtyWinResize tty_win_resize stdio (agent::TtyWinResizeRequest) => (empty::Empty);
            // networking
            UpdateInterface update_interface network (agent::UpdateInterfaceRequest) => (types::Interface);
            UpdateRoutes update_routes network (agent::UpdateRoutesRequest) => (agent::Routes);
            ListInterfaces list_interfaces network (agent::ListInterfacesRequest) => (agent::Interfaces);
            ListRoutes list_routes network (agent::ListRoutesRequest) => (agent::Routes);
            AddARPNeighbors add_arp_neighbors network (agent::AddARPNeighborsRequest) => (empty::Empty);
            GetIPTables get_ip_tables network (agent::GetIPTablesRequest) => (agent::GetIPTablesResponse);
            SetIPTables set_ip_tables network (agent::SetIPTablesRequest) => (agent::SetIPTablesResponse);
            // observability
            GetMetrics get_metrics misc (agent::GetMetricsRequest) => (agent::Metrics);
            // mem-agent
            MemAgentMemcgSet mem_agent_memcg_set misc (agent::MemAgentMemcgConfig) => (empty::Empty);
            MemAgentCompactSet mem_agent_compact_set misc (agent::MemAgentCompactConfig) => (empty::Empty);
            // misc
            CreateSandbox create_sandbox sandbox (agent::CreateSandboxRequest) => (empty::Empty);
            DestroySandbox destroy_sandbox sandbox (agent::DestroySandboxRequest) => (empty::Empty);
            OnlineCPUMem online_cpu_mem misc (agent::OnlineCPUMemRequest) => (empty::Empty);
            ReseedRandomDev reseed_random_dev misc (agent::ReseedRandomDevRequest) => (empty::Empty);
            GetGuestDetails get_guest_details misc (agent::GuestDetailsRequest) => (agent::GuestDetailsResponse);
            MemHotplugByProbe mem_hotplug_by_probe misc (agent::MemHotplugByProbeRequest) => (empty::Empty);
            SetGuestDateTime set_guest_date_time misc (agent::SetGuestDateTimeRequest) => (empty::Empty);
            CopyFile copy_file misc (agent::CopyFileRequest) => (empty::Empty) [misc::copy_file_policy_input];
            GetOOMEvent get_oom_event containers (agent::GetOOMEventRequest) => (agent::OOMEvent);
            AddSwap add_swap misc (agent::AddSwapRequest) => (empty::Empty);
            AddSwapPath add_swap_path misc (agent::AddSwapPathRequest) => (empty::Empty);
            GetVolumeStats get_volume_stats misc (agent::VolumeStatsRequest) => (csi::VolumeStatsResponse);
            ResizeVolume resize_volume misc (agent::ResizeVolumeRequest) => (empty::Empty);
            SetPolicy set_policy misc (agent::SetPolicyRequest) => (empty::Empty);
        }
    };
}

/// Calls `$callback!` with the two Health methods.
macro_rules! for_each_health_method {
    ($callback:ident) => {
        $callback! {
            Check check health (health::CheckRequest) => (health::HealthCheckResponse);
            Version version health (health::CheckRequest) => (health::VersionCheckResponse);
        }
    };
}

pub(crate) use {for_each_agent_method, for_each_health_method};

/// One RPC as the client sees it.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// ttrpc service (`grpc.AgentService` or `grpc.Health`).
    pub service: &'static str,
    /// ttrpc method (`CreateContainer`, `Check`, ...).
    pub method: &'static str,
    /// Request message name, which is also the policy rule.
    pub request: &'static str,
    /// Response message name.
    pub response: &'static str,
    /// Encodes a JSON request (proto field names) as the request message.
    pub encode_request: fn(&Value) -> Result<Vec<u8>, String>,
    /// Decodes a response payload into JSON (proto field names).
    pub decode_response: fn(&[u8]) -> Result<Value, String>,
}

/// Encodes `json` as message `M` (missing fields take their defaults).
fn encode_json<M>(json: &Value) -> Result<Vec<u8>, String>
where
    M: protobuf::Message + serde::de::DeserializeOwned,
{
    let msg: M = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
    msg.write_to_bytes().map_err(|e| e.to_string())
}

/// Decodes message `M` from `bytes` as JSON.
fn decode_json<M>(bytes: &[u8]) -> Result<Value, String>
where
    M: protobuf::Message + serde::Serialize,
{
    let msg = M::parse_from_bytes(bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(&msg).map_err(|e| e.to_string())
}

/// `google.protobuf.Empty` has no serde derive: it is `{}`.
fn decode_empty(bytes: &[u8]) -> Result<Value, String> {
    use protobuf::Message as _;
    proto::empty::Empty::parse_from_bytes(bytes).map_err(|e| e.to_string())?;
    Ok(Value::Object(Default::default()))
}

macro_rules! decode_fn {
    (empty::Empty) => {
        decode_empty
    };
    ($m:ident :: $t:ident) => {
        decode_json::<proto::$m::$t>
    };
}

macro_rules! method_infos {
    ($service:expr; $(
        $method:ident $fn:ident $group:ident ($rm:ident :: $req:ident) => ($om:ident :: $resp:ident) $([$input:path])?;
    )*) => {
        &[$(MethodInfo {
            service: $service,
            method: stringify!($method),
            request: stringify!($req),
            response: stringify!($resp),
            encode_request: encode_json::<proto::$rm::$req>,
            decode_response: decode_fn!($om :: $resp),
        },)*]
    };
}

macro_rules! agent_method_infos {
    ($($row:tt)*) => {
        method_infos!(AGENT_SERVICE; $($row)*)
    };
}

macro_rules! health_method_infos {
    ($($row:tt)*) => {
        method_infos!(HEALTH_SERVICE; $($row)*)
    };
}

/// All AgentService methods, in proto order.
pub const AGENT_METHODS: &[MethodInfo] = for_each_agent_method!(agent_method_infos);
/// The Health methods.
pub const HEALTH_METHODS: &[MethodInfo] = for_each_health_method!(health_method_infos);

/// Every method the agent serves.
pub fn all() -> impl Iterator<Item = &'static MethodInfo> {
    AGENT_METHODS.iter().chain(HEALTH_METHODS)
}

/// Finds a method by its ttrpc name (`GetGuestDetails`, `Check`, ...),
/// optionally qualified (`grpc.Health/Check`, `/grpc.AgentService/ListRoutes`).
pub fn lookup(name: &str) -> Option<&'static MethodInfo> {
    let name = name.trim_start_matches('/');
    let (service, method) = match name.rsplit_once('/') {
        Some((svc, m)) => (Some(svc), m),
        None => (None, name),
    };
    all().find(|m| m.method == method && service.is_none_or(|s| s == m.service))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_every_method_once() {
        assert_eq!(AGENT_METHODS.len(), 42);
        assert_eq!(HEALTH_METHODS.len(), 2);
        let mut names: Vec<_> = AGENT_METHODS.iter().map(|m| m.method).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 42);
        assert_eq!(AGENT_METHODS[0].method, "CreateContainer");
        assert_eq!(AGENT_METHODS[41].method, "SetPolicy");
    }

    #[test]
    fn policy_rule_names_follow_kata() {
        let rule = |m: &str| lookup(m).unwrap().request;
        assert_eq!(rule("ReadStdout"), "ReadStreamRequest");
        assert_eq!(rule("ReadStderr"), "ReadStreamRequest");
        assert_eq!(rule("WriteStdin"), "WriteStreamRequest");
        assert_eq!(rule("GetGuestDetails"), "GuestDetailsRequest");
        assert_eq!(rule("MemAgentMemcgSet"), "MemAgentMemcgConfig");
        assert_eq!(rule("GetVolumeStats"), "VolumeStatsRequest");
        assert_eq!(rule("Check"), "CheckRequest");
        assert_eq!(rule("Version"), "CheckRequest");
    }

    #[test]
    fn lookup_accepts_qualified_names() {
        assert_eq!(lookup("grpc.Health/Check").unwrap().service, HEALTH_SERVICE);
        assert_eq!(
            lookup("/grpc.AgentService/ListRoutes").unwrap().method,
            "ListRoutes"
        );
        assert!(lookup("grpc.Health/ListRoutes").is_none());
        assert!(lookup("NoSuchMethod").is_none());
    }

    #[test]
    fn json_round_trip_through_the_wire_format() {
        let m = lookup("GetGuestDetails").unwrap();
        let bytes = (m.encode_request)(
            &serde_json::json!({"mem_block_size": true, "mem_hotplug_probe": true}),
        )
        .unwrap();
        // What kata-agent-ctl sends for the same request.
        assert_eq!(bytes, [0x08, 0x01, 0x10, 0x01]);
        assert!((m.encode_request)(&serde_json::json!({"mem_block_size": "yes"})).is_err());
        assert_eq!(
            (lookup("CopyFile").unwrap().decode_response)(&[]).unwrap(),
            serde_json::json!({})
        );
    }
}
