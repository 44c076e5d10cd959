//! Snapshots of a directory tree (lstat, never following symlinks) and an entry-by-entry
//! comparison, to check that an unpacked rootfs equals the reference (umoci's unpack).
//!
//! Recorded per relative path: file type (with rdev for devices), permission bits
//! including setuid/setgid/sticky, owner, size and sha256 of regular files, symlink
//! target, all xattrs, mtime; plus hard-link groups (paths sharing (dev, ino), compared as
//! a set of path sets). The root directory itself is not recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Maximum number of differences [`compare`] reports.
pub const MAX_DIFFS: usize = 50;

/// What kind of filesystem object an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// One path's recorded attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File type.
    pub kind: Kind,
    /// Permission bits and setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Size in bytes (regular files only; 0 otherwise, since directory sizes depend on the
    /// filesystem).
    pub size: u64,
    /// Hex sha256 of the content (regular files only).
    pub sha256: Option<String>,
    /// Symlink target, raw.
    pub link_target: Option<PathBuf>,
    /// `(major, minor)` for device nodes.
    pub rdev: Option<(u32, u32)>,
    /// All extended attributes, name to value.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, i64),
    /// Link count (compared only on request: it depends on links outside the tree).
    pub nlink: u64,
}

/// A snapshot of a tree: entries by relative path, and hard-link groups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    /// Every path under the root (not the root itself), relative.
    pub entries: BTreeMap<PathBuf, Entry>,
    /// Groups of two or more paths that are the same inode.
    pub hardlinks: BTreeSet<BTreeSet<PathBuf>>,
}

/// What [`compare_with`] ignores.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Ignore modification times (default true: unpackers differ on directory mtimes).
    pub ignore_mtime: bool,
    /// Compare link counts too (default false).
    pub compare_nlink: bool,
    /// Ignore xattrs whose names start with one of these (e.g. `security.selinux`).
    pub ignore_xattr_prefixes: Vec<String>,
    /// Relative paths to skip entirely (with everything under them).
    pub ignore_paths: Vec<PathBuf>,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            ignore_mtime: true,
            compare_nlink: false,
            ignore_xattr_prefixes: Vec::new(),
            ignore_paths: Vec::new(),
        }
    }
}

/// Walks `root` and records every entry below it. Panics on I/O errors (with the path).
pub fn snapshot(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut inodes: HashMap<(u64, u64), BTreeSet<PathBuf>> = HashMap::new();
    walk(root, Path::new(""), &mut tree, &mut inodes)
        .unwrap_or_else(|e| panic!("snapshot of {} failed: {e}", root.display()));
    tree.hardlinks = inodes.into_values().filter(|s| s.len() > 1).collect();
    tree
}

fn walk(
    root: &Path,
    rel: &Path,
    tree: &mut Tree,
    inodes: &mut HashMap<(u64, u64), BTreeSet<PathBuf>>,
) -> io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| with_path(e, &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()
        .map_err(|e| with_path(e, &dir))?;
    names.sort();
    for name in names {
        let rel_path = rel.join(&name);
        let path = root.join(&rel_path);
        let entry = read_entry(&path).map_err(|e| with_path(e, &path))?;
        let md = fs::symlink_metadata(&path).map_err(|e| with_path(e, &path))?;
        if entry.kind != Kind::Dir && md.nlink() > 1 {
            inodes
                .entry((md.dev(), md.ino()))
                .or_default()
                .insert(rel_path.clone());
        }
        let is_dir = entry.kind == Kind::Dir;
        tree.entries.insert(rel_path.clone(), entry);
        if is_dir {
            walk(root, &rel_path, tree, inodes)?;
        }
    }
    Ok(())
}

