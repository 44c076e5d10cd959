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
///
/// Logs go to a close-on-exec duplicate of stderr, not to fd 2: libcontainer
/// forks the container's init from this process and points its fd 2 at the
/// container's stderr before it execs, so anything the child logs through
/// the inherited subscriber would otherwise land in the container's output.
pub fn init(level: LogLevel) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::from(level))
        .with_writer(LogWriter::new());
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

/// Where log lines go: a private close-on-exec duplicate of the agent's
/// stderr (fd 2 itself if it cannot be duplicated).
#[derive(Debug, Clone)]
struct LogWriter {
    file: Option<std::sync::Arc<std::fs::File>>,
}

impl LogWriter {
    fn new() -> Self {
        let file = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), 3)
            .ok()
            .map(|fd| std::sync::Arc::new(std::fs::File::from(fd)));
        LogWriter { file }
    }
}

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.file {
            Some(f) => (&**f).write(buf),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
