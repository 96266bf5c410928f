//! Execs: start (kept, or waited for), list, get, kill, and follow over SSE and a WebSocket.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::{daemon, eventually, sse, Daemon};

fn b64(data: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

async fn exec_status(d: &Daemon, sandbox: &str, exec: &str) -> Value {
    let reply = d.get(&format!("/api/sandboxes/{sandbox}/execs/{exec}")).await;
    reply.ok(200);
    reply.json()
}

#[tokio::test]
async fn an_exec_is_kept_listed_and_read_back() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let reply = d
        .json(
            "POST",
            &format!("/api/sandboxes/{sandbox}/execs"),
            json!({"argv": ["echo", "hi"], "env": {"A": "1"}}),
        )
        .await;
    reply.ok(201);
    let record: stockade_api::ExecRecord = serde_json::from_slice(&reply.body).unwrap();
    assert!(record.id.starts_with('x'), "{record:?}");
    assert_eq!(record.sandbox_id, sandbox);
    assert_eq!(record.request["argv"], json!(["echo", "hi"]));
    assert_eq!(record.request["env"], json!({"A": "1"}));
    assert_eq!(record.request["secrets"], json!([]));
    let exec = record.id;
    let (dr, s, e) = (&d, sandbox.as_str(), exec.as_str());
    eventually("the exec has exited", move || async move {
        exec_status(dr, s, e).await["status"] == "exited"
    })
    .await;
    let done = exec_status(&d, &sandbox, &exec).await;
    assert_eq!(done["exit"]["code"], 0);
    assert_eq!(done["next_seq"], 3, "started, stdout, exited");
    let second = d.run(&sandbox, &["true"]).await;
    let reply = d.get(&format!("/api/sandboxes/{sandbox}/execs")).await;
    reply.ok(200);
    let list: Vec<stockade_api::ExecRecord> = serde_json::from_slice(&reply.body).unwrap();
    let ids: Vec<&str> = list.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [exec.as_str(), second.as_str()], "oldest first");
}

#[tokio::test]
async fn wait_answers_with_the_output() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let start = |query: &'static str, argv: Value| {
        let uri = format!("/api/sandboxes/{sandbox}/execs{query}");
        let d = &d;
        async move { d.json("POST", &uri, json!({ "argv": argv })).await }
    };
    let reply = start("?wait=true", json!(["echo", "hi"])).await;
    reply.ok(200);
    let result: stockade_api::ExecResult = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(result.stdout, b64("hi\n"), "base64 by default");
    assert_eq!(result.stderr, "");
    assert!(result.finished);
    assert_eq!(result.exit.unwrap().code, Some(0));
    let reply = start("?wait=true&encoding=text", json!(["echo", "hé"])).await;
    reply.ok(200);
    assert_eq!(reply.json()["stdout"], "hé\n");
    let reply = start("?wait=true", json!(["exit", "3"])).await;
    reply.ok(200);
    assert_eq!(reply.json()["exit"]["code"], 3);
}

