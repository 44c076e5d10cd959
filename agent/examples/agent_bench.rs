//! Measurement helper of `bench/agent-bench.sh` (see bench/README.md): talks
//! to a running `guest-agent` through the library's client and prints one
//! line per result, `KIND key=value ...`, for the script to tabulate. It
//! judges nothing: no targets, no assertions, only figures.
//!
//! ```text
//! agent_bench check-latency --addr unix:///tmp/a.sock --n 10000 --warmup 500 --conns 1
//! agent_bench lifecycle --addr unix:///tmp/a.sock --image 127.0.0.1:5000/b/bb:v1 --n 20
//! agent_bench hold --addr unix:///tmp/a.sock --image REF --n 10 --pid 1234 -- sleep 30
//! agent_bench exec-latency --n 20 -- runc run -b BUNDLE {id}
//! agent_bench destroy --addr unix:///tmp/a.sock
//! ```
//!
//! Times are taken with `Instant` around the calls, in this process, so the
//! agent and `runc` figures come from the same clock and the same kind of
//! caller. Percentiles are nearest-rank.

use std::path::PathBuf;
use std::process::{Command as Process, ExitCode, Stdio};
use std::time::{Duration, Instant};

use agent::addr::ServerAddr;
use agent::client::{AgentClient, ConnectOptions};
use agent::protocols::health::CheckRequest;
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

/// Bytes asked for per ReadStdout/ReadStderr (as agentctl).
const READ_LEN: u32 = 32 * 1024;
/// The sandbox the containers belong to.
const SANDBOX: &str = "agent-bench";
/// PATH given to the container processes.
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Agent benchmark helper.
#[derive(Debug, Parser)]
#[command(name = "agent_bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Health.Check round trips: `--conns` connections, each making `--n`
    /// sequential calls after `--warmup` unmeasured ones.
    CheckLatency {
        #[arg(long)]
        addr: ServerAddr,
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        #[arg(long, default_value_t = 500)]
        warmup: usize,
        #[arg(long, default_value_t = 1)]
        conns: usize,
    },
    /// CreateContainer + StartContainer + (ReadStdout/ReadStderr to EOF,
    /// CloseStdin, WaitProcess), then RemoveContainer, `--n` times after
    /// `--warmup` runs (the first one pulls the image if it is not in the
    /// store yet).
    Lifecycle {
        #[arg(long)]
        addr: ServerAddr,
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 20)]
        n: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// Container ID prefix (a run number is appended).
        #[arg(long, default_value_t = default_prefix())]
        id_prefix: String,
        /// Label carried into the output lines.
        #[arg(long, default_value = "agent")]
        label: String,
        /// The process (default /bin/true).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Creates and starts `--n` containers running ARGS, reads VmRSS/VmHWM
    /// of `--pid` (the agent) while they run, then removes them all.
    Hold {
        #[arg(long)]
        addr: ServerAddr,
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 10)]
        n: usize,
        /// The agent's PID.
        #[arg(long)]
        pid: u32,
        /// Wait this long after the last start before reading /proc.
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
        #[arg(long, default_value_t = default_prefix())]
        id_prefix: String,
        /// The process (default sleep 30).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Runs CMD (`{id}` replaced by a fresh ID) `--n` times after `--warmup`
    /// runs, stdio on /dev/null; optionally on a fresh overlay each run
    /// (mkdir upper/work, mount, run, umount: what a snapshotter adds).
    ExecLatency {
        #[arg(long, default_value_t = 20)]
        n: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = default_prefix())]
        id_prefix: String,
        #[arg(long, default_value = "exec")]
        label: String,
        /// Overlay lower dir (read-only image rootfs).
        #[arg(long, requires_all = ["overlay_target", "overlay_scratch"])]
        overlay_lower: Option<PathBuf>,
        /// Where to mount the overlay (the bundle's rootfs).
        #[arg(long)]
        overlay_target: Option<PathBuf>,
        /// Parent of the per-run upper/work dirs.
        #[arg(long)]
        overlay_scratch: Option<PathBuf>,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// DestroySandbox: removes every container of the agent (cleanup).
    Destroy {
        #[arg(long)]
        addr: ServerAddr,
    },
}

