//! Why an operation could not be carried out, mapped to the contract's exit codes.

use shared_types::ExitCode;

/// Every failure of the agent. Messages say what failed, where, and what to
/// try; none of them carries a secret (S3 keys, passwords in URLs).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad flags, repository URL or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The repository could not be reached or used (exit 3).
    #[error("repository {location}: {message}")]
    Repository {
        /// The repository, shown without credentials.
        location: String,
        /// What failed and what to try.
        message: String,
    },
    /// A database, program or file the run needs was not usable (exit 3).
    #[error("{0}")]
    CouldNotRun(String),
    /// A stored object does not match its manifest (exit 1 when reported as a check).
    #[error("{0}")]
    Integrity(String),
    /// An object that should exist does not.
    #[error("not found: {0}")]
    NotFound(String),
}

impl AgentError {
    /// The exit code of the contract.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AgentError::Usage(_) => ExitCode::Usage,
            AgentError::Integrity(_) => ExitCode::CriterionNotMet,
            AgentError::Repository { .. }
            | AgentError::CouldNotRun(_)
            | AgentError::NotFound(_) => ExitCode::CouldNotRun,
        }
    }

    /// A local I/O failure on `what`.
    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> AgentError {
        AgentError::CouldNotRun(format!("{what}: {err}"))
    }
}

/// Result of the agent's operations.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;
