//! The one error enum drivers return. Each variant names what failed and the input that caused it.
//! Its [`ErrorKind`] is what crosses every boundary (the agent protocol, the HTTP API, the CLI's
//! exit codes), so a kind means the same thing everywhere.

/// The kind of an error, as every wire carries it (`"not_found"`, ...). One enum, so each
/// boundary's mapping (HTTP status, exit code) is an exhaustive match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    ExecNotFound,
    Invalid,
    Unsupported,
    Timeout,
    WrongState,
    NameTaken,
    CommandNotFound,
    File,
    Backend,
    /// A daemon wants a (valid) token.
    Unauthorized,
    /// A daemon does not let this caller do this (a host path, a socket peer of another uid).
    Forbidden,
    /// No such route on a daemon.
    MethodNotAllowed,
    /// A daemon failed in itself (its database).
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 14] = [
        ErrorKind::NotFound,
        ErrorKind::ExecNotFound,
        ErrorKind::Invalid,
        ErrorKind::Unsupported,
        ErrorKind::Timeout,
        ErrorKind::WrongState,
        ErrorKind::NameTaken,
        ErrorKind::CommandNotFound,
        ErrorKind::File,
        ErrorKind::Backend,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Internal,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::ExecNotFound => "exec_not_found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Timeout => "timeout",
            ErrorKind::WrongState => "wrong_state",
            ErrorKind::NameTaken => "name_taken",
            ErrorKind::CommandNotFound => "command_not_found",
            ErrorKind::File => "file",
            ErrorKind::Backend => "backend",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind a wire name means, if any.
    pub fn parse(name: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        kind: ErrorKind,
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

    /// The error's kind: what the CLI's exit codes, the API's statuses and the agent protocol
    /// carry.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::ExecNotFound(_) => ErrorKind::ExecNotFound,
            Error::InvalidSpec { .. } => ErrorKind::Invalid,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Timeout(..) => ErrorKind::Timeout,
            Error::WrongState { .. } => ErrorKind::WrongState,
            Error::NameTaken(_) => ErrorKind::NameTaken,
            Error::CommandNotFound(_) => ErrorKind::CommandNotFound,
            Error::File { .. } => ErrorKind::File,
            Error::Backend { .. } => ErrorKind::Backend,
            Error::Remote { kind, .. } => *kind,
        }
    }

    /// The field or path the error names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidSpec { field, .. } => Some(field),
            Error::File { path, .. } => Some(path),
            Error::Remote { field, .. } => field.as_deref(),
            _ => None,
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
