//! Powering the VM off: the only way the agent as PID 1 ever ends (a PID 1
//! that exits panics the kernel).
//!
//! DestroySandbox, a fatal start-up error, a panic or SIGTERM all come here:
//! sync, detach what was mounted, sync again, `reboot(RB_POWER_OFF)`. If
//! even that fails the agent sleeps forever rather than exit.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tracing::{error, info};

use super::mounts;
use super::syscall::{LinuxSyscall, Syscall};

/// The mounts the init sequence made (unmounted at power-off).
static MOUNTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Records what [`super::setup`] mounted.
pub(crate) fn remember_mounts(mounted: Vec<PathBuf>) {
    *MOUNTED.lock().unwrap_or_else(|e| e.into_inner()) = mounted;
}

/// The power-off sequence; returns the error of `reboot` (it only returns
/// when powering off failed).
pub fn shutdown_sequence(sys: &dyn Syscall, mounted: &[PathBuf]) -> std::io::Error {
    info!("powering off");
    sys.sync();
    mounts::unmount_all(sys, mounted);
    sys.sync();
    sys.power_off()
}

/// Powers the VM off; never returns.
pub fn power_off() -> ! {
    let mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let e = shutdown_sequence(&LinuxSyscall, &mounted);
    error!(error = %e, "power off failed: halting here");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Powers the VM off after `delay` (lets the reply to DestroySandbox go out
/// first), from a thread of its own.
pub fn power_off_after(delay: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        power_off();
    });
}

#[cfg(test)]
mod tests {
    use super::super::syscall::RecordingSyscall;
    use super::*;

    #[test]
    fn syncs_unmounts_then_powers_off() {
        let sys = RecordingSyscall::default();
        let mounted = vec![PathBuf::from("/proc"), PathBuf::from("/run")];
        sys.fail.lock().unwrap().insert("umount /run".into());
        let e = shutdown_sequence(&sys, &mounted);
        assert!(e.to_string().contains("not really"));
        assert_eq!(
            sys.calls(),
            ["sync", "umount /run", "umount /proc", "sync", "power off"]
        );
    }
}
