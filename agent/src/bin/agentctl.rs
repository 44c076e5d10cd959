//! `agentctl`: talk to a Sealpod (or Kata) guest agent from the host.
//!
//! ```text
//! agentctl --addr unix:///run/agent.sock check
//! agentctl --addr /run/vm.vsock --hybrid-vsock version
//! agentctl --addr vsock://3:1024 call GetGuestDetails '{"mem_block_size": true}'
//! ```
//!
//! Each subcommand is one variant of [`Command`] and one function; container
//! commands (run, exec, kill, rm) slot in the same way.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[path = "agentctl/containers.rs"]
mod containers;

use agent::addr::ServerAddr;
use agent::client::{AgentClient, ConnectOptions};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Host-side client of the Kata agent protocol.
#[derive(Debug, Parser)]
#[command(name = "agentctl", version)]
struct Cli {
    /// Agent address: unix:///PATH, unix://@NAME or vsock://CID:PORT
    /// (with --hybrid-vsock: the VMM's unix socket).
    #[arg(long, value_name = "ADDR")]
    addr: ServerAddr,
    /// The address is a Firecracker/Cloud Hypervisor hybrid-vsock socket.
    #[arg(long)]
    hybrid_vsock: bool,
    /// Guest vsock port to CONNECT to through --hybrid-vsock.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1024,
        requires = "hybrid_vsock"
    )]
    hybrid_vsock_port: u32,
    /// Seconds to wait for the connection and for each call (0 = forever).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Health.Check: is the agent serving?
    Check,
    /// Health.Version: agent and protocol versions.
    Version,
    /// GetGuestDetails (with the memory block size and hotplug probe).
    GuestDetails,
    /// GetMetrics, printed as Prometheus text.
    Metrics,
    /// SetPolicy from a Rego file.
    SetPolicy {
        /// Policy file (package agent_policy).
        file: PathBuf,
    },
    /// Run IMAGE in a new container (pulled in the guest), stream its
    /// output, wait, remove it, and exit with its status.
    Run {
        /// Container ID (default: a random one).
        #[arg(long)]
        id: Option<String>,
        /// Give the process a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Forward this program's stdin to the process.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Environment variable K=V (repeatable).
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        /// Keep the container after it exits.
        #[arg(long)]
        keep: bool,
        /// The image reference (pulled by the guest).
        image: String,
        /// Command and arguments (default: the image's entrypoint and cmd).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run a command in a running container and exit with its status.
    Exec {
        /// Container ID.
        id: String,
        /// Give the process a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Forward this program's stdin to the process.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Send a signal to every process of a container.
    Kill {
        /// Container ID.
        id: String,
        /// Signal number (default 15, SIGTERM).
        #[arg(default_value_t = 15)]
        signal: u32,
    },
    /// Remove a container (killing what is left).
    Rm {
        /// Container ID.
        id: String,
    },
    /// Any AgentService or Health method, JSON in and out (proto field names).
    Call {
        /// Method name, e.g. ListInterfaces or grpc.Health/Check.
        method: String,
        /// Request as JSON (default {}).
        #[arg(default_value = "{}")]
        request: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentctl: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agentctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = ConnectOptions {
        addr: cli.addr.clone(),
        hybrid_vsock_port: cli.hybrid_vsock.then_some(cli.hybrid_vsock_port),
        timeout: (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout)),
    };
    let client = AgentClient::connect(&opts).await?;
    match cli.command {
        Command::Check => print_call(&client, "grpc.Health/Check", json!({})).await,
        Command::Version => print_call(&client, "grpc.Health/Version", json!({})).await,
        Command::GuestDetails => {
            let req = json!({"mem_block_size": true, "mem_hotplug_probe": true});
            print_call(&client, "GetGuestDetails", req).await
        }
        Command::Metrics => {
            let resp = client.call_json("GetMetrics", &json!({})).await?;
            print!("{}", resp["metrics"].as_str().unwrap_or_default());
            Ok(())
        }
        Command::SetPolicy { file } => {
            let policy = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            print_call(&client, "SetPolicy", json!({ "policy": policy })).await
        }
        Command::Run {
            id,
            tty,
            interactive,
            env,
            keep,
            image,
            args,
        } => {
            let streaming = AgentClient::connect(&ConnectOptions {
                timeout: None,
                ..opts.clone()
            })
            .await?;
            let id = id.unwrap_or_else(random_id);
            let code = containers::run(
                &streaming,
                &containers::RunOptions {
                    id,
                    image,
                    args,
                    env,
                    tty,
                    interactive,
                    keep,
                },
            )
            .await?;
            std::process::exit(code);
        }
        Command::Exec {
            id,
            tty,
            interactive,
            args,
        } => {
            let streaming = AgentClient::connect(&ConnectOptions {
                timeout: None,
                ..opts.clone()
            })
            .await?;
            let code =
                containers::exec(&streaming, &id, &random_id(), args, tty, interactive).await?;
            std::process::exit(code);
        }
        Command::Kill { id, signal } => {
            client
                .call_json(
                    "SignalProcess",
                    &json!({"container_id": id, "exec_id": "", "signal": signal}),
                )
                .await?;
            Ok(())
        }
        Command::Rm { id } => {
            client
                .call_json(
                    "RemoveContainer",
                    &json!({"container_id": id, "timeout": 0}),
                )
                .await?;
            Ok(())
        }
        Command::Call { method, request } => {
            let req: Value = serde_json::from_str(&request)
                .with_context(|| format!("the request is not JSON: {request}"))?;
            print_call(&client, &method, req).await
        }
    }
}

/// A random container or exec ID.
fn random_id() -> String {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read as _;
        let _ = f.read_exact(&mut b);
    }
    format!(
        "ctl-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

async fn print_call(client: &AgentClient, method: &str, req: Value) -> anyhow::Result<()> {
    let resp = client.call_json(method, &req).await?;
    println!("{}", serde_json::to_string_pretty(&resp)?);
    Ok(())
}
