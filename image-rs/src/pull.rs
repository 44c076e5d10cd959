//! The pull pipeline: resolve, verify, fetch layers in parallel, unpack each
//! in one streaming pass, commit verified layers, then assemble the rootfs.
//!
//! Per layer, on one blocking thread fed by the async download:
//! `channel -> digest -> decompress -> diff_id digest -> tar apply (tmp dir)`.
//! The blob digest of a plain layer runs on the download side. An encrypted
//! layer is decrypted as the blocking thread copies it out of the channel,
//! with its blob digest, HMAC and plain digest computed there in one
//! interleaved pass ([`BlobDecryptor`]).
//! The layer directory is renamed into the store only when the compressed
//! size and digest (and for an encrypted layer the HMAC and the plain digest)
//! and the diff_id all match; any failure removes it.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use tokio::sync::{mpsc, Semaphore};

use crate::decompress::Decompressor;
use crate::digest::{Algorithm, Digest, HashingReader};
use crate::error::Error;
use crate::manifest::{self, Compression, Descriptor, ImageConfig, ImageManifest, ManifestKind};
use crate::ocicrypt::cipher::BlobDecryptor;
use crate::ocicrypt::layer::{layer_keys, DecryptionKeys, LayerKeys};
use crate::ocicrypt::spec as enc;
use crate::platform::Platform;
use crate::progress::{NoProgress, ProgressEvent, ProgressSink};
use crate::reference::Reference;
use crate::registry::{BlobSummary, Chunk, RegistryClient};
use crate::signature::{Accepted, SignatureVerifier};
use crate::store::{ImageRecord, LayerRecord, Store, TempPath};
use crate::unpack::{merge, LayerUnpacker, Limits, UnpackError, UnpackStats};

/// How the rootfs is assembled from the layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// A plain directory tree with every layer applied in order.
    Flat,
    /// An overlayfs mount over the shared store layers with a private upper
    /// dir (the guest default: no copy, layers shared between containers).
    #[default]
    Overlay,
}

/// Options of one pull.
#[derive(Clone)]
pub struct PullOptions {
    /// Rootfs layout.
    pub layout: Layout,
    /// Platform to pick from an index (default: this machine's).
    pub platform: Option<Platform>,
    /// Layers downloaded and unpacked at once.
    pub max_concurrent: usize,
    /// Bounds applied to each layer.
    pub limits: Limits,
    /// Where progress events go.
    pub progress: Arc<dyn ProgressSink>,
    /// Keys for encrypted layers (private keys for JWE recipients, a key
    /// provider for Confidential Containers packets).
    pub decryption: Arc<DecryptionKeys>,
    /// Signature policy checked after the manifest is resolved and before
    /// any layer is fetched; `None` accepts unsigned images (no policy).
    pub signature: Option<Arc<SignatureVerifier>>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("layout", &self.layout)
            .field("platform", &self.platform)
            .field("max_concurrent", &self.max_concurrent)
            .field("limits", &self.limits)
            .field("signature", &self.signature)
            .finish()
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            layout: Layout::default(),
            platform: None,
            max_concurrent: 3,
            limits: Limits::default(),
            progress: Arc::new(NoProgress),
            decryption: Arc::new(DecryptionKeys::default()),
            signature: None,
        }
    }
}

/// What one layer took.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LayerOutcome {
    /// Compressed digest.
    pub digest: Digest,
    /// Uncompressed digest (store key).
    pub diff_id: Digest,
    /// Whether it was already in the store (nothing fetched).
    pub cached: bool,
    /// Bytes downloaded.
    pub fetched_bytes: u64,
    /// HTTP requests made for it (more than 1 when resumed).
    pub requests: u32,
    /// Of those, resumes with `Range`.
    pub range_requests: u32,
    /// Unpack counts (zero when cached).
    pub unpacked: UnpackStats,
}

