//! CopyFile: the host copies files (resolv.conf, hostname, ConfigMaps,
//! Secrets, ...) into the guest, but only below one shared directory, and
//! nothing it sends may make the agent write anywhere else.
//!
//! The host's path is absolute and must lie below the shared directory
//! (Kata's is `/run/kata-containers/shared/containers/`). It is checked
//! lexically (no `..` component), then every open below the shared directory
//! goes through `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so a
//! symlink (planted by an earlier CopyFile, or by a race) that points outside
//! makes the request fail instead of being followed.
//!
//! Regular files arrive in chunks (a ttrpc frame is at most 4 MiB): each
//! chunk is written at its offset into a hidden part file, which is renamed
//! over the target once it reaches `file_size`. Directories and symlinks are
//! created as the file mode's type bits say.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Gid, Mode, OFlags, ResolveFlags, Uid};
use rustix::io::Errno;
use serde::Serialize;

/// File-type bits of a mode (`S_IFMT` and the types CopyFile knows).
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;

/// Permission bits applied to files and directories (incl. setuid/setgid/sticky).
const PERMISSION_MASK: u32 = 0o7777;
/// Permission bits for directories created implicitly as parents.
const IMPLICIT_DIR_MASK: u32 = 0o777;

/// How many times an `openat2` racing a rename (`EAGAIN`) is retried.
const OPENAT2_RETRIES: usize = 8;

/// The file type as the policy sees it (Kata's `PolicyCopyFileRequest.file_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FileType {
    /// No or another type in the mode.
    Unknown,
    /// `S_IFREG`.
    Regular,
    /// `S_IFDIR`.
    Directory,
    /// `S_IFLNK`.
    Symlink,
}

impl FileType {
    /// Classifies the type bits of `mode`.
    pub fn from_mode(mode: u32) -> Self {
        match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            S_IFLNK => FileType::Symlink,
            _ => FileType::Unknown,
        }
    }
}

/// One CopyFile request, independent of the wire format.
#[derive(Debug, Clone, Copy)]
pub struct CopyRequest<'a> {
    /// Absolute guest path below the shared directory.
    pub path: &'a str,
    /// Final size of a regular file.
    pub file_size: i64,
    /// Type and permission bits.
    pub file_mode: u32,
    /// Permissions of parent directories created on the way.
    pub dir_mode: u32,
    /// Owner; negative leaves it unchanged.
    pub uid: i32,
    /// Group; negative leaves it unchanged.
    pub gid: i32,
    /// Where this chunk goes in a regular file.
    pub offset: i64,
    /// File content (a chunk of it), or a symlink's target.
    pub data: &'a [u8],
}

/// What the policy sees for CopyFile: the request without its data, plus the
/// file type and a symlink's target, so rules need no byte handling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyCopyFileRequest {
    /// Absolute guest path.
    pub path: String,
    /// From the mode's type bits.
    pub file_type: FileType,
    /// The target, for symlinks.
    pub symlink_target: Option<String>,
    /// As in the request.
    pub file_size: i64,
    /// As in the request.
    pub file_mode: u32,
    /// As in the request.
    pub dir_mode: u32,
    /// As in the request.
    pub uid: i32,
    /// As in the request.
    pub gid: i32,
    /// As in the request.
    pub offset: i64,
}

impl PolicyCopyFileRequest {
    /// Builds the policy view; a symlink target must be UTF-8.
    pub fn new(req: &CopyRequest<'_>) -> Result<Self, CopyFileError> {
        let file_type = FileType::from_mode(req.file_mode);
        let symlink_target = match file_type {
            FileType::Symlink => Some(symlink_target(req)?.to_string()),
            _ => None,
        };
        Ok(PolicyCopyFileRequest {
            path: req.path.to_string(),
            file_type,
            symlink_target,
            file_size: req.file_size,
            file_mode: req.file_mode,
            dir_mode: req.dir_mode,
            uid: req.uid,
            gid: req.gid,
            offset: req.offset,
        })
    }
}

