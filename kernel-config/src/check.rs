//! Comparing a kernel config against merged fragments: one result per option, each
//! saying what was wanted, what was found, which fragment asked and why.
//!
//! Decisions, in order, for an option and the value found in the config:
//! 1. the value is one the fragments accept (absent counts as off) -> `ok`;
//! 2. the option must be off but is set -> `forbidden-set` (failure);
//! 3. the symbol is absent, the config's kernel is known and older than the option's
//!    `min-kernel` -> `too-new` (a warning: that kernel cannot have it);
//! 4. absent or `is not set` -> `missing` (failure);
//! 5. `=m` where only `=y` is accepted -> `module-not-builtin` (failure; a fragment
//!    says `# accept: y, m` when a module is good enough);
//! 6. anything else (a different string, number, `y` for `m`) -> `wrong-value` (failure).

use std::fmt::Write as _;

use serde::Serialize;

use crate::config::{Config, Value};
use crate::merge::{describe_accept, Merged, MergedOption};
use crate::version::KernelVersion;

/// The outcome for one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// The config has an accepted value.
    Ok,
    /// Required, but absent or "is not set".
    Missing,
    /// Set to a value the fragments do not accept.
    WrongValue,
    /// `=m` where the fragments need it built in.
    ModuleNotBuiltin,
    /// Must be off, but is set.
    ForbiddenSet,
    /// Absent, and the kernel is older than the option's `min-kernel`.
    TooNew,
}

/// How much a status matters: failures make `check` exit 1, warnings do not (unless
/// `--strict`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Fine.
    Ok,
    /// Worth knowing, not a failure (too new for this kernel).
    Warning,
    /// The kernel lacks something a feature needs, or has something it must not.
    Failure,
}

impl Status {
    /// The severity of this status.
    pub fn severity(self) -> Severity {
        match self {
            Status::Ok => Severity::Ok,
            Status::TooNew => Severity::Warning,
            _ => Severity::Failure,
        }
    }

    /// The short name used in text and JSON output (`missing`, `too-new`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::WrongValue => "wrong-value",
            Status::ModuleNotBuiltin => "module-not-builtin",
            Status::ForbiddenSet => "forbidden-set",
            Status::TooNew => "too-new",
        }
    }
}

/// The result for one option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OptionResult {
    /// `CONFIG_` + symbol.
    pub option: String,
    /// The outcome.
    pub status: Status,
    /// Its severity (derived from `status`, included for JSON consumers).
    pub severity: Severity,
    /// The value the fragments prefer (`n` = must be off).
    pub expected: Value,
    /// Every value that would have been fine.
    pub accepted: Vec<Value>,
    /// What the config has; `None` (JSON `null`) = absent.
    pub found: Option<Value>,
    /// The option's `min-kernel`, if any.
    pub min_kernel: Option<KernelVersion>,
    /// Fragments that ask for it.
    pub fragments: Vec<String>,
    /// Why they ask.
    pub reason: String,
    /// One line explaining the outcome.
    pub message: String,
}

impl OptionResult {
    /// Symbol without `CONFIG_`.
    pub fn symbol(&self) -> &str {
        self.option.strip_prefix("CONFIG_").unwrap_or(&self.option)
    }
}

/// Counts per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Summary {
    /// Options checked.
    pub checked: usize,
    /// Options that are fine.
    pub ok: usize,
    /// Failures.
    pub failed: usize,
    /// Warnings (too new for this kernel).
    pub warnings: usize,
}

/// A whole check: where the config came from, for which features, every option's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The config checked (`/proc/config.gz`, a path, ...).
    pub source: String,
    /// The kernel version of that config, if known.
    pub kernel_version: Option<KernelVersion>,
    /// Features checked, in merge order (requirements included).
    pub features: Vec<String>,
    /// True when nothing failed (warnings allowed).
    pub ok: bool,
    /// Counts.
    pub summary: Summary,
    /// One entry per option, in fragment order.
    pub results: Vec<OptionResult>,
}

/// Checks `config` against merged fragments. `source` names the config in the report.
pub fn check(config: &Config, merged: &Merged, source: impl Into<String>) -> Report {
    let version = config.kernel_version();
    let results: Vec<OptionResult> = merged
        .options
        .iter()
        .map(|opt| check_option(opt, config.get(&opt.symbol), version))
        .collect();
    let mut summary = Summary {
        checked: results.len(),
        ..Summary::default()
    };
    for r in &results {
        match r.severity {
            Severity::Ok => summary.ok += 1,
            Severity::Warning => summary.warnings += 1,
            Severity::Failure => summary.failed += 1,
        }
    }
    Report {
        source: source.into(),
        kernel_version: version,
        features: merged.features.clone(),
        ok: summary.failed == 0,
        summary,
        results,
    }
}

