//! Directory-fd-relative filesystem operations that cannot leave a root.
//!
//! Every path that comes from a layer is resolved with `openat2` and
//! `RESOLVE_IN_ROOT`: `..` and symlinks (absolute or relative) are resolved as
//! if the root were `/`, so nothing a layer says can reach outside it. The
//! last component is then created or removed with an `*at` call relative to
//! the resolved parent, never through a path string.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};

/// Flags for resolving any layer-controlled path inside the root.
pub(crate) fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// Converts a rustix errno into `std::io::Error`.
pub(crate) fn ioe(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// Opens a directory (as `O_PATH`) at `rel` inside `root`, following symlinks
/// only within the root. `rel` empty means the root itself.
pub(crate) fn open_dir_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
) -> Result<OwnedFd, rustix::io::Errno> {
    open_dir_resolved(root, rel, in_root())
}

/// Opens the directory `rel` inside `root` through real directories only: a
/// symlink anywhere on the path fails with `ELOOP`, a non-directory with
/// `ENOTDIR`, a missing component with `ENOENT`.
pub(crate) fn open_dir_no_symlinks(
    root: BorrowedFd<'_>,
    rel: &[u8],
) -> Result<OwnedFd, rustix::io::Errno> {
    open_dir_resolved(root, rel, in_root() | ResolveFlags::NO_SYMLINKS)
}

fn open_dir_resolved(
    root: BorrowedFd<'_>,
    rel: &[u8],
    how: ResolveFlags,
) -> Result<OwnedFd, rustix::io::Errno> {
    let path = if rel.is_empty() {
        OsStr::new(".")
    } else {
        OsStr::from_bytes(rel)
    };
    rfs::openat2(
        root,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        how,
    )
}

/// Opens `rel`'s parent directory inside `root`, creating missing directories
/// (mode 0755, owned by us) like tar does for archives that omit them.
pub(crate) fn open_or_create_dir_in_root(
    root: BorrowedFd<'_>,
    rel: &[u8],
    created: &mut Vec<Vec<u8>>,
) -> Result<OwnedFd, rustix::io::Errno> {
    match open_dir_in_root(root, rel) {
        Err(rustix::io::Errno::NOENT) => {}
        other => return other,
    }
    // Slow path: walk the prefixes, creating what is missing. Each prefix is
    // resolved from the root again so a symlink in it is still confined.
    let mut end = 0;
    let mut parent = open_dir_in_root(root, b"")?;
    for comp in rel.split(|&b| b == b'/') {
        let start = end;
        end = start + comp.len() + usize::from(start != 0);
        let prefix = &rel[..end];
        match open_dir_in_root(root, prefix) {
            Ok(fd) => parent = fd,
            Err(rustix::io::Errno::NOENT) => {
                match rfs::mkdirat(&parent, OsStr::from_bytes(comp), Mode::from_raw_mode(0o755)) {
                    Ok(()) => created.push(prefix.to_vec()),
                    Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                parent = open_dir_in_root(root, prefix)?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(parent)
}

/// Removes `name` in `dir`, recursively if it is a directory, without ever
/// following a symlink.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    remove_all_depth(dir, name, 0)
}

fn remove_all_depth(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    if depth > 4096 {
        return Err(io::Error::other("directory tree too deep to remove"));
    }
    match rfs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(ioe(e)),
    }
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(ioe)?;
    clear_dir(fd.as_fd(), depth)?;
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(ioe)
}

/// Removes every entry inside the directory `fd` (opened for reading).
pub(crate) fn clear_dir(fd: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
    clear_dir_except(fd, depth, |_| false)
}

/// Removes entries of directory `fd` for which `keep` is false.
pub(crate) fn clear_dir_except(
    fd: BorrowedFd<'_>,
    depth: usize,
    keep: impl Fn(&[u8]) -> bool,
) -> io::Result<()> {
    let names: Vec<Vec<u8>> = {
        let dir = rfs::Dir::read_from(fd).map_err(ioe)?;
        let mut v = Vec::new();
        for ent in dir {
            let ent = ent.map_err(ioe)?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." && !keep(n) {
                v.push(n.to_vec());
            }
        }
        v
    };
    for n in names {
        remove_all_depth(fd, OsStr::from_bytes(&n), depth + 1)?;
    }
    Ok(())
}

/// `lstat` of `name` in `dir`, `None` when absent.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<rfs::Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(ioe(e)),
    }
}

/// The file type of a `stat` result.
pub(crate) fn file_type(st: &rfs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// `/proc/self/fd/N/name`: a path for the few calls (`lsetxattr`,
/// `llistxattr`) that have no `*at` form. Only used with names we created.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    let mut p = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(name);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_parents_and_confines_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = rfs::open(t.path(), OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        // A symlink pointing outside resolves inside the root instead; when
        // that in-root target is missing, opening fails rather than escaping.
        std::os::unix::fs::symlink(outside.path(), t.path().join("evil")).unwrap();
        assert!(open_or_create_dir_in_root(root.as_fd(), b"evil/sub", &mut Vec::new()).is_err());
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "wrote outside the root"
        );
        let inside = t.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        let fd = open_or_create_dir_in_root(root.as_fd(), b"evil/sub", &mut Vec::new()).unwrap();
        rfs::mkdirat(&fd, "made", Mode::from_raw_mode(0o755)).unwrap();
        assert!(
            inside.join("sub/made").is_dir(),
            "not created inside the root"
        );
        assert_eq!(
            std::fs::read_dir(outside.path()).unwrap().count(),
            0,
            "wrote outside the root"
        );
        // `..` is clamped at the root.
        let fd =
            open_or_create_dir_in_root(root.as_fd(), b"a/../../../b", &mut Vec::new()).unwrap();
        rfs::mkdirat(&fd, "x", Mode::from_raw_mode(0o755)).unwrap();
        assert!(t.path().join("b/x").is_dir());
    }

    #[test]
    fn remove_all_does_not_follow_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let keep = tempfile::tempdir().unwrap();
        std::fs::write(keep.path().join("precious"), b"x").unwrap();
        std::fs::create_dir_all(t.path().join("d/e")).unwrap();
        std::os::unix::fs::symlink(keep.path(), t.path().join("d/link")).unwrap();
        let root = rfs::open(t.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        remove_all_at(root.as_fd(), OsStr::new("d")).unwrap();
        assert!(!t.path().join("d").exists());
        assert!(keep.path().join("precious").exists());
    }
}
