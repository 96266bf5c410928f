//! envd's `process.Process` service over Stockade's kept execs: a process the SDK starts runs
//! on when the client hangs up or the daemon restarts, and is found again by its pid (the real
//! pid inside the sandbox, stored with the exec).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use stockade_api::{Encoding, ExecRecord, ExecStatus, StartExec};
use stockade_core::{Driver, ExecEvent, ExecExit, OutputStream, TtySize};

use super::connect::{self, Code, RpcError};
use super::envd::Envd;
use crate::api::execs::{Start, StartExecQuery, Started};
use crate::AppState;

/// How often an idle stream carries a keepalive when the client names no interval.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);

pub async fn call(state: &Arc<AppState>, envd: Envd, method: String, req: Request) -> Response {
    let headers = req.headers().clone();
    if method == "StreamInput" {
        return stream_input(state, &envd, req).await;
    }
    let body = match axum::body::to_bytes(req.into_body(), crate::MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return connect::unary_reply::<()>(Err(RpcError::new(Code::InvalidArgument, e.to_string())))
        }
    };
    match method.as_str() {
        "Start" => match connect::stream_request::<StartRequest>(&body) {
            Ok(r) => start(state, &envd, &headers, r).await,
            Err(e) => connect::stream_error(e),
        },
        "Connect" => match connect::stream_request::<ConnectRequest>(&body) {
            Ok(r) => attach(state, &envd, &headers, r).await,
            Err(e) => connect::stream_error(e),
        },
        "List" => connect::unary_reply(list(state, &envd).await),
        "SendInput" => connect::unary_reply(
            async {
                let r: SendInputRequest = connect::unary_request(&body)?;
                let control = control(state, &envd, &r.process).await?;
                control.write_stdin(&r.input.bytes()?).await?;
                Ok(json!({}))
            }
            .await,
        ),
        "CloseStdin" => connect::unary_reply(
            async {
                let r: ProcessOnly = connect::unary_request(&body)?;
                control(state, &envd, &r.process).await?.close_stdin().await?;
                Ok(json!({}))
            }
            .await,
        ),
        "SendSignal" => connect::unary_reply(
            async {
                let r: SendSignalRequest = connect::unary_request(&body)?;
                // SIGKILL and SIGTERM alike (the request's `signal`) end the process's whole
                // tree: Stockade's execs have one way to be stopped.
                control(state, &envd, &r.process).await?.kill().await?;
                Ok(json!({}))
            }
            .await,
        ),
        "Update" => connect::unary_reply(
            async {
                let r: UpdateRequest = connect::unary_request(&body)?;
                let control = control(state, &envd, &r.process).await?;
                if let Some(pty) = r.pty {
                    control.resize(pty.size.checked()?).await?;
                }
                Ok(json!({}))
            }
            .await,
        ),
        other => connect::unary_reply::<()>(Err(RpcError::new(
            Code::Unimplemented,
            format!("process.Process has no method {other}"),
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Messages (proto3 JSON: lowerCamelCase, snake_case accepted, unknown fields ignored)

#[derive(Debug, Deserialize)]
struct StartRequest {
    process: ProcessConfig,
    #[serde(default)]
    pty: Option<Pty>,
    #[serde(default)]
    stdin: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ProcessConfig {
    cmd: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    envs: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Pty {
    size: PtySize,
}

#[derive(Debug, Deserialize)]
struct PtySize {
    #[serde(default)]
    cols: u16,
    #[serde(default)]
    rows: u16,
}

impl PtySize {
    fn checked(&self) -> Result<TtySize, RpcError> {
        if self.cols == 0 || self.rows == 0 {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "pty.size needs cols and rows above 0",
            ));
        }
        Ok(TtySize {
            rows: self.rows,
            cols: self.cols,
        })
    }
}

/// `{"pid": N}` (or `{"tag"}`, which Stockade's processes do not have).
#[derive(Debug, Deserialize)]
struct Selector {
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConnectRequest {
    process: Selector,
}

#[derive(Debug, Deserialize)]
struct ProcessOnly {
    process: Selector,
}

#[derive(Debug, Deserialize)]
struct SendInputRequest {
    process: Selector,
    input: Input,
}

#[derive(Debug, Deserialize)]
struct Input {
    #[serde(default)]
    stdin: Option<String>,
    #[serde(default)]
    pty: Option<String>,
}

impl Input {
    fn bytes(&self) -> Result<Vec<u8>, RpcError> {
        let b64 = self.stdin.as_deref().or(self.pty.as_deref()).unwrap_or("");
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| RpcError::new(Code::InvalidArgument, format!("input: not base64: {e}")))
    }
}

#[derive(Debug, Deserialize)]
struct SendSignalRequest {
    process: Selector,
}

#[derive(Debug, Deserialize)]
struct UpdateRequest {
    process: Selector,
    #[serde(default)]
    pty: Option<Pty>,
}

// ---------------------------------------------------------------------------------------------
// Calls

async fn start(state: &Arc<AppState>, envd: &Envd, headers: &HeaderMap, r: StartRequest) -> Response {
    let tty = match r.pty.as_ref().map(|p| p.size.checked()).transpose() {
        Ok(t) => t,
        Err(e) => return connect::stream_error(e),
    };
    let home = envd.home();
    let cwd = envd.resolve(
        r.process
            .cwd
            .as_deref()
            .filter(|c| !c.is_empty())
            .unwrap_or(&home),
    );
    if r.process.cwd.is_some() {
        match state.driver.stat(&envd.info.id, &cwd).await {
            Ok(stat) if stat.kind == stockade_core::FileKind::Dir => {}
            Ok(_) => {
                return connect::stream_error(RpcError::new(
                    Code::InvalidArgument,
                    format!("cwd {cwd}: not a directory"),
                ))
            }
            Err(_) => {
                return connect::stream_error(RpcError::new(
                    Code::InvalidArgument,
                    format!("cwd {cwd}: no such directory"),
                ))
            }
        }
    }
    // envd's environment: the user's, the sandbox's (the driver adds those), the request's.
    let mut env = BTreeMap::from([
        ("HOME".to_owned(), home),
        ("USER".to_owned(), envd.user.clone()),
        ("LOGNAME".to_owned(), envd.user.clone()),
    ]);
    env.extend(r.process.envs);
    let mut argv = vec![r.process.cmd];
    argv.extend(r.process.args);
    let body = StartExec {
        argv,
        env,
        cwd: Some(cwd),
        user: Some(envd.user.clone()),
        // Absent means open, as in envd; a PTY always takes input.
        stdin: r.stdin.unwrap_or(true) || tty.is_some(),
        tty,
        timeout_ms: connect::timeout(headers).map(|t| t.as_millis() as u64),
        ..StartExec::default()
    };
    let query = StartExecQuery {
        wait: false,
        encoding: Encoding::Base64,
    };
    let started = match Start::parse(envd.info.id.to_string(), query, body) {
        Ok(start) => start.run(state).await,
        Err(e) => Err(e),
    };
    let record = match started {
        Ok(Started::Running(record)) => record,
        Ok(Started::Finished(_)) => {
            return connect::stream_error(RpcError::new(Code::Internal, "the exec was waited for"))
        }
        Err(e) => return connect::stream_error(e.into()),
    };
    let events = state.execs.subscribe(&record.id, 0);
    stream_events(events, None, tty.is_some(), keepalive(headers))
}

async fn attach(state: &Arc<AppState>, envd: &Envd, headers: &HeaderMap, r: ConnectRequest) -> Response {
    let exec = match find(state, envd, &r.process).await {
        Ok(exec) => exec,
        Err(e) => return connect::stream_error(e),
    };
    let tty = exec.request.get("tty").is_some_and(|t| !t.is_null());
    // Live output only, as envd gives it: from the next event on, after a start event.
    let events = state.execs.subscribe(&exec.id, exec.next_seq);
    stream_events(events, exec.pid, tty, keepalive(headers))
}

pub(super) fn keepalive(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// The exec's events as envd's `{"event": ...}` messages: start, data, keepalives when idle,
/// end; then the end-stream frame. `started` is sent first when the stream joins late. An exec
/// lost with its sandbox aborts the response (no end frame), as envd's does when killed.
fn stream_events(
    mut events: tokio::sync::mpsc::Receiver<ExecEvent>,
    started: Option<u32>,
    tty: bool,
    keepalive: Duration,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        if let Some(pid) = started {
            if tx
                .send(Ok(connect::message(&json!({"event": {"start": {"pid": pid}}}))))
                .await
                .is_err()
            {
                return;
            }
        }
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                () = tokio::time::sleep(keepalive) => {
                    if tx.send(Ok(connect::message(&json!({"event": {"keepalive": {}}})))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Some(event) = event else {
                let _ = tx
                    .send(Err(std::io::Error::other(
                        "the process was lost with its sandbox",
                    )))
                    .await;
                return;
            };
            let frame = match event {
                ExecEvent::Started { pid, .. } => json!({"event": {"start": {"pid": pid}}}),
                ExecEvent::Output { stream, data, .. } => {
                    let key = match (tty, stream) {
                        (true, _) => "pty",
                        (false, OutputStream::Stdout) => "stdout",
                        (false, OutputStream::Stderr) => "stderr",
                    };
                    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
                    json!({"event": {"data": {key: b64}}})
                }
                ExecEvent::Exited { exit, .. } => {
                    let frames = if exit.timed_out {
                        // envd's request deadline: the SDK raises its timeout error.
                        vec![connect::end_stream(Some(&RpcError::new(
                            Code::DeadlineExceeded,
                            format!(
                                "the command was killed when its timeout passed ({} ms)",
                                exit.duration_ms
                            ),
                        )))]
                    } else {
                        vec![connect::message(&end_event(&exit)), connect::end_stream(None)]
                    };
                    for f in frames {
                        if tx.send(Ok(f)).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
            };
            if tx.send(Ok(connect::message(&frame))).await.is_err() {
                return;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    connect::stream_reply(body)
}

/// envd's end event: Go's `ProcessState` as it prints it; a failure also carries it as `error`
/// (envd's `cmd.Wait()` error), which the SDKs put in their exit exception.
fn end_event(exit: &ExecExit) -> Value {
    let (code, exited, status) = match (exit.code, exit.signal) {
        (Some(code), _) => (code, true, format!("exit status {code}")),
        (None, Some(signal)) => {
            let name = match signal {
                1 => "hangup".to_owned(),
                2 => "interrupt".to_owned(),
                3 => "quit".to_owned(),
                6 => "aborted".to_owned(),
                9 => "killed".to_owned(),
                13 => "broken pipe".to_owned(),
                15 => "terminated".to_owned(),
                n => format!("signal {n}"),
            };
            (-1, false, format!("signal: {name}"))
        }
        (None, None) => (-1, false, "unknown".to_owned()),
    };
    let mut end = json!({"exitCode": code, "exited": exited, "status": status});
    if code != 0 {
        end["error"] = json!(if exit.oom {
            format!("{status} (by the out-of-memory killer)")
        } else {
            status
        });
    }
    json!({"event": {"end": end}})
}

/// The running exec a selector names in this sandbox.
async fn find(state: &AppState, envd: &Envd, selector: &Selector) -> Result<ExecRecord, RpcError> {
    let pid = match (selector.pid, &selector.tag) {
        (Some(pid), _) => pid,
        (None, Some(tag)) => {
            return Err(RpcError::new(
                Code::NotFound,
                format!("no process tagged {tag:?}"),
            ));
        }
        (None, None) => return Err(RpcError::new(Code::InvalidArgument, "process: give a pid")),
    };
    let execs = state
        .db
        .execs(Some(envd.info.id.as_str()))
        .await
        .map_err(|e| RpcError::new(Code::Internal, e.to_string()))?;
    execs
        .into_iter()
        .rev()
        .find(|e| e.status == ExecStatus::Running && e.pid == Some(pid))
        .ok_or_else(|| RpcError::new(Code::NotFound, format!("process with pid {pid} not found")))
}

async fn control(
    state: &AppState,
    envd: &Envd,
    selector: &Selector,
) -> Result<Arc<dyn stockade_core::ExecControl>, RpcError> {
    let exec = find(state, envd, selector).await?;
    state.execs.control(&exec.id).ok_or_else(|| {
        RpcError::new(
            Code::NotFound,
            format!("process with pid {} not found", exec.pid.unwrap_or(0)),
        )
    })
}

async fn list(state: &AppState, envd: &Envd) -> Result<Value, RpcError> {
    let execs = state
        .db
        .execs(Some(envd.info.id.as_str()))
        .await
        .map_err(|e| RpcError::new(Code::Internal, e.to_string()))?;
    let processes: Vec<Value> = execs
        .iter()
        .filter(|e| e.status == ExecStatus::Running)
        .filter_map(|e| {
            let pid = e.pid?;
            let argv: Vec<String> = serde_json::from_value(e.request["argv"].clone()).unwrap_or_default();
            let (cmd, args) = argv.split_first()?;
            let mut config = json!({"cmd": cmd, "args": args, "envs": e.request["env"].clone()});
            if let Some(cwd) = e.request["cwd"].as_str() {
                config["cwd"] = json!(cwd);
            }
            Some(json!({"pid": pid, "config": config}))
        })
        .collect();
    Ok(json!({ "processes": processes }))
}

/// Client streaming: a start message naming the process, then input messages as they come.
async fn stream_input(state: &Arc<AppState>, envd: &Envd, req: Request) -> Response {
    #[derive(Debug, Deserialize)]
    struct Message {
        #[serde(default)]
        start: Option<ProcessOnly>,
        #[serde(default)]
        data: Option<DataMessage>,
    }
    #[derive(Debug, Deserialize)]
    struct DataMessage {
        input: Input,
    }
    let result = async {
        let mut body = req.into_body().into_data_stream();
        let mut buf = Vec::new();
        let mut target = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RpcError::new(Code::Unavailable, e.to_string()))?;
            buf.extend_from_slice(&chunk);
            for (_, message) in connect::envelopes(&mut buf)? {
                let m: Message = serde_json::from_slice(&message)
                    .map_err(|e| RpcError::new(Code::InvalidArgument, format!("a message: {e}")))?;
                if let Some(start) = m.start {
                    target = Some(control(state, envd, &start.process).await?);
                }
                if let Some(data) = m.data {
                    let control = target.as_ref().ok_or_else(|| {
                        RpcError::new(Code::InvalidArgument, "input before the start message")
                    })?;
                    control.write_stdin(&data.input.bytes()?).await?;
                }
            }
        }
        Ok::<_, RpcError>(())
    }
    .await;
    let frames = match result {
        Ok(()) => vec![Ok(connect::message(&json!({}))), Ok(connect::end_stream(None))],
        Err(e) => vec![Ok(connect::end_stream(Some(&e)))],
    };
    connect::stream_reply(futures::stream::iter(frames))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>) -> ExecExit {
        ExecExit {
            code,
            signal,
            timed_out: false,
            oom: false,
            duration_ms: 1,
        }
    }

    #[test]
    fn end_events_read_as_go_prints_a_process_state() {
        assert_eq!(
            end_event(&exit(Some(0), None))["event"]["end"],
            json!({"exitCode": 0, "exited": true, "status": "exit status 0"})
        );
        assert_eq!(
            end_event(&exit(Some(3), None))["event"]["end"],
            json!({"exitCode": 3, "exited": true, "status": "exit status 3", "error": "exit status 3"})
        );
        assert_eq!(
            end_event(&exit(None, Some(9)))["event"]["end"],
            json!({"exitCode": -1, "exited": false, "status": "signal: killed", "error": "signal: killed"})
        );
    }
}
