//! The HTTP API's handlers. Every route is annotated for the OpenAPI document served at
//! `/openapi.json`; every error is an [`ApiError`] with a JSON body.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::stream::{self, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use stockade_core::{
    DirEntry, Driver, Error, ExecEvent, ExecRequest, FileStat, OutputStream, SandboxInfo, SandboxStatus,
    Stats, TtySize,
};
use utoipa::IntoParams;

pub use stockade_api::{
    ApiExecEvent, CreateSandbox, DriverInfo, Encoding, ExecResult, ListSandboxes, Push, Pushed, Rename,
    StartExec, WsInput,
};

use crate::db::ExecRecord;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

/// JSON body extractor whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query extractor whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path extractor whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Raw body extractor whose rejections (too large, say) are [`ApiError`]s.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(ApiError::from)
    }
}

// ---------------------------------------------------------------------------------------------
// System

/// Liveness: the daemon answers.
#[utoipa::path(get, path = "/healthz", tag = "system", security(()), responses((status = 200, description = "ok")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let sandboxes = state.driver.list().await.unwrap_or_default();
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &sandboxes {
        *by_status.entry(s.status.as_str()).or_default() += 1;
    }
    let mut text = state.metrics.render();
    text.push_str("# HELP stockade_sandboxes Sandboxes by status.\n# TYPE stockade_sandboxes gauge\n");
    for (status, n) in by_status {
        text.push_str(&format!("stockade_sandboxes{{status=\"{status}\"}} {n}\n"));
    }
    text.push_str(&format!(
        "# HELP stockade_execs_running Execs the daemon follows.\n# TYPE stockade_execs_running gauge\nstockade_execs_running {}\n",
        state.execs.running()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The registered drivers, their availability and how many sandboxes each holds.
#[utoipa::path(get, path = "/api/drivers", tag = "system", responses((status = 200, body = Vec<DriverInfo>)))]
pub async fn drivers(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<DriverInfo>>> {
    let sandboxes = state.driver.list().await.unwrap_or_default();
    let registry = state.driver.registry();
    let mut out = Vec::new();
    for name in registry.names() {
        let description = registry
            .factory(name)
            .map(|f| f.description())
            .unwrap_or_default();
        let probed = stockade_core::registry::availability(registry, name).await;
        let circuits = registry
            .driver(name)
            .ok()
            .and_then(|d| d.admin().map(|a| a.circuits()))
            .unwrap_or_default();
        out.push(DriverInfo {
            name: name.to_owned(),
            description: description.to_owned(),
            available: probed.is_ok(),
            summary: probed
                .as_ref()
                .ok()
                .map(|(_, f)| f.summary.clone())
                .filter(|s| !s.is_empty()),
            reason: probed.err().map(|e| e.to_string()),
            sandboxes: sandboxes.iter().filter(|s| s.driver == name).count(),
            circuits,
        });
    }
    Ok(Json(out))
}

/// Status changes of sandboxes and execs, as server-sent events (`event: sandbox|exec`).
#[utoipa::path(get, path = "/api/events", tag = "system", responses((status = 200, description = "text/event-stream of StatusChange")))]
pub async fn events(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = state.events.subscribe();
    let stream = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(change) => {
                    let event = Event::default()
                        .event(change.kind.as_str())
                        .json_data(&change)
                        .unwrap_or_default();
                    return Some((Ok(event), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

// ---------------------------------------------------------------------------------------------
// Sandboxes

/// Sandboxes of every driver, oldest first.
#[utoipa::path(get, path = "/api/sandboxes", tag = "sandboxes", params(ListSandboxes),
    responses((status = 200, body = Vec<SandboxInfo>), (status = 400, body = ErrorBody)))]
pub async fn list_sandboxes(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListSandboxes>,
) -> ApiResult<Json<Vec<SandboxInfo>>> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            serde_json::from_value::<SandboxStatus>(serde_json::Value::String(s.to_owned())).map_err(|_| {
                ApiError::invalid(
                    "status",
                    format!("{s:?} is not a status (creating, running, stopped, destroyed, lost)"),
                )
            })
        })
        .transpose()?;
    let label = q
        .label
        .as_deref()
        .map(|l| stockade_core::parse::key_value("label", l))
        .transpose()?;
    let all = state.driver.list().await?;
    Ok(Json(
        all.into_iter()
            .filter(|s| status.is_none_or(|st| s.status == st))
            .filter(|s| {
                label
                    .as_ref()
                    .is_none_or(|(k, v)| s.spec.labels.get(k) == Some(v))
            })
            .collect(),
    ))
}

/// Creates a sandbox; returns once it is ready to exec.
#[utoipa::path(post, path = "/api/sandboxes", tag = "sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = SandboxInfo), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_sandbox(
    State(state): State<Arc<AppState>>,
    Json(body): Json<CreateSandbox>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    let idle = body
        .idle_timeout
        .as_deref()
        .map(|t| stockade_core::parse::duration("idle_timeout", t))
        .transpose()?;
    let mut spec = body.flags.to_spec()?;
    if !spec.mounts.is_empty() {
        state.check_host_path("volumes", "a volume")?;
    }
    if spec.rootfs.is_some() {
        state.check_host_path("rootfs", "rootfs")?;
    }
    if let Some(code) = &body.code {
        if stockade_code::CodeSource::parse(code)?.reads_host_paths() {
            state.check_host_path("code", "this code source")?;
        }
    }
    for m in &mut spec.mounts {
        m.host = std::fs::canonicalize(&m.host)
            .map_err(|e| ApiError::invalid("volumes", format!("{}: {e}", m.host.display())))?;
    }
    if let Some(rootfs) = &spec.rootfs {
        if !rootfs.is_dir() {
            return Err(ApiError::invalid(
                "rootfs",
                format!("{}: not a directory", rootfs.display()),
            ));
        }
    }
    if let Some(name) = &spec.name {
        if state.driver.get(name).await.is_ok() {
            return Err(Error::NameTaken(name.clone()).into());
        }
    }
    let scratch = state.home.join("cache");
    let mut progress = |line: &str| eprintln!("stockade serve: {line}");
    let info = stockade_code::create_with_code(
        state.driver.as_ref(),
        spec,
        body.code.as_deref(),
        &scratch,
        &mut progress,
    )
    .await?;
    if let Some(idle) = idle {
        state
            .db
            .set_idle_timeout(
                info.id.as_str(),
                idle.as_secs().max(1),
                stockade_store::now_secs(),
            )
            .await?;
    }
    state.metrics.sandboxes_created.inc();
    state
        .events
        .publish(crate::events::sandbox(info.id.as_str(), "running"));
    Ok((StatusCode::CREATED, Json(info)))
}

async fn sandbox(state: &AppState, id_or_name: &str) -> ApiResult<SandboxInfo> {
    if id_or_name.is_empty() || id_or_name.len() > 128 {
        return Err(ApiError::invalid(
            "id",
            "a sandbox id or name is 1 to 128 characters",
        ));
    }
    Ok(state.driver.get(id_or_name).await?)
}

/// One sandbox by id or name.
#[utoipa::path(get, path = "/api/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody)))]
pub async fn get_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(sandbox(&state, &id).await?))
}

