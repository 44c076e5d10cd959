//! Validates the fragments against the real Kconfig of Debian's kernel sources.
//!
//! For each tree (linux-source-6.12, and linux-source-6.1 for the "too new" path):
//! `make defconfig` (x86_64) once, then for every case (each fragment with its
//! requirements on its own, and all fragments together) the merged fragment from
//! `kernel_config::merge` goes through the kernel's own
//! `scripts/kconfig/merge_config.sh -m` and `make olddefconfig`, and the resulting
//! `.config` is checked with `kernel_config::check`. An option Kconfig dropped means a
//! missing dependency or a wrong name; the test prints a table of every option
//! (OK / MISS / TOO-NEW with the reason) and fails listing the dropped ones, with where
//! the symbol is defined and what it depends on. `# min-kernel:` markers are checked
//! against the trees too: a symbol must exist in a tree at least as new as its marker,
//! and must not exist in an older one.
//!
//! The sources come from `scripts/fetch-linux-source.sh` (apt-get download, only the
//! Kconfig files extracted, cached in /var/cache/sealpod/kernel-src or
//! `$SEALPOD_KERNEL_SRC_CACHE`). Each run works in its own temp dir (`make O=...`), so
//! the cached tree stays pristine and parallel runs do not collide.
//! `SEALPOD_SKIP_KERNEL_TREE=1` skips (loudly) on a machine without the Debian mirror.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kernel_config::merge::Merged;
use kernel_config::{check, merge, Config, FragmentSet, KernelVersion, Report, Severity, Status};

const ARCH: &str = "x86_64";
/// Cases run at the same time (each is one `make olddefconfig`; the machines have 2 cores).
const PARALLEL: usize = 2;
/// Environment that would change what kbuild does if inherited from the caller.
const SCRUB_ENV: &[&str] = &[
    "MAKEFLAGS",
    "MFLAGS",
    "MAKELEVEL",
    "MAKEFILES",
    "KCONFIG_CONFIG",
    "KCONFIG_ALLCONFIG",
    "KBUILD_OUTPUT",
    "KBUILD_DEFCONFIG",
    "ARCH",
    "SRCARCH",
    "CROSS_COMPILE",
    "LLVM",
    "CONFIG_",
];

fn skip() -> bool {
    if std::env::var_os("SEALPOD_SKIP_KERNEL_TREE").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: SEALPOD_SKIP_KERNEL_TREE=1 (the fragments were NOT validated against a kernel tree)");
        return true;
    }
    false
}

/// Where extracted trees are cached between runs.
fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SEALPOD_KERNEL_SRC_CACHE") {
        return PathBuf::from(d);
    }
    let system = Path::new("/var/cache/sealpod/kernel-src");
    if std::fs::create_dir_all(system).is_ok() && tempfile::tempfile_in(system).is_ok() {
        return system.to_path_buf();
    }
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-src")
}

/// Runs the fetch script; returns the pristine source tree.
fn fetch(series: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-linux-source.sh");
    let cache = cache_dir();
    let out = Command::new("bash")
        .arg(&script)
        .arg(series)
        .arg(&cache)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {series} {} failed ({}); see its messages above. It needs root (apt-get) and the \
         Debian mirror (bookworm-security). Set SEALPOD_SKIP_KERNEL_TREE=1 to skip this test.",
        script.display(),
        cache.display(),
        out.status
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    PathBuf::from(path)
}

/// `VERSION`, `PATCHLEVEL`, `SUBLEVEL` of the top Makefile.
fn tree_version(src: &Path) -> KernelVersion {
    let makefile = std::fs::read_to_string(src.join("Makefile")).expect("tree has a Makefile");
    let var = |name: &str| -> u32 {
        makefile
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == name).then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {name} in {}/Makefile", src.display()))
    };
    KernelVersion::new(var("VERSION"), var("PATCHLEVEL"), Some(var("SUBLEVEL")))
}

fn package_version(src: &Path) -> String {
    std::fs::read_to_string(src.join(".sealpod-complete"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("version=").map(String::from))
        })
        .unwrap_or_else(|| "?".into())
}

