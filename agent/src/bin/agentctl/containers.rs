//! `agentctl run` and `agentctl exec`: create/start (or exec), stream the
//! output with the Kata pull model (ReadStdout/ReadStderr until an empty
//! answer), forward stdin when asked, wait, and return the exit status.

use std::io::Write as _;

use agent::client::AgentClient;
use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt as _;

/// Bytes asked for per read.
const READ_LEN: u32 = 32 * 1024;

/// What `run` does.
#[derive(Debug)]
pub struct RunOptions {
    pub id: String,
    pub image: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub tty: bool,
    pub interactive: bool,
    pub keep: bool,
}

/// Runs a container; returns its exit status.
pub async fn run(client: &AgentClient, o: &RunOptions) -> anyhow::Result<i32> {
    client
        .call_json("CreateSandbox", &json!({"sandbox_id": "agentctl"}))
        .await?;
    let spec = json!({
        "Version": "1.1.0",
        "Process": {"Terminal": o.tty, "Args": o.args, "Env": o.env, "Cwd": ""},
        "Root": {"Path": "rootfs"},
    });
    let req = json!({
        "container_id": o.id,
        "exec_id": o.id,
        "storages": [{"driver": "image_guest_pull", "source": o.image}],
        "OCI": spec,
    });
    client
        .call_json("CreateContainer", &req)
        .await
        .with_context(|| format!("creating container {} from {}", o.id, o.image))?;
    let result = async {
        client
            .call_json("StartContainer", &json!({"container_id": o.id}))
            .await?;
        stream_and_wait(client, &o.id, "", o.tty, o.interactive).await
    }
    .await;
    if !o.keep {
        let rm = client
            .call_json(
                "RemoveContainer",
                &json!({"container_id": o.id, "timeout": 0}),
            )
            .await;
        if let (Err(e), Ok(_)) = (&rm, &result) {
            eprintln!("agentctl: removing {}: {e}", o.id);
        }
    }
    result
}

/// Runs `args` in container `id` as exec `exec_id`; returns its status.
pub async fn exec(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    args: Vec<String>,
    tty: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    let req = json!({
        "container_id": id,
        "exec_id": exec_id,
        "process": {"Terminal": tty, "Args": args, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cwd": "/"},
    });
    client.call_json("ExecProcess", &req).await?;
    stream_and_wait(client, id, exec_id, tty, interactive).await
}

async fn stream_and_wait(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    tty: bool,
    interactive: bool,
) -> anyhow::Result<i32> {
    let out = pump(client, id, exec_id, "ReadStdout", false);
    let err = async {
        if tty {
            Ok(())
        } else {
            pump(client, id, exec_id, "ReadStderr", true).await
        }
    };
    let input = async {
        if interactive {
            forward_stdin(client, id, exec_id).await
        } else {
            client
                .call_json(
                    "CloseStdin",
                    &json!({"container_id": id, "exec_id": exec_id}),
                )
                .await
                .map(|_| ())
                .map_err(anyhow::Error::from)
        }
    };
    let wait = async {
        client
            .call_json(
                "WaitProcess",
                &json!({"container_id": id, "exec_id": exec_id}),
            )
            .await
            .map_err(anyhow::Error::from)
    };
    let (o, e, i, w) = tokio::join!(out, err, input, wait);
    o?;
    e?;
    if let Err(e) = i {
        eprintln!("agentctl: stdin: {e:#}");
    }
    Ok(w?["status"].as_i64().unwrap_or(-1) as i32)
}

/// Reads a stream until EOF (an empty answer) and copies it out.
async fn pump(
    client: &AgentClient,
    id: &str,
    exec_id: &str,
    method: &str,
    stderr: bool,
) -> anyhow::Result<()> {
    loop {
        let resp = client
            .call_json(
                method,
                &json!({"container_id": id, "exec_id": exec_id, "len": READ_LEN}),
            )
            .await?;
        let data = bytes_field(&resp["data"]);
        if data.is_empty() {
            return Ok(());
        }
        if stderr {
            let mut e = std::io::stderr().lock();
            e.write_all(&data)?;
            e.flush()?;
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(&data)?;
            o.flush()?;
        }
    }
}

async fn forward_stdin(client: &AgentClient, id: &str, exec_id: &str) -> anyhow::Result<()> {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; READ_LEN as usize];
    loop {
        let n = stdin.read(&mut buf).await?;
        if n == 0 {
            client
                .call_json(
                    "CloseStdin",
                    &json!({"container_id": id, "exec_id": exec_id}),
                )
                .await?;
            return Ok(());
        }
        client
            .call_json(
                "WriteStdin",
                &json!({"container_id": id, "exec_id": exec_id, "data": &buf[..n]}),
            )
            .await?;
    }
}

/// A `bytes` field of a JSON response (an array of numbers, or a string).
fn bytes_field(v: &Value) -> Vec<u8> {
    match v {
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|b| b as u8))
            .collect(),
        Value::String(s) => s.as_bytes().to_vec(),
        _ => Vec::new(),
    }
}
