//! Secure, streaming unpack of one layer tar into an overlayfs-format
//! directory: the security boundary between a hostile layer and the guest.
//!
//! A layer becomes a directory where whiteouts are overlayfs whiteouts (char
//! device 0/0) and opaque directories carry `trusted.overlay.opaque=y`. That
//! one format serves both layouts: overlay mounts it as a lower directory;
//! flat merges it onto a rootfs ([`merge`]).
//!
//! Rules enforced here:
//! - entry names with `..` components or a leading `/` are refused; every
//!   path is resolved inside the layer root (`openat2(RESOLVE_IN_ROOT)`), so
//!   symlinks written by the layer cannot lead outside it;
//! - hard links must name an earlier entry of the same layer;
//! - device nodes are skipped unless allowed; `trusted.overlay.*` xattrs from
//!   the layer are dropped (they would forge whiteouts/redirects);
//! - limits on bytes, entries, path length and per-entry metadata (long
//!   names, PAX headers) stop decompression bombs;
//! - owners, modes (incl. setuid), mtimes and xattrs are kept (when root),
//!   with one metadata pass per entry; directory mtimes are set last.
//!
//! We use the `tar` crate to parse headers and write everything else with
//! `*at()` calls on directory fds, on the caller's (blocking) thread.

mod fsutil;
pub mod merge;

use std::cell::Cell;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::time::Timespec;

use fsutil::{ioe, lstat_at, open_dir_in_root, open_or_create_dir_in_root, remove_all_at};

/// The xattr overlayfs uses to mark a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Bounds on what one layer may make us do.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content in one layer.
    pub max_layer_bytes: u64,
    /// Number of tar entries in one layer.
    pub max_entries: u64,
    /// Length of an entry path in bytes.
    pub max_path_len: usize,
    /// Bytes of metadata (long names, PAX records) before one entry.
    pub max_entry_metadata: u64,
    /// Whether char/block device entries are created (otherwise skipped).
    pub allow_devices: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_layer_bytes: 32 << 30,
            max_entries: 2_000_000,
            max_path_len: 4096,
            max_entry_metadata: 1 << 20,
            allow_devices: false,
        }
    }
}

/// What went wrong unpacking a layer.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry tried to step outside the root or is otherwise hostile.
    #[error("hostile entry {path:?}: {reason}; the layer was refused and nothing of it was kept")]
    Hostile {
        /// The entry name as found in the archive (lossy UTF-8).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A limit was exceeded (decompression bomb or absurd archive).
    #[error("layer exceeds the {what} limit of {limit}; raise it only if you trust the image")]
    Limit {
        /// Which limit.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The archive is malformed or the stream failed.
    #[error("reading the layer archive: {0}")]
    Archive(#[source] io::Error),
    /// A filesystem operation failed.
    #[error("{op} {path:?}: {source}")]
    Fs {
        /// Which operation.
        op: &'static str,
        /// The entry path.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Counts of what a layer contained.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UnpackStats {
    /// Entries processed.
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Device entries skipped because devices are not allowed.
    pub skipped_devices: u64,
}

/// Shared counter of bytes the tar parser reads outside entry data.
#[derive(Debug, Clone, Default)]
struct MetaBudget {
    in_meta: Rc<Cell<bool>>,
    used: Rc<Cell<u64>>,
    limit: u64,
}

/// Reader that refuses to let the tar parser buffer unbounded metadata (a
/// GNU long name or PAX header of gigabytes would otherwise be read into
/// memory by the parser).
struct MetaGuard<R> {
    inner: R,
    budget: MetaBudget,
}

impl<R: Read> Read for MetaGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.budget.in_meta.get() {
            let used = self.budget.used.get() + n as u64;
            self.budget.used.set(used);
            if used > self.budget.limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, MetaTooLarge));
            }
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct MetaTooLarge;
impl std::fmt::Display for MetaTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tar metadata before one entry is too large")
    }
}
impl std::error::Error for MetaTooLarge {}