/// The result of a pull.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PullReport {
    /// The reference pulled, normalized.
    pub reference: String,
    /// Digest of the image manifest (for an index: the chosen platform's).
    pub manifest_digest: Digest,
    /// Digest of the index, when the reference named one.
    pub index_digest: Option<Digest>,
    /// Digest of the config.
    pub config_digest: Digest,
    /// Per layer, base first.
    pub layers: Vec<LayerOutcome>,
    /// Blobs downloaded (layers and config).
    pub blobs_fetched: usize,
    /// Bytes of blobs downloaded.
    pub bytes_fetched: u64,
    /// Where the rootfs is.
    pub rootfs: PathBuf,
}

/// A manifest resolved and verified down to its config.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Reference pinned to the manifest digest.
    pub reference: Reference,
    /// Manifest digest.
    pub manifest_digest: Digest,
    /// Index digest if the reference named an index.
    pub index_digest: Option<Digest>,
    /// The manifest.
    pub manifest: ImageManifest,
    /// Its raw bytes (stored once the pull succeeds).
    manifest_bytes: Vec<u8>,
    index_bytes: Option<Vec<u8>>,
    /// The config.
    pub config: ImageConfig,
    config_bytes: Vec<u8>,
    config_fetched: bool,
    compressions: Vec<Compression>,
}

/// Pulls images into a store.
#[derive(Debug, Clone)]
pub struct Puller {
    client: Arc<RegistryClient>,
    store: Store,
}

