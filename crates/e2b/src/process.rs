//! Execs over envd's `process.Process`: the `Start` message from an [`ExecRequest`], envd's
//! events (`start`, `data`, `keepalive`, `end`) as numbered [`ExecEvent`]s, the exit from
//! envd's Go-printed status, and [`Control`] (stdin, close, resize, kill by pid). The mapping is
//! pure and tested here; the reading of a stream is [`EventReader`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use stockade_core::{Error, ExecControl, ExecEvent, ExecExit, ExecRequest, OutputStream, Result, TtySize};

use crate::connect::{self, Decoder, RpcError};
use crate::envd::{Envd, EnvdError, KEEPALIVE_SECS};

/// How long a stream may stay silent (no event, no keepalive) before it counts as lost.
pub const IDLE_LIMIT: Duration = Duration::from_secs(KEEPALIVE_SECS * 3 + 10);

/// envd's `StartRequest` for `req`, run in `cwd`: the program and its arguments as given (no
/// shell), the request's environment, stdin when asked for, a PTY of the asked size.
pub fn start_message(req: &ExecRequest, cwd: &str) -> Value {
    let (cmd, args) = req
        .argv
        .split_first()
        .map(|(c, a)| (c.as_str(), a))
        .unwrap_or(("", &[]));
    let mut envs: BTreeMap<String, String> = req.env.clone();
    if req.tty.is_some() {
        // What E2B's SDKs send for a PTY.
        envs.entry("TERM".into())
            .or_insert_with(|| "xterm-256color".into());
    }
    let mut message = json!({
        "process": { "cmd": cmd, "args": args, "envs": envs, "cwd": cwd },
        "stdin": req.stdin,
    });
    if let Some(size) = req.tty {
        message["pty"] = json!({ "size": { "cols": size.cols, "rows": size.rows } });
    }
    message
}

/// envd's `ProcessEvent.end`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndEvent {
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub exited: bool,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// Linux's signal numbers by the names Go prints (`signal: killed`).
const SIGNAL_NAMES: [(&str, i32); 31] = [
    ("hangup", 1),
    ("interrupt", 2),
    ("quit", 3),
    ("illegal instruction", 4),
    ("trace/breakpoint trap", 5),
    ("aborted", 6),
    ("bus error", 7),
    ("floating point exception", 8),
    ("killed", 9),
    ("user defined signal 1", 10),
    ("segmentation fault", 11),
    ("user defined signal 2", 12),
    ("broken pipe", 13),
    ("alarm clock", 14),
    ("terminated", 15),
    ("stack fault", 16),
    ("child exited", 17),
    ("continued", 18),
    ("stopped (signal)", 19),
    ("stopped", 20),
    ("stopped (tty input)", 21),
    ("stopped (tty output)", 22),
    ("urgent I/O condition", 23),
    ("CPU time limit exceeded", 24),
    ("file size limit exceeded", 25),
    ("virtual timer expired", 26),
    ("profiling timer expired", 27),
    ("window changed", 28),
    ("I/O possible", 29),
    ("power failure", 30),
    ("bad system call", 31),
];

/// The signal of a Go `ProcessState` string (`signal: killed`, `signal: signal 40`).
pub fn signal_of(status: &str) -> Option<i32> {
    let name = status.strip_prefix("signal: ")?.trim();
    let name = name.strip_suffix(" (core dumped)").unwrap_or(name);
    if let Some(n) = name.strip_prefix("signal ") {
        return n.trim().parse().ok();
    }
    SIGNAL_NAMES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

/// How the exec ended, from envd's end event.
pub fn exit_of(end: &EndEvent, duration_ms: u64) -> ExecExit {
    let mut exit = ExecExit {
        duration_ms,
        ..ExecExit::default()
    };
    if end.exited {
        exit.code = Some(end.exit_code);
    } else if let Some(signal) = signal_of(&end.status) {
        exit.signal = Some(signal);
    } else if let Some(code) = end
        .status
        .strip_prefix("exit status ")
        .and_then(|c| c.trim().parse().ok())
    {
        exit.code = Some(code);
    }
    // Stockade's own E2B surface says so when the OOM killer struck; E2B's envd has no such note.
    exit.oom = end.error.as_deref().is_some_and(|e| e.contains("out-of-memory"));
    exit
}

/// The exit of a stream that ended on its deadline: envd killed the process.
pub fn timed_out_exit(duration_ms: u64) -> ExecExit {
    ExecExit {
        code: None,
        signal: Some(9),
        timed_out: true,
        oom: false,
        duration_ms,
    }
}

/// What one of envd's messages means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Start { pid: u32 },
    Output { stream: OutputStream, data: Vec<u8> },
    End(EndEvent),
    Keepalive,
}

