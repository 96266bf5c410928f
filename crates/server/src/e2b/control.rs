//! E2B's control plane (`api.e2b.app`'s REST API, as its SDKs call it): create, connect, get,
//! list, kill, timeouts, metrics, pause and resume, on the daemon's listener beside Stockade's
//! own API. Errors are E2B's `{"code": <status>, "message"}`; 429 and 502–504 are never used
//! for a permanent error, since the SDKs retry those.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{json, Value};
use stockade_core::{Driver, NetworkMode, SandboxInfo, SandboxSpec, SandboxStatus};

use super::{now_ms, rfc3339_ms, Record, Template, ENVD_VERSION};
use crate::error::ApiError;
use crate::AppState;

/// Longest `timeout` a sandbox may be given, like E2B's: 24 hours.
const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// The `timeout` when a create leaves it out, as E2B's API has it.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

pub fn routes() -> axum::Router<Arc<AppState>> {
    axum::Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(detail).delete(kill))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/metrics", get(metrics))
}

/// Whether `path` is the E2B control plane's (its errors are E2B-shaped, its key is X-API-Key).
pub fn is_control_path(path: &str) -> bool {
    path == "/sandboxes" || path.starts_with("/sandboxes/") || path.starts_with("/v2/sandboxes")
}

/// An error as E2B's API gives it.
#[derive(Debug)]
pub struct E2bError {
    pub status: StatusCode,
    pub message: String,
}

impl E2bError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        E2bError {
            status,
            message: message.into(),
        }
    }

    fn not_found(id: &str) -> Self {
        E2bError::new(
            StatusCode::NOT_FOUND,
            format!("sandbox \"{id}\" doesn't exist or you don't have access to it"),
        )
    }

    fn bad(message: impl Into<String>) -> Self {
        E2bError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for E2bError {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.status.as_u16(), "message": self.message });
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ApiError> for E2bError {
    fn from(e: ApiError) -> Self {
        // The SDKs retry 502–504 and 429: a driver failure is a 500 here, never those.
        let status = match e.status.as_u16() {
            429 | 502..=504 => StatusCode::INTERNAL_SERVER_ERROR,
            _ => e.status,
        };
        E2bError::new(status, e.message)
    }
}

impl From<stockade_core::Error> for E2bError {
    fn from(e: stockade_core::Error) -> Self {
        ApiError::from(e).into()
    }
}

type E2bResult<T> = Result<T, E2bError>;

