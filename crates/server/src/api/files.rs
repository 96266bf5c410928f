//! Files of a running sandbox: read, write, remove, list, stat, mkdir, rename, and directories
//! as tar archives both ways (through `tar` run in the sandbox).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use stockade_api::Rename;
use stockade_core::{DirEntry, Driver, ExecRequest, FileStat};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{running_sandbox, Json, Path, Query, RawBody};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::AppState;

pub(super) fn routes(router: OpenApiRouter<Arc<AppState>>) -> OpenApiRouter<Arc<AppState>> {
    router
        .routes(routes!(read_file, write_file, delete_file))
        .routes(routes!(list_dir))
        .routes(routes!(stat))
        .routes(routes!(mkdir))
        .routes(routes!(rename))
        .routes(routes!(download_archive, upload_archive))
}

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

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DirQuery {
    /// Absolute directory path inside the sandbox.
    pub path: String,
}

// ---------------------------------------------------------------------------------------------
// Handlers

/// A file's bytes.
#[utoipa::path(get, path = "/api/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "sandbox id or name"), FileQuery),
    responses((status = 200, description = "the file", content_type = "application/octet-stream"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_file(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<FileQuery>,
) -> ApiResult<Response> {
    let data = Read::parse(id, q)?.run(&state).await?;
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
    Write::parse(id, q, body)?.run(&state).await?;
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
    Remove::parse(id, q)?.run(&state).await?;
    Ok(StatusCode::NO_CONTENT)
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
    Ok(Json(ListDir(At::parse(id, q)?).run(&state).await?))
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
    Ok(Json(Stat(At::parse(id, q)?).run(&state).await?))
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
    Mkdir(At::parse(id, q)?).run(&state).await?;
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
    Move::parse(id, body)?.run(&state).await?;
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
    let tar = Pack(At::parse(id, q)?).run(&state).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], tar).into_response())
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
    let action = Unpack {
        at: At::parse(id, q)?,
        tar: body,
    };
    action.run(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Actions

fn check_path(path: &str) -> ApiResult<()> {
    if !path.starts_with('/') || path.contains('\0') {
        return Err(ApiError::invalid(
            "path",
            format!("{path:?} must be an absolute path"),
        ));
    }
    Ok(())
}

/// A sandbox and an absolute path in it: what most file actions need.
#[derive(Debug, Clone, PartialEq)]
pub struct At {
    pub sandbox: String,
    pub path: String,
}

impl At {
    pub fn parse(sandbox: String, q: DirQuery) -> ApiResult<At> {
        check_path(&q.path)?;
        Ok(At {
            sandbox,
            path: q.path,
        })
    }
}

/// `GET /api/sandboxes/{id}/files`.
#[derive(Debug, Clone, PartialEq)]
pub struct Read(pub At);

impl Read {
    pub fn parse(sandbox: String, q: FileQuery) -> ApiResult<Read> {
        check_path(&q.path)?;
        Ok(Read(At {
            sandbox,
            path: q.path,
        }))
    }

    pub async fn run(self, state: &AppState) -> ApiResult<Vec<u8>> {
        let info = running_sandbox(state, &self.0.sandbox, "read a file").await?;
        Ok(state.driver.read_file(&info.id, &self.0.path).await?)
    }
}

/// `PUT /api/sandboxes/{id}/files`: the bytes and the mode of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub at: At,
    pub data: Bytes,
    pub mode: u32,
}

impl Write {
    pub fn parse(sandbox: String, q: FileQuery, data: Bytes) -> ApiResult<Write> {
        check_path(&q.path)?;
        let mode = match &q.mode {
            Some(m) => u32::from_str_radix(m, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| ApiError::invalid("mode", format!("{m:?} is not an octal mode like 644")))?,
            None => 0o644,
        };
        Ok(Write {
            at: At {
                sandbox,
                path: q.path,
            },
            data,
            mode,
        })
    }

    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let info = running_sandbox(state, &self.at.sandbox, "write a file").await?;
        Ok(state
            .driver
            .write_file(&info.id, &self.at.path, self.data.to_vec(), self.mode)
            .await?)
    }
}

/// `DELETE /api/sandboxes/{id}/files`.
#[derive(Debug, Clone, PartialEq)]
pub struct Remove {
    pub at: At,
    pub recursive: bool,
}

