//! The two ways a command fails before or around a run: the input is wrong
//! (exit 2, nothing applied) or the run could not be carried out (exit 3).

use shared_types::ExitCode;

/// An experiment file, flag or target that cannot be used: nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An error at `source:line:col`, under `key` when known.
    pub fn at(source: &str, line: u64, col: u64, key: Option<&str>, message: &str) -> Self {
        let key = key.map(|k| format!(" {k}")).unwrap_or_default();
        ConfigError { message: format!("{source}:{line}:{col}{key}: {message}") }
    }

    /// An error without a place in a file.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError { message: message.into() }
    }
}

/// Why a command ended without a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The run could not be carried out: exit 3.
    #[error("{0}")]
    CouldNotRun(String),
}

impl Error {
    /// The contract's exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Usage,
            Error::CouldNotRun(_) => ExitCode::CouldNotRun,
        }
    }
}
