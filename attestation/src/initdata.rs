//! Initdata. PLACEHOLDER being written.
