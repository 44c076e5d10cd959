//! `image-rs copy`: copy an image between a registry (`docker://REF`) and an
//! OCI layout (`oci:DIR[:TAG]`), encrypting chosen layers on the way, as
//! `skopeo copy --encryption-key` does. This is how encrypted images for
//! confidential pods are made with Sealpod's own tools.
//!
//! Layers are held in memory one at a time (copy is a build-side tool, not
//! the guest's pull path).

use std::path::PathBuf;
use std::str::FromStr;

use bytes::Bytes;
use serde_json::Value;

use crate::digest::{Algorithm, Digest};
use crate::error::Error;
use crate::layout::OciLayout;
use crate::manifest::{self, Descriptor, ImageManifest, ManifestKind};
use crate::ocicrypt::layer::{encrypt_blob, Recipient};
use crate::ocicrypt::spec as enc;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// One end of a copy.
#[derive(Debug, Clone)]
pub enum Location {
    /// `docker://REF`: a registry.
    Registry(Reference),
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag (`org.opencontainers.image.ref.name`).
        tag: Option<String>,
    },
}

impl FromStr for Location {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(Location::Registry(r.parse()?));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !t.is_empty() => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            if dir.is_empty() {
                return Err(Error::Config(format!(
                    "{s:?}: oci: needs a directory (oci:DIR[:TAG])"
                )));
            }
            return Ok(Location::Layout {
                dir: dir.into(),
                tag,
            });
        }
        Err(Error::Config(format!(
            "{s:?} is not an image location: use docker://REF or oci:DIR[:TAG]"
        )))
    }
}

/// What to do to the layers.
#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    /// Who the encrypted layers are for; empty = copy without encrypting.
    pub recipients: Vec<Recipient>,
    /// Which layers to encrypt (0-based, negative counts from the end like
    /// skopeo's `--encrypt-layer -1`); `None` = all.
    pub encrypt_layers: Option<Vec<i64>>,
    /// Platform to pick when the source is an index.
    pub platform: Option<Platform>,
    /// Sign the written manifest with this sigstore key and store the
    /// signature as an attachment (`sha256-<hex>.sig`) next to it, as
    /// `skopeo copy --sign-by-sigstore-private-key` does. Registry
    /// destinations only.
    pub sign_by_sigstore_key: Option<crate::signature::SigningKey>,
}

/// The result of a copy.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// Digest of the manifest written.
    pub manifest_digest: Digest,
    /// Indexes of the layers that were encrypted by this copy.
    pub encrypted_layers: Vec<usize>,
    /// Digest of the signature manifest written, when signing.
    pub signature_manifest: Option<Digest>,
}

const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

async fn read_document(
    client: &RegistryClient,
    src: &Location,
    digest: Option<&Digest>,
) -> Result<(Vec<u8>, Digest), Error> {
    match src {
        Location::Registry(r) => {
            let selector = digest
                .map(|d| d.to_string())
                .unwrap_or_else(|| r.manifest_selector());
            let (bytes, _) = client.fetch_manifest(r, &selector).await?;
            let d = Digest::of(
                digest.map(|d| d.algorithm()).unwrap_or(Algorithm::Sha256),
                &bytes,
            );
            match digest.or(r.digest()) {
                Some(want) if *want != d => Err(Error::DigestMismatch {
                    what: format!("manifest of {r}"),
                    expected: want.clone(),
                    actual: d,
                }),
                _ => Ok((bytes, d)),
            }
        }
        Location::Layout { dir, tag } => {
            let layout = OciLayout::open(dir)?;
            let d = match digest {
                Some(d) => d.clone(),
                None => layout.resolve(tag.as_deref())?.digest,
            };
            Ok((layout.read_blob(&d)?, d))
        }
    }
}

async fn read_blob(
    client: &RegistryClient,
    src: &Location,
    desc: &Descriptor,
) -> Result<Vec<u8>, Error> {
    match src {
        Location::Registry(r) => client.fetch_blob_verified(r, &desc.digest, desc.size).await,
        Location::Layout { dir, .. } => OciLayout::open(dir)?.read_blob(&desc.digest),
    }
}

async fn write_blob(
    client: &RegistryClient,
    dst: &Location,
    digest: &Digest,
    data: Vec<u8>,
) -> Result<(), Error> {
    match dst {
        Location::Registry(r) => client.push_blob(r, digest, Bytes::from(data)).await,
        Location::Layout { dir, .. } => {
            let got = OciLayout::open_or_create(dir)?.write_blob(&data)?;
            if &got != digest {
                return Err(Error::Internal(format!(
                    "blob {digest} hashed to {got} on write"
                )));
            }
            Ok(())
        }
    }
}

