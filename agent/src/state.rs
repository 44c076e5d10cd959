//! What every RPC handler shares: the configuration, the policy gate, the
//! counters and the domain services. Later slices add the sandbox and its
//! containers here.

use crate::config::AgentConfig;
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
}

impl AgentState {
    /// State for `config`, gated by `policy`.
    pub fn new(config: AgentConfig, policy: Policy) -> Self {
        AgentState {
            shared_dir: SharedDir::new(config.shared_dir.clone()),
            config,
            policy,
            metrics: Metrics::new(),
            sysfs: Sysfs::default(),
        }
    }
}
