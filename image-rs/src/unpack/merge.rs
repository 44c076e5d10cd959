//! Flat layout: applies overlayfs-format layer directories, in order, onto
//! one plain directory tree, the way overlayfs would present them merged.
//!
//! Whiteouts (char 0/0) delete, opaque directories replace their lower
//! content, a non-directory replaces a directory and vice versa. Files are
//! copied (`copy_file_range`, so the kernel moves the bytes), never hard
//! linked to the store: the rootfs must not be able to change a shared layer.
//! Everything is done with directory fds and `O_NOFOLLOW`, so the merge never
//! follows a symlink either.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Timestamps, XattrFlags,
};

use super::fsutil::{self, ioe, remove_all_at};
use super::{write_all_fd, OVERLAY_OPAQUE_XATTR};

/// Applies the layer directory `layer` on top of the tree at `dest`.
/// `implicit` lists the directories the layer used without an entry of its
/// own (see [`crate::store::Store::implicit_dirs`]).
pub fn merge_layer(layer: &Path, dest: &Path, implicit: &[Vec<u8>]) -> io::Result<MergeStats> {
    let open = |p: &Path| {
        rfs::open(
            p,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(ioe)
    };
    let src = open(layer)?;
    let dst = open(dest)?;
    let mut m = Merger {
        implicit: implicit.iter().cloned().collect(),
        links: HashMap::new(),
        dst_root: dst.try_clone()?,
        is_root: rustix::process::geteuid().is_root(),
        stats: MergeStats::default(),
        buf: vec![0; 128 * 1024],
    };
    if has_opaque(&src) {
        // `.wh..wh..opq` at the top of a layer hides everything below it.
        fsutil::clear_dir(dst.as_fd(), 0)?;
    }
    m.merge_dir(src.as_fd(), dst.as_fd(), b"", 0)?;
    Ok(m.stats)
}

/// What a merge did.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeStats {
    /// Entries copied or linked.
    pub entries: u64,
    /// Whiteouts applied.
    pub whiteouts: u64,
    /// Bytes copied.
    pub bytes: u64,
}

