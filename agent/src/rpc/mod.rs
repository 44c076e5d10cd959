//! The ttrpc layer. It only decodes (ttrpc has done that by the time a
//! handler runs), counts, asks the policy and calls a domain module; the group
//! files ([`health`], [`containers`], [`stdio`], [`network`], [`sandbox`],
//! [`misc`]) hold the handlers.
//!
//! Both service implementations are generated from the method tables in
//! [`crate::methods`], so every request of every method goes through
//! [`Gate::check`] first, under the rule named after its request message.
//! Methods not implemented yet answer `UNIMPLEMENTED` with
//! "`<Method>` is not implemented yet".

pub mod containers;
pub mod health;
pub mod misc;
pub mod network;
pub mod sandbox;
pub mod stdio;

use std::collections::HashMap;
use std::sync::Arc;

use ttrpc::r#async::{Service, TtrpcContext};
use ttrpc::Code;

use crate::methods::{for_each_agent_method, for_each_health_method, proto};
use crate::policy::{Decision, IfUndefined, PolicyError};
use crate::protocols::{agent_ttrpc, health_ttrpc};
use crate::state::AgentState;

/// A ttrpc error carrying `code` and `message` to the client.
pub fn status(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

/// The answer of a method this slice does not implement yet.
pub fn not_implemented(method: &str) -> ttrpc::Error {
    status(
        Code::UNIMPLEMENTED,
        format!("{method} is not implemented yet"),
    )
}

/// The policy gate in front of every handler.
#[derive(Debug, Clone)]
pub struct Gate {
    state: Arc<AgentState>,
}

impl Gate {
    /// A gate over the agent's policy and counters.
    pub fn new(state: Arc<AgentState>) -> Self {
        Gate { state }
    }

    /// Counts the request, then asks the policy. `rule` is the request
    /// message name; `input` builds the policy input (only if a policy is
    /// loaded).
    pub fn check<F>(
        &self,
        method: &'static str,
        rule: &'static str,
        if_undefined: IfUndefined,
        input: F,
    ) -> ttrpc::Result<()>
    where
        F: FnOnce() -> Result<serde_json::Value, String>,
    {
        let metrics = &self.state.metrics;
        metrics.record_request(method);
        tracing::debug!(method, "request");
        match self.state.policy.check_with(rule, if_undefined, input) {
            Ok(Decision::Allow) => Ok(()),
            Ok(Decision::Deny { message }) => {
                metrics.record_denied(method);
                tracing::warn!(method, rule, %message, "request denied by policy");
                Err(status(Code::PERMISSION_DENIED, message))
            }
            Err(e @ PolicyError::Input { .. }) => {
                metrics.record_denied(method);
                Err(status(Code::INVALID_ARGUMENT, e.to_string()))
            }
            Err(e) => {
                metrics.record_denied(method);
                tracing::error!(method, rule, error = %e, "policy evaluation failed");
                Err(status(Code::INTERNAL, e.to_string()))
            }
        }
    }
}

/// The policy input of most requests: the request itself as JSON.
pub fn serde_input<T: serde::Serialize>(req: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(req).map_err(|e| e.to_string())
}

/// Picks the policy input builder of a table row: the row's own, or
/// [`serde_input`].
macro_rules! policy_input_fn {
    () => {
        $crate::rpc::serde_input
    };
    ($input:path) => {
        $input
    };
}

/// Methods whose denial still runs the handler and answers empty data:
/// ReadStdout/ReadStderr, as Kata does.
fn drains_when_denied(method: &str) -> bool {
    matches!(method, "ReadStdout" | "ReadStderr")
}

/// `grpc.AgentService`.
#[derive(Debug, Clone)]
pub struct AgentService {
    state: Arc<AgentState>,
    gate: Gate,
}

/// `grpc.Health`.
#[derive(Debug, Clone)]
pub struct HealthService {
    state: Arc<AgentState>,
    gate: Gate,
}

macro_rules! impl_service {
    ($trait:path, $svc:ty, $if_undefined:expr; $(
        $method:ident $fn:ident $group:ident ($rm:ident :: $req:ident) => ($om:ident :: $resp:ident) $([$input:path])?;
    )*) => {
        #[async_trait::async_trait]
        impl $trait for $svc {
            $(
                async fn $fn(
                    &self,
                    _ctx: &TtrpcContext,
                    req: proto::$rm::$req,
                ) -> ttrpc::Result<proto::$om::$resp> {
                    let gate = self.gate.check(
                        stringify!($method),
                        stringify!($req),
                        $if_undefined,
                        || policy_input_fn!($($input)?)(&req),
                    );
                    if let Err(e) = gate {
                        if drains_when_denied(stringify!($method)) {
                            // Kata's rule (kata-containers#10680): a denied
                            // read still consumes the output, so a process
                            // blocked on a full pipe is not stuck forever,
                            // and answers "no data" rather than an error
                            // the runtime would retry in a loop.
                            let _: ttrpc::Result<proto::$om::$resp> =
                                $group::$fn(&self.state, req).await;
                            return Ok(Default::default());
                        }
                        return Err(e);
                    }
                    $group::$fn(&self.state, req).await
                }
            )*
        }
    };
}

macro_rules! impl_agent_service {
    ($($row:tt)*) => {
        impl_service!(agent_ttrpc::AgentService, AgentService, IfUndefined::Deny; $($row)*);
    };
}

macro_rules! impl_health_service {
    ($($row:tt)*) => {
        // Health reveals nothing and Kata never checks it, so genpolicy
        // policies lack `CheckRequest`: undefined allows, `false` denies.
        impl_service!(health_ttrpc::Health, HealthService, IfUndefined::Allow; $($row)*);
    };
}

for_each_agent_method!(impl_agent_service);
for_each_health_method!(impl_health_service);

/// Both services, ready for `ttrpc::r#async::Server::register_service`.
pub fn services(state: Arc<AgentState>) -> HashMap<String, Service> {
    let gate = Gate::new(state.clone());
    let agent = AgentService {
        state: state.clone(),
        gate: gate.clone(),
    };
    let health = HealthService { state, gate };
    let mut all = agent_ttrpc::create_agent_service(Arc::new(agent));
    all.extend(health_ttrpc::create_health(Arc::new(health)));
    all
}

/// Declares handlers of methods that are not implemented yet; each answers
/// `UNIMPLEMENTED` naming the method. The request and response types are
/// inferred from the method table.
macro_rules! not_implemented_yet {
    ($($method:ident $fn:ident;)*) => {
        $(
            #[doc = concat!("`", stringify!($method), "`: not implemented yet (UNIMPLEMENTED).")]
            pub(crate) async fn $fn<Req, Resp>(
                _state: &$crate::state::AgentState,
                _req: Req,
            ) -> ttrpc::Result<Resp> {
                Err($crate::rpc::not_implemented(stringify!($method)))
            }
        )*
    };
}
pub(crate) use not_implemented_yet;

/// Runs blocking work (filesystem, netlink) off the async workers.
pub(crate) async fn blocking<T, F>(what: &'static str, f: F) -> ttrpc::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| status(Code::INTERNAL, format!("{what}: worker failed: {e}")))
}
