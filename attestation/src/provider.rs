//! image-rs's key provider over the KBS. PLACEHOLDER being written.
