//! The KBS client (protocol 0.4.0): see [`client`] for the flow,
//! [`protocol`] for the messages, [`error`] for what failures say.

pub mod client;
pub mod error;
pub mod protocol;

pub use client::{KbsClient, KbsConfig};
pub use error::{KbsError, Step};
