//! The transport under abuse: raw frames, hostile bytes, idle and concurrent
//! connections, and the vsock listener.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use agent::addr::ServerAddr;
use agent::config::AgentConfig;
use agent::policy::Policy;
use agent::protocols::health::{health_check_response::ServingStatus, CheckRequest};
use agent::server::{AgentServer, ServerError};
use agent::state::AgentState;
use common::{ctx, TestAgent};
use protobuf::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

const REQUEST: u8 = 1;
const DATA: u8 = 3;
const MAX_FRAME: usize = 4 << 20;

/// Panics anywhere in this test binary (a server task included) are counted.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
}

fn header(len: u32, stream_id: u32, ty: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(10);
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&stream_id.to_be_bytes());
    h.push(ty);
    h.push(0);
    h
}

fn frame(stream_id: u32, ty: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(payload.len() as u32, stream_id, ty);
    f.extend_from_slice(payload);
    f
}

fn request(service: &str, method: &str, payload: &[u8]) -> Vec<u8> {
    let mut r = ttrpc::Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = payload.to_vec();
    r.write_to_bytes().unwrap()
}

/// Reads one frame: (stream id, type, payload).
async fn read_frame(s: &mut UnixStream) -> (u32, u8, Vec<u8>) {
    let mut h = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut h))
        .await
        .expect("response in time")
        .expect("read header");
    let len = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
    let sid = u32::from_be_bytes(h[4..8].try_into().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.expect("read body");
    (sid, h[8], body)
}

/// Reads the response to `sid` and returns its status code name.
async fn response_code(s: &mut UnixStream, sid: u32) -> String {
    let (got_sid, ty, body) = read_frame(s).await;
    assert_eq!((got_sid, ty), (sid, 2), "response frame");
    let resp = ttrpc::Response::parse_from_bytes(&body).expect("a ttrpc Response");
    match resp.status.as_ref() {
        Some(st) => format!("{:?}", st.code.enum_value().unwrap()),
        None => "OK".into(),
    }
}

async fn check_over_raw(s: &mut UnixStream, sid: u32) {
    s.write_all(&frame(sid, REQUEST, &request("grpc.Health", "Check", &[])))
        .await
        .unwrap();
    assert_eq!(response_code(s, sid).await, "OK");
}

