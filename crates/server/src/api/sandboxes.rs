//! Sandboxes: list, create, get, destroy, stop, start, stats.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use stockade_api::{CreateSandbox, ListSandboxes};
use stockade_core::{Driver, Error, SandboxInfo, SandboxSpec, SandboxStatus, Stats};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{not_running, sandbox, Json, Path, Query};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(list_sandboxes, create_sandbox))
        .routes(routes!(get_sandbox, delete_sandbox))
        .routes(routes!(stop_sandbox))
        .routes(routes!(start_sandbox))
        .routes(routes!(pause_sandbox))
        .routes(routes!(resume_sandbox))
        .routes(routes!(sandbox_stats))
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// Sandboxes of every driver, oldest first.
#[utoipa::path(get, path = "/api/sandboxes", tag = "sandboxes", params(ListSandboxes),
    responses((status = 200, body = Vec<SandboxInfo>), (status = 400, body = ErrorBody)))]
pub async fn list_sandboxes(
    State(state): State<Arc<AppState>>,
    Query(q): Query<ListSandboxes>,
) -> ApiResult<Json<Vec<SandboxInfo>>> {
    Ok(Json(List::parse(q)?.run(&state).await?))
}

/// Creates a sandbox; returns once it is ready to exec.
#[utoipa::path(post, path = "/api/sandboxes", tag = "sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = SandboxInfo), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_sandbox(
    State(state): State<Arc<AppState>>,
    Json(body): Json<CreateSandbox>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    let info = Create::parse(body, &state)?.run(&state).await?;
    Ok((StatusCode::CREATED, Json(info)))
}

/// One sandbox by id or name.
#[utoipa::path(get, path = "/api/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody)))]
pub async fn get_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(Get { sandbox: id }.run(&state).await?))
}

/// Destroys a sandbox and forgets its execs.
#[utoipa::path(delete, path = "/api/sandboxes/{id}", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    Destroy { sandbox: id }.run(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops every process, keeping the files.
#[utoipa::path(post, path = "/api/sandboxes/{id}/stop", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stop_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(Stop { sandbox: id }.run(&state).await?))
}

/// Starts a stopped sandbox.
#[utoipa::path(post, path = "/api/sandboxes/{id}/start", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn start_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(Start { sandbox: id }.run(&state).await?))
}

/// Freezes a running sandbox: processes and memory kept, no CPU (where the driver can; 422
/// naming the driver where it cannot).
#[utoipa::path(post, path = "/api/sandboxes/{id}/pause", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn pause_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(Pause { sandbox: id }.run(&state).await?))
}

/// Thaws a paused sandbox.
#[utoipa::path(post, path = "/api/sandboxes/{id}/resume", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = SandboxInfo), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn resume_sandbox(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(Resume { sandbox: id }.run(&state).await?))
}

/// Resource usage.
#[utoipa::path(get, path = "/api/sandboxes/{id}/stats", tag = "sandboxes", params(("id" = String, Path, description = "id or name")),
    responses((status = 200, body = Stats), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn sandbox_stats(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Stats>> {
    Ok(Json(ReadStats { sandbox: id }.run(&state).await?))
}

// ---------------------------------------------------------------------------------------------
// Actions

/// `GET /api/sandboxes`: the sandboxes that pass both filters.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    pub status: Option<SandboxStatus>,
    pub label: Option<(String, String)>,
}

impl List {
    pub fn parse(q: ListSandboxes) -> ApiResult<List> {
        let status = q
            .status
            .as_deref()
            .map(|s| {
                serde_json::from_value::<SandboxStatus>(serde_json::Value::String(s.to_owned())).map_err(
                    |_| {
                        ApiError::invalid(
                            "status",
                            format!("{s:?} is not a status (creating, running, stopped, destroyed, lost)"),
                        )
                    },
                )
            })
            .transpose()?;
        let label = q
            .label
            .as_deref()
            .map(|l| stockade_core::parse::key_value("label", l))
            .transpose()?;
        Ok(List { status, label })
    }

    pub async fn run(self, state: &AppState) -> ApiResult<Vec<SandboxInfo>> {
        let all = state.driver.list().await?;
        Ok(all
            .into_iter()
            .filter(|s| self.status.is_none_or(|st| s.status == st))
            .filter(|s| {
                self.label
                    .as_ref()
                    .is_none_or(|(k, v)| s.spec.labels.get(k) == Some(v))
            })
            .collect())
    }
}

/// `POST /api/sandboxes`: a checked spec, the code to load into it, and its idle timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct Create {
    pub spec: SandboxSpec,
    pub code: Option<String>,
    pub idle_timeout: Option<Duration>,
}