/// Destroys a sandbox and forgets its execs.
#[utoipa::path(delete, path = "/api/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let info = sandbox(&state, &id).await?;
    state.driver.destroy(&info.id).await?;
    state.db.forget_sandbox(info.id.as_str()).await?;
    state
        .events
        .publish(crate::events::sandbox(info.id.as_str(), "destroyed"));
    Ok(StatusCode::NO_CONTENT)
}

/// Stops every process, keeping the files.
#[utoipa::path(post, path = "/api/sandboxes/{id}/stop", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    let info = sandbox(&state, &id).await?;
    state.driver.stop(&info.id).await?;
    state
        .events
        .publish(crate::events::sandbox(info.id.as_str(), "stopped"));
    Ok(Json(state.driver.get(info.id.as_str()).await?))
}

/// Starts a stopped sandbox.
#[utoipa::path(post, path = "/api/sandboxes/{id}/start", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    let info = sandbox(&state, &id).await?;
    state.driver.start(&info.id).await?;
    state
        .events
        .publish(crate::events::sandbox(info.id.as_str(), "running"));
    Ok(Json(state.driver.get(info.id.as_str()).await?))
}

/// Resource usage.
#[utoipa::path(get, path = "/api/sandboxes/{id}/stats", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = Stats), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn sandbox_stats(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Stats>> {
    let info = sandbox(&state, &id).await?;
    if info.status != SandboxStatus::Running {
        return Err(not_running(&info, "stats"));
    }
    Ok(Json(state.driver.stats(&info.id).await?))
}

