//! Sealpod's guest agent: the Kata agent protocol (ttrpc over vsock) served
//! inside a confidential VM, with every request checked by a Rego policy
//! before anything happens.
//!
//! The host is untrusted: it asks, the guest decides. The crate is a library
//! first; `guest-agent` (the in-guest server) and `agentctl` (the host-side
//! client) are thin binaries over it.
//!
//! Layout (one job per module):
//!
//! | module | job |
//! | --- | --- |
//! | [`protocols`] | generated messages and ttrpc services (from `protos/`) |
//! | [`methods`] | the table of every RPC: service, method, request and response types |
//! | [`rpc`] | the ttrpc layer: decode, count, check policy, call a domain module; one file per RPC group |
//! | [`policy`] | the Rego policy gate (regorus) and its stateful JSON-patch data |
//! | [`server`] | binds the listener (unix, abstract unix, vsock) and runs the ttrpc server |
//! | [`client`] | host side: connects (incl. hybrid vsock) and calls methods with JSON in/out |
//! | [`config`] | agent configuration from defaults, TOML file, kernel cmdline, env and flags |
//! | [`addr`] | `unix:///path`, `unix://@name`, `vsock://CID:PORT` addresses |
//! | [`container`] | containers: guest image pull, bundle, libcontainer, processes, stdio, reaping |
//! | [`copy_file`] | CopyFile: confined writes below the shared directory |
//! | [`netlink`] | rtnetlink: dumps of links, addresses and routes; link, address and route changes |
//! | [`guest_pull`] | guest image pull settings: store, registry credentials, KBS keys |
//! | [`guest`] | facts about the guest the host asks for (memory block size, ...) |
//! | [`init`] | the agent as the VM's init (PID 1): root switch, mounts, modules, power-off |
//! | [`clock`] | setting the guest's wall clock |
//! | [`metrics`] | per-method counters and process figures in Prometheus text |
//! | [`state`] | what every RPC handler shares |
//! | [`logging`] | tracing setup (JSON when stderr is not a terminal) |

pub mod addr;
pub mod client;
pub mod clock;
pub mod config;
pub mod container;
pub mod copy_file;
pub mod guest;
pub mod guest_pull;
pub mod init;
pub mod logging;
pub mod methods;
pub mod metrics;
pub mod netlink;
pub mod policy;
mod proto_serde;
/// Messages and ttrpc services generated from `protos/*.proto` by
/// ttrpc-codegen 0.7 (rust-protobuf 3.7, async server traits, serde derives).
///
/// The generated files are checked in so that builds need neither protoc nor
/// the code generator. After editing a `.proto` file, regenerate with
/// `cargo test -p agent --test protos -- --ignored regenerate`; the
/// non-ignored test in `tests/protos.rs` fails while they are stale.
#[allow(missing_debug_implementations)]
pub mod protocols;
pub mod rpc;
pub mod server;
pub mod state;

/// The agent's version, reported by Health.Version and GetGuestDetails.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
