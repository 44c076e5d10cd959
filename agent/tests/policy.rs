//! The policy gate in front of a real agent.

mod common;

use agent::protocols::agent::{
    CopyFileRequest, GuestDetailsRequest, ListInterfacesRequest, SetPolicyRequest,
};
use agent::protocols::health::CheckRequest;
use common::{ctx, status_of, TestAgent};

const ALLOW_SET_POLICY: &str = r#"
package agent_policy

default GuestDetailsRequest := false
GuestDetailsRequest {
    print("mem_block_size:", input.mem_block_size)
    input.mem_block_size == false
}

default SetPolicyRequest := true
default ListInterfacesRequest := true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_request_names_the_rule() {
    let agent = TestAgent::with_policy(ALLOW_SET_POLICY).await;
    let client = agent.client().await.agent();

    let mut req = GuestDetailsRequest::new();
    req.mem_block_size = true;
    let (code, msg) = status_of(client.get_guest_details(ctx(), &req).await);
    assert_eq!(code, "PERMISSION_DENIED");
    assert!(
        msg.starts_with("GuestDetailsRequest is blocked by policy"),
        "{msg}"
    );
    assert!(
        msg.contains("mem_block_size: true"),
        "policy prints missing: {msg}"
    );

    // The input uses proto field names: the same rule allows this one.
    client
        .get_guest_details(ctx(), &GuestDetailsRequest::new())
        .await
        .unwrap();
    let counts = agent.state.metrics.counts("GetGuestDetails");
    assert_eq!((counts.requests, counts.denied), (2, 1));

    // A request the policy does not mention is denied.
    let (code, msg) = status_of(client.copy_file(ctx(), &CopyFileRequest::new()).await);
    assert_eq!(code, "PERMISSION_DENIED");
    assert!(
        msg.starts_with("CopyFileRequest is blocked by policy"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_policy_allows_copy_file_once() {
    let policy = r#"
package agent_policy

default CopyFileRequest := {"allowed": false}
CopyFileRequest := {"allowed": true, "ops": ops} {
    input.file_type == "Regular"
    not data.pstate.copied
    ops := [{"op": "add", "path": "/pstate/copied", "value": input.path}]
}
"#;
    let agent = TestAgent::with_policy(policy).await;
    let client = agent.client().await.agent();
    let shared = agent.shared_dir();
    let req = |name: &str| {
        let mut r = CopyFileRequest::new();
        r.path = shared.join(name).display().to_string();
        r.file_mode = 0o100_644;
        r.file_size = 2;
        r.uid = -1;
        r.gid = -1;
        r.data = b"hi".to_vec();
        r
    };
    client.copy_file(ctx(), &req("first")).await.unwrap();
    assert!(shared.join("first").exists());
    let (code, msg) = status_of(client.copy_file(ctx(), &req("second")).await);
    assert_eq!(code, "PERMISSION_DENIED");
    assert!(
        msg.starts_with("CopyFileRequest is blocked by policy"),
        "{msg}"
    );
    assert!(!shared.join("second").exists());

    // The state survives across connections.
    let other = agent.client().await.agent();
    let (code, _) = status_of(other.copy_file(ctx(), &req("third")).await);
    assert_eq!(code, "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_is_checked_by_the_current_policy() {
    let agent = TestAgent::with_policy(
        "package agent_policy\ndefault SetPolicyRequest := false\ndefault ListInterfacesRequest := true",
    )
    .await;
    let client = agent.client().await.agent();
    let mut req = SetPolicyRequest::new();
    req.policy = "package agent_policy\ndefault ListInterfacesRequest := false".into();
    let (code, msg) = status_of(client.set_policy(ctx(), &req).await);
    assert_eq!(code, "PERMISSION_DENIED");
    assert!(
        msg.starts_with("SetPolicyRequest is blocked by policy"),
        "{msg}"
    );
    // Still the old policy.
    client
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_policy_allowed_replaces_the_policy() {
    let agent = TestAgent::with_policy(ALLOW_SET_POLICY).await;
    let client = agent.client().await.agent();
    client
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .unwrap();

    // Broken Rego is refused and the old policy stays.
    let mut req = SetPolicyRequest::new();
    req.policy = "package agent_policy\nthis is not rego".into();
    let (code, _) = status_of(client.set_policy(ctx(), &req).await);
    assert_eq!(code, "INVALID_ARGUMENT");
    client
        .list_interfaces(ctx(), &ListInterfacesRequest::new())
        .await
        .unwrap();

    req.policy = "package agent_policy\ndefault ListInterfacesRequest := false\n".into();
    client.set_policy(ctx(), &req).await.unwrap();
    let (code, msg) = status_of(
        client
            .list_interfaces(ctx(), &ListInterfacesRequest::new())
            .await,
    );
    assert_eq!(code, "PERMISSION_DENIED");
    assert!(msg.starts_with("ListInterfacesRequest is blocked by policy"));
    // The new policy has no SetPolicyRequest rule: no more changes.
    let (code, _) = status_of(client.set_policy(ctx(), &req).await);
    assert_eq!(code, "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_policy_set_policy_installs_one() {
    let agent = TestAgent::start().await;
    assert!(!agent.state.policy.is_enforcing());
    let client = agent.client().await.agent();
    let mut req = SetPolicyRequest::new();
    req.policy = "package agent_policy\ndefault GuestDetailsRequest := false".into();
    client.set_policy(ctx(), &req).await.unwrap();
    assert!(agent.state.policy.is_enforcing());
    let (code, _) = status_of(
        client
            .get_guest_details(ctx(), &GuestDetailsRequest::new())
            .await,
    );
    assert_eq!(code, "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_checked_but_undefined_allows() {
    // genpolicy-style policies do not define CheckRequest: Check works.
    let agent = TestAgent::with_policy(ALLOW_SET_POLICY).await;
    let health = agent.client().await.health();
    health.check(ctx(), &CheckRequest::new()).await.unwrap();
    health.version(ctx(), &CheckRequest::new()).await.unwrap();

    // An explicit rule is obeyed.
    let agent = TestAgent::with_policy("package agent_policy\nCheckRequest := false").await;
    let health = agent.client().await.health();
    let (code, msg) = status_of(health.check(ctx(), &CheckRequest::new()).await);
    assert_eq!(code, "PERMISSION_DENIED");
    assert!(
        msg.starts_with("CheckRequest is blocked by policy"),
        "{msg}"
    );
    let (code, _) = status_of(health.version(ctx(), &CheckRequest::new()).await);
    assert_eq!(code, "PERMISSION_DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_errors_are_internal() {
    let agent = TestAgent::with_policy(
        "package agent_policy\nListInterfacesRequest := {\"allowed\": true, \"ops\": [{\"op\": \"remove\", \"path\": \"/nope\"}]}",
    )
    .await;
    let client = agent.client().await.agent();
    let (code, msg) = status_of(
        client
            .list_interfaces(ctx(), &ListInterfacesRequest::new())
            .await,
    );
    assert_eq!(code, "INTERNAL", "{msg}");
}
