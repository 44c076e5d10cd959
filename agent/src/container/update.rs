//! UpdateContainer: new CPU, memory and PID limits for a running
//! container, written to its cgroup (`/sealpod/<id>`) with libcgroups, the
//! cgroup code libcontainer itself uses.

use libcgroups::common::{CgroupConfig, CgroupManager as _, ControllerOpt};

use super::{blocking, spec, ContainerError, Containers, Status};
use crate::protocols::oci;

impl Containers {
    /// Applies `resources` to container `cid`.
    pub async fn update(
        &self,
        cid: &str,
        resources: &oci::LinuxResources,
    ) -> Result<(), ContainerError> {
        let c = self.get(cid)?;
        if c.status() == Status::Stopped {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {cid} has stopped"
            )));
        }
        let json = spec::resources(resources);
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_value(json)
            .map_err(|e| ContainerError::InvalidArgument(format!("resources: {e}")))?;
        let id = cid.to_string();
        blocking(move || {
            let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
                cgroup_path: format!("/{}", super::stats::container_cgroup(&id)).into(),
                systemd_cgroup: false,
                container_name: id.clone(),
            })
            .map_err(|e| {
                ContainerError::FailedPrecondition(format!("container {id}: its cgroup: {e}"))
            })?;
            manager
                .apply(&ControllerOpt {
                    resources: &resources,
                    disable_oom_killer: false,
                    oom_score_adj: None,
                    freezer_state: None,
                })
                .map_err(|e| {
                    ContainerError::InvalidArgument(format!(
                        "container {id}: applying the resources: {e}"
                    ))
                })
        })
        .await
    }
}
