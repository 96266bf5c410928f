//! Every error kind, end to end: raised in the daemon (through its routes where the in-memory
//! fake driver can provoke it, else as the daemon's own error value), answered as HTTP status and
//! JSON body, read back by the client, and turned into the CLI's exit code. README's table must
//! list every code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use axum::response::IntoResponse;
use http_body_util::BodyExt;
use stockade_core::{DriverConfig, ErrorKind, Registry};
use tower::ServiceExt;

/// kind, HTTP status, exit code.
const TABLE: &[(ErrorKind, u16, i32)] = &[
    (ErrorKind::Invalid, 400, 2),
    (ErrorKind::File, 400, 2),
    (ErrorKind::MethodNotAllowed, 405, 2),
    (ErrorKind::NotFound, 404, 3),
    (ErrorKind::ExecNotFound, 404, 3),
    (ErrorKind::Unsupported, 422, 4),
    (ErrorKind::Unauthorized, 401, 4),
    (ErrorKind::Forbidden, 403, 4),
    (ErrorKind::WrongState, 409, 5),
    (ErrorKind::NameTaken, 409, 5),
    (ErrorKind::Timeout, 504, 124),
    (ErrorKind::Backend, 502, 125),
    (ErrorKind::Internal, 500, 125),
    (ErrorKind::CommandNotFound, 422, 127),
];

/// The client's reading of a response, and the CLI's exit code for it.
async fn through_client(resp: axum::response::Response) -> (u16, stockade_core::Error, i32) {
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let err = stockade_client::error_from_response("test", status, &body);
    let code = stockade::exit::code_for(&err);
    (status, err, code)
}

struct Daemon {
    app: axum::Router,
    tcp: axum::Router,
    _home: tempfile::TempDir,
}

async fn daemon() -> Daemon {
    let home = tempfile::tempdir().unwrap();
    let mut registry = Registry::new(DriverConfig::new(home.path()));
    stockade_fake::register(&mut registry);
    let config = stockade_server::ServerConfig::embedded(home.path());
    let state = stockade_server::state(&config, Arc::new(stockade_server::Drivers::new(registry)))
        .await
        .unwrap();
    state
        .access_log
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (app, _) = stockade_server::routes(Arc::clone(&state));
    Daemon {
        app,
        tcp: stockade_server::tcp_app(state),
        _home: home,
    }
}

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> axum::response::Response {
    let req = Request::builder().method(method).uri(path);
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    app.clone().oneshot(req.unwrap()).await.unwrap()
}

/// A request that makes the daemon answer with `kind`, where the fake driver can provoke it.
async fn provoke(d: &Daemon, kind: ErrorKind) -> Option<axum::response::Response> {
    Some(match kind {
        ErrorKind::Invalid => {
            send(
                &d.app,
                "POST",
                "/api/sandboxes",
                Some(serde_json::json!({"memory": "lots"})),
            )
            .await
        }
        ErrorKind::NotFound => send(&d.app, "GET", "/api/sandboxes/nosuch", None).await,
        ErrorKind::ExecNotFound => send(&d.app, "GET", "/api/sandboxes/live/execs/nosuch", None).await,
        ErrorKind::Forbidden => {
            send(
                &d.app,
                "POST",
                "/api/sandboxes",
                Some(serde_json::json!({"volumes": ["/tmp:/data"]})),
            )
            .await
        }
        ErrorKind::Unauthorized => send(&d.tcp, "GET", "/api/sandboxes", None).await,
        ErrorKind::MethodNotAllowed => send(&d.app, "PATCH", "/api/sandboxes", None).await,
        ErrorKind::NameTaken => {
            send(
                &d.app,
                "POST",
                "/api/sandboxes",
                Some(serde_json::json!({"name": "live"})),
            )
            .await
        }
        ErrorKind::WrongState => send(&d.app, "POST", "/api/sandboxes/stopped/stop", None).await,
        ErrorKind::CommandNotFound => {
            send(
                &d.app,
                "POST",
                "/api/sandboxes/live/execs",
                Some(serde_json::json!({"argv": ["no-such-program"]})),
            )
            .await
        }
        ErrorKind::File => send(&d.app, "GET", "/api/sandboxes/live/files?path=/nope", None).await,
        // The fake cannot time out, fail its backend, reject a feature or break the database.
        ErrorKind::Timeout | ErrorKind::Backend | ErrorKind::Unsupported | ErrorKind::Internal => {
            return None
        }
    })
}

#[tokio::test]
async fn every_error_kind_reaches_the_cli_as_its_exit_code() {
    let d = daemon().await;
    let made = send(
        &d.app,
        "POST",
        "/api/sandboxes",
        Some(serde_json::json!({"name": "live"})),
    )
    .await;
    assert_eq!(made.status(), 201);
    let made = send(
        &d.app,
        "POST",
        "/api/sandboxes",
        Some(serde_json::json!({"name": "stopped"})),
    )
    .await;
    assert_eq!(made.status(), 201);
    assert_eq!(
        send(&d.app, "POST", "/api/sandboxes/stopped/stop", None)
            .await
            .status(),
        200
    );

    assert_eq!(TABLE.len(), ErrorKind::ALL.len(), "the table covers every kind");
    let mut by_route = 0;
    for &(kind, status, exit) in TABLE {
        let resp = match provoke(&d, kind).await {
            Some(resp) => {
                by_route += 1;
                resp
            }
            None => stockade_server::error::ApiError::of(kind, format!("a {kind} error")).into_response(),
        };
        let (got_status, err, got_exit) = through_client(resp).await;
        assert_eq!(got_status, status, "{kind}: {err}");
        assert_eq!(err.kind(), kind, "{kind}: the client reads the kind back: {err}");
        assert_eq!(got_exit, exit, "{kind}: {err}");
    }
    assert_eq!(by_route, 10, "kinds provoked through a real route");
    // The one exit code that is not a kind's: a program that cannot be executed.
    let err = stockade_core::Error::Remote {
        kind: ErrorKind::Invalid,
        message: "not executable".into(),
        field: Some("command".into()),
    };
    assert_eq!(stockade::exit::code_for(&err), 126);
}

#[test]
fn readme_lists_every_exit_code() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme.split("## Exit codes").nth(1).unwrap();
    for &(kind, _, exit) in TABLE {
        assert!(
            table.contains(&format!("\n| {exit} |")),
            "README's exit codes lack {exit} ({kind})"
        );
    }
    for code in [126, 127] {
        assert!(
            table.contains(&format!("\n| {code} |")),
            "README's exit codes lack {code}"
        );
    }
}