/// Xorshift: deterministic junk without a rand dependency.
struct Junk(u64);
impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kata_agent_ctl_check_frame_is_understood() {
    let agent = TestAgent::start().await;
    let mut r = ttrpc::Request::new();
    r.service = "grpc.Health".into();
    r.method = "Check".into();
    let mut kv = ttrpc::proto::KeyValue::new();
    kv.key = "agent-ctl-cfg".into();
    kv.value = "auto-values".into();
    r.metadata.push(kv);
    let body = r.write_to_bytes().unwrap();
    let f = frame(1, REQUEST, &body);
    // The bytes kata-agent-ctl sends (reference: header 00000032 00000001 01 00).
    assert_eq!(&f[..10], [0, 0, 0, 0x32, 0, 0, 0, 1, 1, 0]);
    let mut s = UnixStream::connect(agent.socket()).await.unwrap();
    s.write_all(&f).await.unwrap();
    let (sid, ty, body) = read_frame(&mut s).await;
    assert_eq!((sid, ty), (1, 2));
    let resp = ttrpc::Response::parse_from_bytes(&body).unwrap();
    let check =
        agent::protocols::health::HealthCheckResponse::parse_from_bytes(&resp.payload).unwrap();
    assert_eq!(check.status.enum_value(), Ok(ServingStatus::SERVING));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_bad_frames_then_check_still_works() {
    count_panics();
    let agent = TestAgent::start().await;
    // A well-behaved client connected before the abuse.
    let early = agent.client().await;
    let mut junk = Junk(0x5ea1_90d5);
    let mut frames = 0;

    // Well-framed but malformed requests on one connection: each gets an
    // error answer and the connection stays usable.
    let mut s = UnixStream::connect(agent.socket()).await.unwrap();
    let mut sid = 1;
    for i in 0..700 {
        let (payload, want): (Vec<u8>, &[&str]) = match i % 6 {
            // Not a ttrpc Request at all.
            0 => (junk.bytes(1 + i % 200), &["INVALID_ARGUMENT"]),
            // No such service.
            1 => (request("grpc.Nope", "Check", &[]), &["INVALID_ARGUMENT"]),
            // No such method.
            2 => (
                request("grpc.AgentService", "Nope", &[]),
                &["UNIMPLEMENTED"],
            ),
            // A payload that is not the request message.
            3 => (
                request("grpc.AgentService", "GetGuestDetails", &junk.bytes(16)),
                &["UNKNOWN", "OK"],
            ),
            4 => (
                request("grpc.AgentService", "CopyFile", &[0xff; 40]),
                &["UNKNOWN"],
            ),
            // Valid, for contrast.
            _ => (request("grpc.Health", "Check", &[]), &["OK"]),
        };
        s.write_all(&frame(sid, REQUEST, &payload)).await.unwrap();
        let code = response_code(&mut s, sid).await;
        assert!(want.contains(&code.as_str()), "frame {i}: {code}");
        sid += 2;
        frames += 1;
    }
    // Even stream ids and DATA frames for streams that do not exist.
    for _ in 0..100 {
        s.write_all(&frame(
            sid + 1,
            REQUEST,
            &request("grpc.Health", "Check", &[]),
        ))
        .await
        .unwrap();
        assert_eq!(response_code(&mut s, sid + 1).await, "INVALID_ARGUMENT");
        s.write_all(&frame(sid, DATA, b"stray")).await.unwrap();
        assert_eq!(response_code(&mut s, sid).await, "INVALID_ARGUMENT");
        sid += 2;
        frames += 2;
    }
    // Oversized frames, sent whole: discarded, answered, connection kept.
    for _ in 0..3 {
        let big = vec![0u8; MAX_FRAME + 1];
        s.write_all(&frame(sid, REQUEST, &big)).await.unwrap();
        assert_eq!(response_code(&mut s, sid).await, "INVALID_ARGUMENT");
        sid += 2;
        frames += 1;
    }
    check_over_raw(&mut s, sid).await;

    // Hostile connections that die mid-frame: oversized headers with no
    // body, truncated headers, random bytes.
    for i in 0..100 {
        let mut c = UnixStream::connect(agent.socket()).await.unwrap();
        let bytes = match i % 4 {
            0 => header(u32::MAX, 1, REQUEST),
            1 => header((MAX_FRAME as u32) * 2, 1, REQUEST),
            2 => {
                let n = 1 + (junk.next() % 9) as usize;
                junk.bytes(n)
            }
            _ => junk.bytes(64),
        };
        c.write_all(&bytes).await.unwrap();
        drop(c);
        frames += 1;
    }
    assert!(frames >= 1000, "{frames}");

    // Everyone else is fine.
    let health = early.health();
    let resp = health.check(ctx(), &CheckRequest::new()).await.unwrap();
    assert_eq!(resp.status.enum_value(), Ok(ServingStatus::SERVING));
    let fresh = agent.client().await.health();
    fresh.check(ctx(), &CheckRequest::new()).await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the server panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_served_concurrently() {
    let agent = TestAgent::start().await;
    // Like kata-agent-ctl: two connections opened before anything is sent.
    let mut idle = UnixStream::connect(agent.socket()).await.unwrap();
    let mut stuck = UnixStream::connect(agent.socket()).await.unwrap();
    // One connection stops in the middle of a frame.
    stuck
        .write_all(&header(100, 1, REQUEST)[..7])
        .await
        .unwrap();

    let client = agent.client().await;
    client
        .health()
        .check(ctx(), &CheckRequest::new())
        .await
        .unwrap();

    // Many calls at once over two connections.
    let other = agent.client().await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = if i % 2 == 0 {
            client.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            c.health()
                .check(ctx(), &CheckRequest::new())
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }

    // The idle connection still works when it finally speaks.
    check_over_raw(&mut idle, 1).await;
    // And the stuck one can finish its frame (the server kept waiting).
    let mut rest = header(100, 1, REQUEST)[7..].to_vec();
    rest.extend(vec![0u8; 100]);
    stuck.write_all(&rest).await.unwrap();
    assert_eq!(response_code(&mut stuck, 1).await, "INVALID_ARGUMENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abstract_socket_serves() {
    let name = format!(
        "sealpod-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let addr = ServerAddr::UnixAbstract(name);
    let state = Arc::new(AgentState::new(AgentConfig::default(), Policy::allow_all()));
    let mut server = AgentServer::bind(&addr, state).await.unwrap();
    server.start().await.unwrap();
    let client = agent::client::AgentClient::connect(&agent::client::ConnectOptions {
        addr: addr.clone(),
        hybrid_vsock_port: None,
        timeout: Some(Duration::from_secs(5)),
    })
    .await
    .unwrap();
    client
        .health()
        .check(ctx(), &CheckRequest::new())
        .await
        .unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_replace_a_regular_file_with_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "precious").unwrap();
    let state = Arc::new(AgentState::new(AgentConfig::default(), Policy::allow_all()));
    let err = AgentServer::bind(&ServerAddr::Unix(path.clone()), state)
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::PathInUse { .. }), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsock_listener_binds() {
    // Port -1 (VMADDR_PORT_ANY): the kernel picks a free port.
    let addr: ServerAddr = "vsock://-1:4294967295".parse().unwrap();
    let state = Arc::new(AgentState::new(AgentConfig::default(), Policy::allow_all()));
    match AgentServer::bind(&addr, state).await {
        Ok(mut server) => {
            server.start().await.unwrap();
            server.shutdown().await;
        }
        Err(ServerError::Bind { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc_errno::EAFNOSUPPORT | libc_errno::ENODEV | libc_errno::EADDRNOTAVAIL)
            ) =>
        {
            println!("SKIPPED vsock_listener_binds: this kernel has no vsock transport ({source})");
        }
        Err(e) => panic!("binding {addr}: {e}"),
    }
}

/// The errno values that mean "no vsock here" (Linux).
mod libc_errno {
    pub const ENODEV: i32 = 19;
    pub const EAFNOSUPPORT: i32 = 97;
    pub const EADDRNOTAVAIL: i32 = 99;
}
