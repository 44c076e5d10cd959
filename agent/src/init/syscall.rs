//! The OS calls the PID-1 sequence makes, behind a trait so that the
//! sequence is unit-tested without being PID 1 (youki's `Syscall` idea).
//!
//! [`LinuxSyscall`] makes the real calls; [`RecordingSyscall`] (tests) only
//! records them and fails the ones it is told to.

use std::io;
use std::path::Path;

use rustix::mount::{MountFlags, UnmountFlags};

/// What the agent as init asks of the kernel.
pub trait Syscall: Send + Sync {
    /// `mount(2)` of a pseudo filesystem (`data` = its options, may be empty).
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()>;
    /// `mount(2)` with `MS_MOVE`: moves the mount at `from` to `to`.
    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// `umount2(2)` with `MNT_DETACH`.
    fn unmount(&self, target: &Path) -> io::Result<()>;
    /// `chroot(2)`.
    fn chroot(&self, dir: &Path) -> io::Result<()>;
    /// `chdir(2)`.
    fn chdir(&self, dir: &Path) -> io::Result<()>;
    /// `mkdir -p`.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Reads a small file.
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
    /// Writes a small file (sysfs/cgroupfs knobs).
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// `finit_module(2)` of a plain (uncompressed) `.ko` file.
    fn load_module(&self, path: &Path) -> io::Result<()>;
    /// Sets a network link up (by name).
    fn link_up(&self, name: &str) -> io::Result<()>;
    /// Copies the tree at `from` into `to` (files, directories, symlinks;
    /// not `to` itself); returns the number of entries copied.
    fn copy_tree(&self, from: &Path, to: &Path) -> io::Result<u64>;
    /// `sync(2)`.
    fn sync(&self);
    /// `reboot(RB_POWER_OFF)`: returns only when it failed.
    fn power_off(&self) -> io::Error;
}

/// The real calls.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscall;

impl Syscall for LinuxSyscall {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MountFlags,
        data: &str,
    ) -> io::Result<()> {
        let data = std::ffi::CString::new(data)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in mount options"))?;
        rustix::mount::mount(source, target, fstype, flags, Some(data.as_c_str()))?;
        Ok(())
    }

    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        rustix::mount::mount_move(from, to)?;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        rustix::mount::unmount(target, UnmountFlags::DETACH)?;
        Ok(())
    }

    fn chroot(&self, dir: &Path) -> io::Result<()> {
        rustix::process::chroot(dir)?;
        Ok(())
    }

    fn chdir(&self, dir: &Path) -> io::Result<()> {
        rustix::process::chdir(dir)?;
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        std::fs::write(path, data)
    }

    fn load_module(&self, path: &Path) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(path)?;
        let params = c"";
        // SAFETY: finit_module reads from a valid open fd and a NUL-terminated
        // (empty) parameter string that outlives the call; flags 0. No memory
        // of this process is written.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                params.as_ptr(),
                0 as libc::c_int,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn link_up(&self, name: &str) -> io::Result<()> {
        crate::netlink::set_link_up_by_name(name).map_err(io::Error::other)
    }

    fn copy_tree(&self, from: &Path, to: &Path) -> io::Result<u64> {
        super::rootfs::copy_tree(from, to)
    }

    fn sync(&self) {
        rustix::fs::sync();
    }

    fn power_off(&self) -> io::Error {
        match rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
            Ok(()) => io::Error::other("reboot(RB_POWER_OFF) returned"),
            Err(e) => e.into(),
        }
    }
}

/// A test double: records every call as one line and fails what it is told.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct RecordingSyscall {
    /// The calls so far (`mount proc /proc proc`, `load /lib/modules/x.ko`, ...).
    pub calls: std::sync::Mutex<Vec<String>>,
    /// Files [`Syscall::read_to_string`] returns.
    pub files: std::collections::HashMap<String, String>,
    /// Calls (as recorded) that fail with `EINVAL`.
    pub fail: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Modules that load only after all of these are loaded (`name -> deps`).
    pub module_deps: std::collections::HashMap<String, Vec<String>>,
}

#[cfg(test)]
impl RecordingSyscall {
    fn record(&self, call: String) -> io::Result<()> {
        let failed = self
            .fail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&call);
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call);
        if failed {
            Err(io::Error::from_raw_os_error(libc::EINVAL))
        } else {
            Ok(())
        }
    }

    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
impl Syscall for RecordingSyscall {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        _flags: MountFlags,
        data: &str,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {source} {} {fstype} {data}",
            target.display()
        ))
    }
    fn move_mount(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.record(format!("move {} {}", from.display(), to.display()))
    }
    fn unmount(&self, target: &Path) -> io::Result<()> {
        self.record(format!("umount {}", target.display()))
    }
    fn chroot(&self, dir: &Path) -> io::Result<()> {
        self.record(format!("chroot {}", dir.display()))
    }
    fn chdir(&self, dir: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", dir.display()))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.record(format!("mkdir {}", path.display()))
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        let key = path.display().to_string();
        self.files
            .get(&key)
            .cloned()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
    }
    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        self.record(format!("write {} {data}", path.display()))
    }
    fn load_module(&self, path: &Path) -> io::Result<()> {
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let calls = self.calls();
        let fail = self.fail.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let loaded = |m: &String| {
            let call = format!("load {m}");
            calls.contains(&call) && !fail.contains(&call)
        };
        if let Some(deps) = self.module_deps.get(&name) {
            if !deps.iter().all(loaded) {
                self.calls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!("unresolved {name}"));
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
        }
        self.record(format!("load {name}"))
    }
    fn link_up(&self, name: &str) -> io::Result<()> {
        self.record(format!("link up {name}"))
    }
    fn copy_tree(&self, from: &Path, to: &Path) -> io::Result<u64> {
        self.record(format!("copy {} {}", from.display(), to.display()))?;
        Ok(0)
    }
    fn sync(&self) {
        let _ = self.record("sync".into());
    }
    fn power_off(&self) -> io::Error {
        let _ = self.record("power off".into());
        io::Error::other("not really powering off in a test")
    }
}
