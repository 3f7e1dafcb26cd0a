//! Logging setup, the same for every subcommand: human text on stderr, or JSON lines (one object
//! per event) for collectors.
//!
//! The level comes from the old service's variables, so a deployment's settings keep their
//! meaning: `LOG_LEVEL` (Python's names: DEBUG, INFO, WARNING, ERROR, CRITICAL, any case; Rust's
//! trace/warn too) and `LOG_LEVEL_CONSOLE`, the old console handler's level. As in Python's
//! logging, a line must pass both, so the stricter of the two applies. `RUST_LOG`, when set,
//! wins over both (per-module filters for debugging).

use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// A log level, named as Python's logging or Rust's tracing names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Everything (`TRACE`, Python's `NOTSET`).
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARNING` / `WARN`.
    Warn,
    /// `ERROR`, and Python's `CRITICAL`/`FATAL` (tracing has nothing above error).
    Error,
}

impl FromStr for LogLevel {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "trace" | "notset" => Ok(LogLevel::Trace),
            "debug" => Ok(LogLevel::Debug),
            "info" => Ok(LogLevel::Info),
            "warning" | "warn" => Ok(LogLevel::Warn),
            "error" | "critical" | "fatal" => Ok(LogLevel::Error),
            other => Err(format!(
                "unknown log level {other:?}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )),
        }
    }
}

impl LogLevel {
    fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    /// The level that applies: the stricter of `LOG_LEVEL` and `LOG_LEVEL_CONSOLE`.
    pub fn effective(level: LogLevel, console: Option<LogLevel>) -> LogLevel {
        console.map_or(level, |console| level.max(console))
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set.
pub fn init(format: LogFormat, level: LogLevel) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.directive()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_and_rust_level_names() {
        for (name, level) in [
            ("WARNING", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("Warn", LogLevel::Warn),
            ("CRITICAL", LogLevel::Error),
            ("critical", LogLevel::Error),
            ("DEBUG", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("NOTSET", LogLevel::Trace),
        ] {
            assert_eq!(name.parse::<LogLevel>(), Ok(level), "{name}");
        }
        assert!("verbose".parse::<LogLevel>().is_err());
        assert_eq!(
            LogLevel::effective(LogLevel::Debug, Some(LogLevel::Warn)),
            LogLevel::Warn
        );
        assert_eq!(
            LogLevel::effective(LogLevel::Error, Some(LogLevel::Info)),
            LogLevel::Error
        );
        assert_eq!(LogLevel::effective(LogLevel::Info, None), LogLevel::Info);
    }
}
