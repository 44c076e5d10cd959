//! Guest image pull (`image_guest_pull` storages): image-rs pulls, verifies
//! and (with keys from the KBS after attestation) decrypts the image inside
//! the guest, into one store shared by every container of the VM, and
//! mounts it as an overlay at the container's rootfs. Two containers pulling
//! the same image at once share the download (the store locks per layer).
//!
//! Private keys for JWE-wrapped layers (`agent.image_decryption_keys`) are
//! KBS resources too: they are fetched through the key provider (so only
//! after attestation) the first time a JWE-wrapped layer needs them, then
//! the pull is retried; they are kept in memory only. A failed fetch is not
//! kept (the next pull tries again), and plain images never need the KBS.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::Duration;

use image_rs::ocicrypt::keys::PrivateKey;
use image_rs::ocicrypt::layer::DecryptionKeys;
use image_rs::signature::RegistriesD;
use image_rs::{Layout, PullOptions, Puller, Reference, RegistryClient, RegistryConfig, Store};
use image_rs::{SignaturePolicy, SignatureVerifier};
use tracing::info;

use super::spec::ImageDefaults;
use super::ContainerError;

/// The storage driver name of a guest pull.
pub const DRIVER_IMAGE_GUEST_PULL: &str = "image_guest_pull";

/// Where the guest's image signature policy comes from. The host cannot
/// change it: it is part of the measured initdata, of the guest image, or a
/// KBS resource released only after attestation.
#[derive(Debug, Clone, Default)]
pub enum ImagePolicy {
    /// No policy: every image is accepted (the agent warns at start).
    #[default]
    None,
    /// A policy read at start (initdata `image-policy.json`, or
    /// `agent.image_policy_file`), with the lookaside configuration for
    /// simple signing if one was given (initdata `registries.d.yaml`).
    Inline {
        /// The policy.
        policy: SignaturePolicy,
        /// `registries.d` for GPG lookaside signatures.
        registries_d: Option<RegistriesD>,
        /// Where it came from, for logs.
        origin: String,
    },
    /// A `kbs:///` resource (CoCo's `image_security_policy_uri`), fetched
    /// after attestation at the first pull; until it is fetched, no image
    /// pulls (an unavailable policy never means "accept").
    Kbs(String),
}

/// Pulls images for containers.
#[derive(Debug)]
pub struct ImageService {
    /// The puller, or why the store or client could not be set up (then
    /// every pull fails with that reason).
    puller: Result<Puller, String>,
    keys: Arc<DecryptionKeys>,
    /// `kbs:///` URIs of private keys to add to `keys` (fetched once).
    remote_keys: Vec<String>,
    /// `keys` plus the fetched private keys, once fetched.
    fetched: tokio::sync::Mutex<Option<Arc<DecryptionKeys>>>,
    /// The signature policy's source, and the verifier once built.
    image_policy: ImagePolicy,
    verifier: tokio::sync::Mutex<Option<Arc<SignatureVerifier>>>,
    timeout: Duration,
}

/// A pulled image mounted at a rootfs.
#[derive(Debug)]
pub struct PulledImage {
    /// The manifest digest.
    pub manifest_digest: String,
    /// What the image config says about the process.
    pub defaults: ImageDefaults,
    /// The image's `/etc/passwd` and `/etc/group` (for its `User`).
    pub passwd: String,
    /// `/etc/group`.
    pub group: String,
}

impl ImageService {
    /// A service over the store at `store_dir`, registry settings
    /// `registry`, layer keys `keys`, each pull bounded by `timeout`.
    pub fn new(
        store_dir: &Path,
        registry: RegistryConfig,
        keys: Arc<DecryptionKeys>,
        timeout: Duration,
    ) -> Self {
        let puller = Store::open(store_dir)
            .map_err(|e| format!("the image store: {e}"))
            .and_then(|store| {
                RegistryClient::new(registry)
                    .map(|client| Puller::new(Arc::new(client), store))
                    .map_err(|e| format!("the registry client: {e}"))
            });
        if let Err(e) = &puller {
            tracing::error!(error = %e, "guest image pull is unavailable");
        }
        ImageService {
            puller,
            keys,
            remote_keys: Vec::new(),
            fetched: tokio::sync::Mutex::new(None),
            image_policy: ImagePolicy::None,
            verifier: tokio::sync::Mutex::new(None),
            timeout,
        }
    }