impl Remove {
    pub fn parse(sandbox: String, q: FileQuery) -> ApiResult<Remove> {
        check_path(&q.path)?;
        Ok(Remove {
            at: At {
                sandbox,
                path: q.path,
            },
            recursive: q.recursive,
        })
    }

    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let info = running_sandbox(state, &self.at.sandbox, "remove a file").await?;
        Ok(state
            .driver
            .remove(&info.id, &self.at.path, self.recursive)
            .await?)
    }
}

/// `GET /api/sandboxes/{id}/dir`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListDir(pub At);

impl ListDir {
    pub async fn run(self, state: &AppState) -> ApiResult<Vec<DirEntry>> {
        let info = running_sandbox(state, &self.0.sandbox, "list a directory").await?;
        Ok(state.driver.list_dir(&info.id, &self.0.path).await?)
    }
}

/// `GET /api/sandboxes/{id}/stat`.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat(pub At);

impl Stat {
    pub async fn run(self, state: &AppState) -> ApiResult<FileStat> {
        let info = running_sandbox(state, &self.0.sandbox, "stat a path").await?;
        Ok(state.driver.stat(&info.id, &self.0.path).await?)
    }
}

/// `POST /api/sandboxes/{id}/mkdir`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mkdir(pub At);

impl Mkdir {
    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let info = running_sandbox(state, &self.0.sandbox, "make a directory").await?;
        Ok(state.driver.mkdir(&info.id, &self.0.path).await?)
    }
}

/// `POST /api/sandboxes/{id}/rename`.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub sandbox: String,
    pub from: String,
    pub to: String,
}

impl Move {
    pub fn parse(sandbox: String, body: Rename) -> ApiResult<Move> {
        check_path(&body.from)?;
        check_path(&body.to)?;
        Ok(Move {
            sandbox,
            from: body.from,
            to: body.to,
        })
    }

    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let info = running_sandbox(state, &self.sandbox, "rename").await?;
        Ok(state.driver.rename(&info.id, &self.from, &self.to).await?)
    }
}

/// `GET /api/sandboxes/{id}/archive`: `tar -c` of the directory, run in the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pack(pub At);

impl Pack {
    pub async fn run(self, state: &AppState) -> ApiResult<Vec<u8>> {
        let At { sandbox, path } = self.0;
        let info = running_sandbox(state, &sandbox, "download an archive").await?;
        let out = state
            .driver
            .exec(&info.id, ExecRequest::new(["tar", "-C", &path, "-cf", "-", "."]))
            .await?
            .output()
            .await?;
        if !out.exit.success() {
            return Err(ApiError::invalid(
                "path",
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ));
        }
        Ok(out.stdout)
    }
}

/// `PUT /api/sandboxes/{id}/archive`: the archive fed to `tar -x` in the sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpack {
    pub at: At,
    pub tar: Bytes,
}

impl Unpack {
    pub async fn run(self, state: &AppState) -> ApiResult<()> {
        let Unpack {
            at: At { sandbox, path },
            tar,
        } = self;
        let info = running_sandbox(state, &sandbox, "upload an archive").await?;
        state.driver.mkdir(&info.id, &path).await?;
        let mut req = ExecRequest::new(["tar", "-C", &path, "-xf", "-"]);
        req.stdin = true;
        let session = state.driver.exec(&info.id, req).await?;
        let control = Arc::clone(&session.control);
        let feed = async move {
            for chunk in tar.chunks(256 * 1024) {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn query(path: &str, mode: Option<&str>) -> FileQuery {
        FileQuery {
            path: path.into(),
            mode: mode.map(Into::into),
            recursive: false,
        }
    }

    #[test]
    fn a_write_has_an_absolute_path_and_an_octal_mode() {
        let write = Write::parse("s".into(), query("/w/a", Some("600")), Bytes::from("x")).unwrap();
        assert_eq!(write.mode, 0o600);
        assert_eq!(write.at.path, "/w/a");
        let default = Write::parse("s".into(), query("/w/a", None), Bytes::new()).unwrap();
        assert_eq!(default.mode, 0o644);
        for (path, mode, field) in [
            ("w/a", None, "path"),
            ("/w\0", None, "path"),
            ("/w/a", Some("9"), "mode"),
            ("/w/a", Some("10000"), "mode"),
        ] {
            let err = Write::parse("s".into(), query(path, mode), Bytes::new()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{path} {mode:?}");
        }
    }
}
