//! CreateContainer: validate, pull the image in the guest, write the bundle,
//! prepare the init (not started). On any failure everything made so far is
//! undone: no rootfs mount, bundle or runtime state is left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::image::DRIVER_IMAGE_GUEST_PULL;
use super::spec::{self, apply_image_defaults, fill_runtime_defaults, resolve_user};
use super::{id, launch_with_stdio, Container, ContainerError, Containers, Process, Status};
use crate::protocols::agent::Storage;
use crate::protocols::oci;

/// Releases an ID reservation when creation ends, whatever happened.
struct Reservation<'a> {
    creating: &'a Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.creating
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Undoes a partial create unless disarmed.
struct Cleanup<'a> {
    containers: &'a Containers,
    bundle: PathBuf,
    rootfs_mounted: bool,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if self.rootfs_mounted {
            if let Err(e) = self.containers.images.unmount(&self.bundle.join("rootfs")) {
                warn!(error = %e, "cleaning up a failed create");
            }
        }
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

impl Containers {
    /// Creates container `cid` from `spec` and `storages`.
    pub async fn create(
        &self,
        cid: &str,
        spec: &oci::Spec,
        storages: &[Storage],
    ) -> Result<Arc<Container>, ContainerError> {
        id::validate("container_id", cid).map_err(ContainerError::InvalidArgument)?;
        let _reservation = self.reserve(cid)?;

        let image = guest_pull_source(storages)?;
        let bundle = self.root.join(cid);
        std::fs::create_dir_all(&self.root)
            .map_err(ContainerError::io("creating the containers directory"))?;
        std::fs::create_dir(&bundle).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ContainerError::AlreadyExists(format!(
                    "container {cid} already exists (its bundle is present)"
                ))
            } else {
                ContainerError::Io {
                    what: format!("creating {}", bundle.display()),
                    source: e,
                }
            }
        })?;
        let mut cleanup = Cleanup {
            containers: self,
            bundle: bundle.clone(),
            rootfs_mounted: false,
            armed: true,
        };
        let rootfs = bundle.join("rootfs");

        let pulled = self.images.pull(&image, &rootfs).await?;
        cleanup.rootfs_mounted = true;
        let user = resolve_user(&pulled.defaults.user, &pulled.passwd, &pulled.group)
            .map_err(|e| ContainerError::InvalidArgument(format!("image {image}: {e}")))?;

        let mut config = spec::to_oci_config(spec, &rootfs.to_string_lossy());
        apply_image_defaults(&mut config, &pulled.defaults, user);
        fill_runtime_defaults(&mut config, cid);
        if config["process"]["args"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            return Err(ContainerError::InvalidArgument(format!(
                "container {cid}: no command: the request has no args and image {image} has no Entrypoint or Cmd"
            )));
        }
        let terminal = config["process"]["terminal"].as_bool().unwrap_or(false);
        let json = serde_json::to_vec_pretty(&config).map_err(|e| ContainerError::Io {
            what: "encoding config.json".into(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(bundle.join("config.json"), json)
            .map_err(ContainerError::io("writing config.json"))?;

        let runtime = Arc::clone(&self.runtime);
        let (b, c) = (bundle.clone(), cid.to_string());
        let (io, pid) = launch_with_stdio(terminal, bundle.join("console.sock"), move |stdio| {
            Ok(runtime.create(&c, &b, stdio)?)
        })
        .await?;
        let exit = self.reaper.register(pid);
        let container = Arc::new(Container {
            id: cid.to_string(),
            bundle,
            init: Arc::new(Process { pid, io, exit }),
            execs: Mutex::new(HashMap::new()),
            status: Mutex::new(Status::Created),
            removal: tokio::sync::Mutex::new(()),
        });
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cid.to_string(), Arc::clone(&container));
        cleanup.armed = false;
        self.watch_oom(Arc::downgrade(&container), cid.to_string());
        info!(container = cid, image, digest = %pulled.manifest_digest, pid, "container created");
        Ok(container)
    }

    fn reserve(&self, cid: &str) -> Result<Reservation<'_>, ContainerError> {
        let exists = self
            .table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(cid);
        let mut creating = self.creating.lock().unwrap_or_else(|e| e.into_inner());
        if exists || !creating.insert(cid.to_string()) {
            return Err(ContainerError::AlreadyExists(format!(
                "container {cid} already exists"
            )));
        }
        Ok(Reservation {
            creating: &self.creating,
            id: cid.to_string(),
        })
    }

    /// Where a container's bundle lives (for tests and diagnostics).
    pub fn bundle_of(&self, cid: &str) -> PathBuf {
        self.root.join(cid)
    }

    /// The containers directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// The image of the request's `image_guest_pull` storage. Exactly one is
/// required: this agent runs guest-pulled images only (the host never
/// provides a rootfs in a confidential pod).
fn guest_pull_source(storages: &[Storage]) -> Result<String, ContainerError> {
    let pulls: Vec<&Storage> = storages
        .iter()
        .filter(|s| s.driver == DRIVER_IMAGE_GUEST_PULL)
        .collect();
    if let Some(other) = storages
        .iter()
        .find(|s| s.driver != DRIVER_IMAGE_GUEST_PULL)
    {
        return Err(ContainerError::InvalidArgument(format!(
            "storage driver {:?} is not supported; this agent runs images pulled in the guest ({DRIVER_IMAGE_GUEST_PULL})",
            other.driver
        )));
    }
    match pulls.as_slice() {
        [one] if !one.source.is_empty() => Ok(one.source.clone()),
        [_] => Err(ContainerError::InvalidArgument(format!(
            "the {DRIVER_IMAGE_GUEST_PULL} storage has no source (image reference)"
        ))),
        [] => Err(ContainerError::InvalidArgument(format!(
            "no {DRIVER_IMAGE_GUEST_PULL} storage: the image to run must be pulled in the guest"
        ))),
        _ => Err(ContainerError::InvalidArgument(format!(
            "more than one {DRIVER_IMAGE_GUEST_PULL} storage"
        ))),
    }
}
