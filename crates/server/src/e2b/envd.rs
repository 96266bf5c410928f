//! envd on the daemon: a request carrying `E2b-Sandbox-Id` is for the envd of that sandbox
//! (E2B's proxy routes the same way), whatever its path. It never reaches Stockade's API: the
//! sandbox's access token (`X-Access-Token`) is its credential, not an API token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use stockade_core::{Driver, SandboxInfo, SandboxStatus};

use super::connect::{Code, RpcError};
use super::{Record, ENVD_PORT};
use crate::AppState;

/// The sandbox a request is for, found and authorised.
#[derive(Debug, Clone)]
pub struct Envd {
    pub record: Record,
    pub info: SandboxInfo,
    /// The user the request runs as: Basic auth's (`user:`), else the template's.
    pub user: String,
}

impl Envd {
    /// The home of the request's user (relative paths resolve against it).
    pub fn home(&self) -> String {
        if self.user == self.record.user {
            self.record.home.clone()
        } else if self.user == "root" {
            "/root".into()
        } else {
            format!("/home/{}", self.user)
        }
    }

    pub fn resolve(&self, path: &str) -> String {
        super::resolve_in(&self.home(), path)
    }
}

/// The middleware: envd requests are answered here, others go on to the daemon's routes.
pub async fn dispatch(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(id) = header(req.headers(), "e2b-sandbox-id") else {
        return next.run(req).await;
    };
    let id = id.to_owned();
    let port = header(req.headers(), "e2b-sandbox-port")
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(ENVD_PORT);
    let Some((record, info)) = find(&state, &id).await else {
        return refused(req, sandbox_not_found(&id));
    };
    let path = req.uri().path().to_owned();
    if path == "/health" && port == ENVD_PORT {
        return StatusCode::NO_CONTENT.into_response();
    }
    // Every request but envd's health check, a sandbox port's included, needs the sandbox's
    // access token: a port is not public on Stockade.
    let token = header(req.headers(), "x-access-token");
    if token != Some(record.access_token.as_str()) {
        let sent = token.is_some();
        return refused(req, unauthenticated(sent));
    }
    if port != ENVD_PORT {
        return forward(&state, &info, port, req).await;
    }
    let user = match basic_user(req.headers()) {
        Ok(user) => user.unwrap_or_else(|| record.user.clone()),
        Err(e) => return refused(req, super::connect::unary_reply::<()>(Err(e))),
    };
    let envd = Envd { record, info, user };
    if path == "/files" {
        return super::files::handle(&state, envd, req).await;
    }
    let content_type = header(req.headers(), "content-type").unwrap_or("");
    if content_type.contains("proto") {
        let e = RpcError::new(
            Code::Unimplemented,
            "only Connect's JSON codec is served (application/json, application/connect+json)",
        );
        return if content_type.contains("connect+") {
            super::connect::stream_error(e)
        } else {
            super::connect::unary_reply::<()>(Err(e))
        };
    }
    if let Some(method) = path.strip_prefix("/process.Process/") {
        return super::process::call(&state, envd, method.to_owned(), req).await;
    }
    if let Some(method) = path.strip_prefix("/filesystem.Filesystem/") {
        return super::filesystem::call(&state, envd, method.to_owned(), req).await;
    }
    super::connect::unary_reply::<()>(Err(RpcError::new(
        Code::Unimplemented,
        format!("envd has no {path}"),
    )))
}

/// Answers a request refused before its body was read, at once, and reads the rest of the body
/// meanwhile (up to the largest upload, for at most 30 s), as envd does: the connection stays
/// usable for the client's next request. A client that pools connections (the SDKs do) would
/// otherwise find it closed under its next call.
fn refused(req: Request, response: Response) -> Response {
    let body = req.into_body();
    tokio::spawn(async move {
        let drain = axum::body::to_bytes(body, crate::MAX_BODY);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), drain).await;
    });
    response
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A request for another port of the sandbox: sent there over the driver's stream to it
/// (HTTP/1.1; the E2B headers are left out), the answer streamed back. Nothing listening is
/// E2B's 502 for a closed port.
async fn forward(state: &AppState, info: &SandboxInfo, port: u16, mut req: Request) -> Response {
    let closed = |why: String| {
        let body = json!({
            "sandboxId": info.id.as_str(),
            "message": format!("The sandbox is running but port {port} is not open: {why}"),
            "port": port,
            "code": 502,
        });
        (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
    };
    let stream = match state.driver.connect_port(&info.id, port).await {
        Ok(s) => s,
        Err(e) => return refused(req, closed(e.to_string())),
    };
    let (mut sender, conn) =
        match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return refused(req, closed(e.to_string())),
        };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    for name in ["e2b-sandbox-id", "e2b-sandbox-port", "x-access-token"] {
        req.headers_mut().remove(name);
    }
    match sender.send_request(req).await {
        Ok(response) => response.map(axum::body::Body::new),
        Err(e) => closed(e.to_string()),
    }
}

/// The record and sandbox with exactly this id, if it is running.
async fn find(state: &AppState, id: &str) -> Option<(Record, SandboxInfo)> {
    let record = Record::load(state, id).await?;
    let info = state.driver.get(id).await.ok()?;
    (info.id.as_str() == id && info.status == SandboxStatus::Running).then_some((record, info))
}

/// E2B's proxy's answer for a sandbox that is not there (or not running): the SDKs match its
/// message and raise their "sandbox not running" error.
pub fn sandbox_not_found(id: &str) -> Response {
    let body = json!({ "sandboxId": id, "message": "The sandbox was not found", "code": 502 });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

fn unauthenticated(sent: bool) -> Response {
    let message = if sent {
        "the access token is not this sandbox's (X-Access-Token)"
    } else {
        "an access token is required (X-Access-Token: the envdAccessToken the create answered with)"
    };
    super::connect::unary_reply::<()>(Err(RpcError::new(Code::Unauthenticated, message)))
}

/// The user of `Authorization: Basic base64("user:")`, if sent.
fn basic_user(headers: &HeaderMap) -> Result<Option<String>, RpcError> {
    use base64::Engine as _;
    let Some(value) = header(headers, "authorization") else {
        return Ok(None);
    };
    let bad = || {
        RpcError::new(
            Code::InvalidArgument,
            "the Authorization header must be `Basic base64(USER:)`",
        )
    };
    let encoded = value.strip_prefix("Basic ").ok_or_else(bad)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split(':').next().unwrap_or("").to_owned();
    if user.is_empty() {
        return Ok(None);
    }
    if user.len() > 32
        || !user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(RpcError::new(
            Code::InvalidArgument,
            format!("user {user:?} is not a user name"),
        ));
    }
    Ok(Some(user))
}
