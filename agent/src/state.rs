//! What every RPC handler shares: the configuration, the policy gate, the
//! counters and the domain services. Later slices add the sandbox and its
//! containers here.

use std::sync::Arc;

use crate::config::AgentConfig;
use crate::container::image::ImagePolicy;
use crate::container::reaper::Reaper;
use crate::container::runtime::HelperRuntime;
use crate::container::Containers;
use crate::copy_file::SharedDir;
use crate::guest::Sysfs;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// Shared state of a running agent (behind an `Arc`).
#[derive(Debug)]
pub struct AgentState {
    /// The configuration the agent started with.
    pub config: AgentConfig,
    /// The request gate.
    pub policy: Policy,
    /// Per-method counters for GetMetrics.
    pub metrics: Metrics,
    /// Where CopyFile may write.
    pub shared_dir: SharedDir,
    /// Where guest facts are read from.
    pub sysfs: Sysfs,
    /// The sandbox's containers.
    pub containers: Arc<Containers>,
    /// Exit statuses of the agent's children (run by the `guest-agent`
    /// binary with [`Reaper::spawn`]).
    pub reaper: Reaper,
}

impl AgentState {
    /// State for `config`, gated by `policy`.
    pub fn new(config: AgentConfig, policy: Policy) -> Self {
        Self::with_kbs(config, policy, None)
    }

    /// State whose guest pulls get layer keys from `kbs` (see
    /// [`crate::guest_pull::attestation`]).
    pub fn with_kbs(
        config: AgentConfig,
        policy: Policy,
        kbs: Option<Arc<attestation::kbs::KbsClient>>,
    ) -> Self {
        Self::with_guest_pull(config, policy, kbs, ImagePolicy::None)
    }

    /// State whose guest pulls get keys from `kbs` and check images against
    /// `image_policy` (see [`crate::guest_pull::image_policy`]).
    pub fn with_guest_pull(
        config: AgentConfig,
        policy: Policy,
        kbs: Option<Arc<attestation::kbs::KbsClient>>,
        image_policy: ImagePolicy,
    ) -> Self {
        let reaper = Reaper::new();
        let images = Arc::new(crate::guest_pull::image_service(&config, kbs, image_policy));
        let containers = Arc::new(Containers::new(
            config.state_dir.join("containers"),
            Arc::new(HelperRuntime {
                exe: std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into()),
                root: config.state_dir.join("runtime"),
            }),
            reaper.clone(),
            images,
        ));
        AgentState {
            containers,
            reaper,
            shared_dir: SharedDir::new(config.shared_dir.clone()),
            config,
            policy,
            metrics: Metrics::new(),
            sysfs: Sysfs::default(),
        }
    }
}
