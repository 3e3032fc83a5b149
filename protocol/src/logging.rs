//! Log setup shared by the agent and the server: the systemd journal when
//! its socket answers, stderr otherwise. Key-value pairs given to the `log`
//! macros become journal fields (CLIENT_ID=…) or `key=value` on stderr.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::str::FromStr;

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogTarget {
    /// The journal if its socket answers, else stderr.
    #[default]
    Auto,
    /// Always the journal (fails to set up if it is absent).
    Journal,
    /// Always stderr.
    Stderr,
}

impl FromStr for LogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "journal" => Ok(Self::Journal),
            "stderr" => Ok(Self::Stderr),
            other => Err(format!(
                "unknown log target {other:?}; use auto, journal or stderr"
            )),
        }
    }
}

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// True when a datagram connect to the journal socket succeeds.
pub fn journal_available() -> bool {
    UnixDatagram::unbound()
        .and_then(|s| s.connect(JOURNAL_SOCKET))
        .is_ok()
}

/// Installs the global logger. Returns the target actually chosen.
pub fn init(target: LogTarget, level: LevelFilter, identifier: &str) -> Result<LogTarget, String> {
    let chosen = match target {
        LogTarget::Auto if journal_available() => LogTarget::Journal,
        LogTarget::Auto => LogTarget::Stderr,
        LogTarget::Journal if !journal_available() => {
            return Err(format!(
                "logging to the journal was requested, but {JOURNAL_SOCKET} does not answer; \
                 set the log target to auto or stderr"
            ));
        }
        other => other,
    };
    let result = match chosen {
        LogTarget::Journal => systemd_journal_logger::JournalLog::new()
            .map_err(|e| e.to_string())?
            .with_syslog_identifier(identifier.to_string())
            .install()
            .map_err(|e| e.to_string()),
        _ => log::set_boxed_logger(Box::new(StderrLogger {
            identifier: identifier.to_string(),
        }))
        .map_err(|e| e.to_string()),
    };
    result?;
    log::set_max_level(level);
    Ok(chosen)
}

/// A plain stderr logger: `LEVEL identifier: message key=value …`.
struct StderrLogger {
    identifier: String,
}

struct KvWriter<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for KvWriter<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        use std::fmt::Write as _;
        let v = value.to_string();
        if v.is_empty() || v.contains(char::is_whitespace) || v.contains('"') {
            let _ = write!(self.0, " {key}={v:?}");
        } else {
            let _ = write!(self.0, " {key}={v}");
        }
        Ok(())
    }
}

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let mut line = format!(
            "{} {level} {}: {}",
            chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            self.identifier,
            record.args()
        );
        let _ = record.key_values().visit(&mut KvWriter(&mut line));
        line.push('\n');
        // One write per record, so lines from threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!("auto".parse::<LogTarget>().unwrap(), LogTarget::Auto);
        assert_eq!("stderr".parse::<LogTarget>().unwrap(), LogTarget::Stderr);
        assert!(
            "syslog"
                .parse::<LogTarget>()
                .unwrap_err()
                .contains("auto, journal or stderr")
        );
    }
}
