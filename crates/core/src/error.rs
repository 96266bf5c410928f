//! The one error enum drivers return. Each variant names what failed and the input that caused it.

/// Errors any driver can return.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No sandbox (or exec) with this id or name.
    #[error("no such sandbox: {0}")]
    NotFound(String),
    /// No exec with this id in the sandbox (never started, or its output is no longer kept).
    #[error("no such exec: {0}")]
    ExecNotFound(String),
    /// A field of a spec or request is wrong; `field` names it the way the user wrote it.
    #[error("invalid {field}: {reason}")]
    InvalidSpec { field: String, reason: String },
    /// The driver cannot do this at all, or not on this host.
    #[error("{feature} is not supported by the {driver} driver: {reason}")]
    Unsupported {
        driver: String,
        feature: String,
        reason: String,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(std::time::Duration, String),
    /// The sandbox exists but is not in a state that allows the operation.
    #[error("sandbox {id} is {status}; {operation} needs it {needed}")]
    WrongState {
        id: String,
        status: String,
        operation: String,
        needed: String,
    },
    /// A sandbox name is already taken.
    #[error("a sandbox named {0:?} already exists")]
    NameTaken(String),
    /// The command to run was not found or not executable inside the sandbox.
    #[error("command not found in sandbox: {0}")]
    CommandNotFound(String),
    /// A file operation failed inside the sandbox (path named).
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    /// The backend (kernel, supervisor, agent, engine) failed.
    #[error("{context}: {reason}")]
    Backend { context: String, reason: String },
    /// An error a daemon answered with: its kind (one of [`Error::kind`]'s), its message as the
    /// daemon printed it, and the field or path it named. Shown exactly as a local error would be.
    #[error("{message}")]
    Remote {
        kind: String,
        message: String,
        field: Option<String>,
    },
}

impl Error {
    /// Shorthand for [`Error::InvalidSpec`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Backend`].
    pub fn backend(context: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Backend {
            context: context.into(),
            reason: reason.to_string(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(driver: &str, feature: &str, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            driver: driver.into(),
            feature: feature.into(),
            reason: reason.into(),
        }
    }

    /// A stable machine-readable kind, used by the CLI's exit codes and the JSON error output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::ExecNotFound(_) => "exec_not_found",
            Error::InvalidSpec { .. } => "invalid",
            Error::Unsupported { .. } => "unsupported",
            Error::Timeout(..) => "timeout",
            Error::WrongState { .. } => "wrong_state",
            Error::NameTaken(_) => "name_taken",
            Error::CommandNotFound(_) => "command_not_found",
            Error::File { .. } => "file",
            Error::Backend { .. } => "backend",
            Error::Remote { kind, .. } => match kind.as_str() {
                "not_found" => "not_found",
                "exec_not_found" => "exec_not_found",
                "invalid" => "invalid",
                "unsupported" => "unsupported",
                "timeout" => "timeout",
                "wrong_state" => "wrong_state",
                "name_taken" => "name_taken",
                "command_not_found" => "command_not_found",
                "file" => "file",
                _ => "backend",
            },
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
