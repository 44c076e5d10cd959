//! How the agent sets up guest image pulls and attestation from its
//! configuration and initdata: the shared image store under the state
//! directory, registry credentials (`agent.image_registry_auth`: an
//! auth.json path), and layer keys from the KBS after attestation.
//!
//! The KBS URL comes from `agent.aa_kbc_params` (`cc_kbc::<URL>`) or, when
//! that is absent, from initdata (`aa.toml` / `cdh.toml`). The TEE is the
//! one present, or the one `agent.tee` names (`snp`, `tdx`, or `sample` for
//! development; the sample TEE is never chosen on its own). When initdata
//! is given, its digest must equal the TEE's launch-bound field, or the
//! agent refuses to start: the host must not be able to swap the pod's
//! measured configuration.

use std::path::Path;
use std::sync::Arc;

use attestation::attester::{self, Attester, AttesterConfig, TeeChoice};
use attestation::initdata::{self, Binding, InitData};
use attestation::kbs::{KbsClient, KbsConfig};
use attestation::provider::KbsKeyProvider;
use image_rs::ocicrypt::layer::DecryptionKeys;
use image_rs::{Credentials, RegistryConfig};
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::container::image::ImageService;

/// The `agent.tee` parameter (key without the prefix) naming the TEE
/// (`auto`, `snp`, `tdx`, `sample`).
pub const TEE_PARAM: &str = "tee";
/// Environment variable with the sample TEE's launch-bound field (hex): the
/// stand-in for what a VMM sets as SNP `host-data` / TDX `mrconfigid`.
pub const SAMPLE_LAUNCH_CONFIG_ENV: &str = "SEALPOD_SAMPLE_LAUNCH_CONFIG";

/// Why the agent must not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Initdata is unreadable or not bound to the TEE.
    #[error(transparent)]
    InitData(#[from] initdata::InitDataError),
    /// `agent.tee` is not a TEE name.
    #[error("agent.{TEE_PARAM}: {0}")]
    Tee(String),
}

/// The KBS URL from `agent.aa_kbc_params` (`cc_kbc::URL`, or a bare URL).
pub fn kbs_url(config: &AgentConfig) -> Option<String> {
    let p = config.aa_kbc_params.as_deref()?.trim();
    let url = p.split_once("::").map_or(p, |(_, url)| url).trim();
    (!url.is_empty()).then(|| url.to_string())
}

fn tee_choice(config: &AgentConfig) -> Result<TeeChoice, StartupError> {
    config
        .extra_params
        .get(TEE_PARAM)
        .map(String::as_str)
        .unwrap_or("auto")
        .parse()
        .map_err(StartupError::Tee)
}

fn detect(choice: TeeChoice) -> Result<Arc<dyn Attester>, attester::AttesterError> {
    let sample_launch_config = std::env::var(SAMPLE_LAUNCH_CONFIG_ENV)
        .ok()
        .and_then(|h| hex::decode(h.trim()).ok());
    attester::detect(
        choice,
        &AttesterConfig {
            allow_sample: choice == TeeChoice::Sample,
            sample_launch_config,
            ..AttesterConfig::default()
        },
    )
    .map(Arc::from)
}

/// Attestation for this agent: checks initdata against the TEE (fatal on a
/// mismatch) and returns the KBS client, if a KBS is configured and a TEE is
/// usable (otherwise encrypted images fail to pull with a clear error).
pub fn attestation(
    config: &AgentConfig,
    initdata: Option<&InitData>,
) -> Result<Option<Arc<KbsClient>>, StartupError> {
    let choice = tee_choice(config)?;
    let url = match kbs_url(config) {
        Some(u) => Some(u),
        None => initdata
            .map(InitData::kbs_config)
            .transpose()?
            .flatten()
            .map(|k| k.url),
    };
    if url.is_none() && initdata.is_none() {
        return Ok(None);
    }
    let attester = match detect(choice) {
        Ok(a) => a,
        Err(e) => {
            match (initdata, choice) {
                // Asked for a TEE that is not there: the same error as the KBS would give.
                (_, TeeChoice::Snp | TeeChoice::Tdx | TeeChoice::Sample) => {
                    error!(error = %e, "the configured TEE is not usable");
                }
                (Some(d), TeeChoice::Auto) => warn!(
                    error = %e,
                    origin = d.origin(),
                    "no TEE: initdata cannot be checked against a launch measurement"
                ),
                (None, TeeChoice::Auto) => {}
            }
            if url.is_some() {
                error!(error = %e, "cannot attest: encrypted images will not pull");
            }
            return Ok(None);
        }
    };
    if let Some(d) = initdata {
        match initdata::check_binding(attester.as_ref(), d)? {
            Binding::Bound => info!(
                origin = d.origin(),
                tee = %attester.tee(),
                "initdata matches the TEE's launch measurement"
            ),
            Binding::Unsupported => {}
        }
    }
    let Some(url) = url else {
        return Ok(None);
    };
    let mut kbs = KbsConfig::new(url.clone());
    kbs.initdata = initdata.map(InitData::to_payload);
    match KbsClient::new(kbs, attester) {
        Ok(c) => {
            info!(kbs = %url, tee = %c.attester().tee(), "layer keys come from the KBS after attestation");
            Ok(Some(Arc::new(c)))
        }
        Err(e) => {
            error!(error = %e, "KBS client");
            Ok(None)
        }
    }
}

/// The image service of an agent with `config`, decrypting with `kbs`.
pub fn image_service(config: &AgentConfig, kbs: Option<Arc<KbsClient>>) -> ImageService {
    let mut registry = RegistryConfig::default();
    if let Some(auth) = &config.image_registry_auth {
        match Credentials::from_auth_file(Path::new(auth.strip_prefix("file://").unwrap_or(auth))) {
            Ok(c) => registry.credentials = c,
            Err(e) => warn!(error = %e, "agent.image_registry_auth: pulling anonymously"),
        }
    }
    let keys = DecryptionKeys {
        private_keys: vec![],
        provider: kbs.map(|c| Arc::new(KbsKeyProvider::new(c)) as _),
    };
    ImageService::new(
        &config.state_dir.join("images"),
        registry,
        Arc::new(keys),
        config.image_pull_timeout,
    )
    .with_remote_private_keys(config.image_decryption_keys.clone())
}
