//! envd's `/files`: download (`GET`, the raw bytes) and upload (`POST`, multipart with one
//! part per file, or one file as `application/octet-stream`, gzip-encoded or not). Uploads are
//! written in place, as envd writes them, so a watcher sees the same events.

use std::io::Read as _;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use stockade_core::{Driver, FileOp};

use super::envd::Envd;
use crate::AppState;

/// An error as envd's HTTP routes give it: `{"code": status, "message"}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({ "code": status.as_u16(), "message": message.into() });
    (status, axum::Json(body)).into_response()
}

fn file_error(e: stockade_core::Error) -> Response {
    let rpc = super::connect::RpcError::from(e);
    let status = match rpc.code {
        super::connect::Code::NotFound => StatusCode::NOT_FOUND,
        super::connect::Code::PermissionDenied => StatusCode::FORBIDDEN,
        super::connect::Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        super::connect::Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, rpc.message)
}

/// The query's `path` and `username`.
struct FilesQuery {
    path: Option<String>,
    username: Option<String>,
}

impl FilesQuery {
    fn parse(query: Option<&str>) -> FilesQuery {
        let mut q = FilesQuery {
            path: None,
            username: None,
        };
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "path" => q.path = Some(v.into_owned()).filter(|p| !p.is_empty()),
                "username" => q.username = Some(v.into_owned()).filter(|u| !u.is_empty()),
                _ => {}
            }
        }
        q
    }
}

pub async fn handle(state: &Arc<AppState>, mut envd: Envd, req: Request) -> Response {
    let q = FilesQuery::parse(req.uri().query());
    if let Some(user) = q.username.clone() {
        envd.user = user;
    }
    match *req.method() {
        Method::GET => download(state, &envd, q).await,
        Method::POST => upload(state, &envd, q, req).await,
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "/files takes GET and POST"),
    }
}

async fn download(state: &AppState, envd: &Envd, q: FilesQuery) -> Response {
    let Some(path) = q.path else {
        return error(StatusCode::BAD_REQUEST, "path is required");
    };
    let path = envd.resolve(&path);
    match state.driver.read_file(&envd.info.id, &path).await {
        Ok(data) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(data))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
        Err(e) => file_error(e),
    }
}

async fn upload(state: &AppState, envd: &Envd, q: FilesQuery, req: Request) -> Response {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let gzip = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let mut multipart = match Multipart::from_request(req, &()).await {
            Ok(m) => m,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
        };
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => break,
                Err(e) => return error(e.status(), e.body_text()),
            };
            // One file: the query's path; several: each part's file name is its path.
            let target = match (&q.path, field.file_name()) {
                (Some(p), _) if files.is_empty() => p.clone(),
                (_, Some(name)) if !name.is_empty() => name.to_owned(),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "each part needs a filename, the file's path",
                    )
                }
            };
            let data = match field.bytes().await {
                Ok(d) => d,
                Err(e) => return error(e.status(), e.body_text()),
            };
            let resolved = envd.resolve(&target);
            if files.iter().any(|(p, _)| *p == resolved) {
                return error(StatusCode::BAD_REQUEST, format!("{resolved} is uploaded twice"));
            }
            files.push((resolved, data.to_vec()));
        }
    } else {
        let Some(path) = q.path.clone() else {
            return error(
                StatusCode::BAD_REQUEST,
                "path is required for an application/octet-stream upload",
            );
        };
        let body = match axum::body::to_bytes(req.into_body(), crate::MAX_BODY).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the upload: {e}")),
        };
        let data = if gzip {
            let mut out = Vec::new();
            let decoder = flate2::read::GzDecoder::new(&body[..]);
            if let Err(e) = decoder.take(crate::MAX_BODY as u64 * 4).read_to_end(&mut out) {
                return error(StatusCode::BAD_REQUEST, format!("the gzip body: {e}"));
            }
            out
        } else {
            body.to_vec()
        };
        files.push((envd.resolve(&path), data));
    }
    if files.is_empty() {
        return error(StatusCode::BAD_REQUEST, "no file in the upload");
    }
    let mut written = Vec::new();
    for (path, data) in files {
        let op = FileOp::Write {
            path: path.clone(),
            mode: 0o644,
            data,
            in_place: true,
            owner: Some(envd.user.clone()),
        };
        if let Err(e) = state.driver.file(&envd.info.id, op).await {
            return file_error(e);
        }
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        written.push(json!({ "path": path, "name": name, "type": "file" }));
    }
    axum::Json(written).into_response()
}