fn found_text(found: Option<&Value>) -> String {
    match found {
        None => "absent".into(),
        Some(Value::No) => "is not set".into(),
        Some(v) => format!("={v}"),
    }
}

/// The status and message for one option given the value found.
pub fn check_option(
    opt: &MergedOption,
    found: Option<&Value>,
    version: Option<KernelVersion>,
) -> OptionResult {
    let want = describe_accept(&opt.accept);
    let (status, message) = if opt.accepts(found) {
        (Status::Ok, format!("ok ({})", found_text(found)))
    } else if opt.is_forbidden() {
        (
            Status::ForbiddenSet,
            format!("forbidden but set ({}): must be off", found_text(found)),
        )
    } else if found.is_none() {
        match (opt.min_kernel, version) {
            (Some(min), Some(v)) if v < min => (
                Status::TooNew,
                format!("too new for this kernel (needs {min}, kernel is {v}): absent"),
            ),
            (Some(min), None) => (
                Status::Missing,
                format!("missing (absent; the option needs kernel {min} or later and this config's kernel version is unknown), want {want}"),
            ),
            _ => (
                Status::Missing,
                format!("missing (absent: not in this kernel, or its dependencies are off), want {want}"),
            ),
        }
    } else if found == Some(&Value::No) {
        (
            Status::Missing,
            format!("missing (is not set), want {want}"),
        )
    } else if found == Some(&Value::Module) && opt.accept.contains(&Value::Yes) {
        (
            Status::ModuleNotBuiltin,
            "built as a module (=m), want built in (=y)".to_string(),
        )
    } else {
        (
            Status::WrongValue,
            format!("wrong value ({}), want {want}", found_text(found)),
        )
    };
    OptionResult {
        option: format!("CONFIG_{}", opt.symbol),
        status,
        severity: status.severity(),
        expected: opt.value.clone(),
        accepted: opt.accept.clone(),
        found: found.cloned(),
        min_kernel: opt.min_kernel,
        fragments: opt.fragments(),
        reason: opt.reason(),
        message,
    }
}

impl Report {
    /// Results that are failures.
    pub fn failures(&self) -> impl Iterator<Item = &OptionResult> {
        self.results
            .iter()
            .filter(|r| r.severity == Severity::Failure)
    }

    /// Results that are warnings (too new for this kernel).
    pub fn warnings(&self) -> impl Iterator<Item = &OptionResult> {
        self.results
            .iter()
            .filter(|r| r.severity == Severity::Warning)
    }

    /// The result for `symbol` (without `CONFIG_`).
    pub fn get(&self, symbol: &str) -> Option<&OptionResult> {
        self.results.iter().find(|r| r.symbol() == symbol)
    }

