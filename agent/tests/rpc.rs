//! The implemented RPCs against a real agent on a unix socket.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use agent::guest::Sysfs;
use agent::methods;
use agent::protocols::agent::{
    CopyFileRequest, GetMetricsRequest, GuestDetailsRequest, ListInterfacesRequest,
    ListRoutesRequest, SetGuestDateTimeRequest,
};
use agent::protocols::health::{health_check_response::ServingStatus, CheckRequest};
use agent::protocols::types::IPFamily;
use common::{ctx, status_of, TestAgent};

const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_and_version() {
    let agent = TestAgent::start().await;
    let health = agent.client().await.health();
    let resp = health.check(ctx(), &CheckRequest::new()).await.unwrap();
    assert_eq!(resp.status.enum_value(), Ok(ServingStatus::SERVING));
    let resp = health.version(ctx(), &CheckRequest::new()).await.unwrap();
    assert_eq!(resp.agent_version, agent::AGENT_VERSION);
    assert!(!resp.grpc_version.is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_details() {
    let agent = TestAgent::start().await;
    let client = agent.client().await.agent();
    let mut req = GuestDetailsRequest::new();
    req.mem_block_size = true;
    req.mem_hotplug_probe = true;
    let resp = client.get_guest_details(ctx(), &req).await.unwrap();
    let details = resp.agent_details.as_ref().expect("agent_details");
    assert_eq!(details.version, agent::AGENT_VERSION);
    assert!(!details.init_daemon, "the test process is not PID 1");
    assert_eq!(details.storage_handlers, ["image_guest_pull"]);
    let sysfs = Sysfs::default();
    assert_eq!(
        resp.mem_block_size_bytes,
        sysfs.memory_block_size().unwrap().unwrap_or(0)
    );
    assert_eq!(
        resp.support_mem_hotplug_probe,
        sysfs.memory_probe_supported()
    );

    // Not asked: not read.
    let resp = client
        .get_guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .unwrap();
    assert_eq!(resp.mem_block_size_bytes, 0);
    assert!(resp.agent_details.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_interfaces_shows_lo() {
    let agent = TestAgent::start().await;
    let client = agent.client().await.agent();
    let resp = client
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .unwrap();
    let lo = resp
        .Interfaces
        .iter()
        .find(|i| i.name == "lo")
        .unwrap_or_else(|| panic!("no lo in {:?}", resp.Interfaces));
    assert!(
        lo.IPAddresses.iter().any(|a| a.address == "127.0.0.1"
            && a.mask == "8"
            && a.family.enum_value() == Ok(IPFamily::v4)),
        "{lo:?}"
    );
    assert_eq!(lo.hwAddr, "00:00:00:00:00:00");
    assert!(lo.mtu > 0);

    let routes = client
        .list_routes(ctx(), &ListRoutesRequest::new())
        .await
        .unwrap();
    for r in &routes.Routes {
        assert!(!r.dest.is_empty(), "{r:?}");
    }
}

fn copy_req(path: &Path, data: &[u8]) -> CopyFileRequest {
    let mut req = CopyFileRequest::new();
    req.path = path.display().to_string();
    req.file_size = data.len() as i64;
    req.file_mode = S_IFREG | 0o644;
    req.dir_mode = 0o755;
    req.uid = -1;
    req.gid = -1;
    req.data = data.to_vec();
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_file_writes_below_the_shared_dir() {
    let agent = TestAgent::start().await;
    let client = agent.client().await.agent();
    let shared = agent.shared_dir();

    let target = shared.join("sandbox-1/hostname");
    client
        .copy_file(ctx(), &copy_req(&target, b"pod-1\n"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"pod-1\n");

    // Chunked: two frames, visible after the second.
    let big = shared.join("sandbox-1/big");
    let data = vec![7u8; 6 << 20];
    for (i, chunk) in data.chunks(3 << 20).enumerate() {
        let mut req = copy_req(&big, chunk);
        req.file_size = data.len() as i64;
        req.offset = (i * (3 << 20)) as i64;
        client.copy_file(ctx(), &req).await.unwrap();
    }
    assert_eq!(std::fs::read(&big).unwrap(), data);

    // Directory and symlink entries.
    let mut dir = copy_req(&shared.join("vol/..2024_01_01"), b"");
    dir.file_mode = S_IFDIR | 0o755;
    client.copy_file(ctx(), &dir).await.unwrap();
    let mut link = copy_req(&shared.join("vol/..data"), b"..2024_01_01");
    link.file_mode = S_IFLNK | 0o777;
    client.copy_file(ctx(), &link).await.unwrap();
    assert!(shared.join("vol/..data").is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_file_refuses_escapes() {
    let agent = TestAgent::start().await;
    let client = agent.client().await.agent();
    let shared = agent.shared_dir();
    let outside = agent.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&shared).unwrap();

    // `..` in the path.
    let (code, msg) = status_of(
        client
            .copy_file(ctx(), &copy_req(&shared.join("../x"), b"x"))
            .await,
    );
    assert_eq!(code, "INVALID_ARGUMENT", "{msg}");
    assert!(msg.contains(".."), "{msg}");

    // An absolute path outside the shared dir.
    let (code, msg) = status_of(
        client
            .copy_file(ctx(), &copy_req(&outside.join("x"), b"x"))
            .await,
    );
    assert_eq!(code, "INVALID_ARGUMENT", "{msg}");
    assert!(msg.contains("not below the shared directory"), "{msg}");

    // A symlink inside pointing outside, planted by an earlier CopyFile.
    let mut link = copy_req(
        &shared.join("escape"),
        outside.display().to_string().as_bytes(),
    );
    link.file_mode = S_IFLNK | 0o777;
    client.copy_file(ctx(), &link).await.unwrap();
    for rel in ["escape/x", "escape/sub/dir/x"] {
        let (code, msg) = status_of(
            client
                .copy_file(ctx(), &copy_req(&shared.join(rel), b"x"))
                .await,
        );
        assert_eq!(code, "PERMISSION_DENIED", "{rel}: {msg}");
        assert!(msg.contains("outside the shared directory"), "{msg}");
    }
    // A relative one climbing out.
    std::os::unix::fs::symlink("../../..", shared.join("up")).unwrap();
    let (code, _) = status_of(
        client
            .copy_file(ctx(), &copy_req(&shared.join("up/outside/y"), b"y"))
            .await,
    );
    assert_eq!(code, "PERMISSION_DENIED");

    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside"
    );
    assert!(!agent.dir.path().join("x").exists());
    assert!(!agent.dir.path().join("state/shared/x").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unimplemented_methods_name_themselves() {
    let agent = TestAgent::start().await;
    let client = agent.client().await;
    let implemented: BTreeSet<&str> = [
        "ListInterfaces",
        "ListRoutes",
        "GetMetrics",
        "GetGuestDetails",
        "SetGuestDateTime",
        "CopyFile",
        "SetPolicy",
        "CreateContainer",
        "StartContainer",
        "RemoveContainer",
        "ExecProcess",
        "SignalProcess",
        "WaitProcess",
        "PauseContainer",
        "ResumeContainer",
        "WriteStdin",
        "ReadStdout",
        "ReadStderr",
        "CloseStdin",
        "TtyWinResize",
        "CreateSandbox",
        "DestroySandbox",
        "StatsContainer",
        "GetOOMEvent",
        "UpdateContainer",
        "UpdateInterface",
        "UpdateRoutes",
    ]
    .into();
    let mut checked = 0;
    for m in methods::AGENT_METHODS {
        if implemented.contains(m.method) {
            continue;
        }
        let err = client
            .call_json(m.method, &serde_json::json!({}))
            .await
            .expect_err(m.method);
        assert_eq!(
            err.status_code(),
            Some("UNIMPLEMENTED"),
            "{}: {err}",
            m.method
        );
        assert!(
            err.to_string()
                .contains(&format!("{} is not implemented yet", m.method)),
            "{err}"
        );
        checked += 1;
    }
    assert_eq!(checked, 42 - implemented.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_per_method() {
    let agent = TestAgent::start().await;
    let client = agent.client().await;
    for _ in 0..3 {
        client
            .health()
            .check(ctx(), &CheckRequest::new())
            .await
            .unwrap();
    }
    let _ = client
        .call_json("StartContainer", &serde_json::json!({}))
        .await;
    let text = client
        .agent()
        .get_metrics(ctx(), &GetMetricsRequest::new())
        .await
        .unwrap()
        .metrics;
    assert!(
        text.contains("sealpod_agent_rpc_requests_total{method=\"Check\"} 3\n"),
        "{text}"
    );
    assert!(text.contains("sealpod_agent_rpc_requests_total{method=\"StartContainer\"} 1\n"));
    assert!(text.contains("sealpod_agent_rpc_requests_total{method=\"GetMetrics\"} 1\n"));
    assert!(text.contains("sealpod_agent_rpc_denied_total{method=\"Check\"} 0\n"));
    assert!(text.contains("sealpod_agent_process_resident_memory_bytes "));
    assert!(text.contains("sealpod_agent_process_open_fds "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_guest_date_time_validates_before_touching_the_clock() {
    let agent = TestAgent::start().await;
    let client = agent.client().await.agent();
    let mut req = SetGuestDateTimeRequest::new();
    req.Sec = 1_700_000_000;
    req.Usec = 2_000_000;
    let (code, msg) = status_of(client.set_guest_date_time(ctx(), &req).await);
    assert_eq!(code, "INVALID_ARGUMENT", "{msg}");
}
