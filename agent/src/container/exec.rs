//! ExecProcess: another process in a running container, with its own
//! streams and exit status.

use std::sync::Arc;

use tracing::info;

use super::runtime::ExecSpec;
use super::{id, launch_with_stdio, ContainerError, Containers, Process, Status};
use crate::protocols::oci;

impl Containers {
    /// Runs `process` as `exec_id` in container `cid`.
    pub async fn exec(
        &self,
        cid: &str,
        exec_id: &str,
        process: &oci::Process,
    ) -> Result<(), ContainerError> {
        id::validate("exec_id", exec_id).map_err(ContainerError::InvalidArgument)?;
        let c = self.get(cid)?;
        if c.status() != Status::Running {
            return Err(ContainerError::FailedPrecondition(format!(
                "container {cid} is {:?}; exec needs a running container",
                c.status()
            )));
        }
        if process.Args.is_empty() {
            return Err(ContainerError::InvalidArgument(
                "the exec process has no args".into(),
            ));
        }
        {
            let execs = c.execs.lock().unwrap_or_else(|e| e.into_inner());
            if execs.contains_key(exec_id) {
                return Err(ContainerError::AlreadyExists(format!(
                    "container {cid} already has a process {exec_id}"
                )));
            }
        }
        let user = process.User.as_ref().cloned().unwrap_or_default();
        let spec = ExecSpec {
            args: process.Args.clone(),
            env: process.Env.clone(),
            cwd: (!process.Cwd.is_empty()).then(|| process.Cwd.clone()),
            uid: user.UID,
            gid: user.GID,
            additional_gids: user.AdditionalGids.clone(),
        };
        let runtime = Arc::clone(&self.runtime);
        let id = cid.to_string();
        let sock = c.bundle.join(format!("exec-{exec_id}.sock"));
        let (io, pid) = launch_with_stdio(process.Terminal, sock, move |stdio| {
            Ok(runtime.exec(&id, &spec, stdio)?)
        })
        .await?;
        let exit = self.reaper.register(pid);
        c.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.to_string(), Arc::new(Process { pid, io, exit }));
        info!(container = cid, exec_id, pid, "process executed");
        Ok(())
    }
}
