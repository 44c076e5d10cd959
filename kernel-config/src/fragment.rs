//! Fragment files: one feature's required and forbidden options, each with the reason
//! it is there, in plain `.config` syntax that the kernel's own `merge_config.sh` reads.
//! The syntax is described in the crate documentation and in `fragments/README.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::{parse_line, Line, Value};
use crate::version::KernelVersion;

/// The fragments shipped with this crate, built into the binary so it works from
/// anywhere. Order is the listing order; a test checks it matches `fragments/`.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("base", include_str!("../fragments/base.config")),
    ("vsock", include_str!("../fragments/vsock.config")),
    ("container", include_str!("../fragments/container.config")),
    (
        "container-net",
        include_str!("../fragments/container-net.config"),
    ),
    ("snp", include_str!("../fragments/snp.config")),
    ("tdx", include_str!("../fragments/tdx.config")),
    ("storage", include_str!("../fragments/storage.config")),
    ("hardening", include_str!("../fragments/hardening.config")),
    ("measured", include_str!("../fragments/measured.config")),
];

/// Feature names with a meaning of their own in a feature list: `default` (every
/// fragment not marked `# default: no`) and `all`.
pub const KEYWORDS: &[&str] = &["default", "all"];

/// One option of a fragment: what value it wants, which values are good enough, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentOption {
    /// Symbol without `CONFIG_`, e.g. `SEV_GUEST`.
    pub symbol: String,
    /// The value written by `merge` (the preferred one). `Value::No` = must be off.
    pub value: Value,
    /// Values that satisfy a check (always includes `value`); `# accept: y, m`.
    pub accept: Vec<Value>,
    /// Why the option is there (the comment lines above it, joined).
    pub reason: String,
    /// First kernel version that has the symbol (`# min-kernel: 6.7`).
    pub min_kernel: Option<KernelVersion>,
    /// 1-based line of the option in its fragment file.
    pub line: usize,
}

impl FragmentOption {
    /// Whether a config value satisfies this option. `None` (absent from the config)
    /// counts as off, which is what the kernel does with an unwritten symbol.
    pub fn accepts(&self, found: Option<&Value>) -> bool {
        let found = found.unwrap_or(&Value::No);
        self.accept.contains(found)
    }

    /// True if the option must be off (`# CONFIG_X is not set`).
    pub fn is_forbidden(&self) -> bool {
        self.value == Value::No
    }
}

/// A feature's fragment: parsed from `NAME.config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Feature name: the file name without `.config`.
    pub name: String,
    /// The header comment (free text, lines joined), first sentence = summary.
    pub description: String,
    /// Other features this one builds on (`# requires: base`), merged in first.
    pub requires: Vec<String>,
    /// In the default feature set? (`# default: no` for optional fragments.)
    pub default: bool,
    /// The options, in file order.
    pub options: Vec<FragmentOption>,
}

