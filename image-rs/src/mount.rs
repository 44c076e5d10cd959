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
    let fail = |how: &str, e: rustix::io::Errno| {
        Error::Rootfs {
        path: target.to_path_buf(),
        reason: format!(
            "mounting overlayfs ({} layers{how}) failed: {e}; overlay needs root and a kernel with overlayfs",
            lowers.len()
        ),
    }
    };
    if opts.len() < 4000 {
        let data = std::ffi::CString::new(opts).map_err(|_| Error::Rootfs {
            path: target.to_path_buf(),
            reason: "NUL byte in overlay options".into(),
        })?;
        return mount(
            "overlay",
            target,
            "overlay",
            MountFlags::empty(),
            Some(data.as_c_str()),
        )
        .map_err(|e| fail("", e));
    }
    // Too long for mount(2)'s one-page option string (many layers): the new
    // mount API takes each lower directory separately ("lowerdir+", 6.8+).
    mount_overlay_fsconfig(target, lowers, upper, work)
        .map_err(|e| fail(", via fsconfig lowerdir+", e))
}

fn mount_overlay_fsconfig(
    target: &Path,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> rustix::io::Result<()> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
    for l in lowers {
        fsconfig_set_string(&fs, "lowerdir+", l)?;
    }
    fsconfig_set_string(&fs, "upperdir", upper)?;
    fsconfig_set_string(&fs, "workdir", work)?;
    fsconfig_create(&fs)?;
    let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
    move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mount_layers(n: usize, name_len: usize) {
        let t = tempfile::tempdir().unwrap();
        let mut lowers = Vec::new();
        for i in 0..n {
            let d = t.path().join(format!("{i:0>width$}", width = name_len));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join(format!("f{i}")), i.to_string()).unwrap();
            std::fs::write(d.join("top"), i.to_string()).unwrap();
            lowers.push(d);
        }
        lowers.reverse(); // top first
        let (u, w, m) = (t.path().join("u"), t.path().join("w"), t.path().join("m"));
        for d in [&u, &w, &m] {
            std::fs::create_dir(d).unwrap();
        }
        mount_overlay(&m, &lowers, &u, &w).unwrap();
        let seen: Vec<_> = (0..n).map(|i| m.join(format!("f{i}")).exists()).collect();
        let top = std::fs::read_to_string(m.join("top")).unwrap();
        unmount_rootfs(&m).unwrap();
        assert!(
            seen.iter().all(|&s| s),
            "a layer is missing from the merged view"
        );
        assert_eq!(top, (n - 1).to_string(), "layer order wrong");
    }

    #[test]
    fn mounts_few_and_many_layers() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: mounting overlayfs needs root");
            return;
        }
        mount_layers(3, 8);
        // 80 layers x ~200-byte paths: far over mount(2)'s one-page limit.
        mount_layers(80, 150);
    }
}
