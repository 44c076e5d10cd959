//! `dev-kbs`: a **development** Key Broker Service speaking Trustee's KBS
//! protocol 0.4.0, for tests and demos on machines without a TEE.
//!
//! # It verifies NO hardware evidence
//!
//! The only evidence it accepts is the `sample` TEE's, which any process can
//! forge: it checks that the sample evidence's `report_data` is bound to the
//! session (nonce + the guest's ephemeral key), and nothing else. Anything
//! it serves is therefore available to anyone who can reach it. Never put a
//! real secret in its resource directory, and never point a production guest
//! at it.
//!
//! What it does match, byte for byte, is the wire protocol of a stock
//! Trustee KBS (paths, cookies, error `type`/`detail` texts, status codes,
//! the EAR-shaped ES256 token and the JWE resource responses), so the
//! Sealpod KBS client and the upstream clients can be exercised against it.
//!
//! Layout: [`server`] routes and answers requests, [`session`] keeps the RCAR
//! sessions, [`verify`] checks sample evidence, [`token`] signs and verifies
//! the attestation tokens, [`policy`] decides resource access, [`resources`]
//! reads and writes the resource files, [`tls`] optionally wraps the listener.

mod policy;
mod resources;
mod server;
mod session;
mod tls;
mod token;
mod verify;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::builder::TypedValueParser as _;
use clap::Parser;
use tracing::{info, warn};

use crate::policy::Policy;
use crate::resources::ResourceStore;
use crate::server::AppState;
use crate::session::Sessions;
use crate::token::TokenSigner;

/// Default cap on live sessions (each is a few hundred bytes plus its token).
const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "dev-kbs",
    version,
    about = "A DEVELOPMENT Key Broker Service (Trustee KBS protocol 0.4.0). It verifies NO hardware evidence: it accepts only the forgeable `sample` TEE.",
    long_about = "A DEVELOPMENT Key Broker Service speaking Trustee's KBS protocol 0.4.0, for tests and demos on machines without a TEE.\n\n\
WARNING: it verifies NO hardware evidence. The only evidence it accepts is the `sample` TEE's, which any process can forge; it only checks that the evidence is bound to the session's nonce and key. Everything it serves is available to anyone who can reach it: never give it real secrets, never use it in production.\n\n\
Endpoints (as a stock KBS): POST /kbs/v0/auth, POST /kbs/v0/attest, GET /kbs/v0/resource/<repository>/<type>/<tag> (session cookie or `Authorization: Bearer <token>`), GET /healthz; with --admin-token also POST/DELETE /kbs/v0/resource/<repository>/<type>/<tag>.\n\n\
Resource <repository>/<type>/<tag> is the file DIR/<repository>/<type>/<tag>; the answer is a JWE encrypted to the key the guest bound into its evidence.\n\n\
Prints `listening on http(s)://ADDR` on stdout once the socket is bound; logs go to stderr (RUST_LOG, default info)."
)]
struct Args {
    /// Address to listen on; port 0 picks a free port (the real one is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Directory of resources: DIR/<repository>/<type>/<tag>.
    #[arg(long, value_name = "DIR")]
    resources: PathBuf,

    /// Resource policy: `allow-all`, `deny-sample` (what a stock KBS's
    /// default policy does; with dev-kbs it denies everything) or a `.rego`
    /// file (package `policy`, rule `allow`; input = token claims, data =
    /// {"plugin","resource-path","query"}).
    #[arg(
        long,
        value_name = "allow-all|deny-sample|FILE.rego",
        default_value = "allow-all"
    )]
    policy: String,

    /// Lifetime of the attestation tokens, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    token_ttl: u64,

    /// Lifetime of a session cookie from /auth, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400 * 365))]
    session_ttl: u64,

    /// Most live sessions kept; the oldest are dropped beyond it.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SESSIONS,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000).map(|n| n as usize))]
    max_sessions: usize,

    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Enables the admin resource writes (POST/DELETE /kbs/v0/resource/...)
    /// for requests with `Authorization: Bearer <this token>`.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "DEV_KBS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    warn!(
        "dev-kbs is a DEVELOPMENT KBS: it verifies NO hardware evidence and accepts only the \
         forgeable `sample` TEE; every resource under {} is available to anyone who can reach it. \
         Never use it with real secrets or in production.",
        args.resources.display()
    );

    if args.admin_token.as_deref().is_some_and(str::is_empty) {
        bail!("--admin-token must not be empty");
    }
    let resources = ResourceStore::open(&args.resources)
        .with_context(|| format!("resource directory {}", args.resources.display()))?;
    let policy = Policy::load(&args.policy).context("loading the resource policy")?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key).context("loading TLS")?),
        _ => None,
    };

    let state = Arc::new(AppState {
        sessions: Sessions::new(Duration::from_secs(args.session_ttl), args.max_sessions),
        signer: TokenSigner::generate(Duration::from_secs(args.token_ttl)),
        policy,
        resources,
        admin_token: args.admin_token.clone(),
    });
    info!(
        policy = %state.policy,
        token_ttl = args.token_ttl,
        session_ttl = args.session_ttl,
        admin = state.admin_token.is_some(),
        "configuration"
    );

    // Expired sessions are also dropped when new ones are made; this keeps
    // an idle server tidy.
    let purger = Arc::clone(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            purger.sessions.purge_expired();
        }
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let app = server::router(state);
    match tls {
        Some(acceptor) => {
            let listener = tls::TlsListener::spawn(listener, acceptor);
            announce("https", addr);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serving")?;
        }
        None => {
            announce("http", addr);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown_signal())
                .await
                .context("serving")?;
        }
    }
    info!("stopped");
    Ok(())
}

/// Tells whoever started us (tests, scripts) where we listen: one stdout line.
fn announce(scheme: &str, addr: SocketAddr) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    // If stdout is closed nobody is waiting for the line; keep serving.
    let _ = writeln!(out, "listening on {scheme}://{addr}");
    let _ = out.flush();
    info!("listening on {scheme}://{addr}");
}

/// Resolves on Ctrl-C or SIGTERM, for a clean shutdown.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    info!("shutting down");
}
