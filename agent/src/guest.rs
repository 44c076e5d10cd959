//! Facts about the guest that the host asks for in GetGuestDetails, so the
//! runtime can align memory hotplug and learn what this agent can do.

use std::path::{Path, PathBuf};

/// Storage drivers this agent handles (`Storage.driver` values).
pub const STORAGE_HANDLERS: &[&str] = &["image_guest_pull"];

/// Device drivers this agent handles (none yet).
pub const DEVICE_HANDLERS: &[&str] = &[];

/// Whether the agent is the guest's init (PID 1), as in a Kata guest.
pub fn is_init_process() -> bool {
    std::process::id() == 1
}

/// Why a guest fact could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// A sysfs file exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A sysfs file holds something unexpected.
    #[error("{path} holds {content:?}, expected a hexadecimal number")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Its content.
        content: String,
    },
}

/// The sysfs tree to read (`/sys`; a fake tree in tests).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            root: PathBuf::from("/sys"),
        }
    }
}

impl Sysfs {
    /// A sysfs tree rooted elsewhere.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Sysfs { root: root.into() }
    }

    fn memory(&self) -> PathBuf {
        self.root.join("devices/system/memory")
    }

    /// The memory block size (hotplug granularity) in bytes; `None` when the
    /// kernel has no memory hotplug (the file is absent).
    pub fn memory_block_size(&self) -> Result<Option<u64>, GuestError> {
        let path = self.memory().join("block_size_bytes");
        let content = match std::fs::read_to_string(&path) {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(GuestError::Read { path, source }),
        };
        match parse_hex(&content) {
            Some(size) => Ok(Some(size)),
            None => Err(GuestError::Parse { path, content }),
        }
    }

    /// Whether memory can be hot-added through the probe interface.
    pub fn memory_probe_supported(&self) -> bool {
        Path::new(&self.memory().join("probe")).exists()
    }
}

/// sysfs prints `block_size_bytes` in hex without a `0x` prefix.
fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_block_size_in_hex_and_probe() {
        let dir = tempfile::tempdir().unwrap();
        let sys = Sysfs::at(dir.path());
        assert_eq!(sys.memory_block_size().unwrap(), None);
        assert!(!sys.memory_probe_supported());

        let mem = dir.path().join("devices/system/memory");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("block_size_bytes"), "8000000\n").unwrap();
        std::fs::write(mem.join("probe"), "").unwrap();
        assert_eq!(sys.memory_block_size().unwrap(), Some(128 << 20));
        assert!(sys.memory_probe_supported());

        std::fs::write(mem.join("block_size_bytes"), "lots\n").unwrap();
        assert!(matches!(
            sys.memory_block_size(),
            Err(GuestError::Parse { .. })
        ));
    }

    #[test]
    fn real_sysfs_is_readable() {
        // Present on this machine's kernel; the value is a power of two.
        if let Some(size) = Sysfs::default().memory_block_size().unwrap() {
            assert!(size.is_power_of_two(), "{size}");
        }
        assert!(!is_init_process());
    }
}
