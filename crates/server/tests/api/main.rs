//! The daemon's routes in process, over a registry with the in-memory fake driver: no root, no
//! kernel, no engine (`tower::ServiceExt::oneshot`, as axum's testing example does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use stockade_core::{DriverConfig, Registry};
use tower::ServiceExt;

struct Daemon {
    app: axum::Router,
    _home: tempfile::TempDir,
}

async fn daemon() -> Daemon {
    let home = tempfile::tempdir().unwrap();
    let mut registry = Registry::new(DriverConfig::new(home.path()));
    stockade_fake::register(&mut registry);
    let config = stockade_server::ServerConfig {
        listen: None,
        socket: None,
        home: home.path().to_path_buf(),
        db: None,
        retention: std::time::Duration::from_secs(60),
        allow_host_paths: false,
    };
    let state = stockade_server::state(&config, Arc::new(stockade_server::Drivers::new(registry)))
        .await
        .unwrap();
    state
        .access_log
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (app, _) = stockade_server::routes(state);
    Daemon { app, _home: home }
}

async fn call(
    d: &Daemon,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let req = Request::builder().method(method).uri(path);
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let resp = d.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test]
async fn a_registered_driver_is_listed_with_its_sandboxes() {
    let d = daemon().await;
    let (status, created) = call(
        &d,
        "POST",
        "/api/sandboxes",
        Some(serde_json::json!({"name": "f1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["driver"], "fake", "the only driver is the default");
    let (status, drivers) = call(&d, "GET", "/api/drivers", None).await;
    assert_eq!(status, StatusCode::OK);
    let fake = &drivers.as_array().unwrap()[0];
    assert_eq!(fake["name"], "fake");
    assert_eq!(fake["available"], true);
    assert_eq!(fake["sandboxes"], 1);
    assert_eq!(fake["summary"], "in memory");
}

#[tokio::test]
async fn an_unknown_driver_is_a_400_naming_the_known_ones() {
    let d = daemon().await;
    let (status, body) = call(
        &d,
        "POST",
        "/api/sandboxes",
        Some(serde_json::json!({"driver": "nope"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "driver");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("known drivers: fake"),
        "{body}"
    );
}