fn default_prefix() -> String {
    format!("abench-{}", std::process::id())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let conns = match &cli.command {
        Command::CheckLatency { conns, .. } => *conns,
        _ => 1,
    };
    // One connection: a current-thread runtime, as agentctl. Several: one
    // worker per connection, up to the CPUs there are.
    let runtime = if conns <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(conns.min(cpus))
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent_bench: starting the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::CheckLatency {
            addr,
            n,
            warmup,
            conns,
        } => check_latency(addr, n, warmup, conns.max(1)).await,
        Command::Lifecycle {
            addr,
            image,
            n,
            warmup,
            id_prefix,
            label,
            args,
        } => {
            let args = or_default(args, &["/bin/true"]);
            lifecycle(addr, &image, n, warmup, &id_prefix, &label, &args).await
        }
        Command::Hold {
            addr,
            image,
            n,
            pid,
            settle_ms,
            id_prefix,
            args,
        } => {
            let args = or_default(args, &["sleep", "30"]);
            hold(addr, &image, n, pid, settle_ms, &id_prefix, &args).await
        }
        Command::ExecLatency {
            n,
            warmup,
            id_prefix,
            label,
            overlay_lower,
            overlay_target,
            overlay_scratch,
            cmd,
        } => {
            let overlay = match (overlay_lower, overlay_target, overlay_scratch) {
                (Some(lower), Some(target), Some(scratch)) => Some(Overlay {
                    lower,
                    target,
                    scratch,
                }),
                _ => None,
            };
            exec_latency(n, warmup, &id_prefix, &label, overlay.as_ref(), &cmd)
        }
        Command::Destroy { addr } => {
            let client = connect(addr, Duration::from_secs(30)).await?;
            client.call_json("DestroySandbox", &json!({})).await?;
            Ok(())
        }
    }
}

fn or_default(args: Vec<String>, default: &[&str]) -> Vec<String> {
    if args.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        args
    }
}

async fn connect(addr: ServerAddr, timeout: Duration) -> anyhow::Result<AgentClient> {
    Ok(AgentClient::connect(&ConnectOptions {
        addr,
        hybrid_vsock_port: None,
        timeout: Some(timeout),
    })
    .await?)
}

// ------------------------------------------------------------------ stats

