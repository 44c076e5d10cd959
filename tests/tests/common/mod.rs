//! Helpers shared by the end-to-end test files (`mod common;` in each).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_rs::{Digest, Error, PullReport, Puller, Reference};
use integration_tests::proxy::RequestRecord;
use serde_json::Value;

pub fn reference(s: &str) -> Reference {
    s.parse()
        .unwrap_or_else(|e| panic!("parse reference {s:?}: {e}"))
}

pub fn digest(s: &str) -> Digest {
    s.parse()
        .unwrap_or_else(|e| panic!("parse digest {s:?}: {e}"))
}

/// The error of a pull that must fail.
pub fn expect_err(what: &str, r: Result<PullReport, Error>) -> Error {
    match r {
        Ok(rep) => panic!("{what}: the pull succeeded but must fail; report: {rep:#?}"),
        Err(e) => e,
    }
}

/// Asserts that the error's message mentions every one of `words`.
pub fn assert_mentions(what: &str, e: &Error, words: &[&str]) {
    let msg = e.to_string();
    for w in words {
        assert!(
            msg.contains(w),
            "{what}: error message should mention {w:?}: {msg}\n({e:?})"
        );
    }
}

pub fn is_mount_point(p: &Path) -> bool {
    let (Ok(m), Some(parent)) = (fs::symlink_metadata(p), p.parent()) else {
        return false;
    };
    fs::metadata(parent).is_ok_and(|pm| pm.dev() != m.dev())
}

/// Unmounts an overlay rootfs on drop (also when the test panics), before the scratch
/// dir holding the store is removed. Declare it after the [`Scratch`].
pub struct MountGuard {
    puller: Puller,
    target: PathBuf,
}

impl MountGuard {
    pub fn new(puller: &Puller, target: &Path) -> MountGuard {
        MountGuard {
            puller: puller.clone(),
            target: target.to_path_buf(),
        }
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if !is_mount_point(&self.target) {
            return;
        }
        if let Err(e) = self.puller.unmount(&self.target) {
            eprintln!("unmounting {}: {e}; detaching", self.target.display());
            let _ = Command::new("umount").arg("-l").arg(&self.target).status();
        }
    }
}

/// Names of the entries of a directory (empty when it does not exist).
pub fn dir_names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(p) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("read dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

pub fn blob_gets(reqs: &[RequestRecord]) -> Vec<&RequestRecord> {
    reqs.iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .collect()
}

pub fn layer_digests(m: &Value) -> Vec<String> {
    m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}