/// A JSON body: an empty one is `{}`; bad JSON is a 400 naming what is wrong.
fn body<T: for<'de> Deserialize<'de> + Default>(bytes: &Bytes) -> E2bResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| E2bError::bad(format!("the request body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    #[serde(default, rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    #[serde(default)]
    auto_pause: bool,
}

#[derive(Debug, Default, Deserialize)]
struct TimeoutBody {
    timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct RefreshBody {
    duration: Option<u64>,
}

fn check_timeout(field: &str, secs: u64) -> E2bResult<u64> {
    if secs > MAX_TIMEOUT_SECS {
        return Err(E2bError::bad(format!(
            "{field} must be at most {MAX_TIMEOUT_SECS} seconds, not {secs}"
        )));
    }
    Ok(secs)
}

/// The `Sandbox` a create or connect answers with.
fn sandbox_json(record: &Record) -> Value {
    json!({
        "templateID": record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": "stockade",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": record.access_token,
        "trafficAccessToken": null,
        "domain": null,
    })
}

/// The `SandboxDetail` (and `ListedSandbox`) of a record and its sandbox.
fn detail_json(record: &Record, info: &SandboxInfo) -> Value {
    let state = if info.status == SandboxStatus::Running {
        "running"
    } else {
        "paused"
    };
    json!({
        "templateID": record.template_id,
        "sandboxID": record.sandbox_id,
        "clientID": "stockade",
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": record.access_token,
        "domain": null,
        "startedAt": rfc3339_ms(record.started_at_ms),
        "endAt": rfc3339_ms(record.end_at_ms),
        "cpuCount": record.cpu_count,
        "memoryMB": record.memory_mb,
        "diskSizeMB": record.disk_mb,
        "metadata": record.metadata,
        "state": state,
        "allowInternetAccess": info.spec.network == NetworkMode::Full,
    })
}

async fn create(State(state): State<Arc<AppState>>, bytes: Bytes) -> E2bResult<Response> {
    let req: CreateBody = body(&bytes)?;
    let template_id = req
        .template_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| E2bError::bad("templateID is required"))?;
    let Some(template) = Template::find(&state, &template_id).await else {
        let names: Vec<String> = super::templates(&state)
            .await
            .into_iter()
            .map(|t| t.name)
            .collect();
        return Err(E2bError::new(
            StatusCode::NOT_FOUND,
            format!(
                "template '{template_id}' not found (this daemon has: {})",
                names.join(", ")
            ),
        ));
    };
    let timeout = check_timeout("timeout", req.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))?;
    // Outbound network is the daemon's to allow: `allow_internet_access: false` always takes
    // it away; true (which older SDKs always send) gives it only where the daemon opted in.
    let network = match req.allow_internet_access {
        Some(false) => NetworkMode::None,
        _ if state.e2b.allow_internet => NetworkMode::Full,
        _ => NetworkMode::None,
    };
    let mut spec = SandboxSpec {
        driver: template
            .driver
            .clone()
            .or_else(|| state.e2b.driver.clone())
            .unwrap_or_default(),
        image: template.image.clone(),
        runtime: template.runtime.clone(),
        // The home is where E2B's processes start (each exec names it); the workdir stays
        // Stockade's, where code is loaded and diffs are taken.
        env: req.env_vars.clone(),
        labels: req.metadata.clone(),
        network,
        user: Some(template.user.clone()),
        ..SandboxSpec::default()
    };
    // A user's home is where the driver puts the sandbox's writable workdir, given to that
    // user (images' own directories are read-only in a container); root keeps /root.
    if template.user != "root" {
        spec.workdir = template.home.clone();
    }
    spec.validate().map_err(|e| E2bError::bad(e.to_string()))?;
    let action = crate::api::sandboxes::Create {
        spec,
        code: None,
        idle_timeout: None,
    };
    let info = action.run(&state).await?;
    let started = now_ms();
    let record = Record {
        sandbox_id: info.id.to_string(),
        template_id: template.id,
        access_token: super::access_token()?,
        started_at_ms: started,
        end_at_ms: started + timeout * 1000,
        metadata: req.metadata,
        env_vars: req.env_vars,
        user: template.user,
        home: template.home,
        cpu_count: cpus(&info),
        memory_mb: memory_mb(&info),
        disk_mb: info.spec.resources.disk_bytes.map(|b| b >> 20).unwrap_or(0),
        auto_pause: req.auto_pause,
    };
    if let Err(e) = record.save(&state).await {
        let _ = state.driver.destroy(&info.id).await;
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, axum::Json(sandbox_json(&record))).into_response())
}

fn cpus(info: &SandboxInfo) -> u32 {
    match info.spec.resources.millicpus {
        Some(m) => m.div_ceil(1000).max(1),
        None => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    }
}

fn memory_mb(info: &SandboxInfo) -> u64 {
    if let Some(bytes) = info.spec.resources.memory_bytes {
        return bytes >> 20;
    }
    // No limit: the host's memory is what the sandbox can use.
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb >> 10)
        .unwrap_or(0)
}

