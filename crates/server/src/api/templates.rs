//! Templates for the E2B-compatible API: what `templateID` a create names runs on and as.
//! `base` is built in; registering one under that name replaces it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use stockade_api::E2bTemplate;
use stockade_core::ErrorKind;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(list_templates, add_template))
        .routes(routes!(remove_template))
}

/// Every template, by name (the built-in `base` among them unless one replaces it).
#[utoipa::path(get, path = "/api/templates", tag = "templates",
    responses((status = 200, body = Vec<E2bTemplate>)))]
pub async fn list_templates(State(state): State<Arc<AppState>>) -> Json<Vec<E2bTemplate>> {
    Json(crate::e2b::templates(&state).await)
}

/// Registers a template, or replaces the one of that name.
#[utoipa::path(post, path = "/api/templates", tag = "templates", request_body = E2bTemplate,
    responses((status = 201, body = E2bTemplate), (status = 400, body = ErrorBody)))]
pub async fn add_template(
    State(state): State<Arc<AppState>>,
    Json(template): Json<E2bTemplate>,
) -> ApiResult<(StatusCode, Json<E2bTemplate>)> {
    Ok((StatusCode::CREATED, Json(Add { template }.run(&state).await?)))
}

/// Removes a registered template (the built-in `base` cannot be; a registered `base` can).
#[utoipa::path(delete, path = "/api/templates/{name}", tag = "templates", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_template(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    Remove { name }.run(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/templates`.
#[derive(Debug, Clone, PartialEq)]
pub struct Add {
    pub template: E2bTemplate,
}

impl Add {
    pub async fn run(self, state: &AppState) -> ApiResult<E2bTemplate> {
        let registry = state.driver.registry();
        crate::e2b::validate_template(&self.template, &registry.names())?;
        let data = serde_json::to_string(&self.template).map_err(ApiError::internal)?;
        state.db.put_template(&self.template.name, &data).await?;
        Ok(self.template)
    }
}

/// `DELETE /api/templates/{name}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Remove {
    pub name: String,
}

impl Remove {
    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        if state.db.remove_template(&self.name).await? {
            return Ok(());
        }
        let why = if self.name == "base" {
            "template base is built in (only a registered one replacing it can be removed)".to_owned()
        } else {
            format!("no template {:?}", self.name)
        };
        Err(ApiError::of(ErrorKind::NotFound, why))
    }
}
