//! OOM events for GetOOMEvent: each container's cgroup OOM-kill counter
//! (`memory.events` on cgroup v2, `memory.oom_control` on v1) is watched
//! while the container exists; every increase queues the container's ID,
//! and GetOOMEvent (a long poll, as in Kata) takes the next one.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::Duration;

use tokio::sync::{mpsc, Mutex};

use super::stats::{container_cgroup, is_v2, CGROUP_ROOT};
use super::{Container, ContainerError, Containers};

/// How often the counters are read.
const POLL: Duration = Duration::from_millis(200);

/// The queue of containers that had an OOM kill.
#[derive(Debug)]
pub struct OomEvents {
    tx: mpsc::UnboundedSender<String>,
    rx: Mutex<mpsc::UnboundedReceiver<String>>,
}

impl Default for OomEvents {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        OomEvents {
            tx,
            rx: Mutex::new(rx),
        }
    }
}

/// The file holding the `oom_kill` counter of cgroup `rel` under `root`.
pub fn counter_file(root: &Path, rel: &str) -> PathBuf {
    if is_v2(root) {
        root.join(rel).join("memory.events")
    } else {
        root.join("memory").join(rel).join("memory.oom_control")
    }
}

/// The `oom_kill` value of a `memory.events` / `memory.oom_control` text.
pub fn oom_kills(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

impl Containers {
    /// Watches `c`'s cgroup until the container is dropped.
    pub(super) fn watch_oom(&self, c: Weak<Container>, id: String) {
        let file = counter_file(Path::new(CGROUP_ROOT), &container_cgroup(&id));
        let tx = self.oom.tx.clone();
        tokio::spawn(async move {
            let read = || {
                std::fs::read_to_string(&file)
                    .map(|t| oom_kills(&t))
                    .unwrap_or(0)
            };
            let mut seen = read();
            loop {
                tokio::time::sleep(POLL).await;
                if c.upgrade().is_none() {
                    return;
                }
                let now = read();
                if now > seen {
                    seen = now;
                    if tx.send(id.clone()).is_err() {
                        return;
                    }
                }
            }
        });
    }

    /// The ID of the next container with an OOM kill (waits for one).
    pub async fn next_oom(&self) -> Result<String, ContainerError> {
        self.oom.rx.lock().await.recv().await.ok_or_else(|| {
            ContainerError::FailedPrecondition("the OOM event queue is closed".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_parsed() {
        assert_eq!(
            oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            3
        );
        assert_eq!(oom_kills("low 0\nhigh 0\nmax 5\noom 2\noom_kill 2\n"), 2);
        assert_eq!(oom_kills("garbage"), 0);
        let t = tempfile::tempdir().unwrap();
        assert!(
            counter_file(t.path(), "sealpod/c").ends_with("memory/sealpod/c/memory.oom_control")
        );
        std::fs::write(t.path().join("cgroup.controllers"), "memory").unwrap();
        assert!(counter_file(t.path(), "sealpod/c").ends_with("sealpod/c/memory.events"));
    }
}