#[tokio::test]
async fn bad_exec_requests_are_4xx_naming_the_problem() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let uri = format!("/api/sandboxes/{sandbox}/execs");
    let start = |body: Value| d.json("POST", &uri, body);
    let message = start(json!({"argv": []}))
        .await
        .error(400, "invalid", Some("command"));
    assert!(message.contains("no command"), "{message}");
    let message = start(json!({"argv": ["true"], "cmd": "x"}))
        .await
        .error(400, "invalid", Some("body"));
    assert!(message.contains("cmd"), "{message}");
    d.raw("POST", &uri, "application/json", "[")
        .await
        .error(400, "invalid", Some("body"));
    start(json!({"argv": ["true"], "cwd": "relative"}))
        .await
        .error(400, "invalid", Some("workdir"));
    start(json!({"argv": ["true"], "secrets": ["not a name"]}))
        .await
        .error(400, "invalid", Some("secrets"));
    let message = start(json!({"argv": ["true"], "env": {"KEY": "1"}, "secrets": ["KEY"]}))
        .await
        .error(400, "invalid", Some("secrets"));
    assert!(message.contains("also set in env"), "{message}");
    let message = start(json!({"argv": ["true"], "secrets": ["MISSING"]}))
        .await
        .error(400, "invalid", Some("secrets"));
    assert!(message.contains("MISSING"), "{message}");
    for query in ["?wait=maybe", "?encoding=hex", "?follow=1"] {
        d.json("POST", &format!("{uri}{query}"), json!({"argv": ["true"]}))
            .await
            .error(400, "invalid", Some("query"));
    }
    let message = start(json!({"argv": ["nope-cmd"]}))
        .await
        .error(422, "command_not_found", None);
    assert!(message.contains("nope-cmd"), "{message}");
    let message = d
        .json(
            "POST",
            "/api/sandboxes/nosuchbox/execs",
            json!({"argv": ["true"]}),
        )
        .await
        .error(404, "not_found", None);
    assert!(message.contains("nosuchbox"), "{message}");
    let stopped = d.stopped().await;
    let message = d
        .json(
            "POST",
            &format!("/api/sandboxes/{stopped}/execs"),
            json!({"argv": ["true"]}),
        )
        .await
        .error(409, "wrong_state", None);
    assert!(message.contains("exec"), "{message}");
    // None of them left an exec behind.
    let reply = d.get(&uri).await;
    reply.ok(200);
    assert_eq!(reply.json(), json!([]));
}

#[tokio::test]
async fn kill_ends_a_running_exec_once() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let reply = d
        .json(
            "POST",
            &format!("/api/sandboxes/{sandbox}/execs"),
            json!({"argv": ["sleep", "30"]}),
        )
        .await;
    reply.ok(201);
    let exec = reply.json()["id"].as_str().unwrap().to_owned();
    let kill = format!("/api/sandboxes/{sandbox}/execs/{exec}/kill");
    let reply = d.call("POST", &kill).await;
    reply.ok(202);
    assert!(reply.body.is_empty());
    let (dr, s, e) = (&d, sandbox.as_str(), exec.as_str());
    eventually("the killed exec has exited", move || async move {
        exec_status(dr, s, e).await["status"] == "exited"
    })
    .await;
    assert_eq!(exec_status(&d, &sandbox, &exec).await["exit"]["signal"], 9);
    let message = d.call("POST", &kill).await.error(409, "wrong_state", None);
    assert!(message.contains("kill"), "{message}");
}

#[tokio::test]
async fn a_missing_sandbox_or_exec_is_named() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let other = d.create(json!({})).await;
    let exec = d.run(&other, &["true"]).await;
    let message = d
        .get("/api/sandboxes/nosuchbox/execs")
        .await
        .error(404, "not_found", None);
    assert!(message.contains("nosuchbox"), "{message}");
    d.get(&format!("/api/sandboxes/{}/execs", "x".repeat(129)))
        .await
        .error(400, "invalid", Some("id"));
    for (method, suffix) in [("GET", ""), ("POST", "/kill"), ("GET", "/events"), ("GET", "/ws")] {
        let message = d
            .call(method, &format!("/api/sandboxes/{sandbox}/execs/xnope{suffix}"))
            .await
            .error(404, "exec_not_found", None);
        assert!(message.contains("xnope"), "{method} {suffix}: {message}");
        // An exec is found only under its own sandbox.
        d.call(method, &format!("/api/sandboxes/{sandbox}/execs/{exec}{suffix}"))
            .await
            .error(404, "exec_not_found", None);
        d.call(method, &format!("/api/sandboxes/nosuchbox/execs/{exec}{suffix}"))
            .await
            .error(404, "not_found", None);
        d.call(method, &format!("/api/sandboxes/{sandbox}/execs/%FF{suffix}"))
            .await
            .error(400, "invalid", Some("path"));
    }
}

