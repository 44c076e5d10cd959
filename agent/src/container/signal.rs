//! SignalProcess: one exec'd process, or (empty exec ID) every process of
//! the container.

use std::sync::Arc;

use super::{blocking, ContainerError, Containers, Status};

impl Containers {
    /// Sends `signal` to `exec_id` of `cid` (all processes for an empty ID).
    pub async fn signal(
        &self,
        cid: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), ContainerError> {
        let signal = i32::try_from(signal)
            .ok()
            .filter(|s| (1..=64).contains(s))
            .ok_or_else(|| {
                ContainerError::InvalidArgument(format!("signal {signal} is not a signal number"))
            })?;
        let c = self.get(cid)?;
        if exec_id.is_empty() {
            if c.status() == Status::Stopped {
                return Ok(());
            }
            // The init is PID 1 of its namespace: the kernel drops signals
            // it has no handler for, so a SIGTERM to an init that does not
            // catch it would never stop the container. Kata sends SIGKILL
            // then; so do we.
            let signal = if signal == libc::SIGTERM && !catches(c.init.pid, libc::SIGTERM) {
                libc::SIGKILL
            } else {
                signal
            };
            let runtime = Arc::clone(&self.runtime);
            let id = cid.to_string();
            return blocking(move || Ok(runtime.kill_all(&id, signal)?)).await;
        }
        let p = c.process(exec_id)?;
        if p.exit.borrow().is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) with a PID we started and have not reaped (its
        // exit status is not in yet), so it cannot have been reused.
        let rc = unsafe { libc::kill(p.pid, signal) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(ContainerError::Io {
                    what: format!("signalling process {exec_id} of {cid}"),
                    source: e,
                });
            }
        }
        Ok(())
    }
}

/// Whether process `pid` has a handler for `signal` (`SigCgt` in
/// `/proc/<pid>/status`). Unknown = true (send the signal as asked).
fn catches(pid: i32, signal: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|mask| mask & (1u64 << (signal - 1)) != 0)
}
