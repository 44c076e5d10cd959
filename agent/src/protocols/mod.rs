// @generated
#![cfg_attr(rustfmt, rustfmt::skip)]

pub mod agent;
pub mod csi;
pub mod health;
pub mod oci;
pub mod types;
pub mod agent_ttrpc;
pub mod health_ttrpc;
