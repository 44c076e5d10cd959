//! Attestation for a confidential guest: what a guest must do to obtain
//! secrets from a Key Broker Service (KBS) only after proving what it runs.
//!
//! - [`attester`]: evidence from the TEE (SEV-SNP, TDX, and a `sample` TEE
//!   for development that proves nothing), in the JSON shape Trustee's
//!   verifiers parse.
//! - [`kbs`]: the client side of the KBS protocol 0.4.0 (RCAR handshake,
//!   token reuse, resource retrieval as JWE to an ephemeral key). No crate
//!   implements the client side (Trustee's `kbs_protocol` is not published),
//!   so it is written here against the wire facts in the project's
//!   reference notes.
//! - [`initdata`]: the measured pod configuration (TOML), its digest, and
//!   the check against the TEE's launch-bound field.
//! - [`provider`]: image-rs's [`image_rs::ocicrypt::provider::KeyProvider`]
//!   over the KBS, so encrypted images decrypt with keys released only to an
//!   attested guest.

pub mod attester;
pub mod canon;
pub mod initdata;
pub mod kbs;
pub mod provider;
pub mod tee;
pub mod tee_key;

pub use attester::{Attester, AttesterError};
pub use tee::Tee;
