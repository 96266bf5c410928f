//! Running a command in a sandbox: the request, and the numbered events that come back.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Terminal size for PTY mode.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

impl Default for TtySize {
    fn default() -> Self {
        TtySize { rows: 24, cols: 80 }
    }
}

/// One command to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Extra environment on top of the sandbox's.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; the sandbox's workdir when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User to run as (`name`, `uid` or `uid:gid`); the sandbox's user when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether stdin is streamed in; `/dev/null` otherwise.
    #[serde(default)]
    pub stdin: bool,
    /// Run under a pseudo-terminal of this size (stdout and stderr are then one stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySize>,
    /// Kill the whole process tree after this long.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_millis")]
    pub timeout: Option<Duration>,
}

impl ExecRequest {
    /// A request for `argv` with everything else default.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Checks the request; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let Some(program) = self.argv.first() else {
            return Err(Error::invalid("command", "no command given"));
        };
        if program.is_empty() {
            return Err(Error::invalid("command", "the program name is empty"));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid("command", "arguments must not contain NUL bytes"));
        }
        for (k, v) in &self.env {
            crate::sandbox::validate_env_key(k)?;
            if v.contains('\0') {
                return Err(Error::invalid("env", format!("value of {k} contains a NUL byte")));
            }
        }
        if let Some(cwd) = &self.cwd {
            if !cwd.starts_with('/') {
                return Err(Error::invalid(
                    "workdir",
                    format!("{cwd:?} must be an absolute path"),
                ));
            }
        }
        if let Some(tty) = self.tty {
            if tty.rows == 0 || tty.cols == 0 {
                return Err(Error::invalid("tty", "rows and cols must be positive"));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid("timeout", "must be positive"));
        }
        Ok(())
    }
}

/// Which output stream a chunk came from.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How an exec ended.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecExit {
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// Killed because the request's timeout passed.
    pub timed_out: bool,
    /// Killed by the out-of-memory killer.
    pub oom: bool,
    /// Wall time from start to exit, in milliseconds.
    pub duration_ms: u64,
}

impl ExecExit {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            (None, None) => 255,
        }
    }

    /// Exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// What an exec produces, in order. `seq` starts at 0 with `Started` and rises by one per event,
/// so a consumer can tell a gap or a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExecEvent {
    Started {
        seq: u64,
        /// Pid of the process inside the sandbox's pid namespace.
        pid: u32,
    },
    Output {
        seq: u64,
        stream: OutputStream,
        /// Raw bytes (JSON carries them as an array of numbers; the wire protocol carries them raw).
        data: Vec<u8>,
    },
    Exited {
        seq: u64,
        #[serde(flatten)]
        exit: ExecExit,
    },
}

impl ExecEvent {
    /// The event's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            ExecEvent::Started { seq, .. }
            | ExecEvent::Output { seq, .. }
            | ExecEvent::Exited { seq, .. } => *seq,
        }
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_command_is_rejected() {
        let err = ExecRequest::default().validate().unwrap_err();
        assert_eq!(err.to_string(), "invalid command: no command given");
    }

    #[test]
    fn shell_code_follows_convention() {
        assert_eq!(
            ExecExit {
                code: Some(3),
                ..Default::default()
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ExecExit {
                signal: Some(9),
                ..Default::default()
            }
            .shell_code(),
            137
        );
    }

    #[test]
    fn event_json_is_tagged() {
        let e = ExecEvent::Exited {
            seq: 4,
            exit: ExecExit {
                code: Some(0),
                ..Default::default()
            },
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "exited");
        assert_eq!(v["code"], 0);
        assert_eq!(v["seq"], 4);
    }
}
