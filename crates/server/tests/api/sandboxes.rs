//! Sandboxes: create, list, get, stop, start, stats, destroy.

use serde_json::json;

use crate::daemon;

#[tokio::test]
async fn a_sandbox_lives_by_id_and_by_name() {
    let d = daemon().await;
    let reply = d
        .json(
            "POST",
            "/api/sandboxes",
            json!({"name": "s1", "labels": ["team=core"], "idle_timeout": "10m"}),
        )
        .await;
    reply.ok(201);
    let created: stockade_core::SandboxInfo = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(created.name, "s1");
    assert_eq!(created.status.as_str(), "running");
    let id = created.id.to_string();
    for key in [id.as_str(), "s1", &id[..6]] {
        let reply = d.get(&format!("/api/sandboxes/{key}")).await;
        reply.ok(200);
        assert_eq!(reply.json()["id"], id.as_str(), "by {key}");
    }
    let stats = d.get(&format!("/api/sandboxes/{id}/stats")).await;
    stats.ok(200);
    assert_eq!(stats.json()["source"], "fake");

    let reply = d.call("POST", "/api/sandboxes/s1/stop").await;
    reply.ok(200);
    assert_eq!(reply.json()["status"], "stopped");
    let message = d
        .call("POST", "/api/sandboxes/s1/stop")
        .await
        .error(409, "wrong_state", None);
    assert!(message.contains("stopped"), "{message}");
    let message = d
        .get(&format!("/api/sandboxes/{id}/stats"))
        .await
        .error(409, "wrong_state", None);
    assert!(message.contains("stats"), "{message}");

    let reply = d.call("POST", "/api/sandboxes/s1/start").await;
    reply.ok(200);
    assert_eq!(reply.json()["status"], "running");
    let message = d
        .call("POST", "/api/sandboxes/s1/start")
        .await
        .error(409, "wrong_state", None);
    assert!(message.contains("running"), "{message}");

    let reply = d.call("DELETE", "/api/sandboxes/s1").await;
    reply.ok(204);
    assert!(reply.body.is_empty());
    let message = d
        .get(&format!("/api/sandboxes/{id}"))
        .await
        .error(404, "not_found", None);
    assert!(message.contains(&id), "{message}");
    let reply = d.get("/api/sandboxes").await;
    reply.ok(200);
    assert_eq!(reply.json(), json!([]));
}

#[tokio::test]
async fn pause_freezes_a_running_sandbox_and_resume_thaws_it() {
    let d = daemon().await;
    d.json("POST", "/api/sandboxes", json!({"name": "p1"}))
        .await
        .ok(201);
    let reply = d.call("POST", "/api/sandboxes/p1/pause").await;
    reply.ok(200);
    assert_eq!(reply.json()["status"], "paused");
    let message = d
        .call("POST", "/api/sandboxes/p1/pause")
        .await
        .error(409, "wrong_state", None);
    assert!(
        message.contains("paused") && message.contains("running"),
        "{message}"
    );
    let message = d
        .get("/api/sandboxes/p1/stats")
        .await
        .error(409, "wrong_state", None);
    assert!(message.contains("paused"), "{message}");
    let reply = d.get("/api/sandboxes?status=paused").await;
    reply.ok(200);
    assert_eq!(reply.json().as_array().unwrap().len(), 1);
    let reply = d.call("POST", "/api/sandboxes/p1/resume").await;
    reply.ok(200);
    assert_eq!(reply.json()["status"], "running");
    let message = d
        .call("POST", "/api/sandboxes/p1/resume")
        .await
        .error(409, "wrong_state", None);
    assert!(
        message.contains("running") && message.contains("paused"),
        "{message}"
    );
    d.call("DELETE", "/api/sandboxes/p1").await.ok(204);
}