/// Normalizes an entry name: strips `./` and empty components; refuses `..`
/// and absolute names. Returns the components joined by `/` ("" = root).
fn normalize(raw: &[u8], max_len: usize) -> Result<Vec<u8>, UnpackError> {
    let hostile = |reason| UnpackError::Hostile {
        path: String::from_utf8_lossy(&raw[..raw.len().min(256)]).into_owned(),
        reason,
    };
    if raw.len() > max_len {
        return Err(UnpackError::Limit {
            what: "path length",
            limit: max_len as u64,
        });
    }
    if raw.first() == Some(&b'/') {
        return Err(hostile("absolute path"));
    }
    if raw.contains(&0) {
        return Err(hostile("NUL byte in name"));
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => return Err(hostile("`..` path component")),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Entry metadata gathered from the header and PAX records.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    mtime_nsec: u32,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Unpacks a layer tar into an overlayfs-format directory.
#[derive(Debug)]
pub struct LayerUnpacker {
    root: OwnedFd,
    limits: Limits,
    is_root: bool,
    stats: UnpackStats,
    dir_times: Vec<(Vec<u8>, i64, u32)>,
    parent_cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    implicit_dirs: std::collections::BTreeSet<Vec<u8>>,
    created: Vec<Vec<u8>>,
    buf: Vec<u8>,
}

impl LayerUnpacker {
    /// Prepares to unpack into the empty directory `dest`.
    pub fn new(dest: &Path, limits: Limits) -> Result<Self, UnpackError> {
        let root = rfs::open(
            dest,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| UnpackError::Fs {
            op: "open layer directory",
            path: dest.display().to_string(),
            source: ioe(e),
        })?;
        Ok(LayerUnpacker {
            root,
            limits,
            is_root: rustix::process::geteuid().is_root(),
            stats: UnpackStats::default(),
            dir_times: Vec::new(),
            parent_cache: None,
            implicit_dirs: Default::default(),
            created: Vec::new(),
            buf: vec![0; 256 * 1024],
        })
    }

    /// Reads the whole tar stream from `reader` and applies it. The reader is
    /// consumed up to the end-of-archive marker; the caller drains the rest.
    pub fn unpack<R: Read>(self, reader: R) -> Result<(UnpackStats, R), UnpackError> {
        self.unpack_with_implicit(reader).map(|(s, _, r)| (s, r))
    }

    /// Like [`LayerUnpacker::unpack`], also returning the directories the
    /// archive used without having an entry for them ("implicit" parents).
    /// Their metadata is not the layer's to decide: it comes from the lower
    /// layers when the rootfs is assembled.
    pub fn unpack_with_implicit<R: Read>(
        mut self,
        reader: R,
    ) -> Result<(UnpackStats, Vec<Vec<u8>>, R), UnpackError> {
        let budget = MetaBudget {
            limit: self.limits.max_entry_metadata,
            ..MetaBudget::default()
        };
        let guard = MetaGuard {
            inner: reader,
            budget: budget.clone(),
        };
        let mut archive = tar::Archive::new(guard);
        {
            let mut entries = archive.entries().map_err(UnpackError::Archive)?;
            loop {
                budget.in_meta.set(true);
                budget.used.set(0);
                let next = entries.next();
                budget.in_meta.set(false);
                let Some(entry) = next else { break };
                let entry = entry.map_err(|e| {
                    if e.get_ref().is_some_and(|i| i.is::<MetaTooLarge>()) {
                        UnpackError::Limit {
                            what: "per-entry metadata (long name / PAX header) size",
                            limit: self.limits.max_entry_metadata,
                        }
                    } else {
                        UnpackError::Archive(e)
                    }
                })?;
                self.stats.entries += 1;
                if self.stats.entries > self.limits.max_entries {
                    return Err(UnpackError::Limit {
                        what: "entry count",
                        limit: self.limits.max_entries,
                    });
                }
                self.apply_entry(entry)?;
            }
        }
        self.finish_dirs()?;
        let implicit = std::mem::take(&mut self.implicit_dirs)
            .into_iter()
            .collect();
        Ok((self.stats, implicit, archive.into_inner().inner))
    }

    fn apply_entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = normalize(&raw_path, self.limits.max_path_len)?;
        let etype = entry.header().entry_type();
        let meta = self.read_meta(&mut entry, &path)?;
        let fs_err = |op: &'static str, e: io::Error| UnpackError::Fs {
            op,
            path: String::from_utf8_lossy(&path).into_owned(),
            source: e,
        };
        if path.is_empty() {
            // The root itself ("./"): its metadata belongs to the rootfs, not
            // to a layer; skip like other unpackers do.
            return Ok(());
        }
        let (parent_rel, name) = split_parent(&path);
        let name_os = OsStr::from_bytes(name);

        // Whiteouts (OCI image spec): `.wh..wh..opq` marks the parent opaque,
        // `.wh.NAME` deletes NAME from lower layers.
        if let Some(target) = name.strip_prefix(b".wh.") {
            // A whiteout names a path of the lower layers. When this layer replaced a
            // directory on that path by a file or a symlink (umoci writes `d` then
            // `d/.wh.sub`), everything below it is hidden already and the whiteout
            // has nothing left to delete; following the symlink instead would delete
            // (or fail on) whatever it points to.
            if let Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) =
                fsutil::open_dir_no_symlinks(self.root.as_fd(), parent_rel)
            {
                return Ok(());
            }
            let parent = self
                .parent(parent_rel)
                .map_err(|e| fs_err("open the parent directory of", e))?;
            if target == b".wh..opq" {
                let fd = rfs::openat(
                    &parent,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fs_err("open opaque directory", ioe(e)))?;
                if self.is_root {
                    rfs::fsetxattr(&fd, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                        .map_err(|e| fs_err("mark opaque", ioe(e)))?;
                }
                return Ok(());
            }
            if target.starts_with(b".wh.") || target.is_empty() {
                return Ok(()); // other AUFS metadata: meaningless here
            }
            let t = OsStr::from_bytes(target);
            self.create_or_replace(&parent, t, false, |p| {
                rfs::mknodat(
                    p,
                    t,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rfs::makedev(0, 0),
                )
            })
            .map_err(|e| fs_err("create whiteout", e))?;
            return Ok(());
        }

        let parent = self
            .parent(parent_rel)
            .map_err(|e| fs_err("open the parent directory of", e))?;
        match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let size = entry.size();
                self.charge(size)?;
                let fd = self
                    .create_or_replace(&parent, name_os, false, |p| {
                        rfs::openat(
                            p,
                            name_os,
                            OFlags::WRONLY
                                | OFlags::CREATE
                                | OFlags::EXCL
                                | OFlags::NOFOLLOW
                                | OFlags::CLOEXEC,
                            Mode::from_raw_mode(0o600),
                        )
                    })
                    .map_err(|e| fs_err("create file", e))?;
                let mut written = 0u64;
                loop {
                    let n = match entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(UnpackError::Archive(e)),
                    };
                    written += n as u64;
                    if written > size {
                        return Err(UnpackError::Hostile {
                            path: String::from_utf8_lossy(&path).into_owned(),
                            reason: "file data longer than its header says",
                        });
                    }
                    write_all_fd(&fd, &self.buf[..n]).map_err(|e| fs_err("write", e))?;
                }
                self.stats.bytes += written;
                self.set_meta_fd(&fd, &meta, true)
                    .map_err(|e| fs_err("set metadata on", e))?;
            }
            tar::EntryType::Directory => {
                let existing = lstat_at(parent.as_fd(), name_os).map_err(|e| fs_err("stat", e))?;
                match existing.map(|s| fsutil::file_type(&s)) {
                    Some(FileType::Directory) => {}
                    Some(_) => {
                        self.replace_existing(&parent, name_os, false)
                            .map_err(|e| fs_err("replace", e))?;
                        mkdir(&parent, name_os).map_err(|e| fs_err("create directory", e))?;
                    }
                    None => mkdir(&parent, name_os).map_err(|e| fs_err("create directory", e))?,
                }
                let fd = rfs::openat(
                    &parent,
                    name_os,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| fs_err("open directory", ioe(e)))?;
                self.set_meta_fd(&fd, &meta, false)
                    .map_err(|e| fs_err("set metadata on", e))?;
                self.dir_times
                    .push((path.clone(), meta.mtime, meta.mtime_nsec));
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(UnpackError::Hostile {
                        path: String::from_utf8_lossy(&path).into_owned(),
                        reason: "empty or invalid symlink target",
                    });
                }
                self.create_or_replace(&parent, name_os, true, |p| {
                    rfs::symlinkat(OsStr::from_bytes(&target), p, name_os)
                })
                .map_err(|e| fs_err("create symlink", e))?;
                self.set_meta_at(&parent, name_os, &meta)
                    .map_err(|e| fs_err("set metadata on", e))?;
            }
            tar::EntryType::Link => {
                let raw_target = entry
                    .link_name_bytes()
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                let target = normalize(&raw_target, self.limits.max_path_len)?;
                if target.is_empty() {
                    return Err(UnpackError::Hostile {
                        path: String::from_utf8_lossy(&path).into_owned(),
                        reason: "hard link to the root",
                    });
                }
                let src = rfs::openat2(
                    &self.root,
                    OsStr::from_bytes(&target),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    fsutil::in_root(),
                )
                .map_err(|e| UnpackError::Fs {
                    op: "find hard link target (it must be an earlier entry of the same layer) for",
                    path: String::from_utf8_lossy(&path).into_owned(),
                    source: ioe(e),
                })?;
                let st =
                    rfs::fstat(&src).map_err(|e| fs_err("stat hard link target of", ioe(e)))?;
                if fsutil::file_type(&st) == FileType::Directory {
                    return Err(UnpackError::Hostile {
                        path: String::from_utf8_lossy(&path).into_owned(),
                        reason: "hard link to a directory",
                    });
                }
                self.create_or_replace(&parent, name_os, false, |p| {
                    rfs::linkat(&src, "", p, name_os, AtFlags::EMPTY_PATH)
                })
                .map_err(|e| fs_err("create hard link", e))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match etype {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if ft != FileType::Fifo && !self.limits.allow_devices {
                    self.stats.skipped_devices += 1;
                    tracing::warn!(entry = %String::from_utf8_lossy(&path), "device node skipped (devices not allowed)");
                    return Ok(());
                }
                let h = entry.header();
                let dev = rfs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                if ft != FileType::Fifo && dev == rfs::makedev(0, 0) {
                    return Err(UnpackError::Hostile {
                        path: String::from_utf8_lossy(&path).into_owned(),
                        reason: "char device 0/0 is reserved for whiteouts",
                    });
                }
                self.create_or_replace(&parent, name_os, false, |p| {
                    rfs::mknodat(p, name_os, ft, Mode::from_raw_mode(0o600), dev)
                })
                .map_err(|e| fs_err("create node", e))?;
                self.set_meta_at(&parent, name_os, &meta)
                    .map_err(|e| fs_err("set metadata on", e))?;
            }
            other => {
                tracing::warn!(entry = %String::from_utf8_lossy(&path), kind = ?other, "unsupported tar entry type skipped");
            }
        }
        Ok(())
    }

    fn charge(&mut self, size: u64) -> Result<(), UnpackError> {
        if self.stats.bytes.saturating_add(size) > self.limits.max_layer_bytes {
            return Err(UnpackError::Limit {
                what: "unpacked layer size (bytes)",
                limit: self.limits.max_layer_bytes,
            });
        }
        Ok(())
    }

    fn read_meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        path: &[u8],
    ) -> Result<Meta, UnpackError> {
        let h = entry.header();
        let mut m = Meta {
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime: h.mtime().unwrap_or(0) as i64,
            mtime_nsec: 0,
            xattrs: Vec::new(),
        };
        let bad = |e: io::Error| UnpackError::Archive(e);
        if let Some(pax) = entry.pax_extensions().map_err(bad)? {
            for ext in pax {
                let ext = ext.map_err(bad)?;
                let Ok(key) = ext.key() else { continue };
                let val = ext.value_bytes();
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if name.starts_with("trusted.overlay.") {
                        tracing::warn!(entry = %String::from_utf8_lossy(path), xattr = name, "overlay xattr from layer dropped");
                        continue;
                    }
                    m.xattrs.push((name.as_bytes().to_vec(), val.to_vec()));
                    continue;
                }
                let num = || std::str::from_utf8(val).ok();
                match key {
                    "uid" => m.uid = num().and_then(|s| s.parse().ok()).unwrap_or(m.uid),
                    "gid" => m.gid = num().and_then(|s| s.parse().ok()).unwrap_or(m.gid),
                    "mtime" => {
                        if let Some(s) = num() {
                            let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
                            if let Ok(secs) = secs.parse() {
                                m.mtime = secs;
                                let mut f: String = frac.chars().take(9).collect();
                                while f.len() < 9 {
                                    f.push('0');
                                }
                                m.mtime_nsec = f.parse().unwrap_or(0);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(m)
    }

    /// Opens the parent directory of an entry (cached: archives are grouped
    /// by directory).
    fn parent(&mut self, rel: &[u8]) -> io::Result<Rc<OwnedFd>> {
        if let Some((p, fd)) = &self.parent_cache {
            if p == rel {
                return Ok(fd.clone());
            }
        }
        let fd = open_or_create_dir_in_root(self.root.as_fd(), rel, &mut self.created);
        self.implicit_dirs.extend(self.created.drain(..));
        let fd = fd.map_err(|e| match e {
            rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR => io::Error::new(
                ioe(e).kind(),
                "the path goes through a symlink whose target is missing from the layer or is not a directory \
                 (symlinks resolve inside the layer root, never outside)",
            ),
            e => ioe(e),
        })?;
        let fd = Rc::new(fd);
        self.parent_cache = Some((rel.to_vec(), fd.clone()));
        Ok(fd)
    }

    /// Runs `create`; if something already has the name (a later entry of
    /// an archive replaces an earlier one), removes it and tries once more.
    fn create_or_replace<T>(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        new_is_symlink: bool,
        create: impl Fn(&OwnedFd) -> rustix::io::Result<T>,
    ) -> io::Result<T> {
        if new_is_symlink {
            self.parent_cache = None;
        }
        match create(parent) {
            Err(rustix::io::Errno::EXIST) => {
                self.replace_existing(parent, name, new_is_symlink)?;
                create(parent).map_err(ioe)
            }
            other => other.map_err(ioe),
        }
    }

    /// Removes whatever is at `name` so a new entry can take its place. Any
    /// removal or new symlink can change how later paths resolve, so the
    /// parent cache is dropped.
    fn replace_existing(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        new_is_symlink: bool,
    ) -> io::Result<()> {
        if new_is_symlink {
            self.parent_cache = None;
        }
        match rfs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {
                self.parent_cache = None;
                remove_all_at(parent.as_fd(), name)
            }
            Err(e) => Err(ioe(e)),
        }
    }

    fn set_meta_fd(&self, fd: &OwnedFd, m: &Meta, is_file: bool) -> io::Result<()> {
        if self.is_root && (m.uid != 0 || m.gid != 0) {
            rfs::fchown(
                fd,
                Some(rfs::Uid::from_raw(m.uid)),
                Some(rfs::Gid::from_raw(m.gid)),
            )
            .map_err(ioe)?;
        }
        // chmod after chown: chown clears setuid/setgid.
        rfs::fchmod(fd, Mode::from_raw_mode(m.mode)).map_err(ioe)?;
        for (k, v) in &m.xattrs {
            set_xattr_fd(fd, k, v)?;
        }
        if is_file {
            rfs::futimens(fd, &times(m.mtime, m.mtime_nsec)).map_err(ioe)?;
        }
        Ok(())
    }

    fn set_meta_at(&self, parent: &OwnedFd, name: &OsStr, m: &Meta) -> io::Result<()> {
        if self.is_root && (m.uid != 0 || m.gid != 0) {
            rfs::chownat(
                parent,
                name,
                Some(rfs::Uid::from_raw(m.uid)),
                Some(rfs::Gid::from_raw(m.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(ioe)?;
        }
        let st = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(ioe)?;
        if fsutil::file_type(&st) != FileType::Symlink {
            rfs::chmodat(parent, name, Mode::from_raw_mode(m.mode), AtFlags::empty())
                .map_err(ioe)?;
        }
        for (k, v) in &m.xattrs {
            let p = fsutil::proc_path(parent.as_fd(), name);
            rfs::lsetxattr(&p, OsStr::from_bytes(k), v, XattrFlags::empty()).map_err(|e| {
                io::Error::new(
                    ioe(e).kind(),
                    format!("set xattr {}: {e}", String::from_utf8_lossy(k)),
                )
            })?;
        }
        rfs::utimensat(
            parent,
            name,
            &times(m.mtime, m.mtime_nsec),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(ioe)
    }

    /// Directory mtimes change as children are created: set them last,
    /// deepest first.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dir_times);
        for (path, secs, nsec) in dirs.into_iter().rev() {
            let Ok(fd) = open_dir_in_root(self.root.as_fd(), &path) else {
                continue;
            };
            // O_PATH fds cannot be used with futimens: reopen for reading.
            let Ok(rd) = rfs::openat(
                &fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            rfs::futimens(&rd, &times(secs, nsec)).map_err(|e| UnpackError::Fs {
                op: "set directory mtime",
                path: String::from_utf8_lossy(&path).into_owned(),
                source: ioe(e),
            })?;
        }
        Ok(())
    }
}

fn mkdir(parent: &OwnedFd, name: &OsStr) -> io::Result<()> {
    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(ioe)
}

fn times(secs: i64, nsec: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn set_xattr_fd(fd: &OwnedFd, k: &[u8], v: &[u8]) -> io::Result<()> {
    rfs::fsetxattr(fd, OsStr::from_bytes(k), v, XattrFlags::empty()).map_err(|e| {
        io::Error::new(
            ioe(e).kind(),
            format!("set xattr {}: {e}", String::from_utf8_lossy(k)),
        )
    })
}

pub(crate) fn write_all_fd(fd: &OwnedFd, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(ioe(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