/// Nearest-rank summary of durations.
struct Summary {
    n: usize,
    min: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Summary {
    fn of(samples: &[Duration]) -> Summary {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let n = s.len();
        let rank = |q: f64| {
            if n == 0 {
                Duration::ZERO
            } else {
                s[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
            }
        };
        let total: Duration = s.iter().sum();
        Summary {
            n,
            min: s.first().copied().unwrap_or_default(),
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: s.last().copied().unwrap_or_default(),
            mean: if n == 0 {
                Duration::ZERO
            } else {
                total / n as u32
            },
        }
    }

    /// `name_p50_ms=... name_p90_ms=...` in `unit` (`us` or `ms`).
    fn fields(&self, name: &str, unit: &str) -> String {
        let f = |d: Duration| match unit {
            "us" => format!("{:.1}", d.as_secs_f64() * 1e6),
            _ => format!("{:.3}", d.as_secs_f64() * 1e3),
        };
        format!(
            "{name}_min_{unit}={} {name}_p50_{unit}={} {name}_p90_{unit}={} {name}_p99_{unit}={} {name}_max_{unit}={} {name}_mean_{unit}={}",
            f(self.min),
            f(self.p50),
            f(self.p90),
            f(self.p99),
            f(self.max),
            f(self.mean)
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

// ------------------------------------------------------------------ Check

async fn check_latency(
    addr: ServerAddr,
    n: usize,
    warmup: usize,
    conns: usize,
) -> anyhow::Result<()> {
    let mut clients = Vec::with_capacity(conns);
    for _ in 0..conns {
        clients.push(connect(addr.clone(), Duration::from_secs(10)).await?);
    }
    // Warm every connection, then start all measured loops together.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(conns + 1));
    let mut tasks = Vec::with_capacity(conns);
    for client in clients {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let health = client.health();
            let req = CheckRequest::new();
            for _ in 0..warmup {
                health.check(client.context(), &req).await?;
            }
            barrier.wait().await;
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let resp = health.check(client.context(), &req).await?;
                samples.push(t.elapsed());
                if resp.status.value() != 1 {
                    anyhow::bail!("Check answered status {}", resp.status.value());
                }
            }
            Ok::<_, anyhow::Error>((samples, Instant::now()))
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut all = Vec::with_capacity(n * conns);
    let mut last_end = started;
    for t in tasks {
        let (samples, end) = t.await.context("a Check task panicked")??;
        all.extend(samples);
        last_end = last_end.max(end);
    }
    let wall = last_end - started;
    let s = Summary::of(&all);
    println!(
        "check conns={conns} n_per_conn={n} warmup={warmup} calls={} wall_s={:.3} calls_per_s={:.0} {}",
        s.n,
        wall.as_secs_f64(),
        s.n as f64 / wall.as_secs_f64(),
        s.fields("rtt", "us")
    );
    Ok(())
}

// ------------------------------------------------------------------ containers

/// Durations of one container's life.
struct Run {
    create: Duration,
    start: Duration,
    wait: Duration,
    remove: Duration,
}

impl Run {
    fn to_exit(&self) -> Duration {
        self.create + self.start + self.wait
    }
}

fn container_request(id: &str, image: &str, args: &[String]) -> Value {
    json!({
        "container_id": id,
        "exec_id": id,
        "storages": [{"driver": "image_guest_pull", "source": image}],
        "OCI": {
            "Version": "1.1.0",
            "Process": {"Terminal": false, "Args": args, "Env": [PATH_ENV], "Cwd": "/"},
            "Root": {"Path": "rootfs"},
        },
    })
}

async fn create_sandbox(client: &AgentClient) -> anyhow::Result<()> {
    client
        .call_json("CreateSandbox", &json!({"sandbox_id": SANDBOX}))
        .await?;
    Ok(())
}

/// Reads a stream to EOF (an empty answer); returns the bytes seen.
async fn drain(client: &AgentClient, id: &str, method: &str) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let resp = client
            .call_json(
                method,
                &json!({"container_id": id, "exec_id": "", "len": READ_LEN}),
            )
            .await?;
        let n = match &resp["data"] {
            Value::Array(a) => a.len(),
            Value::String(s) => s.len(),
            _ => 0,
        };
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// One container, as `agentctl run` does it (CreateSandbox aside).
async fn one_run(
    client: &AgentClient,
    id: &str,
    image: &str,
    args: &[String],
) -> anyhow::Result<Run> {
    let t0 = Instant::now();
    client
        .call_json("CreateContainer", &container_request(id, image, args))
        .await
        .with_context(|| format!("creating {id} from {image}"))?;
    let t1 = Instant::now();
    let started = client
        .call_json("StartContainer", &json!({"container_id": id}))
        .await;
    let t2 = Instant::now();
    let waited = match started {
        Ok(_) => {
            let process = json!({"container_id": id, "exec_id": ""});
            let close = client.call_json("CloseStdin", &process);
            let wait = client.call_json("WaitProcess", &process);
            let (o, e, c, w) = tokio::join!(
                drain(client, id, "ReadStdout"),
                drain(client, id, "ReadStderr"),
                close,
                wait
            );
            o.and(e)
                .and(c.map_err(anyhow::Error::from))
                .and(w.map_err(anyhow::Error::from))
        }
        Err(e) => Err(anyhow::Error::from(e).context(format!("starting {id}"))),
    };
    let t3 = Instant::now();
    let removed = client
        .call_json(
            "RemoveContainer",
            &json!({"container_id": id, "timeout": 0}),
        )
        .await;
    let t4 = Instant::now();
    let status = waited?["status"].as_i64().unwrap_or(-1);
    removed.with_context(|| format!("removing {id}"))?;
    if status != 0 {
        bail!("{id}: {args:?} exited with status {status}");
    }
    Ok(Run {
        create: t1 - t0,
        start: t2 - t1,
        wait: t3 - t2,
        remove: t4 - t3,
    })
}

async fn lifecycle(
    addr: ServerAddr,
    image: &str,
    n: usize,
    warmup: usize,
    prefix: &str,
    label: &str,
    args: &[String],
) -> anyhow::Result<()> {
    let client = connect(addr, Duration::from_secs(120)).await?;
    create_sandbox(&client).await?;
    for i in 0..warmup {
        let r = one_run(&client, &format!("{prefix}-w{i}"), image, args).await?;
        println!(
            "lifecycle_warmup label={label} i={i} to_exit_ms={} create_ms={} remove_ms={}",
            ms(r.to_exit()),
            ms(r.create),
            ms(r.remove)
        );
    }
    let mut runs = Vec::with_capacity(n);
    for i in 0..n {
        runs.push(one_run(&client, &format!("{prefix}-{i}"), image, args).await?);
    }
    let pick = |f: fn(&Run) -> Duration| runs.iter().map(f).collect::<Vec<_>>();
    println!(
        "lifecycle label={label} n={n} {} {} {} {} {} {}",
        Summary::of(&pick(Run::to_exit)).fields("to_exit", "ms"),
        Summary::of(&pick(|r| r.create)).fields("create", "ms"),
        Summary::of(&pick(|r| r.start)).fields("start", "ms"),
        Summary::of(&pick(|r| r.wait)).fields("wait", "ms"),
        Summary::of(&pick(|r| r.remove)).fields("remove", "ms"),
        Summary::of(&pick(|r| r.to_exit() + r.remove)).fields("with_remove", "ms"),
    );
    Ok(())
}

/// VmRSS and VmHWM of `pid`, in KiB.
fn rss_of(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

async fn hold(
    addr: ServerAddr,
    image: &str,
    n: usize,
    pid: u32,
    settle_ms: u64,
    prefix: &str,
    args: &[String],
) -> anyhow::Result<()> {
    let client = connect(addr, Duration::from_secs(120)).await?;
    create_sandbox(&client).await?;
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-h{i}")).collect();
    let started = Instant::now();
    let mut up = Vec::new();
    let mut failure = None;
    for id in &ids {
        let r = client
            .call_json("CreateContainer", &container_request(id, image, args))
            .await;
        if let Err(e) = r {
            failure = Some(anyhow::Error::from(e).context(format!("creating {id}")));
            break;
        }
        up.push(id);
        if let Err(e) = client
            .call_json("StartContainer", &json!({"container_id": id}))
            .await
        {
            failure = Some(anyhow::Error::from(e).context(format!("starting {id}")));
            break;
        }
    }
    let start_all = started.elapsed();
    if failure.is_none() {
        tokio::time::sleep(Duration::from_millis(settle_ms)).await;
        let (rss, hwm) = rss_of(pid)?;
        println!(
            "hold n={n} args={:?} start_all_ms={} vmrss_kb={rss} vmhwm_kb={hwm}",
            args.join(" "),
            ms(start_all)
        );
    }
    let t = Instant::now();
    for id in &up {
        let r = client
            .call_json(
                "RemoveContainer",
                &json!({"container_id": id, "timeout": 0}),
            )
            .await;
        if let (Err(e), None) = (r, &failure) {
            failure = Some(anyhow::Error::from(e).context(format!("removing {id}")));
        }
    }
    let remove_all = t.elapsed();
    if let Some(e) = failure {
        return Err(e);
    }
    let (rss, hwm) = rss_of(pid)?;
    println!(
        "hold_removed n={n} remove_all_ms={} vmrss_kb={rss} vmhwm_kb={hwm}",
        ms(remove_all)
    );
    Ok(())
}

// ------------------------------------------------------------------ exec

struct Overlay {
    lower: PathBuf,
    target: PathBuf,
    scratch: PathBuf,
}

fn mount_overlay(o: &Overlay, id: &str) -> anyhow::Result<()> {
    use std::ffi::CString;
    let dir = o.scratch.join(id);
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        o.lower.display(),
        upper.display(),
        work.display()
    );
    let c = |s: &str| CString::new(s).context("a NUL in a mount argument");
    let (src, target, fstype, data) = (
        c("overlay")?,
        c(&o.target.to_string_lossy())?,
        c("overlay")?,
        c(&data)?,
    );
    // SAFETY: every pointer is a NUL-terminated CString that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mounting an overlay at {}", o.target.display()));
    }
    Ok(())
}

fn umount(target: &std::path::Path) -> anyhow::Result<()> {
    let t = std::ffi::CString::new(target.to_string_lossy().as_bytes())?;
    // SAFETY: `t` is a NUL-terminated CString that outlives the call.
    if unsafe { libc::umount2(t.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("unmounting {}", target.display()));
    }
    Ok(())
}

fn exec_once(overlay: Option<&Overlay>, cmd: &[String], id: &str) -> anyhow::Result<Duration> {
    let argv: Vec<String> = cmd.iter().map(|a| a.replace("{id}", id)).collect();
    let t = Instant::now();
    if let Some(o) = overlay {
        mount_overlay(o, id)?;
    }
    let status = Process::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", argv[0]));
    let unmounted = overlay.map(|o| umount(&o.target)).transpose();
    let elapsed = t.elapsed();
    if let Some(o) = overlay {
        let _ = std::fs::remove_dir_all(o.scratch.join(id));
    }
    let status = status?;
    unmounted?;
    if !status.success() {
        bail!("{argv:?}: {status}");
    }
    Ok(elapsed)
}

fn exec_latency(
    n: usize,
    warmup: usize,
    prefix: &str,
    label: &str,
    overlay: Option<&Overlay>,
    cmd: &[String],
) -> anyhow::Result<()> {
    for i in 0..warmup {
        let d = exec_once(overlay, cmd, &format!("{prefix}-w{i}"))?;
        println!("exec_warmup label={label} i={i} ms={}", ms(d));
    }
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        samples.push(exec_once(overlay, cmd, &format!("{prefix}-{i}"))?);
    }
    println!(
        "exec label={label} n={n} {}",
        Summary::of(&samples).fields("run", "ms")
    );
    Ok(())
}