struct Merger {
    implicit: HashSet<Vec<u8>>,
    /// Source (dev, ino) of multiply-linked files -> where the first copy went.
    links: HashMap<(u64, u64), Vec<u8>>,
    dst_root: OwnedFd,
    is_root: bool,
    stats: MergeStats,
    buf: Vec<u8>,
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Merger {
    fn merge_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &[u8],
        depth: usize,
    ) -> io::Result<()> {
        if depth > 2048 {
            return Err(io::Error::other("directory tree too deep"));
        }
        let names: Vec<Vec<u8>> = rfs::Dir::read_from(src)
            .map_err(ioe)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_bytes().to_vec())
            .filter(|n| n != b"." && n != b"..")
            .collect();
        for name in names {
            let n = OsStr::from_bytes(&name);
            let st = rfs::statat(src, n, AtFlags::SYMLINK_NOFOLLOW).map_err(ioe)?;
            let ft = fsutil::file_type(&st);
            let path = join(rel, &name);
            let ctx = |e: io::Error| {
                io::Error::new(e.kind(), format!("{}: {e}", String::from_utf8_lossy(&path)))
            };
            match ft {
                FileType::CharacterDevice if st.st_rdev == 0 => {
                    remove_all_at(dst, n).map_err(ctx)?;
                    self.stats.whiteouts += 1;
                }
                FileType::Directory => {
                    let s = rfs::openat(
                        src,
                        n,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(ioe)
                    .map_err(ctx)?;
                    let mut existed = false;
                    match fsutil::lstat_at(dst, n).map_err(ctx)? {
                        Some(d) if fsutil::file_type(&d) == FileType::Directory => existed = true,
                        Some(_) => {
                            rfs::unlinkat(dst, n, AtFlags::empty())
                                .map_err(ioe)
                                .map_err(ctx)?;
                            rfs::mkdirat(dst, n, Mode::from_raw_mode(0o700))
                                .map_err(ioe)
                                .map_err(ctx)?;
                        }
                        None => rfs::mkdirat(dst, n, Mode::from_raw_mode(0o700))
                            .map_err(ioe)
                            .map_err(ctx)?,
                    }
                    let d = rfs::openat(
                        dst,
                        n,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(ioe)
                    .map_err(ctx)?;
                    if has_opaque(&s) {
                        fsutil::clear_dir(d.as_fd(), depth).map_err(ctx)?;
                    }
                    self.merge_dir(s.as_fd(), d.as_fd(), &path, depth + 1)?;
                    // A directory the layer only implied keeps the metadata
                    // the lower layers gave it; an explicit one sets it all.
                    if !(existed && self.implicit.contains(&path)) {
                        copy_dir_meta(&s, &d, &st, self.is_root, existed).map_err(ctx)?;
                    }
                    self.stats.entries += 1;
                }
                _ => {
                    self.copy_nondir(src, dst, n, &st, &path).map_err(ctx)?;
                    self.stats.entries += 1;
                }
            }
        }
        Ok(())
    }

    fn copy_nondir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        n: &OsStr,
        st: &rfs::Stat,
        path: &[u8],
    ) -> io::Result<()> {
        let ft = fsutil::file_type(st);
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let target = rfs::openat2(
                    &self.dst_root,
                    OsStr::from_bytes(first),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    fsutil::in_root(),
                )
                .map_err(ioe)?;
                return replacing(dst, n, || {
                    rfs::linkat(&target, "", dst, n, AtFlags::EMPTY_PATH)
                });
            }
            self.links.insert(key, path.to_vec());
        }
        match ft {
            FileType::RegularFile => {
                let s = rfs::openat(
                    src,
                    n,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(ioe)?;
                let d = replacing(dst, n, || {
                    rfs::openat(
                        dst,
                        n,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                })?;
                self.copy_data(&s, &d, st.st_size as u64)?;
                self.copy_meta_fd(&s, &d, st)?;
                rfs::futimens(&d, &times_of(st)).map_err(ioe)?;
            }
            FileType::Symlink => {
                let target = rfs::readlinkat(src, n, Vec::new()).map_err(ioe)?;
                replacing(dst, n, || rfs::symlinkat(target.as_c_str(), dst, n))?;
                self.copy_meta_at(src, dst, n, st)?;
            }
            FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                replacing(dst, n, || {
                    rfs::mknodat(dst, n, ft, Mode::from_raw_mode(0o600), st.st_rdev)
                })?;
                self.copy_meta_at(src, dst, n, st)?;
            }
            _ => {} // sockets are not layer content
        }
        Ok(())
    }

    fn copy_data(&mut self, s: &OwnedFd, d: &OwnedFd, size: u64) -> io::Result<()> {
        let mut left = size;
        while left > 0 {
            match rfs::copy_file_range(s, None, d, None, left.min(1 << 30) as usize) {
                Ok(0) => break,
                Ok(n) => left -= n as u64,
                Err(rustix::io::Errno::INTR) => {}
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::INVAL
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP,
                ) => {
                    loop {
                        let n = rustix::io::read(s, &mut self.buf).map_err(ioe)?;
                        if n == 0 {
                            break;
                        }
                        write_all_fd(d, &self.buf[..n])?;
                    }
                    break;
                }
                Err(e) => return Err(ioe(e)),
            }
        }
        self.stats.bytes += size;
        Ok(())
    }

    fn copy_meta_fd(&self, s: &OwnedFd, d: &OwnedFd, st: &rfs::Stat) -> io::Result<()> {
        if self.is_root && (st.st_uid != 0 || st.st_gid != 0) {
            rfs::fchown(
                d,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
            )
            .map_err(ioe)?;
        }
        rfs::fchmod(d, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(ioe)?;
        for (k, v) in list_xattrs_fd(s)? {
            rfs::fsetxattr(d, OsStr::from_bytes(&k), &v, XattrFlags::empty()).map_err(ioe)?;
        }
        Ok(())
    }

    fn copy_meta_at(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        n: &OsStr,
        st: &rfs::Stat,
    ) -> io::Result<()> {
        if self.is_root && (st.st_uid != 0 || st.st_gid != 0) {
            rfs::chownat(
                dst,
                n,
                Some(rfs::Uid::from_raw(st.st_uid)),
                Some(rfs::Gid::from_raw(st.st_gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(ioe)?;
        }
        let ft = fsutil::file_type(st);
        if ft != FileType::Symlink {
            rfs::chmodat(
                dst,
                n,
                Mode::from_raw_mode(st.st_mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(ioe)?;
        }
        let sp = fsutil::proc_path(src, n);
        let dp = fsutil::proc_path(dst, n);
        for (k, v) in list_xattrs_path(&sp)? {
            rfs::lsetxattr(&dp, OsStr::from_bytes(&k), &v, XattrFlags::empty()).map_err(ioe)?;
        }
        rfs::utimensat(dst, n, &times_of(st), AtFlags::SYMLINK_NOFOLLOW).map_err(ioe)
    }
}

/// Sets owner, mode, xattrs and mtime of directory `d` from `s`. On a
/// directory that `existed` before, xattrs `s` lacks are removed and the
/// owner is set even when it is root: every attribute of the entry wins.
fn copy_dir_meta(
    s: &OwnedFd,
    d: &OwnedFd,
    st: &rfs::Stat,
    is_root: bool,
    existed: bool,
) -> io::Result<()> {
    if is_root && (existed || st.st_uid != 0 || st.st_gid != 0) {
        rfs::fchown(
            d,
            Some(rfs::Uid::from_raw(st.st_uid)),
            Some(rfs::Gid::from_raw(st.st_gid)),
        )
        .map_err(ioe)?;
    }
    rfs::fchmod(d, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(ioe)?;
    let want = list_xattrs_fd(s)?;
    if existed {
        for (k, _) in list_xattrs_fd(d)? {
            if !want.iter().any(|(w, _)| *w == k) {
                rfs::fremovexattr(d, OsStr::from_bytes(&k)).map_err(ioe)?;
            }
        }
    }
    for (k, v) in want {
        rfs::fsetxattr(d, OsStr::from_bytes(&k), &v, XattrFlags::empty()).map_err(ioe)?;
    }
    rfs::futimens(d, &times_of(st)).map_err(ioe)
}

fn open_dir_exact(root: &Path, rel: &[u8]) -> Option<OwnedFd> {
    let r = rfs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    rfs::openat2(
        &r,
        OsStr::from_bytes(rel),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::BENEATH,
    )
    .ok()
}

/// The layer (index into `layers`, base first) whose directory `rel` gives
/// the merged view its metadata: the topmost that has it explicitly, else the
/// topmost that has it at all.
fn metadata_source(layers: &[(PathBuf, HashSet<Vec<u8>>)], rel: &[u8]) -> Option<usize> {
    let mut any = None;
    for (i, (fs, implicit)) in layers.iter().enumerate().rev() {
        if open_dir_exact(fs, rel).is_some() {
            if !implicit.contains(rel) {
                return Some(i);
            }
            any.get_or_insert(i);
        }
    }
    any
}

/// Overlay layout: overlayfs shows a directory with the metadata of the
/// topmost layer that has it. Where that is a directory a layer only implied,
/// writes the right metadata (from the lower layer that really made it) into
/// the mount's private upper directory, ancestors first. Returns how many
/// directories it fixed.
pub fn overlay_fixups(layers: &[(PathBuf, HashSet<Vec<u8>>)], upper: &Path) -> io::Result<usize> {
    let all: std::collections::BTreeSet<&Vec<u8>> =
        layers.iter().flat_map(|(_, i)| i.iter()).collect();
    let is_root = rustix::process::geteuid().is_root();
    let mut fixed = 0;
    for rel in all {
        let top = layers
            .iter()
            .rposition(|(fs, _)| open_dir_exact(fs, rel).is_some());
        let (Some(top), Some(src)) = (top, metadata_source(layers, rel)) else {
            continue;
        };
        if top == src {
            continue; // the visible directory is already the right one
        }
        // Create the path in the upper dir, giving each new ancestor its
        // own merged metadata too.
        let mut end = 0;
        for comp in rel.split(|&b| b == b'/') {
            end += comp.len() + usize::from(end != 0);
            let prefix = &rel[..end];
            let up = upper.join(OsStr::from_bytes(prefix));
            let created = match fs::create_dir(&up) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(e),
            };
            if created || prefix == rel.as_slice() {
                if let Some(i) = metadata_source(layers, prefix) {
                    let (Some(s), Ok(d)) = (
                        open_dir_exact(&layers[i].0, prefix),
                        rfs::open(
                            &up,
                            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                            Mode::empty(),
                        ),
                    ) else {
                        continue;
                    };
                    let st = rfs::fstat(&s).map_err(ioe)?;
                    copy_dir_meta(&s, &d, &st, is_root, true)?;
                }
            }
        }
        fixed += 1;
    }
    Ok(fixed)
}

/// Runs `create`; when the name is taken by what lower layers left there,
/// removes it (recursively for a directory) and runs `create` again.
fn replacing<T>(
    dst: BorrowedFd<'_>,
    n: &OsStr,
    create: impl Fn() -> rustix::io::Result<T>,
) -> io::Result<T> {
    match create() {
        Err(rustix::io::Errno::EXIST) => {
            remove_all_at(dst, n)?;
            create().map_err(ioe)
        }
        other => other.map_err(ioe),
    }
}

fn times_of(st: &rfs::Stat) -> Timestamps {
    let t = rustix::time::Timespec {
        tv_sec: st.st_mtime as _,
        tv_nsec: st.st_mtime_nsec as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn has_opaque(dir: &OwnedFd) -> bool {
    let mut v = [0u8; 4];
    matches!(rfs::fgetxattr(dir, OVERLAY_OPAQUE_XATTR, &mut v[..]), Ok(n) if &v[..n] == b"y")
}

/// Splits a NUL-separated xattr name list, dropping overlay's own names.
fn names_of(list: &[u8]) -> impl Iterator<Item = &[u8]> {
    list.split(|&b| b == 0)
        .filter(|n| !n.is_empty() && !n.starts_with(b"trusted.overlay."))
}

fn list_xattrs_fd(fd: &OwnedFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = vec![0u8; 4096];
    let n = match rfs::flistxattr(fd, &mut list[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::RANGE) => {
            list = vec![0u8; 65536];
            rfs::flistxattr(fd, &mut list[..]).map_err(ioe)?
        }
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => return Err(ioe(e)),
    };
    let mut out = Vec::new();
    for name in names_of(&list[..n]) {
        let mut v = vec![0u8; 65536];
        let len = rfs::fgetxattr(fd, OsStr::from_bytes(name), &mut v[..]).map_err(ioe)?;
        v.truncate(len);
        out.push((name.to_vec(), v));
    }
    Ok(out)
}

fn list_xattrs_path(p: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut list = vec![0u8; 65536];
    let n = match rfs::llistxattr(p, &mut list[..]) {
        Ok(n) => n,
        Err(rustix::io::Errno::NOTSUP) => 0,
        Err(e) => return Err(ioe(e)),
    };
    let mut out = Vec::new();
    for name in names_of(&list[..n]) {
        let mut v = vec![0u8; 65536];
        let len = rfs::lgetxattr(p, OsStr::from_bytes(name), &mut v[..]).map_err(ioe)?;
        v.truncate(len);
        out.push((name.to_vec(), v));
    }
    Ok(out)
}
