//! Test fixtures for Sealpod's end-to-end tests with real peers (run as root on Debian 12,
//! loopback only). Each fixture owns its temp dirs and processes and cleans them up on
//! drop, so tests run in parallel and leave nothing behind even when they panic.
//!
//! Modules, one concept each:
//! - [`registry`]: a real `docker-registry` (distribution 2.8.2) on a free 127.0.0.1 port,
//!   optionally with TLS (test CA made with `openssl`) and htpasswd Basic auth.
//! - [`layout`]: an OCI image layout on disk: read/write blobs, manifests, tags.
//! - [`images`]: images built with umoci (busybox base, extra layers made by editing an
//!   unpacked rootfs, a multi-platform index) and umoci's unpack as the reference result.
//! - [`fsedit`]: small rootfs edits for layer closures (owners, modes, fifos, xattrs).
//! - [`push`]: pushing layout images with skopeo (OCI or Docker v2s2; gzip, zstd or
//!   uncompressed layers; indexes) and sha512 images with raw v2 API calls.
//! - [`raw`]: hand-built manifests/configs/blobs (any bytes, media types, declared
//!   digests) pushed through the v2 API or planted in registry storage.
//! - [`tar_builder`]: tar layers built byte by byte, including hostile ones (`..`,
//!   absolute paths, symlink and hard-link escapes, gzip bombs, huge sparse files).
//! - [`compress`]: gzip/zstd/none layer compression and detection.
//! - [`fstree`]: snapshot a directory tree with lstat and compare two snapshots.
//! - [`proxy`]: an HTTP/1.1 proxy in front of a registry that logs requests, cuts
//!   responses short on demand and can enforce bearer-token auth itself.
//! - [`http`]: a minimal blocking HTTP/1.1 client for the v2 API.
//! - [`kbs`]: a running development KBS (`dev-kbs`) with its own resource directory.
//! - [`agent`]: the real `guest-agent` binary as a child process driven by `agentctl`,
//!   with complete teardown (processes, cgroups, mounts); restartable on the same state.
//! - [`cmd`]: running external tools with self-explaining failures.

#![warn(missing_docs)]

pub mod agent;
pub mod cmd;
pub mod compress;
pub mod fsedit;
pub mod fstree;
pub mod http;
pub mod images;
pub mod kbs;
pub mod layout;
pub mod proxy;
pub mod push;
pub mod raw;
pub mod registry;
pub mod signing;
pub mod tar_builder;