#[tokio::test]
async fn listing_filters_by_status_and_label() {
    let d = daemon().await;
    let a = d.create(json!({"labels": ["team=core"]})).await;
    let b = d.create(json!({"labels": ["team=ui"]})).await;
    d.call("POST", &format!("/api/sandboxes/{b}/stop")).await.ok(200);
    let dr = &d;
    let ids = move |uri: String| async move {
        let reply = dr.get(&uri).await;
        reply.ok(200);
        let list: Vec<stockade_core::SandboxInfo> = serde_json::from_slice(&reply.body).unwrap();
        list.into_iter().map(|s| s.id.to_string()).collect::<Vec<_>>()
    };
    // Oldest first, by the second: two made in the same second come by id.
    let mut both = [a.as_str(), b.as_str()];
    both.sort();
    assert_eq!(ids("/api/sandboxes".into()).await, both);
    assert_eq!(ids("/api/sandboxes?status=running".into()).await, [a.as_str()]);
    assert_eq!(ids("/api/sandboxes?status=stopped".into()).await, [b.as_str()]);
    assert_eq!(ids("/api/sandboxes?label=team%3Dui".into()).await, [b.as_str()]);
    assert!(ids("/api/sandboxes?status=running&label=team%3Dui".into())
        .await
        .is_empty());
}

#[tokio::test]
async fn bad_list_queries_are_400s_naming_the_filter() {
    let d = daemon().await;
    let message = d
        .get("/api/sandboxes?status=happy")
        .await
        .error(400, "invalid", Some("status"));
    assert!(message.contains("happy"), "{message}");
    d.get("/api/sandboxes?label=novalue")
        .await
        .error(400, "invalid", Some("label"));
    let message = d
        .get("/api/sandboxes?colour=red")
        .await
        .error(400, "invalid", Some("query"));
    assert!(message.contains("colour"), "{message}");
}

#[tokio::test]
async fn bad_create_bodies_are_4xx_naming_the_field() {
    let d = daemon().await;
    let post = |ct: &'static str, body: &'static str| d.raw("POST", "/api/sandboxes", ct, body);
    post("application/json", "{not json")
        .await
        .error(400, "invalid", Some("body"));
    let message = post("application/json", r#"{"memroy":"1g"}"#)
        .await
        .error(400, "invalid", Some("body"));
    assert!(message.contains("memroy"), "{message}");
    post("text/plain", "{}").await.error(415, "invalid", Some("body"));
    post("application/json", r#"{"name": 7}"#)
        .await
        .error(400, "invalid", Some("body"));
    // field, value, expected status and code
    let cases = [
        ("memory", json!("lots"), 400, "invalid"),
        ("network", json!("some"), 400, "invalid"),
        ("ttl", json!("0s"), 400, "invalid"),
        ("idle_timeout", json!("soon"), 400, "invalid"),
        ("workdir", json!("/proc/x"), 400, "invalid"),
        ("volumes", json!(["/tmp:/mnt"]), 403, "forbidden"),
        ("rootfs", json!("/tmp"), 403, "forbidden"),
        ("code", json!("/tmp"), 403, "forbidden"),
    ];
    for (field, value, status, code) in cases {
        let mut body = json!({});
        body[field] = value;
        d.json("POST", "/api/sandboxes", body)
            .await
            .error(status, code, Some(field));
    }
    let message = d.get("/api/sandboxes").await.text();
    assert_eq!(message, "[]", "a refused create leaves nothing");
    d.create(json!({"name": "taken"})).await;
    let message = d
        .json("POST", "/api/sandboxes", json!({"name": "taken"}))
        .await
        .error(409, "name_taken", None);
    assert!(message.contains("taken"), "{message}");
}

#[tokio::test]
async fn an_unknown_driver_is_a_400_naming_the_known_ones() {
    let d = daemon().await;
    let message = d
        .json("POST", "/api/sandboxes", json!({"driver": "nope"}))
        .await
        .error(400, "invalid", Some("driver"));
    assert!(message.contains("known drivers: fake"), "{message}");
}

#[tokio::test]
async fn a_missing_or_malformed_sandbox_is_named() {
    let d = daemon().await;
    let long = "x".repeat(129);
    for (method, suffix) in [
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/stop"),
        ("POST", "/start"),
        ("POST", "/pause"),
        ("POST", "/resume"),
        ("GET", "/stats"),
    ] {
        let message = d
            .call(method, &format!("/api/sandboxes/nosuchbox{suffix}"))
            .await
            .error(404, "not_found", None);
        assert!(message.contains("nosuchbox"), "{method} {suffix}: {message}");
        d.call(method, &format!("/api/sandboxes/{long}{suffix}"))
            .await
            .error(400, "invalid", Some("id"));
        d.call(method, &format!("/api/sandboxes/%FF{suffix}"))
            .await
            .error(400, "invalid", Some("path"));
    }
}
