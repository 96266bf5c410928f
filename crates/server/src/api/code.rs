//! The code in a sandbox's workdir: the diff since its baseline commit, applying a patch, and
//! pushing the change from the host. `stockade-code` does the work, with git run in the sandbox.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stockade_api::{Push, Pushed};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{running_sandbox, Json, Path, Query, RawBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(diff))
        .routes(routes!(apply))
        .routes(routes!(push))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// A diffstat instead of the patch.
    #[serde(default)]
    pub stat: bool,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A binary-safe patch of everything changed in the workdir since the baseline commit.
#[utoipa::path(get, path = "/api/sandboxes/{id}/diff", tag = "code",
    params(("id" = String, Path, description = "sandbox id or name"), DiffQuery),
    responses((status = 200, description = "the patch", content_type = "text/x-diff"), (status = 404, body = ErrorBody)))]
pub async fn diff(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<Response> {
    let action = Diff {
        sandbox: id,
        stat: q.stat,
    };
    let patch = action.run(&state).await?;
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
    let action = Apply {
        sandbox: id,
        patch: body,
    };
    action.run(&state).await?;
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
    let commit = PushChange::parse(id, body)?.run(&state).await?;
    Ok(Json(Pushed { commit }))
}

// ---------------------------------------------------------------------------------------------
// Actions

/// `GET /api/sandboxes/{id}/diff`: the patch, or with `stat` a diffstat.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub sandbox: String,
    pub stat: bool,
}

impl Diff {
    pub async fn run(self, state: &AppState) -> ApiResult<Vec<u8>> {
        let info = running_sandbox(state, &self.sandbox, "diff").await?;
        Ok(stockade_code::diff(state.driver.as_ref(), &info.id, &info.spec.workdir, self.stat).await?)
    }
}

/// `POST /api/sandboxes/{id}/apply`.
#[derive(Debug, Clone, PartialEq)]
pub struct Apply {
    pub sandbox: String,
    pub patch: Bytes,
}

impl Apply {
    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let info = running_sandbox(state, &self.sandbox, "apply").await?;
        Ok(stockade_code::apply(
            state.driver.as_ref(),
            &info.id,
            &info.spec.workdir,
            self.patch.to_vec(),
        )
        .await?)
    }
}

/// `POST /api/sandboxes/{id}/push`: where to, and the secret holding the token, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct PushChange {
    pub sandbox: String,
    pub remote: String,
    pub branch: String,
    pub message: String,
    /// Checked as a name; its value is read only when the push runs.
    pub token_secret: Option<String>,
}

impl PushChange {
    pub fn parse(sandbox: String, body: Push) -> ApiResult<PushChange> {
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
        if let Some(name) = &body.token_secret {
            stockade_secrets::validate_name(name)
                .map_err(|e| ApiError::invalid("token_secret", e.to_string()))?;
        }
        Ok(PushChange {
            sandbox,
            remote: body.remote,
            branch: body.branch,
            message: body
                .message
                .unwrap_or_else(|| "Changes made in a Stockade sandbox".into()),
            token_secret: body.token_secret,
        })
    }

    /// The commit pushed.
    pub async fn run(self, state: &AppState) -> ApiResult<String> {
        let token = match &self.token_secret {
            Some(name) => Some(
                state
                    .secrets
                    .get(name)
                    .map_err(|e| ApiError::invalid("token_secret", e.to_string()))?
                    .ok_or_else(|| ApiError::invalid("token_secret", format!("no secret named {name}")))?,
            ),
            None => std::env::var("STOCKADE_GIT_TOKEN").ok().filter(|t| !t.is_empty()),
        };
        if stockade_code::source::is_host_path_remote(&self.remote) {
            state.check_host_path("remote", "this remote")?;
        }
        let info = running_sandbox(state, &self.sandbox, "push").await?;
        let req = stockade_code::PushRequest {
            remote: self.remote,
            branch: self.branch,
            message: self.message,
            token,
        };
        let scratch = state.home.join("cache");
        Ok(stockade_code::push(
            state.driver.as_ref(),
            &info.id,
            &info.spec.workdir,
            &req,
            &scratch,
        )
        .await?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn push(branch: &str, token_secret: Option<&str>) -> Push {
        Push {
            remote: "https://example.invalid/r.git".into(),
            branch: branch.into(),
            message: None,
            token_secret: token_secret.map(Into::into),
        }
    }

    #[test]
    fn a_push_names_a_branch_and_at_most_a_secret_name() {
        let action = PushChange::parse("s".into(), push("feature/x", Some("GH_TOKEN"))).unwrap();
        assert_eq!(action.message, "Changes made in a Stockade sandbox");
        assert_eq!(action.token_secret.as_deref(), Some("GH_TOKEN"));
        for (branch, secret, field) in [
            ("", None, "branch"),
            ("-f", None, "branch"),
            ("a..b", None, "branch"),
            ("a\tb", None, "branch"),
            ("b", Some("not a name"), "token_secret"),
        ] {
            let err = PushChange::parse("s".into(), push(branch, secret)).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{branch:?} {secret:?}");
        }
    }
}
