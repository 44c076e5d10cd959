//! attestation-agent CLI. PLACEHOLDER being written.
fn main() {}
