//! image-rs: OCI image pull for confidential guests.
//!
//! The guest trusts nothing on the host or the network: every manifest,
//! config and layer is verified against a digest before it is used, every
//! layer is treated as hostile input on unpack, and nothing unverified is
//! committed to the store.
//!
//! Pipeline per layer (one streaming pass, layers in parallel):
//! `HTTP body -> digest -> decompress -> diff_id digest -> tar apply`,
//! see [`pull`]. The store ([`store`]) keeps each layer unpacked once in
//! overlayfs format; a rootfs is either an overlay mount over them
//! ([`Layout::Overlay`]) or a plain merged copy ([`Layout::Flat`]).

pub mod copy;
pub mod decompress;
pub mod digest;
pub mod error;
pub mod layout;
pub mod manifest;
pub mod mount;
pub mod ocicrypt;
pub mod platform;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod sha256_lanes;
pub mod signature;
pub mod store;
pub mod unpack;

pub use digest::{Algorithm, Digest};
pub use error::{Error, Result};
pub use platform::Platform;
pub use pull::{Layout, PullOptions, PullReport, Puller};
pub use reference::Reference;
pub use registry::{Credentials, RegistryClient, RegistryConfig};
pub use signature::{SignaturePolicy, SignatureVerifier};
pub use store::Store;