    /// The report as pretty JSON (the `--format json` output).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as text: a heading, one entry per failure and warning (and per ok
    /// option if `all`), each with its fragments and reason, and a summary line.
    pub fn to_text(&self, all: bool) -> String {
        let mut out = String::new();
        let version = self
            .kernel_version
            .map(|v| format!("Linux {v}"))
            .unwrap_or_else(|| "kernel version unknown".into());
        let _ = writeln!(
            out,
            "kernel-config check: {} ({version})\nfeatures: {}\n",
            self.source,
            self.features.join(", ")
        );
        let width = self
            .results
            .iter()
            .map(|r| r.option.len())
            .max()
            .unwrap_or(0);
        for r in &self.results {
            let tag = match r.severity {
                Severity::Failure => "FAIL",
                Severity::Warning => "WARN",
                Severity::Ok if all => "ok  ",
                Severity::Ok => continue,
            };
            let _ = writeln!(
                out,
                "{tag} {:width$}  {}  [{}]",
                r.option,
                r.message,
                r.fragments.join(", ")
            );
            if r.severity != Severity::Ok {
                let _ = writeln!(out, "     why: {}", r.reason);
            }
        }
        let s = &self.summary;
        let verdict = if !self.ok {
            "FAIL"
        } else if s.warnings > 0 {
            "OK (with warnings)"
        } else {
            "OK"
        };
        if s.failed + s.warnings > 0 || all {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{verdict}: {} options checked, {} ok, {} failed, {} too new for this kernel",
            s.checked, s.ok, s.failed, s.warnings
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment::Fragment;
    use crate::merge::merge;

    const FRAG: &str = "\
# test fragment

# must be built in
CONFIG_BUILTIN=y

# module is fine
# accept: y, m
CONFIG_MOD_OK=y

# must be off
# CONFIG_BAD is not set

# string
CONFIG_STR=\"sha256\"

# new symbol
# min-kernel: 6.7
CONFIG_NEW=y
";

    fn report(config: &str) -> Report {
        let f = Fragment::parse("t", FRAG).unwrap();
        let merged = merge(&[&f]).unwrap();
        check(&Config::parse(config).unwrap(), &merged, "test")
    }

    fn status(r: &Report, sym: &str) -> Status {
        r.get(sym).unwrap().status
    }

    #[test]
    fn all_good() {
        let r = report(
            "# Linux/x86 6.12.1 Kernel Configuration\nCONFIG_BUILTIN=y\nCONFIG_MOD_OK=m\n\
             CONFIG_STR=\"sha256\"\nCONFIG_NEW=y\n",
        );
        assert!(r.ok, "{}", r.to_text(true));
        assert_eq!(
            r.summary,
            Summary {
                checked: 5,
                ok: 5,
                failed: 0,
                warnings: 0
            }
        );
        assert_eq!(r.get("BAD").unwrap().message, "ok (absent)");
    }

    #[test]
    fn each_finding_kind() {
        let r = report(
            "# Linux/x86 6.1.0 Kernel Configuration\nCONFIG_BUILTIN=m\n# CONFIG_MOD_OK is not set\n\
             CONFIG_BAD=y\nCONFIG_STR=\"sha1\"\n",
        );
        assert_eq!(status(&r, "BUILTIN"), Status::ModuleNotBuiltin);
        assert_eq!(status(&r, "MOD_OK"), Status::Missing);
        assert_eq!(status(&r, "BAD"), Status::ForbiddenSet);
        assert_eq!(status(&r, "STR"), Status::WrongValue);
        assert_eq!(status(&r, "NEW"), Status::TooNew);
        assert!(!r.ok);
        assert_eq!(
            r.summary,
            Summary {
                checked: 5,
                ok: 0,
                failed: 4,
                warnings: 1
            }
        );
        assert_eq!(
            r.get("NEW").unwrap().message,
            "too new for this kernel (needs 6.7, kernel is 6.1.0): absent"
        );
        assert_eq!(
            r.get("STR").unwrap().message,
            "wrong value (=\"sha1\"), want \"sha256\""
        );
        let text = r.to_text(false);
        assert!(text.contains("FAIL CONFIG_BAD "), "{text}");
        assert!(text.contains("why: must be off"), "{text}");
        assert!(text.contains("WARN CONFIG_NEW "), "{text}");
        assert!(
            text.ends_with("FAIL: 5 options checked, 0 ok, 4 failed, 1 too new for this kernel\n"),
            "{text}"
        );
    }

    #[test]
    fn absent_required_option_is_missing_unless_the_kernel_is_too_old() {
        // Same kernel version as the marker: the symbol should exist, so it is missing.
        let r = report("# Linux/x86 6.7.0 Kernel Configuration\n");
        assert_eq!(status(&r, "NEW"), Status::Missing);
        assert_eq!(status(&r, "BUILTIN"), Status::Missing);
        // Version unknown: cannot excuse it.
        let r = report("CONFIG_BUILTIN=y\n");
        assert_eq!(status(&r, "NEW"), Status::Missing);
        assert!(r.get("NEW").unwrap().message.contains("version is unknown"));
        // "is not set" means the kernel has the symbol: missing even on an old kernel.
        let r = report("# Linux/x86 6.1.0 Kernel Configuration\n# CONFIG_NEW is not set\n");
        assert_eq!(status(&r, "NEW"), Status::Missing);
    }

    #[test]
    fn json_shape() {
        let r = report("# Linux/x86 6.1.0 Kernel Configuration\nCONFIG_BUILTIN=m\nCONFIG_BAD=y\n");
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["source"], "test");
        assert_eq!(v["kernel_version"], "6.1.0");
        assert_eq!(v["features"], serde_json::json!(["t"]));
        assert_eq!(v["ok"], false);
        assert_eq!(
            v["summary"],
            serde_json::json!({"checked": 5, "ok": 0, "failed": 4, "warnings": 1})
        );
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 5);
        let builtin = &results[0];
        assert_eq!(builtin["option"], "CONFIG_BUILTIN");
        assert_eq!(builtin["status"], "module-not-builtin");
        assert_eq!(builtin["severity"], "failure");
        assert_eq!(builtin["expected"], "y");
        assert_eq!(builtin["accepted"], serde_json::json!(["y"]));
        assert_eq!(builtin["found"], "m");
        assert_eq!(builtin["min_kernel"], serde_json::Value::Null);
        assert_eq!(builtin["fragments"], serde_json::json!(["t"]));
        assert_eq!(builtin["reason"], "must be built in");
        assert!(builtin["message"].as_str().unwrap().contains("module"));
        assert_eq!(results[1]["accepted"], serde_json::json!(["y", "m"]));
        assert_eq!(results[1]["found"], serde_json::Value::Null);
        assert_eq!(results[2]["expected"], "n");
        assert_eq!(results[2]["status"], "forbidden-set");
        assert_eq!(results[3]["expected"], "\"sha256\"");
        assert_eq!(results[4]["status"], "too-new");
        assert_eq!(results[4]["severity"], "warning");
        assert_eq!(results[4]["min_kernel"], "6.7");
    }
}
