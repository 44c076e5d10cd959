//! The KBS client (protocol 0.4.0).

pub mod protocol;
