//! Agent configuration, gathered the way Kata's agent gathers it.
//!
//! Sources, lowest to highest precedence:
//!
//! 1. built-in defaults (`vsock://-1:1024`, state dir `/run/sealpod`, ...);
//! 2. a TOML file (`--config FILE` or kernel `agent.config_file=FILE`);
//! 3. the kernel command line (`agent.*` parameters from `/proc/cmdline`);
//! 4. development environment variables (`KATA_AGENT_SERVER_ADDR`,
//!    `KATA_AGENT_LOG_LEVEL`, `KATA_AGENT_POLICY_FILE`);
//! 5. command-line flags of `guest-agent`.
//!
//! Unknown `agent.*` kernel parameters are kept (later slices read them) and
//! never stop the boot; a malformed value of a known one is an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::addr::{AddrError, ServerAddr};
use crate::logging::{LogLevel, LogLevelError};

/// Default state directory (sockets, the shared dir, later container state).
pub const DEFAULT_STATE_DIR: &str = "/run/sealpod";
/// The shared directory below the state directory; Kata's is
/// `/run/kata-containers/shared/containers/`.
pub const SHARED_SUBDIR: &str = "shared/containers";
/// Kata's default bound for one guest image pull (`agent.image_pull_timeout`).
pub const DEFAULT_IMAGE_PULL_TIMEOUT: Duration = Duration::from_secs(1200);

/// Environment variable overriding the listen address (development).
pub const ENV_SERVER_ADDR: &str = "KATA_AGENT_SERVER_ADDR";
/// Environment variable overriding the log level (development).
pub const ENV_LOG_LEVEL: &str = "KATA_AGENT_LOG_LEVEL";
/// Environment variable naming a policy file.
pub const ENV_POLICY_FILE: &str = "KATA_AGENT_POLICY_FILE";

/// The resolved configuration the agent runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Where the ttrpc server listens.
    pub server_addr: ServerAddr,
    /// How much to log.
    pub log_level: LogLevel,
    /// Agent-owned runtime state (default `/run/sealpod`).
    pub state_dir: PathBuf,
    /// The only directory CopyFile writes below.
    pub shared_dir: PathBuf,
    /// Initial policy; none = allow everything (with a warning).
    pub policy_file: Option<PathBuf>,
    /// Registry credentials for guest pulls (`agent.image_registry_auth`), read by a later slice.
    pub image_registry_auth: Option<String>,
    /// Legacy KBC parameters (`agent.aa_kbc_params`), read by the attestation slice.
    pub aa_kbc_params: Option<String>,
    /// Bound for one guest image pull (`agent.image_pull_timeout`, seconds).
    pub image_pull_timeout: Duration,
    /// Private keys for JWE-encrypted images (as `skopeo copy
    /// --encryption-key jwe:` makes them), as `kbs:///` resources fetched
    /// after attestation (`agent.image_decryption_keys`, comma separated):
    /// the guest holds them only in memory, the host never sees them.
    pub image_decryption_keys: Vec<String>,
    /// A `containers-policy.json(5)` file in the guest image every pulled
    /// image is checked against (`agent.image_policy_file`), when initdata
    /// carries no image policy.
    pub image_policy_file: Option<PathBuf>,
    /// Registries (`host:port`) the guest may pull from over plain HTTP
    /// (`agent.image_insecure_registries`, comma separated), e.g. the host's
    /// registry reached through the VMM's user-mode network. Image content
    /// is still verified by digest; only the transport is unencrypted.
    pub image_insecure_registries: Vec<String>,
    /// The TOML file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Other `agent.*` kernel parameters, without the `agent.` prefix.
    pub extra_params: BTreeMap<String, String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        let state_dir = PathBuf::from(DEFAULT_STATE_DIR);
        AgentConfig {
            server_addr: ServerAddr::default(),
            log_level: LogLevel::default(),
            shared_dir: state_dir.join(SHARED_SUBDIR),
            state_dir,
            policy_file: None,
            image_registry_auth: None,
            aa_kbc_params: None,
            image_pull_timeout: DEFAULT_IMAGE_PULL_TIMEOUT,
            image_decryption_keys: Vec::new(),
            image_policy_file: None,
            image_insecure_registries: Vec::new(),
            config_file: None,
            extra_params: BTreeMap::new(),
        }
    }
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A known parameter has a value that does not parse.
    #[error("{source_name}: {key}={value:?} is invalid: {reason}")]
    Value {
        /// Where the value came from (`kernel cmdline`, the file, an env var).
        source_name: String,
        /// The parameter.
        key: String,
        /// The raw value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address does not parse.
    #[error("{source_name}: {source}")]
    Addr {
        /// Where the address came from.
        source_name: String,
        /// The parse error.
        source: AddrError,
    },
    /// A log level does not parse.
    #[error("{source_name}: {source}")]
    LogLevel {
        /// Where the level came from.
        source_name: String,
        /// The parse error.
        source: LogLevelError,
    },
    /// The config file cannot be read.
    #[error("reading config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this agent.
    #[error("parsing config file {path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The TOML error (line, column, unknown key, ...).
        message: String,
    },
}

