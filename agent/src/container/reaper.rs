//! Reaping children and handing their exit statuses to whoever waits.
//!
//! Container inits and exec'd processes are children of the agent (and the
//! agent is a child subreaper, or PID 1 in a VM). One task reaps on every
//! `SIGCHLD` with `waitpid(-1, WNOHANG)`, while holding the runtime lock:
//! libcontainer waits for its own helper processes inside create/exec, and a
//! reaper running at the same time would steal those statuses. Statuses of
//! PIDs nobody has registered yet are kept (bounded) because a short-lived
//! process can exit before its creator registers it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tracing::{debug, warn};

use super::runtime::RUNTIME_LOCK;

/// Unclaimed exit statuses kept at most.
const MAX_UNCLAIMED: usize = 4096;

/// The exit status as Kata reports it: the exit code, or 128 + the signal.
pub type ExitStatus = i32;

/// Where exit statuses go.
#[derive(Debug, Default, Clone)]
pub struct Reaper {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<i32, watch::Sender<Option<ExitStatus>>>,
    unclaimed: HashMap<i32, ExitStatus>,
}

impl Reaper {
    /// A reaper with nothing registered; call [`Reaper::spawn`] to run it.
    pub fn new() -> Self {
        Reaper::default()
    }

    /// Registers `pid`; the receiver sees `Some(status)` once it exited
    /// (immediately if it already has).
    pub fn register(&self, pid: i32) -> watch::Receiver<Option<ExitStatus>> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (tx, rx) = watch::channel(inner.unclaimed.remove(&pid));
        inner.waiting.insert(pid, tx);
        rx
    }

    /// Reaps every exited child now (non-blocking).
    pub fn reap_now(&self) {
        let _runtime = RUNTIME_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid with a valid out pointer; WNOHANG never blocks.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status)
            } else if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                continue;
            };
            debug!(pid, status = code, "child exited");
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(tx) = inner.waiting.remove(&pid) {
                let _ = tx.send(Some(code));
            } else {
                if inner.unclaimed.len() >= MAX_UNCLAIMED {
                    warn!("too many unclaimed exit statuses; dropping the oldest");
                    if let Some(k) = inner.unclaimed.keys().next().copied() {
                        inner.unclaimed.remove(&k);
                    }
                }
                inner.unclaimed.insert(pid, code);
            }
        }
    }

    /// Makes the agent a child subreaper and reaps on every `SIGCHLD` (and
    /// once a second, in case a signal was coalesced) until the runtime
    /// stops.
    pub fn spawn(&self) -> std::io::Result<()> {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            warn!(error = %std::io::Error::last_os_error(), "could not become a child subreaper");
        }
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = sigchld.recv() => {}
                    _ = tick.tick() => {}
                }
                let r = me.clone();
                let _ = tokio::task::spawn_blocking(move || r.reap_now()).await;
            }
        });
        Ok(())
    }
}
