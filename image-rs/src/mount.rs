//! The overlay rootfs: the shared read-only layers as lower directories and
//! a private upper directory per rootfs, so containers never write to the
//! store.

use std::path::{Path, PathBuf};

use rustix::mount::{mount, unmount, MountFlags, UnmountFlags};

use crate::error::Error;

/// Mounts overlayfs at `target` with `lowers` (top layer first), `upper` and
/// `work` (same filesystem as each other, empty).
pub fn mount_overlay(
    target: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<(), Error> {
    for p in lowers
        .iter()
        .map(|p| p.as_path())
        .chain([upper, work, target])
    {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains(':') || s.contains('\\') {
            return Err(Error::Rootfs {
                path: p.to_path_buf(),
                reason: "paths given to overlayfs must not contain ',', ':' or '\\'".into(),
            });
        }
    }
    let lower = lowers
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if opts.len() >= 4000 {
        return Err(Error::Rootfs {
            path: target.to_path_buf(),
            reason: format!(
                "overlay mount options are {} bytes, over the kernel's page limit; use a store path that is shorter",
                opts.len()
            ),
        });
    }
    let data = std::ffi::CString::new(opts).map_err(|_| Error::Rootfs {
        path: target.to_path_buf(),
        reason: "NUL byte in overlay options".into(),
    })?;
    mount("overlay", target, "overlay", MountFlags::empty(), Some(data.as_c_str())).map_err(|e| Error::Rootfs {
        path: target.to_path_buf(),
        reason: format!(
            "mounting overlayfs ({} layers) failed: {e}; overlay needs root and a kernel with overlayfs",
            lowers.len()
        ),
    })
}

/// Unmounts the rootfs at `target`.
pub fn unmount_rootfs(target: &Path) -> Result<(), Error> {
    unmount(target, UnmountFlags::empty()).map_err(|e| Error::Rootfs {
        path: target.to_path_buf(),
        reason: format!("unmount failed: {e}"),
    })
}

/// Whether `path` is a mount point (its device differs from its parent's).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(m), Some(parent)) = (std::fs::symlink_metadata(path), path.parent()) else {
        return false;
    };
    match std::fs::metadata(parent) {
        Ok(p) => p.dev() != m.dev() || p.ino() == m.ino(),
        Err(_) => false,
    }
}
