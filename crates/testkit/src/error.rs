//! The one error type of testkit: what failed, and what to try.

use std::path::PathBuf;
use std::time::Duration;

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything testkit can fail at. Every message names the thing that failed
/// and ends with what to try, because it is read in a failing test's output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the tests need is not installed.
    #[error("{name} not found {searched}: {hint}")]
    BinaryNotFound {
        /// Program name, e.g. `prometheus`.
        name: String,
        /// Where it was looked for, e.g. `on PATH` or `at /x/y`.
        searched: String,
        /// What to do about it.
        hint: String,
    },

    /// A file-system or process-spawning operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path involved.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A child process (server, tool) exited or answered unsuccessfully.
    #[error(
        "{what} ({}): {hint}{}",
        describe_exit(*.exit_code),
        log_block(.log_path.as_deref(), .log_tail)
    )]
    ProcessFailed {
        /// What was being run.
        what: String,
        /// Its exit code, `None` if it was killed by a signal or still runs.
        exit_code: Option<i32>,
        /// The last lines of its output or log, to read without digging.
        log_tail: String,
        /// Where the full log is, when there is one.
        log_path: Option<PathBuf>,
        /// What to try.
        hint: String,
    },

    /// Something did not become ready in time.
    #[error("timed out after {after:?} waiting for {what}: {hint}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
        /// What to try, often with the last observed state.
        hint: String,
    },

    /// A PostgreSQL connection or statement failed.
    #[error("{what}: {source}")]
    Postgres {
        /// What was being done, with the server address.
        what: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// An HTTP request failed at the transport level.
    #[error("{what}: {source}")]
    Http {
        /// What was being requested.
        what: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// A service answered, but not with what was expected.
    #[error("{what}: {detail}")]
    Unexpected {
        /// What was being done.
        what: String,
        /// What came back instead, and what to try.
        detail: String,
    },
}

impl Error {
    /// The exit code carried by [`Error::ProcessFailed`], if any.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Error::ProcessFailed { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }

    pub(crate) fn pg(what: impl Into<String>, source: tokio_postgres::Error) -> Self {
        Error::Postgres { what: what.into(), source }
    }
}

fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit code {code}"),
        None => "no exit code".to_owned(),
    }
}

fn log_block(path: Option<&std::path::Path>, tail: &str) -> String {
    let mut out = String::new();
    if let Some(path) = path {
        out.push_str(&format!("\nfull log: {}", path.display()));
    }
    if !tail.trim().is_empty() {
        out.push_str("\n--- last lines ---\n");
        out.push_str(tail.trim_end());
    }
    out
}

/// The last `lines` lines of a log file, or a note saying why there are none.
pub(crate) fn tail_of_file(path: &std::path::Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => tail_of_text(&String::from_utf8_lossy(&bytes), lines),
        Err(err) => format!("(could not read {}: {err})", path.display()),
    }
}

/// The last `lines` lines of `text`.
pub(crate) fn tail_of_text(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_failures_show_code_hint_log_and_tail() {
        let err = Error::ProcessFailed {
            what: "pg_ctl start of the primary on 127.0.0.1:5999".to_owned(),
            exit_code: Some(1),
            log_tail: "a\nFATAL: could not bind\n".to_owned(),
            log_path: Some(PathBuf::from("/tmp/x/primary.log")),
            hint: "read the server log".to_owned(),
        };
        assert_eq!(
            err.to_string(),
            "pg_ctl start of the primary on 127.0.0.1:5999 (exit code 1): read the server log\n\
             full log: /tmp/x/primary.log\n\
             --- last lines ---\n\
             a\n\
             FATAL: could not bind"
        );
        assert_eq!(err.exit_code(), Some(1));
    }

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(tail_of_text("1\n2\n3\n", 2), "2\n3");
        assert_eq!(tail_of_text("", 2), "");
    }
}
