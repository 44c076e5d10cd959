//! Parsing a kernel `.config` (or `/proc/config.gz`): the values the kernel was built
//! with, which [`crate::check`](mod@crate::check) compares against the fragments.
//!
//! Accepted lines, exactly as Kconfig writes them:
//! `CONFIG_X=y`, `CONFIG_X=m`, `CONFIG_X=n`, `CONFIG_X="string"` (with `\"` and `\\`
//! escapes), `CONFIG_X=0x1f` (hex), `CONFIG_X=123` / `CONFIG_X=-1` (int),
//! `# CONFIG_X is not set`, other `#` comments and blank lines. Anything else is a
//! syntax error with its line number, so a damaged file is not half-read.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::version::KernelVersion;

/// Largest config file read (decompressed). Real ones are ~300 KB; the cap only stops
/// a wrong path (or a gzip bomb) from eating memory.
pub const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

/// One Kconfig value as written in a `.config`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// `=y`: built in (or a bool that is on).
    Yes,
    /// `=m`: built as a module.
    Module,
    /// `# CONFIG_X is not set` (or `=n`): off.
    No,
    /// `="..."`: a string option, unescaped.
    Str(String),
    /// `=123`: a decimal int option.
    Int(i64),
    /// `=0x1f`: a hex option.
    Hex(u64),
}

impl Value {
    /// Parses the text after `CONFIG_X=`; errors say what was expected.
    pub fn parse(text: &str) -> Result<Value, String> {
        match text {
            "y" => return Ok(Value::Yes),
            "m" => return Ok(Value::Module),
            "n" => return Ok(Value::No),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix('"') {
            return parse_string(rest).map(Value::Str);
        }
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            return u64::from_str_radix(hex, 16)
                .map(Value::Hex)
                .map_err(|_| format!("invalid hex value {text:?}"));
        }
        if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
            return text
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| format!("invalid number {text:?}"));
        }
        Err(format!(
            "invalid value {text:?}: expected y, m, n, a \"string\", a number or 0x-hex"
        ))
    }

    /// True for `y` and `m`: the option is on in some form.
    pub fn is_enabled(&self) -> bool {
        !matches!(self, Value::No)
    }

    /// The line Kconfig would write for `symbol` with this value.
    pub fn config_line(&self, symbol: &str) -> String {
        match self {
            Value::No => format!("# CONFIG_{symbol} is not set"),
            other => format!("CONFIG_{symbol}={other}"),
        }
    }
}

fn parse_string(rest: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e) => out.push(e),
                None => return Err("unterminated string (ends with a backslash)".into()),
            },
            '"' => {
                let trailing = chars.as_str();
                if !trailing.trim().is_empty() {
                    return Err(format!("unexpected text after the string: {trailing:?}"));
                }
                return Ok(out);
            }
            other => out.push(other),
        }
    }
    Err("unterminated string (no closing quote)".into())
}

/// `.config` notation: `y`, `m`, `n`, `"str"` (escaped), `123`, `0x1f`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Yes => f.write_str("y"),
            Value::Module => f.write_str("m"),
            Value::No => f.write_str("n"),
            Value::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        f.write_str("\\")?;
                    }
                    write!(f, "{c}")?;
                }
                f.write_str("\"")
            }
            Value::Int(i) => write!(f, "{i}"),
            Value::Hex(h) => write!(f, "{h:#x}"),
        }
    }
}

