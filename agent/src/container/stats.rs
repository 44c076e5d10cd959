//! StatsContainer: CPU, memory and PID figures read from the container's
//! cgroup (`/sealpod/<id>`), on cgroup v1 (per-controller hierarchies, as on
//! hybrid hosts) or v2 (the unified hierarchy, as in the guest).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{ContainerError, Containers};

/// The cgroup filesystem root.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// USER_HZ, the unit of `cpuacct.stat` (100 on every Linux architecture).
const USER_HZ: u64 = 100;

/// A container's resource usage (zero where the controller is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Total CPU time, ns.
    pub cpu_total_ns: u64,
    /// Per-CPU time, ns (v1 only).
    pub cpu_percpu_ns: Vec<u64>,
    /// CPU time in the kernel, ns.
    pub cpu_kernel_ns: u64,
    /// CPU time in user space, ns.
    pub cpu_user_ns: u64,
    /// CFS periods.
    pub throttle_periods: u64,
    /// Throttled periods.
    pub throttled_periods: u64,
    /// Throttled time, ns.
    pub throttled_ns: u64,
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// Peak memory, bytes.
    pub memory_max_usage: u64,
    /// Memory limit, bytes (u64::MAX = none).
    pub memory_limit: u64,
    /// Times the limit was hit.
    pub memory_failcnt: u64,
    /// Page cache, bytes.
    pub memory_cache: u64,
    /// Swap in use, bytes.
    pub swap_usage: u64,
    /// `memory.stat`.
    pub memory_stat: HashMap<String, u64>,
    /// Processes.
    pub pids_current: u64,
    /// Process limit (0 = none).
    pub pids_limit: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Whether `root` is a cgroup v2 (unified) hierarchy.
pub fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// The cgroup (relative to the root) of container `id`: the agent puts
/// every container under its own `/sealpod/` parent.
pub fn container_cgroup(id: &str) -> String {
    format!("sealpod/{id}")
}

/// Reads the stats of cgroup `rel` (e.g. `sealpod/c1`) under `root`.
pub fn read(root: &Path, rel: &str) -> Stats {
    if is_v2(root) {
        read_v2(&root.join(rel))
    } else {
        read_v1(root, rel)
    }
}

fn read_v2(dir: &Path) -> Stats {
    let cpu = read_kv(&dir.join("cpu.stat"));
    let mem = read_kv(&dir.join("memory.stat"));
    let events = read_kv(&dir.join("memory.events"));
    let us = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
    let pids_limit = read_u64(&dir.join("pids.max")).unwrap_or(0);
    Stats {
        cpu_total_ns: us("usage_usec"),
        cpu_percpu_ns: Vec::new(),
        cpu_kernel_ns: us("system_usec"),
        cpu_user_ns: us("user_usec"),
        throttle_periods: cpu.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
        throttled_ns: us("throttled_usec"),
        memory_usage: read_u64(&dir.join("memory.current")).unwrap_or(0),
        memory_max_usage: read_u64(&dir.join("memory.peak")).unwrap_or(0),
        memory_limit: read_u64(&dir.join("memory.max")).unwrap_or(u64::MAX),
        memory_failcnt: events.get("max").copied().unwrap_or(0),
        memory_cache: mem.get("file").copied().unwrap_or(0),
        swap_usage: read_u64(&dir.join("memory.swap.current")).unwrap_or(0),
        memory_stat: mem,
        pids_current: read_u64(&dir.join("pids.current")).unwrap_or(0),
        pids_limit: if pids_limit == u64::MAX {
            0
        } else {
            pids_limit
        },
    }
}