/// Why a CopyFile request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyFileError {
    /// The path is not an absolute path below the shared directory.
    #[error("{path:?} is not below the shared directory {shared_dir}")]
    OutsideSharedDir {
        /// The requested path.
        path: String,
        /// The shared directory.
        shared_dir: PathBuf,
    },
    /// The path has a `..` component.
    #[error("{path:?} has a '..' component")]
    ParentComponent {
        /// The requested path.
        path: String,
    },
    /// Resolving the path would leave the shared directory (symlink escape).
    #[error("{path:?} resolves outside the shared directory (through a symlink)")]
    Escape {
        /// The requested path.
        path: String,
    },
    /// Offset and size do not describe a chunk of the file.
    #[error(
        "{path:?}: chunk of {len} bytes at offset {offset} does not fit file_size {file_size}"
    )]
    BadChunk {
        /// The requested path.
        path: String,
        /// The chunk offset.
        offset: i64,
        /// The chunk length.
        len: usize,
        /// The announced file size.
        file_size: i64,
    },
    /// A device, FIFO or socket was requested.
    #[error("{path:?}: file mode {mode:#o} is not a regular file, directory or symlink")]
    UnsupportedType {
        /// The requested path.
        path: String,
        /// The mode.
        mode: u32,
    },
    /// A symlink target that is empty, not UTF-8 or has a NUL byte.
    #[error("{path:?}: invalid symlink target")]
    BadSymlinkTarget {
        /// The requested path.
        path: String,
    },
    /// A filesystem operation failed.
    #[error("{op} {path:?}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The requested path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The directory CopyFile writes below.
#[derive(Debug, Clone)]
pub struct SharedDir {
    root: PathBuf,
}

/// What kind of entry a request creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Directory,
    Symlink,
}

impl SharedDir {
    /// The shared directory at `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SharedDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Carries out one CopyFile request (one chunk of a regular file).
    /// Blocking: call it off the async runtime.
    pub fn copy(&self, req: &CopyRequest<'_>) -> Result<(), CopyFileError> {
        let rel = self.relative(req.path)?;
        let kind = match req.file_mode & S_IFMT {
            // No type bits: older runtimes send only permissions.
            0 | S_IFREG => Kind::Regular,
            S_IFDIR => Kind::Directory,
            S_IFLNK => Kind::Symlink,
            _ => {
                return Err(CopyFileError::UnsupportedType {
                    path: req.path.to_string(),
                    mode: req.file_mode,
                })
            }
        };
        if kind == Kind::Regular {
            check_chunk(req)?;
        }
        let io = |op: &'static str| {
            move |e: Errno| match e {
                Errno::XDEV | Errno::LOOP => CopyFileError::Escape {
                    path: req.path.to_string(),
                },
                e => CopyFileError::Io {
                    op,
                    path: req.path.to_string(),
                    source: e.into(),
                },
            }
        };

        std::fs::create_dir_all(&self.root).map_err(|source| CopyFileError::Io {
            op: "creating the shared directory for",
            path: req.path.to_string(),
            source,
        })?;
        let root = rfs::open(
            self.root.as_path(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("opening the shared directory for"))?;

        // `relative` guarantees a last normal component.
        let name = rel.file_name().unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = mkdir_all(
            root.as_fd(),
            parent_rel,
            Mode::from_raw_mode(req.dir_mode & IMPLICIT_DIR_MASK),
        )
        .map_err(io("creating parent directories of"))?;
        let (uid, gid) = owner(req);
        if parent_rel != Path::new("") {
            rfs::fchown(&parent, uid, gid).map_err(io("chown of the parent of"))?;
        }

        match kind {
            Kind::Directory => make_dir(parent.as_fd(), name, req, uid, gid).map_err(io("mkdir")),
            Kind::Symlink => {
                let target = symlink_target(req)?;
                make_symlink(parent.as_fd(), name, target, uid, gid).map_err(io("symlink"))
            }
            Kind::Regular => write_chunk(parent.as_fd(), name, req, uid, gid).map_err(io("write")),
        }
    }

    /// The path relative to the shared directory, checked lexically.
    fn relative<'p>(&self, path: &'p str) -> Result<&'p Path, CopyFileError> {
        let p = Path::new(path);
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(CopyFileError::ParentComponent {
                path: path.to_string(),
            });
        }
        let outside = || CopyFileError::OutsideSharedDir {
            path: path.to_string(),
            shared_dir: self.root.clone(),
        };
        let rel = p.strip_prefix(&self.root).map_err(|_| outside())?;
        match rel.components().next_back() {
            Some(Component::Normal(_)) => Ok(rel),
            _ => Err(outside()),
        }
    }
}

/// A chunk must lie inside `[0, file_size]`.
fn check_chunk(req: &CopyRequest<'_>) -> Result<(), CopyFileError> {
    let end = i64::try_from(req.data.len())
        .ok()
        .and_then(|len| req.offset.checked_add(len));
    match end {
        Some(end) if req.offset >= 0 && req.file_size >= 0 && end <= req.file_size => Ok(()),
        _ => Err(CopyFileError::BadChunk {
            path: req.path.to_string(),
            offset: req.offset,
            len: req.data.len(),
            file_size: req.file_size,
        }),
    }
}