/// Parses `{"event": {...}}`.
pub fn parse_message(json: &[u8]) -> std::result::Result<Message, String> {
    #[derive(Deserialize)]
    struct Wrapper {
        #[serde(default)]
        event: Option<Event>,
    }
    #[derive(Deserialize)]
    struct Event {
        #[serde(default)]
        start: Option<StartEvent>,
        #[serde(default)]
        data: Option<DataEvent>,
        #[serde(default)]
        end: Option<EndEvent>,
    }
    #[derive(Deserialize)]
    struct StartEvent {
        #[serde(default)]
        pid: u32,
    }
    #[derive(Deserialize)]
    struct DataEvent {
        #[serde(default)]
        stdout: Option<String>,
        #[serde(default)]
        stderr: Option<String>,
        #[serde(default)]
        pty: Option<String>,
    }
    let w: Wrapper = serde_json::from_slice(json).map_err(|e| format!("an envd event: {e}"))?;
    let Some(event) = w.event else {
        return Ok(Message::Keepalive);
    };
    if let Some(s) = event.start {
        return Ok(Message::Start { pid: s.pid });
    }
    if let Some(end) = event.end {
        return Ok(Message::End(end));
    }
    if let Some(d) = event.data {
        let (stream, b64) = match (d.stdout, d.stderr, d.pty) {
            (Some(b), _, _) => (OutputStream::Stdout, b),
            (_, Some(b), _) => (OutputStream::Stderr, b),
            (_, _, Some(b)) => (OutputStream::Stdout, b),
            _ => return Ok(Message::Keepalive),
        };
        let data = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("envd output that is not base64: {e}"))?;
        return Ok(Message::Output { stream, data });
    }
    // `keepalive`, or a kind of event this driver does not know: nothing to number.
    Ok(Message::Keepalive)
}

/// The error of a `Start` (or `Connect`) that failed before its process started.
pub fn start_error(e: &RpcError, program: &str) -> Error {
    let m = e.message.to_ascii_lowercase();
    if m.contains("command not found") || m.contains("executable file not found") {
        return Error::CommandNotFound(program.to_owned());
    }
    match e.code.as_str() {
        "invalid_argument" => {
            Error::invalid(if m.contains("cwd") { "workdir" } else { "command" }, &e.message)
        }
        // Only `Connect` names a process that may be gone.
        "not_found" => Error::ExecNotFound(e.message.clone()),
        "deadline_exceeded" => Error::Timeout(Duration::ZERO, format!("the start of {program}")),
        "unauthenticated" => Error::backend("envd", format!("the access token was refused: {}", e.message)),
        "unimplemented" => Error::unsupported(crate::NAME, "this exec", e.message.clone()),
        _ => Error::backend(format!("envd process.Start of {program}"), e),
    }
}

/// A core error for a failed envd call that is not about the sandbox's state.
pub fn call_error(e: EnvdError, what: &str) -> Error {
    match e {
        EnvdError::Transport(e) => e,
        EnvdError::NotRunning(id) => Error::WrongState {
            id,
            status: "not running".into(),
            operation: what.into(),
            needed: "running".into(),
        },
        other => Error::backend(what, other),
    }
}

