//! `attestation-agent`: the guest side of remote attestation as a command:
//! print the TEE's evidence, attest to a KBS and print the token, or fetch a
//! secret (`kbs:///repo/type/tag`) that the KBS releases only to an attested
//! guest.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use attestation::attester::{self, AttesterConfig, TeeChoice};
use attestation::initdata::{self, Binding, InitData};
use attestation::kbs::{KbsClient, KbsConfig};
use attestation::tee_key::TeeKeyAlgorithm;
use clap::{Args, Parser, Subcommand};
use image_rs::ocicrypt::provider::ResourceUri;

/// Remote attestation for a confidential guest: TEE evidence and a KBS
/// client (KBS protocol 0.4.0, as Trustee's KBS speaks it).
#[derive(Debug, Parser)]
#[command(name = "attestation-agent", version)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `attestation=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Attest to the KBS and write the resource's bytes to stdout.
    GetResource {
        #[command(flatten)]
        kbs: KbsArgs,
        /// The resource: kbs:///REPOSITORY/TYPE/TAG.
        resource: String,
    },
    /// Attest to the KBS and print the attestation token.
    Token {
        #[command(flatten)]
        kbs: KbsArgs,
    },
    /// Write the initdata disk image for a TOML initdata file (what a VMM
    /// attaches as a read-only virtio-blk disk), and print the document's
    /// digest in hex (what goes into SNP HOST_DATA / TDX MRCONFIGID).
    InitdataDisk {
        /// The initdata TOML.
        #[arg(long)]
        initdata: PathBuf,
        /// The disk image to write.
        #[arg(long)]
        output: PathBuf,
    },
    /// Print the TEE's evidence (JSON) binding the given report data.
    Evidence {
        #[command(flatten)]
        tee: TeeArgs,
        /// Report data to bind, hex (at most 64 bytes).
        #[arg(long)]
        report_data: String,
    },
}

#[derive(Debug, Args)]
struct TeeArgs {
    /// The TEE: auto (detect; fails without one), snp, tdx, or sample
    /// (development only: its evidence proves nothing).
    #[arg(long, default_value = "auto", env = "SEALPOD_TEE")]
    tee: TeeChoice,
    /// For the sample TEE only: the launch-bound field the "host" set, hex
    /// (what initdata's digest is checked against).
    #[arg(long, env = "SEALPOD_SAMPLE_LAUNCH_CONFIG", value_name = "HEX")]
    sample_launch_config: Option<String>,
}

#[derive(Debug, Args)]
struct KbsArgs {
    /// The KBS base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "SEALPOD_KBS_URL")]
    kbs_url: String,
    /// Extra CA certificate(s) (PEM) to trust for an HTTPS KBS.
    #[arg(long, value_name = "PEM")]
    kbs_ca: Option<PathBuf>,
    #[command(flatten)]
    tee: TeeArgs,
    /// Initdata TOML to send to the KBS (and check against the TEE).
    #[arg(long, value_name = "FILE")]
    initdata: Option<PathBuf>,
    /// Ephemeral key: ec (P-256, ECDH-ES+A256KW) or rsa (RSA-OAEP-256).
    #[arg(long, default_value = "ec")]
    tee_key: TeeKeyAlgorithm,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

fn attester_from(args: &TeeArgs) -> Result<Arc<dyn attestation::Attester>> {
    let sample_launch_config = args
        .sample_launch_config
        .as_deref()
        .map(hex::decode)
        .transpose()
        .context("--sample-launch-config is not hex")?;
    let config = AttesterConfig {
        // Naming the sample TEE on the command line is the explicit request.
        allow_sample: args.tee == TeeChoice::Sample,
        sample_launch_config,
        ..AttesterConfig::default()
    };
    Ok(Arc::from(attester::detect(args.tee, &config)?))
}

fn client_from(args: &KbsArgs) -> Result<KbsClient> {
    let attester = attester_from(&args.tee)?;
    let mut config = KbsConfig::new(args.kbs_url.clone());
    config.tee_key = args.tee_key;
    config.timeout = Duration::from_secs(args.timeout.max(1));
    if let Some(ca) = &args.kbs_ca {
        config.ca_pem =
            Some(std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    if let Some(path) = &args.initdata {
        let initdata = InitData::from_file(path)?;
        // Refuse to hand the KBS initdata this TEE was not launched with.
        match initdata::check_binding(attester.as_ref(), &initdata)? {
            Binding::Bound => tracing::info!("initdata is bound to the TEE's launch measurement"),
            Binding::Unsupported => {}
        }
        config.initdata = Some(initdata.to_payload());
    }
    Ok(KbsClient::new(config, attester)?)
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::GetResource { kbs, resource } => {
            let uri = ResourceUri::parse(&resource)?;
            let client = client_from(&kbs)?;
            let bytes = client.get_resource(&uri).await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
        Command::Token { kbs } => {
            let client = client_from(&kbs)?;
            let token = client.attest().await?;
            println!("{}", token.as_str());
        }
        Command::InitdataDisk { initdata, output } => {
            let toml = std::fs::read(&initdata)
                .with_context(|| format!("reading {}", initdata.display()))?;
            let doc =
                attestation::initdata::InitData::parse(&toml, &initdata.display().to_string())?;
            let image = attestation::initdata::device_image(&toml)?;
            std::fs::write(&output, image)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("{}", hex::encode(doc.digest()));
        }
        Command::Evidence { tee, report_data } => {
            let rd = hex::decode(report_data.trim()).context("--report-data is not hex")?;
            if rd.len() > attester::REPORT_DATA_LEN {
                bail!(
                    "--report-data is {} bytes; at most {} fit the report",
                    rd.len(),
                    attester::REPORT_DATA_LEN
                );
            }
            let attester = attester_from(&tee)?;
            let ev = tokio::task::spawn_blocking(move || attester.evidence(&rd)).await??;
            println!("{}", serde_json::to_string_pretty(&ev)?);
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("attestation-agent: error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("attestation-agent: error: {e:#}");
        std::process::exit(1);
    }
}
