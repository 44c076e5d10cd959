//! `guest-agent`: Sealpod's in-guest agent. Serves the Kata agent protocol
//! on `vsock://-1:1024` (or `--server-addr`), every request gated by the
//! agent policy.

use std::path::PathBuf;
use std::sync::Arc;

use agent::addr::ServerAddr;
use agent::config::{AgentConfig, EnvVars, Overrides};
use agent::logging::{self, LogLevel};
use agent::policy::Policy;
use agent::server::AgentServer;
use agent::state::AgentState;
use anyhow::Context as _;
use attestation::initdata::{self, InitData};
use clap::Parser;

/// Sealpod guest agent (Kata agent protocol over ttrpc).
#[derive(Debug, Parser)]
#[command(name = "guest-agent", version)]
struct Cli {
    /// Listen address: vsock://CID:PORT (-1 = any CID), unix:///PATH or unix://@NAME.
    /// Overrides agent.server_addr, KATA_AGENT_SERVER_ADDR and the config file.
    #[arg(long, value_name = "ADDR")]
    server_addr: Option<ServerAddr>,
    /// TOML configuration file (same keys as the agent.* kernel parameters).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Agent state directory [default: /run/sealpod].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The only directory CopyFile writes below [default: STATE_DIR/shared/containers].
    #[arg(long, value_name = "DIR")]
    shared_dir: Option<PathBuf>,
    /// Initial agent policy (Rego, package agent_policy). Without one every request is allowed.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Initdata TOML (measured pod configuration: policy.rego, aa.toml, ...).
    /// As the VM's init, the agent also looks for an initdata block device.
    #[arg(long, value_name = "FILE")]
    initdata: Option<PathBuf>,
    /// trace, debug, info, warn or error (overrides agent.log).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<LogLevel>,
    /// Kernel command line to read agent.* parameters from.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/proc/cmdline",
        hide = true
    )]
    cmdline_file: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(agent::container::runtime::HELPER_ARG) {
        runtime_helper(&args[2..]);
    }
    if agent::init::is_pid1() {
        pid1_main();
    }
    let cli = Cli::parse();
    let config = load_config(&cli)?;
    logging::init(config.log_level);

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(config, cli.initdata))
}

/// The configuration from the kernel command line (or `--cmdline-file`),
/// the environment and the flags.
fn load_config(cli: &Cli) -> anyhow::Result<AgentConfig> {
    // A guest without /proc mounted yet simply has no cmdline parameters.
    let cmdline = std::fs::read_to_string(&cli.cmdline_file).ok();
    let overrides = Overrides {
        server_addr: cli.server_addr.clone(),
        log_level: cli.log_level,
        state_dir: cli.state_dir.clone(),
        shared_dir: cli.shared_dir.clone(),
        policy_file: cli.policy.clone(),
        config_file: cli.config.clone(),
    };
    AgentConfig::load(cmdline.as_deref(), &EnvVars::from_process(), &overrides)
        .context("building the agent configuration")
}

/// The agent as the VM's init: prepares the guest (new root, mounts,
/// modules; see `agent::init`), serves, and powers the VM off when serving
/// ends for any reason (DestroySandbox powers off from its handler). Never
/// returns: a PID 1 that exits panics the kernel.
fn pid1_main() -> ! {
    let report = agent::init::setup(
        &agent::init::LinuxSyscall,
        std::path::Path::new(agent::init::modules::MODULE_LIST),
    );
    // The kernel hands init the words of its command line it does not know:
    // they are not guest-agent flags.
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        eprintln!("guest-agent: ignoring init arguments: {e}");
        Cli::parse_from(["guest-agent"])
    });
    let result = std::panic::catch_unwind(|| -> anyhow::Result<()> {
        let config = match load_config(&cli) {
            Ok(c) => c,
            Err(e) => {
                logging::init(LogLevel::Info);
                return Err(e);
            }
        };
        logging::init(config.log_level);
        tracing::info!(
            switched_root = report.switched_root,
            mounted = report.mounted.len(),
            modules_loaded = ?report.modules.loaded,
            modules_failed = ?report.modules.failed,
            "guest-agent is the VM's init"
        );
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(run(config, cli.initdata.clone()))
    });
    match result {
        Ok(Ok(())) => tracing::info!("the agent stopped"),
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "the agent failed"),
        Err(_) => tracing::error!("the agent panicked"),
    }
    agent::init::shutdown::power_off()
}

/// The agent re-executed as a single-threaded runtime helper (see
/// `agent::container::runtime`): one libcontainer operation, its result on
/// stdout, its error on stderr.
fn runtime_helper(args: &[String]) -> ! {
    logging::init(LogLevel::Warn);
    match agent::container::runtime::helper_main(args) {
        Ok(out) => {
            println!("{out}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}

/// Initdata from `--initdata`, or (as the VM's init) from a block device
/// whose first bytes are the initdata magic.
fn load_initdata(file: Option<PathBuf>) -> anyhow::Result<Option<InitData>> {
    if let Some(f) = file {
        return Ok(Some(InitData::from_file(&f)?));
    }
    if agent::guest::is_init_process() {
        if let Some(dev) = initdata::find_device(std::path::Path::new("/dev"))? {
            return Ok(Some(InitData::from_device(&dev)?));
        }
    }
    Ok(None)
}

async fn run(config: AgentConfig, initdata_file: Option<PathBuf>) -> anyhow::Result<()> {
    tracing::info!(
        version = agent::AGENT_VERSION,
        server_addr = %config.server_addr,
        state_dir = %config.state_dir.display(),
        shared_dir = %config.shared_dir.display(),
        config_file = ?config.config_file,
        "starting guest-agent"
    );
    let initdata = load_initdata(initdata_file).context("reading initdata")?;
    if let Some(d) = &initdata {
        tracing::info!(origin = d.origin(), digest = %hex::encode(d.digest()), "initdata loaded");
    }
    // Refuses to start when initdata does not match the TEE's launch field.
    let kbs = agent::guest_pull::attestation(&config, initdata.as_ref())
        .context("initdata and attestation")?;
    let image_policy = agent::guest_pull::image_policy(&config, initdata.as_ref())
        .context("the image signature policy")?;
    let initdata_policy = initdata.as_ref().and_then(|d| d.policy_rego());
    let policy = match (initdata_policy, &config.policy_file) {
        (Some(rego), _) => {
            let p = Policy::from_rego("initdata policy.rego", rego)
                .context("loading the agent policy from initdata")?;
            tracing::info!("agent policy loaded from initdata (measured)");
            p
        }
        (None, Some(path)) => {
            let p = Policy::from_file(path)
                .with_context(|| format!("loading the agent policy {}", path.display()))?;
            tracing::info!(path = %path.display(), "agent policy loaded");
            p
        }
        (None, None) => {
            tracing::info!("no agent policy configured: every request is allowed until SetPolicy");
            Policy::allow_all()
        }
    };
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("creating the state dir {}", config.state_dir.display()))?;

    let addr = config.server_addr.clone();
    let state = Arc::new(AgentState::with_guest_pull(
        config,
        policy,
        kbs,
        image_policy,
    ));
    state
        .reaper
        .spawn()
        .context("installing the SIGCHLD reaper")?;
    let mut server = AgentServer::bind(&addr, state)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    server.start().await.context("starting the ttrpc server")?;

    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
