//! RemoveContainer: kill what is left, delete the runtime state, unmount
//! the rootfs (its layers stay in the store) and remove the bundle.

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::{blocking, ContainerError, Containers, Status};

/// How long a removal waits for the processes to die after SIGKILL when the
/// request gives no timeout.
const DEFAULT_KILL_WAIT: Duration = Duration::from_secs(10);

impl Containers {
    /// Removes container `cid`; `timeout` bounds the wait for its processes
    /// to exit (0 = the default).
    pub async fn remove(&self, cid: &str, timeout: Duration) -> Result<(), ContainerError> {
        let c = self.get(cid)?;
        let _removal = c.removal.lock().await;
        // Removed by a concurrent request while we waited.
        if !self
            .get(cid)
            .is_ok_and(|now| std::sync::Arc::ptr_eq(&now, &c))
        {
            return Err(ContainerError::NotFound(format!("no container {cid:?}")));
        }
        let wait = if timeout.is_zero() {
            DEFAULT_KILL_WAIT
        } else {
            timeout
        };
        if c.status() != Status::Stopped {
            if c.status() == Status::Paused {
                let _ = self.resume(cid).await;
            }
            let (runtime, id) = (Arc::clone(&self.runtime), cid.to_string());
            if let Err(e) = blocking(move || Ok(runtime.kill_all(&id, libc::SIGKILL)?)).await {
                warn!(container = cid, error = %e, "killing before removal");
            }
            let mut exit = c.init.exit.clone();
            if tokio::time::timeout(wait, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                return Err(ContainerError::FailedPrecondition(format!(
                    "container {cid}: its processes did not exit within {wait:?} of SIGKILL"
                )));
            }
        }
        let (runtime, id) = (Arc::clone(&self.runtime), cid.to_string());
        blocking(move || Ok(runtime.delete(&id)?)).await?;
        self.images.unmount(&c.bundle.join("rootfs"))?;
        std::fs::remove_dir_all(&c.bundle).map_err(ContainerError::io(format!(
            "removing {}",
            c.bundle.display()
        )))?;
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(cid);
        info!(container = cid, "container removed");
        Ok(())
    }
}
