//! StartContainer: runs the user process of a created container.

use std::sync::Arc;

use tracing::info;

use super::{blocking, ContainerError, Containers, Status};

impl Containers {
    /// Starts container `cid` (it must be created, not started).
    pub async fn start(&self, cid: &str) -> Result<(), ContainerError> {
        let c = self.get(cid)?;
        match c.status() {
            Status::Created => {}
            other => {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {cid} is {other:?}, not created"
                )))
            }
        }
        let runtime = Arc::clone(&self.runtime);
        let id = cid.to_string();
        blocking(move || Ok(runtime.start(&id)?)).await?;
        c.set_status(Status::Running);
        info!(container = cid, "container started");
        Ok(())
    }
}