/// The `agent.*` parameters of a kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdlineParams {
    params: BTreeMap<String, String>,
}

impl CmdlineParams {
    /// Parses a kernel command line (the text of `/proc/cmdline`). Values may
    /// be double-quoted to hold spaces; a bare `agent.flag` reads as `true`.
    pub fn parse(cmdline: &str) -> Self {
        let mut params = BTreeMap::new();
        for token in split_cmdline(cmdline) {
            let Some(rest) = token.strip_prefix("agent.") else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, v),
                None => (rest, "true"),
            };
            if !key.is_empty() {
                params.insert(key.to_string(), value.to_string());
            }
        }
        CmdlineParams { params }
    }

    /// The value of `agent.<key>`, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Splits on whitespace outside double quotes and drops the quotes, as the
/// kernel does for its own parameters.
fn split_cmdline(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut in_token = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_token = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_token {
                    out.push(std::mem::take(&mut cur));
                    in_token = false;
                }
            }
            c => {
                cur.push(c);
                in_token = true;
            }
        }
    }
    if in_token {
        out.push(cur);
    }
    out
}

/// The keys a TOML config file may set (names as on the kernel command line,
/// without `agent.`). Unknown keys are refused so that typos are caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server_addr: Option<String>,
    log_level: Option<String>,
    /// Kata's cmdline spelling of `log_level`.
    log: Option<String>,
    state_dir: Option<PathBuf>,
    shared_dir: Option<PathBuf>,
    policy_file: Option<PathBuf>,
    image_registry_auth: Option<String>,
    aa_kbc_params: Option<String>,
    image_pull_timeout: Option<u64>,
    image_decryption_keys: Option<Vec<String>>,
    image_policy_file: Option<PathBuf>,
    image_insecure_registries: Option<Vec<String>>,
}

/// The development environment variables the agent honours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvVars {
    /// `KATA_AGENT_SERVER_ADDR`.
    pub server_addr: Option<String>,
    /// `KATA_AGENT_LOG_LEVEL`.
    pub log_level: Option<String>,
    /// `KATA_AGENT_POLICY_FILE`.
    pub policy_file: Option<String>,
}

impl EnvVars {
    /// Reads the variables from this process's environment (empty = unset).
    pub fn from_process() -> Self {
        let get = |k| std::env::var(k).ok().filter(|v| !v.is_empty());
        EnvVars {
            server_addr: get(ENV_SERVER_ADDR),
            log_level: get(ENV_LOG_LEVEL),
            policy_file: get(ENV_POLICY_FILE),
        }
    }
}