fn not_running(info: &SandboxInfo, operation: &str) -> ApiError {
    Error::WrongState {
        id: info.id.to_string(),
        status: info.status.to_string(),
        operation: operation.into(),
        needed: "running".into(),
    }
    .into()
}

async fn running_sandbox(state: &AppState, id: &str, operation: &str) -> ApiResult<SandboxInfo> {
    let info = sandbox(state, id).await?;
    if info.status != SandboxStatus::Running {
        return Err(not_running(&info, operation));
    }
    let _ = state.db.touch(info.id.as_str(), stockade_store::now_secs()).await;
    Ok(info)
}

// ---------------------------------------------------------------------------------------------
// Execs

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
    let mut req = ExecRequest {
        argv: body.argv,
        env: body.env,
        cwd: body.cwd,
        user: body.user,
        stdin: body.stdin,
        tty: body.tty,
        timeout: body.timeout_ms.map(Duration::from_millis),
    };
    req.validate()?;
    // What is stored: the request before secrets are added, and the secrets' names.
    let mut stored = serde_json::to_value(&req).map_err(ApiError::internal)?;
    stored["secrets"] = serde_json::json!(body.secrets);
    for name in &body.secrets {
        stockade_secrets::validate_name(name).map_err(|e| ApiError::invalid("secrets", e.to_string()))?;
        if req.env.contains_key(name) {
            return Err(ApiError::invalid("secrets", format!("{name} is also set in env")));
        }
    }
    let secrets = state
        .secrets
        .resolve(&body.secrets)
        .map_err(|e| ApiError::invalid("secrets", e.to_string()))?;
    let info = running_sandbox(&state, &id, "exec").await?;
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
    state.metrics.execs_started.inc();
    // Following registers the exec as live before its pump runs, so a subscriber made right
    // after misses nothing.
    state
        .execs
        .follow_session(&exec_id, info.id.clone(), session, redactor);
    let rx = q.wait.then(|| state.execs.subscribe(&exec_id, 0));
    state
        .events
        .publish(crate::events::exec(&exec_id, info.id.as_str(), "running"));
    let Some(mut rx) = rx else {
        let record = state
            .db
            .exec(&exec_id)
            .await?
            .ok_or_else(|| ApiError::internal("exec vanished"))?;
        return Ok((StatusCode::CREATED, Json(record)).into_response());
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
    Ok(Json(ExecResult {
        id: exec_id,
        stdout: q.encoding.encode(&stdout),
        stderr: q.encoding.encode(&stderr),
        finished: exit.is_some(),
        exit,
    })
    .into_response())
}

async fn exec_of(state: &AppState, id: &str, exec_id: &str) -> ApiResult<(SandboxInfo, ExecRecord)> {
    let info = sandbox(state, id).await?;
    match state.db.exec(exec_id).await? {
        Some(exec) if exec.sandbox_id == info.id.as_str() => Ok((info, exec)),
        _ => Err(Error::ExecNotFound(exec_id.to_owned()).into()),
    }
}

