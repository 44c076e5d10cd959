//! Containers end to end, with real peers: the real `guest-agent` binary
//! (child process, its own state dir), a real registry serving the busybox
//! image built with umoci and pushed with skopeo, youki's libcontainer, and
//! the real `agentctl` or `AgentClient` calls (proto field names, bytes as
//! arrays of numbers). Run as root.
//!
//! Each test owns its registry, agent and temp dirs and uses container IDs
//! unique to the test process (cgroups are named after the ID), so the tests
//! run in parallel; the fixtures tear everything down even on failure.
//!
//! The busybox image links only `sh`, `ls`, `echo` and `cat`; other applets
//! run as `/bin/busybox APPLET`.

#[path = "common/containers.rs"]
mod fixture;

use std::collections::BTreeSet;
use std::time::Duration;

use fixture::*;
use integration_tests::proxy::Proxy;
use serde_json::json;

/// The busybox image and an agent, made at the same time.
async fn setup() -> (TestImage, AgentProcess) {
    tokio::join!(TestImage::busybox(), AgentProcess::start())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_prints_hello_and_exits_zero() {
    let (image, agent) = setup().await;
    let id = unique_id("hello");
    let out = agent
        .agentctl(&[
            "run",
            "--id",
            &id,
            &image.reference,
            "--",
            "/bin/echo",
            "hello",
        ])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "agentctl run failed: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "hello\n");
    assert_eq!(text(&out.stderr), "");
    // Removed after it exited: no bundle, runtime state or mount left.
    agent.assert_gone(&id);
    assert_eq!(agent.bundles(), Vec::<String>::new());
    assert_eq!(agent.mounts(), Vec::<std::path::PathBuf>::new());
    // The image was pulled in the guest, into the agent's own store.
    let mut want = image.diff_ids.clone();
    want.sort();
    assert_eq!(store_layers(&agent.state_dir), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_status_and_stderr() {
    let (image, agent) = setup().await;
    let id = unique_id("status");
    let out = agent
        .agentctl(&[
            "run",
            "--id",
            &id,
            &image.reference,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .await;
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out\n");
    // The container's stderr and nothing else (no runtime or agent logs).
    assert_eq!(text(&out.stderr), "err\n");
    agent.assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_into_a_running_container() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("exec");
    run_container(
        &c,
        &id,
        &image.reference,
        &["/bin/busybox", "sleep", "1000"],
    )
    .await;

    call(
        &c,
        "ExecProcess",
        exec_request(&id, "e1", &["sh", "-c", "echo in-exec; exit 7"], false),
    )
    .await;
    let (out, err, status) = tokio::join!(
        read_to_eof(&s, "ReadStdout", &id, "e1"),
        read_to_eof(&s, "ReadStderr", &id, "e1"),
        wait_status(&s, &id, "e1"),
    );
    assert_eq!(text(&out), "in-exec\n");
    assert_eq!(text(&err), "");
    assert_eq!(status, 7);

    // The exec ID is taken (even after the process exited).
    let (code, msg) = call_err(
        &c,
        "ExecProcess",
        exec_request(&id, "e1", &["/bin/echo", "again"], false),
    )
    .await;
    assert_eq!(code, "ALREADY_EXISTS", "{msg}");
    let (code, msg) = call_err(
        &c,
        "ExecProcess",
        exec_request(&id, "../x", &["/bin/echo", "x"], false),
    )
    .await;
    assert_eq!(code, "INVALID_ARGUMENT", "{msg}");
    assert!(msg.contains("exec_id"), "{msg}");

    // The init is still running, and the container goes away on request.
    call(
        &c,
        "RemoveContainer",
        json!({"container_id": id, "timeout": 0}),
    )
    .await;
    agent.assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_and_wait() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("signal");
    run_container(
        &c,
        &id,
        &image.reference,
        &["/bin/busybox", "sleep", "1000"],
    )
    .await;

    // An exec'd process is not PID 1: SIGTERM kills it, status 128 + 15.
    call(
        &c,
        "ExecProcess",
        exec_request(&id, "s1", &["/bin/busybox", "sleep", "1000"], false),
    )
    .await;
    call(
        &c,
        "SignalProcess",
        json!({"container_id": id, "exec_id": "s1", "signal": 15}),
    )
    .await;
    assert_eq!(wait_status(&s, &id, "s1").await, 143);

    call(
        &c,
        "SignalProcess",
        json!({"container_id": id, "exec_id": "", "signal": 15}),
    )
    .await;
    // `sleep` is PID 1 of its PID namespace and has no SIGTERM handler, so a
    // plain SIGTERM is ignored by the kernel; Kata's agent sends SIGKILL
    // instead in that case (status 137). A runtime that lets SIGTERM through
    // gives 143. Either way the process must end.
    let status = tokio::time::timeout(Duration::from_secs(15), wait_status(&s, &id, ""))
        .await
        .expect(
            "the container's init did not exit within 15 s of SignalProcess(SIGTERM): \
             a PID-1 init without a SIGTERM handler ignores it; Kata's agent sends SIGKILL \
             instead (init process, SIGTERM not in SigCgt of /proc/PID/status)",
        );
    assert!(
        status == 128 + 15 || status == 128 + 9,
        "status after SIGTERM: {status}"
    );
    // Stopped: its output ends, and signalling it again is not an error.
    assert_eq!(read_to_eof(&s, "ReadStdout", &id, "").await, b"");
    call(
        &c,
        "SignalProcess",
        json!({"container_id": id, "exec_id": "", "signal": 9}),
    )
    .await;
    call(
        &c,
        "RemoveContainer",
        json!({"container_id": id, "timeout": 0}),
    )
    .await;
    agent.assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trip() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("stdin");
    run_container(&c, &id, &image.reference, &["/bin/cat"]).await;

    let resp = call(
        &c,
        "WriteStdin",
        json!({"container_id": id, "exec_id": "", "data": b"ping\n"}),
    )
    .await;
    assert_eq!(resp["len"], 5);
    let got = bounded("reading the echo of cat", async {
        let mut got = Vec::new();
        while got.len() < 5 {
            let chunk = read_once(&s, "ReadStdout", &id, "").await;
            assert!(!chunk.is_empty(), "EOF before the echo; got {got:?}");
            got.extend(chunk);
        }
        got
    })
    .await;
    assert_eq!(text(&got), "ping\n");

    call(&c, "CloseStdin", json!({"container_id": id, "exec_id": ""})).await;
    // cat sees EOF and exits: stdout ends, status 0.
    assert_eq!(read_to_eof(&s, "ReadStdout", &id, "").await, b"");
    assert_eq!(wait_status(&s, &id, "").await, 0);
    call(
        &c,
        "RemoveContainer",
        json!({"container_id": id, "timeout": 0}),
    )
    .await;
    agent.assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("tty");
    call(
        &c,
        "CreateContainer",
        create_request(
            &id,
            &image.reference,
            &["sh", "-c", "/bin/busybox tty; /bin/busybox stty size"],
            true,
        ),
    )
    .await;
    call(
        &c,
        "TtyWinResize",
        json!({"container_id": id, "exec_id": "", "row": 33, "column": 101}),
    )
    .await;
    call(&c, "StartContainer", json!({"container_id": id})).await;
    let (out, status) = tokio::join!(
        read_to_eof(&s, "ReadStdout", &id, ""),
        wait_status(&s, &id, "")
    );
    let out = text(&out);
    assert!(out.contains("/dev/pts/"), "no terminal: {out:?}");
    assert!(out.contains("33 101"), "size not applied: {out:?}");
    assert_eq!(status, 0, "{out:?}");
    // With a terminal, stderr is the terminal: ReadStderr just ends.
    assert_eq!(read_to_eof(&s, "ReadStderr", &id, "").await, b"");

    // A process without a terminal cannot be resized.
    let id2 = unique_id("notty");
    run_container(
        &c,
        &id2,
        &image.reference,
        &["/bin/busybox", "sleep", "1000"],
    )
    .await;
    let (code, msg) = call_err(
        &c,
        "TtyWinResize",
        json!({"container_id": id2, "exec_id": "", "row": 1, "column": 1}),
    )
    .await;
    assert_eq!(code, "FAILED_PRECONDITION", "{msg}");
    for i in [&id, &id2] {
        call(
            &c,
            "RemoveContainer",
            json!({"container_id": i, "timeout": 0}),
        )
        .await;
        agent.assert_gone(i);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_running_container() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let id = unique_id("remove");
    // A command line no other test uses, to find the init in /proc.
    let secs = format!("{}", 500_000 + std::process::id());
    let argv = ["/bin/busybox", "sleep", secs.as_str()];
    run_container(&c, &id, &image.reference, &argv).await;
    assert!(agent.bundle(&id).join("config.json").is_file());
    assert_eq!(
        agent.mounts(),
        vec![agent.bundle(&id).join("rootfs")],
        "the rootfs overlay is the only mount"
    );
    let pid = bounded("finding the container's init", async {
        loop {
            if let [pid] = pids_with_cmdline(&argv)[..] {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    call(
        &c,
        "RemoveContainer",
        json!({"container_id": id, "timeout": 0}),
    )
    .await;
    assert!(
        !pid_alive(pid),
        "the init (PID {pid}) is still there after RemoveContainer"
    );
    agent.assert_gone(&id);
    assert_eq!(agent.mounts(), Vec::<std::path::PathBuf>::new());
    for (method, req) in [
        ("StartContainer", json!({"container_id": id})),
        ("WaitProcess", json!({"container_id": id, "exec_id": ""})),
        ("RemoveContainer", json!({"container_id": id, "timeout": 0})),
    ] {
        let (code, msg) = call_err(&c, method, req).await;
        assert_eq!(code, "NOT_FOUND", "{method}: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_containers_at_once() {
    let (image, agent) = setup().await;
    // Count what the agent fetches: it pulls through a logging proxy.
    let proxy = Proxy::start(&image.registry.addr());
    let reference = image.via(&proxy.addr());
    let ids: Vec<String> = (0..10).map(|n| unique_id(&format!("many{n}"))).collect();
    let runs: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let n = n.to_string();
            let args = agent.agentctl_args(&["run", "--id", id, &reference, "--", "/bin/echo", &n]);
            tokio::spawn(async move { (n, run_bounded(AGENTCTL, args).await) })
        })
        .collect();
    for run in runs {
        let (n, out) = run.await.expect("agentctl task");
        assert_eq!(out.status.code(), Some(0), "run {n}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), format!("{n}\n"), "run {n}");
        assert_eq!(text(&out.stderr), "", "run {n}");
    }
    for id in &ids {
        agent.assert_gone(id);
    }
    // Ten pulls of one image, but each layer was downloaded once.
    let gets = proxy.requests();
    for l in &image.layers {
        let n = gets
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains(l.as_str()))
            .count();
        assert_eq!(
            n,
            1,
            "layer {l} fetched {n} times: {:#?}",
            gets.iter()
                .map(|r| (&r.method, &r.path))
                .collect::<Vec<_>>()
        );
    }
    let mut want = image.diff_ids.clone();
    want.sort();
    assert_eq!(
        store_layers(&agent.state_dir),
        want,
        "the store holds exactly the image's layers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_id_twice_is_refused() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("twice");
    call(
        &c,
        "CreateContainer",
        create_request(&id, &image.reference, &["/bin/echo", "first"], false),
    )
    .await;
    let (code, msg) = call_err(
        &c,
        "CreateContainer",
        create_request(&id, &image.reference, &["/bin/echo", "second"], false),
    )
    .await;
    assert_eq!(code, "ALREADY_EXISTS", "{msg}");
    assert!(msg.contains(&id), "{msg}");
    // The refused create did not disturb the first container.
    call(&c, "StartContainer", json!({"container_id": id})).await;
    assert_eq!(
        text(&read_to_eof(&s, "ReadStdout", &id, "").await),
        "first\n"
    );
    assert_eq!(wait_status(&s, &id, "").await, 0);

    let before = dir_names(agent.dir());
    for bad in ["../evil", "", "a/b", "..", "-rf"] {
        let (code, msg) = call_err(
            &c,
            "CreateContainer",
            create_request(bad, &image.reference, &["/bin/echo", "x"], false),
        )
        .await;
        assert_eq!(code, "INVALID_ARGUMENT", "{bad:?}: {msg}");
        assert!(msg.contains("container_id"), "{bad:?}: {msg}");
    }
    assert_eq!(
        dir_names(agent.dir()),
        before,
        "files appeared next to the state dir"
    );
    for p in ["evil", "containers/a", "containers/evil"] {
        assert!(!agent.state_dir.join(p).exists(), "{p} was created");
    }
    assert!(!agent.dir().join("evil").exists());
    assert_eq!(agent.bundles(), vec![id.clone()]);

    // DestroySandbox removes every container.
    call(&c, "DestroySandbox", json!({})).await;
    agent.assert_gone(&id);
    assert_eq!(agent.bundles(), Vec::<String>::new());
}

/// Every request the agent knows allowed, except ExecProcessRequest.
fn policy_denying_exec() -> String {
    let mut rules: BTreeSet<&str> = agent::methods::AGENT_METHODS
        .iter()
        .chain(agent::methods::HEALTH_METHODS)
        .map(|m| m.request)
        .collect();
    rules.remove("ExecProcessRequest");
    let mut p = String::from("package agent_policy\n\ndefault ExecProcessRequest := false\n");
    for r in rules {
        p.push_str(&format!("default {r} := true\n"));
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_exec_with_the_rule_name() {
    let policy = policy_denying_exec();
    let (image, agent) = tokio::join!(TestImage::busybox(), AgentProcess::with_policy(&policy));
    let c = agent.client().await;
    let id = unique_id("policy");
    run_container(
        &c,
        &id,
        &image.reference,
        &["/bin/busybox", "sleep", "1000"],
    )
    .await;
    let (code, msg) = call_err(
        &c,
        "ExecProcess",
        exec_request(&id, "e1", &["/bin/echo", "hi"], false),
    )
    .await;
    assert_eq!(code, "PERMISSION_DENIED", "{msg}");
    assert!(
        msg.contains("ExecProcessRequest is blocked by policy"),
        "{msg}"
    );
    // agentctl exec reports it too.
    let out = agent
        .agentctl(&["exec", &id, "--", "/bin/echo", "hi"])
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("ExecProcessRequest is blocked by policy"),
        "{}",
        text(&out.stderr)
    );
    // The denied exec ran nothing: its ID is free... and still denied.
    let (code, _) = call_err(
        &c,
        "ExecProcess",
        exec_request(&id, "e1", &["/bin/echo", "hi"], false),
    )
    .await;
    assert_eq!(code, "PERMISSION_DENIED");
    call(
        &c,
        "RemoveContainer",
        json!({"container_id": id, "timeout": 0}),
    )
    .await;
    agent.assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_image_and_pull_failure_are_clear() {
    let (image, agent) = setup().await;
    let c = agent.client().await;

    let id = unique_id("badref");
    let (code, msg) = call_err(
        &c,
        "CreateContainer",
        create_request(&id, "not a ref!!", &["/bin/echo", "x"], false),
    )
    .await;
    assert_eq!(code, "INVALID_ARGUMENT", "{msg}");
    assert!(msg.contains("not a ref!!"), "{msg}");

    let missing = format!("{}/sealpod/missing:latest", image.registry.addr());
    let id = unique_id("missing");
    let (code, msg) = call_err(
        &c,
        "CreateContainer",
        create_request(&id, &missing, &["/bin/echo", "x"], false),
    )
    .await;
    // A pull failure, with the registry's answer and what was asked for.
    assert!(
        ["INTERNAL", "NOT_FOUND", "UNAVAILABLE"].contains(&code.as_str()),
        "{code}: {msg}"
    );
    assert!(msg.contains("sealpod/missing"), "{msg}");
    assert!(msg.contains("latest"), "{msg}");
    let lower = msg.to_lowercase();
    assert!(
        lower.contains("not found") || lower.contains("manifest_unknown") || lower.contains("404"),
        "the registry's answer is missing: {msg}"
    );

    let out = agent
        .agentctl(&["run", &missing, "--", "/bin/echo", "x"])
        .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    // agentctl names the image as given, then the agent's reason.
    assert!(err.contains(&missing), "{err}");
    assert!(
        err.contains("MANIFEST_UNKNOWN") || err.to_lowercase().contains("not found"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");

    assert_eq!(agent.bundles(), Vec::<String>::new());
    assert_eq!(agent.mounts(), Vec::<std::path::PathBuf>::new());
    assert_eq!(
        dir_names(&agent.state_dir.join("runtime")),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("pause");
    run_container(
        &c,
        &id,
        &image.reference,
        &[
            "sh",
            "-c",
            "while true; do echo x; /bin/busybox usleep 50000; done",
        ],
    )
    .await;
    let first = read_once(&s, "ReadStdout", &id, "").await;
    assert!(!first.is_empty());

    call(&c, "PauseContainer", json!({"container_id": id})).await;
    // Whatever was written before the freeze drains; then nothing comes.
    let mut quiet = false;
    for _ in 0..20 {
        match tokio::time::timeout(
            Duration::from_millis(700),
            read_once(&s, "ReadStdout", &id, ""),
        )
        .await
        {
            Ok(chunk) => assert!(!chunk.is_empty(), "EOF while paused"),
            Err(_) => {
                quiet = true;
                break;
            }
        }
    }
    assert!(quiet, "output kept coming while the container was paused");
    let (code, msg) = call_err(
        &c,
        "ExecProcess",
        exec_request(&id, "e1", &["/bin/echo", "x"], false),
    )
    .await;
    assert_eq!(code, "FAILED_PRECONDITION", "exec while paused: {msg}");

    call(&c, "ResumeContainer", json!({"container_id": id})).await;
    // Output flows again (the read abandoned above may take the first
    // chunk).
    let again = bounded("output after resume", read_once(&s, "ReadStdout", &id, "")).await;
    assert!(again.contains(&b'x'), "{again:?}");
    let (code, msg) = call_err(&c, "ResumeContainer", json!({"container_id": id})).await;
    assert_eq!(code, "FAILED_PRECONDITION", "resume while running: {msg}");

    call(
        &c,
        "RemoveContainer",
        json!({"container_id": id, "timeout": 0}),
    )
    .await;
    agent.assert_gone(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_stats_and_oom_event() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("oom");
    let mut req = create_request(
        &id,
        &image.reference,
        // Grows a shell variable until the 32 MiB limit kills the process.
        &[
            "/bin/busybox",
            "sh",
            "-c",
            "echo started; x=a; while true; do x=$x$x; done",
        ],
        false,
    );
    req["OCI"]["Linux"] = json!({"Resources": {"Memory": {"Limit": 32 * 1024 * 1024}}});
    call(&c, "CreateContainer", req).await;
    let stats = call(&c, "StatsContainer", json!({"container_id": id})).await;
    assert_eq!(
        stats["cgroup_stats"]["memory_stats"]["usage"]["limit"],
        32 * 1024 * 1024,
        "{stats}"
    );
    let oom = tokio::spawn({
        let s = agent.streaming_client().await;
        async move { s.call_json("GetOOMEvent", &json!({})).await }
    });
    call(&c, "StartContainer", json!({"container_id": id})).await;
    assert_eq!(
        text(&read_to_eof(&s, "ReadStdout", &id, "").await),
        "started\n"
    );
    assert_eq!(
        wait_status(&s, &id, "").await,
        128 + 9,
        "killed by the OOM killer"
    );
    let ev = bounded("GetOOMEvent", oom).await.unwrap().unwrap();
    assert_eq!(ev["container_id"], id.as_str());
    call(&c, "RemoveContainer", json!({"container_id": id})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_read_drains_and_answers_empty() {
    let image = TestImage::busybox().await;
    let agent = AgentProcess::with_policy(
        "package agent_policy\n\
         default CreateContainerRequest := true\ndefault StartContainerRequest := true\n\
         default WaitProcessRequest := true\ndefault RemoveContainerRequest := true\n\
         default ReadStreamRequest := false\n",
    )
    .await;
    let c = agent.client().await;
    let s = agent.streaming_client().await;
    let id = unique_id("deniedread");
    run_container(
        &c,
        &id,
        &image.reference,
        &["/bin/busybox", "echo", "secret-output"],
    )
    .await;
    // Kata's rule: no error, no data (the output is consumed, not returned).
    let got = call(
        &s,
        "ReadStdout",
        json!({"container_id": id, "exec_id": "", "len": 1024}),
    )
    .await;
    assert!(bytes_of(&got["data"]).is_empty(), "{got}");
    assert_eq!(wait_status(&s, &id, "").await, 0);
    call(&c, "RemoveContainer", json!({"container_id": id})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_container_changes_the_limits() {
    let (image, agent) = setup().await;
    let c = agent.client().await;
    let id = unique_id("update");
    let mut req = create_request(
        &id,
        &image.reference,
        &["/bin/busybox", "sleep", "1000"],
        false,
    );
    req["OCI"]["Linux"] =
        json!({"Resources": {"Memory": {"Limit": 64 * 1024 * 1024}, "Pids": {"Limit": 50}}});
    call(&c, "CreateContainer", req).await;
    call(&c, "StartContainer", json!({"container_id": id})).await;
    let limits = |v: &serde_json::Value| {
        (
            v["cgroup_stats"]["memory_stats"]["usage"]["limit"].as_u64(),
            v["cgroup_stats"]["pids_stats"]["limit"].as_u64(),
        )
    };
    let before = call(&c, "StatsContainer", json!({"container_id": id})).await;
    assert_eq!(
        limits(&before),
        (Some(64 * 1024 * 1024), Some(50)),
        "{before}"
    );
    call(
        &c,
        "UpdateContainer",
        json!({"container_id": id, "resources": {"Memory": {"Limit": 48 * 1024 * 1024}, "Pids": {"Limit": 20}}}),
    )
    .await;
    let after = call(&c, "StatsContainer", json!({"container_id": id})).await;
    assert_eq!(
        limits(&after),
        (Some(48 * 1024 * 1024), Some(20)),
        "{after}"
    );
    let (code, _) = call_err(
        &c,
        "UpdateContainer",
        json!({"container_id": "no-such", "resources": {}}),
    )
    .await;
    assert_eq!(code, "NOT_FOUND");
    call(&c, "RemoveContainer", json!({"container_id": id})).await;
}
