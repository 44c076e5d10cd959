//! PauseContainer / ResumeContainer: freeze and thaw the container's cgroup.

use std::sync::Arc;

use super::{blocking, ContainerError, Containers, Status};

impl Containers {
    /// Freezes container `cid`.
    pub async fn pause(&self, cid: &str) -> Result<(), ContainerError> {
        let c = self.get(cid)?;
        if c.status() != Status::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {cid} is {:?}, not running",
                c.status()
            )));
        }
        let (runtime, id) = (Arc::clone(&self.runtime), cid.to_string());
        blocking(move || Ok(runtime.pause(&id)?)).await?;
        c.set_status(Status::Paused);
        Ok(())
    }

    /// Thaws container `cid`.
    pub async fn resume(&self, cid: &str) -> Result<(), ContainerError> {
        let c = self.get(cid)?;
        if c.status() != Status::Paused {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {cid} is {:?}, not paused",
                c.status()
            )));
        }
        let (runtime, id) = (Arc::clone(&self.runtime), cid.to_string());
        blocking(move || Ok(runtime.resume(&id)?)).await?;
        c.set_status(Status::Running);
        Ok(())
    }
}
