//! The content-addressed store: unpacked layers, manifests/configs, image
//! records, private overlay upper dirs.
//!
//! ```text
//! STORE/
//!   .lock                      shared by pulls, exclusive for gc
//!   blobs/<alg>/<hex>          manifests, indexes and configs (verified)
//!   layers/<alg>/<hex>/fs/     one unpacked layer per diff_id, overlayfs format
//!   layers/<alg>/<hex>/implicit-dirs  NUL-separated dirs the layer used
//!                              without an entry (metadata from lower layers)
//!   images/<hex>.json          one record per reference (sha256 of the name)
//!   mounts/<id>/{upper,work}   private writable dirs of overlay rootfs mounts
//!   locks/<alg>-<hex>          per-layer flock: one download per layer at a time
//!   tmp/<pid>.<n>.<what>       work in progress; renamed into place when verified
//! ```
//! Everything is written in `tmp/` and renamed into place only after it was
//! verified, so a crash leaves only `tmp/` debris, removed at the next open.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{flock, FlockOperation};
use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest};
use crate::error::Error;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Name of the unpacked tree inside a layer directory.
pub const LAYER_FS: &str = "fs";
/// Name of the implicit-directories list inside a layer directory.
pub const IMPLICIT_DIRS: &str = "implicit-dirs";

/// A store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// What the store remembers about a pulled image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The reference as pulled (normalized).
    pub reference: String,
    /// Digest of the image manifest.
    pub manifest_digest: Digest,
    /// Digest of the index the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    /// Digest of the config.
    pub config_digest: Digest,
    /// Layers, base first.
    pub layers: Vec<LayerRecord>,
}

impl ImageRecord {
    /// Sum of the compressed layer sizes.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }
}

/// One layer of an image record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Compressed blob digest (as in the manifest).
    pub digest: Digest,
    /// Uncompressed tar digest (as in the config): the store key.
    pub diff_id: Digest,
    /// Compressed size.
    pub size: u64,
}

/// A directory (or file) under `tmp/` that is removed on drop unless it was
/// committed.
#[derive(Debug)]
pub struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames it to `dest` (atomic on one filesystem) and disarms the drop.
    pub fn commit(mut self, dest: &Path) -> Result<(), Error> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Error::io("creating store directory", parent, e))?;
        }
        fs::rename(&self.path, dest)
            .map_err(|e| Error::io("committing into the store", dest, e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            let _ = match fs::symlink_metadata(&self.path) {
                Ok(m) if m.is_dir() => fs::remove_dir_all(&self.path),
                Ok(_) => fs::remove_file(&self.path),
                Err(_) => Ok(()),
            };
        }
    }
}

/// A held file lock (released on drop).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

/// What `gc` removed.
#[derive(Debug, Default, Clone, Serialize)]
pub struct GcReport {
    /// Layers removed.
    pub layers_removed: usize,
    /// Blobs (manifests/configs) removed.
    pub blobs_removed: usize,
    /// Stale mount directories removed.
    pub mounts_removed: usize,
}

fn alg_dir(d: &Digest) -> &'static str {
    d.algorithm().name()
}

