//! Resource storage: resource `<repository>/<type>/<tag>` is the file
//! `DIR/<repository>/<type>/<tag>`.
//!
//! Paths come from the network, so every segment is validated (exactly
//! three, none empty, `.`, `..` or containing a separator or NUL), and the
//! file actually opened must resolve inside DIR: a symlink may point within
//! DIR but never out of it, and the last component is opened without
//! following links.

use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore as _};

/// Largest resource served or stored (the JWE around it is larger).
pub const MAX_RESOURCE_LEN: u64 = 1024 * 1024;
/// Longest segment accepted (a file name limit on common file systems).
const MAX_SEGMENT_LEN: usize = 255;

/// Why a resource cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// Not `<repository>/<type>/<tag>` with three plain names.
    #[error("illegal ResourceDesc format: {0}")]
    BadPath(String),
    /// Resolves outside the resource directory.
    #[error("resource path escapes the resource directory: {0}")]
    Escapes(String),
    /// No such resource.
    #[error("resource not found: {0}")]
    NotFound(String),
    /// Larger than [`MAX_RESOURCE_LEN`].
    #[error("resource {0} is larger than {MAX_RESOURCE_LEN} bytes")]
    TooLarge(String),
    /// Another I/O failure.
    #[error("resource {path}: {source}")]
    Io {
        /// The resource.
        path: String,
        /// What failed.
        source: io::Error,
    },
}

/// The resource directory.
#[derive(Debug)]
pub struct ResourceStore {
    /// Canonical (symlink-free) path of DIR.
    root: PathBuf,
}

impl ResourceStore {
    /// Opens DIR, which must exist and be a directory.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let root = std::fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a directory",
            ));
        }
        Ok(ResourceStore { root })
    }

    /// The resource's content.
    pub async fn read(&self, segments: &[String]) -> Result<Vec<u8>, ResourceError> {
        let (name, rel) = validate(segments)?;
        let root = self.root.clone();
        run_blocking(move || read_file(&root, &rel, &name)).await
    }

    /// Stores `content` as the resource (atomically: a reader sees the old
    /// or the new content), creating its directories.
    pub async fn write(&self, segments: &[String], content: Vec<u8>) -> Result<(), ResourceError> {
        let (name, rel) = validate(segments)?;
        if content.len() as u64 > MAX_RESOURCE_LEN {
            return Err(ResourceError::TooLarge(name));
        }
        let root = self.root.clone();
        run_blocking(move || write_file(&root, &rel, &name, &content)).await
    }

    /// Deletes the resource (the link itself if it is a symlink).
    pub async fn delete(&self, segments: &[String]) -> Result<(), ResourceError> {
        let (name, rel) = validate(segments)?;
        let root = self.root.clone();
        run_blocking(move || {
            let parent = contained_dir(&root, &rel, &name, false)?;
            let file = parent.join(segments_last(&rel));
            match std::fs::symlink_metadata(&file) {
                Ok(m) if m.is_dir() => Err(ResourceError::NotFound(name)),
                Ok(_) => std::fs::remove_file(&file).map_err(|e| io_err(&name, e)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ResourceError::NotFound(name)),
                Err(e) => Err(io_err(&name, e)),
            }
        })
        .await
    }
}

/// Checks the segments; returns the display name and the relative path.
fn validate(segments: &[String]) -> Result<(String, PathBuf), ResourceError> {
    let name = segments.join("/");
    if segments.len() != 3 {
        return Err(ResourceError::BadPath(name));
    }
    let mut rel = PathBuf::new();
    for s in segments {
        let bad = s.is_empty()
            || s == "."
            || s == ".."
            || s.len() > MAX_SEGMENT_LEN
            || s.contains(['/', '\\', '\0']);
        if bad {
            return Err(ResourceError::BadPath(name));
        }
        rel.push(s);
    }
    Ok((name, rel))
}

/// The last component of a validated relative path.
fn segments_last(rel: &Path) -> PathBuf {
    rel.file_name().map(PathBuf::from).unwrap_or_default()
}

/// The canonical directory holding the resource, checked to be inside
/// `root` one level at a time (so a directory link out of the root is
/// never created into); missing levels are created when `create` is set.
fn contained_dir(
    root: &Path,
    rel: &Path,
    name: &str,
    create: bool,
) -> Result<PathBuf, ResourceError> {
    let mut dir = root.to_path_buf();
    for level in rel.parent().unwrap_or(Path::new("")).components() {
        let next = dir.join(level);
        if create {
            match std::fs::create_dir(&next) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(name, e)),
            }
        }
        dir = std::fs::canonicalize(&next).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ResourceError::NotFound(name.to_string()),
            _ => io_err(name, e),
        })?;
        if !dir.starts_with(root) {
            return Err(ResourceError::Escapes(name.to_string()));
        }
    }
    Ok(dir)
}

