//! Health, metrics, drivers, the event stream, and what no route answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::json;
use stockade_core::{Driver, DriverConfig, DriverFactory, Error};
use tower::ServiceExt;

use crate::{daemon, daemon_with, sse};

#[tokio::test]
async fn healthz_answers_without_a_token() {
    let d = daemon().await;
    let reply = d.get("/healthz").await;
    reply.ok(200);
    assert_eq!(reply.text(), "ok\n");
    // On TCP every other route needs a token.
    let tcp = stockade_server::tcp_app(Arc::clone(&d.state));
    let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
    let resp = tcp.clone().oneshot(get("/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = tcp.oneshot(get("/metrics")).await.unwrap();
    let reply = crate::Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.into_body().collect().await.unwrap().to_bytes(),
    };
    let message = reply.error(401, "unauthorized", None);
    assert!(message.contains("token"), "{message}");
}

#[tokio::test]
async fn metrics_count_what_the_api_did() {
    let d = daemon().await;
    let id = d.create(json!({})).await;
    d.run(&id, &["true"]).await;
    d.get("/api/sandboxes/nope").await;
    d.get("/no/such/route").await;
    let reply = d.get("/metrics").await;
    reply.ok(200);
    assert_eq!(reply.content_type(), "text/plain; version=0.0.4; charset=utf-8");
    let text = reply.text();
    for line in [
        "stockade_sandboxes_created_total{driver=\"fake\"} 1\n",
        "stockade_execs_started_total{driver=\"fake\"} 1\n",
        "stockade_execs_ended_total{driver=\"fake\",outcome=\"exited\"} 1\n",
        "stockade_exec_duration_seconds_count{driver=\"fake\"} 1\n",
        "stockade_sandboxes{driver=\"fake\",status=\"running\"} 1\n",
        // Routes are the templates, never the ids in a path.
        "stockade_http_requests_total{method=\"GET\",route=\"/api/sandboxes/{id}\",status=\"404\"} 1\n",
        "stockade_http_requests_total{method=\"POST\",route=\"/api/sandboxes\",status=\"201\"} 1\n",
        "stockade_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n",
        "stockade_http_request_duration_seconds_count{method=\"POST\",route=\"/api/sandboxes\"} 1\n",
        "stockade_execs_running 0\n",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    assert!(
        !text.contains(id.as_str()),
        "a sandbox id became a label:\n{text}"
    );
}

#[tokio::test]
async fn a_registered_driver_is_listed_with_its_sandboxes() {
    let d = daemon().await;
    let reply = d.json("POST", "/api/sandboxes", json!({"name": "f1"})).await;
    reply.ok(201);
    assert_eq!(reply.json()["driver"], "fake", "the only driver is the default");
    let reply = d.get("/api/drivers").await;
    reply.ok(200);
    let drivers = reply.json();
    let fake = &drivers.as_array().unwrap()[0];
    assert_eq!(fake["name"], "fake");
    assert_eq!(fake["available"], true);
    assert_eq!(fake["sandboxes"], 1);
    assert_eq!(fake["summary"], "in memory");
    assert_eq!(fake["circuits"], json!([]));
    // What a client reads is strict: the body is exactly the wire type.
    serde_json::from_slice::<Vec<stockade_api::DriverInfo>>(&reply.body).unwrap();
}

/// A driver whose backend is missing on this host.
struct Broken;

impl DriverFactory for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn description(&self) -> &'static str {
        "never builds"
    }
    fn build(&self, _: &DriverConfig) -> stockade_core::Result<Arc<dyn Driver>> {
        Err(Error::unsupported(
            "broken",
            "sandboxes",
            "its backend is missing",
        ))
    }
}

#[tokio::test]
async fn a_driver_that_cannot_be_built_is_listed_as_unavailable() {
    let d = daemon_with(|r| {
        r.register(Broken);
    })
    .await;
    let reply = d.get("/api/drivers").await;
    reply.ok(200);
    let drivers = reply.json();
    let names: Vec<&str> = drivers
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fake", "broken"], "in registration order");
    let broken = &drivers[1];
    assert_eq!(broken["available"], false);
    assert_eq!(broken["description"], "never builds");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("its backend is missing"),
        "{broken}"
    );
    assert!(broken.get("summary").is_none(), "{broken}");
}

#[tokio::test]
async fn status_changes_arrive_as_server_sent_events() {
    let d = daemon().await;
    let resp = d
        .app
        .clone()
        .oneshot(Request::get("/api/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let id = d.create(json!({})).await;
    d.call("POST", &format!("/api/sandboxes/{id}/stop")).await.ok(200);
    // The stream never ends: read until both changes are in.
    let mut text = String::new();
    let events = loop {
        let events = sse(&text);
        if events.len() >= 2 {
            break events;
        }
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("no event within 10 s")
            .unwrap()
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
    };
    assert_eq!(events[0].event, "sandbox");
    assert_eq!(events[0].data["kind"], "sandbox");
    assert_eq!(events[0].data["id"], id.as_str());
    assert_eq!(events[0].data["status"], "running");
    assert_eq!(events[1].data["status"], "stopped");
    for e in &events {
        serde_json::from_value::<stockade_api::StatusChange>(e.data.clone()).unwrap();
    }
}

#[tokio::test]
async fn no_route_and_a_wrong_method_are_json_errors() {
    let d = daemon().await;
    let message = d.get("/api/nothing-here").await.error(404, "not_found", None);
    assert!(message.contains("route"), "{message}");
    let message = d
        .call("POST", "/healthz")
        .await
        .error(405, "method_not_allowed", None);
    assert!(message.contains("method"), "{message}");
    d.call("PATCH", "/api/sandboxes")
        .await
        .error(405, "method_not_allowed", None);
}