/// Numbers events from a first sequence number.
#[derive(Debug)]
struct Numbering {
    next: u64,
}

impl Numbering {
    fn take(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        seq
    }
}

/// Kills the process when its events are dropped before the end, for a plain (not kept) exec:
/// in Stockade an exec whose caller goes away does not run on.
struct KillOnDrop {
    control: Arc<Control>,
    armed: AtomicBool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let control = Arc::clone(&self.control);
            rt.spawn(async move {
                let _ = control.kill().await;
            });
        }
    }
}

/// Reads one envd process stream into numbered events.
pub struct EventReader {
    body: Incoming,
    decoder: Decoder,
    numbering: Numbering,
    started: Instant,
    program: String,
    pending_exit: Option<ExecExit>,
    done: bool,
    kill_on_drop: Option<KillOnDrop>,
}

impl EventReader {
    /// A reader of `body` for `program`'s process, its events numbered from `first_seq`.
    pub fn new(body: Incoming, program: &str, first_seq: u64) -> EventReader {
        EventReader {
            body,
            decoder: Decoder::default(),
            numbering: Numbering { next: first_seq },
            started: Instant::now(),
            program: program.to_owned(),
            pending_exit: None,
            done: false,
            kill_on_drop: None,
        }
    }

    /// Kills the process through `control` if the events are dropped before its end.
    pub fn kill_on_drop(&mut self, control: Arc<Control>) {
        self.kill_on_drop = Some(KillOnDrop {
            control,
            armed: AtomicBool::new(true),
        });
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(k) = &self.kill_on_drop {
            k.armed.store(false, Ordering::Relaxed);
        }
    }

    /// The next envelope, waiting for bytes as needed.
    async fn frame(&mut self) -> Result<Option<connect::Frame>> {
        loop {
            if let Some(f) = self
                .decoder
                .next_frame()
                .map_err(|e| Error::backend("envd stream", e))?
            {
                return Ok(Some(f));
            }
            let chunk = tokio::time::timeout(IDLE_LIMIT, crate::http::next_chunk(&mut self.body))
                .await
                .map_err(|_| Error::Timeout(IDLE_LIMIT, "envd's next event or keepalive".into()))?;
            match chunk {
                Some(Ok(data)) => self.decoder.push(&data),
                Some(Err(e)) => {
                    return Err(Error::backend(
                        "envd stream",
                        format!("the connection failed ({e}): the sandbox may have been killed"),
                    ))
                }
                None => return Ok(None),
            }
        }
    }

    /// Waits for the process's start: its pid, or the error envd answered instead.
    pub async fn first(&mut self) -> std::result::Result<u32, Error> {
        loop {
            let Some(frame) = self.frame().await? else {
                return Err(Error::backend(
                    "envd stream",
                    "it ended before the process started",
                ));
            };
            if frame.end {
                let error = connect::end_stream_error(&frame.json).map_err(|e| Error::backend("envd", e))?;
                return Err(match error {
                    Some(e) => start_error(&e, &self.program),
                    None => Error::backend("envd stream", "it ended before the process started"),
                });
            }
            match parse_message(&frame.json).map_err(|e| Error::backend("envd", e))? {
                Message::Start { pid } => return Ok(pid),
                Message::Keepalive => {}
                other => {
                    return Err(Error::backend(
                        "envd stream",
                        format!("{other:?} came before the process's start"),
                    ))
                }
            }
        }
    }

    /// A `Started` event numbered next, for a stream whose start was read by [`Self::first`].
    pub fn started_event(&mut self, pid: u32) -> ExecEvent {
        ExecEvent::Started {
            seq: self.numbering.take(),
            pid,
        }
    }

    /// The next event: `None` after the exit (or a failure).
    pub async fn next_event(&mut self) -> Option<Result<ExecEvent>> {
        if self.done {
            return None;
        }
        let result = self.read_event().await;
        if matches!(result, Err(_) | Ok(ExecEvent::Exited { .. })) {
            self.finish();
        }
        Some(result)
    }