/// Values given as `guest-agent` flags; they win over everything else.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `--server-addr`.
    pub server_addr: Option<ServerAddr>,
    /// `--log-level`.
    pub log_level: Option<LogLevel>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--shared-dir`.
    pub shared_dir: Option<PathBuf>,
    /// `--policy`.
    pub policy_file: Option<PathBuf>,
    /// `--config`.
    pub config_file: Option<PathBuf>,
}

impl AgentConfig {
    /// Builds the configuration from all sources (see the module doc for the
    /// order). `cmdline` is the text of `/proc/cmdline`, if readable.
    pub fn load(
        cmdline: Option<&str>,
        env: &EnvVars,
        overrides: &Overrides,
    ) -> Result<Self, ConfigError> {
        let params = cmdline.map(CmdlineParams::parse).unwrap_or_default();
        let mut cfg = AgentConfig::default();
        // shared_dir follows state_dir unless one source sets it explicitly.
        let mut shared_dir: Option<PathBuf> = None;

        let config_file = overrides
            .config_file
            .clone()
            .or_else(|| params.get("config_file").map(PathBuf::from));
        if let Some(path) = &config_file {
            let file = read_file_config(path)?;
            let src = path.display().to_string();
            cfg.apply_file(&file, &src, &mut shared_dir)?;
            cfg.config_file = Some(path.clone());
        }

        cfg.apply_cmdline(&params)?;

        if let Some(v) = &env.server_addr {
            cfg.server_addr = parse_addr(ENV_SERVER_ADDR, v)?;
        }
        if let Some(v) = &env.log_level {
            cfg.log_level = parse_level(ENV_LOG_LEVEL, v)?;
        }
        if let Some(v) = &env.policy_file {
            cfg.policy_file = Some(PathBuf::from(v));
        }

        if let Some(v) = &overrides.server_addr {
            cfg.server_addr = v.clone();
        }
        if let Some(v) = overrides.log_level {
            cfg.log_level = v;
        }
        if let Some(v) = &overrides.state_dir {
            cfg.state_dir = v.clone();
        }
        if let Some(v) = &overrides.shared_dir {
            shared_dir = Some(v.clone());
        }
        if let Some(v) = &overrides.policy_file {
            cfg.policy_file = Some(v.clone());
        }
        cfg.shared_dir = shared_dir.unwrap_or_else(|| cfg.state_dir.join(SHARED_SUBDIR));
        Ok(cfg)
    }

    fn apply_file(
        &mut self,
        file: &FileConfig,
        src: &str,
        shared_dir: &mut Option<PathBuf>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = &file.server_addr {
            self.server_addr = parse_addr(src, v)?;
        }
        if let Some(v) = file.log_level.as_ref().or(file.log.as_ref()) {
            self.log_level = parse_level(src, v)?;
        }
        if let Some(v) = &file.state_dir {
            self.state_dir = v.clone();
        }
        if let Some(v) = &file.shared_dir {
            *shared_dir = Some(v.clone());
        }
        if let Some(v) = &file.policy_file {
            self.policy_file = Some(v.clone());
        }
        if let Some(v) = &file.image_registry_auth {
            self.image_registry_auth = Some(v.clone());
        }
        if let Some(v) = &file.aa_kbc_params {
            self.aa_kbc_params = Some(v.clone());
        }
        if let Some(v) = file.image_pull_timeout {
            self.image_pull_timeout = Duration::from_secs(v);
        }
        if let Some(v) = &file.image_insecure_registries {
            self.image_insecure_registries = v.clone();
        }
        if let Some(v) = &file.image_decryption_keys {
            self.image_decryption_keys = v.clone();
        }
        if let Some(v) = &file.image_policy_file {
            self.image_policy_file = Some(v.clone());
        }
        Ok(())
    }

    fn apply_cmdline(&mut self, params: &CmdlineParams) -> Result<(), ConfigError> {
        const SRC: &str = "kernel cmdline";
        for (key, value) in &params.params {
            match key.as_str() {
                "server_addr" => self.server_addr = parse_addr(SRC, value)?,
                "log" => self.log_level = parse_level(SRC, value)?,
                "image_registry_auth" => self.image_registry_auth = Some(value.clone()),
                "aa_kbc_params" => self.aa_kbc_params = Some(value.clone()),
                "image_insecure_registries" => {
                    self.image_insecure_registries = comma_list(value);
                }
                "image_policy_file" => self.image_policy_file = Some(PathBuf::from(value)),
                "image_decryption_keys" => {
                    self.image_decryption_keys = comma_list(value);
                }
                "image_pull_timeout" => {
                    let secs = value.parse::<u64>().map_err(|e| ConfigError::Value {
                        source_name: SRC.into(),
                        key: format!("agent.{key}"),
                        value: value.clone(),
                        reason: format!("{e} (expected whole seconds)"),
                    })?;
                    self.image_pull_timeout = Duration::from_secs(secs);
                }
                // Read above, before the file is loaded.
                "config_file" => {}
                _ => {
                    self.extra_params.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(())
    }
}

/// The non-empty, trimmed items of a comma-separated parameter value.
fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(String::from)
        .collect()
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn parse_addr(src: &str, v: &str) -> Result<ServerAddr, ConfigError> {
    v.parse().map_err(|source| ConfigError::Addr {
        source_name: src.to_string(),
        source,
    })
}

fn parse_level(src: &str, v: &str) -> Result<LogLevel, ConfigError> {
    v.parse().map_err(|source| ConfigError::LogLevel {
        source_name: src.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_kata() {
        let cfg = AgentConfig::load(None, &EnvVars::default(), &Overrides::default()).unwrap();
        assert_eq!(cfg.server_addr.to_string(), "vsock://-1:1024");
        assert_eq!(cfg.state_dir, PathBuf::from("/run/sealpod"));
        assert_eq!(
            cfg.shared_dir,
            PathBuf::from("/run/sealpod/shared/containers")
        );
        assert_eq!(cfg.image_pull_timeout, Duration::from_secs(1200));
        assert_eq!(cfg.log_level, LogLevel::Info);
        assert!(cfg.policy_file.is_none());
    }

    #[test]
    fn cmdline_params_are_read_with_quotes() {
        let cmdline = "console=ttyS0 quiet agent.server_addr=vsock://-1:2048 agent.log=debug \
             agent.aa_kbc_params=\"cc_kbc::http://10.0.0.1:8080\" agent.image_pull_timeout=60 \
             agent.image_registry_auth=file:///etc/auth.json agent.devmode agent.hotplug_timeout=3 \
             systemd.unified_cgroup_hierarchy=1";
        let cfg =
            AgentConfig::load(Some(cmdline), &EnvVars::default(), &Overrides::default()).unwrap();
        assert_eq!(cfg.server_addr.to_string(), "vsock://-1:2048");
        assert_eq!(cfg.log_level, LogLevel::Debug);
        assert_eq!(
            cfg.aa_kbc_params.as_deref(),
            Some("cc_kbc::http://10.0.0.1:8080")
        );
        assert_eq!(cfg.image_pull_timeout, Duration::from_secs(60));
        assert_eq!(
            cfg.image_registry_auth.as_deref(),
            Some("file:///etc/auth.json")
        );
        assert_eq!(
            cfg.extra_params.get("devmode").map(String::as_str),
            Some("true")
        );
        assert_eq!(
            cfg.extra_params.get("hotplug_timeout").map(String::as_str),
            Some("3")
        );
        assert!(!cfg.extra_params.contains_key("unified_cgroup_hierarchy"));
    }

    #[test]
    fn insecure_registries_from_cmdline_and_file() {
        let cmdline = "agent.image_insecure_registries=10.0.2.100:5000,,registry.local ";
        let cfg =
            AgentConfig::load(Some(cmdline), &EnvVars::default(), &Overrides::default()).unwrap();
        assert_eq!(
            cfg.image_insecure_registries,
            ["10.0.2.100:5000", "registry.local"]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "image_insecure_registries = [\"r:5000\"]\n").unwrap();
        let flags = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let cfg = AgentConfig::load(None, &EnvVars::default(), &flags).unwrap();
        assert_eq!(cfg.image_insecure_registries, ["r:5000"]);
        assert!(!cfg.extra_params.contains_key("image_insecure_registries"));
    }

    #[test]
    fn image_decryption_keys_from_cmdline_and_file() {
        let cmdline = "agent.image_decryption_keys=kbs:///default/image-key/rsa,,kbs:///a/b/c ";
        let cfg =
            AgentConfig::load(Some(cmdline), &EnvVars::default(), &Overrides::default()).unwrap();
        assert_eq!(
            cfg.image_decryption_keys,
            ["kbs:///default/image-key/rsa", "kbs:///a/b/c"]
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, "image_decryption_keys = [\"kbs:///x/y/z\"]\n").unwrap();
        let flags = Overrides {
            config_file: Some(file),
            ..Default::default()
        };
        let cfg = AgentConfig::load(None, &EnvVars::default(), &flags).unwrap();
        assert_eq!(cfg.image_decryption_keys, ["kbs:///x/y/z"]);
    }

    #[test]
    fn bad_known_values_are_errors() {
        for cmdline in [
            "agent.image_pull_timeout=soon",
            "agent.server_addr=tcp://1.2.3.4:1",
            "agent.log=chatty",
        ] {
            let err = AgentConfig::load(Some(cmdline), &EnvVars::default(), &Overrides::default())
                .unwrap_err();
            assert!(err.to_string().contains("kernel cmdline"), "{err}");
        }
    }

    #[test]
    fn precedence_file_then_cmdline_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(
            &file,
            "server_addr = \"unix:///from/file\"\nlog_level = \"error\"\nstate_dir = \"/from/file\"\n\
             image_pull_timeout = 5\npolicy_file = \"/file.rego\"\n",
        )
        .unwrap();
        let cmdline = format!("agent.config_file={} agent.log=warn", file.display());

        let cfg =
            AgentConfig::load(Some(&cmdline), &EnvVars::default(), &Overrides::default()).unwrap();
        assert_eq!(cfg.server_addr.to_string(), "unix:///from/file");
        assert_eq!(cfg.log_level, LogLevel::Warn);
        assert_eq!(
            cfg.shared_dir,
            PathBuf::from("/from/file/shared/containers")
        );
        assert_eq!(cfg.image_pull_timeout, Duration::from_secs(5));
        assert_eq!(cfg.config_file.as_deref(), Some(file.as_path()));

        let env = EnvVars {
            server_addr: Some("unix://@from-env".into()),
            log_level: Some("trace".into()),
            policy_file: Some("/env.rego".into()),
        };
        let cfg = AgentConfig::load(Some(&cmdline), &env, &Overrides::default()).unwrap();
        assert_eq!(cfg.server_addr.to_string(), "unix://@from-env");
        assert_eq!(cfg.log_level, LogLevel::Trace);
        assert_eq!(cfg.policy_file, Some(PathBuf::from("/env.rego")));

        let flags = Overrides {
            server_addr: Some("vsock://3:99".parse().unwrap()),
            state_dir: Some("/flag".into()),
            shared_dir: Some("/elsewhere".into()),
            ..Default::default()
        };
        let cfg = AgentConfig::load(Some(&cmdline), &env, &flags).unwrap();
        assert_eq!(cfg.server_addr.to_string(), "vsock://3:99");
        assert_eq!(cfg.state_dir, PathBuf::from("/flag"));
        assert_eq!(cfg.shared_dir, PathBuf::from("/elsewhere"));
    }

    #[test]
    fn config_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "sever_addr = \"typo\"\n").unwrap();
        let flags = Overrides {
            config_file: Some(file.clone()),
            ..Default::default()
        };
        let err = AgentConfig::load(None, &EnvVars::default(), &flags).unwrap_err();
        assert!(matches!(err, ConfigError::ParseFile { .. }), "{err}");
        assert!(err.to_string().contains("bad.toml"));

        let flags = Overrides {
            config_file: Some(dir.path().join("missing.toml")),
            ..Default::default()
        };
        let err = AgentConfig::load(None, &EnvVars::default(), &flags).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
    }
}
