//! The resource policy: decides, from the token claims and the requested
//! path, whether a resource may be released. Evaluated before the resource
//! is looked up, like a real KBS (so a denied client cannot probe which
//! resources exist).
//!
//! `.rego` files are evaluated the way Trustee's KBS does it: package
//! `policy`, rule `data.policy.allow`, input = the token claims, data =
//! `{"plugin": "resource", "resource-path": [...], "query": {...}}`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// The rule a policy file must define.
const RULE: &str = "data.policy.allow";
/// Largest policy file read.
const MAX_POLICY_LEN: u64 = 1024 * 1024;

/// Why a policy cannot be loaded or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a usable Rego policy.
    #[error("{path} is not a usable Rego policy (package `policy`, rule `allow`): {reason}")]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// The engine's message.
        reason: String,
    },
    /// Neither a built-in policy name nor a `.rego` file.
    #[error("unknown policy {0:?}: expected allow-all, deny-sample or a path to a .rego file")]
    Unknown(String),
    /// Evaluation failed for this request.
    #[error("evaluating the policy: {0}")]
    Eval(String),
}

/// The policy in force.
pub enum Policy {
    /// Release every resource to every attested client.
    AllowAll,
    /// Refuse tokens from the sample TEE (a stock KBS's default policy);
    /// with dev-kbs, which only attests the sample TEE, this denies all.
    DenySample,
    /// A Rego policy (the engine holds the compiled module).
    Rego {
        /// Where it was read from (for the log).
        path: PathBuf,
        /// The prepared engine; cloned for each evaluation.
        engine: Box<regorus::Engine>,
    },
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::AllowAll => f.write_str("allow-all"),
            Policy::DenySample => f.write_str("deny-sample"),
            Policy::Rego { path, .. } => write!(f, "rego:{}", path.display()),
        }
    }
}

impl Policy {
    /// Parses `--policy`: a built-in name or a `.rego` file, which is
    /// compiled and checked to define `data.policy.allow` now rather than
    /// at the first request.
    pub fn load(arg: &str) -> Result<Self, PolicyError> {
        match arg {
            "allow-all" => return Ok(Policy::AllowAll),
            "deny-sample" => return Ok(Policy::DenySample),
            _ => {}
        }
        let path = Path::new(arg);
        if !arg.ends_with(".rego") && !path.is_file() {
            return Err(PolicyError::Unknown(arg.to_string()));
        }
        let read_err = |source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_POLICY_LEN {
            return Err(PolicyError::Invalid {
                path: path.to_path_buf(),
                reason: format!("{len} bytes is too large"),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        let invalid = |reason: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(path.display().to_string(), text)
            .map_err(|e| invalid(e.to_string()))?;
        // Fails when the rule does not exist (wrong package or name).
        engine
            .clone()
            .eval_rule(RULE.to_string())
            .map_err(|e| invalid(e.to_string()))?;
        Ok(Policy::Rego {
            path: path.to_path_buf(),
            engine: Box::new(engine),
        })
    }

    /// Whether the holder of `claims` may have the resource at
    /// `resource_path` (the request's path segments), given the request's
    /// query parameters.
    pub fn allows(
        &self,
        claims: &Map<String, Value>,
        resource_path: &[String],
        query: &HashMap<String, String>,
    ) -> Result<bool, PolicyError> {
        match self {
            Policy::AllowAll => Ok(true),
            Policy::DenySample => Ok(claims
                .get("submods")
                .and_then(|s| s.pointer("/cpu0/ear.veraison.annotated-evidence/sample"))
                .is_none()),
            Policy::Rego { engine, .. } => {
                let mut engine = (**engine).clone();
                engine.set_input(regorus::Value::from(Value::Object(claims.clone())));
                let data = json!({
                    "plugin": "resource",
                    "resource-path": resource_path,
                    "query": query,
                });
                engine
                    .add_data(regorus::Value::from(data))
                    .map_err(|e| PolicyError::Eval(e.to_string()))?;
                let v = engine
                    .eval_rule(RULE.to_string())
                    .map_err(|e| PolicyError::Eval(e.to_string()))?;
                Ok(v == regorus::Value::Bool(true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_claims() -> Map<String, Value> {
        let v = json!({"submods": {"cpu0": {"ear.veraison.annotated-evidence": {"sample": {"svn": "1"}}}}});
        v.as_object().cloned().unwrap()
    }

    fn path(p: &str) -> Vec<String> {
        p.split('/').map(String::from).collect()
    }

    #[test]
    fn built_ins() {
        let q = HashMap::new();
        let c = sample_claims();
        assert!(Policy::load("allow-all")
            .unwrap()
            .allows(&c, &path("a/b/c"), &q)
            .unwrap());
        let deny = Policy::load("deny-sample").unwrap();
        assert!(!deny.allows(&c, &path("a/b/c"), &q).unwrap());
        assert!(deny.allows(&Map::new(), &path("a/b/c"), &q).unwrap());
        assert!(matches!(
            Policy::load("allow-some"),
            Err(PolicyError::Unknown(_))
        ));
    }

    #[test]
    fn rego_sees_claims_path_and_query() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.rego");
        std::fs::write(
            &file,
            r#"package policy

default allow = false

allow if {
    data.plugin == "resource"
    data["resource-path"] == ["default", "key", "1"]
    input.submods.cpu0["ear.veraison.annotated-evidence"].sample.svn == "1"
    not data.query.deny
}
"#,
        )
        .unwrap();
        let p = Policy::load(file.to_str().unwrap()).unwrap();
        let c = sample_claims();
        let mut q = HashMap::new();
        assert!(p.allows(&c, &path("default/key/1"), &q).unwrap());
        assert!(!p.allows(&c, &path("default/key/2"), &q).unwrap());
        assert!(!p.allows(&Map::new(), &path("default/key/1"), &q).unwrap());
        q.insert("deny".to_string(), "1".to_string());
        assert!(!p.allows(&c, &path("default/key/1"), &q).unwrap());
    }

    #[test]
    fn bad_rego_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.rego");
        std::fs::write(&bad, "not rego").unwrap();
        assert!(matches!(
            Policy::load(bad.to_str().unwrap()),
            Err(PolicyError::Invalid { .. })
        ));
        let other = dir.path().join("other.rego");
        std::fs::write(&other, "package other\nallow := true\n").unwrap();
        assert!(matches!(
            Policy::load(other.to_str().unwrap()),
            Err(PolicyError::Invalid { .. })
        ));
        assert!(matches!(
            Policy::load(dir.path().join("missing.rego").to_str().unwrap()),
            Err(PolicyError::Read { .. })
        ));
    }
}