    /// Checks every pulled image against `policy` before any layer is
    /// fetched (see [`ImagePolicy`]).
    pub fn with_image_policy(mut self, policy: ImagePolicy) -> Self {
        self.image_policy = policy;
        self
    }

    /// The signature verifier for the next pull (`None`: no policy). A KBS
    /// policy is fetched here the first time; a failure fails the pull and
    /// is tried again at the next one.
    async fn verifier(&self) -> Result<Option<Arc<SignatureVerifier>>, ContainerError> {
        let mut cached = self.verifier.lock().await;
        if let Some(v) = cached.as_ref() {
            return Ok(Some(Arc::clone(v)));
        }
        let (policy, registries_d) = match &self.image_policy {
            ImagePolicy::None => return Ok(None),
            ImagePolicy::Inline {
                policy,
                registries_d,
                ..
            } => (policy.clone(), registries_d.clone()),
            ImagePolicy::Kbs(uri) => {
                let err = |why: String| {
                    ContainerError::Pull(format!(
                        "the image signature policy {uri} could not be fetched, so no image is accepted: {why}"
                    ))
                };
                let provider = self
                    .keys
                    .provider
                    .as_ref()
                    .ok_or_else(|| err("no KBS is configured".into()))?;
                let bytes = provider
                    .get_kek(uri)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                let policy = SignaturePolicy::from_json(&bytes).map_err(|e| err(e.to_string()))?;
                info!(policy = %uri, "image signature policy fetched from the KBS");
                (policy, None)
            }
        };
        let mut v = SignatureVerifier::new(policy);
        if let Some(p) = &self.keys.provider {
            v = v.with_key_provider(Arc::clone(p));
        }
        if let Some(r) = registries_d {
            v = v.with_registries_d(r);
        }
        let v = Arc::new(v);
        *cached = Some(Arc::clone(&v));
        Ok(Some(v))
    }

    /// Adds private keys for JWE recipients, named as `kbs:///` resources
    /// that the key provider fetches (after attestation) at the first pull.
    pub fn with_remote_private_keys(mut self, uris: Vec<String>) -> Self {
        self.remote_keys = uris;
        self
    }

    /// The keys a pull starts with: the configured ones, plus the remote
    /// private keys once they have been fetched.
    async fn current_keys(&self) -> Arc<DecryptionKeys> {
        match self.fetched.lock().await.as_ref() {
            Some(k) => Arc::clone(k),
            None => Arc::clone(&self.keys),
        }
    }

    /// Whether `e` is a JWE-wrapped layer that no key we hold opens, while
    /// remote private keys are configured and not fetched yet: then fetching
    /// them (attesting if needed) and pulling again may succeed. Plain images
    /// never get here, so they never make the guest attest.
    async fn wants_remote_keys(&self, e: &image_rs::Error) -> bool {
        let image_rs::Error::Decrypt { source, .. } = e else {
            return false;
        };
        matches!(
            **source,
            image_rs::ocicrypt::Error::NoLayerKey { jwe: Some(_), .. }
        ) && !self.remote_keys.is_empty()
            && self.fetched.lock().await.is_none()
    }

    /// Fetches the remote private keys through the key provider (so only
    /// after attestation) and keeps them, with the configured keys, for
    /// every later pull. A failure is not kept: the next pull tries again.
    async fn fetch_remote_keys(&self) -> Result<Arc<DecryptionKeys>, String> {
        let mut fetched = self.fetched.lock().await;
        if let Some(k) = fetched.as_ref() {
            return Ok(Arc::clone(k));
        }
        let provider = self
            .keys
            .provider
            .clone()
            .ok_or_else(|| "no KBS is configured to fetch them from".to_string())?;
        let mut private_keys = Vec::with_capacity(self.remote_keys.len());
        for uri in &self.remote_keys {
            let bytes = provider
                .get_kek(uri)
                .await
                .map_err(|e| format!("{uri}: {e}"))?;
            let key = PrivateKey::from_bytes(&bytes, None)
                .map_err(|e| format!("{uri}: not a private key: {e}"))?;
            private_keys.push(key);
        }
        info!(
            keys = private_keys.len(),
            "private keys for encrypted images fetched from the KBS"
        );
        let keys = Arc::new(DecryptionKeys {
            private_keys,
            provider: Some(provider),
        });
        *fetched = Some(Arc::clone(&keys));
        Ok(keys)
    }

