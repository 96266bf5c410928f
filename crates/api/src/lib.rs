//! The wire types of Stockade's HTTP API, defined once and used by both the daemon
//! (`stockade-server`, which derives the OpenAPI document from them) and its clients
//! (`stockade-client`). No I/O here.
//!
//! What a client reads is strict: an event type, a status or an error kind it does not know is
//! an error naming it (`#[serde(deny_unknown_fields)]` where a newer daemon could add to a
//! message), never silently something else.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use stockade_core::{ErrorKind, ExecEvent, ExecExit, OutputStream, SpecFlags, TtySize};
use utoipa::{IntoParams, ToSchema};

// ---------------------------------------------------------------------------------------------
// Errors

/// The body of every error response: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable machine-readable kind.
    pub code: ErrorKind,
    /// One line for a human.
    pub message: String,
    /// The request field, path or parameter at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// The HTTP status an error kind answers with: whose fault it was, and what kind of fault.
pub fn http_status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Invalid | ErrorKind::File => 400,
        ErrorKind::Unauthorized => 401,
        ErrorKind::Forbidden => 403,
        ErrorKind::NotFound | ErrorKind::ExecNotFound => 404,
        ErrorKind::MethodNotAllowed => 405,
        ErrorKind::WrongState | ErrorKind::NameTaken => 409,
        ErrorKind::Unsupported | ErrorKind::CommandNotFound => 422,
        ErrorKind::Internal => 500,
        ErrorKind::Backend => 502,
        ErrorKind::Timeout => 504,
    }
}

impl ErrorBody {
    /// The body for a core error.
    pub fn of(err: &stockade_core::Error) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: err.kind(),
                message: err.to_string(),
                field: err.field().map(str::to_owned),
            },
        }
    }

    /// The error a client raises for this body: the daemon's kind, message and field.
    pub fn into_error(self) -> stockade_core::Error {
        stockade_core::Error::Remote {
            kind: self.error.code,
            message: self.error.message,
            field: self.error.field,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sandboxes

/// A new sandbox: the `create` flags, plus what only the daemon does.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    #[serde(flatten)]
    pub flags: SpecFlags,
    /// Destroy the sandbox after it has had no exec for this long, e.g. `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Code to load into the workdir with a baseline commit: `empty`, `github:OWNER/REPO[@REF]`,
    /// a git URL[@REF], or a directory on the daemon's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Filters of `GET /api/sandboxes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListSandboxes {
    /// Only sandboxes with this status (`creating`, `running`, `stopped`, `destroyed`, `lost`).
    #[serde(default)]
    pub status: Option<String>,
    /// Only sandboxes with this label, `K=V`.
    #[serde(default)]
    pub label: Option<String>,
}

/// A driver as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverInfo {
    pub name: String,
    /// What the driver is, in one line.
    pub description: String,
    /// Whether sandboxes can be made with it on this host now.
    pub available: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it reports about its backend (engine, kernel), in one line, when available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Sandboxes it holds.
    pub sandboxes: usize,
    /// Circuit breakers of the engines it talks to: endpoint, state, recent failures.
    pub circuits: Vec<stockade_core::CircuitInfo>,
}

// ---------------------------------------------------------------------------------------------
// Execs

/// A command to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartExec {
    /// Program and arguments.
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    /// Stream stdin in over the WebSocket; `/dev/null` otherwise.
    #[serde(default)]
    pub stdin: bool,
    /// Run under a pseudo-terminal of this size.
    #[serde(default)]
    pub tty: Option<TtySize>,
    /// Kill the process tree after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Secrets (by name, from `stockade secret set`) to pass as environment variables of the
    /// same name. Their values are never stored or returned.
    #[serde(default)]
    pub secrets: Vec<String>,
}

/// How output bytes are carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Exact bytes, base64.
    #[default]
    Base64,
    /// UTF-8, invalid bytes replaced.
    Text,
}

impl Encoding {
    pub fn encode(self, data: &[u8]) -> String {
        match self {
            Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(data),
            Encoding::Text => String::from_utf8_lossy(data).into_owned(),
        }
    }
}

/// One event of an exec, as the API carries it (SSE `data:` lines and WebSocket text messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ApiExecEvent {
    Started {
        seq: u64,
        pid: u32,
    },
    /// Output bytes, in the requested encoding.
    Stdout {
        seq: u64,
        data: String,
    },
    Stderr {
        seq: u64,
        data: String,
    },
    Exited {
        seq: u64,
        exit: ExecExit,
    },
}

impl ApiExecEvent {
    /// The `type` on the wire (the SSE `event:` name).
    pub fn type_name(&self) -> &'static str {
        match self {
            ApiExecEvent::Started { .. } => "started",
            ApiExecEvent::Stdout { .. } => "stdout",
            ApiExecEvent::Stderr { .. } => "stderr",
            ApiExecEvent::Exited { .. } => "exited",
        }
    }

    /// The wire form of a core event.
    pub fn from_event(event: &ExecEvent, encoding: Encoding) -> ApiExecEvent {
        match event {
            ExecEvent::Started { seq, pid } => ApiExecEvent::Started { seq: *seq, pid: *pid },
            ExecEvent::Output {
                seq,
                stream: OutputStream::Stdout,
                data,
            } => ApiExecEvent::Stdout {
                seq: *seq,
                data: encoding.encode(data),
            },
            ExecEvent::Output {
                seq,
                stream: OutputStream::Stderr,
                data,
            } => ApiExecEvent::Stderr {
                seq: *seq,
                data: encoding.encode(data),
            },
            ExecEvent::Exited { seq, exit } => ApiExecEvent::Exited {
                seq: *seq,
                exit: *exit,
            },
        }
    }

    /// The core event of a base64-encoded wire event.
    pub fn into_event(self) -> Result<ExecEvent, base64::DecodeError> {
        let decode = |data: &str| base64::engine::general_purpose::STANDARD.decode(data);
        Ok(match self {
            ApiExecEvent::Started { seq, pid } => ExecEvent::Started { seq, pid },
            ApiExecEvent::Stdout { seq, data } => ExecEvent::Output {
                seq,
                stream: OutputStream::Stdout,
                data: decode(&data)?,
            },
            ApiExecEvent::Stderr { seq, data } => ExecEvent::Output {
                seq,
                stream: OutputStream::Stderr,
                data: decode(&data)?,
            },
            ApiExecEvent::Exited { seq, exit } => ExecEvent::Exited { seq, exit },
        })
    }

    /// Parses a message from a daemon: an unknown event type or field is an error naming it.
    pub fn parse(text: &str) -> Result<ExecEvent, String> {
        let wire: ApiExecEvent = serde_json::from_str(text)
            .map_err(|e| format!("{e} in {}", text.chars().take(200).collect::<String>()))?;
        wire.into_event()
            .map_err(|e| format!("output data is not base64: {e}"))
    }
}