/// One `config SYM` entry of the tree's Kconfig.
struct Def {
    /// `drivers/virt/coco/sev-guest/Kconfig:1`.
    at: String,
    /// Its own `depends on` expressions.
    depends: Vec<String>,
    /// Enclosing `if` blocks and `menu`/`choice` dependencies, outermost first.
    enclosing: Vec<String>,
}

/// An open `if`, `menu` or `choice` block while reading Kconfig.
struct Frame {
    /// `if`, `menu` or `choice`.
    kind: &'static str,
    /// `if VIRT_DRIVERS`, `menu "..." depends on X`: how it shows in diagnostics.
    conds: Vec<String>,
    at: String,
}

/// The tree's Kconfig as x86_64 sees it (read from the top `Kconfig`, following
/// `source`): where each symbol is defined, what it depends on (including enclosing
/// `if`/`menu` blocks, often the cause of a dropped option) and what selects it.
struct KconfigIndex {
    defs: HashMap<String, Vec<Def>>,
    selected_by: HashMap<String, Vec<String>>,
}

fn indent_of(line: &str) -> usize {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 8 } else { 1 })
        .sum()
}

impl KconfigIndex {
    fn build(src: &Path) -> KconfigIndex {
        let mut index = KconfigIndex {
            defs: HashMap::new(),
            selected_by: HashMap::new(),
        };
        index.read(src, "Kconfig", &mut Vec::new(), 0);
        assert!(
            index.defs.contains_key("VIRTIO") && index.defs.contains_key("X86_64"),
            "reading {}/Kconfig found too few symbols: is the tree complete?",
            src.display()
        );
        index
    }