#[tokio::test]
async fn events_replay_from_any_sequence_number() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let exec = d.run(&sandbox, &["echo", "hi"]).await;
    let uri = format!("/api/sandboxes/{sandbox}/execs/{exec}/events");
    let reply = d.get(&uri).await;
    reply.ok(200);
    assert_eq!(reply.content_type(), "text/event-stream");
    let events = sse(&reply.text());
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["started", "stdout", "exited"]);
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_deref().unwrap()).collect();
    assert_eq!(ids, ["0", "1", "2"]);
    assert_eq!(
        events[1].data,
        json!({"type": "stdout", "seq": 1, "data": b64("hi\n")})
    );
    assert_eq!(events[2].data["exit"]["code"], 0);
    for e in &events {
        stockade_api::ApiExecEvent::parse(&e.data.to_string()).unwrap();
    }
    let reply = d.get(&format!("{uri}?from_seq=1&encoding=text")).await;
    let later = sse(&reply.text());
    assert_eq!(later.len(), 2);
    assert_eq!(later[0].data["data"], "hi\n");
    // An EventSource that reconnects goes on after the last event it saw.
    let reply = d
        .send(
            Request::get(&uri)
                .header("last-event-id", "1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let after = sse(&reply.text());
    assert_eq!(after, events[2..]);
}

#[tokio::test]
async fn bad_follow_requests_are_4xx() {
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let exec = d.run(&sandbox, &["true"]).await;
    for route in ["events", "ws"] {
        let uri = format!("/api/sandboxes/{sandbox}/execs/{exec}/{route}");
        d.send(
            Request::get(&uri)
                .header("last-event-id", "soon")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .error(400, "invalid", Some("Last-Event-ID"));
        for query in ["?from_seq=first", "?encoding=hex", "?since=1"] {
            d.get(&format!("{uri}{query}"))
                .await
                .error(400, "invalid", Some("query"));
        }
    }
    let message = d
        .get(&format!("/api/sandboxes/{sandbox}/execs/{exec}/ws"))
        .await
        .error(400, "invalid", None);
    assert!(message.contains("WebSocket upgrade"), "{message}");
}

/// The WebSocket needs a real connection to upgrade: the routes served on a unix socket.
#[tokio::test]
async fn a_websocket_carries_stdin_in_and_events_out() {
    use tokio_tungstenite::tungstenite::Message;
    let d = daemon().await;
    let sandbox = d.create(json!({})).await;
    let reply = d
        .json(
            "POST",
            &format!("/api/sandboxes/{sandbox}/execs"),
            json!({"argv": ["cat"], "stdin": true}),
        )
        .await;
    reply.ok(201);
    let exec = reply.json()["id"].as_str().unwrap().to_owned();
    let socket = d.home.path().join("api.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let app = d.app.clone();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let connect = |query: &'static str| {
        let (socket, uri) = (
            socket.clone(),
            format!("ws://daemon/api/sandboxes/{sandbox}/execs/{exec}/ws{query}"),
        );
        async move {
            let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
            let (ws, resp) = tokio_tungstenite::client_async(uri, stream).await.unwrap();
            assert_eq!(resp.status(), 101);
            ws
        }
    };
    let read_to_exit = |mut ws: tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>| async move {
        let mut events = Vec::new();
        while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
        {
            match msg.unwrap() {
                Message::Text(t) => events.push(serde_json::from_str::<Value>(&t).unwrap()),
                Message::Close(_) => break,
                _ => {}
            }
        }
        events
    };
    let mut ws = connect("").await;
    let send = |v: Value| Message::text(v.to_string());
    // What the exec cannot use is dropped; the socket goes on.
    ws.send(Message::text("not json")).await.unwrap();
    ws.send(send(json!({"type": "resize", "rows": 0, "cols": 0})))
        .await
        .unwrap();
    ws.send(send(json!({"type": "stdin", "data": b64("hello\n")})))
        .await
        .unwrap();
    ws.send(send(json!({"type": "close_stdin"}))).await.unwrap();
    let events = read_to_exit(ws).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["started", "stdout", "exited"], "{events:?}");
    assert_eq!(events[1]["data"], b64("hello\n"));
    assert_eq!(events[2]["exit"]["code"], 0);
    // The same events again, from any sequence number.
    let again = read_to_exit(connect("?from_seq=1&encoding=text").await).await;
    assert_eq!(again.len(), 2);
    assert_eq!(again[0]["data"], "hello\n");
    server.abort();
}
