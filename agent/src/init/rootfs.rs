//! Leaving the initramfs: the kernel starts init on `rootfs`, a filesystem
//! that cannot be unmounted and has no parent mount, so `pivot_root(2)`
//! (what libcontainer does for every container) fails with `EINVAL` there.
//! Like `switch_root`, the agent copies the initramfs into a tmpfs, moves
//! that tmpfs onto `/` and chroots into it before anything else runs.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;

use rustix::mount::MountFlags;
use tracing::info;

use super::syscall::Syscall;

/// Where the new root is built (a directory of the initramfs).
pub const NEW_ROOT: &str = "/.sealpod-root";

/// Copies the initramfs into a tmpfs and makes it the root.
pub fn switch_root(sys: &dyn Syscall) -> io::Result<()> {
    let new = Path::new(NEW_ROOT);
    sys.create_dir_all(new)?;
    sys.mount("tmpfs", new, "tmpfs", MountFlags::empty(), "mode=0755")?;
    let n = sys.copy_tree(Path::new("/"), new)?;
    sys.chdir(new)?;
    sys.move_mount(new, Path::new("/"))?;
    sys.chroot(Path::new("."))?;
    sys.chdir(Path::new("/"))?;
    info!(entries = n, "left the initramfs: / is a tmpfs");
    Ok(())
}

/// Copies directories, regular files (with their modes) and symlinks from
/// `from` to `to`, skipping `to` itself and device nodes, fifos and sockets.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<u64> {
    let mut n = 0;
    copy_dir(from, to, to, &mut n)?;
    Ok(n)
}

fn copy_dir(from: &Path, to: &Path, skip: &Path, n: &mut u64) -> io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let src = entry.path();
        if src == skip {
            continue;
        }
        let dst = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            std::fs::DirBuilder::new()
                .mode(meta.permissions().mode() & 0o7777)
                .create(&dst)
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            copy_dir(&src, &dst, skip, n)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            continue;
        }
        *n += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::syscall::RecordingSyscall;
    use super::*;

    #[test]
    fn switch_root_mounts_copies_moves_and_chroots() {
        let sys = RecordingSyscall::default();
        switch_root(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mkdir /.sealpod-root",
                "mount tmpfs /.sealpod-root tmpfs mode=0755",
                "copy / /.sealpod-root",
                "chdir /.sealpod-root",
                "move /.sealpod-root /",
                "chroot .",
                "chdir /",
            ]
        );
        let sys = RecordingSyscall::default();
        sys.fail
            .lock()
            .unwrap()
            .insert("mount tmpfs /.sealpod-root tmpfs mode=0755".into());
        assert!(switch_root(&sys).is_err());
        assert_eq!(sys.calls().len(), 2);
    }

    #[test]
    fn copies_files_dirs_and_symlinks_but_not_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/busybox"), b"elf").unwrap();
        std::fs::set_permissions(
            root.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        std::fs::write(root.join("init"), b"agent").unwrap();
        let new = root.join("new-root");
        std::fs::create_dir(&new).unwrap();
        let n = copy_tree(root, &new).unwrap();
        assert_eq!(n, 4);
        assert_eq!(std::fs::read(new.join("init")).unwrap(), b"agent");
        assert_eq!(
            std::fs::read_link(new.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        let mode = std::fs::metadata(new.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!new.join("new-root").exists());
    }
}