impl Store {
    /// Opens (creating) a store and removes debris of dead processes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, Error> {
        let root = root.into();
        let root = if root.is_absolute() {
            root
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("resolving the store path", &root, e))?
                .join(root)
        };
        for d in ["blobs", "layers", "images", "mounts", "locks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("creating store directory", &p, e))?;
        }
        let s = Store { root };
        s.clean_tmp()?;
        Ok(s)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn clean_tmp(&self) -> Result<(), Error> {
        let tmp = self.root.join("tmp");
        let rd = fs::read_dir(&tmp).map_err(|e| Error::io("listing", &tmp, e))?;
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            let pid: Option<u32> = name.split('.').next().and_then(|p| p.parse().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                tracing::info!(path = %ent.path().display(), "removing leftover from an interrupted pull");
                let p = ent.path();
                let r = if p.is_dir() && !p.is_symlink() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.map_err(|e| Error::io("removing leftover", &p, e))?;
            }
        }
        Ok(())
    }

    /// A fresh, empty temporary directory under `tmp/`.
    pub fn temp_dir(&self, what: &str) -> Result<TempPath, Error> {
        let p = self.temp_name(what);
        fs::create_dir(&p).map_err(|e| Error::io("creating temporary directory", &p, e))?;
        Ok(TempPath {
            path: p,
            keep: false,
        })
    }

    fn temp_name(&self, what: &str) -> PathBuf {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{}.{n}.{what}", std::process::id()))
    }

    /// The directory committed as a unit for one layer (`fs/` + metadata).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(alg_dir(diff_id))
            .join(diff_id.hex())
    }

    /// Where the unpacked tree of the layer with this diff_id lives.
    pub fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join(LAYER_FS)
    }

    /// Whether the layer is present (committed).
    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.layer_path(diff_id).is_dir()
    }

    /// Directories the layer used without having an entry for them.
    pub fn implicit_dirs(&self, diff_id: &Digest) -> Vec<Vec<u8>> {
        match fs::read(self.layer_dir(diff_id).join(IMPLICIT_DIRS)) {
            Ok(data) => data
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join(alg_dir(d)).join(d.hex())
    }

    /// A stored manifest/config, re-verified on read (a corrupted store is
    /// treated as a miss, not trusted).
    pub fn read_blob(&self, d: &Digest) -> Option<Vec<u8>> {
        let data = fs::read(self.blob_path(d)).ok()?;
        (Digest::of(d.algorithm(), &data) == *d).then_some(data)
    }

    /// Stores a verified manifest/config atomically.
    pub fn write_blob(&self, d: &Digest, data: &[u8]) -> Result<(), Error> {
        d.verify("blob to store", data)?;
        let dest = self.blob_path(d);
        if dest.exists() {
            return Ok(());
        }
        let tmp = TempPath {
            path: self.temp_name("blob"),
            keep: false,
        };
        fs::write(tmp.path(), data).map_err(|e| Error::io("writing", tmp.path(), e))?;
        tmp.commit(&dest)
    }

    /// Takes the per-layer lock (blocking: call from a blocking thread).
    /// Whoever holds it downloads the layer; others wait, then find it.
    pub fn lock_layer(&self, diff_id: &Digest) -> Result<StoreLock, Error> {
        let p = self.root.join("locks").join(format!(
            "{}-{}",
            diff_id.algorithm().name(),
            diff_id.hex()
        ));
        self.lock_file(&p, FlockOperation::LockExclusive)
    }

    /// Shared lock held by every pull, so `gc` (exclusive) never removes a
    /// layer a pull is about to reference.
    pub fn lock_shared(&self) -> Result<StoreLock, Error> {
        self.lock_file(&self.root.join(".lock"), FlockOperation::LockShared)
    }

    fn lock_exclusive(&self) -> Result<StoreLock, Error> {
        self.lock_file(&self.root.join(".lock"), FlockOperation::LockExclusive)
    }

    fn lock_file(&self, p: &Path, op: FlockOperation) -> Result<StoreLock, Error> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(p)
            .map_err(|e| Error::io("opening lock file", p, e))?;
        flock(f.as_fd(), op).map_err(|e| Error::io("locking", p, e.into()))?;
        Ok(StoreLock { _file: f })
    }

    fn record_path(&self, reference: &str) -> PathBuf {
        let h = Digest::of(Algorithm::Sha256, reference.as_bytes());
        self.root.join("images").join(format!("{}.json", h.hex()))
    }

    /// Saves the record of a pulled image (atomically).
    pub fn put_image(&self, rec: &ImageRecord) -> Result<(), Error> {
        let data = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(e.to_string()))?;
        let tmp = TempPath {
            path: self.temp_name("record"),
            keep: false,
        };
        fs::write(tmp.path(), data).map_err(|e| Error::io("writing", tmp.path(), e))?;
        tmp.commit(&self.record_path(&rec.reference))
    }

    /// The record for a reference, if it was pulled before.
    pub fn find_image(&self, reference: &str) -> Option<ImageRecord> {
        let data = fs::read(self.record_path(reference)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// All image records, sorted by reference.
    pub fn images(&self) -> Result<Vec<ImageRecord>, Error> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for ent in fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))? {
            let ent = ent.map_err(|e| Error::io("listing", &dir, e))?;
            let data = fs::read(ent.path()).map_err(|e| Error::io("reading", ent.path(), e))?;
            match serde_json::from_slice::<ImageRecord>(&data) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %ent.path().display(), error = %e, "unreadable image record skipped")
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Creates the private upper/work directories for one overlay rootfs and
    /// records which layers and which target they belong to.
    pub fn new_mount(&self, target: &Path, layers: &[Digest]) -> Result<PathBuf, Error> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("mounts")
            .join(format!("{}-{n}", std::process::id()));
        for d in ["upper", "work"] {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| Error::io("creating overlay directory", dir.join(d), e))?;
        }
        let meta = serde_json::json!({ "target": target, "layers": layers });
        fs::write(dir.join("mount.json"), meta.to_string())
            .map_err(|e| Error::io("writing", dir.join("mount.json"), e))?;
        Ok(dir)
    }

    /// The mount directory whose recorded target is `target`, if any.
    pub fn mount_for(&self, target: &Path) -> Option<PathBuf> {
        let dir = self.root.join("mounts");
        fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                fs::read(p.join("mount.json"))
                    .ok()
                    .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
                    .and_then(|v| v.get("target").and_then(|t| t.as_str()).map(PathBuf::from))
                    .as_deref()
                    == Some(target)
            })
    }

    /// Removes layers and blobs no image record references (and mount dirs
    /// whose rootfs is no longer mounted). Layers of mounted rootfs are kept.
    pub fn gc(&self) -> Result<GcReport, Error> {
        let _lock = self.lock_exclusive()?;
        let mut keep_layers = std::collections::HashSet::new();
        let mut keep_blobs = std::collections::HashSet::new();
        for r in self.images()? {
            keep_blobs.insert(r.manifest_digest.clone());
            keep_blobs.insert(r.config_digest.clone());
            if let Some(i) = r.index_digest {
                keep_blobs.insert(i);
            }
            for l in r.layers {
                keep_layers.insert(l.diff_id);
            }
        }
        let mut report = GcReport::default();
        let mounts = self.root.join("mounts");
        for ent in fs::read_dir(&mounts)
            .map_err(|e| Error::io("listing", &mounts, e))?
            .flatten()
        {
            let meta: Option<serde_json::Value> = fs::read(ent.path().join("mount.json"))
                .ok()
                .and_then(|d| serde_json::from_slice(&d).ok());
            let target = meta
                .as_ref()
                .and_then(|m| m.get("target")?.as_str().map(PathBuf::from));
            if target.as_deref().is_some_and(crate::mount::is_mount_point) {
                for l in meta
                    .as_ref()
                    .and_then(|m| m.get("layers")?.as_array().cloned())
                    .unwrap_or_default()
                {
                    if let Some(d) = l.as_str().and_then(|s| s.parse().ok()) {
                        keep_layers.insert(d);
                    }
                }
            } else {
                fs::remove_dir_all(ent.path()).map_err(|e| Error::io("removing", ent.path(), e))?;
                report.mounts_removed += 1;
            }
        }
        for (kind, keep, count) in [
            ("layers", &keep_layers, &mut report.layers_removed),
            ("blobs", &keep_blobs, &mut report.blobs_removed),
        ] {
            for alg in ["sha256", "sha512"] {
                let dir = self.root.join(kind).join(alg);
                let Ok(rd) = fs::read_dir(&dir) else { continue };
                for ent in rd.flatten() {
                    let d: Option<Digest> = format!("{alg}:{}", ent.file_name().to_string_lossy())
                        .parse()
                        .ok();
                    if d.as_ref().is_some_and(|d| keep.contains(d)) {
                        continue;
                    }
                    let p = ent.path();
                    let r = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                    r.map_err(|e| Error::io("removing", &p, e))?;
                    *count += 1;
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_removed_unless_committed_and_debris_is_cleaned() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let a = s.temp_dir("x").unwrap();
        let ap = a.path().to_path_buf();
        drop(a);
        assert!(!ap.exists());
        let d = Digest::of(Algorithm::Sha256, b"layer");
        let b = s.temp_dir("y").unwrap();
        fs::write(b.path().join("f"), b"1").unwrap();
        b.commit(&s.layer_path(&d)).unwrap();
        assert!(s.has_layer(&d));
        // Debris of a dead process (pid 0 never names a live one here).
        fs::create_dir(t.path().join("tmp/999999999.1.layer")).unwrap();
        Store::open(t.path()).unwrap();
        assert!(!t.path().join("tmp/999999999.1.layer").exists());
    }

    #[test]
    fn blobs_are_verified_and_gc_keeps_referenced() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let m = Digest::of(Algorithm::Sha256, b"manifest");
        assert!(s.write_blob(&m, b"not the manifest").is_err());
        s.write_blob(&m, b"manifest").unwrap();
        assert_eq!(s.read_blob(&m).unwrap(), b"manifest");
        let c = Digest::of(Algorithm::Sha512, b"config");
        s.write_blob(&c, b"config").unwrap();
        let keep = Digest::of(Algorithm::Sha256, b"keep");
        let drop_ = Digest::of(Algorithm::Sha256, b"drop");
        for d in [&keep, &drop_] {
            fs::create_dir_all(s.layer_path(d)).unwrap();
        }
        let orphan = Digest::of(Algorithm::Sha256, b"orphan");
        s.write_blob(&orphan, b"orphan").unwrap();
        s.put_image(&ImageRecord {
            reference: "r/x:1".into(),
            manifest_digest: m.clone(),
            index_digest: None,
            config_digest: c.clone(),
            layers: vec![LayerRecord {
                digest: keep.clone(),
                diff_id: keep.clone(),
                size: 1,
            }],
        })
        .unwrap();
        let rep = s.gc().unwrap();
        assert_eq!((rep.layers_removed, rep.blobs_removed), (1, 1));
        assert!(s.has_layer(&keep) && !s.has_layer(&drop_));
        assert!(
            s.read_blob(&m).is_some()
                && s.read_blob(&c).is_some()
                && s.read_blob(&orphan).is_none()
        );
        assert_eq!(s.images().unwrap().len(), 1);
    }
}