fn symlink_target<'a>(req: &CopyRequest<'a>) -> Result<&'a str, CopyFileError> {
    match std::str::from_utf8(req.data) {
        Ok(t) if !t.is_empty() && !t.contains('\0') => Ok(t),
        _ => Err(CopyFileError::BadSymlinkTarget {
            path: req.path.to_string(),
        }),
    }
}

fn owner(req: &CopyRequest<'_>) -> (Option<Uid>, Option<Gid>) {
    let uid = u32::try_from(req.uid).ok().map(Uid::from_raw);
    let gid = u32::try_from(req.gid).ok().map(Gid::from_raw);
    (uid, gid)
}

/// Resolution rules for everything below the shared directory.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// `openat2` below `dir`, retrying the `EAGAIN` a concurrent rename can cause.
fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match rfs::openat2(dir, path, flags | OFlags::CLOEXEC, mode, resolve) {
            Err(Errno::AGAIN) if tries < OPENAT2_RETRIES => tries += 1,
            r => return r,
        }
    }
}

fn open_dir(dir: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, Errno> {
    let path = if path == Path::new("") {
        Path::new(".")
    } else {
        path
    };
    open_beneath(
        dir,
        path,
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
        beneath(),
    )
}

/// Opens `rel` below `root`, creating missing directories with `mode`. Each
/// prefix is resolved from `root`, so no step can leave it.
fn mkdir_all(root: BorrowedFd<'_>, rel: &Path, mode: Mode) -> Result<OwnedFd, Errno> {
    let mut parent = open_dir(root, Path::new(""))?;
    let mut prefix = PathBuf::new();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            continue;
        };
        prefix.push(name);
        parent = match open_dir(root, &prefix) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rfs::mkdirat(&parent, name, mode) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                open_dir(root, &prefix)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(parent)
}

/// Removes a non-directory entry (or an empty directory) named `name`.
fn remove_entry(parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), Errno> {
    match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory => {
            rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)
        }
        Ok(_) => rfs::unlinkat(parent, name, AtFlags::empty()),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

fn make_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    req: &CopyRequest<'_>,
    uid: Option<Uid>,
    gid: Option<Gid>,
) -> Result<(), Errno> {
    // An existing directory is kept (later chunks fill it); anything else
    // at the name is replaced.
    match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory => {}
        Ok(_) => rfs::unlinkat(parent, name, AtFlags::empty())?,
        Err(Errno::NOENT) => {}
        Err(e) => return Err(e),
    }
    match rfs::mkdirat(
        parent,
        name,
        Mode::from_raw_mode(req.file_mode & IMPLICIT_DIR_MASK),
    ) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    let dir = open_beneath(
        parent,
        Path::new(name),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW,
        Mode::empty(),
        beneath() | ResolveFlags::NO_SYMLINKS,
    )?;
    // chown first: it clears setuid/setgid bits that chmod then sets.
    rfs::fchown(&dir, uid, gid)?;
    rfs::fchmod(&dir, Mode::from_raw_mode(req.file_mode & PERMISSION_MASK))
}

