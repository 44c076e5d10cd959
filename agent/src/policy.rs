//! The agent policy: every request is checked by a Rego policy before the
//! agent acts on it, because the host that sends the requests is untrusted.
//!
//! Behaviour matches Kata's agent policy so genpolicy output works as is:
//!
//! - the rule queried is `data.agent_policy.<RequestMessageName>` (one name
//!   per request type, e.g. `ReadStreamRequest` for ReadStdout and
//!   ReadStderr), with the request as JSON `input`;
//! - the rule yields `true`/`false`, or `{"allowed": bool, "ops": [...]}`
//!   whose JSON-patch `ops` update the policy's data when allowed (stateful
//!   policies keep their state under `data.pstate`);
//! - an undefined rule denies; a denial carries the policy's `print` output;
//! - `AllowRequestsFailingPolicy := true` turns denials into warnings (debug);
//! - with no policy at all, everything is allowed and a warning is logged
//!   once.

mod patch;

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use regorus::PolicyLengthConfig;

pub use patch::{apply_patch, PatchError};

/// The Rego package every agent policy uses.
pub const POLICY_PACKAGE: &str = "agent_policy";

/// Rule that, when true, makes denials permissive (Kata's debug switch).
const ALLOW_FAILURES_RULE: &str = "AllowRequestsFailingPolicy";

/// genpolicy output exceeds regorus's default limits (1024 columns, 1 MiB,
/// 20 000 lines); these are the limits Kata raised them to.
const MAX_LINE_BYTES: u32 = 64 * 1024;
const MAX_POLICY_BYTES: usize = 16 * 1024 * 1024;
const MAX_POLICY_LINES: usize = 200_000;

/// The outcome of a policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse; the message names the rule and carries the policy's prints.
    Deny {
        /// `"<Rule> is blocked by policy[: <prints>]"`.
        message: String,
    },
}

/// What an undefined rule means for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfUndefined {
    /// The default: a request the policy does not mention is refused.
    Deny,
    /// For probes that reveal nothing (Health): Kata never checks them, so
    /// genpolicy policies do not define their rule; an explicit `false`
    /// still denies.
    Allow,
}

/// Policy failures that are not decisions: the agent answers these with an
/// internal error rather than a denial.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy file cannot be read.
    #[error("reading policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Rego text does not load (syntax, limits, wrong package).
    #[error("loading policy {origin}: {message}")]
    Load {
        /// Where the text came from (a file, `SetPolicy`).
        origin: String,
        /// The engine's complaint.
        message: String,
    },
    /// The request cannot be turned into policy input (e.g. a symlink
    /// target that is not UTF-8): the request is malformed.
    #[error("building the input of data.{POLICY_PACKAGE}.{rule}: {message}")]
    Input {
        /// The rule.
        rule: String,
        /// What is wrong with the request.
        message: String,
    },
    /// The engine failed while evaluating a rule.
    #[error("evaluating data.{POLICY_PACKAGE}.{rule}: {message}")]
    Eval {
        /// The rule.
        rule: String,
        /// The engine's complaint.
        message: String,
    },
    /// The rule produced something that is neither a bool nor `{allowed, ops}`.
    #[error("data.{POLICY_PACKAGE}.{rule} returned {found}, expected a bool or {{\"allowed\": bool, \"ops\": [...]}}")]
    BadResult {
        /// The rule.
        rule: String,
        /// What it returned, as JSON.
        found: String,
    },
    /// The rule's `ops` do not apply to the policy data.
    #[error("applying the state ops of data.{POLICY_PACKAGE}.{rule}: {source}")]
    Patch {
        /// The rule.
        rule: String,
        /// Why the patch failed.
        source: PatchError,
    },
}

/// The policy gate shared by all RPC handlers. Checks are serialized: a
/// stateful policy must see its own updates in request order.
#[derive(Debug)]
pub struct Policy {
    inner: Mutex<Option<Loaded>>,
    warned_allow_all: AtomicBool,
}

/// A loaded policy.
#[derive(Debug)]
struct Loaded {
    engine: regorus::Engine,
    allow_failures: bool,
}

