//! Pull progress events, for a terminal display or machine-readable JSON.

use serde::Serialize;

use crate::digest::Digest;

/// Something that happened during a pull.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// The manifest was resolved; `layers` follow.
    Resolved {
        /// Manifest digest.
        manifest: Digest,
        /// Number of layers.
        layers: usize,
        /// Sum of compressed layer sizes.
        total_bytes: u64,
    },
    /// A layer download started.
    LayerStarted {
        /// Layer index (base = 0).
        index: usize,
        /// Compressed digest.
        digest: Digest,
        /// Compressed size.
        size: u64,
    },
    /// Bytes of a layer received so far.
    LayerProgress {
        /// Layer index.
        index: usize,
        /// Compressed digest.
        digest: Digest,
        /// Bytes received.
        bytes: u64,
        /// Compressed size.
        size: u64,
    },
    /// A layer was verified and committed (or already present).
    LayerDone {
        /// Layer index.
        index: usize,
        /// Compressed digest.
        digest: Digest,
        /// Bytes downloaded for it (0 when it was in the store).
        fetched_bytes: u64,
        /// Whether it was already in the store.
        cached: bool,
    },
    /// The rootfs is ready.
    Done {
        /// Manifest digest.
        manifest: Digest,
    },
}

/// Receives progress events; called from several tasks at once.
pub trait ProgressSink: Send + Sync {
    /// Handles one event. Must not block for long.
    fn event(&self, event: &ProgressEvent);
}

/// Discards events.
#[derive(Debug, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn event(&self, _: &ProgressEvent) {}
}