/// What a WebSocket client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WsInput {
    /// Bytes for stdin, base64.
    Stdin {
        data: String,
    },
    CloseStdin,
    Resize {
        rows: u16,
        cols: u16,
    },
    Kill,
}

/// A finished exec's output (`?wait=true`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecResult {
    pub id: String,
    pub stdout: String,
    pub stderr: String,
    pub exit: Option<ExecExit>,
    /// False when the exec was lost before it ended.
    pub finished: bool,
}

/// Where an exec stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    Running,
    Exited,
    /// The sandbox (or its agent) went away before the exec's end was seen.
    Lost,
}

impl ExecStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecStatus::Running => "running",
            ExecStatus::Exited => "exited",
            ExecStatus::Lost => "lost",
        }
    }
}

/// An exec as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRecord {
    pub id: String,
    pub sandbox_id: String,
    /// The request as made, with secret values left out (only their names are kept).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    pub status: ExecStatus,
    pub pid: Option<u32>,
    pub exit: Option<ExecExit>,
    /// Unix seconds.
    pub created_at: u64,
    pub finished_at: Option<u64>,
    /// The sequence number the next stored event will have.
    pub next_seq: u64,
}

// ---------------------------------------------------------------------------------------------
// Files and code

/// A rename within the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub from: String,
    pub to: String,
}

/// Where and how to push a sandbox's change.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Push {
    /// Any git URL the daemon's host can reach.
    pub remote: String,
    /// Branch to create or update.
    pub branch: String,
    #[serde(default)]
    pub message: Option<String>,
    /// A secret (by name) holding the token for an https remote; the daemon's
    /// `STOCKADE_GIT_TOKEN` when absent. The token is used by the host's git only.
    #[serde(default)]
    pub token_secret: Option<String>,
}

/// The pushed commit.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Pushed {
    pub commit: String,
}

// ---------------------------------------------------------------------------------------------
// Events

/// What a status change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Sandbox,
    Exec,
    Task,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Sandbox => "sandbox",
            ChangeKind::Exec => "exec",
            ChangeKind::Task => "task",
        }
    }
}

/// One change on `GET /api/events` (SSE, `event:` is the kind).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub kind: ChangeKind,
    pub id: String,
    /// The sandbox an exec belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// The new status (`running`, `stopped`, `destroyed`, `lost`, `exited`, ...).
    pub status: String,
    /// Unix seconds.
    pub at: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_keep_their_wire_shape_and_unknown_ones_are_named() {
        let started = ApiExecEvent::Started { seq: 0, pid: 7 };
        assert_eq!(
            serde_json::to_value(&started).unwrap(),
            serde_json::json!({"type": "started", "seq": 0, "pid": 7})
        );
        let out = ApiExecEvent::parse(r#"{"type":"stdout","seq":1,"data":"aGk="}"#).unwrap();
        assert_eq!(
            out,
            ExecEvent::Output {
                seq: 1,
                stream: OutputStream::Stdout,
                data: b"hi".to_vec()
            }
        );
        let newer = ApiExecEvent::parse(r#"{"type":"paused","seq":2}"#).unwrap_err();
        assert!(newer.contains("unknown variant `paused`"), "{newer}");
        let field = ApiExecEvent::parse(r#"{"type":"started","seq":0,"pid":1,"cpu":3}"#).unwrap_err();
        assert!(field.contains("unknown field `cpu`"), "{field}");
    }

    #[test]
    fn an_unknown_error_kind_is_named() {
        let err =
            serde_json::from_str::<ErrorBody>(r#"{"error":{"code":"rate_limited","message":"slow down"}}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("unknown variant `rate_limited`"), "{err}");
    }

    #[test]
    fn every_kind_has_a_4xx_or_5xx() {
        for kind in ErrorKind::ALL {
            assert!((400..600).contains(&http_status(kind)), "{kind}");
            let wire = serde_json::to_value(kind).unwrap();
            assert_eq!(wire, kind.as_str(), "the wire name is as_str");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Templates (the E2B-compatible API's)

/// What a sandbox made through the E2B-compatible API from this template runs on and as. `base`
/// is built in (the default driver's default image, as root); one registered under that name
/// replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct E2bTemplate {
    /// The E2B `templateID`: 1 to 64 of `a-z`, `0-9`, `.`, `_`, `-`.
    pub name: String,
    /// The driver (`stockade info` lists them); the daemon's E2B driver when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The image (container drivers); the driver's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The OCI runtime (container drivers), e.g. `runsc` for gVisor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The user processes run as (a name the image knows); `root` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Where processes start and relative paths resolve; `/root` for root, else `/home/USER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
}
