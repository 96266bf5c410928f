//! Coding-agent tasks: `POST /api/tasks` checks the request (driver, agent, keys, code source)
//! before answering, then [`crate::tasks`] runs it in the background; list, get, the patch and
//! the log as server-sent events.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use stockade_tasks::TaskSpec;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::tasks::{LogEntry, TaskView};
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(list_tasks, create_task))
        .routes(routes!(get_task))
        .routes(routes!(task_patch))
        .routes(routes!(task_events))
}

/// A task to run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// `empty`, `github:OWNER/REPO[@REF]`, a git URL[@REF], or a directory on the daemon's host.
    pub code: String,
    /// `claude-code[:PROVIDER:MODEL]`, `codex`, `gemini`, `cursor`, `opencode`, `aider`, or
    /// `command:SHELL`.
    pub agent: String,
    #[serde(default)]
    pub prompt: String,
    /// A registered driver (`GET /api/drivers`); the first registered when absent.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    /// How long the agent may run, e.g. `1h` or `90s`.
    #[serde(default)]
    #[schema(default = json!(stockade_tasks::DEFAULT_TIMEOUT))]
    pub timeout: Option<String>,
    /// `none` or `full`; agents that call a model API default to `full`.
    #[serde(default)]
    pub network: Option<String>,
    /// A label for listings.
    #[serde(default)]
    pub name: Option<String>,
    /// Keep the sandbox after the task.
    #[serde(default)]
    pub keep: bool,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Starts a task; answers once it is checked and running.
#[utoipa::path(post, path = "/api/tasks", tag = "tasks", request_body = CreateTask,
    responses((status = 202, body = TaskView), (status = 400, body = ErrorBody)))]
pub async fn create_task(
    State(state): State<Arc<AppState>>,
    Json(body): Json<CreateTask>,
) -> ApiResult<(StatusCode, Json<TaskView>)> {
    let view = Create::parse(body, &state)?.run(&state)?;
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Tasks, running and finished, oldest first.
#[utoipa::path(get, path = "/api/tasks", tag = "tasks", responses((status = 200, body = Vec<TaskView>)))]
pub async fn list_tasks(State(state): State<Arc<AppState>>) -> ApiResult<Json<Vec<TaskView>>> {
    Ok(Json(List.run(&state)))
}

/// One task.
#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)))]
pub async fn get_task(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(Get::parse(id)?.run(&state)?))
}

/// A finished task's patch.
#[utoipa::path(get, path = "/api/tasks/{id}/patch", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, description = "the patch", content_type = "text/x-diff"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn task_patch(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Response> {
    let patch = ReadPatch(Get::parse(id)?).run(&state)?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff")], patch).into_response())
}

/// A task's log as server-sent events: `progress`, `stdout` and `stderr` lines as they come
/// (`data: {"line": ...}`), then `done` with the task.
#[utoipa::path(get, path = "/api/tasks/{id}/events", tag = "tasks", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream"), (status = 404, body = ErrorBody)))]
pub async fn task_events(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<Response> {
    let log = Follow(Get::parse(id)?).run(&state)?;
    let events = log.map(|entry| {
        let event = match entry {
            LogEntry::Line { stream, line } => Event::default()
                .event(stream)
                .json_data(serde_json::json!({ "line": line })),
            LogEntry::Done(view) => Event::default().event("done").json_data(&view),
        };
        Ok::<_, Infallible>(event.unwrap_or_default())
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

// ---------------------------------------------------------------------------------------------
// Actions

/// `POST /api/tasks`: the task, checked against the registry and the daemon's host-path rule.
#[derive(Debug, Clone)]
pub struct Create {
    /// Its id is picked when it starts.
    pub spec: TaskSpec,
}

impl Create {
    pub fn parse(body: CreateTask, state: &AppState) -> ApiResult<Create> {
        let registry = state.driver.registry();
        let driver = registry
            .check(body.driver.as_deref().unwrap_or_default())?
            .to_owned();
        let timeout = stockade_core::parse::duration(
            "timeout",
            body.timeout.as_deref().unwrap_or(stockade_tasks::DEFAULT_TIMEOUT),
        )?;
        let network = body.network.as_deref().map(str::parse).transpose()?;
        if stockade_code::CodeSource::parse(&body.code)?.reads_host_paths() {
            state.check_host_path("code", "this code source")?;
        }
        Ok(Create {
            spec: TaskSpec {
                id: None,
                code: body.code,
                agent: body.agent,
                prompt: body.prompt,
                driver,
                image: body.image,
                timeout,
                mcp: None,
                network,
                keep: body.keep,
                name: body.name,
                service: None,
            },
        })
    }

    /// Checks the agent and its keys (from the environment or the secret store), then starts
    /// the task; the task as it starts.
    pub fn run(self, state: &Arc<AppState>) -> ApiResult<TaskView> {
        let spec = self.spec;
        let takes_images = state.driver.registry().factory(&spec.driver)?.takes_images();
        let checked = stockade_tasks::check(&spec, &|k: &str| state.secrets.env_or_stored(k), takes_images)?;
        Ok(crate::tasks::start(state, spec, checked)?)
    }
}

/// `GET /api/tasks`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct List;

impl List {
    pub fn run(self, state: &AppState) -> Vec<TaskView> {
        crate::tasks::list(state)
    }
}

/// `GET /api/tasks/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Get {
    pub id: String,
}

impl Get {
    pub fn parse(id: String) -> ApiResult<Get> {
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ApiError::invalid("id", "a task id is letters and digits"));
        }
        Ok(Get { id })
    }

    pub fn run(self, state: &AppState) -> ApiResult<TaskView> {
        Ok(crate::tasks::find(state, &self.id)?.0)
    }
}

/// `GET /api/tasks/{id}/patch`: only a finished task has one (empty when it changed nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPatch(pub Get);

impl ReadPatch {
    pub fn run(self, state: &AppState) -> ApiResult<Vec<u8>> {
        let (view, dir) = crate::tasks::find(state, &self.0.id)?;
        let Some(dir) = dir else {
            return Err(ApiError::of(
                stockade_core::ErrorKind::WrongState,
                format!("task {} is still running", view.id),
            ));
        };
        Ok(std::fs::read(dir.join("patch.diff")).unwrap_or_default())
    }
}

/// `GET /api/tasks/{id}/events`: the log of a task that exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Follow(pub Get);

impl Follow {
    pub fn run(
        self,
        state: &Arc<AppState>,
    ) -> ApiResult<impl futures::Stream<Item = LogEntry> + Send + 'static> {
        crate::tasks::find(state, &self.0.id)?;
        Ok(crate::tasks::log(Arc::clone(state), self.0.id))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_task_id_is_letters_and_digits() {
        assert_eq!(Get::parse("abc123".into()).unwrap(), Get { id: "abc123".into() });
        for bad in ["", "a-b", "../x", &"a".repeat(65)] {
            let err = Get::parse(bad.into()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("id"), "{bad:?}");
        }
    }
}