    fn read(&mut self, src: &Path, rel: &str, stack: &mut Vec<Frame>, depth: usize) {
        assert!(depth < 64, "Kconfig source nesting too deep at {rel}");
        let Ok(text) = std::fs::read_to_string(src.join(rel)) else {
            return; // osource of an absent file, or a file outside the extracted set
        };
        // Entry collecting `depends on`/`select`, or an open menu/choice collecting
        // its `depends on`.
        let mut current: Option<(String, usize)> = None;
        let mut open_block: Option<usize> = None;
        let mut help_indent: Option<usize> = None; // Some(0) = help just started
        let mut in_help = false;
        let base_depth = stack.len();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if in_help {
                if t.is_empty() {
                    continue;
                }
                let ind = indent_of(line);
                match help_indent {
                    Some(0) | None => {
                        help_indent = Some(ind.max(1));
                        continue;
                    }
                    Some(h) if ind >= h => continue,
                    _ => in_help = false,
                }
            }
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let at = format!("{rel}:{}", i + 1);
            let (kw, rest) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
            let rest = rest.trim();
            match kw {
                "config" | "menuconfig" => {
                    let enclosing = stack
                        .iter()
                        .flat_map(|f| f.conds.iter().map(move |c| format!("{c} ({})", f.at)))
                        .collect();
                    let defs = self.defs.entry(rest.to_string()).or_default();
                    defs.push(Def {
                        at,
                        depends: Vec::new(),
                        enclosing,
                    });
                    current = Some((rest.to_string(), defs.len() - 1));
                    open_block = None;
                }
                "depends" => {
                    let expr = rest.strip_prefix("on").unwrap_or(rest).trim().to_string();
                    if let Some((sym, n)) = &current {
                        if let Some(d) = self.defs.get_mut(sym).and_then(|v| v.get_mut(*n)) {
                            d.depends.push(expr);
                        }
                    } else if let Some(b) = open_block {
                        if let Some(f) = stack.get_mut(b) {
                            f.conds.push(format!("{} depends on {expr}", f.kind));
                        }
                    }
                }
                "select" => {
                    if let Some((sym, _)) = &current {
                        let target = rest.split_whitespace().next().unwrap_or("").to_string();
                        self.selected_by
                            .entry(target)
                            .or_default()
                            .push(sym.clone());
                    }
                }
                "help" | "---help---" => {
                    in_help = true;
                    help_indent = Some(0);
                }
                "if" => {
                    stack.push(Frame {
                        kind: "if",
                        conds: vec![format!("if {rest}")],
                        at,
                    });
                    current = None;
                    open_block = None;
                }
                "menu" | "choice" => {
                    stack.push(Frame {
                        kind: if kw == "menu" { "menu" } else { "choice" },
                        conds: Vec::new(),
                        at,
                    });
                    current = None;
                    open_block = Some(stack.len() - 1);
                }
                "endif" | "endmenu" | "endchoice" => {
                    if stack.len() > base_depth {
                        stack.pop();
                    }
                    current = None;
                    open_block = None;
                }
                "source" | "osource" | "rsource" | "orsource" => {
                    let path = rest.trim_matches('"').replace("$(SRCARCH)", "x86");
                    let path = if kw == "rsource" || kw == "orsource" {
                        Path::new(rel)
                            .parent()
                            .unwrap_or(Path::new(""))
                            .join(path)
                            .display()
                            .to_string()
                    } else {
                        path
                    };
                    if !path.contains('$') {
                        self.read(src, &path, stack, depth + 1);
                    }
                    current = None;
                    open_block = None;
                }
                "comment" | "mainmenu" => {
                    current = None;
                    open_block = None;
                }
                _ => {}
            }
        }
        stack.truncate(base_depth);
    }

    fn defined(&self, symbol: &str) -> bool {
        self.defs.contains_key(symbol)
    }

    /// Where `symbol` is defined, what it depends on and what selects it, each symbol
    /// annotated with its value in `config` (the result of olddefconfig), so the
    /// unmet dependency stands out.
    fn describe(&self, symbol: &str, config: Option<&Config>) -> String {
        let annotate = |expr: &str| -> String {
            let Some(config) = config else {
                return expr.to_string();
            };
            let mut vals = Vec::new();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let is_sym = word.len() > 1
                    && word.bytes().any(|b| b.is_ascii_uppercase())
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !is_sym
                    || vals
                        .iter()
                        .any(|v: &String| v.starts_with(&format!("{word}=")))
                {
                    continue;
                }
                let v = match config.get(word) {
                    None => "absent".to_string(),
                    Some(kernel_config::Value::No) => "n".to_string(),
                    Some(v) => v.to_string(),
                };
                vals.push(format!("{word}={v}"));
            }
            if vals.is_empty() {
                expr.to_string()
            } else {
                format!("{expr} [{}]", vals.join(", "))
            }
        };
        let Some(defs) = self.defs.get(symbol) else {
            return "not defined in this tree's x86 Kconfig: wrong name, or newer than this tree (add a min-kernel marker)".into();
        };
        let mut parts = Vec::new();
        for d in defs {
            let mut p = format!("defined at {}", d.at);
            if !d.depends.is_empty() {
                p.push_str(&format!(
                    "; depends on {}",
                    annotate(&d.depends.join(" && "))
                ));
            }
            if !d.enclosing.is_empty() {
                let encl: Vec<String> = d.enclosing.iter().map(|e| annotate(e)).collect();
                p.push_str(&format!("; inside {}", encl.join(", ")));
            }
            parts.push(p);
        }
        if let Some(sel) = self.selected_by.get(symbol) {
            parts.push(format!("selected by {}", annotate(&sel.join(", "))));
        }
        parts.join("; ")
    }
}

struct Case {
    name: String,
    merged: Merged,
}

struct CaseResult {
    name: String,
    /// The `.config` olddefconfig produced.
    config: Config,
    report: Report,
    elapsed: Duration,
}

