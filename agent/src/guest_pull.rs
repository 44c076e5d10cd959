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
use crate::container::image::{ImagePolicy, ImageService};

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
    /// The image signature policy is unreadable or invalid: the agent does
    /// not start rather than accept every image.
    #[error("the image signature policy from {origin}: {reason}")]
    ImagePolicy {
        /// Initdata's entry or the file.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The initdata entry holding the image signature policy
/// (`containers-policy.json(5)`).
pub const IMAGE_POLICY_KEY: &str = "image-policy.json";
/// The initdata entry holding a `registries.d` document (lookaside storage
/// of GPG simple signatures).
pub const REGISTRIES_D_KEY: &str = "registries.d.yaml";

/// The guest's image signature policy: initdata `image-policy.json`, else
/// initdata `cdh.toml` `[image] image_security_policy_uri` (a `kbs:///`
/// resource, as Confidential Containers names it), else
/// `agent.image_policy_file`, else none (logged as a warning). A policy
/// that is there but unreadable stops the agent.
pub fn image_policy(
    config: &AgentConfig,
    initdata: Option<&InitData>,
) -> Result<ImagePolicy, StartupError> {
    let bad = |origin: &str, reason: String| StartupError::ImagePolicy {
        origin: origin.to_string(),
        reason,
    };
    let registries_d = match initdata.and_then(|d| d.data(REGISTRIES_D_KEY)) {
        Some(y) => Some(
            image_rs::signature::RegistriesD::from_yaml(y.as_bytes())
                .map_err(|e| bad(&format!("initdata {REGISTRIES_D_KEY}"), e.to_string()))?,
        ),
        None => None,
    };
    let inline = |policy: image_rs::SignaturePolicy, origin: String| {
        info!(origin, "image signature policy loaded");
        ImagePolicy::Inline {
            policy,
            registries_d: registries_d.clone(),
            origin,
        }
    };
    if let Some(json) = initdata.and_then(|d| d.data(IMAGE_POLICY_KEY)) {
        let origin = format!("initdata {IMAGE_POLICY_KEY}");
        let policy = image_rs::SignaturePolicy::from_json(json.as_bytes())
            .map_err(|e| bad(&origin, e.to_string()))?;
        return Ok(inline(policy, origin));
    }
    if let Some(cdh) = initdata.and_then(|d| d.data(initdata::CDH_CONFIG_KEY)) {
        let origin = format!("initdata {}", initdata::CDH_CONFIG_KEY);
        let doc: toml::Table = toml::from_str(cdh).map_err(|e| bad(&origin, e.to_string()))?;
        let uri = doc
            .get("image")
            .and_then(|i| i.get("image_security_policy_uri"))
            .and_then(toml::Value::as_str)
            .filter(|u| !u.is_empty());
        if let Some(uri) = uri {
            if !uri.starts_with("kbs:///") {
                return Err(bad(
                    &origin,
                    format!("image_security_policy_uri {uri:?} is not a kbs:/// resource"),
                ));
            }
            info!(policy = uri, "image signature policy comes from the KBS");
            return Ok(ImagePolicy::Kbs(uri.to_string()));
        }
    }
    if let Some(path) = &config.image_policy_file {
        let origin = path.display().to_string();
        let policy =
            image_rs::SignaturePolicy::from_file(path).map_err(|e| bad(&origin, e.to_string()))?;
        return Ok(inline(policy, origin));
    }
    warn!("no image signature policy: images are accepted without signatures (set initdata image-policy.json)");
    Ok(ImagePolicy::None)
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

/// The image service of an agent with `config`, decrypting with `kbs`,
/// checking images against `policy`.
pub fn image_service(
    config: &AgentConfig,
    kbs: Option<Arc<KbsClient>>,
    policy: ImagePolicy,
) -> ImageService {
    let mut registry = RegistryConfig::default();
    if let Some(auth) = &config.image_registry_auth {
        match Credentials::from_auth_file(Path::new(auth.strip_prefix("file://").unwrap_or(auth))) {
            Ok(c) => registry.credentials = c,
            Err(e) => warn!(error = %e, "agent.image_registry_auth: pulling anonymously"),
        }
    }
    if !config.image_insecure_registries.is_empty() {
        warn!(
            registries = ?config.image_insecure_registries,
            "agent.image_insecure_registries: these registries are reached over plain HTTP"
        );
        registry.insecure_registries = config.image_insecure_registries.clone();
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
    .with_image_policy(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initdata(entries: &[(&str, &str)]) -> InitData {
        let mut toml = String::from("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n");
        for (k, v) in entries {
            toml.push_str(&format!("\"{k}\" = '''\n{v}'''\n"));
        }
        InitData::parse(toml.as_bytes(), "test").expect("test initdata")
    }

    const ACCEPT: &str = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;

    #[test]
    fn image_policy_sources_in_order() {
        let config = AgentConfig::default();
        assert!(matches!(
            image_policy(&config, None).unwrap(),
            ImagePolicy::None
        ));
        let d = initdata(&[
            (IMAGE_POLICY_KEY, ACCEPT),
            (
                "cdh.toml",
                "[image]\nimage_security_policy_uri = \"kbs:///default/security-policy/test\"\n",
            ),
        ]);
        assert!(matches!(
            image_policy(&config, Some(&d)).unwrap(),
            ImagePolicy::Inline { .. }
        ));
        let d = initdata(&[(
            "cdh.toml",
            "[image]\nimage_security_policy_uri = \"kbs:///default/security-policy/test\"\n",
        )]);
        match image_policy(&config, Some(&d)).unwrap() {
            ImagePolicy::Kbs(uri) => assert_eq!(uri, "kbs:///default/security-policy/test"),
            other => panic!("{other:?}"),
        }

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.json");
        std::fs::write(&file, ACCEPT).unwrap();
        let config = AgentConfig {
            image_policy_file: Some(file),
            ..AgentConfig::default()
        };
        assert!(matches!(
            image_policy(&config, None).unwrap(),
            ImagePolicy::Inline { .. }
        ));
    }

    #[test]
    fn an_unusable_image_policy_is_an_error_never_an_accept() {
        let config = AgentConfig::default();
        for d in [
            initdata(&[(IMAGE_POLICY_KEY, "{")]),
            initdata(&[(IMAGE_POLICY_KEY, r#"{"default":[{"type":"maybe"}]}"#)]),
            initdata(&[(
                "cdh.toml",
                "[image]\nimage_security_policy_uri = \"file:///etc/policy.json\"\n",
            )]),
            initdata(&[
                (IMAGE_POLICY_KEY, ACCEPT),
                (REGISTRIES_D_KEY, "unknown: 1\n"),
            ]),
        ] {
            let e = image_policy(&config, Some(&d)).unwrap_err();
            assert!(matches!(e, StartupError::ImagePolicy { .. }), "{e}");
        }
        let config = AgentConfig {
            image_policy_file: Some("/nonexistent/policy.json".into()),
            ..AgentConfig::default()
        };
        let e = image_policy(&config, None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/policy.json"), "{e}");
    }
}