fn make_symlink(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    target: &str,
    uid: Option<Uid>,
    gid: Option<Gid>,
) -> Result<(), Errno> {
    remove_entry(parent, name)?;
    rfs::symlinkat(target, parent, name)?;
    rfs::chownat(parent, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
}

/// The hidden file a chunked upload accumulates in.
fn part_name(name: &OsStr) -> OsString {
    let mut part = OsString::from(".");
    part.push(name);
    part.push(".sealpod-part");
    part
}

fn write_chunk(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    req: &CopyRequest<'_>,
    uid: Option<Uid>,
    gid: Option<Gid>,
) -> Result<(), Errno> {
    let part = part_name(name);
    let mut flags = OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW;
    if req.offset == 0 {
        // A new upload: drop whatever an earlier one left behind.
        remove_entry(parent, part.as_os_str())?;
        flags |= OFlags::TRUNC;
    }
    let fd = open_beneath(
        parent,
        Path::new(&part),
        flags,
        Mode::from_raw_mode(req.file_mode & 0o666),
        beneath() | ResolveFlags::NO_SYMLINKS,
    )?;
    let file = std::fs::File::from(fd);
    // check_chunk made sure the offset is not negative.
    let offset = u64::try_from(req.offset).unwrap_or_default();
    file.write_all_at(req.data, offset)
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    let size = rfs::fstat(&file)?.st_size;
    if size < req.file_size {
        return Ok(());
    }
    rfs::fchown(&file, uid, gid)?;
    rfs::fchmod(&file, Mode::from_raw_mode(req.file_mode & PERMISSION_MASK))?;
    drop(file);
    rfs::renameat(parent, part.as_os_str(), parent, name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    struct Fixture {
        _tmp: tempfile::TempDir,
        outside: PathBuf,
        shared: SharedDir,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let shared = SharedDir::new(tmp.path().join("shared/containers"));
        Fixture {
            _tmp: tmp,
            outside,
            shared,
        }
    }

    fn file_req<'a>(path: &'a str, data: &'a [u8]) -> CopyRequest<'a> {
        CopyRequest {
            path,
            file_size: data.len() as i64,
            file_mode: S_IFREG | 0o640,
            dir_mode: 0o750,
            uid: -1,
            gid: -1,
            offset: 0,
            data,
        }
    }

    fn under(f: &Fixture, rel: &str) -> String {
        format!("{}/{rel}", f.shared.root().display())
    }

    #[test]
    fn writes_files_with_parents_and_mode() {
        let f = fixture();
        let path = under(&f, "c1/etc/resolv.conf");
        f.shared
            .copy(&file_req(&path, b"nameserver 1.1.1.1\n"))
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"nameserver 1.1.1.1\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        let parent = std::fs::metadata(f.shared.root().join("c1/etc")).unwrap();
        assert!(parent.is_dir());
        // No part file left behind.
        let names: Vec<_> = std::fs::read_dir(f.shared.root().join("c1/etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["resolv.conf"]);
        // Copying again replaces the content.
        f.shared.copy(&file_req(&path, b"x")).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
    }

    #[test]
    fn chunks_become_visible_when_complete() {
        let f = fixture();
        let path = under(&f, "big");
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for (i, chunk) in data.chunks(4096).enumerate() {
            let req = CopyRequest {
                file_size: data.len() as i64,
                offset: (i * 4096) as i64,
                ..file_req(&path, chunk)
            };
            f.shared.copy(&req).unwrap();
            let done = (i + 1) * 4096 >= data.len();
            assert_eq!(Path::new(&path).exists(), done, "chunk {i}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }

    #[test]
    fn refuses_bad_chunks() {
        let f = fixture();
        let path = under(&f, "x");
        for (offset, size) in [(-1, 10), (0, -1), (8, 10), (i64::MAX, i64::MAX)] {
            let req = CopyRequest {
                offset,
                file_size: size,
                ..file_req(&path, b"abcd")
            };
            assert!(matches!(
                f.shared.copy(&req),
                Err(CopyFileError::BadChunk { .. })
            ));
        }
    }

    #[test]
    fn directories_and_symlinks() {
        let f = fixture();
        let dir = under(&f, "vol/dir");
        let req = CopyRequest {
            file_mode: S_IFDIR | 0o2750,
            ..file_req(&dir, b"")
        };
        f.shared.copy(&req).unwrap();
        let meta = std::fs::metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o2750);
        // Again: an existing directory is kept.
        std::fs::write(format!("{dir}/keep"), "").unwrap();
        f.shared.copy(&req).unwrap();
        assert!(Path::new(&format!("{dir}/keep")).exists());

        let link = under(&f, "vol/..data");
        let req = CopyRequest {
            file_mode: S_IFLNK | 0o777,
            ..file_req(&link, b"..2024_01_01")
        };
        f.shared.copy(&req).unwrap();
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            PathBuf::from("..2024_01_01")
        );
        // A symlink pointing outside may exist (it is data) ...
        let evil = under(&f, "vol/evil");
        let target = f.outside.display().to_string();
        let req = CopyRequest {
            file_mode: S_IFLNK | 0o777,
            ..file_req(&evil, target.as_bytes())
        };
        f.shared.copy(&req).unwrap();
        // ... but nothing is written through it.
        let through = under(&f, "vol/evil/pwned");
        assert!(matches!(
            f.shared.copy(&file_req(&through, b"x")),
            Err(CopyFileError::Escape { .. })
        ));
        assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 0);

        let bad = CopyRequest {
            file_mode: S_IFLNK | 0o777,
            ..file_req(&link, b"")
        };
        assert!(matches!(
            f.shared.copy(&bad),
            Err(CopyFileError::BadSymlinkTarget { .. })
        ));
    }

    #[test]
    fn refuses_paths_outside() {
        let f = fixture();
        for path in [
            under(&f, "../escape"),
            under(&f, "a/../../escape"),
            f.outside.join("x").display().to_string(),
            "relative/path".to_string(),
            f.shared.root().display().to_string(),
            format!("{}/", f.shared.root().display()),
            format!("{}-sibling/x", f.shared.root().display()),
        ] {
            let err = f.shared.copy(&file_req(&path, b"x")).unwrap_err();
            assert!(
                matches!(
                    err,
                    CopyFileError::ParentComponent { .. } | CopyFileError::OutsideSharedDir { .. }
                ),
                "{path}: {err}"
            );
        }
        assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 0);
        // A NUL byte is an error, not a panic.
        assert!(f.shared.copy(&file_req(&under(&f, "a\0b"), b"x")).is_err());
    }

    #[test]
    fn refuses_symlink_escapes_in_parents() {
        let f = fixture();
        std::fs::create_dir_all(f.shared.root()).unwrap();
        std::os::unix::fs::symlink(&f.outside, f.shared.root().join("abs")).unwrap();
        std::os::unix::fs::symlink("../..", f.shared.root().join("rel")).unwrap();
        for rel in ["abs/x", "rel/outside/x", "abs/new/dir/x"] {
            let path = under(&f, rel);
            let err = f.shared.copy(&file_req(&path, b"x")).unwrap_err();
            assert!(matches!(err, CopyFileError::Escape { .. }), "{rel}: {err}");
        }
        assert_eq!(std::fs::read_dir(&f.outside).unwrap().count(), 0);
        // A symlink that stays inside is fine.
        std::fs::create_dir(f.shared.root().join("real")).unwrap();
        std::os::unix::fs::symlink("real", f.shared.root().join("alias")).unwrap();
        f.shared
            .copy(&file_req(&under(&f, "alias/x"), b"ok"))
            .unwrap();
        assert_eq!(
            std::fs::read(f.shared.root().join("real/x")).unwrap(),
            b"ok"
        );
    }

    #[test]
    fn final_symlink_is_replaced_not_followed() {
        let f = fixture();
        std::fs::create_dir_all(f.shared.root()).unwrap();
        let victim = f.outside.join("victim");
        std::fs::write(&victim, "original").unwrap();
        std::os::unix::fs::symlink(&victim, f.shared.root().join("target")).unwrap();
        f.shared
            .copy(&file_req(&under(&f, "target"), b"new"))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
        let meta = std::fs::symlink_metadata(f.shared.root().join("target")).unwrap();
        assert!(meta.is_file());
        // A planted part-file symlink is not followed either.
        std::os::unix::fs::symlink(&victim, f.shared.root().join(".t2.sealpod-part")).unwrap();
        let t2 = under(&f, "t2");
        let req = CopyRequest {
            offset: 1,
            file_size: 4,
            ..file_req(&t2, b"abc")
        };
        assert!(f.shared.copy(&req).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original");
    }

    #[test]
    fn sets_owner_and_refuses_special_files() {
        let f = fixture();
        let path = under(&f, "owned");
        let req = CopyRequest {
            uid: 1234,
            gid: 5678,
            ..file_req(&path, b"x")
        };
        f.shared.copy(&req).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));

        let fifo = CopyRequest {
            file_mode: 0o010_644,
            ..file_req(&path, b"")
        };
        assert!(matches!(
            f.shared.copy(&fifo),
            Err(CopyFileError::UnsupportedType { .. })
        ));
    }

    #[test]
    fn policy_view_classifies_and_omits_data() {
        let req = CopyRequest {
            file_mode: S_IFLNK | 0o777,
            ..file_req("/s/link", b"target")
        };
        let view = PolicyCopyFileRequest::new(&req).unwrap();
        assert_eq!(view.file_type, FileType::Symlink);
        assert_eq!(view.symlink_target.as_deref(), Some("target"));
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json["file_type"], "Symlink");
        assert!(json.get("data").is_none());
        assert_eq!(FileType::from_mode(S_IFDIR | 0o755), FileType::Directory);
        assert_eq!(FileType::from_mode(S_IFREG), FileType::Regular);
        assert_eq!(FileType::from_mode(0o644), FileType::Unknown);
        let bad = CopyRequest {
            file_mode: S_IFLNK,
            ..file_req("/s/link", &[0xff, 0xfe])
        };
        assert!(PolicyCopyFileRequest::new(&bad).is_err());
    }
}
