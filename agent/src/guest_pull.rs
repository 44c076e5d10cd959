//! How the agent sets up guest image pulls from its configuration: the
//! shared image store under the state directory, registry credentials
//! (`agent.image_registry_auth`: an auth.json path), and layer keys from the
//! KBS (`agent.aa_kbc_params` = `cc_kbc::<KBS URL>`) after attestation with
//! the TEE present (or the sample TEE when `agent.tee=sample` asks for it).

use std::path::Path;
use std::sync::Arc;

use attestation::attester::{self, AttesterConfig, TeeChoice};
use attestation::kbs::{KbsClient, KbsConfig};
use attestation::provider::KbsKeyProvider;
use image_rs::ocicrypt::layer::DecryptionKeys;
use image_rs::{Credentials, RegistryConfig};
use tracing::{error, info, warn};

use crate::config::AgentConfig;
use crate::container::image::ImageService;

/// The `agent.*` parameter naming the TEE (`auto`, `snp`, `tdx`, `sample`).
pub const TEE_PARAM: &str = "agent.tee";

/// The KBS URL from `agent.aa_kbc_params` (`cc_kbc::URL`, or a bare URL).
pub fn kbs_url(config: &AgentConfig) -> Option<String> {
    let p = config.aa_kbc_params.as_deref()?.trim();
    let url = p.split_once("::").map_or(p, |(_, url)| url).trim();
    (!url.is_empty()).then(|| url.to_string())
}

/// The KBS key provider for `config`, if a KBS is configured and a TEE is
/// usable; otherwise `None` (encrypted images then fail with a clear error).
pub fn kbs_keys(config: &AgentConfig) -> Option<Arc<KbsClient>> {
    let url = kbs_url(config)?;
    let choice = config
        .extra_params
        .get(TEE_PARAM)
        .map(String::as_str)
        .unwrap_or("auto");
    let choice: TeeChoice = match choice.parse() {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, "{TEE_PARAM}: no KBS keys");
            return None;
        }
    };
    let attester = match attester::detect(
        choice,
        &AttesterConfig {
            allow_sample: choice == TeeChoice::Sample,
            ..AttesterConfig::default()
        },
    ) {
        Ok(a) => a,
        Err(e) => {
            error!(error = %e, kbs = %url, "cannot attest: encrypted images will not pull");
            return None;
        }
    };
    match KbsClient::new(KbsConfig::new(url.clone()), Arc::from(attester)) {
        Ok(c) => {
            info!(kbs = %url, tee = %c.attester().tee(), "layer keys come from the KBS after attestation");
            Some(Arc::new(c))
        }
        Err(e) => {
            error!(error = %e, "KBS client");
            None
        }
    }
}

/// The image service of an agent with `config`.
pub fn image_service(config: &AgentConfig) -> ImageService {
    let mut registry = RegistryConfig::default();
    if let Some(auth) = &config.image_registry_auth {
        match Credentials::from_auth_file(Path::new(auth.strip_prefix("file://").unwrap_or(auth))) {
            Ok(c) => registry.credentials = c,
            Err(e) => warn!(error = %e, "agent.image_registry_auth: pulling anonymously"),
        }
    }
    let keys = DecryptionKeys {
        private_keys: vec![],
        provider: kbs_keys(config).map(|c| Arc::new(KbsKeyProvider::new(c)) as _),
    };
    ImageService::new(
        &config.state_dir.join("images"),
        registry,
        Arc::new(keys),
        config.image_pull_timeout,
    )
}
