//! Structured logs through `tracing`: JSON lines when stderr is not a
//! terminal (a guest console or a log collector), human-readable otherwise.

use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing::level_filters::LevelFilter;

/// How much the agent logs; accepts Kata's `agent.log` spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    /// Everything, including per-request traces.
    Trace,
    /// Decisions and their inputs.
    Debug,
    /// Start-up, configuration and denials.
    #[default]
    Info,
    /// Things an operator should look at.
    Warn,
    /// Failures only.
    Error,
}

/// A log level name that is not one of trace/debug/info/warn/error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown log level {0:?}: use trace, debug, info, warn or error")]
pub struct LogLevelError(String);

impl FromStr for LogLevel {
    type Err = LogLevelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warn" | "warning" => Ok(LogLevel::Warn),
            // Kata (slog) also knows "critical".
            "error" | "critical" => Ok(LogLevel::Error),
            _ => Err(LogLevelError(s.to_string())),
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

impl From<LogLevel> for LevelFilter {
    fn from(l: LogLevel) -> Self {
        match l {
            LogLevel::Trace => LevelFilter::TRACE,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Error => LevelFilter::ERROR,
        }
    }
}

/// Installs the global subscriber writing to stderr. Calling it twice (e.g.
/// from tests) keeps the first one.
pub fn init(level: LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::from(level))
        .with_writer(std::io::stderr);
    let result = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().with_ansi(false).try_init()
    };
    // Already installed: keep the existing subscriber.
    drop(result);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kata_level_names() {
        assert_eq!("DEBUG".parse(), Ok(LogLevel::Debug));
        assert_eq!("warning".parse(), Ok(LogLevel::Warn));
        assert_eq!("critical".parse(), Ok(LogLevel::Error));
        assert!("loud".parse::<LogLevel>().is_err());
        assert_eq!(LogLevel::Trace.to_string(), "trace");
    }
}