/// Records one path's attributes with lstat semantics.
pub fn read_entry(path: &Path) -> io::Result<Entry> {
    let md = fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_char_device() {
        Kind::CharDev
    } else if ft.is_block_device() {
        Kind::BlockDev
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Socket
    };
    let (size, sha256) = if kind == Kind::File {
        let mut h = Sha256::new();
        let mut f = fs::File::open(path)?;
        io::copy(&mut f, &mut h)?;
        (md.len(), Some(hex::encode(h.finalize())))
    } else {
        (0, None)
    };
    let rdev = matches!(kind, Kind::CharDev | Kind::BlockDev).then(|| {
        let d = md.rdev();
        (rustix::fs::major(d), rustix::fs::minor(d))
    });
    Ok(Entry {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size,
        sha256,
        link_target: if kind == Kind::Symlink {
            Some(fs::read_link(path)?)
        } else {
            None
        },
        rdev,
        xattrs: xattrs(path)?,
        mtime: (md.mtime(), md.mtime_nsec()),
        nlink: md.nlink(),
    })
}

/// All extended attributes of `path` itself (`llistxattr`/`lgetxattr`).
pub fn xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = loop {
        let n = rustix::fs::llistxattr_query(path)?;
        let mut buf = vec![0u8; n];
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            Err(rustix::io::Errno::RANGE) => continue, // grew meanwhile
            Err(e) => return Err(e.into()),
        }
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name_os = std::ffi::OsStr::from_bytes(name);
        let value = loop {
            let n = match rustix::fs::lgetxattr_query(path, name_os) {
                Ok(n) => n,
                Err(rustix::io::Errno::NODATA) => break None, // removed meanwhile
                Err(e) => return Err(e.into()),
            };
            let mut buf = vec![0u8; n];
            match rustix::fs::lgetxattr(path, name_os, &mut buf[..]) {
                Ok(n) => {
                    buf.truncate(n);
                    break Some(buf);
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if let Some(v) = value {
            out.insert(String::from_utf8_lossy(name).into_owned(), v);
        }
    }
    Ok(out)
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// [`compare_with`] under the default options (mtimes ignored).
pub fn compare(expected: &Tree, actual: &Tree) -> Result<(), String> {
    compare_with(expected, actual, &CompareOptions::default())
}

/// Compares two snapshots; `Err` lists the differences, one per line, at most
/// [`MAX_DIFFS`] of them.
pub fn compare_with(expected: &Tree, actual: &Tree, opts: &CompareOptions) -> Result<(), String> {
    let mut diffs = Diffs::default();
    let ignored = |p: &Path| opts.ignore_paths.iter().any(|i| p.starts_with(i));
    let paths: BTreeSet<&PathBuf> = expected
        .entries
        .keys()
        .chain(actual.entries.keys())
        .collect();
    for p in paths.into_iter().filter(|p| !ignored(p)) {
        let shown = p.display();
        match (expected.entries.get(p), actual.entries.get(p)) {
            (Some(e), None) => diffs.push(format!("{shown}: missing (expected {:?})", e.kind)),
            (None, Some(a)) => diffs.push(format!("{shown}: unexpected {:?}", a.kind)),
            (Some(e), Some(a)) => compare_entry(&shown.to_string(), e, a, opts, &mut diffs),
            (None, None) => unreachable!("path comes from one of the trees"),
        }
    }
    let filter = |t: &Tree| -> BTreeSet<BTreeSet<PathBuf>> {
        t.hardlinks
            .iter()
            .map(|s| {
                s.iter()
                    .filter(|p| !ignored(p))
                    .cloned()
                    .collect::<BTreeSet<_>>()
            })
            .filter(|s| s.len() > 1)
            .collect()
    };
    let (he, ha) = (filter(expected), filter(actual));
    for s in he.difference(&ha) {
        diffs.push(format!("hard-link group missing: {}", show_set(s)));
    }
    for s in ha.difference(&he) {
        diffs.push(format!("unexpected hard-link group: {}", show_set(s)));
    }
    diffs.finish()
}

fn compare_entry(p: &str, e: &Entry, a: &Entry, opts: &CompareOptions, d: &mut Diffs) {
    if e.kind != a.kind {
        d.push(format!("{p}: type {:?} != expected {:?}", a.kind, e.kind));
        return;
    }
    if e.mode != a.mode {
        d.push(format!(
            "{p}: mode {:04o} != expected {:04o}",
            a.mode, e.mode
        ));
    }
    if (e.uid, e.gid) != (a.uid, a.gid) {
        d.push(format!(
            "{p}: owner {}:{} != expected {}:{}",
            a.uid, a.gid, e.uid, e.gid
        ));
    }
    if e.size != a.size {
        d.push(format!("{p}: size {} != expected {}", a.size, e.size));
    }
    if e.sha256 != a.sha256 {
        d.push(format!(
            "{p}: content sha256 {} != expected {}",
            Opt(&a.sha256),
            Opt(&e.sha256)
        ));
    }
    if e.link_target != a.link_target {
        d.push(format!(
            "{p}: symlink target {:?} != expected {:?}",
            a.link_target, e.link_target
        ));
    }
    if e.rdev != a.rdev {
        d.push(format!("{p}: rdev {:?} != expected {:?}", a.rdev, e.rdev));
    }
    let keep = |m: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, Vec<u8>> {
        m.iter()
            .filter(|(k, _)| {
                !opts
                    .ignore_xattr_prefixes
                    .iter()
                    .any(|pre| k.starts_with(pre))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let (xe, xa) = (keep(&e.xattrs), keep(&a.xattrs));
    if xe != xa {
        d.push(format!(
            "{p}: xattrs {} != expected {}",
            show_xattrs(&xa),
            show_xattrs(&xe)
        ));
    }
    if !opts.ignore_mtime && e.mtime != a.mtime {
        d.push(format!(
            "{p}: mtime {:?} != expected {:?}",
            a.mtime, e.mtime
        ));
    }
    if opts.compare_nlink && e.nlink != a.nlink {
        d.push(format!("{p}: nlink {} != expected {}", a.nlink, e.nlink));
    }
}

#[derive(Default)]
struct Diffs {
    lines: Vec<String>,
    total: usize,
}

impl Diffs {
    fn push(&mut self, s: String) {
        self.total += 1;
        if self.lines.len() < MAX_DIFFS {
            self.lines.push(s);
        }
    }

    fn finish(self) -> Result<(), String> {
        if self.total == 0 {
            return Ok(());
        }
        let mut s = format!("{} difference(s):\n", self.total);
        s.push_str(&self.lines.join("\n"));
        if self.total > self.lines.len() {
            s.push_str(&format!("\n... and {} more", self.total - self.lines.len()));
        }
        Err(s)
    }
}

struct Opt<'a>(&'a Option<String>);

impl fmt::Display for Opt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => f.write_str(s),
            None => f.write_str("(none)"),
        }
    }
}

fn show_set(s: &BTreeSet<PathBuf>) -> String {
    let v: Vec<String> = s.iter().map(|p| p.display().to_string()).collect();
    format!("{{{}}}", v.join(", "))
}

fn show_xattrs(m: &BTreeMap<String, Vec<u8>>) -> String {
    let v: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={:?}", String::from_utf8_lossy(v)))
        .collect();
    format!("{{{}}}", v.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_content_mode_and_link_changes() {
        let a = tempfile::tempdir().unwrap();
        let r = a.path();
        fs::create_dir(r.join("d")).unwrap();
        fs::write(r.join("d/f"), b"one").unwrap();
        fs::hard_link(r.join("d/f"), r.join("d/g")).unwrap();
        std::os::unix::fs::symlink("f", r.join("d/s")).unwrap();
        let t1 = snapshot(r);
        assert_eq!(t1.hardlinks.len(), 1);
        compare(&t1, &t1).unwrap();

        fs::remove_file(r.join("d/g")).unwrap();
        fs::write(r.join("d/g"), b"one").unwrap();
        fs::write(r.join("d/f"), b"two").unwrap();
        let t2 = snapshot(r);
        let err = compare(&t1, &t2).unwrap_err();
        assert!(err.contains("d/f: content sha256"), "{err}");
        assert!(err.contains("hard-link group missing: {d/f, d/g}"), "{err}");
    }
}