/// Copies the image at `src` to `dst`, encrypting layers for
/// `opts.recipients`.
pub async fn copy(
    client: &RegistryClient,
    src: &Location,
    dst: &Location,
    opts: &CopyOptions,
) -> Result<CopyReport, Error> {
    if opts.sign_by_sigstore_key.is_some() && !matches!(dst, Location::Registry(_)) {
        return Err(Error::Config(
            "signing needs a registry destination (docker://REF): signatures are stored in the registry".into(),
        ));
    }
    let (mut bytes, mut digest) = read_document(client, src, None).await?;
    let mut parsed = manifest::parse_manifest(&bytes, None, &format!("manifest {digest}"))?;
    if let ManifestKind::Index(idx) = &parsed {
        let wanted = opts.platform.clone().unwrap_or_else(Platform::current);
        let chosen = manifest::select_platform(idx, &wanted, &format!("{src:?}"))?
            .digest
            .clone();
        (bytes, digest) = read_document(client, src, Some(&chosen)).await?;
        parsed = manifest::parse_manifest(&bytes, None, &format!("manifest {digest}"))?;
    }
    let ManifestKind::Image(m) = parsed else {
        return Err(Error::Manifest {
            what: format!("manifest {digest}"),
            reason: "an index inside an index is not supported".into(),
        });
    };
    let ImageManifest { config, layers, .. } = &m;
    let n = layers.len() as i64;
    let selected = |i: usize| -> bool {
        if opts.recipients.is_empty() {
            return false;
        }
        match &opts.encrypt_layers {
            None => true,
            Some(list) => list
                .iter()
                .any(|&k| (if k < 0 { n + k } else { k }) == i as i64),
        }
    };
    if let Some(list) = &opts.encrypt_layers {
        if let Some(bad) = list.iter().find(|&&k| !(-n..n).contains(&k)) {
            return Err(Error::Config(format!(
                "--encrypt-layer {bad}: the image has {n} layers"
            )));
        }
    }
    let mut doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(e.to_string()))?;
    let mut out_layers = Vec::new();
    let mut encrypted = Vec::new();
    let mut changed = false;
    for (i, l) in layers.iter().enumerate() {
        let data = read_blob(client, src, l).await?;
        if selected(i) && !enc::is_encrypted(&l.media_type) {
            // Docker's gzip type has no encrypted form: write OCI types.
            let plain_type = if l.media_type == DOCKER_LAYER_GZIP {
                manifest_oci_gzip()
            } else {
                l.media_type.clone()
            };
            let mut out = Vec::with_capacity(data.len());
            let e = encrypt_blob(&data[..], &mut out, &plain_type, &opts.recipients).map_err(
                |source| Error::Encrypt {
                    digest: l.digest.clone(),
                    source: Box::new(source),
                },
            )?;
            write_blob(client, dst, &e.digest, out).await?;
            out_layers.push(
                serde_json::to_value(e.descriptor()).map_err(|e| Error::Internal(e.to_string()))?,
            );
            encrypted.push(i);
            changed = true;
        } else {
            write_blob(client, dst, &l.digest, data).await?;
            out_layers.push(serde_json::to_value(l).map_err(|e| Error::Internal(e.to_string()))?);
        }
    }
    let config_data = read_blob(client, src, config).await?;
    write_blob(client, dst, &config.digest, config_data).await?;
    let media_type = if changed {
        // ocicrypt images are OCI manifests.
        doc["mediaType"] = Value::from(manifest::OCI_MANIFEST);
        doc["config"]["mediaType"] = Value::from(manifest::OCI_CONFIG);
        for l in out_layers.iter_mut() {
            if l["mediaType"] == DOCKER_LAYER_GZIP {
                l["mediaType"] = Value::from(manifest_oci_gzip());
            }
        }
        doc["layers"] = Value::from(out_layers);
        bytes = serde_json::to_vec(&doc).map_err(|e| Error::Internal(e.to_string()))?;
        manifest::OCI_MANIFEST.to_string()
    } else {
        m.media_type
            .clone()
            .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string())
    };
    let manifest_digest = Digest::of(Algorithm::Sha256, &bytes);
    let mut signature_manifest = None;
    match dst {
        Location::Registry(r) => {
            let target = r
                .tag()
                .map(str::to_string)
                .unwrap_or_else(|| manifest_digest.to_string());
            client
                .push_manifest(r, &target, &media_type, Bytes::from(bytes.clone()))
                .await?;
            if let Some(key) = &opts.sign_by_sigstore_key {
                signature_manifest = Some(sign_pushed(client, r, &manifest_digest, key).await?);
            }
        }
        Location::Layout { dir, tag } => {
            let layout = OciLayout::open_or_create(dir)?;
            let d = layout.write_blob(&bytes)?;
            layout.set_tag(
                tag.as_deref().unwrap_or("latest"),
                &Descriptor {
                    media_type,
                    digest: d,
                    size: bytes.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                },
            )?;
        }
    }
    Ok(CopyReport {
        manifest_digest,
        encrypted_layers: encrypted,
        signature_manifest,
    })
}

/// Signs the manifest just pushed to `r` (identity: `r` without a digest,
/// as skopeo names it) and attaches the signature.
async fn sign_pushed(
    client: &RegistryClient,
    r: &Reference,
    digest: &Digest,
    key: &crate::signature::SigningKey,
) -> Result<Digest, Error> {
    use crate::signature::simple_signing::{Payload, TYPE_COSIGN};
    let identity = match r.tag() {
        Some(t) => format!("{}/{}:{t}", r.registry(), r.repository()),
        None => format!("{}/{}@{digest}", r.registry(), r.repository()),
    };
    let payload = Payload::build(&identity, digest, TYPE_COSIGN);
    let sig = key.sign(&payload);
    Ok(crate::signature::sigstore::attach(client, r, digest, &payload, &sig).await?)
}

fn manifest_oci_gzip() -> String {
    "application/vnd.oci.image.layer.v1.tar+gzip".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locations() {
        assert!(matches!(
            "docker://127.0.0.1:5000/a/b:v1"
                .parse::<Location>()
                .unwrap(),
            Location::Registry(_)
        ));
        match "oci:/tmp/x:v1".parse::<Location>().unwrap() {
            Location::Layout { dir, tag } => {
                assert_eq!((dir, tag.as_deref()), (PathBuf::from("/tmp/x"), Some("v1")))
            }
            _ => panic!(),
        }
        match "oci:rel/dir".parse::<Location>().unwrap() {
            Location::Layout { dir, tag } => {
                assert_eq!((dir, tag), (PathBuf::from("rel/dir"), None))
            }
            _ => panic!(),
        }
        assert!("dir:/x".parse::<Location>().is_err());
        assert!("oci:".parse::<Location>().is_err());
    }
}