impl Puller {
    /// A puller over a registry client and a store.
    pub fn new(client: Arc<RegistryClient>, store: Store) -> Self {
        Puller { client, store }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn manifest_bytes(
        &self,
        r: &Reference,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Option<String>, Digest), Error> {
        if let Some(d) = digest {
            if let Some(b) = self.store.read_blob(d) {
                return Ok((b, None, d.clone()));
            }
        }
        let selector = digest
            .map(|d| d.to_string())
            .unwrap_or_else(|| r.manifest_selector());
        let (bytes, ct) = self.client.fetch_manifest(r, &selector).await?;
        let alg = digest.map(|d| d.algorithm()).unwrap_or(Algorithm::Sha256);
        let actual = Digest::of(alg, &bytes);
        if let Some(d) = digest {
            if &actual != d {
                return Err(Error::DigestMismatch {
                    what: format!("manifest of {r}"),
                    expected: d.clone(),
                    actual,
                });
            }
        }
        Ok((bytes, ct, actual))
    }

    /// The digest of the top-level manifest `r` names (verified against a
    /// pinned digest), fetching nothing else.
    pub async fn manifest_digest(&self, r: &Reference) -> Result<Digest, Error> {
        Ok(self.manifest_bytes(r, r.digest()).await?.2)
    }

    /// Checks `r` against a signature policy without fetching any blob:
    /// only the top-level manifest (to learn its digest) and the signatures.
    pub async fn check_signatures(
        &self,
        r: &Reference,
        verifier: &SignatureVerifier,
    ) -> Result<Accepted, Error> {
        let (_, _, digest) = self.manifest_bytes(r, r.digest()).await?;
        Ok(verifier.check(&self.client, r, &digest).await?)
    }

    /// Resolves a reference to a verified manifest and config, choosing the
    /// platform from an index. Uses the store when the digest is known.
    pub async fn resolve(
        &self,
        r: &Reference,
        platform: Option<&Platform>,
    ) -> Result<ResolvedImage, Error> {
        let (bytes, ct, digest) = self.manifest_bytes(r, r.digest()).await?;
        let what = format!("manifest {digest} of {r}");
        let (manifest, manifest_digest, manifest_bytes, index) =
            match manifest::parse_manifest(&bytes, ct.as_deref(), &what)? {
                ManifestKind::Image(m) => (m, digest, bytes, None),
                ManifestKind::Index(idx) => {
                    let wanted = platform.cloned().unwrap_or_else(Platform::current);
                    let chosen = manifest::select_platform(&idx, &wanted, &r.to_string())?.clone();
                    let (mb, mct, md) = self.manifest_bytes(r, Some(&chosen.digest)).await?;
                    if mb.len() as u64 != chosen.size {
                        return Err(Error::Manifest {
                            what: format!("manifest {} of {r}", chosen.digest),
                            reason: format!(
                                "size {} differs from the index's {}",
                                mb.len(),
                                chosen.size
                            ),
                        });
                    }
                    let what = format!("manifest {md} (for {wanted}) of {r}");
                    match manifest::parse_manifest(&mb, mct.as_deref(), &what)? {
                        ManifestKind::Image(m) => (m, md, mb, Some((digest, bytes))),
                        ManifestKind::Index(_) => {
                            return Err(Error::Manifest {
                                what,
                                reason: "an index inside an index is not supported".into(),
                            })
                        }
                    }
                }
            };
        let compressions = manifest
            .layers
            .iter()
            .map(|l| {
                if enc::is_encrypted(&l.media_type) {
                    // ocicrypt encrypts non-distributable layers too; once
                    // decrypted (and served by this registry, digest-checked)
                    // they are ordinary layers. Plain ones stay refused.
                    let plain =
                        enc::decrypted_media_type(&l.media_type).replace(".nondistributable", "");
                    manifest::layer_compression(&plain, &l.digest)
                } else {
                    manifest::layer_compression(&l.media_type, &l.digest)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (config_bytes, config_fetched) = match self.store.read_blob(&manifest.config.digest) {
            Some(b) => (b, false),
            None => (
                self.client.fetch_small_blob(r, &manifest.config).await?,
                true,
            ),
        };
        let config = manifest::parse_config(
            &config_bytes,
            &manifest,
            &format!("config {} of {r}", manifest.config.digest),
        )?;
        Ok(ResolvedImage {
            reference: r.with_digest(manifest_digest.clone()),
            manifest_digest,
            index_digest: index.as_ref().map(|(d, _)| d.clone()),
            manifest,
            manifest_bytes,
            index_bytes: index.map(|(_, b)| b),
            config,
            config_bytes,
            config_fetched,
            compressions,
        })
    }

    /// Pulls `r` and assembles its rootfs at `rootfs` (which must be absent
    /// or an empty directory).
    pub async fn pull(
        &self,
        r: &Reference,
        rootfs: &Path,
        opts: &PullOptions,
    ) -> Result<PullReport, Error> {
        let rootfs = absolute(rootfs)?;
        check_rootfs_target(&rootfs)?;
        let store = self.store.clone();
        let _shared = tokio::task::spawn_blocking(move || store.lock_shared())
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        let img = self.resolve(r, opts.platform.as_ref()).await?;
        // Origin before anything else: a refused image costs no layer fetch
        // and leaves the store as it was. The signed digest is the top-level
        // one (the index for a multi-platform image), as skopeo signs it.
        if let Some(v) = &opts.signature {
            let top = img.index_digest.as_ref().unwrap_or(&img.manifest_digest);
            let accepted = v.check(&self.client, r, top).await?;
            tracing::info!(image = %r, scope = %accepted.scope, accepted = ?accepted.requirements, "signature policy accepted the image");
        }
        opts.progress.event(&ProgressEvent::Resolved {
            manifest: img.manifest_digest.clone(),
            layers: img.manifest.layers.len(),
            total_bytes: img.manifest.layers.iter().map(|l| l.size).sum(),
        });

        // Every encrypted layer's key is unwrapped before anything is used,
        // even when the layer is already in the store: the store must not
        // hand an encrypted image to a caller who cannot open it.
        let keys = self.unwrap_layer_keys(&img, &opts.decryption).await?;
        let handles = self.spawn_layers(&img, opts, keys);
        let outcomes = match opts.layout {
            Layout::Flat => self.assemble_flat(&img, handles, &rootfs).await?,
            Layout::Overlay => {
                let outcomes = join_in_order(handles).await?;
                self.mount_overlay(&img, &rootfs)?;
                outcomes
            }
        };

        // Everything verified: remember the image.
        if let (Some(d), Some(b)) = (&img.index_digest, &img.index_bytes) {
            self.store.write_blob(d, b)?;
        }
        self.store
            .write_blob(&img.manifest_digest, &img.manifest_bytes)?;
        self.store
            .write_blob(&img.manifest.config.digest, &img.config_bytes)?;
        let reference = r.to_string();
        self.store.put_image(&ImageRecord {
            reference: reference.clone(),
            manifest_digest: img.manifest_digest.clone(),
            index_digest: img.index_digest.clone(),
            config_digest: img.manifest.config.digest.clone(),
            layers: img
                .manifest
                .layers
                .iter()
                .zip(&img.config.rootfs.diff_ids)
                .map(|(l, d)| LayerRecord {
                    digest: l.digest.clone(),
                    diff_id: d.clone(),
                    size: l.size,
                })
                .collect(),
        })?;
        opts.progress.event(&ProgressEvent::Done {
            manifest: img.manifest_digest.clone(),
        });
        let fetched: Vec<&LayerOutcome> = outcomes.iter().filter(|o| !o.cached).collect();
        Ok(PullReport {
            reference,
            manifest_digest: img.manifest_digest.clone(),
            index_digest: img.index_digest.clone(),
            config_digest: img.manifest.config.digest.clone(),
            blobs_fetched: fetched.len() + usize::from(img.config_fetched),
            bytes_fetched: fetched.iter().map(|o| o.fetched_bytes).sum::<u64>()
                + if img.config_fetched {
                    img.config_bytes.len() as u64
                } else {
                    0
                },
            layers: outcomes,
            rootfs,
        })
    }

    /// Makes sure every layer of `img` is in the store (no rootfs).
    pub async fn ensure_layers(
        &self,
        img: &ResolvedImage,
        opts: &PullOptions,
    ) -> Result<Vec<LayerOutcome>, Error> {
        let keys = self.unwrap_layer_keys(img, &opts.decryption).await?;
        join_in_order(self.spawn_layers(img, opts, keys)).await
    }

    /// The layer keys of the encrypted layers (`None` for plain ones).
    pub async fn unwrap_layer_keys(
        &self,
        img: &ResolvedImage,
        keys: &DecryptionKeys,
    ) -> Result<Vec<Option<Arc<LayerKeys>>>, Error> {
        let mut out = Vec::with_capacity(img.manifest.layers.len());
        for desc in &img.manifest.layers {
            if !enc::is_encrypted(&desc.media_type) {
                out.push(None);
                continue;
            }
            let k = layer_keys(&desc.annotations, keys)
                .await
                .map_err(|source| Error::Decrypt {
                    digest: desc.digest.clone(),
                    source: Box::new(source),
                })?;
            out.push(Some(Arc::new(k)));
        }
        Ok(out)
    }

    fn spawn_layers(
        &self,
        img: &ResolvedImage,
        opts: &PullOptions,
        keys: Vec<Option<Arc<LayerKeys>>>,
    ) -> Vec<tokio::task::JoinHandle<Result<LayerOutcome, Error>>> {
        let sem = Arc::new(Semaphore::new(opts.max_concurrent.max(1)));
        img.manifest
            .layers
            .iter()
            .zip(&img.config.rootfs.diff_ids)
            .zip(&img.compressions)
            .zip(keys)
            .enumerate()
            .map(|(index, (((desc, diff_id), compression), keys))| {
                let job = LayerJob {
                    client: self.client.clone(),
                    store: self.store.clone(),
                    reference: img.reference.clone(),
                    index,
                    desc: desc.clone(),
                    diff_id: diff_id.clone(),
                    compression: *compression,
                    limits: opts.limits,
                    progress: opts.progress.clone(),
                    keys,
                };
                let sem = sem.clone();
                tokio::spawn(async move {
                    let _permit = sem
                        .acquire_owned()
                        .await
                        .map_err(|e| Error::Internal(e.to_string()))?;
                    job.run().await
                })
            })
            .collect()
    }

    async fn assemble_flat(
        &self,
        img: &ResolvedImage,
        handles: Vec<tokio::task::JoinHandle<Result<LayerOutcome, Error>>>,
        rootfs: &Path,
    ) -> Result<Vec<LayerOutcome>, Error> {
        let parent = rootfs.parent().ok_or_else(|| Error::Rootfs {
            path: rootfs.to_path_buf(),
            reason: "has no parent directory".into(),
        })?;
        std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        let staging = TempPathInDir::new(parent, rootfs)?;
        let mut outcomes = Vec::new();
        let mut handles = handles.into_iter();
        while let Some(h) = handles.next() {
            let outcome = match h.await {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => {
                    handles.for_each(|h| h.abort());
                    return Err(e);
                }
                Err(e) => {
                    handles.for_each(|h| h.abort());
                    return Err(Error::Internal(format!("layer task failed: {e}")));
                }
            };
            let layer = self.store.layer_path(&outcome.diff_id);
            let implicit = self.store.implicit_dirs(&outcome.diff_id);
            let dest = staging.path().to_path_buf();
            let digest = outcome.digest.clone();
            tokio::task::spawn_blocking(move || merge::merge_layer(&layer, &dest, &implicit))
                .await
                .map_err(|e| Error::Internal(e.to_string()))?
                .map_err(|e| Error::Unpack {
                    digest,
                    source: UnpackError::Fs {
                        op: "apply onto the flat rootfs",
                        path: String::new(),
                        source: e,
                    },
                })?;
            outcomes.push(outcome);
        }
        let _ = img;
        staging.commit(rootfs)?;
        Ok(outcomes)
    }

    fn mount_overlay(&self, img: &ResolvedImage, rootfs: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(rootfs)
            .map_err(|e| Error::io("creating rootfs mount point", rootfs, e))?;
        let lowers: Vec<PathBuf> = img
            .config
            .rootfs
            .diff_ids
            .iter()
            .rev()
            .map(|d| self.store.layer_path(d))
            .collect();
        let dir = self.store.new_mount(rootfs, &img.config.rootfs.diff_ids)?;
        let chain: Vec<_> = img
            .config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| {
                (
                    self.store.layer_path(d),
                    self.store.implicit_dirs(d).into_iter().collect(),
                )
            })
            .collect();
        if chain
            .iter()
            .any(|(_, i): &(PathBuf, std::collections::HashSet<Vec<u8>>)| !i.is_empty())
        {
            if let Err(e) = merge::overlay_fixups(&chain, &dir.join("upper")) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::io(
                    "fixing implied directories in",
                    dir.join("upper"),
                    e,
                ));
            }
        }
        if let Err(e) =
            crate::mount::mount_overlay(rootfs, &lowers, &dir.join("upper"), &dir.join("work"))
        {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(())
    }

    /// Unmounts an overlay rootfs made by [`Puller::pull`] and removes its
    /// private upper directory.
    pub fn unmount(&self, rootfs: &Path) -> Result<(), Error> {
        let rootfs = absolute(rootfs)?;
        crate::mount::unmount_rootfs(&rootfs)?;
        if let Some(dir) = self.store.mount_for(&rootfs) {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io("removing overlay upper dir", &dir, e))?;
        }
        Ok(())
    }
}

fn absolute(p: &Path) -> Result<PathBuf, Error> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()
            .map_err(|e| Error::io("resolving", p, e))?
            .join(p))
    }
}

