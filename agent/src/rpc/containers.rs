//! Container lifecycle (CreateContainer ... GetDiagnosticData, GetOOMEvent).
//!
//! Not implemented in this slice: the next one launches containers through
//! youki's libcontainer (one global lock around create/start, see
//! platform-notes) with guest-pulled images (`image_guest_pull` storages).

super::not_implemented_yet! {
    CreateContainer create_container;
    StartContainer start_container;
    RemoveContainer remove_container;
    ExecProcess exec_process;
    SignalProcess signal_process;
    WaitProcess wait_process;
    UpdateContainer update_container;
    UpdateEphemeralMounts update_ephemeral_mounts;
    StatsContainer stats_container;
    PauseContainer pause_container;
    ResumeContainer resume_container;
    RemoveStaleVirtiofsShareMounts remove_stale_virtiofs_share_mounts;
    GetDiagnosticData get_diagnostic_data;
    GetOOMEvent get_oom_event;
}
