//! What GetMetrics reports, in the Prometheus text format: per-method request
//! and denial counters (so an operator sees what the host asks and what the
//! policy refuses) and the agent's own footprint.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::methods;

/// Counters of one method.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MethodCounts {
    /// Requests received (allowed or denied).
    pub requests: u64,
    /// Requests the policy denied.
    pub denied: u64,
}

/// Per-method counters, shared by all connections.
#[derive(Debug, Default)]
pub struct Metrics {
    counts: Mutex<BTreeMap<&'static str, MethodCounts>>,
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a request to `method` (the ttrpc method name).
    pub fn record_request(&self, method: &'static str) {
        self.lock().entry(method).or_default().requests += 1;
    }

    /// Counts a policy denial of `method`.
    pub fn record_denied(&self, method: &'static str) {
        self.lock().entry(method).or_default().denied += 1;
    }

    /// The counters of `method`.
    pub fn counts(&self, method: &str) -> MethodCounts {
        self.lock().get(method).copied().unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, MethodCounts>> {
        // Counters stay meaningful even if a holder panicked.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renders everything as Prometheus text. Every method appears, with 0
    /// until it is called, so that rates work from the first scrape.
    pub fn render(&self) -> String {
        let counts = self.lock().clone();
        let mut out = String::new();
        header(
            &mut out,
            "sealpod_agent_info",
            "Agent build information.",
            "gauge",
        );
        out.push_str(&format!(
            "sealpod_agent_info{{version=\"{}\"}} 1\n",
            crate::AGENT_VERSION
        ));

        let per_method: [Family; 2] = [
            (
                "sealpod_agent_rpc_requests_total",
                "Requests received per ttrpc method, allowed or denied.",
                |c| c.requests,
            ),
            (
                "sealpod_agent_rpc_denied_total",
                "Requests denied by the agent policy per ttrpc method.",
                |c| c.denied,
            ),
        ];
        for (metric, help, get) in per_method {
            header(&mut out, metric, help, "counter");
            for m in methods::all() {
                let c = counts.get(m.method).copied().unwrap_or_default();
                out.push_str(&format!(
                    "{metric}{{method=\"{}\"}} {}\n",
                    m.method,
                    get(&c)
                ));
            }
        }

        if let Some(rss) = process_rss_bytes() {
            let name = "sealpod_agent_process_resident_memory_bytes";
            header(&mut out, name, "Resident set size of the agent.", "gauge");
            out.push_str(&format!("{name} {rss}\n"));
        }
        if let Some(fds) = open_fds() {
            let name = "sealpod_agent_process_open_fds";
            header(
                &mut out,
                name,
                "Open file descriptors of the agent.",
                "gauge",
            );
            out.push_str(&format!("{name} {fds}\n"));
        }
        out
    }
}

/// A per-method counter family: name, help, and which counter it shows.
type Family = (&'static str, &'static str, fn(&MethodCounts) -> u64);

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// Resident set size from `/proc/self/statm` (pages) times the page size.
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// Number of entries in `/proc/self/fd` (less the one used to list it).
pub fn open_fds() -> Option<u64> {
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders_every_method() {
        let m = Metrics::new();
        m.record_request("Check");
        m.record_request("Check");
        m.record_request("CopyFile");
        m.record_denied("CopyFile");
        assert_eq!(
            m.counts("Check"),
            MethodCounts {
                requests: 2,
                denied: 0
            }
        );
        let text = m.render();
        assert!(text.contains("sealpod_agent_rpc_requests_total{method=\"Check\"} 2\n"));
        assert!(text.contains("sealpod_agent_rpc_requests_total{method=\"CopyFile\"} 1\n"));
        assert!(text.contains("sealpod_agent_rpc_denied_total{method=\"CopyFile\"} 1\n"));
        assert!(text.contains("sealpod_agent_rpc_denied_total{method=\"CreateContainer\"} 0\n"));
        assert!(text.contains("# TYPE sealpod_agent_rpc_requests_total counter\n"));
        assert!(text.contains("sealpod_agent_process_resident_memory_bytes "));
        assert!(text.contains("sealpod_agent_process_open_fds "));
        assert!(text.contains(&format!(
            "sealpod_agent_info{{version=\"{}\"}} 1",
            crate::AGENT_VERSION
        )));
    }

    #[test]
    fn process_figures_are_plausible() {
        assert!(process_rss_bytes().unwrap() > 0);
        assert!(open_fds().unwrap() >= 3);
    }
}
