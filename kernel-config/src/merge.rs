//! Merging fragments into one set of options (and one `.config` fragment to feed to
//! `merge_config.sh`), reporting options that two fragments want differently.
//!
//! Two fragments agree on a symbol when their accepted values overlap: `=y` and
//! `=y, accept m` merge to `=y`; `=y` and `is not set` conflict. A conflict is an
//! error: silently letting the last fragment win (as `merge_config.sh` does) would
//! build a kernel that fails one of the features.

use std::fmt;

use crate::config::Value;
use crate::fragment::Fragment;
use crate::version::KernelVersion;

/// Where a merged option came from: fragment, line and reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Source {
    /// Fragment name.
    pub fragment: String,
    /// 1-based line in that fragment.
    pub line: usize,
    /// The fragment's reason for the option.
    pub reason: String,
}

/// One option after merging: the value to write, the values that satisfy every
/// fragment that asked, and every fragment's reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedOption {
    /// Symbol without `CONFIG_`.
    pub symbol: String,
    /// The value written (the first fragment's preferred value that all accept).
    pub value: Value,
    /// Values every contributing fragment accepts.
    pub accept: Vec<Value>,
    /// The highest `min-kernel` among the contributing fragments.
    pub min_kernel: Option<KernelVersion>,
    /// The fragments that ask for it.
    pub sources: Vec<Source>,
}

impl MergedOption {
    /// Whether a config value satisfies every fragment (absent counts as off).
    pub fn accepts(&self, found: Option<&Value>) -> bool {
        self.accept.contains(found.unwrap_or(&Value::No))
    }

    /// True if the option must be off.
    pub fn is_forbidden(&self) -> bool {
        self.value == Value::No
    }

    /// Names of the fragments that ask for it.
    pub fn fragments(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.fragment.clone()).collect()
    }

    /// All the reasons, `[fragment] reason`, joined.
    pub fn reason(&self) -> String {
        if self.sources.len() == 1 {
            return self.sources[0].reason.clone();
        }
        self.sources
            .iter()
            .map(|s| format!("[{}] {}", s.fragment, s.reason))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The result of merging some fragments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Fragment names, in merge order (requirements first).
    pub features: Vec<String>,
    /// Options, in order of first appearance.
    pub options: Vec<MergedOption>,
}

/// One fragment's wish in a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// Fragment name.
    pub fragment: String,
    /// Line in the fragment.
    pub line: usize,
    /// Values it accepts.
    pub accept: Vec<Value>,
}