/// Serialised in `.config` notation (a string: `"y"`, `"n"`, `"\"ima-ng\""`, `"0x1f"`).
impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What one line of a `.config` or fragment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line<'a> {
    /// Blank line.
    Blank,
    /// A comment that is not an option; the text after `#`, trimmed.
    Comment(&'a str),
    /// `CONFIG_X=...` or `# CONFIG_X is not set`: symbol without the prefix.
    Option(&'a str, Value),
}

fn is_symbol(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Classifies one line. `Err` for a line that is neither an option, a comment nor blank,
/// and for a comment starting `# CONFIG_` that is not a well-formed "is not set" line
/// (the kernel's merge_config.sh would take it for an option).
pub(crate) fn parse_line(raw: &str) -> Result<Line<'_>, String> {
    let line = raw.trim();
    if line.is_empty() {
        return Ok(Line::Blank);
    }
    if let Some(comment) = line.strip_prefix('#') {
        if let Some(rest) = comment.strip_prefix(" CONFIG_") {
            let (sym, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if is_symbol(sym) && tail == "is not set" {
                return Ok(Line::Option(sym, Value::No));
            }
            return Err(
                "a comment starting with \"# CONFIG_\" must be exactly \"# CONFIG_NAME is not set\" \
                 (Kconfig and merge_config.sh read such lines as options); reword the comment"
                    .into(),
            );
        }
        return Ok(Line::Comment(comment.trim()));
    }
    let Some(rest) = line.strip_prefix("CONFIG_") else {
        return Err(
            "expected CONFIG_NAME=VALUE, \"# CONFIG_NAME is not set\" or a # comment".into(),
        );
    };
    let Some((sym, value)) = rest.split_once('=') else {
        return Err("expected CONFIG_NAME=VALUE".into());
    };
    if !is_symbol(sym) {
        return Err(format!("invalid symbol name {sym:?}"));
    }
    Ok(Line::Option(sym, Value::parse(value)?))
}

/// A syntax error in a `.config`, with the 1-based line it is on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct ConfigError {
    /// 1-based line number.
    pub line: usize,
    /// The offending line.
    pub text: String,
    /// What is wrong with it.
    pub message: String,
}

/// Why a config file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadConfigError {
    /// The file could not be opened or read (or its gzip stream is corrupt).
    #[error("cannot read kernel config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is bigger than [`MAX_CONFIG_BYTES`]: not a kernel config.
    #[error("{path} is larger than {limit} bytes: not a kernel config")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The file is not valid UTF-8 text.
    #[error("{path} is not a text kernel config (not UTF-8)")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The file has a line that is not `.config` syntax.
    #[error("{path}: {source}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The error and line.
        #[source]
        source: ConfigError,
    },
}

/// A parsed kernel configuration: symbol (without `CONFIG_`) to value.
/// A symbol that is absent means Kconfig did not write it: unknown to that kernel, or
/// hidden because its dependencies are off (both mean "off" for the kernel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    values: BTreeMap<String, Value>,
    kernel_version: Option<KernelVersion>,
}