/// Why fragments could not be loaded or a feature list not resolved.
#[derive(Debug, thiserror::Error)]
pub enum FragmentError {
    /// A line of a fragment file breaks the fragment syntax.
    #[error("fragment {fragment}, line {line}: {message}")]
    Syntax {
        /// Fragment name.
        fragment: String,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A feature list names a fragment that does not exist.
    #[error("unknown feature {name:?}; available: {}", available.join(", "))]
    UnknownFeature {
        /// The name asked for.
        name: String,
        /// Names that exist.
        available: Vec<String>,
    },
    /// `# requires:` names a missing fragment or forms a cycle.
    #[error("fragment {fragment}: {message}")]
    Requires {
        /// Fragment name.
        fragment: String,
        /// What is wrong.
        message: String,
    },
    /// Two fragment files have the same name, or a name is invalid.
    #[error("fragment name {name:?}: {message}")]
    Name {
        /// The name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A fragments directory could not be read.
    #[error("cannot read fragments from {path}: {source}")]
    Io {
        /// Directory or file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A fragments directory has no `*.config` file.
    #[error("no *.config fragment files in {0}")]
    Empty(PathBuf),
}

/// A directive line (`# key: value`) or plain comment text.
enum Comment<'a> {
    MinKernel(&'a str),
    Accept(&'a str),
    Requires(&'a str),
    Default(&'a str),
    Text(&'a str),
}

fn classify(comment: &str) -> Comment<'_> {
    let directive = |key: &str| {
        comment
            .strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    };
    if let Some(v) = directive("min-kernel") {
        Comment::MinKernel(v)
    } else if let Some(v) = directive("accept") {
        Comment::Accept(v)
    } else if let Some(v) = directive("requires") {
        Comment::Requires(v)
    } else if let Some(v) = directive("default") {
        Comment::Default(v)
    } else {
        Comment::Text(comment)
    }
}

fn list(v: &str) -> impl Iterator<Item = &str> {
    v.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty())
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Fragment {
    /// Parses a fragment. Errors name the fragment and line and say how to fix it:
    /// every option needs a reason, directives must sit directly above an option (or
    /// in the header), a symbol may appear once.
    pub fn parse(name: &str, text: &str) -> Result<Fragment, FragmentError> {
        if !valid_name(name) || KEYWORDS.contains(&name) {
            return Err(FragmentError::Name {
                name: name.to_string(),
                message:
                    "use lowercase letters, digits, '-' and '_' (and not \"default\" or \"all\")"
                        .into(),
            });
        }
        let syntax = |line: usize, message: String| FragmentError::Syntax {
            fragment: name.to_string(),
            line,
            message,
        };
        let mut frag = Fragment {
            name: name.to_string(),
            description: String::new(),
            requires: Vec::new(),
            default: true,
            options: Vec::new(),
        };
        // Comment lines seen since the last blank line or option, with their line numbers.
        let mut pending: Vec<(usize, &str)> = Vec::new();
        let mut in_header = true;
        let mut seen = BTreeSet::new();

        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            match parse_line(raw).map_err(|m| syntax(lineno, m))? {
                Line::Comment(c) => pending.push((lineno, c)),
                Line::Blank => {
                    if in_header && !pending.is_empty() {
                        frag.take_header(&pending, &syntax)?;
                        in_header = false;
                    } else if let Some((l, c)) = pending
                        .iter()
                        .find(|(_, c)| !matches!(classify(c), Comment::Text(_)))
                    {
                        return Err(syntax(
                            *l,
                            format!("directive {c:?} is not directly above an option (remove the blank line below it)"),
                        ));
                    }
                    // Other comments separated by a blank line are section titles.
                    pending.clear();
                }
                Line::Option(sym, value) => {
                    in_header = false;
                    if !seen.insert(sym.to_string()) {
                        return Err(syntax(
                            lineno,
                            format!("CONFIG_{sym} appears twice in this fragment"),
                        ));
                    }
                    let opt = option(sym, value, lineno, &pending, &syntax)?;
                    frag.options.push(opt);
                    pending.clear();
                }
            }
        }
        if in_header && !pending.is_empty() {
            frag.take_header(&pending, &syntax)?;
        } else if let Some((l, _)) = pending.first() {
            let has_directive = pending
                .iter()
                .any(|(_, c)| !matches!(classify(c), Comment::Text(_)));
            if has_directive {
                return Err(syntax(
                    *l,
                    "directive at the end of the file, not above an option".into(),
                ));
            }
        }
        Ok(frag)
    }

    fn take_header(
        &mut self,
        lines: &[(usize, &str)],
        syntax: &dyn Fn(usize, String) -> FragmentError,
    ) -> Result<(), FragmentError> {
        let mut text = Vec::new();
        for (l, c) in lines {
            match classify(c) {
                Comment::Requires(v) => self.requires.extend(list(v).map(String::from)),
                Comment::Default(v) => {
                    self.default = match v {
                        "yes" => true,
                        "no" => false,
                        other => {
                            return Err(syntax(
                                *l,
                                format!("default: {other:?}: expected yes or no"),
                            ))
                        }
                    }
                }
                Comment::MinKernel(_) | Comment::Accept(_) => {
                    return Err(syntax(
                        *l,
                        format!("{c:?} belongs directly above an option, not in the header"),
                    ))
                }
                Comment::Text(t) => text.push(t),
            }
        }
        self.description = text.join(" ").trim().to_string();
        Ok(())
    }

    /// The first sentence of the description, for `list`.
    pub fn summary(&self) -> &str {
        let d = self.description.as_str();
        match d.find(". ") {
            Some(end) => &d[..=end],
            None => d,
        }
    }

    /// The option for `symbol`, if this fragment has one.
    pub fn option(&self, symbol: &str) -> Option<&FragmentOption> {
        self.options.iter().find(|o| o.symbol == symbol)
    }
}

fn option(
    sym: &str,
    value: Value,
    lineno: usize,
    comments: &[(usize, &str)],
    syntax: &dyn Fn(usize, String) -> FragmentError,
) -> Result<FragmentOption, FragmentError> {
    let mut reason = Vec::new();
    let mut min_kernel = None;
    let mut accept: Option<Vec<Value>> = None;
    for (l, c) in comments {
        match classify(c) {
            Comment::Text(t) => {
                if !t.is_empty() {
                    reason.push(t)
                }
            }
            Comment::MinKernel(v) => {
                min_kernel = Some(
                    v.parse()
                        .map_err(|e| syntax(*l, format!("min-kernel: {e}")))?,
                );
            }
            Comment::Accept(v) => {
                let mut vals = Vec::new();
                for item in list(v) {
                    let parsed = match item {
                        "y" => Value::Yes,
                        "m" => Value::Module,
                        "n" => Value::No,
                        other => {
                            return Err(syntax(
                                *l,
                                format!("accept: {other:?}: expected a list of y, m, n (e.g. \"accept: y, m\")"),
                            ))
                        }
                    };
                    if !vals.contains(&parsed) {
                        vals.push(parsed);
                    }
                }
                accept = Some(vals);
            }
            Comment::Requires(_) | Comment::Default(_) => {
                return Err(syntax(
                    *l,
                    format!(
                        "{c:?} belongs in the header (the comment block at the top of the file)"
                    ),
                ))
            }
        }
    }
    if reason.is_empty() {
        return Err(syntax(
            lineno,
            format!(
                "CONFIG_{sym} has no reason: put a comment saying why directly above it (no blank line between)"
            ),
        ));
    }
    let accept = match accept {
        None => vec![value.clone()],
        Some(list) => {
            if !list.contains(&value) {
                return Err(syntax(
                    lineno,
                    format!("CONFIG_{sym}: the accept list must include the value the option sets ({value})"),
                ));
            }
            list
        }
    };
    Ok(FragmentOption {
        symbol: sym.to_string(),
        value,
        accept,
        reason: reason.join(" "),
        min_kernel,
        line: lineno,
    })
}

/// A named set of fragments (embedded or from a directory), with feature-list resolution.
#[derive(Debug, Clone)]
pub struct FragmentSet {
    fragments: Vec<Fragment>,
}

impl FragmentSet {
    /// The fragments built into this crate ([`EMBEDDED`]). They are parsed and
    /// validated by this crate's unit tests, so this cannot fail in a released build.
    pub fn embedded() -> FragmentSet {
        let fragments = EMBEDDED
            .iter()
            .map(|(name, text)| Fragment::parse(name, text))
            .collect::<Result<Vec<_>, _>>()
            .and_then(FragmentSet::new);
        match fragments {
            Ok(set) => set,
            Err(e) => panic!("embedded fragment is invalid (the unit tests catch this): {e}"),
        }
    }

    /// Reads every `NAME.config` in `dir` (other files, e.g. README.md, are ignored),
    /// sorted by name.
    pub fn from_dir(dir: &Path) -> Result<FragmentSet, FragmentError> {
        let io = |path: &Path, source| FragmentError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let path = entry.map_err(|e| io(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "config") && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(FragmentError::Empty(dir.to_path_buf()));
        }
        files.sort();
        let mut fragments = Vec::new();
        for path in files {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            fragments.push(Fragment::parse(&name, &text)?);
        }
        FragmentSet::new(fragments)
    }

    /// A set from parsed fragments: names must be unique, `requires` must name
    /// fragments of the set and must not form a cycle.
    pub fn new(fragments: Vec<Fragment>) -> Result<FragmentSet, FragmentError> {
        let mut names = BTreeSet::new();
        for f in &fragments {
            if !names.insert(f.name.as_str()) {
                return Err(FragmentError::Name {
                    name: f.name.clone(),
                    message: "two fragments have this name".into(),
                });
            }
        }
        for f in &fragments {
            if let Some(r) = f.requires.iter().find(|r| !names.contains(r.as_str())) {
                return Err(FragmentError::Requires {
                    fragment: f.name.clone(),
                    message: format!("requires {r:?}, which does not exist"),
                });
            }
        }
        let set = FragmentSet { fragments };
        for f in &set.fragments {
            set.resolve(&[f.name.as_str()])?;
        }
        Ok(set)
    }

    /// The fragment called `name`.
    pub fn get(&self, name: &str) -> Option<&Fragment> {
        self.fragments.iter().find(|f| f.name == name)
    }

    /// All fragments, in listing order.
    pub fn iter(&self) -> impl Iterator<Item = &Fragment> {
        self.fragments.iter()
    }

    /// Names of the fragments not marked `# default: no`: what `check` and `merge`
    /// use when no feature list is given.
    pub fn default_features(&self) -> Vec<&str> {
        self.fragments
            .iter()
            .filter(|f| f.default)
            .map(|f| f.name.as_str())
            .collect()
    }

    /// Turns a feature list into fragments: `default` and `all` expand, every
    /// fragment's `requires` come before it, each fragment appears once. An empty list
    /// means `default`.
    pub fn resolve<S: AsRef<str>>(&self, features: &[S]) -> Result<Vec<&Fragment>, FragmentError> {
        let mut names: Vec<&str> = Vec::new();
        for f in features {
            match f.as_ref().trim() {
                "" => {}
                "default" => names.extend(self.default_features()),
                "all" => names.extend(self.fragments.iter().map(|f| f.name.as_str())),
                other => names.push(other),
            }
        }
        if features.is_empty() {
            names = self.default_features();
        }
        let mut out: Vec<&Fragment> = Vec::new();
        for name in names {
            self.visit(name, &mut Vec::new(), &mut out)?;
        }
        Ok(out)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        stack: &mut Vec<String>,
        out: &mut Vec<&'a Fragment>,
    ) -> Result<(), FragmentError> {
        let frag = self
            .get(name)
            .ok_or_else(|| FragmentError::UnknownFeature {
                name: name.to_string(),
                available: self
                    .fragments
                    .iter()
                    .map(|f| f.name.clone())
                    .chain(KEYWORDS.iter().map(|k| k.to_string()))
                    .collect(),
            })?;
        if out.iter().any(|f| f.name == name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(FragmentError::Requires {
                fragment: name.to_string(),
                message: format!("requires form a cycle: {} -> {name}", stack.join(" -> ")),
            });
        }
        stack.push(name.to_string());
        for r in &frag.requires {
            self.visit(r, stack, out)?;
        }
        stack.pop();
        out.push(frag);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNP_LIKE: &str = "\
# AMD SEV-SNP guest, for the tests.
# Second line of the description.
# requires: base

# Memory encryption.
CONFIG_AMD_MEM_ENCRYPT=y

# /dev/sev-guest for reports.
# A module is fine.
# min-kernel: 5.19
# accept: y, m
CONFIG_SEV_GUEST=y

# --- section title, ignored ---

# Must be off.
# CONFIG_DEVMEM is not set

# A string.
CONFIG_IMA_DEFAULT_TEMPLATE=\"ima-ng\"

# An int and a hex.
CONFIG_IMA_MEASURE_PCR_IDX=10
";

    #[test]
    fn parses_header_reasons_and_directives() {
        let f = Fragment::parse("snp", SNP_LIKE).unwrap();
        assert_eq!(f.summary(), "AMD SEV-SNP guest, for the tests.");
        assert_eq!(
            f.description,
            "AMD SEV-SNP guest, for the tests. Second line of the description."
        );
        assert!(f.description.contains("Second line"));
        assert_eq!(f.requires, ["base"]);
        assert!(f.default);
        assert_eq!(f.options.len(), 5);

        let sev = f.option("SEV_GUEST").unwrap();
        assert_eq!(sev.value, Value::Yes);
        assert_eq!(sev.accept, [Value::Yes, Value::Module]);
        assert_eq!(sev.reason, "/dev/sev-guest for reports. A module is fine.");
        assert_eq!(sev.min_kernel, Some(KernelVersion::new(5, 19, None)));
        assert_eq!(sev.line, 12);
        assert!(sev.accepts(Some(&Value::Module)));
        assert!(!sev.accepts(Some(&Value::No)));
        assert!(!sev.accepts(None));

        let mem = f.option("AMD_MEM_ENCRYPT").unwrap();
        assert_eq!(mem.accept, [Value::Yes]);
        assert!(!mem.accepts(Some(&Value::Module)));

        let devmem = f.option("DEVMEM").unwrap();
        assert!(devmem.is_forbidden());
        assert!(devmem.accepts(None));
        assert!(devmem.accepts(Some(&Value::No)));
        assert!(!devmem.accepts(Some(&Value::Yes)));

        assert_eq!(
            f.option("IMA_DEFAULT_TEMPLATE").unwrap().value,
            Value::Str("ima-ng".into())
        );
        assert_eq!(
            f.option("IMA_MEASURE_PCR_IDX").unwrap().value,
            Value::Int(10)
        );
    }

    fn err(text: &str) -> String {
        Fragment::parse("t", text).unwrap_err().to_string()
    }

    #[test]
    fn rejects_what_would_lose_meaning() {
        assert!(err("# header\n\nCONFIG_A=y\n").contains("no reason"));
        assert!(err("# header\n\n# why\n\nCONFIG_A=y\n").contains("no reason"));
        assert!(err("# h\n\n# why\n# min-kernel: 6\nCONFIG_A=y\n").contains("min-kernel"));
        assert!(err("# h\n\n# why\n# accept: y, q\nCONFIG_A=y\n").contains("accept"));
        assert!(err("# h\n\n# why\n# accept: m\nCONFIG_A=y\n").contains("must include"));
        assert!(err("# h\n\n# why\nCONFIG_A=y\n# why\nCONFIG_A=m\n").contains("twice"));
        assert!(
            err("# h\n\n# min-kernel: 6.7\n\n# why\nCONFIG_A=y\n").contains("not directly above")
        );
        assert!(err("# h\n\n# why\n# requires: base\nCONFIG_A=y\n").contains("header"));
        assert!(err("# h\n# min-kernel: 6.7\n\n# why\nCONFIG_A=y\n").contains("header"));
        assert!(err("# h\n# default: maybe\n").contains("yes or no"));
        let e = err("# h\n\n# CONFIG_A needs B\nCONFIG_A=y\n");
        assert!(e.contains("line 3") && e.contains("is not set"), "{e}");
        assert!(Fragment::parse("Bad Name", "").is_err());
        assert!(Fragment::parse("all", "").is_err());
    }

    #[test]
    fn embedded_fragments_parse_and_match_the_directory() {
        let set = FragmentSet::embedded();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fragments");
        let from_dir = FragmentSet::from_dir(&dir).unwrap();
        let mut a: Vec<_> = set.iter().map(|f| f.name.clone()).collect();
        let mut b: Vec<_> = from_dir.iter().map(|f| f.name.clone()).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "EMBEDDED must list every fragments/*.config");
        for f in set.iter() {
            assert_eq!(Some(f), from_dir.get(&f.name));
            assert!(!f.description.is_empty(), "{} has no description", f.name);
            assert!(!f.options.is_empty(), "{} has no options", f.name);
        }
        for name in [
            "base",
            "vsock",
            "container",
            "snp",
            "tdx",
            "storage",
            "hardening",
            "measured",
        ] {
            assert!(set.get(name).is_some(), "fragment {name} missing");
        }
        assert!(!set.default_features().contains(&"measured"));
    }

    #[test]
    fn resolves_requires_keywords_and_unknown_names() {
        let set = FragmentSet::embedded();
        let names = |fs: Vec<&Fragment>| fs.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(set.resolve(&["vsock"]).unwrap()), ["base", "vsock"]);
        assert_eq!(
            names(set.resolve(&["vsock", "base", "container"]).unwrap()),
            ["base", "vsock", "container"]
        );
        let default = names(set.resolve::<&str>(&[]).unwrap());
        assert_eq!(default, names(set.resolve(&["default"]).unwrap()));
        assert!(!default.contains(&"measured".to_string()));
        assert_eq!(set.resolve(&["all"]).unwrap().len(), set.iter().count());
        let e = set.resolve(&["base", "sgx"]).unwrap_err().to_string();
        assert!(e.contains("\"sgx\"") && e.contains("vsock"), "{e}");
    }

    #[test]
    fn rejects_bad_requires() {
        let a = Fragment::parse("a", "# a\n# requires: b\n").unwrap();
        let b = Fragment::parse("b", "# b\n# requires: a\n").unwrap();
        let e = FragmentSet::new(vec![a.clone(), b])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cycle"), "{e}");
        let e = FragmentSet::new(vec![a]).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
