//! The web UI: a page at `/` and its assets under `/ui/`, all embedded in the binary by
//! `build.rs` (the UI's source is `crates/server/ui/`). The page and its assets are public; the
//! API they call is not. A browser logs in by putting its token in the `stockade_token` cookie,
//! which the API takes only from pages of its own origin.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::AppState;

/// (path under /ui/, content type, bytes)
static ASSETS: &[(&str, &str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// What the page may load and connect to: only this origin. Styles may be inline (xterm.js
/// sets them); no inline scripts, no frames of this page elsewhere.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
                   form-action 'self'";

/// The UI's routes, to merge into the daemon's.
pub fn router(state: Arc<AppState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/ui/session", get(session))
        .route("/ui/{*path}", get(asset))
        .with_state(state)
}

/// Paths served without a token: the page, its assets and the session check.
pub fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/ui/")
}

/// Whether a request may be authenticated by the cookie: not when a page of another origin
/// made it (cross-site request forgery; WebSocket hijacking). Browsers send `Origin` on every
/// cross-origin request and WebSocket handshake.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, host)| host);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// The token in the `stockade_token` cookie.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| {
            c.split(';')
                .find_map(|kv| kv.trim().strip_prefix("stockade_token="))
        })
}

fn asset_response(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn index() -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == "index.html") else {
        return ApiError::of(stockade_core::ErrorKind::NotFound, "this build has no web UI").into_response();
    };
    let mut response = asset_response(content_type, bytes);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => asset_response(content_type, bytes),
        None => {
            ApiError::of(stockade_core::ErrorKind::NotFound, format!("no UI file {path:?}")).into_response()
        }
    }
}

/// Whether the browser's cookie holds a valid token, asked without a 401 (which a browser
/// reports as an error in its console): `{"authenticated": bool}`.
async fn session(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let authenticated = match cookie_token(&headers) {
        Some(token) if same_origin(&headers) => match state.db.token_valid(token.trim()).await {
            Ok(valid) => valid,
            Err(e) => return ApiError::internal(e).into_response(),
        },
        _ => false,
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "authenticated": authenticated })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(k.clone(), v);
            }
        }
        h
    }

    #[test]
    fn the_cookie_counts_only_from_this_origin() {
        assert!(same_origin(&headers(&[(header::HOST, "127.0.0.1:7070")])));
        assert!(same_origin(&headers(&[
            (header::HOST, "127.0.0.1:7070"),
            (header::ORIGIN, "http://127.0.0.1:7070"),
        ])));
        assert!(!same_origin(&headers(&[
            (header::HOST, "127.0.0.1:7070"),
            (header::ORIGIN, "http://127.0.0.1:8080"),
        ])));
        assert!(!same_origin(&headers(&[
            (header::HOST, "127.0.0.1:7070"),
            (header::ORIGIN, "null")
        ])));
    }

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        assert!(ASSETS.iter().any(|(p, _, _)| *p == "index.html"));
        assert!(ASSETS.iter().any(|(p, _, _)| *p == "vendor/xterm.mjs"));
        assert!(ASSETS.iter().any(|(p, _, _)| *p == "vendor/addon-fit.mjs"));
        assert!(ASSETS
            .iter()
            .all(|(p, _, _)| !p.starts_with("node_modules") && !p.starts_with("tests")));
        assert!(is_public("/") && is_public("/ui/app.js") && !is_public("/api/sandboxes"));
    }
}