/// Execs of a sandbox, oldest first.
#[utoipa::path(get, path = "/api/sandboxes/{id}/execs", tag = "execs", params(("id" = String, Path, description = "sandbox id or name")),
    responses((status = 200, body = Vec<ExecRecord>), (status = 404, body = ErrorBody)))]
pub async fn list_execs(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<ExecRecord>>> {
    let info = sandbox(&state, &id).await?;
    Ok(Json(state.db.execs(Some(info.id.as_str())).await?))
}

/// One exec.
#[utoipa::path(get, path = "/api/sandboxes/{id}/execs/{exec_id}", tag = "execs",
    params(("id" = String, Path, description = "sandbox id or name"), ("exec_id" = String, Path)),
    responses((status = 200, body = ExecRecord), (status = 404, body = ErrorBody)))]
pub async fn get_exec(
    State(state): State<Arc<AppState>>,
    Path((id, exec_id)): Path<(String, String)>,
) -> ApiResult<Json<ExecRecord>> {
    Ok(Json(exec_of(&state, &id, &exec_id).await?.1))
}

/// Kills an exec's whole process tree.
#[utoipa::path(post, path = "/api/sandboxes/{id}/execs/{exec_id}/kill", tag = "execs",
    params(("id" = String, Path, description = "sandbox id or name"), ("exec_id" = String, Path)),
    responses((status = 202), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn kill_exec(
    State(state): State<Arc<AppState>>,
    Path((id, exec_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let (info, exec) = exec_of(&state, &id, &exec_id).await?;
    match state.execs.control(&exec.id) {
        Some(control) => {
            control.kill().await?;
            Ok(StatusCode::ACCEPTED)
        }
        None => Err(Error::WrongState {
            id: format!("{}/{}", info.id, exec.id),
            status: format!("{:?}", exec.status).to_lowercase(),
            operation: "kill".into(),
            needed: "running".into(),
        }
        .into()),
    }
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

fn from_seq(q: &FollowQuery, headers: &HeaderMap) -> ApiResult<u64> {
    if let Some(seq) = q.from_seq {
        return Ok(seq);
    }
    // An EventSource that reconnects sends the id of the last event it saw.
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|seq| seq + 1)
            .ok_or_else(|| ApiError::invalid("Last-Event-ID", "must be a sequence number")),
        None => Ok(0),
    }
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
    let (_, exec) = exec_of(&state, &id, &exec_id).await?;
    let from = from_seq(&q, &headers)?;
    let encoding = q.encoding;
    let rx = state.execs.subscribe(&exec.id, from);
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
    let (_, exec) = exec_of(&state, &id, &exec_id).await?;
    let from = from_seq(&q, &headers)?;
    let ws = ws.map_err(|e| {
        ApiError::of(
            stockade_core::ErrorKind::Invalid,
            format!(
                "this endpoint needs a WebSocket upgrade request: {}",
                e.body_text()
            ),
        )
    })?;
    let encoding = q.encoding;
    Ok(ws.on_upgrade(move |socket| exec_socket(state, exec.id, from, encoding, socket)))
}

async fn exec_socket(
    state: Arc<AppState>,
    exec_id: String,
    from: u64,
    encoding: Encoding,
    socket: WebSocket,
) {
    let (mut tx, mut rx) = socket.split();
    let mut events = state.execs.subscribe(&exec_id, from);
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
    let reader_state = Arc::clone(&state);
    let reader = async move {
        while let Some(Ok(message)) = rx.next().await {
            let text = match message {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => return,
                _ => continue,
            };
            let Some(control) = reader_state.execs.control(&exec_id) else {
                continue;
            };
            let input: Result<WsInput, _> = serde_json::from_str(&text);
            let _ = match input {
                Ok(WsInput::Stdin { data }) => match base64::engine::general_purpose::STANDARD.decode(data) {
                    Ok(bytes) => control.write_stdin(&bytes).await,
                    Err(_) => Ok(()),
                },
                Ok(WsInput::CloseStdin) => control.close_stdin().await,
                Ok(WsInput::Resize { rows, cols }) if rows > 0 && cols > 0 => {
                    control.resize(TtySize { rows, cols }).await
                }
                Ok(WsInput::Kill) => control.kill().await,
                _ => Ok(()),
            };
        }
    };
    // The output side decides when the socket ends; input stops with it.
    tokio::select! {
        _ = writer => {}
        _ = async { reader.await; std::future::pending::<()>().await } => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Files

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    /// Absolute path inside the sandbox.
    pub path: String,
    /// Octal mode of a written file (default 644).
    #[serde(default)]
    pub mode: Option<String>,
    /// Remove a directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
}

fn check_path(path: &str) -> ApiResult<()> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ApiError::invalid(
            "path",
            format!("{path:?} must be an absolute path"),
        ));
    }
    Ok(())
}