fn check_rootfs_target(rootfs: &Path) -> Result<(), Error> {
    match std::fs::read_dir(rootfs) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::Rootfs {
                    path: rootfs.to_path_buf(),
                    reason: "exists and is not empty; give a new or empty directory".into(),
                });
            }
            if crate::mount::is_mount_point(rootfs) {
                return Err(Error::Rootfs {
                    path: rootfs.to_path_buf(),
                    reason: "is a mount point; unmount it first".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("checking rootfs target", rootfs, e)),
    }
}

async fn join_in_order(
    handles: Vec<tokio::task::JoinHandle<Result<LayerOutcome, Error>>>,
) -> Result<Vec<LayerOutcome>, Error> {
    let mut out = Vec::with_capacity(handles.len());
    let mut it = handles.into_iter();
    while let Some(h) = it.next() {
        match h.await {
            Ok(Ok(o)) => out.push(o),
            Ok(Err(e)) => {
                it.for_each(|h| h.abort());
                return Err(e);
            }
            Err(e) => {
                it.for_each(|h| h.abort());
                return Err(Error::Internal(format!("layer task failed: {e}")));
            }
        }
    }
    Ok(out)
}

/// A staging directory next to the flat rootfs, renamed onto it at the end.
struct TempPathInDir {
    path: PathBuf,
    keep: bool,
}