impl Policy {
    /// No policy: allow everything (a warning is logged on first use).
    pub fn allow_all() -> Self {
        Policy {
            inner: Mutex::new(None),
            warned_allow_all: AtomicBool::new(false),
        }
    }

    /// A policy from Rego text; `origin` names it in errors.
    pub fn from_rego(origin: &str, rego: &str) -> Result<Self, PolicyError> {
        let loaded = guard_panics(
            || Loaded::new(origin, rego),
            || PolicyError::Load {
                origin: origin.to_string(),
                message: "the policy engine panicked while loading it".to_string(),
            },
        )?;
        Ok(Policy {
            inner: Mutex::new(Some(loaded)),
            warned_allow_all: AtomicBool::new(false),
        })
    }

    /// A policy from a `.rego` file.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let rego = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_rego(&path.display().to_string(), &rego)
    }

    /// Whether a policy is loaded (false = allow all).
    pub fn is_enforcing(&self) -> bool {
        self.lock().is_some()
    }

    /// Replaces the policy (SetPolicy). The new policy starts with fresh
    /// data; on error the current policy stays in force.
    pub fn replace(&self, origin: &str, rego: &str) -> Result<(), PolicyError> {
        let loaded = guard_panics(
            || Loaded::new(origin, rego),
            || PolicyError::Load {
                origin: origin.to_string(),
                message: "the policy engine panicked while loading it".to_string(),
            },
        )?;
        *self.lock() = Some(loaded);
        tracing::info!(origin, "agent policy replaced");
        Ok(())
    }

    /// Checks one request: `rule` is the request message name, `input` the
    /// request as JSON. An undefined rule denies.
    pub fn check(&self, rule: &str, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        self.check_with(rule, IfUndefined::Deny, || Ok(input.clone()))
    }

    /// Like [`Policy::check`], choosing what an undefined rule means. The
    /// input is built only when a policy is loaded (large requests are not
    /// serialized for nothing).
    pub fn check_with<F>(
        &self,
        rule: &str,
        if_undefined: IfUndefined,
        input: F,
    ) -> Result<Decision, PolicyError>
    where
        F: FnOnce() -> Result<serde_json::Value, String>,
    {
        let mut guard = self.lock();
        let Some(loaded) = guard.as_mut() else {
            if !self.warned_allow_all.swap(true, Ordering::Relaxed) {
                tracing::warn!("no agent policy is set: every request is allowed");
            }
            return Ok(Decision::Allow);
        };
        let input = input().map_err(|message| PolicyError::Input {
            rule: rule.to_string(),
            message,
        })?;
        guard_panics(
            || loaded.check(rule, &input, if_undefined),
            || PolicyError::Eval {
                rule: rule.to_string(),
                message: "the policy engine panicked".to_string(),
            },
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Loaded>> {
        // A panic while holding the lock cannot leave the engine half
        // updated (patches are applied to a copy), so keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs engine work so that a panic inside the engine (hostile policy text
/// or input) becomes an error for this request instead of a dead task.
fn guard_panics<T>(
    f: impl FnOnce() -> Result<T, PolicyError>,
    on_panic: impl FnOnce() -> PolicyError,
) -> Result<T, PolicyError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| Err(on_panic()))
}

impl Loaded {
    fn new(origin: &str, rego: &str) -> Result<Self, PolicyError> {
        let load_err = |message: String| PolicyError::Load {
            origin: origin.to_string(),
            message,
        };
        // genpolicy writes Rego v0 (with `import future.keywords...`); a
        // policy written for Rego v1 without `import rego.v1` is accepted too.
        let (mut engine, package) = match Self::parse(origin, rego, true) {
            Ok(parsed) => parsed,
            Err(v0_err) => Self::parse(origin, rego, false)
                .map_err(|v1_err| load_err(format!("{v0_err} (as Rego v1: {v1_err})")))?,
        };
        if package != format!("data.{POLICY_PACKAGE}") {
            return Err(load_err(format!(
                "the policy is {package}, expected package {POLICY_PACKAGE}"
            )));
        }
        engine
            .add_data(regorus::Value::from(serde_json::json!({ "pstate": {} })))
            .map_err(|e| load_err(format!("{e:#}")))?;
        let mut loaded = Loaded {
            engine,
            allow_failures: false,
        };
        loaded.allow_failures = matches!(
            loaded.eval(ALLOW_FAILURES_RULE, &serde_json::json!({})),
            Ok((Some(regorus::Value::Bool(true)), _))
        );
        if loaded.allow_failures {
            tracing::warn!(
                origin,
                "policy sets {ALLOW_FAILURES_RULE}: denials are only logged"
            );
        }
        Ok(loaded)
    }

    fn parse(origin: &str, rego: &str, rego_v0: bool) -> Result<(regorus::Engine, String), String> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(rego_v0);
        engine.set_strict_builtin_errors(false);
        engine.set_gather_prints(true);
        engine.set_policy_length_config(PolicyLengthConfig {
            max_col: NonZeroU32::new(MAX_LINE_BYTES).unwrap_or(NonZeroU32::MIN),
            max_file_bytes: NonZeroUsize::new(MAX_POLICY_BYTES).unwrap_or(NonZeroUsize::MIN),
            max_lines: NonZeroUsize::new(MAX_POLICY_LINES).unwrap_or(NonZeroUsize::MIN),
        });
        let package = engine
            .add_policy(origin.to_string(), rego.to_string())
            .map_err(|e| format!("{e:#}"))?;
        Ok((engine, package))
    }

    /// Evaluates `data.agent_policy.<rule>`; `None` = undefined.
    fn eval(
        &mut self,
        rule: &str,
        input: &serde_json::Value,
    ) -> Result<(Option<regorus::Value>, Vec<String>), PolicyError> {
        self.engine.set_input(regorus::Value::from(input.clone()));
        let result = self
            .engine
            .eval_query(format!("data.{POLICY_PACKAGE}.{rule}"), false);
        // Always drain the prints so they do not leak into the next request.
        let prints = self.engine.take_prints().unwrap_or_default();
        let results = result.map_err(|e| PolicyError::Eval {
            rule: rule.to_string(),
            message: format!("{e:#}"),
        })?;
        let value = results
            .result
            .into_iter()
            .next()
            .and_then(|r| r.expressions.into_iter().next())
            .map(|e| e.value)
            .filter(|v| *v != regorus::Value::Undefined);
        Ok((value, prints))
    }

    fn check(
        &mut self,
        rule: &str,
        input: &serde_json::Value,
        if_undefined: IfUndefined,
    ) -> Result<Decision, PolicyError> {
        let (value, prints) = self.eval(rule, input)?;
        let (allowed, message) = match value {
            None => (if_undefined == IfUndefined::Allow, None),
            Some(regorus::Value::Bool(b)) => (b, None),
            Some(v @ regorus::Value::Object(_)) => self.apply_object_result(rule, v)?,
            Some(other) => {
                return Err(PolicyError::BadResult {
                    rule: rule.to_string(),
                    found: other.to_json_str().unwrap_or_else(|_| format!("{other:?}")),
                })
            }
        };
        if allowed {
            return Ok(Decision::Allow);
        }
        let mut text = format!("{rule} is blocked by policy");
        let details: Vec<String> = message.into_iter().chain(prints).collect();
        if !details.is_empty() {
            text.push_str(": ");
            text.push_str(&details.join(" "));
        }
        if self.allow_failures {
            tracing::warn!(rule, reason = %text, "denial ignored ({ALLOW_FAILURES_RULE})");
            return Ok(Decision::Allow);
        }
        Ok(Decision::Deny { message: text })
    }

    /// Handles `{"allowed": bool, "ops": [...], "message"?: string}`: applies
    /// the ops to the data when allowed.
    fn apply_object_result(
        &mut self,
        rule: &str,
        value: regorus::Value,
    ) -> Result<(bool, Option<String>), PolicyError> {
        let bad = |found: &serde_json::Value| PolicyError::BadResult {
            rule: rule.to_string(),
            found: found.to_string(),
        };
        let json = serde_json::to_value(&value).map_err(|e| PolicyError::BadResult {
            rule: rule.to_string(),
            found: e.to_string(),
        })?;
        let allowed = json
            .get("allowed")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| bad(&json))?;
        let message = json
            .get("message")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string);
        match json.get("ops") {
            Some(ops) if allowed && !ops.is_null() => {
                let mut data = serde_json::to_value(self.engine.get_data()).map_err(|e| {
                    PolicyError::Eval {
                        rule: rule.to_string(),
                        message: format!("reading policy data: {e}"),
                    }
                })?;
                apply_patch(&mut data, ops).map_err(|source| PolicyError::Patch {
                    rule: rule.to_string(),
                    source,
                })?;
                self.engine.clear_data();
                self.engine
                    .add_data(regorus::Value::from(data))
                    .map_err(|e| PolicyError::Eval {
                        rule: rule.to_string(),
                        message: format!("storing policy data: {e:#}"),
                    })?;
            }
            _ => {}
        }
        Ok((allowed, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BASIC: &str = r#"
        package agent_policy

        default GuestDetailsRequest := false
        GuestDetailsRequest {
            input.mem_block_size == true
        }

        default CheckRequest := true

        ExecProcessRequest {
            print("exec of", input.process.Args, "refused")
            false
        }
    "#;

    fn deny_message(d: Decision) -> String {
        match d {
            Decision::Deny { message } => message,
            Decision::Allow => panic!("expected a denial"),
        }
    }

    #[test]
    fn no_policy_allows_everything() {
        let p = Policy::allow_all();
        assert!(!p.is_enforcing());
        assert_eq!(
            p.check("CreateContainerRequest", &json!({})).unwrap(),
            Decision::Allow
        );
        assert_eq!(p.check("Anything", &json!({})).unwrap(), Decision::Allow);
    }

    #[test]
    fn bool_rules_allow_and_deny() {
        let p = Policy::from_rego("basic", BASIC).unwrap();
        assert!(p.is_enforcing());
        assert_eq!(
            p.check("GuestDetailsRequest", &json!({"mem_block_size": true}))
                .unwrap(),
            Decision::Allow
        );
        let msg = deny_message(
            p.check("GuestDetailsRequest", &json!({"mem_block_size": false}))
                .unwrap(),
        );
        assert_eq!(msg, "GuestDetailsRequest is blocked by policy");
        assert_eq!(
            p.check("CheckRequest", &json!({})).unwrap(),
            Decision::Allow
        );
    }

    #[test]
    fn undefined_rule_denies() {
        let p = Policy::from_rego("basic", BASIC).unwrap();
        let msg = deny_message(p.check("CopyFileRequest", &json!({})).unwrap());
        assert!(
            msg.starts_with("CopyFileRequest is blocked by policy"),
            "{msg}"
        );
    }

    #[test]
    fn undefined_can_mean_allow_for_probes() {
        let p = Policy::from_rego(
            "basic",
            "package agent_policy\ndefault ListRoutesRequest := false",
        )
        .unwrap();
        assert_eq!(
            p.check_with("CheckRequest", IfUndefined::Allow, || Ok(json!({})))
                .unwrap(),
            Decision::Allow
        );
        assert!(matches!(
            p.check_with("ListRoutesRequest", IfUndefined::Allow, || Ok(json!({})))
                .unwrap(),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn input_is_built_only_when_enforcing() {
        let open = Policy::allow_all();
        let d = open
            .check_with("X", IfUndefined::Deny, || panic!("input built for nothing"))
            .unwrap();
        assert_eq!(d, Decision::Allow);
        let p = Policy::from_rego("basic", BASIC).unwrap();
        assert!(matches!(
            p.check_with("CheckRequest", IfUndefined::Deny, || Err("bad".into())),
            Err(PolicyError::Input { .. })
        ));
    }

    #[test]
    fn denial_carries_prints() {
        let p = Policy::from_rego("basic", BASIC).unwrap();
        let msg = deny_message(
            p.check("ExecProcessRequest", &json!({"process": {"Args": ["sh"]}}))
                .unwrap(),
        );
        assert!(
            msg.starts_with("ExecProcessRequest is blocked by policy: "),
            "{msg}"
        );
        assert!(msg.contains("refused"), "{msg}");
        // Prints do not leak into the next decision.
        let msg = deny_message(p.check("CopyFileRequest", &json!({})).unwrap());
        assert!(!msg.contains("refused"), "{msg}");
    }

    #[test]
    fn stateful_ops_update_the_data() {
        let rego = r#"
            package agent_policy

            default CopyFileRequest := {"allowed": false}
            CopyFileRequest := {"ops": ops, "allowed": true} {
                not data.pstate.copied
                ops := [{"op": "add", "path": "/pstate/copied", "value": input.path}]
            }

            default CreateSandboxRequest := {"allowed": false, "message": "sandbox exists"}
            CreateSandboxRequest := {"ops": [{"op": "add", "path": "/pstate/sandbox", "value": input.sandbox_id}], "allowed": true} {
                not data.pstate.sandbox
            }
        "#;
        let p = Policy::from_rego("stateful", rego).unwrap();
        assert_eq!(
            p.check("CopyFileRequest", &json!({"path": "/a"})).unwrap(),
            Decision::Allow
        );
        let msg = deny_message(p.check("CopyFileRequest", &json!({"path": "/b"})).unwrap());
        assert_eq!(msg, "CopyFileRequest is blocked by policy");

        assert_eq!(
            p.check("CreateSandboxRequest", &json!({"sandbox_id": "s"}))
                .unwrap(),
            Decision::Allow
        );
        let msg = deny_message(
            p.check("CreateSandboxRequest", &json!({"sandbox_id": "t"}))
                .unwrap(),
        );
        assert_eq!(
            msg,
            "CreateSandboxRequest is blocked by policy: sandbox exists"
        );
    }

    #[test]
    fn bad_ops_and_bad_results_are_errors() {
        let rego = r#"
            package agent_policy
            BadOps := {"allowed": true, "ops": [{"op": "add", "path": "/no/such/parent", "value": 1}]}
            NotABool := 42
            NoAllowed := {"ops": []}
        "#;
        let p = Policy::from_rego("bad", rego).unwrap();
        assert!(matches!(
            p.check("BadOps", &json!({})),
            Err(PolicyError::Patch { .. })
        ));
        assert!(matches!(
            p.check("NotABool", &json!({})),
            Err(PolicyError::BadResult { .. })
        ));
        assert!(matches!(
            p.check("NoAllowed", &json!({})),
            Err(PolicyError::BadResult { .. })
        ));
    }

    #[test]
    fn replace_swaps_policy_and_keeps_old_on_error() {
        let p = Policy::from_rego("basic", BASIC).unwrap();
        assert!(p.replace("broken", "package agent_policy\nx := {").is_err());
        assert_eq!(
            p.check("CheckRequest", &json!({})).unwrap(),
            Decision::Allow
        );
        assert!(p.replace("other", "package other\nx := 1").is_err());

        p.replace("new", "package agent_policy\ndefault CheckRequest := false")
            .unwrap();
        assert!(matches!(
            p.check("CheckRequest", &json!({})).unwrap(),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn allow_requests_failing_policy_is_permissive() {
        let rego = "package agent_policy\nAllowRequestsFailingPolicy := true\ndefault CheckRequest := false";
        let p = Policy::from_rego("debug", rego).unwrap();
        assert_eq!(
            p.check("CheckRequest", &json!({})).unwrap(),
            Decision::Allow
        );
        assert_eq!(p.check("Undefined", &json!({})).unwrap(), Decision::Allow);
    }

    #[test]
    fn long_lines_and_rego_v1_syntax_load() {
        let long = "a".repeat(10_000);
        let rego = format!(
            "package agent_policy\nimport rego.v1\nlong := \"{long}\"\nCheckRequest if {{ count(long) > 9999 }}\n"
        );
        let p = Policy::from_rego("long", &rego).unwrap();
        assert_eq!(
            p.check("CheckRequest", &json!({})).unwrap(),
            Decision::Allow
        );
    }

    #[test]
    fn from_file_reads_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.rego");
        std::fs::write(&path, BASIC).unwrap();
        assert!(Policy::from_file(&path).unwrap().is_enforcing());
        let err = Policy::from_file(&dir.path().join("missing.rego")).unwrap_err();
        assert!(matches!(err, PolicyError::Read { .. }), "{err}");
    }
}