/// A file's bytes.
#[utoipa::path(get, path = "/api/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), FileQuery),
    responses((status = 200, description = "the file", content_type = "application/octet-stream"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Response> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "read a file").await?;
    let data = state.driver.read_file(&info.id, &q.path).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

/// Writes a file atomically (the body is its bytes).
#[utoipa::path(put, path = "/api/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), FileQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn write_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    check_path(&q.path)?;
    let mode = match &q.mode {
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| ApiError::invalid("mode", format!("{m:?} is not an octal mode like 644")))?,
        None => 0o644,
    };
    let info = running_sandbox(&state, &id, "write a file").await?;
    state
        .driver
        .write_file(&info.id, &q.path, body.to_vec(), mode)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a file (or, with `recursive`, a directory tree).
#[utoipa::path(delete, path = "/api/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), FileQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<StatusCode> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "remove a file").await?;
    state.driver.remove(&info.id, &q.path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DirQuery {
    /// Absolute directory path inside the sandbox.
    pub path: String,
}

/// A directory's entries.
#[utoipa::path(get, path = "/api/sandboxes/{id}/dir", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), DirQuery),
    responses((status = 200, body = Vec<DirEntry>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list_dir(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> ApiResult<Json<Vec<DirEntry>>> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "list a directory").await?;
    Ok(Json(state.driver.list_dir(&info.id, &q.path).await?))
}

/// Facts about one path.
#[utoipa::path(get, path = "/api/sandboxes/{id}/stat", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), DirQuery),
    responses((status = 200, body = FileStat), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn stat(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> ApiResult<Json<FileStat>> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "stat a path").await?;
    Ok(Json(state.driver.stat(&info.id, &q.path).await?))
}

/// `mkdir -p`.
#[utoipa::path(post, path = "/api/sandboxes/{id}/mkdir", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), DirQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn mkdir(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> ApiResult<StatusCode> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "make a directory").await?;
    state.driver.mkdir(&info.id, &q.path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Renames a path within the sandbox.
#[utoipa::path(post, path = "/api/sandboxes/{id}/rename", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name")), request_body = Rename,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn rename(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<Rename>,
) -> ApiResult<StatusCode> {
    check_path(&body.from)?;
    check_path(&body.to)?;
    let info = running_sandbox(&state, &id, "rename").await?;
    state.driver.rename(&info.id, &body.from, &body.to).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A directory as a tar archive.
#[utoipa::path(get, path = "/api/sandboxes/{id}/archive", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), DirQuery),
    responses((status = 200, description = "tar", content_type = "application/x-tar"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn download_archive(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
) -> ApiResult<Response> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "download an archive").await?;
    let out = state
        .driver
        .exec(
            &info.id,
            ExecRequest::new(["tar", "-C", &q.path, "-cf", "-", "."]),
        )
        .await?
        .output()
        .await?;
    if !out.exit.success() {
        return Err(ApiError::invalid(
            "path",
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], out.stdout).into_response())
}

/// Unpacks a tar archive (the body) into a directory, made if missing.
#[utoipa::path(put, path = "/api/sandboxes/{id}/archive", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), DirQuery),
    request_body(content = Vec<u8>, description = "a tar archive", content_type = "application/octet-stream"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn upload_archive(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DirQuery>,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    check_path(&q.path)?;
    let info = running_sandbox(&state, &id, "upload an archive").await?;
    state.driver.mkdir(&info.id, &q.path).await?;
    let mut req = ExecRequest::new(["tar", "-C", &q.path, "-xf", "-"]);
    req.stdin = true;
    let session = state.driver.exec(&info.id, req).await?;
    let control = Arc::clone(&session.control);
    let feed = async move {
        for chunk in body.chunks(256 * 1024) {
            control.write_stdin(chunk).await?;
        }
        control.close_stdin().await
    };
    let (fed, out) = tokio::join!(feed, session.output());
    let out = out?;
    fed?;
    if !out.exit.success() {
        return Err(ApiError::invalid(
            "body",
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Code

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// A diffstat instead of the patch.
    #[serde(default)]
    pub stat: bool,
}

/// A binary-safe patch of everything changed in the workdir since the baseline commit.
#[utoipa::path(get, path = "/api/sandboxes/{id}/diff", tag = "code",
    params(("id" = String, Path, description = "sandbox id or name"), DiffQuery),
    responses((status = 200, description = "the patch", content_type = "text/x-diff"), (status = 404, body = ErrorBody)))]
pub async fn diff(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Response> {
    let info = running_sandbox(&state, &id, "diff").await?;
    let patch = stockade_code::diff(state.driver.as_ref(), &info.id, &info.spec.workdir, q.stat).await?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff")], patch).into_response())
}

/// Applies a patch (the body) to the workdir.
#[utoipa::path(post, path = "/api/sandboxes/{id}/apply", tag = "code",
    params(("id" = String, Path, description = "sandbox id or name")),
    request_body(content = String, content_type = "text/x-diff"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn apply(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> ApiResult<StatusCode> {
    let info = running_sandbox(&state, &id, "apply").await?;
    stockade_code::apply(state.driver.as_ref(), &info.id, &info.spec.workdir, body.to_vec()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Commits the change since the baseline and pushes it from the host; credentials never enter
/// the sandbox.
#[utoipa::path(post, path = "/api/sandboxes/{id}/push", tag = "code",
    params(("id" = String, Path, description = "sandbox id or name")), request_body = Push,
    responses((status = 200, body = Pushed), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn push(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(body): Json<Push>,
) -> ApiResult<Json<Pushed>> {
    if body.branch.is_empty()
        || body.branch.starts_with('-')
        || body.branch.contains("..")
        || body.branch.contains(char::is_whitespace)
    {
        return Err(ApiError::invalid(
            "branch",
            format!("{:?} is not a branch name", body.branch),
        ));
    }
    let token = match &body.token_secret {
        Some(name) => {
            stockade_secrets::validate_name(name)
                .map_err(|e| ApiError::invalid("token_secret", e.to_string()))?;
            Some(
                state
                    .secrets
                    .get(name)
                    .map_err(|e| ApiError::invalid("token_secret", e.to_string()))?
                    .ok_or_else(|| ApiError::invalid("token_secret", format!("no secret named {name}")))?,
            )
        }
        None => std::env::var("STOCKADE_GIT_TOKEN").ok().filter(|t| !t.is_empty()),
    };
    if stockade_code::source::is_host_path_remote(&body.remote) {
        state.check_host_path("remote", "this remote")?;
    }
    let info = running_sandbox(&state, &id, "push").await?;
    let req = stockade_code::PushRequest {
        remote: body.remote,
        branch: body.branch,
        message: body
            .message
            .unwrap_or_else(|| "Changes made in a Stockade sandbox".into()),
        token,
    };
    let scratch = state.home.join("cache");
    let commit = stockade_code::push(
        state.driver.as_ref(),
        &info.id,
        &info.spec.workdir,
        &req,
        &scratch,
    )
    .await?;
    Ok(Json(Pushed { commit }))
}