impl TempPathInDir {
    fn new(parent: &Path, rootfs: &Path) -> Result<Self, Error> {
        let name = rootfs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = parent.join(format!(".{name}.image-rs-{}", std::process::id()));
        if path.exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
        std::fs::create_dir(&path)
            .map_err(|e| Error::io("creating staging directory", &path, e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
        Ok(TempPathInDir { path, keep: false })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn commit(mut self, rootfs: &Path) -> Result<(), Error> {
        std::fs::rename(&self.path, rootfs)
            .map_err(|e| Error::io("moving the finished rootfs into place at", rootfs, e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempPathInDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Everything one layer task needs (owned: it runs on its own task).
struct LayerJob {
    client: Arc<RegistryClient>,
    store: Store,
    reference: Reference,
    index: usize,
    desc: Descriptor,
    diff_id: Digest,
    compression: Compression,
    limits: Limits,
    progress: Arc<dyn ProgressSink>,
    keys: Option<Arc<LayerKeys>>,
}

impl LayerJob {
    fn outcome(&self, cached: bool) -> LayerOutcome {
        LayerOutcome {
            digest: self.desc.digest.clone(),
            diff_id: self.diff_id.clone(),
            cached,
            fetched_bytes: 0,
            requests: 0,
            range_requests: 0,
            unpacked: UnpackStats::default(),
        }
    }

    fn done(&self, o: &LayerOutcome) {
        self.progress.event(&ProgressEvent::LayerDone {
            index: self.index,
            digest: self.desc.digest.clone(),
            fetched_bytes: o.fetched_bytes,
            cached: o.cached,
        });
    }

    async fn run(self) -> Result<LayerOutcome, Error> {
        if self.store.has_layer(&self.diff_id) {
            let o = self.outcome(true);
            self.done(&o);
            return Ok(o);
        }
        // One download per layer across tasks and processes: the holder
        // fetches, the others wait and then find it committed.
        let store = self.store.clone();
        let diff_id = self.diff_id.clone();
        let _lock = tokio::task::spawn_blocking(move || store.lock_layer(&diff_id))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        if self.store.has_layer(&self.diff_id) {
            let o = self.outcome(true);
            self.done(&o);
            return Ok(o);
        }
        self.progress.event(&ProgressEvent::LayerStarted {
            index: self.index,
            digest: self.desc.digest.clone(),
            size: self.desc.size,
        });
        let tmp = self.store.temp_dir("layer")?;
        // Few chunks in flight: a chunk can be ~400 KiB, and memory must stay
        // flat whatever the layer size. Six per layer keep the download ahead
        // of the unpacker as well as eight did on the pull benchmark, at
        // ~5 MiB less peak RSS; four cost ~5% wall time.
        let (tx, rx) = mpsc::channel::<Chunk>(6);
        let unpack = {
            let desc = self.desc.clone();
            let diff_id = self.diff_id.clone();
            let compression = self.compression;
            let limits = self.limits;
            let dest = self.store.layer_dir(&self.diff_id);
            let keys = self.keys.clone();
            tokio::task::spawn_blocking(move || {
                unpack_layer(
                    rx,
                    tmp,
                    &dest,
                    &desc,
                    &diff_id,
                    compression,
                    limits,
                    keys.as_deref(),
                )
            })
        };
        let mut last = 0u64;
        let (index, digest, size, progress) = (
            self.index,
            self.desc.digest.clone(),
            self.desc.size,
            self.progress.clone(),
        );
        // A plain layer's blob digest runs here on the download side, beside
        // the unpacking thread. An encrypted layer goes to the unpacking
        // thread as it came: it decrypts while copying each chunk out of the
        // channel, which it does anyway, and hashes there (see
        // `ChannelReader`), instead of paying a copy and an allocation per
        // chunk here.
        let mut hasher = self
            .keys
            .is_none()
            .then(|| crate::digest::Hasher::new(self.desc.digest.algorithm()));
        let download = self
            .client
            .stream_blob(&self.reference, &self.desc, tx.clone(), |chunk, bytes| {
                if bytes - last >= 1 << 20 || bytes == size {
                    last = bytes;
                    progress.event(&ProgressEvent::LayerProgress {
                        index,
                        digest: digest.clone(),
                        bytes,
                        size,
                    });
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                chunk
            })
            .await;
        if let Ok(stats) = &download {
            let summary = BlobSummary {
                digest: hasher.map(|h| h.finish()),
                size: stats.bytes,
            };
            let _ = tx.send(Chunk::Summary(summary)).await;
        }
        // Closing the channel without a summary tells the unpacker the
        // download failed.
        drop(tx);
        let unpacked = unpack
            .await
            .map_err(|e| Error::Internal(format!("unpack thread: {e}")))?;
        let stats = match (download, unpacked) {
            (Err(e), _) => return Err(e),
            (Ok(_), Err(e)) => return Err(e),
            (Ok(s), Ok(u)) => (s, u),
        };
        let o = LayerOutcome {
            fetched_bytes: stats.0.bytes,
            requests: stats.0.requests,
            range_requests: stats.0.range_requests,
            unpacked: stats.1,
            ..self.outcome(false)
        };
        self.done(&o);
        Ok(o)
    }
}

/// `Read` over the blob channel. A channel closed before [`Chunk::End`]
/// means the download failed: that is an error, never a short EOF. For an
/// encrypted layer it decrypts what it copies out, and hashes the
/// ciphertext and the plaintext on the way.
struct ChannelReader {
    rx: mpsc::Receiver<Chunk>,
    cur: Bytes,
    ended: bool,
    decryptor: Option<BlobDecryptor>,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(b)) => self.cur = b,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Summary(_)) => {
                    return Err(io::Error::other("blob summary before the end of the blob"))
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "download interrupted",
                    ))
                }
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur.advance(n);
        if let Some(d) = self.decryptor.as_mut() {
            d.decrypt_in_place(&mut buf[..n]);
        }
        Ok(n)
    }
}

/// The blocking half of a layer: verify, decompress, unpack, commit.
/// What [`unpack_tar`] found: counts, implied directories, the diff_id.
type Unpacked = (UnpackStats, Vec<Vec<u8>>, Digest);

/// Decompresses and unpacks one tar stream into `fs_dir`, hashing it for the
/// diff_id, and drains the decompressed stream to its end. Gives `reader`
/// back so callers can finish the layers below (decryption, digests).
fn unpack_tar<R: Read>(
    reader: R,
    compression: Compression,
    diff_id: &Digest,
    fs_dir: &Path,
    limits: Limits,
) -> Result<(Unpacked, R), UnpackError> {
    let dec = Decompressor::new(reader, compression).map_err(UnpackError::Archive)?;
    let tar = BufReader::with_capacity(256 * 1024, HashingReader::new(dec, diff_id.algorithm()));
    let (stats, implicit, tar) = LayerUnpacker::new(fs_dir, limits)?.unpack_with_implicit(tar)?;
    let (diff, _, dec) = tar
        .into_inner()
        .finish_drained()
        .map_err(UnpackError::Archive)?;
    Ok(((stats, implicit, diff), dec.into_inner()))
}

#[allow(clippy::too_many_arguments)]
fn unpack_layer(
    rx: mpsc::Receiver<Chunk>,
    tmp: TempPath,
    dest: &Path,
    desc: &Descriptor,
    diff_id: &Digest,
    compression: Compression,
    limits: Limits,
    keys: Option<&LayerKeys>,
) -> Result<UnpackStats, Error> {
    let mut chan = ChannelReader {
        rx,
        cur: Bytes::new(),
        ended: false,
        decryptor: keys.map(|k| BlobDecryptor::new(desc.digest.algorithm(), &k.private, &k.public)),
    };
    let unpack_err = |source: UnpackError| Error::Unpack {
        digest: desc.digest.clone(),
        source,
    };
    let fs_dir = tmp.path().join(crate::store::LAYER_FS);
    // Encrypted layers are decrypted by `chan` as they are read: the same
    // decompress -> diff_id -> tar pass as plain ones.
    let result: Result<Unpacked, Error> = (|| {
        std::fs::create_dir(&fs_dir)
            .map_err(|e| Error::io("creating layer directory", &fs_dir, e))?;
        let (done, _) =
            unpack_tar(&mut chan, compression, diff_id, &fs_dir, limits).map_err(unpack_err)?;
        Ok(done)
    })();
    // Whatever happened above, receive the rest of the blob and the sender's
    // summary: a digest or MAC mismatch is the most precise explanation of a
    // failure, and success needs them anyway.
    let mut sink = vec![0u8; 256 * 1024];
    loop {
        match chan.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            // Download failed: the caller reports the download's error.
            Err(e) => return Err(unpack_err(UnpackError::Archive(e))),
        }
    }
    let Some(Chunk::Summary(summary)) = chan.rx.blocking_recv() else {
        return Err(unpack_err(UnpackError::Archive(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "download interrupted",
        ))));
    };
    if summary.size != desc.size {
        return Err(Error::SizeMismatch {
            digest: desc.digest.clone(),
            expected: desc.size,
            actual: summary.size,
        });
    }
    let check = chan.decryptor.take().map(BlobDecryptor::finish);
    let Some(blob_digest) = summary
        .digest
        .or_else(|| check.as_ref().map(|c| c.blob_digest.clone()))
    else {
        return Err(Error::Internal("no digest for the layer blob".into()));
    };
    if blob_digest != desc.digest {
        return Err(Error::DigestMismatch {
            what: format!("layer blob {}", desc.digest),
            expected: desc.digest.clone(),
            actual: blob_digest,
        });
    }
    if check.as_ref().is_some_and(|c| !c.mac_ok) {
        return Err(Error::Hmac {
            digest: desc.digest.clone(),
        });
    }

    let (stats, implicit, got_diff) = result?;
    if let (Some(k), Some(got)) = (keys, check.map(|c| c.plain_digest)) {
        if got != k.private.digest {
            return Err(Error::DigestMismatch {
                what: format!(
                    "decrypted layer {} (digest from its wrapped key options)",
                    desc.digest
                ),
                expected: k.private.digest.clone(),
                actual: got,
            });
        }
    }
    if &got_diff != diff_id {
        return Err(Error::DigestMismatch {
            what: format!(
                "uncompressed layer {} (diff_id from the image config)",
                desc.digest
            ),
            expected: diff_id.clone(),
            actual: got_diff,
        });
    }
    if !implicit.is_empty() {
        let list = tmp.path().join(crate::store::IMPLICIT_DIRS);
        std::fs::write(&list, implicit.join(&0u8)).map_err(|e| Error::io("writing", &list, e))?;
    }
    match tmp.commit(dest) {
        Ok(()) => Ok(stats),
        // Someone else committed the same layer meanwhile: theirs is as good.
        Err(_) if dest.is_dir() => Ok(stats),
        Err(e) => Err(e),
    }
}