fn run(cmd: &mut Command, what: &str) {
    for v in SCRUB_ENV {
        cmd.env_remove(v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make(src: &Path, out: &Path, target: &str) -> Command {
    let mut cmd = Command::new("make");
    cmd.arg("-s")
        .arg("-C")
        .arg(src)
        .arg(format!("O={}", out.display()))
        .arg(format!("ARCH={ARCH}"))
        .arg(target);
    cmd
}

/// defconfig in `work/defconfig` (built once), then one copy per case.
fn run_case(src: &Path, defconfig_dir: &Path, work: &Path, case: &Case) -> CaseResult {
    let started = Instant::now();
    let out = work.join(format!("case-{}", case.name));
    run(
        Command::new("cp").arg("-a").arg(defconfig_dir).arg(&out),
        "cp -a defconfig output dir",
    );
    let fragment = out.join("sealpod-fragment.config");
    std::fs::write(&fragment, case.merged.to_fragment_text()).unwrap();
    run(
        Command::new(src.join("scripts/kconfig/merge_config.sh"))
            .current_dir(&out)
            .arg("-m")
            .arg("-O")
            .arg(&out)
            .arg(out.join(".config"))
            .arg(&fragment),
        &format!("merge_config.sh for case {}", case.name),
    );
    run(
        &mut make(src, &out, "olddefconfig"),
        &format!("make olddefconfig for case {}", case.name),
    );
    let config = Config::read(&out.join(".config")).expect("olddefconfig wrote a parsable .config");
    let report = check(&config, &case.merged, format!("case {}", case.name));
    // Keep the disk use of a run small: only this case's outputs were needed.
    let _ = std::fs::remove_dir_all(&out);
    CaseResult {
        name: case.name.clone(),
        config,
        report,
        elapsed: started.elapsed(),
    }
}

fn tag(status: Status) -> &'static str {
    match status {
        Status::Ok => "OK",
        Status::TooNew => "TOO-NEW",
        _ => "MISS",
    }
}

/// Validates `cases` against linux-source-`series`; returns the problems found and
/// the report of the "all" case.
fn validate(series: &str, cases: Vec<Case>) -> (Vec<String>, Report) {
    let t0 = Instant::now();
    let src = fetch(series);
    let fetched = t0.elapsed();
    let version = tree_version(&src);
    let index = KconfigIndex::build(&src);
    let title = format!(
        "linux-source-{series} {version} (Debian {}) at {}",
        package_version(&src),
        src.display()
    );

    let work = tempfile::Builder::new()
        .prefix(&format!("kconfig-tree-{series}-"))
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir under CARGO_TARGET_TMPDIR");
    let defconfig_dir = work.path().join("defconfig");
    std::fs::create_dir_all(&defconfig_dir).unwrap();
    let t1 = Instant::now();
    run(
        &mut make(&src, &defconfig_dir, "defconfig"),
        "make defconfig",
    );
    let defconfig_time = t1.elapsed();

    let t2 = Instant::now();
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(cases.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(case) = cases.get(i) else { break };
                let r = run_case(&src, &defconfig_dir, work.path(), case);
                results.lock().unwrap().push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let cases_time = t2.elapsed();

    let mut problems = Vec::new();
    let mut table = String::new();
    let _ = writeln!(table, "== {title}");
    for (_, r) in &results {
        let s = &r.report.summary;
        let _ = writeln!(
            table,
            "\n-- case {:<14} features {}: {} options, {} OK, {} MISS, {} TOO-NEW ({:.1} s)",
            r.name,
            r.report.features.join(","),
            s.checked,
            s.ok,
            s.failed,
            s.warnings,
            r.elapsed.as_secs_f64()
        );
        // The full table for the case with everything; problems only for the others
        // (their options all appear in the "all" case too).
        let full = r.name == "all";
        for o in &r.report.results {
            if o.severity == Severity::Ok && !full {
                continue;
            }
            let wanted = o.expected.config_line(o.symbol());
            let got = match (&o.found, o.status) {
                (_, Status::TooNew) => format!(
                    "too new for this tree (needs {})",
                    o.min_kernel.map(|v| v.to_string()).unwrap_or_default()
                ),
                (None, _) => "absent".to_string(),
                (Some(v), _) => v.config_line(o.symbol()),
            };
            let _ = writeln!(
                table,
                "{:<8} {:<42} -> {:<40} [{}] {}",
                tag(o.status),
                wanted,
                got,
                o.fragments.join(","),
                o.reason
            );
            if o.severity == Severity::Failure {
                let why = index.describe(o.symbol(), Some(&r.config));
                let _ = writeln!(table, "{:<8} {why}", "");
                problems.push(format!(
                    "{series} case {}: {} dropped or changed by Kconfig: {} -- {}",
                    r.name, wanted, o.message, why
                ));
            }
        }
    }

    // min-kernel markers and symbol names against this tree's Kconfig.
    let all = results
        .iter()
        .find(|(_, r)| r.name == "all")
        .map(|(_, r)| &r.report)
        .expect("an 'all' case");
    let _ = writeln!(
        table,
        "\n-- symbol names and min-kernel markers vs {version}"
    );
    for o in &all.results {
        let defined = index.defined(o.symbol());
        let verdict = match o.min_kernel {
            Some(min) if version >= min && !defined => Some(format!(
                "{} has min-kernel {min} but is not defined in {version}: wrong name or wrong marker",
                o.option
            )),
            Some(min) if version < min && defined => Some(format!(
                "{} has min-kernel {min} but {version} already defines it ({}): lower the marker",
                o.option,
                index.describe(o.symbol(), None)
            )),
            None if !defined => Some(format!(
                "{} is not defined in {version} and has no min-kernel marker: wrong name?",
                o.option
            )),
            _ => None,
        };
        if let Some(v) = verdict {
            let _ = writeln!(table, "BAD      {v}");
            problems.push(format!("{series}: {v}"));
        } else if let Some(min) = o.min_kernel {
            let _ = writeln!(
                table,
                "OK       {:<30} min-kernel {min}: {} in {version}",
                o.option,
                if defined { "defined" } else { "not yet" }
            );
        }
    }
    let _ = writeln!(
        table,
        "\ntimes: fetch {:.1} s, defconfig {:.1} s, {} cases {:.1} s ({PARALLEL} at a time), total {:.1} s",
        fetched.as_secs_f64(),
        defconfig_time.as_secs_f64(),
        results.len(),
        cases_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );

    let saved = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kconfig-tree-{series}.txt"));
    let _ = std::fs::write(&saved, &table);
    println!("{table}\n(table saved to {})", saved.display());
    let all = all.clone();
    (problems, all)
}

fn cases(set: &FragmentSet, per_fragment: bool) -> Vec<Case> {
    let mut out = vec![Case {
        name: "all".into(),
        merged: merge(&set.resolve(&["all"]).unwrap()).unwrap(),
    }];
    if per_fragment {
        for f in set.iter() {
            out.push(Case {
                name: f.name.clone(),
                merged: merge(&set.resolve(&[f.name.as_str()]).unwrap()).unwrap(),
            });
        }
    }
    out
}

/// The main validation: every fragment alone (with its requirements) and all together
/// must survive `olddefconfig` on 6.12, the kernel the guest images use.
#[test]
fn fragments_survive_olddefconfig_on_linux_6_12() {
    if skip() {
        return;
    }
    let (problems, all) = validate("6.12", cases(&FragmentSet::embedded(), true));
    assert_eq!(all.summary.warnings, 0, "nothing is newer than 6.12");
    assert!(
        problems.is_empty(),
        "{} problem(s) against linux-source-6.12:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// 6.1 predates configfs-tsm, the TDX guest driver and the optional cgroup v1
/// controllers: those must come out as "too new for this tree", everything else OK.
#[test]
fn older_linux_6_1_reports_newer_symbols_as_too_new() {
    if skip() {
        return;
    }
    let set = FragmentSet::embedded();
    let all = merge(&set.resolve(&["all"]).unwrap()).unwrap();
    let too_new: Vec<&str> = all
        .options
        .iter()
        .filter(|o| {
            o.min_kernel
                .is_some_and(|m| m > KernelVersion::new(6, 1, None))
        })
        .map(|o| o.symbol.as_str())
        .collect();
    for expected in ["TSM_REPORTS", "TDX_GUEST_DRIVER", "MEMCG_V1", "CPUSETS_V1"] {
        assert!(
            too_new.contains(&expected),
            "{expected} should be marked newer than 6.1"
        );
    }
    let (problems, report) = validate("6.1", cases(&set, false));
    let reported: Vec<&str> = report
        .results
        .iter()
        .filter(|r| r.status == Status::TooNew)
        .map(|r| r.symbol())
        .collect();
    assert_eq!(
        reported, too_new,
        "exactly the options marked newer than 6.1 are too new"
    );
    assert!(
        problems.is_empty(),
        "{} problem(s) against linux-source-6.1:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
