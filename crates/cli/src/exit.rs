//! Exit codes, documented in README.md. A command's own exit code passes through `exec` and `run`.

use stockade_core::{Error, ErrorKind};

/// Bad input: a flag value, a spec field, a path.
pub const INVALID: i32 = 2;
/// No such sandbox.
pub const NOT_FOUND: i32 = 3;
/// The host or driver cannot do this (no user namespaces, no cgroups, ...), or the daemon does
/// not allow it (no or a bad token, a host path, another uid on its socket).
pub const UNSUPPORTED: i32 = 4;
/// The sandbox is in the wrong state (e.g. exec in a stopped sandbox), or a name is taken.
pub const WRONG_STATE: i32 = 5;
/// The exec's timeout passed and its process tree was killed.
pub const TIMEOUT: i32 = 124;
/// The sandbox or its backend failed.
pub const BACKEND: i32 = 125;
/// The command exists but cannot be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found in the sandbox.
pub const COMMAND_NOT_FOUND: i32 = 127;

/// The exit code for an error.
pub fn code_for(err: &Error) -> i32 {
    // A program that exists but cannot run: the shell's 126.
    if err.kind() == ErrorKind::Invalid && err.field() == Some("command") {
        return CANNOT_EXECUTE;
    }
    code_for_kind(err.kind())
}

/// The exit code for each kind (README's table).
pub fn code_for_kind(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::Invalid | ErrorKind::File | ErrorKind::MethodNotAllowed => INVALID,
        ErrorKind::NotFound | ErrorKind::ExecNotFound => NOT_FOUND,
        ErrorKind::Unsupported | ErrorKind::Forbidden | ErrorKind::Unauthorized => UNSUPPORTED,
        ErrorKind::WrongState | ErrorKind::NameTaken => WRONG_STATE,
        ErrorKind::Timeout => TIMEOUT,
        ErrorKind::CommandNotFound => COMMAND_NOT_FOUND,
        ErrorKind::Backend | ErrorKind::Internal => BACKEND,
    }
}
