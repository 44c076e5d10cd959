//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`),
//! as skopeo and umoci read and write them: the `oci:DIR[:TAG]` side of
//! `image-rs copy`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::digest::{Algorithm, Digest};
use crate::error::Error;
use crate::manifest::{Descriptor, OCI_INDEX};

/// The annotation that names a manifest in `index.json` (the tag).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

impl OciLayout {
    /// Opens an existing layout (it must have an `oci-layout` file).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        if !dir.join("oci-layout").is_file() {
            return Err(Error::Config(format!(
                "{} is not an OCI image layout (no oci-layout file)",
                dir.display()
            )));
        }
        Ok(OciLayout { dir })
    }

    /// Opens a layout, creating an empty one if the directory has none.
    pub fn open_or_create(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        if !dir.join("oci-layout").is_file() {
            fs::create_dir_all(dir.join("blobs")).map_err(|e| Error::io("creating", &dir, e))?;
            write_atomic(
                &dir.join("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
            let idx = Index {
                schema_version: 2,
                media_type: Some(OCI_INDEX.into()),
                manifests: Vec::new(),
            };
            write_atomic(
                &dir.join("index.json"),
                &serde_json::to_vec(&idx).expect("serializable"),
            )?;
        }
        Ok(OciLayout { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn index(&self) -> Result<Index, Error> {
        let p = self.dir.join("index.json");
        let data = fs::read(&p).map_err(|e| Error::io("reading", &p, e))?;
        serde_json::from_slice(&data).map_err(|e| Error::Manifest {
            what: p.display().to_string(),
            reason: format!("not a valid index: {e}"),
        })
    }

    /// The manifest descriptor tagged `tag`, or the only one when `tag` is
    /// `None`.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor, Error> {
        let idx = self.index()?;
        let found: Vec<&Descriptor> = match tag {
            Some(t) => idx
                .manifests
                .iter()
                .filter(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
                .collect(),
            None => idx.manifests.iter().collect(),
        };
        match found.as_slice() {
            [d] => Ok((*d).clone()),
            [] => Err(Error::Config(format!(
                "{}: no image {} in the layout",
                self.dir.display(),
                tag.map(|t| format!("tagged {t:?}")).unwrap_or_default()
            ))),
            _ => Err(Error::Config(format!(
                "{}: several images; name one with oci:DIR:TAG",
                self.dir.display()
            ))),
        }
    }

    /// Where a blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(d.algorithm().name())
            .join(d.hex())
    }

    /// A whole blob, verified against its digest.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, Error> {
        let p = self.blob_path(d);
        let data = fs::read(&p).map_err(|e| Error::io("reading blob", &p, e))?;
        d.verify(&format!("blob {d} in {}", self.dir.display()), &data)?;
        Ok(data)
    }

    /// Stores a blob, returning its sha256 digest.
    pub fn write_blob(&self, data: &[u8]) -> Result<Digest, Error> {
        let d = Digest::of(Algorithm::Sha256, data);
        let p = self.blob_path(&d);
        if !p.exists() {
            fs::create_dir_all(p.parent().expect("has parent"))
                .map_err(|e| Error::io("creating", &p, e))?;
            write_atomic(&p, data)?;
        }
        Ok(d)
    }

    /// Points `tag` at `desc` in `index.json` (replacing an older entry).
    pub fn set_tag(&self, tag: &str, desc: &Descriptor) -> Result<(), Error> {
        let mut idx = self.index()?;
        idx.manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut d = desc.clone();
        d.annotations.insert(REF_NAME.into(), tag.into());
        idx.manifests.push(d);
        write_atomic(
            &self.dir.join("index.json"),
            &serde_json::to_vec(&idx).expect("serializable"),
        )
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io("writing", &tmp, e))?;
    f.write_all(data)
        .map_err(|e| Error::io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("syncing", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_tag_resolve_roundtrip() {
        let t = tempfile::tempdir().unwrap();
        let l = OciLayout::open_or_create(t.path().join("l")).unwrap();
        let d = l.write_blob(b"{}").unwrap();
        assert_eq!(l.read_blob(&d).unwrap(), b"{}");
        let desc = Descriptor {
            media_type: crate::manifest::OCI_MANIFEST.into(),
            digest: d.clone(),
            size: 2,
            platform: None,
            annotations: Default::default(),
        };
        l.set_tag("v1", &desc).unwrap();
        l.set_tag("v1", &desc).unwrap();
        l.set_tag("v2", &desc).unwrap();
        let again = OciLayout::open(t.path().join("l")).unwrap();
        assert_eq!(again.resolve(Some("v1")).unwrap().digest, d);
        assert!(again.resolve(None).is_err(), "two images: a tag is needed");
        assert!(again.resolve(Some("nope")).is_err());
        std::fs::write(again.blob_path(&d), b"tampered").unwrap();
        assert!(again.read_blob(&d).is_err());
        assert!(OciLayout::open(t.path()).is_err());
    }
}