impl Config {
    /// Parses `.config` text. The kernel version is taken from Kconfig's header line
    /// (`# Linux/x86 6.12.117 Kernel Configuration`) when present. A symbol set twice
    /// keeps its last value, as in Kconfig.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for (idx, raw) in text.lines().enumerate() {
            let line = parse_line(raw).map_err(|message| ConfigError {
                line: idx + 1,
                text: raw.to_string(),
                message,
            })?;
            match line {
                Line::Option(sym, value) => {
                    config.values.insert(sym.to_string(), value);
                }
                Line::Comment(c) => {
                    if config.kernel_version.is_none() {
                        config.kernel_version = header_version(c);
                    }
                }
                Line::Blank => {}
            }
        }
        Ok(config)
    }

    /// Reads a config file, plain or gzip-compressed (`/proc/config.gz`), detected by
    /// its magic bytes so `--config /proc/config.gz` works too.
    pub fn read(path: &Path) -> Result<Config, ReadConfigError> {
        let io = |source| ReadConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::File::open(path)
            .and_then(|f| read_capped(f, MAX_CONFIG_BYTES + 1))
            .map_err(io)?;
        let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
            read_capped(
                flate2::read::MultiGzDecoder::new(bytes.as_slice()),
                MAX_CONFIG_BYTES + 1,
            )
            .map_err(io)?
        } else {
            bytes
        };
        if bytes.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ReadConfigError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| ReadConfigError::NotText {
            path: path.to_path_buf(),
        })?;
        Config::parse(&text).map_err(|source| ReadConfigError::Syntax {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The value of `symbol` (without `CONFIG_`): `None` if absent, `Some(Value::No)` if
    /// "is not set".
    pub fn get(&self, symbol: &str) -> Option<&Value> {
        self.values.get(symbol)
    }

    /// Sets a value (tests, and callers that build a config by hand).
    pub fn set(&mut self, symbol: &str, value: Value) {
        self.values.insert(symbol.to_string(), value);
    }

    /// The kernel version this config is for, from its header (or set by the caller).
    pub fn kernel_version(&self) -> Option<KernelVersion> {
        self.kernel_version
    }

    /// Records the kernel version, e.g. from `uname -r` when the header lacks it.
    pub fn set_kernel_version(&mut self, version: Option<KernelVersion>) {
        self.kernel_version = version;
    }

    /// Number of symbols written (set or "is not set").
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True if no symbol was written.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// All symbols and values, sorted by symbol.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }
}

fn read_capped(reader: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// `Linux/x86 6.12.117 Kernel Configuration` -> 6.12.117.
fn header_version(comment: &str) -> Option<KernelVersion> {
    let rest = comment.strip_prefix("Linux/")?;
    let rest = rest.strip_suffix("Kernel Configuration")?;
    let version = rest.split_whitespace().nth(1)?;
    KernelVersion::from_release(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SAMPLE: &str = r#"#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.12.117 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT="gcc (Debian 12.2.0-14+deb12u1) 12.2.0"
CONFIG_VIRTIO=y
CONFIG_SEV_GUEST=m
# CONFIG_DEVMEM is not set
CONFIG_ILLEGAL_POINTER_VALUE=0xdead000000000000
CONFIG_LOG_BUF_SHIFT=18
CONFIG_PANIC_TIMEOUT=-1
CONFIG_CMDLINE=""
CONFIG_ESCAPED="a \"quoted\" back\\slash # not a comment"
CONFIG_OFF=n

# CONFIG_OTHER_COMMENT mentions no option
"#;

    #[test]
    fn parses_every_value_kind() {
        // "# CONFIG_OTHER_COMMENT mentions" is not a valid "is not set" line.
        assert!(Config::parse(SAMPLE).is_err());
        let text = SAMPLE.replace("# CONFIG_OTHER_COMMENT mentions no option", "# a comment");
        let c = Config::parse(&text).unwrap();
        assert_eq!(
            c.kernel_version(),
            Some(KernelVersion::new(6, 12, Some(117)))
        );
        assert_eq!(c.get("VIRTIO"), Some(&Value::Yes));
        assert_eq!(c.get("SEV_GUEST"), Some(&Value::Module));
        assert_eq!(c.get("DEVMEM"), Some(&Value::No));
        assert_eq!(c.get("OFF"), Some(&Value::No));
        assert_eq!(
            c.get("ILLEGAL_POINTER_VALUE"),
            Some(&Value::Hex(0xdead_0000_0000_0000))
        );
        assert_eq!(c.get("LOG_BUF_SHIFT"), Some(&Value::Int(18)));
        assert_eq!(c.get("PANIC_TIMEOUT"), Some(&Value::Int(-1)));
        assert_eq!(c.get("CMDLINE"), Some(&Value::Str(String::new())));
        assert_eq!(
            c.get("ESCAPED"),
            Some(&Value::Str(
                r#"a "quoted" back\slash # not a comment"#.into()
            ))
        );
        assert_eq!(c.get("NOT_THERE"), None);
        assert_eq!(c.len(), 10);
    }

    #[test]
    fn values_round_trip_through_config_lines() {
        for (line, sym) in [
            ("CONFIG_A=y", "A"),
            ("CONFIG_A=m", "A"),
            ("# CONFIG_A is not set", "A"),
            ("CONFIG_A=\"x \\\"y\\\" \\\\z\"", "A"),
            ("CONFIG_A=0x1f", "A"),
            ("CONFIG_A=-7", "A"),
        ] {
            let Line::Option(s, v) = parse_line(line).unwrap() else {
                panic!("{line} is not an option")
            };
            assert_eq!(s, sym);
            assert_eq!(v.config_line(sym), line);
        }
        assert_eq!(Value::Hex(0x1F).to_string(), "0x1f");
    }

    #[test]
    fn rejects_malformed_lines_with_their_number() {
        for bad in [
            "CONFIG_A=yes",
            "CONFIG_A=\"unterminated",
            "CONFIG_A=\"x\" trailing",
            "CONFIG_A=0xzz",
            "CONFIG_A=",
            "CONFIG_A y",
            "CONFIG_-A=y",
            "VIRTIO=y",
            "# CONFIG_A is not  set",
            "# CONFIG_A=y",
        ] {
            let err = Config::parse(&format!("CONFIG_OK=y\n{bad}\n")).unwrap_err();
            assert_eq!(err.line, 2, "{bad}");
            assert_eq!(err.text, bad);
        }
    }

    #[test]
    fn later_assignment_wins() {
        let c = Config::parse("CONFIG_A=y\n# CONFIG_A is not set\n").unwrap();
        assert_eq!(c.get("A"), Some(&Value::No));
    }

    #[test]
    fn reads_plain_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("config");
        std::fs::write(
            &plain,
            SAMPLE.replace("# CONFIG_OTHER_COMMENT mentions no option", ""),
        )
        .unwrap();
        let gz = dir.path().join("config.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        enc.finish().unwrap();
        let a = Config::read(&plain).unwrap();
        let b = Config::read(&gz).unwrap();
        assert_eq!(a, b);
        assert_eq!(b.get("SEV_GUEST"), Some(&Value::Module));

        let missing = Config::read(&dir.path().join("nope")).unwrap_err();
        assert!(matches!(missing, ReadConfigError::Io { .. }));
        assert!(missing.to_string().contains("nope"));

        let bad = dir.path().join("bad");
        std::fs::write(&bad, "CONFIG_A=y\nhello\n").unwrap();
        let err = Config::read(&bad).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
