//! `image-rs`: pull OCI images into a verified store and assemble rootfs
//! directories. A thin command-line layer over the `image_rs` library.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use image_rs::progress::{ProgressEvent, ProgressSink};
use image_rs::registry::Login;
use image_rs::unpack::Limits;
use image_rs::{
    Credentials, Layout, Platform, PullOptions, Puller, Reference, RegistryClient, RegistryConfig,
    SignaturePolicy, SignatureVerifier, Store,
};
use zeroize::Zeroizing;

const DEFAULT_STORE: &str = "/var/lib/sealpod/image-rs";

/// Pull, verify and unpack OCI container images, as a confidential guest
/// does: every manifest, config and layer is checked against its digest
/// before use, and layers are unpacked as hostile input.
#[derive(Parser, Debug)]
#[command(name = "image-rs", version, about, long_about = None)]
struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, env = "IMAGE_RS_LOG", default_value = "warn")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Pull an image and assemble its root filesystem.
    Pull(PullArgs),
    /// List the images in the store (reference, manifest digest, size).
    Images {
        /// Store directory.
        #[arg(long, env = "IMAGE_RS_STORE", default_value = DEFAULT_STORE)]
        store: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Copy an image between a registry and an OCI layout, encrypting layers
    /// for the given recipients (like skopeo copy --encryption-key) and
    /// optionally signing it (--sign-by-sigstore-private-key).
    Copy(CopyArgs),
    /// Check an image against a signature policy without pulling its layers;
    /// prints what was accepted (or fails with why not).
    Verify(VerifyArgs),
    /// List what refers to an image (signatures, SBOMs, attestations): the
    /// OCI referrers API, or its sha256-<hex> fallback tag.
    Referrers(ReferrersArgs),
    /// Make a sigstore signing key pair like `skopeo generate-sigstore-key`:
    /// PREFIX.private (cosign encrypted format) and PREFIX.pub (PEM).
    GenerateSigstoreKey {
        /// Output file name prefix.
        #[arg(long, value_name = "PREFIX")]
        output_prefix: PathBuf,
        /// File holding the passphrase (first line); default: stdin.
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Remove layers and blobs no image in the store references.
    Gc {
        /// Store directory.
        #[arg(long, env = "IMAGE_RS_STORE", default_value = DEFAULT_STORE)]
        store: PathBuf,
    },
    /// Unmount an overlay rootfs made by `pull --layout overlay` and free its
    /// private upper directory.
    Unmount {
        /// The rootfs mount point.
        #[arg(long)]
        rootfs: PathBuf,
        /// Store directory.
        #[arg(long, env = "IMAGE_RS_STORE", default_value = DEFAULT_STORE)]
        store: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct PullArgs {
    /// Image reference: [REGISTRY/]NAME[:TAG][@DIGEST].
    reference: String,
    /// Where the root filesystem goes (absent or an empty directory).
    #[arg(long)]
    rootfs: PathBuf,
    /// flat: a plain directory tree; overlay: an overlayfs mount over the
    /// shared store layers with a private upper dir.
    #[arg(long, value_enum, default_value_t = LayoutArg::Overlay)]
    layout: LayoutArg,
    /// Store directory (layers are kept there and shared between images).
    #[arg(long, env = "IMAGE_RS_STORE", default_value = DEFAULT_STORE)]
    store: PathBuf,
    /// Talk plain HTTP to the registry (loopback registries fall back to it
    /// on their own).
    #[arg(long)]
    plain_http: bool,
    /// Extra CA certificate(s) to trust, PEM (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_files: Vec<PathBuf>,
    /// docker config.json or containers auth.json with registry logins
    /// (default: $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.docker/config.json).
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Registry user name (the password is read from stdin).
    #[arg(long, requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password from standard input.
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Platform to pick from a multi-platform image: OS/ARCH[/VARIANT]
    /// (default: this machine's).
    #[arg(long)]
    platform: Option<String>,
    /// Layers downloaded and unpacked at the same time.
    #[arg(long, default_value_t = 3)]
    max_concurrent: usize,
    /// Progress display on stderr: auto (live on a terminal, plain lines
    /// otherwise), plain, json (one event per line) or none.
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    progress: ProgressArg,
    /// Largest unpacked size of one layer, in bytes (decompression bombs).
    #[arg(long, default_value_t = Limits::default().max_layer_bytes)]
    max_layer_bytes: u64,
    /// Most tar entries in one layer.
    #[arg(long, default_value_t = Limits::default().max_entries)]
    max_entries: u64,
    /// Create device nodes found in layers (skipped by default).
    #[arg(long)]
    allow_devices: bool,
    /// Private key for encrypted layers (JWE recipients): PEM PKCS#8, PKCS#1
    /// or SEC1, optionally FILE:PASSWORD for an encrypted PKCS#8 key
    /// (repeatable; every key is tried on every recipient).
    #[arg(long = "decryption-key", value_name = "FILE[:PASSWORD]")]
    decryption_keys: Vec<String>,
    /// Directory laid out as REPO/TYPE/TAG holding key-encryption keys for
    /// Confidential Containers key-provider layers (kid kbs:///REPO/TYPE/TAG);
    /// for development and tests: in a guest the KBS provides them.
    #[arg(long, value_name = "DIR")]
    key_provider_dir: Option<PathBuf>,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Signature policy options (shared by pull and verify).
#[derive(clap::Args, Debug)]
struct PolicyArgs {
    /// Signature policy, containers-policy.json(5) format: default and
    /// transports.docker scopes with insecureAcceptAnything, reject,
    /// sigstoreSigned (keyPath may be kbs:///REPO/TYPE/TAG, resolved through
    /// --key-provider-dir) and signedBy (GPG). Checked before any layer is
    /// fetched. Without it every image is accepted (with a warning).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// registries.d directory (YAML): where GPG signatures are looked up
    /// (lookaside storage, file:// or http(s)://).
    #[arg(long = "registries-d", value_name = "DIR")]
    registries_d: Option<PathBuf>,
}

/// Registry connection options (shared by verify and referrers).
#[derive(clap::Args, Debug)]
struct RegistryArgs {
    /// Talk plain HTTP to the registry.
    #[arg(long)]
    plain_http: bool,
    /// Extra CA certificate(s) to trust, PEM (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_files: Vec<PathBuf>,
    /// docker config.json or containers auth.json with registry logins.
    #[arg(long)]
    auth_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// Image reference: [REGISTRY/]NAME[:TAG][@DIGEST].
    reference: String,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Directory laid out as REPO/TYPE/TAG serving kbs:/// policy keys
    /// (development; in a guest the KBS provides them).
    #[arg(long, value_name = "DIR")]
    key_provider_dir: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct ReferrersArgs {
    /// Image reference: [REGISTRY/]NAME[:TAG][@DIGEST].
    reference: String,
    /// Only referrers of this artifact type (e.g. application/spdx+json).
    #[arg(long, value_name = "TYPE")]
    artifact_type: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct CopyArgs {
    /// Source: docker://REF or oci:DIR[:TAG].
    source: String,
    /// Destination: docker://REF or oci:DIR[:TAG].
    destination: String,
    /// Recipient of the encrypted layers (repeatable): jwe:PUBLIC.pem (RSA or
    /// EC public key) or provider:kbs:///REPO/TYPE/TAG=KEKFILE (Confidential
    /// Containers key provider; KEKFILE holds the 32-byte key the KBS serves).
    #[arg(long = "encryption-key", value_name = "RECIPIENT")]
    encryption_keys: Vec<String>,
    /// Encrypt only this layer (0-based; -1 is the last; repeatable).
    /// Default: all layers.
    #[arg(
        long = "encrypt-layer",
        value_name = "N",
        allow_negative_numbers = true
    )]
    encrypt_layers: Vec<i64>,
    /// Platform to pick when the source is a multi-platform index.
    #[arg(long)]
    platform: Option<String>,
    /// Talk plain HTTP to registries.
    #[arg(long)]
    plain_http: bool,
    /// Extra CA certificate(s) to trust, PEM (repeatable).
    #[arg(long = "ca-file", value_name = "PEM")]
    ca_files: Vec<PathBuf>,
    /// docker config.json or containers auth.json with registry logins.
    #[arg(long)]
    auth_file: Option<PathBuf>,
    /// Sign the written image with this cosign/sigstore private key
    /// (ENCRYPTED SIGSTORE/COSIGN PRIVATE KEY PEM) and store the signature
    /// at the destination's sha256-<hex>.sig tag, as skopeo does.
    #[arg(long, value_name = "KEY")]
    sign_by_sigstore_private_key: Option<PathBuf>,
    /// File holding the signing key's passphrase (first line); default:
    /// read it from standard input.
    #[arg(long, value_name = "FILE", requires = "sign_by_sigstore_private_key")]
    sign_passphrase_file: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LayoutArg {
    Flat,
    Overlay,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
enum ProgressArg {
    Auto,
    Plain,
    Json,
    None,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("{e}");
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            let _ = writeln!(
                std::io::stderr(),
                "image-rs: error: {}",
                msg.replace('\n', " ")
            );
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::io::stderr().is_terminal() {
        b.init();
    } else {
        b.json().init();
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Pull(args) => rt.block_on(pull(args)),
        Command::Copy(args) => rt.block_on(copy(args)),
        Command::Verify(args) => rt.block_on(verify(args)),
        Command::GenerateSigstoreKey {
            output_prefix,
            passphrase_file,
        } => generate_key(&output_prefix, passphrase_file.as_deref()),
        Command::Referrers(args) => rt.block_on(referrers(args)),
        Command::Images { store, json } => {
            let store = Store::open(&store)
                .with_context(|| format!("opening store {}", store.display()))?;
            let images = store.images()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&images)?);
            } else {
                println!(
                    "{:<50} {:<75} {:>12}",
                    "REFERENCE", "MANIFEST DIGEST", "SIZE"
                );
                for i in images {
                    println!(
                        "{:<50} {:<75} {:>12}",
                        i.reference,
                        i.manifest_digest.to_string(),
                        human(i.size())
                    );
                }
            }
            Ok(())
        }
        Command::Gc { store } => {
            let store = Store::open(&store)
                .with_context(|| format!("opening store {}", store.display()))?;
            let r = store.gc().context("collecting garbage in the store")?;
            println!(
                "removed {} layers, {} blobs, {} stale mount dirs",
                r.layers_removed, r.blobs_removed, r.mounts_removed
            );
            Ok(())
        }
        Command::Unmount { rootfs, store } => {
            let store = Store::open(&store)
                .with_context(|| format!("opening store {}", store.display()))?;
            let client = Arc::new(RegistryClient::new(RegistryConfig::default())?);
            Puller::new(client, store).unmount(&rootfs)?;
            Ok(())
        }
    }
}

async fn pull(a: PullArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let reference: Reference = a.reference.parse()?;
    let mut credentials = match &a.auth_file {
        Some(f) => Credentials::from_auth_file(f)?,
        None => Credentials::from_default_files()?,
    };
    if let (Some(user), true) = (&a.username, a.password_stdin) {
        let mut pw = Zeroizing::new(String::new());
        std::io::stdin()
            .read_to_string(&mut pw)
            .context("reading the password from stdin")?;
        let trimmed = Zeroizing::new(pw.trim_end_matches(['\n', '\r']).to_string());
        if trimmed.is_empty() {
            bail!("--password-stdin: standard input was empty; pipe the password in");
        }
        credentials.explicit = Some(Login {
            username: user.clone(),
            password: trimmed,
        });
    }
    let platform = a
        .platform
        .as_deref()
        .map(str::parse::<Platform>)
        .transpose()?;
    let client = Arc::new(RegistryClient::new(RegistryConfig {
        plain_http: a.plain_http,
        ca_files: a.ca_files.clone(),
        credentials,
        ..RegistryConfig::default()
    })?);
    let store =
        Store::open(&a.store).with_context(|| format!("opening store {}", a.store.display()))?;
    let progress: Arc<dyn ProgressSink> = match a.progress {
        ProgressArg::None => Arc::new(image_rs::progress::NoProgress),
        ProgressArg::Json => Arc::new(JsonProgress),
        ProgressArg::Plain => Arc::new(PlainProgress),
        ProgressArg::Auto if std::io::stderr().is_terminal() => Arc::new(LiveProgress::default()),
        ProgressArg::Auto => Arc::new(PlainProgress),
    };
    let mut decryption = image_rs::ocicrypt::layer::DecryptionKeys::default();
    for arg in &a.decryption_keys {
        decryption.private_keys.push(
            image_rs::ocicrypt::keys::PrivateKey::from_key_arg(arg)
                .context("loading --decryption-key")?,
        );
    }
    if let Some(dir) = &a.key_provider_dir {
        decryption.provider = Some(Arc::new(
            image_rs::ocicrypt::provider::FileKeyProvider::new(dir),
        ));
    }
    let verifier = load_verifier(&a.policy, a.key_provider_dir.as_deref())?;
    let unchecked = verifier.is_none();
    let opts = PullOptions {
        signature: verifier,
        decryption: Arc::new(decryption),
        layout: match a.layout {
            LayoutArg::Flat => Layout::Flat,
            LayoutArg::Overlay => Layout::Overlay,
        },
        platform,
        max_concurrent: a.max_concurrent,
        limits: Limits {
            max_layer_bytes: a.max_layer_bytes,
            max_entries: a.max_entries,
            allow_devices: a.allow_devices,
            ..Limits::default()
        },
        progress,
    };
    let report = Puller::new(client, store)
        .pull(&reference, &a.rootfs, &opts)
        .await
        .with_context(|| format!("pulling {reference} into {}", a.rootfs.display()))?;
    if unchecked {
        // After the pull, so that a failure stays one error line.
        tracing::warn!(
            image = %reference,
            "pulled without --policy: the image's signatures were not checked (any image is accepted)"
        );
    }
    if a.progress != ProgressArg::None && a.progress != ProgressArg::Json {
        let cached = report.layers.iter().filter(|l| l.cached).count();
        eprintln!(
            "pulled {} ({} layers, {} from the store, {} fetched in {} blobs) to {} in {:.2?}",
            report.reference,
            report.layers.len(),
            cached,
            human(report.bytes_fetched),
            report.blobs_fetched,
            report.rootfs.display(),
            started.elapsed()
        );
    }
    println!("{}", report.manifest_digest);
    Ok(())
}

fn parse_recipient(arg: &str) -> anyhow::Result<image_rs::ocicrypt::layer::Recipient> {
    use image_rs::ocicrypt::layer::Recipient;
    if let Some(path) = arg.strip_prefix("jwe:") {
        let key = image_rs::ocicrypt::keys::PublicKey::from_file(std::path::Path::new(path))
            .with_context(|| format!("--encryption-key {arg}"))?;
        return Ok(Recipient::Jwe(key));
    }
    if let Some(rest) = arg.strip_prefix("provider:") {
        let (kid, file) = rest.split_once('=').with_context(|| {
            format!("--encryption-key {arg}: expected provider:kbs:///REPO/TYPE/TAG=KEKFILE")
        })?;
        image_rs::ocicrypt::provider::ResourceUri::parse(kid)
            .with_context(|| format!("--encryption-key {arg}"))?;
        let kek = Zeroizing::new(
            std::fs::read(file)
                .with_context(|| format!("reading the key-encryption key {file}"))?,
        );
        if kek.len() != 32 {
            bail!(
                "--encryption-key {arg}: the key-encryption key must be 32 bytes, {file} has {}",
                kek.len()
            );
        }
        return Ok(Recipient::Provider {
            kid: kid.to_string(),
            kek,
        });
    }
    bail!(
        "--encryption-key {arg}: expected jwe:PUBLIC.pem or provider:kbs:///REPO/TYPE/TAG=KEKFILE"
    )
}

async fn copy(a: CopyArgs) -> anyhow::Result<()> {
    let src: image_rs::copy::Location = a.source.parse()?;
    let dst: image_rs::copy::Location = a.destination.parse()?;
    let recipients = a
        .encryption_keys
        .iter()
        .map(|k| parse_recipient(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if recipients.is_empty() && !a.encrypt_layers.is_empty() {
        bail!("--encrypt-layer needs at least one --encryption-key");
    }
    let credentials = match &a.auth_file {
        Some(f) => Credentials::from_auth_file(f)?,
        None => Credentials::from_default_files()?,
    };
    let client = RegistryClient::new(RegistryConfig {
        plain_http: a.plain_http,
        ca_files: a.ca_files.clone(),
        credentials,
        ..RegistryConfig::default()
    })?;
    let sign_by_sigstore_key = match &a.sign_by_sigstore_private_key {
        Some(k) => Some(load_signing_key(k, a.sign_passphrase_file.as_deref())?),
        None => None,
    };
    let opts = image_rs::copy::CopyOptions {
        sign_by_sigstore_key,
        recipients,
        encrypt_layers: (!a.encrypt_layers.is_empty()).then(|| a.encrypt_layers.clone()),
        platform: a
            .platform
            .as_deref()
            .map(str::parse::<Platform>)
            .transpose()?,
    };
    let report = image_rs::copy::copy(&client, &src, &dst, &opts)
        .await
        .with_context(|| format!("copying {} to {}", a.source, a.destination))?;
    if !report.encrypted_layers.is_empty() {
        eprintln!("encrypted layers {:?}", report.encrypted_layers);
    }
    if let Some(d) = &report.signature_manifest {
        eprintln!("signed: signature manifest {d}");
    }
    println!("{}", report.manifest_digest);
    Ok(())
}

fn load_verifier(
    p: &PolicyArgs,
    key_provider_dir: Option<&std::path::Path>,
) -> anyhow::Result<Option<Arc<SignatureVerifier>>> {
    let Some(file) = &p.policy else {
        if p.registries_d.is_some() {
            bail!("--registries-d needs --policy");
        }
        return Ok(None);
    };
    let policy = SignaturePolicy::from_file(file)?;
    let mut v = SignatureVerifier::new(policy);
    if let Some(dir) = &p.registries_d {
        v = v.with_registries_d(image_rs::signature::RegistriesD::load_dir(dir)?);
    }
    if let Some(dir) = key_provider_dir {
        v = v.with_key_provider(Arc::new(
            image_rs::ocicrypt::provider::FileKeyProvider::new(dir),
        ));
    }
    Ok(Some(Arc::new(v)))
}

fn read_passphrase(file: Option<&std::path::Path>) -> anyhow::Result<Zeroizing<String>> {
    let mut pass = Zeroizing::new(String::new());
    match file {
        Some(f) => {
            std::fs::File::open(f)
                .and_then(|mut h| h.read_to_string(&mut pass))
                .with_context(|| format!("reading the passphrase file {}", f.display()))?;
        }
        None => {
            std::io::stdin()
                .read_to_string(&mut pass)
                .context("reading the passphrase from stdin")?;
        }
    }
    Ok(Zeroizing::new(
        pass.lines().next().unwrap_or("").to_string(),
    ))
}

fn generate_key(
    prefix: &std::path::Path,
    passphrase: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let pass = read_passphrase(passphrase)?;
    let key = image_rs::signature::SigningKey::generate_p256();
    let with = |ext: &str| {
        let mut p = prefix.as_os_str().to_owned();
        p.push(ext);
        PathBuf::from(p)
    };
    let (private, public) = (with(".private"), with(".pub"));
    for p in [&private, &public] {
        if p.exists() {
            bail!("{} exists; not overwriting it", p.display());
        }
    }
    std::fs::write(&private, key.to_encrypted_pem(pass.as_bytes())?)
        .with_context(|| format!("writing {}", private.display()))?;
    std::fs::write(&public, key.public_key_pem()?)
        .with_context(|| format!("writing {}", public.display()))?;
    println!("{}\n{}", private.display(), public.display());
    Ok(())
}

fn load_signing_key(
    key: &std::path::Path,
    passphrase_file: Option<&std::path::Path>,
) -> anyhow::Result<image_rs::signature::SigningKey> {
    let pem = Zeroizing::new(
        std::fs::read(key).with_context(|| format!("reading the signing key {}", key.display()))?,
    );
    let line = read_passphrase(passphrase_file)?;
    image_rs::signature::SigningKey::from_encrypted_pem(&pem, line.as_bytes())
        .with_context(|| format!("--sign-by-sigstore-private-key {}", key.display()))
}

fn registry_client(a: &RegistryArgs) -> anyhow::Result<Arc<RegistryClient>> {
    let credentials = match &a.auth_file {
        Some(f) => Credentials::from_auth_file(f)?,
        None => Credentials::from_default_files()?,
    };
    Ok(Arc::new(RegistryClient::new(RegistryConfig {
        plain_http: a.plain_http,
        ca_files: a.ca_files.clone(),
        credentials,
        ..RegistryConfig::default()
    })?))
}

async fn verify(a: VerifyArgs) -> anyhow::Result<()> {
    let reference: Reference = a.reference.parse()?;
    let Some(verifier) = load_verifier(&a.policy, a.key_provider_dir.as_deref())? else {
        bail!("verify needs --policy FILE");
    };
    let client = registry_client(&a.registry)?;
    // No store is touched: a throwaway one satisfies the Puller type.
    let scratch = tempdir_store()?;
    let accepted = Puller::new(client, Store::open(scratch.path())?)
        .check_signatures(&reference, &verifier)
        .await
        .with_context(|| format!("verifying {reference}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&accepted)?);
    } else {
        println!(
            "accepted {} (manifest {}) under {}",
            accepted.image, accepted.digest, accepted.scope
        );
        for r in &accepted.requirements {
            println!("  {r}");
        }
    }
    Ok(())
}

/// A private temporary directory removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir_store() -> anyhow::Result<TempDir> {
    let p = std::env::temp_dir().join(format!(
        "image-rs-verify-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
    Ok(TempDir(p))
}

async fn referrers(a: ReferrersArgs) -> anyhow::Result<()> {
    let reference: Reference = a.reference.parse()?;
    let client = registry_client(&a.registry)?;
    let scratch = tempdir_store()?;
    let puller = Puller::new(client.clone(), Store::open(scratch.path())?);
    let digest = puller
        .manifest_digest(&reference)
        .await
        .with_context(|| format!("resolving {reference}"))?;
    let list = image_rs::signature::referrers::list(
        &client,
        &reference,
        &digest,
        a.artifact_type.as_deref(),
    )
    .await
    .with_context(|| format!("listing referrers of {reference}"))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    eprintln!(
        "{} referrer(s) of {reference} ({digest}) from {}",
        list.manifests.len(),
        match list.source {
            image_rs::signature::referrers::ReferrersSource::Api => "the referrers API",
            image_rs::signature::referrers::ReferrersSource::FallbackTag => "the fallback tag",
            image_rs::signature::referrers::ReferrersSource::None => "nowhere (none found)",
        }
    );
    println!(
        "{:<72} {:<45} {:>8}  ANNOTATIONS",
        "DIGEST", "ARTIFACT TYPE", "SIZE"
    );
    for m in &list.manifests {
        let ann = m
            .annotations
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<72} {:<45} {:>8}  {ann}",
            m.digest.to_string(),
            m.artifact_type.as_deref().unwrap_or("-"),
            m.size
        );
    }
    Ok(())
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn short(d: &image_rs::Digest) -> String {
    d.to_string().chars().take(19).collect()
}

/// One JSON object per event, one per line, on stderr.
struct JsonProgress;
impl ProgressSink for JsonProgress {
    fn event(&self, e: &ProgressEvent) {
        if let Ok(s) = serde_json::to_string(e) {
            let _ = writeln!(std::io::stderr().lock(), "{s}");
        }
    }
}

/// Plain lines for logs and pipes: layer start and finish only.
struct PlainProgress;
impl ProgressSink for PlainProgress {
    fn event(&self, e: &ProgressEvent) {
        let line = match e {
            ProgressEvent::Resolved {
                manifest,
                layers,
                total_bytes,
            } => {
                format!(
                    "resolved {manifest}: {layers} layers, {}",
                    human(*total_bytes)
                )
            }
            ProgressEvent::LayerStarted {
                index,
                digest,
                size,
            } => {
                format!(
                    "layer {index} {}: downloading {}",
                    short(digest),
                    human(*size)
                )
            }
            ProgressEvent::LayerDone {
                index,
                digest,
                cached: true,
                ..
            } => {
                format!("layer {index} {}: already in the store", short(digest))
            }
            ProgressEvent::LayerDone {
                index,
                digest,
                fetched_bytes,
                ..
            } => {
                format!(
                    "layer {index} {}: verified and unpacked ({})",
                    short(digest),
                    human(*fetched_bytes)
                )
            }
            ProgressEvent::LayerProgress { .. } | ProgressEvent::Done { .. } => return,
        };
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// A live display on a terminal: one line per layer, redrawn in place.
#[derive(Default)]
struct LiveProgress {
    state: Mutex<LiveState>,
}

#[derive(Default)]
struct LiveState {
    lines: Vec<String>,
    drawn: usize,
    last: Option<Instant>,
}

impl ProgressSink for LiveProgress {
    fn event(&self, e: &ProgressEvent) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut force = true;
        match e {
            ProgressEvent::Resolved { layers, .. } => {
                s.lines = vec!["waiting".to_string(); *layers]
            }
            ProgressEvent::LayerStarted {
                index,
                digest,
                size,
            } => set(
                &mut s.lines,
                *index,
                format!("{}  0% of {}", short(digest), human(*size)),
            ),
            ProgressEvent::LayerProgress {
                index,
                digest,
                bytes,
                size,
            } => {
                force = false;
                let pct = if *size > 0 { bytes * 100 / size } else { 100 };
                set(
                    &mut s.lines,
                    *index,
                    format!("{} {pct:>3}% of {}", short(digest), human(*size)),
                );
            }
            ProgressEvent::LayerDone {
                index,
                digest,
                cached,
                ..
            } => set(
                &mut s.lines,
                *index,
                format!(
                    "{} {}",
                    short(digest),
                    if *cached { "in the store" } else { "done" }
                ),
            ),
            ProgressEvent::Done { .. } => {}
        }
        if !force && s.last.is_some_and(|t| t.elapsed().as_millis() < 100) {
            return;
        }
        s.last = Some(Instant::now());
        let mut out = String::new();
        if s.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", s.drawn));
        }
        for (i, l) in s.lines.iter().enumerate() {
            out.push_str(&format!("\x1b[2Klayer {i}: {l}\n"));
        }
        s.drawn = s.lines.len();
        let _ = std::io::stderr().lock().write_all(out.as_bytes());
    }
}

fn set(lines: &mut Vec<String>, i: usize, v: String) {
    if lines.len() <= i {
        lines.resize(i + 1, String::new());
    }
    lines[i] = v;
}