/// Reads a validated resource, refusing anything resolving outside `root`.
fn read_file(root: &Path, rel: &Path, name: &str) -> Result<Vec<u8>, ResourceError> {
    let not_found_or = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => ResourceError::NotFound(name.to_string()),
        _ => io_err(name, e),
    };
    // Resolve every link, then insist the result is inside the root.
    let canon = std::fs::canonicalize(root.join(rel)).map_err(not_found_or)?;
    if !canon.starts_with(root) {
        return Err(ResourceError::Escapes(name.to_string()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&canon)
        .map_err(not_found_or)?;
    let meta = file.metadata().map_err(|e| io_err(name, e))?;
    if !meta.is_file() {
        return Err(ResourceError::NotFound(name.to_string()));
    }
    if meta.len() > MAX_RESOURCE_LEN {
        return Err(ResourceError::TooLarge(name.to_string()));
    }
    let mut content = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_RESOURCE_LEN + 1)
        .read_to_end(&mut content)
        .map_err(|e| io_err(name, e))?;
    if content.len() as u64 > MAX_RESOURCE_LEN {
        return Err(ResourceError::TooLarge(name.to_string()));
    }
    Ok(content)
}

/// Writes a validated resource through a temporary file and a rename.
fn write_file(root: &Path, rel: &Path, name: &str, content: &[u8]) -> Result<(), ResourceError> {
    let dir = contained_dir(root, rel, name, true)?;
    let target = dir.join(segments_last(rel));
    let mut suffix = [0u8; 8];
    OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".dev-kbs-tmp-{}", hex::encode(suffix)));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(name, e));
    }
    Ok(())
}

/// An I/O failure on resource `name`.
fn io_err(name: &str, source: io::Error) -> ResourceError {
    ResourceError::Io {
        path: name.to_string(),
        source,
    }
}

/// Runs file work off the async workers.
async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ResourceError> + Send + 'static,
) -> Result<T, ResourceError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io_err("(task)", io::Error::other(e.to_string()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        p.split('/').map(String::from).collect()
    }

    #[tokio::test]
    async fn read_write_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResourceStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.read(&segs("default/key/1")).await,
            Err(ResourceError::NotFound(_))
        ));
        store
            .write(&segs("default/key/1"), b"secret".to_vec())
            .await
            .unwrap();
        assert_eq!(store.read(&segs("default/key/1")).await.unwrap(), b"secret");
        store
            .write(&segs("default/key/1"), b"new".to_vec())
            .await
            .unwrap();
        assert_eq!(store.read(&segs("default/key/1")).await.unwrap(), b"new");
        store.delete(&segs("default/key/1")).await.unwrap();
        assert!(matches!(
            store.read(&segs("default/key/1")).await,
            Err(ResourceError::NotFound(_))
        ));
        // A directory is not a resource.
        assert!(store.read(&segs("default/key/..")).await.is_err());
        std::fs::create_dir_all(dir.path().join("a/b/c")).unwrap();
        assert!(matches!(
            store.read(&segs("a/b/c")).await,
            Err(ResourceError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn bad_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResourceStore::open(dir.path()).unwrap();
        for p in [
            "a/b", "a/b/c/d", "a//c", "../b/c", "a/./c", "a/b/..", "", "a/b\\c/d",
        ] {
            assert!(
                matches!(store.read(&segs(p)).await, Err(ResourceError::BadPath(_))),
                "{p}"
            );
        }
        let with_slash = vec!["a".to_string(), "b/c".to_string(), "d".to_string()];
        assert!(matches!(
            store.read(&with_slash).await,
            Err(ResourceError::BadPath(_))
        ));
        assert!(store.write(&segs("a/../c"), vec![]).await.is_err());
    }

    #[tokio::test]
    async fn symlinks_out_of_the_root_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"outside").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("r/t")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("r/t/out"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("r/linked")).unwrap();
        std::fs::write(dir.path().join("r/t/in"), b"inside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("r/t/in"), dir.path().join("r/t/alias"))
            .unwrap();
        let store = ResourceStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.read(&segs("r/t/out")).await,
            Err(ResourceError::Escapes(_))
        ));
        assert!(matches!(
            store.read(&segs("r/linked/secret")).await,
            Err(ResourceError::Escapes(_))
        ));
        assert_eq!(store.read(&segs("r/t/alias")).await.unwrap(), b"inside");
        // Writing through a directory link out of the root is refused too.
        assert!(matches!(
            store.write(&segs("r/linked/new"), b"x".to_vec()).await,
            Err(ResourceError::Escapes(_))
        ));
        assert!(!outside.path().join("new").exists());
        std::os::unix::fs::symlink(outside.path(), dir.path().join("up")).unwrap();
        assert!(matches!(
            store.write(&segs("up/made/new"), b"x".to_vec()).await,
            Err(ResourceError::Escapes(_))
        ));
        assert!(!outside.path().join("made").exists());
    }
}