    async fn read_event(&mut self) -> Result<ExecEvent> {
        loop {
            let frame = match self.frame().await? {
                Some(f) => f,
                None => {
                    // An answer cut without its end-stream frame: envd's sandbox went away.
                    return match self.pending_exit.take() {
                        Some(exit) => Ok(self.exited(exit)),
                        None => Err(Error::backend(
                            format!("exec of {}", self.program),
                            "envd's stream ended without the process's end: the sandbox was killed or lost",
                        )),
                    };
                }
            };
            if frame.end {
                let error = connect::end_stream_error(&frame.json).map_err(|e| Error::backend("envd", e))?;
                if let Some(exit) = self.pending_exit.take() {
                    return Ok(self.exited(exit));
                }
                return match error {
                    Some(e) if e.code == "deadline_exceeded" => {
                        let exit = timed_out_exit(self.elapsed_ms());
                        Ok(self.exited(exit))
                    }
                    Some(e) => Err(Error::backend(format!("exec of {}", self.program), e)),
                    None => Err(Error::backend(
                        format!("exec of {}", self.program),
                        "envd's stream ended without the process's end event",
                    )),
                };
            }
            match parse_message(&frame.json).map_err(|e| Error::backend("envd", e))? {
                Message::Output { stream, data } if self.pending_exit.is_none() => {
                    return Ok(ExecEvent::Output {
                        seq: self.numbering.take(),
                        stream,
                        data,
                    })
                }
                // The end event: its end-stream frame follows; read it so the connection can be
                // used again.
                Message::End(end) => self.pending_exit = Some(exit_of(&end, self.elapsed_ms())),
                Message::Start { .. } | Message::Keepalive | Message::Output { .. } => {}
            }
        }
    }

    fn exited(&mut self, exit: ExecExit) -> ExecEvent {
        ExecEvent::Exited {
            seq: self.numbering.take(),
            exit,
        }
    }
}

/// Steers one process by pid: stdin, close, resize, kill.
#[derive(Debug, Clone)]
pub struct Control {
    pub envd: Envd,
    pub pid: u32,
    pub tty: bool,
    pub user: Option<String>,
}

impl Control {
    async fn call(&self, method: &str, message: Value, what: &str) -> Result<()> {
        self.envd
            .unary::<Value, Value>(method, &message, self.user.as_deref())
            .await
            .map(drop)
            .map_err(|e| call_error(e, what))
    }
}

