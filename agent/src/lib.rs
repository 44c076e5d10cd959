//! agent: see DESIGN.md. Not built yet; this crate is a placeholder for its own issue.
