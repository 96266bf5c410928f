//! Tasks: started through the API, run in the background on the fake (where the baseline script
//! finds no `sh`, so every task ends as an error), listed, read back, their patch and log.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use stockade_core::{
    Driver, DriverConfig, DriverFactory, Error, ExecRequest, ExecSession, FileOp, FileReply, Result,
    SandboxId, SandboxInfo, SandboxSpec, Stats,
};

use crate::{daemon, daemon_with, eventually, sse, Daemon};

async fn task(d: &Daemon, id: &str) -> Value {
    let reply = d.get(&format!("/api/tasks/{id}")).await;
    reply.ok(200);
    reply.json()
}

#[tokio::test]
async fn a_task_runs_to_its_end_and_leaves_a_record() {
    let d = daemon().await;
    let reply = d
        .json(
            "POST",
            "/api/tasks",
            json!({"code": "empty", "agent": "command:true", "name": "t1"}),
        )
        .await;
    reply.ok(202);
    let started = reply.json();
    assert_eq!(started["status"], "running");
    assert_eq!(started["driver"], "fake", "the default driver");
    assert_eq!(started["name"], "t1");
    let id = started["id"].as_str().unwrap().to_owned();
    let (dr, i) = (&d, id.as_str());
    eventually("the task has finished", move || async move {
        task(dr, i).await["status"] != "running"
    })
    .await;
    let done = task(&d, &id).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(done["error"].as_str().unwrap().contains("sh"), "{done}");
    let reply = d.get("/api/tasks").await;
    reply.ok(200);
    assert_eq!(reply.json().as_array().unwrap().len(), 1);
    assert_eq!(reply.json()[0]["id"], id.as_str());
    let reply = d.get(&format!("/api/tasks/{id}/patch")).await;
    reply.ok(200);
    assert_eq!(reply.content_type(), "text/x-diff");
    assert!(reply.body.is_empty(), "no change, no patch");
    let reply = d.get(&format!("/api/tasks/{id}/events")).await;
    reply.ok(200);
    assert_eq!(reply.content_type(), "text/event-stream");
    let events = sse(&reply.text());
    let last = events.last().unwrap();
    assert_eq!(last.event, "done");
    assert_eq!(last.data["id"], id.as_str());
    assert_eq!(last.data["status"], "error");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e.event == "progress" && e.data["line"].is_string()),
        "{events:?}"
    );
    // The task's sandbox went with it.
    assert_eq!(d.get("/api/sandboxes").await.json(), json!([]));
}

/// A driver whose sandboxes never finish being made: a task on it runs until the test ends.
struct Stuck;

#[async_trait]
impl Driver for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }
    async fn create(&self, _: SandboxSpec) -> Result<SandboxInfo> {
        std::future::pending().await
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(Vec::new())
    }
    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        Err(Error::NotFound(id_or_name.to_owned()))
    }
    async fn stop(&self, id: &SandboxId) -> Result<()> {
        Err(Error::NotFound(id.to_string()))
    }
    async fn start(&self, id: &SandboxId) -> Result<()> {
        Err(Error::NotFound(id.to_string()))
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        Err(Error::NotFound(id.to_string()))
    }
    async fn exec(&self, id: &SandboxId, _: ExecRequest) -> Result<ExecSession> {
        Err(Error::NotFound(id.to_string()))
    }
    async fn file(&self, id: &SandboxId, _: FileOp) -> Result<FileReply> {
        Err(Error::NotFound(id.to_string()))
    }
    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        Err(Error::NotFound(id.to_string()))
    }
}

impl DriverFactory for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }
    fn description(&self) -> &'static str {
        "never finishes a create"
    }
    fn build(&self, _: &DriverConfig) -> Result<Arc<dyn Driver>> {
        Ok(Arc::new(Stuck))
    }
}

#[tokio::test]
async fn a_running_task_is_listed_and_has_no_patch_yet() {
    let d = daemon_with(|r| {
        r.register(Stuck);
    })
    .await;
    let reply = d
        .json(
            "POST",
            "/api/tasks",
            json!({"code": "empty", "agent": "command:true", "driver": "stuck"}),
        )
        .await;
    reply.ok(202);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(task(&d, &id).await["status"], "running");
    let list = d.get("/api/tasks").await.json();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["status"], "running");
    let message = d
        .get(&format!("/api/tasks/{id}/patch"))
        .await
        .error(409, "wrong_state", None);
    assert!(message.contains("still running"), "{message}");
}

#[tokio::test]
async fn bad_task_requests_are_4xx_naming_the_field() {
    let d = daemon().await;
    let ok = json!({"code": "empty", "agent": "command:true"});
    d.raw("POST", "/api/tasks", "application/json", "{")
        .await
        .error(400, "invalid", Some("body"));
    let message = d
        .json("POST", "/api/tasks", json!({"code": "empty"}))
        .await
        .error(400, "invalid", Some("body"));
    assert!(message.contains("agent"), "{message}");
    let mut extra = ok.clone();
    extra["prio"] = json!(1);
    d.json("POST", "/api/tasks", extra)
        .await
        .error(400, "invalid", Some("body"));
    // field, value, status, code, the field the error names
    let cases = [
        ("driver", json!("nope"), 400, "invalid", "driver"),
        ("timeout", json!("soon"), 400, "invalid", "timeout"),
        ("network", json!("some"), 400, "invalid", "network"),
        ("code", json!("gopher://x"), 400, "invalid", "code"),
        ("code", json!("/tmp"), 403, "forbidden", "code"),
        ("agent", json!("nope"), 400, "invalid", "agent"),
    ];
    for (field, value, status, code, named) in cases {
        let mut body = ok.clone();
        body[field] = value;
        d.json("POST", "/api/tasks", body)
            .await
            .error(status, code, Some(named));
    }
    let reply = d.get("/api/tasks").await;
    assert_eq!(reply.json(), json!([]), "a refused task leaves nothing");
}

#[tokio::test]
async fn a_missing_or_malformed_task_is_named() {
    let d = daemon().await;
    for suffix in ["", "/patch", "/events"] {
        let message = d
            .get(&format!("/api/tasks/abc123{suffix}"))
            .await
            .error(404, "not_found", None);
        assert!(message.contains("abc123"), "{suffix}: {message}");
        for bad in ["a-b", "..", &"a".repeat(65)] {
            d.get(&format!("/api/tasks/{bad}{suffix}"))
                .await
                .error(400, "invalid", Some("id"));
        }
        d.get(&format!("/api/tasks/%FF{suffix}"))
            .await
            .error(400, "invalid", Some("path"));
    }
}
