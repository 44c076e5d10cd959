//! Small filesystem edits for building rootfs content inside [`crate::images::LayerBuilder`]
//! closures: files with modes and owners, fifos, device nodes, xattrs.
//!
//! They return `io::Result` so a closure can `?` them; paths are relative to a root.
//! Order matters for special bits: `chown` clears setuid/setgid, so [`write_owned`] chowns
//! before it chmods.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rustix::fs::{FileType, Mode, XattrFlags, CWD};

/// Creates directory `root/rel` (parents too) with `mode`.
pub fn mkdir(root: &Path, rel: &str, mode: u32) -> io::Result<()> {
    let p = root.join(rel);
    fs::create_dir_all(&p)?;
    chmod(&p, mode)
}

/// Writes `root/rel` with `content` and `mode` (parents created as needed).
pub fn write(root: &Path, rel: &str, content: &[u8], mode: u32) -> io::Result<()> {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&p, content)?;
    chmod(&p, mode)
}

/// Writes `root/rel` owned by `uid:gid` with `mode` (setuid/setgid bits survive because
/// the chown happens first).
pub fn write_owned(
    root: &Path,
    rel: &str,
    content: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    write(root, rel, content, 0o600)?;
    let p = root.join(rel);
    chown(&p, uid, gid)?;
    chmod(&p, mode)
}

/// Sets all mode bits of `path` (including 0o7000), following no symlink semantics of
/// its own: do not call it on a symlink.
pub fn chmod(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Changes the owner of `path` itself (not a symlink's target).
pub fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Creates a fifo at `root/rel` with `mode`.
pub fn mkfifo(root: &Path, rel: &str, mode: u32) -> io::Result<()> {
    let p = root.join(rel);
    rustix::fs::mknodat(CWD, &p, FileType::Fifo, Mode::from_raw_mode(mode), 0)?;
    chmod(&p, mode)
}

/// Creates a character device node `root/rel` (`major`, `minor`); needs root.
pub fn mknod_char(root: &Path, rel: &str, major: u32, minor: u32, mode: u32) -> io::Result<()> {
    let p = root.join(rel);
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(
        CWD,
        &p,
        FileType::CharacterDevice,
        Mode::from_raw_mode(mode),
        dev,
    )?;
    chmod(&p, mode)
}

/// Sets extended attribute `name` (e.g. `user.sealpod`) on `path` itself.
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty())?;
    Ok(())
}

/// Creates symlink `root/rel -> target` (target written verbatim).
pub fn symlink(root: &Path, rel: &str, target: &str) -> io::Result<()> {
    std::os::unix::fs::symlink(target, root.join(rel))
}

/// Hard-links `root/new` to the existing `root/existing`.
pub fn hard_link(root: &Path, existing: &str, new: &str) -> io::Result<()> {
    fs::hard_link(root.join(existing), root.join(new))
}

/// Removes `root/rel`, whatever it is (file, symlink, or directory tree).
pub fn remove(root: &Path, rel: &str) -> io::Result<()> {
    let p = root.join(rel);
    if fs::symlink_metadata(&p)?.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}
