//! Sandbox lifecycle (CreateSandbox, DestroySandbox).
//!
//! Not implemented in this slice: it comes with containers (hostname, DNS,
//! sandbox storages, the shared PID namespace).

super::not_implemented_yet! {
    CreateSandbox create_sandbox;
    DestroySandbox destroy_sandbox;
}
