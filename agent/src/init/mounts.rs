//! The filesystems a guest needs before the agent can serve: proc, sys,
//! devtmpfs, devpts, /dev/shm, /run, /tmp and the cgroup hierarchy.
//!
//! The guest uses cgroup v2 (unified) at `/sys/fs/cgroup`: Debian's 6.12
//! kernels no longer build the v1 memory and cpuset hierarchies, and
//! libcontainer and `container::stats` detect v2 by `cgroup.controllers`
//! there. Every available controller is enabled for children so that
//! container cgroups (`/sealpod/<id>`) get limits and stats.

use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;
use tracing::{info, warn};

use super::syscall::Syscall;

/// One mount of the init sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Source (`proc`, `tmpfs`, ...).
    pub source: &'static str,
    /// Mount point.
    pub target: &'static str,
    /// Filesystem type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: MountFlags,
    /// Filesystem options.
    pub data: &'static str,
}

/// Where the cgroup v2 hierarchy is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The mounts, parents first.
pub fn guest_mounts() -> Vec<Mount> {
    let nosuid_nodev = MountFlags::NOSUID | MountFlags::NODEV;
    let m = |source, target, fstype, flags, data| Mount {
        source,
        target,
        fstype,
        flags,
        data,
    };
    vec![
        m(
            "proc",
            "/proc",
            "proc",
            nosuid_nodev | MountFlags::NOEXEC,
            "",
        ),
        m(
            "sysfs",
            "/sys",
            "sysfs",
            nosuid_nodev | MountFlags::NOEXEC,
            "",
        ),
        m(
            "devtmpfs",
            "/dev",
            "devtmpfs",
            MountFlags::NOSUID,
            "mode=0755",
        ),
        m(
            "devpts",
            "/dev/pts",
            "devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        ),
        m("shm", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        m("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
        m("tmpfs", "/tmp", "tmpfs", nosuid_nodev, "mode=1777"),
        m(
            "cgroup2",
            CGROUP_ROOT,
            "cgroup2",
            nosuid_nodev | MountFlags::NOEXEC,
            "",
        ),
    ]
}

/// Mounts every filesystem of [`guest_mounts`]; returns the mount points
/// that succeeded (in order) and logs the ones that failed (the agent goes
/// on: a missing /tmp must not cost the whole guest).
pub fn mount_all(sys: &dyn Syscall) -> Vec<PathBuf> {
    let mut done = Vec::new();
    for m in guest_mounts() {
        let target = Path::new(m.target);
        if let Err(e) = sys.create_dir_all(target) {
            warn!(target = m.target, error = %e, "creating a mount point");
        }
        match sys.mount(m.source, target, m.fstype, m.flags, m.data) {
            Ok(()) => done.push(target.to_path_buf()),
            Err(e) => warn!(target = m.target, fstype = m.fstype, error = %e, "mount failed"),
        }
    }
    if let Err(e) = sys.link_up("lo") {
        warn!(error = %e, "bringing up lo");
    }
    done
}

/// Enables every controller of the root cgroup for its children (cgroup v2
/// delegates nothing by default).
pub fn enable_cgroup_controllers(sys: &dyn Syscall) {
    let root = Path::new(CGROUP_ROOT);
    let controllers = match sys.read_to_string(&root.join("cgroup.controllers")) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "no cgroup v2 hierarchy: containers get no cgroup limits");
            return;
        }
    };
    let enable: Vec<String> = controllers
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if enable.is_empty() {
        return;
    }
    // One write per controller: one the kernel refuses must not block the rest.
    let subtree = root.join("cgroup.subtree_control");
    for c in &enable {
        if let Err(e) = sys.write(&subtree, c) {
            warn!(controller = %c, error = %e, "enabling a cgroup controller");
        }
    }
    info!(controllers = %controllers.trim(), "cgroup v2 controllers enabled");
}

/// Detaches `mounted` deepest first (at power-off); errors are only logged.
pub fn unmount_all(sys: &dyn Syscall, mounted: &[PathBuf]) {
    for target in mounted.iter().rev() {
        if let Err(e) = sys.unmount(target) {
            warn!(target = %target.display(), error = %e, "unmount at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::syscall::RecordingSyscall;
    use super::*;

    #[test]
    fn mounts_in_order_and_keeps_going_after_a_failure() {
        let sys = RecordingSyscall::default();
        sys.fail
            .lock()
            .unwrap()
            .insert("mount tmpfs /tmp tmpfs mode=1777".into());
        let done = mount_all(&sys);
        let calls = sys.calls();
        let mounts: Vec<&String> = calls.iter().filter(|c| c.starts_with("mount ")).collect();
        assert_eq!(mounts.len(), 8, "{calls:#?}");
        assert_eq!(mounts[0], "mount proc /proc proc ");
        assert_eq!(mounts[2], "mount devtmpfs /dev devtmpfs mode=0755");
        assert_eq!(mounts[7], "mount cgroup2 /sys/fs/cgroup cgroup2 ");
        // /dev is mounted before /dev/pts and /dev/shm.
        let pos = |s: &str| calls.iter().position(|c| c.contains(s)).unwrap();
        assert!(pos("mount devtmpfs") < pos("mount devpts"));
        assert!(pos("mount sysfs") < pos("mount cgroup2"));
        assert_eq!(done.len(), 7);
        assert!(!done.contains(&PathBuf::from("/tmp")));
        assert_eq!(calls.last().unwrap(), "link up lo");

        let sys2 = RecordingSyscall::default();
        unmount_all(&sys2, &done);
        let calls = sys2.calls();
        assert_eq!(calls.first().unwrap(), "umount /sys/fs/cgroup");
        assert_eq!(calls.last().unwrap(), "umount /proc");
    }

    #[test]
    fn enables_every_root_controller() {
        let mut sys = RecordingSyscall::default();
        sys.files.insert(
            "/sys/fs/cgroup/cgroup.controllers".into(),
            "cpuset cpu io memory pids\n".into(),
        );
        sys.fail
            .lock()
            .unwrap()
            .insert("write /sys/fs/cgroup/cgroup.subtree_control +cpuset".into());
        enable_cgroup_controllers(&sys);
        let calls = sys.calls();
        assert_eq!(calls.len(), 5, "{calls:#?}");
        assert!(calls.contains(&"write /sys/fs/cgroup/cgroup.subtree_control +memory".into()));
        assert!(calls.contains(&"write /sys/fs/cgroup/cgroup.subtree_control +pids".into()));

        let sys = RecordingSyscall::default();
        enable_cgroup_controllers(&sys);
        assert!(sys.calls().is_empty());
    }
}