/// The sandbox with exactly this id and its record. A Stockade sandbox made another way (the
/// CLI, the API) is adopted with template `base` the first time the E2B surface is asked.
pub async fn known(state: &AppState, id: &str) -> E2bResult<(Record, SandboxInfo)> {
    if id.is_empty() || id.len() > 64 {
        return Err(E2bError::not_found(id));
    }
    let info = match state.driver.get(id).await {
        // By exact id only: E2B has no names or prefixes.
        Ok(info) if info.id.as_str() == id => info,
        Ok(_) | Err(stockade_core::Error::NotFound(_)) => return Err(E2bError::not_found(id)),
        Err(e) => return Err(e.into()),
    };
    if let Some(record) = Record::load(state, id).await {
        return Ok((record, info));
    }
    let template = Template::find(state, "base")
        .await
        .ok_or_else(|| E2bError::not_found(id))?;
    let now = now_ms();
    let record = Record {
        sandbox_id: id.to_owned(),
        template_id: template.id,
        access_token: super::access_token()?,
        started_at_ms: info.created_at * 1000,
        end_at_ms: now + DEFAULT_TIMEOUT_SECS * 1000,
        metadata: info.spec.labels.clone(),
        env_vars: info.spec.env.clone(),
        user: info.spec.user.clone().unwrap_or_else(|| "root".into()),
        home: if info.spec.user.as_deref().is_none_or(|u| u == "root") {
            "/root".into()
        } else {
            info.spec.workdir.clone()
        },
        cpu_count: cpus(&info),
        memory_mb: memory_mb(&info),
        disk_mb: info.spec.resources.disk_bytes.map(|b| b >> 20).unwrap_or(0),
        auto_pause: false,
    };
    record.save(state).await?;
    Ok((record, info))
}

