//! WaitProcess: the exit status of a process, once it exits.

use super::{ContainerError, Containers};

impl Containers {
    /// Waits for `exec_id` of `cid` (the init for an empty ID) and returns
    /// its exit status (the code, or 128 + the signal).
    pub async fn wait(&self, cid: &str, exec_id: &str) -> Result<i32, ContainerError> {
        let c = self.get(cid)?;
        let p = c.process(exec_id)?;
        let mut exit = p.exit.clone();
        let status = exit
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ContainerError::Io {
                what: format!("waiting for {cid}/{exec_id}"),
                source: std::io::Error::other("the reaper stopped"),
            })?
            .unwrap_or(-1);
        Ok(status)
    }
}
