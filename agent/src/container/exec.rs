//! ExecProcess: another process in a running container, with its own
//! streams and exit status.

use std::sync::Arc;

use tracing::info;

use super::runtime::{ExecSpec, StdioFds};
use super::stdio::{ConsoleSocket, ProcessIo};
use super::{blocking, id, ContainerError, Containers, Process, Status};
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
        let (io, pid) = if process.Terminal {
            let sock_path = c.bundle.join(format!("exec-{exec_id}.sock"));
            let _ = std::fs::remove_file(&sock_path);
            let sock = ConsoleSocket::bind(&sock_path)
                .map_err(ContainerError::io("binding the console socket"))?;
            let receiver =
                std::thread::spawn(move || sock.accept(std::time::Duration::from_secs(30)));
            let stdio = StdioFds {
                console_socket: Some(sock_path.clone()),
                ..Default::default()
            };
            let pid = blocking(move || Ok(runtime.exec(&id, &spec, stdio)?)).await;
            let _ = std::fs::remove_file(&sock_path);
            let pid = pid?;
            let master = receiver
                .join()
                .map_err(|_| ContainerError::Io {
                    what: "receiving the terminal".into(),
                    source: std::io::Error::other("console thread panicked"),
                })?
                .map_err(ContainerError::io("receiving the terminal"))?;
            (
                ProcessIo::tty(master).map_err(ContainerError::io("setting up the terminal"))?,
                pid,
            )
        } else {
            let (io, fds) =
                ProcessIo::pipes(true).map_err(ContainerError::io("creating stdio pipes"))?;
            let pid = blocking(move || Ok(runtime.exec(&id, &spec, fds)?)).await?;
            (io, pid)
        };
        let exit = self.reaper.register(pid);
        c.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(exec_id.to_string(), Arc::new(Process { pid, io, exit }));
        info!(container = cid, exec_id, pid, "process executed");
        Ok(())
    }
}
