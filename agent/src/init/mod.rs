//! The agent as the VM's init (PID 1), as in a Kata guest whose initramfs
//! holds only the agent: the same `guest-agent` binary, which detects that
//! it is PID 1 and prepares the guest before serving.
//!
//! The sequence ([`setup`]), one module per concept:
//!
//! | step | module |
//! | --- | --- |
//! | copy the initramfs into a tmpfs and make it `/` (containers need `pivot_root`) | [`rootfs`] |
//! | mount proc, sys, devtmpfs, devpts, /dev/shm, /run, /tmp, cgroup2; `lo` up | [`mounts`] |
//! | enable the cgroup v2 controllers for container cgroups | [`mounts`] |
//! | load the kernel modules listed in `/lib/modules/load` (vsock, overlay, virtio-net) | [`modules`] |
//! | power off on DestroySandbox, fatal error, panic or SIGTERM; never exit | [`shutdown`] |
//!
//! Orphans are reaped by the agent's SIGCHLD reaper (`container::reaper`),
//! which as PID 1 reaps every process of the guest. The OS calls go
//! through [`Syscall`] so that the sequence is unit-tested here without
//! being PID 1. Configuration stays where it is outside a VM: `agent.*`
//! parameters on the kernel command line.

pub mod modules;
pub mod mounts;
pub mod rootfs;
pub mod shutdown;
pub mod syscall;

use std::path::{Path, PathBuf};

use tracing::warn;

pub use syscall::{LinuxSyscall, Syscall};

/// Whether this process is PID 1.
pub fn is_pid1() -> bool {
    rustix::process::getpid().as_raw_nonzero().get() == 1
}

/// What [`setup`] did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Whether `/` is now a tmpfs (else containers cannot `pivot_root`).
    pub switched_root: bool,
    /// The mount points mounted, in order.
    pub mounted: Vec<PathBuf>,
    /// Kernel modules loaded and failed.
    pub modules: modules::ModuleReport,
}

/// Prepares the guest: new root, mounts, cgroup controllers, modules.
/// Failures of single steps are logged and the sequence goes on (a guest
/// that serves can still be asked what is wrong); the report says what
/// worked.
pub fn setup(sys: &dyn Syscall, module_list: &Path) -> InitReport {
    let switched_root = match rootfs::switch_root(sys) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "could not leave the initramfs: containers will fail to pivot_root");
            false
        }
    };
    let mounted = mounts::mount_all(sys);
    mounts::enable_cgroup_controllers(sys);
    let modules = modules::load_listed(sys, module_list);
    shutdown::remember_mounts(mounted.clone());
    InitReport {
        switched_root,
        mounted,
        modules,
    }
}

#[cfg(test)]
mod tests {
    use super::syscall::RecordingSyscall;
    use super::*;

    #[test]
    fn whole_sequence_in_order() {
        let mut sys = RecordingSyscall::default();
        sys.files
            .insert("/lib/modules/load".into(), "vsock.ko\noverlay.ko\n".into());
        sys.files.insert(
            "/sys/fs/cgroup/cgroup.controllers".into(),
            "memory pids".into(),
        );
        let r = setup(&sys, Path::new("/lib/modules/load"));
        assert!(r.switched_root);
        assert_eq!(r.mounted.len(), 8);
        assert_eq!(r.modules.loaded, ["vsock.ko", "overlay.ko"]);
        let calls = sys.calls();
        let pos = |s: &str| {
            calls
                .iter()
                .position(|c| c.starts_with(s))
                .unwrap_or_else(|| panic!("{s} not in {calls:#?}"))
        };
        assert!(pos("chroot") < pos("mount proc"));
        assert!(pos("mount cgroup2") < pos("write /sys/fs/cgroup/cgroup.subtree_control"));
        assert!(pos("mount sysfs") < pos("load vsock"));
        assert!(!is_pid1());
    }
}
