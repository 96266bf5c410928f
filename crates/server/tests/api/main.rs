//! The daemon's routes in process, over a registry with the in-memory fake driver: no root, no
//! kernel, no engine (`tower::ServiceExt::oneshot`, as axum's testing example does). One module
//! per resource, as in `src/api/`. [`COVERAGE`] lists every route of the OpenAPI document with
//! the tests that exercise it; `every_route_of_the_document_is_covered` fails on a route it
//! does not list.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod code;
mod e2b;
mod execs;
mod files;
mod sandboxes;
mod system;
mod tasks;
mod templates;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use stockade_core::{DriverConfig, Registry};
use stockade_server::AppState;
use tower::ServiceExt;

/// How the tests here cover a route.
enum Covered {
    /// Its success case and its 4xx cases.
    Fully,
    /// Its 4xx cases only; its success needs what the fake cannot do (the reason, and where the
    /// success case runs instead).
    Only4xx(&'static str),
}

/// Every route of the OpenAPI document: method, path template, how it is covered, and the
/// tests (`module::function`) that call it.
const COVERAGE: &[(&str, &str, Covered, &[&str])] = &[
    (
        "GET",
        "/healthz",
        Covered::Fully,
        &["system::healthz_answers_without_a_token"],
    ),
    (
        "GET",
        "/metrics",
        Covered::Fully,
        &["system::metrics_count_what_the_api_did"],
    ),
    (
        "GET",
        "/api/drivers",
        Covered::Fully,
        &[
            "system::a_registered_driver_is_listed_with_its_sandboxes",
            "system::a_driver_that_cannot_be_built_is_listed_as_unavailable",
        ],
    ),
    (
        "GET",
        "/api/events",
        Covered::Fully,
        &["system::status_changes_arrive_as_server_sent_events"],
    ),
    (
        "GET",
        "/api/sandboxes",
        Covered::Fully,
        &[
            "sandboxes::listing_filters_by_status_and_label",
            "sandboxes::bad_list_queries_are_400s_naming_the_filter",
        ],
    ),
    (
        "POST",
        "/api/sandboxes",
        Covered::Fully,
        &[
            "sandboxes::a_sandbox_lives_by_id_and_by_name",
            "sandboxes::bad_create_bodies_are_4xx_naming_the_field",
            "sandboxes::an_unknown_driver_is_a_400_naming_the_known_ones",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}",
        Covered::Fully,
        &[
            "sandboxes::a_sandbox_lives_by_id_and_by_name",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "DELETE",
        "/api/sandboxes/{id}",
        Covered::Fully,
        &[
            "sandboxes::a_sandbox_lives_by_id_and_by_name",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/stop",
        Covered::Fully,
        &[
            "sandboxes::a_sandbox_lives_by_id_and_by_name",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/start",
        Covered::Fully,
        &[
            "sandboxes::a_sandbox_lives_by_id_and_by_name",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/pause",
        Covered::Fully,
        &[
            "sandboxes::pause_freezes_a_running_sandbox_and_resume_thaws_it",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/resume",
        Covered::Fully,
        &[
            "sandboxes::pause_freezes_a_running_sandbox_and_resume_thaws_it",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/stats",
        Covered::Fully,
        &[
            "sandboxes::a_sandbox_lives_by_id_and_by_name",
            "sandboxes::a_missing_or_malformed_sandbox_is_named",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/execs",
        Covered::Fully,
        &[
            "execs::an_exec_is_kept_listed_and_read_back",
            "execs::a_missing_sandbox_or_exec_is_named",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/execs",
        Covered::Fully,
        &[
            "execs::an_exec_is_kept_listed_and_read_back",
            "execs::wait_answers_with_the_output",
            "execs::bad_exec_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/execs/{exec_id}",
        Covered::Fully,
        &[
            "execs::an_exec_is_kept_listed_and_read_back",
            "execs::a_missing_sandbox_or_exec_is_named",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/execs/{exec_id}/kill",
        Covered::Fully,
        &[
            "execs::kill_ends_a_running_exec_once",
            "execs::a_missing_sandbox_or_exec_is_named",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/execs/{exec_id}/events",
        Covered::Fully,
        &[
            "execs::events_replay_from_any_sequence_number",
            "execs::bad_follow_requests_are_4xx",
            "execs::a_missing_sandbox_or_exec_is_named",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/execs/{exec_id}/ws",
        Covered::Fully,
        &[
            // The upgrade needs a connection, so its success case is served on a unix socket.
            "execs::a_websocket_carries_stdin_in_and_events_out",
            "execs::bad_follow_requests_are_4xx",
            "execs::a_missing_sandbox_or_exec_is_named",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/files",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_file_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "PUT",
        "/api/sandboxes/{id}/files",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_file_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "DELETE",
        "/api/sandboxes/{id}/files",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_file_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/dir",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_file_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/stat",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_file_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/mkdir",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_file_requests_are_4xx_naming_the_problem",
        ],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/rename",
        Covered::Fully,
        &[
            "files::files_round_trip",
            "files::bad_renames_are_4xx_naming_the_problem",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/archive",
        Covered::Only4xx(
            "runs `tar -c` in the sandbox, and the fake has no tar; the web UI's Download .tar and \
             scripts/api-fuzz call it on the native driver",
        ),
        &[
            "files::bad_file_requests_are_4xx_naming_the_problem",
            "files::archives_need_tar_in_the_sandbox",
        ],
    ),
    (
        "PUT",
        "/api/sandboxes/{id}/archive",
        Covered::Only4xx(
            "runs `tar -x` in the sandbox, and the fake has no tar; only scripts/api-fuzz calls it \
             on the native driver",
        ),
        &[
            "files::bad_file_requests_are_4xx_naming_the_problem",
            "files::archives_need_tar_in_the_sandbox",
        ],
    ),
    (
        "GET",
        "/api/sandboxes/{id}/diff",
        Covered::Only4xx(
            "runs git in the sandbox (a `sh` script), which the fake cannot; \
             crates/cli/tests/daemon.rs (host_paths_need_opt_in_and_a_change_is_pushed_from_the_host) \
             runs it on the native driver",
        ),
        &["code::diff_and_apply_need_git_in_a_running_sandbox"],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/apply",
        Covered::Only4xx(
            "runs `git apply` in the sandbox, which the fake cannot; only scripts/api-fuzz calls it \
             on the native driver",
        ),
        &["code::diff_and_apply_need_git_in_a_running_sandbox"],
    ),
    (
        "POST",
        "/api/sandboxes/{id}/push",
        Covered::Only4xx(
            "commits with git in the sandbox and pushes from the host, which the fake cannot; \
             crates/cli/tests/daemon.rs (host_paths_need_opt_in_and_a_change_is_pushed_from_the_host) \
             runs it on the native driver",
        ),
        &["code::bad_pushes_are_4xx_naming_the_problem"],
    ),
    (
        "GET",
        "/api/tasks",
        Covered::Fully,
        &[
            "tasks::a_task_runs_to_its_end_and_leaves_a_record",
            "tasks::a_running_task_is_listed_and_has_no_patch_yet",
        ],
    ),
    (
        "POST",
        "/api/tasks",
        Covered::Fully,
        &[
            "tasks::a_task_runs_to_its_end_and_leaves_a_record",
            "tasks::bad_task_requests_are_4xx_naming_the_field",
        ],
    ),
    (
        "GET",
        "/api/tasks/{id}",
        Covered::Fully,
        &[
            "tasks::a_task_runs_to_its_end_and_leaves_a_record",
            "tasks::a_missing_or_malformed_task_is_named",
        ],
    ),
    (
        "GET",
        "/api/tasks/{id}/patch",
        Covered::Fully,
        &[
            "tasks::a_task_runs_to_its_end_and_leaves_a_record",
            "tasks::a_running_task_is_listed_and_has_no_patch_yet",
            "tasks::a_missing_or_malformed_task_is_named",
        ],
    ),
    (
        "GET",
        "/api/tasks/{id}/events",
        Covered::Fully,
        &[
            "tasks::a_task_runs_to_its_end_and_leaves_a_record",
            "tasks::a_missing_or_malformed_task_is_named",
        ],
    ),
    (
        "GET",
        "/api/templates",
        Covered::Fully,
        &["templates::a_registered_template_is_listed_used_and_removed"],
    ),
    (
        "POST",
        "/api/templates",
        Covered::Fully,
        &[
            "templates::a_registered_template_is_listed_used_and_removed",
            "templates::bad_templates_are_400s_naming_the_field",
        ],
    ),
    (
        "DELETE",
        "/api/templates/{name}",
        Covered::Fully,
        &["templates::a_registered_template_is_listed_used_and_removed"],
    ),
];

/// The test modules' sources, to check that the tests [`COVERAGE`] names exist.
const SOURCES: &[(&str, &str)] = &[
    ("code", include_str!("code.rs")),
    ("execs", include_str!("execs.rs")),
    ("files", include_str!("files.rs")),
    ("sandboxes", include_str!("sandboxes.rs")),
    ("system", include_str!("system.rs")),
    ("tasks", include_str!("tasks.rs")),
    ("templates", include_str!("templates.rs")),
];

#[tokio::test]
async fn every_route_of_the_document_is_covered() {
    let d = daemon().await;
    let (_, doc) = stockade_server::routes(Arc::clone(&d.state));
    let doc = serde_json::to_value(&doc).unwrap();
    let methods = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in methods.iter().filter(|m| item.get(**m).is_some()) {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let mut listed = BTreeSet::new();
    for (method, path, covered, tests) in COVERAGE {
        assert!(
            listed.insert((method.to_string(), path.to_string())),
            "{method} {path} is listed twice in COVERAGE"
        );
        assert!(!tests.is_empty(), "{method} {path}: COVERAGE names no test");
        if let Covered::Only4xx(why) = covered {
            assert!(
                !why.is_empty(),
                "{method} {path}: say why only its 4xx cases are tested"
            );
        }
        for test in *tests {
            let (module, name) = test.split_once("::").unwrap();
            let source = SOURCES
                .iter()
                .find(|(m, _)| *m == module)
                .unwrap_or_else(|| panic!("{method} {path}: no test module {module}"))
                .1;
            assert!(
                source.contains(&format!("async fn {name}(")),
                "{method} {path}: COVERAGE names {test}, which is not a test in {module}.rs"
            );
        }
    }
    let untested: Vec<String> = documented
        .difference(&listed)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        untested.is_empty(),
        "routes of the OpenAPI document with no test (add one and list it in COVERAGE): {untested:?}"
    );
    let stale: Vec<String> = listed
        .difference(&documented)
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(
        stale.is_empty(),
        "COVERAGE lists routes the OpenAPI document does not have: {stale:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The daemon and calls to it

pub struct Daemon {
    pub app: axum::Router,
    pub state: Arc<AppState>,
    pub home: tempfile::TempDir,
}

/// A daemon whose registry holds only the fake.
pub async fn daemon() -> Daemon {
    daemon_with(|_| {}).await
}

/// A daemon whose registry holds the fake (first, so the default) and what `more` adds.
pub async fn daemon_with(more: impl FnOnce(&mut Registry)) -> Daemon {
    let home = tempfile::tempdir().unwrap();
    let mut registry = Registry::new(DriverConfig::new(home.path()));
    stockade_fake::register(&mut registry);
    more(&mut registry);
    let config = stockade_server::ServerConfig::embedded(home.path());
    let state = stockade_server::state(&config, Arc::new(stockade_server::Drivers::new(registry)))
        .await
        .unwrap();
    state
        .access_log
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (app, _) = stockade_server::routes(Arc::clone(&state));
    Daemon { app, state, home }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: not JSON ({}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a success with this status.
    #[track_caller]
    pub fn ok(&self, status: u16) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        self
    }

    /// Asserts an error: the status, the body exactly `{"error": {"code", "message", "field"}}`
    /// (`field` only when there is one), the code and the field. The message, for more checks.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str, field: Option<&str>) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.content_type(), "application/json", "{}", self.text());
        let body = self.json();
        let outer: Vec<&String> = body.as_object().unwrap().keys().collect();
        assert_eq!(outer, ["error"], "{body}");
        let error = body["error"].as_object().unwrap();
        let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let want: &[&str] = if field.is_some() {
            &["code", "field", "message"]
        } else {
            &["code", "message"]
        };
        assert_eq!(keys, want, "{body}");
        assert_eq!(error["code"], code, "{body}");
        assert_eq!(error.get("field").and_then(Value::as_str), field, "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{body}");
        // What a client reads: strict, so nothing more and nothing less.
        serde_json::from_slice::<stockade_api::ErrorBody>(&self.body).unwrap();
        message.to_owned()
    }
}

impl Daemon {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
            .await
            .expect("the body did not end within 20 s")
            .unwrap()
            .to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with no body.
    pub async fn call(&self, method: &str, uri: &str) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri).await
    }

    /// A request with a JSON body.
    pub async fn json(&self, method: &str, uri: &str, body: Value) -> Reply {
        self.raw(method, uri, "application/json", body.to_string()).await
    }

    /// A request with a body as given.
    pub async fn raw(&self, method: &str, uri: &str, content_type: &str, body: impl Into<Body>) -> Reply {
        self.send(
            Request::builder()
                .method(method)
                .uri(uri)
                .header("content-type", content_type)
                .body(body.into())
                .unwrap(),
        )
        .await
    }

    /// A new sandbox; its id.
    pub async fn create(&self, body: Value) -> String {
        let reply = self.json("POST", "/api/sandboxes", body).await;
        reply.ok(201);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    /// A new sandbox, stopped; its id.
    pub async fn stopped(&self) -> String {
        let id = self.create(json!({})).await;
        self.call("POST", &format!("/api/sandboxes/{id}/stop"))
            .await
            .ok(200);
        id
    }

    /// Runs `argv` to its end through the API; the exec's id.
    pub async fn run(&self, sandbox: &str, argv: &[&str]) -> String {
        let reply = self
            .json(
                "POST",
                &format!("/api/sandboxes/{sandbox}/execs?wait=true"),
                json!({ "argv": argv }),
            )
            .await;
        reply.ok(200);
        reply.json()["id"].as_str().unwrap().to_owned()
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Sse {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

/// The events of a whole `text/event-stream` body (keep-alive comments left out).
pub fn sse(text: &str) -> Vec<Sse> {
    text.split("\n\n")
        .filter_map(|block| {
            let (mut event, mut id, mut data) = (None, None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            Some(Sse {
                event: event?,
                id,
                data: serde_json::from_str(&data).unwrap(),
            })
        })
        .collect()
}

/// Waits for `check` to hold, polling; panics naming `what` after 10 s.
pub async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