    /// One pull of `reference` with `keys`, bounded by the pull timeout.
    async fn pull_with(
        &self,
        image: &str,
        reference: &Reference,
        rootfs: &Path,
        keys: Arc<DecryptionKeys>,
    ) -> Result<Result<image_rs::PullReport, image_rs::Error>, ContainerError> {
        let opts = PullOptions {
            layout: Layout::Overlay,
            decryption: keys,
            signature: self.verifier().await?,
            ..PullOptions::default()
        };
        tokio::time::timeout(self.timeout, self.puller()?.pull(reference, rootfs, &opts))
            .await
            .map_err(|_| {
                ContainerError::Pull(format!(
                    "{image}: not done after {:?} (agent.image_pull_timeout)",
                    self.timeout
                ))
            })
    }

    fn puller(&self) -> Result<&Puller, ContainerError> {
        self.puller
            .as_ref()
            .map_err(|e| ContainerError::Pull(e.clone()))
    }

    /// The store directory.
    pub fn store_dir(&self) -> Option<PathBuf> {
        self.puller
            .as_ref()
            .ok()
            .map(|p| p.store().root().to_path_buf())
    }

    /// Pulls `image` and mounts it at `rootfs` (overlay on the shared store).
    pub async fn pull(&self, image: &str, rootfs: &Path) -> Result<PulledImage, ContainerError> {
        let reference: Reference = image.parse().map_err(|e: image_rs::Error| {
            ContainerError::InvalidArgument(format!("image {image:?}: {e}"))
        })?;
        let started = std::time::Instant::now();
        let puller = self.puller()?;
        let mut result = self
            .pull_with(image, &reference, rootfs, self.current_keys().await)
            .await?;
        if let Err(e) = &result {
            if self.wants_remote_keys(e).await {
                result = match self.fetch_remote_keys().await {
                    Ok(keys) => self.pull_with(image, &reference, rootfs, keys).await?,
                    Err(why) => {
                        tracing::warn!(error = %why, "agent.image_decryption_keys: not fetched; trying again at the next pull");
                        return Err(ContainerError::Pull(format!(
                            "{e} (the private keys of agent.image_decryption_keys could not be fetched: {why})"
                        )));
                    }
                };
            }
        }
        let report = result.map_err(|e| ContainerError::Pull(e.to_string()))?;
        info!(
            image,
            digest = %report.manifest_digest,
            blobs = report.blobs_fetched,
            ms = started.elapsed().as_millis() as u64,
            "image pulled in the guest"
        );
        let config = puller
            .store()
            .read_blob(&report.config_digest)
            .ok_or_else(|| {
                ContainerError::Pull(format!("{image}: the image config is not in the store"))
            })?;
        let defaults = ImageDefaults::from_image_config(&config).map_err(ContainerError::Pull)?;
        let read = |p: &str| read_in_root(rootfs, p).unwrap_or_default();
        Ok(PulledImage {
            manifest_digest: report.manifest_digest.to_string(),
            defaults,
            passwd: read("etc/passwd"),
            group: read("etc/group"),
        })
    }

    /// Unmounts a rootfs made by [`ImageService::pull`] (the layers stay in
    /// the store for the next container).
    pub fn unmount(&self, rootfs: &Path) -> Result<(), ContainerError> {
        self.puller()?
            .unmount(rootfs)
            .map_err(|e| ContainerError::Io {
                what: format!("unmounting {}", rootfs.display()),
                source: std::io::Error::other(e.to_string()),
            })
    }
}

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ACCOUNT_FILE: u64 = 1024 * 1024;

/// Reads `path` inside `root` without following anything out of it (the
/// image is untrusted: `/etc/passwd` may be a symlink to the guest's files).
fn read_in_root(root: &Path, path: &str) -> std::io::Result<String> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use std::io::Read as _;
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &dir,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?;
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(MAX_ACCOUNT_FILE)
        .read_to_string(&mut s)?;
    Ok(s)
}
