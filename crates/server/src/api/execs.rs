//! Execs: start one (kept: it runs on whatever happens to the request or the daemon), list,
//! get, kill, and follow its events over SSE or a WebSocket. The pumps that store the events
//! are [`crate::execs`]; this module only asks them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::stream::{self, StreamExt};
use serde::Deserialize;
use stockade_api::{ApiExecEvent, Encoding, ExecRecord, ExecResult, StartExec, WsInput};
use stockade_core::{Driver, Error, ExecEvent, ExecRequest, OutputStream, SandboxInfo, TtySize};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{running_sandbox, sandbox, Json, Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(list_execs, start_exec))
        .routes(routes!(get_exec))
        .routes(routes!(kill_exec))
        .routes(routes!(exec_events))
        .routes(routes!(exec_ws))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct StartExecQuery {
    /// Answer only once the exec has exited, with its output.
    #[serde(default)]
    pub wait: bool,
    /// How output bytes are carried: `base64` (default, exact) or `text` (UTF-8, invalid bytes
    /// replaced).
    #[serde(default)]
    pub encoding: Encoding,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FollowQuery {
    /// First sequence number wanted (0: from the start).
    #[serde(default)]
    pub from_seq: Option<u64>,
    #[serde(default)]
    pub encoding: Encoding,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Starts a command. The exec runs on in the sandbox whatever happens to this request or to the
/// daemon; its output is stored and can be followed from any sequence number.
#[utoipa::path(post, path = "/api/sandboxes/{id}/execs", tag = "execs", request_body = StartExec,
    params(("id" = String, Path, description = "sandbox id or name"), StartExecQuery),
    responses((status = 201, body = ExecRecord), (status = 200, body = ExecResult, description = "with ?wait=true"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn start_exec(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<StartExecQuery>,
    Json(body): Json<StartExec>,
) -> ApiResult<Response> {
    Ok(match Start::parse(id, q, body)?.run(&state).await? {
        Started::Running(record) => (StatusCode::CREATED, Json(record)).into_response(),
        Started::Finished(result) => Json(result).into_response(),
    })
}

/// Execs of a sandbox, oldest first.
#[utoipa::path(get, path = "/api/sandboxes/{id}/execs", tag = "execs", params(("id" = String, Path, description = "sandbox id or name")),
    responses((status = 200, body = Vec<ExecRecord>), (status = 404, body = ErrorBody)))]
pub async fn list_execs(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ExecRecord>>> {
    Ok(Json(List { sandbox: id }.run(&state).await?))
}

/// One exec.
#[utoipa::path(get, path = "/api/sandboxes/{id}/execs/{exec_id}", tag = "execs",
    params(("id" = String, Path, description = "sandbox id or name"), ("exec_id" = String, Path)),
    responses((status = 200, body = ExecRecord), (status = 404, body = ErrorBody)))]
pub async fn get_exec(
    State(state): State<Arc<AppState>>,
    Path((id, exec_id)): Path<(String, String)>,
) -> ApiResult<Json<ExecRecord>> {
    let action = Get {
        sandbox: id,
        exec: exec_id,
    };
    Ok(Json(action.run(&state).await?))
}

/// Kills an exec's whole process tree.
#[utoipa::path(post, path = "/api/sandboxes/{id}/execs/{exec_id}/kill", tag = "execs",
    params(("id" = String, Path, description = "sandbox id or name"), ("exec_id" = String, Path)),
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn kill_exec(
    State(state): State<Arc<AppState>>,
    Path((id, exec_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let action = Kill {
        sandbox: id,
        exec: exec_id,
    };
    action.run(&state).await?;
    Ok(StatusCode::ACCEPTED)
}

/// An exec's events as server-sent events (`event: started|stdout|stderr|exited`, `id:` the
/// sequence number): stored ones from `from_seq` (or after `Last-Event-ID`), then live ones,
/// ending after `exited`.
#[utoipa::path(get, path = "/api/sandboxes/{id}/execs/{exec_id}/events", tag = "execs",
    params(("id" = String, Path, description = "sandbox id or name"), ("exec_id" = String, Path), FollowQuery),
    responses((status = 200, description = "text/event-stream of ApiExecEvent"), (status = 404, body = ErrorBody)))]
pub async fn exec_events(
    State(state): State<Arc<AppState>>,
    Path((id, exec_id)): Path<(String, String)>,
    Query(q): Query<FollowQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let follow = Follow::parse(id, exec_id, q, &headers)?;
    let encoding = follow.encoding;
    let rx = follow.run(&state).await?.subscribe(&state);
    let stream = stream::unfold(rx, move |mut rx| async move {
        let event = rx.recv().await?;
        let api = ApiExecEvent::from_event(&event, encoding);
        let sse = Event::default()
            .id(event.seq().to_string())
            .event(api.type_name())
            .json_data(&api)
            .unwrap_or_default();
        Some((Ok::<_, Infallible>(sse), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// An exec over a WebSocket: the same events as the SSE stream (JSON text messages), and stdin,
/// resize and kill the other way. A message the server cannot use is answered with an error
/// message; the stream goes on.
#[utoipa::path(get, path = "/api/sandboxes/{id}/execs/{exec_id}/ws", tag = "execs",
    params(("id" = String, Path, description = "sandbox id or name"), ("exec_id" = String, Path), FollowQuery),
    responses((status = 101, description = "WebSocket of ApiExecEvent out, WsInput in"), (status = 404, body = ErrorBody)))]
pub async fn exec_ws(
    State(state): State<Arc<AppState>>,
    Path((id, exec_id)): Path<(String, String)>,
    Query(q): Query<FollowQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let followed = Follow::parse(id, exec_id, q, &headers)?.run(&state).await?;
    let ws = ws.map_err(|e| {
        ApiError::of(
            stockade_core::ErrorKind::Invalid,
            format!(
                "this endpoint needs a WebSocket upgrade request: {}",
                e.body_text()
            ),
        )
    })?;
    Ok(ws.on_upgrade(move |socket| exec_socket(state, followed, socket)))
}

/// Events out as text messages; input in, each message an [`Input`] run as it comes.
async fn exec_socket(state: Arc<AppState>, followed: Followed, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let encoding = followed.encoding;
    let exec_id = followed.exec.clone();
    let mut events = followed.subscribe(&state);
    let writer = async move {
        while let Some(event) = events.recv().await {
            let api = ApiExecEvent::from_event(&event, encoding);
            let text = serde_json::to_string(&api).unwrap_or_default();
            if futures::SinkExt::send(&mut tx, Message::Text(text.into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = futures::SinkExt::send(&mut tx, Message::Close(None)).await;
    };
    let reader = async move {
        while let Some(Ok(message)) = rx.next().await {
            let text = match message {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => return,
                _ => continue,
            };
            if let Some(input) = Input::parse(&text) {
                let _ = input.run(&state, &exec_id).await;
            }
        }
    };
    // The output side decides when the socket ends; input stops with it.
    tokio::select! {
        _ = writer => {}
        _ = async { reader.await; std::future::pending::<()>().await } => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Actions

/// `POST /api/sandboxes/{id}/execs`: a checked request, what of it is stored, and the secrets
/// it gets by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub sandbox: String,
    pub req: ExecRequest,
    /// The request before secrets are added, with the secrets' names.
    pub stored: serde_json::Value,
    pub secrets: Vec<String>,
    /// Answer with the output once the exec has exited.
    pub wait: bool,
    pub encoding: Encoding,
}

/// What starting an exec answers with.
#[derive(Debug)]
pub enum Started {
    /// The exec runs on.
    Running(ExecRecord),
    /// It ran to its end (or was lost): `wait` was asked.
    Finished(ExecResult),
}

impl Start {
    pub fn parse(sandbox: String, q: StartExecQuery, body: StartExec) -> ApiResult<Start> {
        let req = ExecRequest {
            argv: body.argv,
            env: body.env,
            cwd: body.cwd,
            user: body.user,
            stdin: body.stdin,
            tty: body.tty,
            timeout: body.timeout_ms.map(Duration::from_millis),
        };
        req.validate()?;
        let mut stored = serde_json::to_value(&req).map_err(ApiError::internal)?;
        stored["secrets"] = serde_json::json!(body.secrets);
        for name in &body.secrets {
            stockade_secrets::validate_name(name).map_err(|e| ApiError::invalid("secrets", e.to_string()))?;
            if req.env.contains_key(name) {
                return Err(ApiError::invalid("secrets", format!("{name} is also set in env")));
            }
        }
        Ok(Start {
            sandbox,
            req,
            stored,
            secrets: body.secrets,
            wait: q.wait,
            encoding: q.encoding,
        })
    }

    pub async fn run(self, state: &Arc<AppState>) -> ApiResult<Started> {
        let Start {
            sandbox,
            mut req,
            stored,
            secrets,
            wait,
            encoding,
        } = self;
        let secrets = state
            .secrets
            .resolve(&secrets)
            .map_err(|e| ApiError::invalid("secrets", e.to_string()))?;
        let info = running_sandbox(state, &sandbox, "exec").await?;
        let redactor = crate::redact::Redactor::new(secrets.clone());
        req.env.extend(secrets);
        let exec_id = format!("x{}", stockade_store::random_id()?);
        state
            .db
            .insert_exec(&exec_id, info.id.as_str(), &stored, stockade_store::now_secs())
            .await?;
        let session = match state.driver.exec_kept(&info.id, req, &exec_id).await {
            Ok(session) => session,
            Err(e) => {
                let _ = state.db.delete_exec(&exec_id).await;
                return Err(e.into());
            }
        };
        state.metrics.exec_started(&info.driver);
        // Following registers the exec as live before its pump runs, so a subscriber made right
        // after misses nothing.
        state
            .execs
            .follow_session(&exec_id, info.id.clone(), info.driver.clone(), session, redactor);
        let rx = wait.then(|| state.execs.subscribe(&exec_id, 0));
        state
            .events
            .publish(crate::events::exec(&exec_id, info.id.as_str(), "running"));
        let Some(mut rx) = rx else {
            let record = state
                .db
                .exec(&exec_id)
                .await?
                .ok_or_else(|| ApiError::internal("exec vanished"))?;
            return Ok(Started::Running(record));
        };
        let (mut stdout, mut stderr, mut exit) = (Vec::new(), Vec::new(), None);
        while let Some(event) = rx.recv().await {
            match event {
                ExecEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                    ..
                } => stdout.extend(data),
                ExecEvent::Output { data, .. } => stderr.extend(data),
                ExecEvent::Exited { exit: e, .. } => exit = Some(e),
                ExecEvent::Started { .. } => {}
            }
        }
        Ok(Started::Finished(ExecResult {
            id: exec_id,
            stdout: encoding.encode(&stdout),
            stderr: encoding.encode(&stderr),
            finished: exit.is_some(),
            exit,
        }))
    }
}

/// The sandbox `id` names and its exec `exec_id` (an exec of another sandbox is not found).
async fn exec_of(state: &AppState, id: &str, exec_id: &str) -> ApiResult<(SandboxInfo, ExecRecord)> {
    let info = sandbox(state, id).await?;
    match state.db.exec(exec_id).await? {
        Some(exec) if exec.sandbox_id == info.id.as_str() => Ok((info, exec)),
        _ => Err(Error::ExecNotFound(exec_id.to_owned()).into()),
    }
}

/// `GET /api/sandboxes/{id}/execs`, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub sandbox: String,
}

impl List {
    pub async fn run(self, state: &AppState) -> ApiResult<Vec<ExecRecord>> {
        let info = sandbox(state, &self.sandbox).await?;
        Ok(state.db.execs(Some(info.id.as_str())).await?)
    }
}

/// `GET /api/sandboxes/{id}/execs/{exec_id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Get {
    pub sandbox: String,
    pub exec: String,
}

impl Get {
    pub async fn run(self, state: &AppState) -> ApiResult<ExecRecord> {
        Ok(exec_of(state, &self.sandbox, &self.exec).await?.1)
    }
}

/// `POST /api/sandboxes/{id}/execs/{exec_id}/kill`: only a running exec can be killed.
#[derive(Debug, Clone, PartialEq)]
pub struct Kill {
    pub sandbox: String,
    pub exec: String,
}

impl Kill {
    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let (info, exec) = exec_of(state, &self.sandbox, &self.exec).await?;
        match state.execs.control(&exec.id) {
            Some(control) => Ok(control.kill().await?),
            None => Err(Error::WrongState {
                id: format!("{}/{}", info.id, exec.id),
                status: format!("{:?}", exec.status).to_lowercase(),
                operation: "kill".into(),
                needed: "running".into(),
            }
            .into()),
        }
    }
}

/// The SSE and WebSocket routes: an exec's events from a sequence number on.
#[derive(Debug, Clone, PartialEq)]
pub struct Follow {
    pub sandbox: String,
    pub exec: String,
    pub from_seq: u64,
    pub encoding: Encoding,
}

/// An exec found, ready to be subscribed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Followed {
    pub exec: String,
    pub from_seq: u64,
    pub encoding: Encoding,
}

impl Follow {
    /// `?from_seq` wins; else an `EventSource` that reconnects sends the id of the last event
    /// it saw as `Last-Event-ID`, and the stream goes on after it.
    pub fn parse(sandbox: String, exec: String, q: FollowQuery, headers: &HeaderMap) -> ApiResult<Follow> {
        let from_seq = match (q.from_seq, headers.get("last-event-id")) {
            (Some(seq), _) => seq,
            (None, Some(v)) => v
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|seq| seq + 1)
                .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a sequence number"))?,
            (None, None) => 0,
        };
        Ok(Follow {
            sandbox,
            exec,
            from_seq,
            encoding: q.encoding,
        })
    }

    /// Finds the exec; subscribing is left to the caller, who may have to upgrade first.
    pub async fn run(self, state: &AppState) -> ApiResult<Followed> {
        let (_, exec) = exec_of(state, &self.sandbox, &self.exec).await?;
        Ok(Followed {
            exec: exec.id,
            from_seq: self.from_seq,
            encoding: self.encoding,
        })
    }
}

impl Followed {
    /// Stored events first, then live ones, ending after the exit.
    pub fn subscribe(&self, state: &AppState) -> tokio::sync::mpsc::Receiver<ExecEvent> {
        state.execs.subscribe(&self.exec, self.from_seq)
    }
}

/// One WebSocket message from the client, for a running exec.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Stdin(Vec<u8>),
    CloseStdin,
    Resize(TtySize),
    Kill,
}

impl Input {
    /// `None` for a message that is not a [`WsInput`], data that is not base64, or a size
    /// with no rows or no columns: those are dropped.
    pub fn parse(text: &str) -> Option<Input> {
        match serde_json::from_str(text).ok()? {
            WsInput::Stdin { data } => base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .map(Input::Stdin),
            WsInput::CloseStdin => Some(Input::CloseStdin),
            WsInput::Resize { rows, cols } if rows > 0 && cols > 0 => {
                Some(Input::Resize(TtySize { rows, cols }))
            }
            WsInput::Resize { .. } => None,
            WsInput::Kill => Some(Input::Kill),
        }
    }

    /// Sends it to `exec_id`; an exec no longer running takes nothing.
    pub async fn run(self, state: &AppState, exec_id: &str) -> ApiResult<()> {
        let Some(control) = state.execs.control(exec_id) else {
            return Ok(());
        };
        match self {
            Input::Stdin(data) => control.write_stdin(&data).await?,
            Input::CloseStdin => control.close_stdin().await?,
            Input::Resize(size) => control.resize(size).await?,
            Input::Kill => control.kill().await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(from_seq: Option<u64>) -> FollowQuery {
        FollowQuery {
            from_seq,
            encoding: Encoding::Text,
        }
    }

    #[test]
    fn follow_starts_at_from_seq_else_after_the_last_event_id() {
        let mut headers = HeaderMap::new();
        let parse = |q, h: &HeaderMap| Follow::parse("s".into(), "x1".into(), q, h);
        assert_eq!(parse(query(None), &headers).unwrap().from_seq, 0);
        headers.insert("last-event-id", " 4 ".parse().unwrap());
        let follow = parse(query(None), &headers).unwrap();
        assert_eq!(
            follow,
            Follow {
                sandbox: "s".into(),
                exec: "x1".into(),
                from_seq: 5,
                encoding: Encoding::Text,
            }
        );
        assert_eq!(
            parse(query(Some(2)), &headers).unwrap().from_seq,
            2,
            "the query wins"
        );
        headers.insert("last-event-id", "later".parse().unwrap());
        let err = parse(query(None), &headers).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("Last-Event-ID"));
    }

    #[test]
    fn websocket_input_the_exec_cannot_use_is_dropped() {
        assert_eq!(
            Input::parse(r#"{"type":"stdin","data":"aGk="}"#),
            Some(Input::Stdin(b"hi".to_vec()))
        );
        assert_eq!(
            Input::parse(r#"{"type":"resize","rows":24,"cols":80}"#),
            Some(Input::Resize(TtySize { rows: 24, cols: 80 }))
        );
        assert_eq!(Input::parse(r#"{"type":"kill"}"#), Some(Input::Kill));
        for dropped in [
            r#"{"type":"stdin","data":"not base64!"}"#,
            r#"{"type":"resize","rows":0,"cols":80}"#,
            r#"{"type":"pause"}"#,
            "not json",
        ] {
            assert_eq!(Input::parse(dropped), None, "{dropped}");
        }
    }

    #[test]
    fn a_started_exec_stores_its_request_with_secret_names_only() {
        let body = StartExec {
            argv: vec!["echo".into(), "hi".into()],
            secrets: vec!["TOKEN".into()],
            timeout_ms: Some(1500),
            ..Default::default()
        };
        let query = StartExecQuery {
            wait: true,
            encoding: Encoding::Base64,
        };
        let start = Start::parse("s".into(), query, body).unwrap();
        assert_eq!(start.req.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(start.stored["argv"], serde_json::json!(["echo", "hi"]));
        assert_eq!(start.stored["secrets"], serde_json::json!(["TOKEN"]));
        assert!(start.req.env.is_empty(), "values are added only when it runs");
        assert!(start.wait);
    }
}