fn read_v1(root: &Path, rel: &str) -> Stats {
    let ctl = |c: &str| -> PathBuf { root.join(c).join(rel) };
    let acct = ctl("cpuacct");
    let cpu = read_kv(&ctl("cpu").join("cpu.stat"));
    let ticks = read_kv(&acct.join("cpuacct.stat"));
    let mem_dir = ctl("memory");
    let mem = read_kv(&mem_dir.join("memory.stat"));
    let tick_ns = 1_000_000_000 / USER_HZ;
    let usage = read_u64(&mem_dir.join("memory.usage_in_bytes")).unwrap_or(0);
    let pids_limit = read_u64(&ctl("pids").join("pids.max")).unwrap_or(0);
    Stats {
        cpu_total_ns: read_u64(&acct.join("cpuacct.usage")).unwrap_or(0),
        cpu_percpu_ns: std::fs::read_to_string(acct.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect(),
        cpu_kernel_ns: ticks.get("system").copied().unwrap_or(0) * tick_ns,
        cpu_user_ns: ticks.get("user").copied().unwrap_or(0) * tick_ns,
        throttle_periods: cpu.get("nr_periods").copied().unwrap_or(0),
        throttled_periods: cpu.get("nr_throttled").copied().unwrap_or(0),
        throttled_ns: cpu.get("throttled_time").copied().unwrap_or(0),
        memory_usage: usage,
        memory_max_usage: read_u64(&mem_dir.join("memory.max_usage_in_bytes")).unwrap_or(0),
        memory_limit: read_u64(&mem_dir.join("memory.limit_in_bytes")).unwrap_or(u64::MAX),
        memory_failcnt: read_u64(&mem_dir.join("memory.failcnt")).unwrap_or(0),
        memory_cache: mem.get("cache").copied().unwrap_or(0),
        swap_usage: read_u64(&mem_dir.join("memory.memsw.usage_in_bytes"))
            .map(|sw| sw.saturating_sub(usage))
            .unwrap_or(0),
        memory_stat: mem,
        pids_current: read_u64(&ctl("pids").join("pids.current")).unwrap_or(0),
        pids_limit: if pids_limit == u64::MAX {
            0
        } else {
            pids_limit
        },
    }
}

impl Containers {
    /// The resource usage of container `cid`.
    pub fn stats(&self, cid: &str) -> Result<Stats, ContainerError> {
        let c = self.get(cid)?;
        Ok(read(Path::new(CGROUP_ROOT), &container_cgroup(&c.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files_are_read() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let d = t.path().join("sealpod/c1");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\nnr_throttled 1\nthrottled_usec 7\n").unwrap();
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(d.join("memory.max"), "max\n").unwrap();
        std::fs::write(d.join("memory.stat"), "anon 1024\nfile 2048\n").unwrap();
        std::fs::write(d.join("pids.current"), "2\n").unwrap();
        std::fs::write(d.join("pids.max"), "32\n").unwrap();
        let s = read(t.path(), "sealpod/c1");
        assert_eq!(
            (s.cpu_total_ns, s.cpu_user_ns, s.cpu_kernel_ns),
            (1_500_000, 1_000_000, 500_000)
        );
        assert_eq!(
            (s.throttle_periods, s.throttled_periods, s.throttled_ns),
            (3, 1, 7000)
        );
        assert_eq!(
            (s.memory_usage, s.memory_limit, s.memory_cache),
            (4096, u64::MAX, 2048)
        );
        assert_eq!((s.pids_current, s.pids_limit), (2, 32));
    }

    #[test]
    fn v1_files_are_read() {
        let t = tempfile::tempdir().unwrap();
        let w = |ctl: &str, f: &str, v: &str| {
            let d = t.path().join(ctl).join("sealpod/c1");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(f), v).unwrap();
        };
        w("cpuacct", "cpuacct.usage", "900\n");
        w("cpuacct", "cpuacct.usage_percpu", "400 500 \n");
        w("cpuacct", "cpuacct.stat", "user 2\nsystem 1\n");
        w("memory", "memory.usage_in_bytes", "8192\n");
        w("memory", "memory.limit_in_bytes", "67108864\n");
        w("memory", "memory.stat", "cache 4096\nrss 4096\n");
        w("pids", "pids.current", "1\n");
        w("pids", "pids.max", "max\n");
        let s = read(t.path(), "sealpod/c1");
        assert_eq!(s.cpu_total_ns, 900);
        assert_eq!(s.cpu_percpu_ns, vec![400, 500]);
        assert_eq!((s.cpu_user_ns, s.cpu_kernel_ns), (20_000_000, 10_000_000));
        assert_eq!(
            (s.memory_usage, s.memory_limit, s.memory_cache),
            (8192, 67108864, 4096)
        );
        assert_eq!((s.pids_current, s.pids_limit), (1, 0));
    }
}
