//! The HTTP API, one module per resource. Every route is annotated for the OpenAPI document
//! served at `/openapi.json`; every error is an [`ApiError`] with a JSON body, a rejected
//! extractor's too.
//!
//! A handler does no work of its own (Firecracker's `api_server/request/*.rs` over
//! `vmm/src/rpc_interface.rs` is the model): it parses the request (path, query, body, headers)
//! into a typed action, plain data checked against itself and the daemon's configuration (no
//! driver, database or secret-store call); calls the action's `run`, the one function that does
//! the work against the drivers, the database and the daemon's state; and puts what `run`
//! returns on the wire (a status, JSON, bytes, an SSE stream, a WebSocket). A new route is a
//! handler and an action in its resource's module and one line in that module's `routes` (see
//! "Adding a route" in ARCHITECTURE.md).

pub mod code;
pub mod execs;
pub mod files;
pub mod sandboxes;
pub mod system;
pub mod tasks;
pub mod templates;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stockade_core::{Driver, Error, SandboxInfo, SandboxStatus};
use utoipa_axum::router::OpenApiRouter;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Every route of the API, added to `router`.
pub fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    let router = system::routes(router);
    let router = sandboxes::routes(router);
    let router = execs::routes(router);
    let router = files::routes(router);
    let router = code::routes(router);
    let router = tasks::routes(router);
    templates::routes(router)
}

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

/// The sandbox `id_or_name` names, in any state.
async fn sandbox(state: &AppState, id_or_name: &str) -> ApiResult<SandboxInfo> {
    if id_or_name.is_empty() || id_or_name.len() > 128 {
        return Err(ApiError::invalid(
            "id",
            "a sandbox id or name is 1 to 128 characters",
        ));
    }
    Ok(state.driver.get(id_or_name).await?)
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

/// The running sandbox `id` names, for `operation`; using it restarts its idle timeout.
async fn running_sandbox(state: &AppState, id: &str, operation: &str) -> ApiResult<SandboxInfo> {
    let info = sandbox(state, id).await?;
    if info.status != SandboxStatus::Running {
        return Err(not_running(&info, operation));
    }
    let _ = state.db.touch(info.id.as_str(), stockade_store::now_secs()).await;
    Ok(info)
}