impl Create {
    /// Checks the body, and whether the daemon lets it name host paths.
    pub fn parse(body: CreateSandbox, state: &AppState) -> ApiResult<Create> {
        let idle_timeout = body
            .idle_timeout
            .as_deref()
            .map(|t| stockade_core::parse::duration("idle_timeout", t))
            .transpose()?;
        let spec = body.flags.to_spec()?;
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
        Ok(Create {
            spec,
            code: body.code,
            idle_timeout,
        })
    }

    pub async fn run(self, state: &AppState) -> ApiResult<SandboxInfo> {
        let Create {
            mut spec,
            code,
            idle_timeout,
        } = self;
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
        let mut progress = |line: &str| tracing::info!("{line}");
        let info = stockade_code::create_with_code(
            state.driver.as_ref(),
            spec,
            code.as_deref(),
            &scratch,
            &mut progress,
        )
        .await?;
        if let Some(idle) = idle_timeout {
            state
                .db
                .set_idle_timeout(
                    info.id.as_str(),
                    idle.as_secs().max(1),
                    stockade_store::now_secs(),
                )
                .await?;
        }
        state.metrics.sandbox_created(&info.driver);
        state
            .events
            .publish(crate::events::sandbox(info.id.as_str(), "running"));
        Ok(info)
    }
}

/// `GET /api/sandboxes/{id}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Get {
    /// Id or name.
    pub sandbox: String,
}

impl Get {
    pub async fn run(self, state: &AppState) -> ApiResult<SandboxInfo> {
        sandbox(state, &self.sandbox).await
    }
}

/// `DELETE /api/sandboxes/{id}`: the sandbox and its execs' records go.
#[derive(Debug, Clone, PartialEq)]
pub struct Destroy {
    pub sandbox: String,
}

impl Destroy {
    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let info = sandbox(state, &self.sandbox).await?;
        state.driver.destroy(&info.id).await?;
        state.db.forget_sandbox(info.id.as_str()).await?;
        state
            .events
            .publish(crate::events::sandbox(info.id.as_str(), "destroyed"));
        Ok(())
    }
}

/// `POST /api/sandboxes/{id}/stop`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stop {
    pub sandbox: String,
}

impl Stop {
    /// The sandbox as it is once stopped.
    pub async fn run(self, state: &AppState) -> ApiResult<SandboxInfo> {
        let info = sandbox(state, &self.sandbox).await?;
        state.driver.stop(&info.id).await?;
        state
            .events
            .publish(crate::events::sandbox(info.id.as_str(), "stopped"));
        Ok(state.driver.get(info.id.as_str()).await?)
    }
}

/// `POST /api/sandboxes/{id}/start`.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    pub sandbox: String,
}

impl Start {
    /// The sandbox as it is once started.
    pub async fn run(self, state: &AppState) -> ApiResult<SandboxInfo> {
        let info = sandbox(state, &self.sandbox).await?;
        state.driver.start(&info.id).await?;
        state
            .events
            .publish(crate::events::sandbox(info.id.as_str(), "running"));
        Ok(state.driver.get(info.id.as_str()).await?)
    }
}

/// `POST /api/sandboxes/{id}/pause`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub sandbox: String,
}

impl Pause {
    /// The sandbox as it is once paused.
    pub async fn run(self, state: &AppState) -> ApiResult<SandboxInfo> {
        let info = sandbox(state, &self.sandbox).await?;
        state.driver.pause(&info.id).await?;
        state
            .events
            .publish(crate::events::sandbox(info.id.as_str(), "paused"));
        Ok(state.driver.get(info.id.as_str()).await?)
    }
}

/// `POST /api/sandboxes/{id}/resume`.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub sandbox: String,
}

impl Resume {
    /// The sandbox as it is once resumed.
    pub async fn run(self, state: &AppState) -> ApiResult<SandboxInfo> {
        let info = sandbox(state, &self.sandbox).await?;
        state.driver.resume(&info.id).await?;
        state
            .events
            .publish(crate::events::sandbox(info.id.as_str(), "running"));
        Ok(state.driver.get(info.id.as_str()).await?)
    }
}

/// `GET /api/sandboxes/{id}/stats`: only a running sandbox has any.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadStats {
    pub sandbox: String,
}

impl ReadStats {
    pub async fn run(self, state: &AppState) -> ApiResult<Stats> {
        let info = sandbox(state, &self.sandbox).await?;
        if info.status != SandboxStatus::Running {
            return Err(not_running(&info, "stats"));
        }
        Ok(state.driver.stats(&info.id).await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_listing_filters_by_a_known_status_and_a_label() {
        let list = List::parse(ListSandboxes {
            status: Some("stopped".into()),
            label: Some("team=core".into()),
        })
        .unwrap();
        assert_eq!(
            list,
            List {
                status: Some(SandboxStatus::Stopped),
                label: Some(("team".into(), "core".into())),
            }
        );
        let err = List::parse(ListSandboxes {
            status: Some("happy".into()),
            label: None,
        })
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("status"));
    }
}