async fn detail(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> E2bResult<Response> {
    let (record, info) = known(&state, &id).await?;
    Ok(axum::Json(detail_json(&record, &info)).into_response())
}

async fn kill(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> E2bResult<StatusCode> {
    let (_, info) = known(&state, &id).await?;
    crate::api::sandboxes::Destroy {
        sandbox: info.id.to_string(),
    }
    .run(&state)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<StatusCode> {
    let req: TimeoutBody = body(&bytes)?;
    let secs = check_timeout(
        "timeout",
        req.timeout.ok_or_else(|| E2bError::bad("timeout is required"))?,
    )?;
    let (mut record, _) = known(&state, &id).await?;
    record.end_at_ms = now_ms() + secs * 1000;
    record.save(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn refresh(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<StatusCode> {
    let req: RefreshBody = body(&bytes)?;
    let secs = check_timeout("duration", req.duration.unwrap_or(60))?;
    let (mut record, _) = known(&state, &id).await?;
    record.end_at_ms = record.end_at_ms.max(now_ms() + secs * 1000);
    record.save(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect (and the older SDKs' resume): 200 for a running sandbox, 201 for one started again
/// from pause. The timeout only ever extends.
async fn connect(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<Response> {
    let req: TimeoutBody = body(&bytes)?;
    let secs = check_timeout("timeout", req.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))?;
    let (mut record, info) = known(&state, &id).await?;
    let status = if info.status == SandboxStatus::Running {
        StatusCode::OK
    } else {
        crate::api::sandboxes::Start {
            sandbox: info.id.to_string(),
        }
        .run(&state)
        .await?;
        StatusCode::CREATED
    };
    record.end_at_ms = record.end_at_ms.max(now_ms() + secs * 1000);
    record.save(&state).await?;
    Ok((status, axum::Json(sandbox_json(&record))).into_response())
}

async fn resume(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> E2bResult<Response> {
    let (_, info) = known(&state, &id).await?;
    if info.status == SandboxStatus::Running {
        return Err(E2bError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already running"),
        ));
    }
    let mut response = connect(State(state), Path(id), bytes).await?;
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// Pause is Stockade's stop: the files stay, the processes end (memory is not kept yet).
async fn pause(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> E2bResult<StatusCode> {
    let (_, info) = known(&state, &id).await?;
    if info.status != SandboxStatus::Running {
        return Err(E2bError::new(
            StatusCode::CONFLICT,
            format!("sandbox {id} is already paused"),
        ));
    }
    crate::api::sandboxes::Stop {
        sandbox: info.id.to_string(),
    }
    .run(&state)
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One sample, now: Stockade keeps no history of a sandbox's usage (nor its disk use yet).
async fn metrics(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> E2bResult<Response> {
    let (record, info) = known(&state, &id).await?;
    if info.status != SandboxStatus::Running {
        return Ok(axum::Json(json!([])).into_response());
    }
    let stats = state.driver.stats(&info.id).await?;
    let now = now_ms();
    // Stockade keeps no samples: the average over the sandbox's life so far.
    let alive_usec = now.saturating_sub(record.started_at_ms).max(1) * 1000;
    let cpu_pct = stats.cpu_usec as f64 * 100.0 / (alive_usec as f64 * f64::from(record.cpu_count.max(1)));
    let mem_total = info.spec.resources.memory_bytes.unwrap_or(record.memory_mb << 20);
    Ok(axum::Json(json!([{
        "timestamp": rfc3339_ms(now),
        "timestampUnix": now / 1000,
        "cpuCount": record.cpu_count,
        "cpuUsedPct": cpu_pct,
        "memUsed": stats.memory_bytes,
        "memTotal": mem_total,
        "memCache": 0,
        "diskUsed": 0,
        "diskTotal": record.disk_mb << 20,
    }]))
    .into_response())
}

/// `GET /sandboxes`: every sandbox, unpaged (the old SDKs' list).
async fn list_v1(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> E2bResult<Response> {
    let q = ListQuery::parse(query.as_deref().unwrap_or(""))?;
    let all = listed(&state, &q).await?;
    Ok(axum::Json(all.into_iter().map(|(_, v)| v).collect::<Vec<_>>()).into_response())
}

/// `GET /v2/sandboxes`: filtered, ordered by start time (newest first by default), paged with
/// `X-Next-Token`.
async fn list_v2(State(state): State<Arc<AppState>>, RawQuery(query): RawQuery) -> E2bResult<Response> {
    let q = ListQuery::parse(query.as_deref().unwrap_or(""))?;
    let all = listed(&state, &q).await?;
    let start = match &q.next_token {
        Some(token) => all
            .iter()
            .position(|(key, _)| key == token)
            .map(|i| i + 1)
            .ok_or_else(|| E2bError::bad("nextToken does not name a page of this list"))?,
        None => 0,
    };
    let limit = q.limit.unwrap_or(100);
    let page: Vec<_> = all.iter().skip(start).take(limit).collect();
    let more = start + page.len() < all.len();
    let mut response = axum::Json(page.iter().map(|(_, v)| v).collect::<Vec<_>>()).into_response();
    if more {
        if let Some((key, _)) = page.last() {
            if let Ok(v) = HeaderValue::from_str(key) {
                response.headers_mut().insert("x-next-token", v);
            }
        }
    }
    Ok(response)
}

/// The list's filters.
#[derive(Debug, Default, PartialEq)]
struct ListQuery {
    metadata: BTreeMap<String, String>,
    states: Option<Vec<String>>,
    template: Option<String>,
    started_after_ms: Option<u64>,
    descending: bool,
    limit: Option<usize>,
    next_token: Option<String>,
}

impl ListQuery {
    fn parse(raw: &str) -> E2bResult<ListQuery> {
        // Newest first unless asked otherwise, as E2B lists.
        let mut q = ListQuery {
            descending: true,
            ..ListQuery::default()
        };
        for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
            match key.as_ref() {
                // A query string of its own, whose keys and values are percent-encoded again.
                "metadata" | "query" => {
                    for (k, v) in form_urlencoded::parse(value.as_bytes()) {
                        let k = percent_encoding::percent_decode_str(&k)
                            .decode_utf8_lossy()
                            .into_owned();
                        let v = percent_encoding::percent_decode_str(&v)
                            .decode_utf8_lossy()
                            .into_owned();
                        q.metadata.insert(k, v);
                    }
                }
                "state" => {
                    let states = q.states.get_or_insert_with(Vec::new);
                    for s in value.split(',').filter(|s| !s.is_empty()) {
                        if s != "running" && s != "paused" {
                            return Err(E2bError::bad(format!("state: {s:?} is not running or paused")));
                        }
                        states.push(s.to_owned());
                    }
                }
                "template" | "templateID" => q.template = Some(value.into_owned()),
                "startedAfter" => {
                    let t = chrono::DateTime::parse_from_rfc3339(&value).map_err(|e| {
                        E2bError::bad(format!("startedAfter: {value:?} is not an RFC 3339 time: {e}"))
                    })?;
                    q.started_after_ms = Some(t.timestamp_millis().max(0) as u64);
                }
                "order" => {
                    q.descending = match value.as_ref() {
                        "asc" => false,
                        "desc" => true,
                        other => return Err(E2bError::bad(format!("order: {other:?} is not asc or desc"))),
                    }
                }
                "limit" => {
                    let n: usize =
                        value
                            .parse()
                            .ok()
                            .filter(|n| (1..=1000).contains(n))
                            .ok_or_else(|| {
                                E2bError::bad(format!("limit: {value:?} is not a number from 1 to 1000"))
                            })?;
                    q.limit = Some(n);
                }
                "nextToken" => q.next_token = Some(value.into_owned()).filter(|t| !t.is_empty()),
                _ => {}
            }
        }
        Ok(q)
    }
}

/// The sandboxes a list shows, in order, each with its paging key (`started-ms.id`).
async fn listed(state: &AppState, q: &ListQuery) -> E2bResult<Vec<(String, Value)>> {
    let sandboxes = state.driver.list().await?;
    let mut rows = Vec::new();
    for record in Record::all(state).await {
        let Some(info) = sandboxes.iter().find(|s| s.id.as_str() == record.sandbox_id) else {
            continue;
        };
        let shown_state = if info.status == SandboxStatus::Running {
            "running"
        } else if info.status == SandboxStatus::Stopped {
            "paused"
        } else {
            continue;
        };
        if q.states
            .as_ref()
            .is_some_and(|s| !s.iter().any(|s| s == shown_state))
        {
            continue;
        }
        if q.metadata.iter().any(|(k, v)| record.metadata.get(k) != Some(v)) {
            continue;
        }
        if q.template.as_ref().is_some_and(|t| *t != record.template_id) {
            continue;
        }
        if q.started_after_ms.is_some_and(|t| record.started_at_ms < t) {
            continue;
        }
        let key = format!("{:013}.{}", record.started_at_ms, record.sandbox_id);
        rows.push((key, detail_json(&record, info)));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if q.descending {
        rows.reverse();
    }
    Ok(rows)
}

/// Whether the request carries an E2B API key, and which.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-api-key").and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn metadata_filters_are_decoded_twice() {
        // What the Python SDK sends for metadata={"a b": "c&d"}.
        let q = ListQuery::parse("metadata=a%2520b%3Dc%2526d&state=running,paused&limit=2").unwrap();
        assert_eq!(q.metadata.get("a b").map(String::as_str), Some("c&d"));
        assert_eq!(q.states, Some(vec!["running".into(), "paused".into()]));
        assert_eq!(q.limit, Some(2));
    }

    #[test]
    fn bad_filters_name_the_parameter() {
        for (query, named) in [
            ("state=gone", "state"),
            ("order=sideways", "order"),
            ("limit=0", "limit"),
            ("startedAfter=yesterday", "startedAfter"),
        ] {
            let e = ListQuery::parse(query).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert!(e.message.starts_with(named), "{query}: {}", e.message);
        }
    }
}
