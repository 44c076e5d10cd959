//! Loading the kernel modules the guest needs (vsock transport, overlayfs,
//! virtio-net) from the initramfs.
//!
//! The list is a file (default `/lib/modules/load`), one plain `.ko` file
//! name per line relative to its directory (`#` comments allowed). There is
//! no `modules.dep` in the initramfs, so modules are loaded in passes: a
//! module whose dependencies are not in yet fails and is retried in the next
//! pass, until a pass loads nothing new.

use std::io;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::syscall::Syscall;

/// The default list of modules to load.
pub const MODULE_LIST: &str = "/lib/modules/load";

/// What loading did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ModuleReport {
    /// Loaded now or already present (`EEXIST`), in load order.
    pub loaded: Vec<String>,
    /// Still not loaded after the last pass, with the last error.
    pub failed: Vec<(String, String)>,
}

/// The module file names in a list file's text.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Loads the modules listed in `list` (paths relative to the list's
/// directory). A missing list file loads nothing.
pub fn load_listed(sys: &dyn Syscall, list: &Path) -> ModuleReport {
    let text = match sys.read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ModuleReport::default(),
        Err(e) => {
            warn!(list = %list.display(), error = %e, "reading the module list");
            return ModuleReport::default();
        }
    };
    let dir = list.parent().unwrap_or(Path::new("/"));
    let files: Vec<PathBuf> = parse_list(&text).iter().map(|m| dir.join(m)).collect();
    let report = load_in_passes(sys, &files);
    for (m, e) in &report.failed {
        warn!(module = %m, error = %e, "kernel module not loaded");
    }
    info!(loaded = ?report.loaded, failed = report.failed.len(), "kernel modules");
    report
}

/// Loads `files` in passes until a pass makes no progress.
pub fn load_in_passes(sys: &dyn Syscall, files: &[PathBuf]) -> ModuleReport {
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut pending: Vec<(&PathBuf, String)> = files.iter().map(|f| (f, String::new())).collect();
    let mut report = ModuleReport::default();
    loop {
        let before = pending.len();
        let mut still = Vec::new();
        for (file, _) in pending {
            match sys.load_module(file) {
                Ok(()) => report.loaded.push(name(file)),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => report.loaded.push(name(file)),
                Err(e) => still.push((file, e.to_string())),
            }
        }
        pending = still;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    report.failed = pending.into_iter().map(|(f, e)| (name(f), e)).collect();
    report
}

#[cfg(test)]
mod tests {
    use super::super::syscall::RecordingSyscall;
    use super::*;

    #[test]
    fn parses_lists_with_comments() {
        assert_eq!(
            parse_list("vsock.ko\n# transport\n  vmw_vsock_virtio_transport.ko # needs vsock\n\n"),
            ["vsock.ko", "vmw_vsock_virtio_transport.ko"]
        );
    }

    #[test]
    fn retries_in_passes_until_dependencies_are_in() {
        let mut sys = RecordingSyscall::default();
        // Listed in the wrong order: the transport needs common, common needs vsock.
        sys.module_deps.insert(
            "vmw_vsock_virtio_transport".into(),
            vec!["vmw_vsock_virtio_transport_common".into()],
        );
        sys.module_deps.insert(
            "vmw_vsock_virtio_transport_common".into(),
            vec!["vsock".into()],
        );
        sys.files.insert(
            "/lib/modules/load".into(),
            "vmw_vsock_virtio_transport.ko\nvmw_vsock_virtio_transport_common.ko\nvsock.ko\nbroken.ko\n"
                .into(),
        );
        sys.fail.lock().unwrap().insert("load broken".into());
        let r = load_listed(&sys, Path::new("/lib/modules/load"));
        assert_eq!(
            r.loaded,
            [
                "vsock.ko",
                "vmw_vsock_virtio_transport_common.ko",
                "vmw_vsock_virtio_transport.ko"
            ]
        );
        assert_eq!(r.failed.len(), 1);
        assert_eq!(r.failed[0].0, "broken.ko");
        // Three passes that made progress, then one that did not.
        let broken_tries = sys.calls().iter().filter(|c| *c == "load broken").count();
        assert_eq!(broken_tries, 4);
    }

    #[test]
    fn no_list_loads_nothing() {
        let sys = RecordingSyscall::default();
        assert_eq!(
            load_listed(&sys, Path::new("/lib/modules/load")),
            ModuleReport::default()
        );
    }
}