/// A symbol that fragments want in incompatible ways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Symbol without `CONFIG_`.
    pub symbol: String,
    /// Every fragment that sets it, in merge order.
    pub wants: Vec<Want>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CONFIG_{}: ", self.symbol)?;
        let parts: Vec<String> = self
            .wants
            .iter()
            .map(|w| {
                format!(
                    "{} (line {}) wants {}",
                    w.fragment,
                    w.line,
                    describe_accept(&w.accept)
                )
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

/// The fragments cannot be merged: one or more conflicts, all listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fragments conflict (drop one of the features or fix a fragment):\n  {}", conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct MergeError {
    /// Every conflicting symbol.
    pub conflicts: Vec<Conflict>,
}

/// Human wording of an accept list: `y`, `y or m`, `off`, `"ima-ng"`.
pub fn describe_accept(accept: &[Value]) -> String {
    let words: Vec<String> = accept
        .iter()
        .map(|v| match v {
            Value::No => "off".to_string(),
            other => other.to_string(),
        })
        .collect();
    words.join(" or ")
}

/// Merges fragments (in the given order). Conflicts are collected for all symbols
/// before failing, so one run shows every problem.
pub fn merge(fragments: &[&Fragment]) -> Result<Merged, MergeError> {
    let mut options: Vec<MergedOption> = Vec::new();
    let mut wants: Vec<Vec<Want>> = Vec::new();
    let mut conflicted: Vec<usize> = Vec::new();

    for frag in fragments {
        for opt in &frag.options {
            let source = Source {
                fragment: frag.name.clone(),
                line: opt.line,
                reason: opt.reason.clone(),
            };
            let want = Want {
                fragment: frag.name.clone(),
                line: opt.line,
                accept: opt.accept.clone(),
            };
            let Some(idx) = options.iter().position(|m| m.symbol == opt.symbol) else {
                options.push(MergedOption {
                    symbol: opt.symbol.clone(),
                    value: opt.value.clone(),
                    accept: opt.accept.clone(),
                    min_kernel: opt.min_kernel,
                    sources: vec![source],
                });
                wants.push(vec![want]);
                continue;
            };
            let merged = &mut options[idx];
            wants[idx].push(want);
            merged.sources.push(source);
            merged.min_kernel = merged.min_kernel.max(opt.min_kernel);
            let common: Vec<Value> = merged
                .accept
                .iter()
                .filter(|v| opt.accept.contains(v))
                .cloned()
                .collect();
            if common.is_empty() {
                if !conflicted.contains(&idx) {
                    conflicted.push(idx);
                }
                continue;
            }
            if !common.contains(&merged.value) {
                merged.value = if common.contains(&opt.value) {
                    opt.value.clone()
                } else {
                    common[0].clone()
                };
            }
            merged.accept = common;
        }
    }
    if !conflicted.is_empty() {
        return Err(MergeError {
            conflicts: conflicted
                .into_iter()
                .map(|i| Conflict {
                    symbol: options[i].symbol.clone(),
                    wants: wants[i].clone(),
                })
                .collect(),
        });
    }
    Ok(Merged {
        features: fragments.iter().map(|f| f.name.clone()).collect(),
        options,
    })
}

impl Merged {
    /// The merged option for `symbol`.
    pub fn get(&self, symbol: &str) -> Option<&MergedOption> {
        self.options.iter().find(|o| o.symbol == symbol)
    }

    /// The merged options as a `.config` fragment: feed it to the kernel's
    /// `scripts/kconfig/merge_config.sh`. Reasons and directives are kept as comments,
    /// so the output is itself a valid fragment (`--fragments-dir` can read it back).
    pub fn to_fragment_text(&self) -> String {
        let mut out = String::new();
        let features = self.features.join(",");
        out.push_str(&format!(
            "# Sealpod guest kernel config: features {features}\n\
             # (generated by kernel-config {} from its fragments; edit the fragments, not this file)\n\
             # Apply in a kernel tree, then verify:\n\
             #   scripts/kconfig/merge_config.sh -m .config THIS_FILE && make olddefconfig\n\
             #   kernel-config check --config .config --features {features}\n",
            env!("CARGO_PKG_VERSION")
        ));
        for opt in &self.options {
            out.push('\n');
            for s in &opt.sources {
                out.push_str(&format!("# [{}] {}\n", s.fragment, s.reason));
            }
            if let Some(v) = opt.min_kernel {
                out.push_str(&format!("# min-kernel: {v}\n"));
            }
            if opt.accept.len() > 1 || opt.accept[0] != opt.value {
                let list: Vec<String> = opt.accept.iter().map(ToString::to_string).collect();
                out.push_str(&format!("# accept: {}\n", list.join(", ")));
            }
            out.push_str(&opt.value.config_line(&opt.symbol));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fragment::FragmentSet;

    fn frag(name: &str, body: &str) -> Fragment {
        Fragment::parse(name, &format!("# {name} for tests\n\n{body}")).unwrap()
    }

    #[test]
    fn merges_compatible_wishes_and_keeps_all_reasons() {
        let a = frag(
            "a",
            "# a wants it\n# accept: y, m\nCONFIG_X=y\n\n# a only\nCONFIG_Y=y\n",
        );
        let b = frag(
            "b",
            "# b wants it too\n# min-kernel: 6.7\n# accept: m, y\nCONFIG_X=m\n",
        );
        let c = frag("c", "# c needs built-in\nCONFIG_X=y\n");
        let m = merge(&[&a, &b]).unwrap();
        let x = m.get("X").unwrap();
        assert_eq!(x.value, Value::Yes, "the first fragment's preference wins");
        assert_eq!(x.accept, [Value::Yes, Value::Module]);
        assert_eq!(x.min_kernel, Some(KernelVersion::new(6, 7, None)));
        assert_eq!(x.fragments(), ["a", "b"]);
        assert_eq!(x.reason(), "[a] a wants it [b] b wants it too");

        let m = merge(&[&b, &c]).unwrap();
        let x = m.get("X").unwrap();
        assert_eq!(x.value, Value::Yes, "narrowed to what both accept");
        assert_eq!(x.accept, [Value::Yes]);
        assert_eq!(m.options.len(), 1);
    }

    #[test]
    fn reports_every_conflict() {
        let want = frag(
            "want",
            "# needed\nCONFIG_X=y\n\n# needed too\nCONFIG_Z=\"abc\"\n\n# fine\nCONFIG_OK=y\n",
        );
        let forbid = frag("forbid", "# dangerous\n# CONFIG_X is not set\n\n# other\nCONFIG_Z=\"xyz\"\n\n# fine\nCONFIG_OK=y\n");
        let err = merge(&[&want, &forbid]).unwrap_err();
        assert_eq!(err.conflicts.len(), 2);
        assert_eq!(err.conflicts[0].symbol, "X");
        assert_eq!(err.conflicts[0].wants.len(), 2);
        let text = err.to_string();
        assert!(
            text.contains("CONFIG_X: want (line 4) wants y, forbid (line 4) wants off"),
            "{text}"
        );
        assert!(
            text.contains("CONFIG_Z: want (line 7) wants \"abc\", forbid (line 7) wants \"xyz\""),
            "{text}"
        );
    }

    #[test]
    fn output_is_a_fragment_that_merge_config_and_we_can_read() {
        let set = FragmentSet::embedded();
        let frags = set.resolve(&["all"]).unwrap();
        let merged = merge(&frags).unwrap();
        let text = merged.to_fragment_text();
        // Every line is valid .config syntax (what merge_config.sh and Kconfig need).
        crate::config::Config::parse(&text).unwrap();
        // And it is a fragment again, with the same options.
        let again = Fragment::parse("merged", &text).unwrap();
        assert_eq!(again.options.len(), merged.options.len());
        for (o, m) in again.options.iter().zip(&merged.options) {
            assert_eq!(o.symbol, m.symbol);
            assert_eq!(o.value, m.value);
            assert_eq!(o.accept, m.accept);
            assert_eq!(o.min_kernel, m.min_kernel);
        }
        assert!(text.contains("\n# CONFIG_DEVMEM is not set\n"));
        assert!(text.contains("# min-kernel: 6.7\n# accept: y, m\nCONFIG_TSM_REPORTS=y\n"));
    }

    #[test]
    fn shipped_fragments_do_not_conflict() {
        let set = FragmentSet::embedded();
        merge(&set.resolve(&["all"]).unwrap()).unwrap();
    }
}
