//! Exit codes, documented in README.md. A command's own exit code passes through `exec` and `run`.

use stockade_core::Error;

/// Bad input: a flag value, a spec field, a path.
pub const INVALID: i32 = 2;
/// No such sandbox.
pub const NOT_FOUND: i32 = 3;
/// The host or driver cannot do this (no user namespaces, no cgroups, ...).
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
    match err {
        Error::InvalidSpec { field, .. } if field == "command" => CANNOT_EXECUTE,
        Error::InvalidSpec { .. } => INVALID,
        Error::NotFound(_) | Error::ExecNotFound(_) => NOT_FOUND,
        Error::Unsupported { .. } => UNSUPPORTED,
        Error::WrongState { .. } | Error::NameTaken(_) => WRONG_STATE,
        Error::Timeout(..) => TIMEOUT,
        Error::CommandNotFound(_) => COMMAND_NOT_FOUND,
        Error::File { .. } => INVALID,
        Error::Backend { .. } => BACKEND,
        Error::Remote { field, .. } => match err.kind() {
            "invalid" if field.as_deref() == Some("command") => CANNOT_EXECUTE,
            "invalid" | "file" => INVALID,
            "not_found" | "exec_not_found" => NOT_FOUND,
            "unsupported" | "forbidden" => UNSUPPORTED,
            "wrong_state" | "name_taken" => WRONG_STATE,
            "timeout" => TIMEOUT,
            "command_not_found" => COMMAND_NOT_FOUND,
            _ => BACKEND,
        },
    }
}