#[async_trait]
impl ExecControl for Control {
    async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        let key = if self.tty { "pty" } else { "stdin" };
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        self.call(
            "process.Process/SendInput",
            json!({ "process": { "pid": self.pid }, "input": { key: b64 } }),
            "stdin",
        )
        .await
    }
    async fn close_stdin(&self) -> Result<()> {
        self.call(
            "process.Process/CloseStdin",
            json!({ "process": { "pid": self.pid } }),
            "close stdin",
        )
        .await
    }
    async fn resize(&self, size: TtySize) -> Result<()> {
        self.call(
            "process.Process/Update",
            json!({ "process": { "pid": self.pid }, "pty": { "size": { "cols": size.cols, "rows": size.rows } } }),
            "resize",
        )
        .await
    }
    async fn kill(&self) -> Result<()> {
        let message = json!({ "process": { "pid": self.pid }, "signal": "SIGNAL_SIGKILL" });
        match self
            .envd
            .unary::<Value, Value>("process.Process/SendSignal", &message, self.user.as_deref())
            .await
        {
            Ok(_) => Ok(()),
            // Already gone: the kill's work is done.
            Err(e) if e.code() == Some("not_found") => Ok(()),
            Err(e) => Err(call_error(e, "kill")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn argv_is_cmd_and_args_without_a_shell() {
        let mut req = ExecRequest::new(["ls", "-l", "a b"]);
        req.env.insert("A".into(), "1".into());
        let m = start_message(&req, "/workspace");
        assert_eq!(
            m,
            json!({"process": {"cmd": "ls", "args": ["-l", "a b"], "envs": {"A": "1"}, "cwd": "/workspace"}, "stdin": false})
        );
        req.tty = Some(TtySize { rows: 33, cols: 101 });
        req.stdin = true;
        let m = start_message(&req, "/tmp");
        assert_eq!(m["pty"], json!({"size": {"cols": 101, "rows": 33}}));
        assert_eq!(m["process"]["envs"]["TERM"], "xterm-256color");
        assert_eq!(m["stdin"], true);
    }

    #[test]
    fn exits_read_as_go_prints_them() {
        let end = |json: &str| exit_of(&serde_json::from_str(json).unwrap(), 5);
        let e = end(r#"{"exitCode":3,"exited":true,"status":"exit status 3"}"#);
        assert_eq!((e.code, e.signal), (Some(3), None));
        // proto3 JSON leaves a zero exit code out.
        assert_eq!(end(r#"{"exited":true,"status":"exit status 0"}"#).code, Some(0));
        let e = end(r#"{"exitCode":-1,"status":"signal: killed"}"#);
        assert_eq!((e.code, e.signal), (None, Some(9)));
        assert_eq!(
            end(r#"{"exitCode":-1,"status":"signal: terminated"}"#).signal,
            Some(15)
        );
        assert_eq!(
            end(r#"{"exitCode":-1,"status":"signal: segmentation fault (core dumped)"}"#).signal,
            Some(11)
        );
        assert_eq!(
            end(r#"{"exitCode":-1,"status":"signal: signal 40"}"#).signal,
            Some(40)
        );
        assert!(
            end(r#"{"exitCode":-1,"status":"signal: killed","error":"killed by the out-of-memory killer"}"#)
                .oom
        );
        let t = timed_out_exit(7);
        assert_eq!((t.signal, t.timed_out, t.duration_ms), (Some(9), true, 7));
    }

    #[test]
    fn events_parse_into_messages() {
        assert_eq!(
            parse_message(br#"{"event":{"start":{"pid":42}}}"#).unwrap(),
            Message::Start { pid: 42 }
        );
        assert_eq!(
            parse_message(br#"{"event":{"data":{"stderr":"aGk="}}}"#).unwrap(),
            Message::Output {
                stream: OutputStream::Stderr,
                data: b"hi".to_vec()
            }
        );
        assert_eq!(
            parse_message(br#"{"event":{"data":{"pty":"aGk="}}}"#).unwrap(),
            Message::Output {
                stream: OutputStream::Stdout,
                data: b"hi".to_vec()
            }
        );
        assert_eq!(
            parse_message(br#"{"event":{"keepalive":{}}}"#).unwrap(),
            Message::Keepalive
        );
        assert!(matches!(
            parse_message(br#"{"event":{"end":{"exited":true}}}"#).unwrap(),
            Message::End(EndEvent { exited: true, .. })
        ));
        assert!(parse_message(br#"{"event":{"data":{"stdout":"***"}}}"#).is_err());
    }

    #[test]
    fn start_failures_become_core_errors() {
        let e = |code: &str, message: &str| RpcError {
            code: code.into(),
            message: message.into(),
        };
        let err = start_error(
            &e("invalid_argument", "command not found in sandbox: nope"),
            "nope",
        );
        assert_eq!(err.kind(), stockade_core::ErrorKind::CommandNotFound);
        let err = start_error(
            &e(
                "internal",
                "error starting process: exec: \"nope\": executable file not found in $PATH",
            ),
            "nope",
        );
        assert_eq!(err.to_string(), "command not found in sandbox: nope");
        let err = start_error(&e("invalid_argument", "cwd /no/such: no such directory"), "true");
        assert_eq!(
            err.to_string(),
            "invalid workdir: cwd /no/such: no such directory"
        );
    }
}
