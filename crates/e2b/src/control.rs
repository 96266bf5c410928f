//! E2B's control plane, client side: create (`POST /v2/sandboxes`), get, list (paged with
//! `X-Next-Token`), kill, pause, connect and metrics, with `X-API-KEY`. Errors are E2B's JSON
//! `{"code": <status>, "message"}`; reads are retried on the statuses E2B's SDKs retry.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use stockade_core::{Error, Result};

use crate::http::{query_value, Http};

/// What a create sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateSandbox {
    #[serde(rename = "templateID")]
    pub template_id: String,
    /// Seconds until E2B kills the sandbox.
    pub timeout: u64,
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "envVars")]
    pub env_vars: BTreeMap<String, String>,
    pub allow_internet_access: bool,
}

/// E2B's `Sandbox`: what a create or connect answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Sandbox {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    #[serde(rename = "envdVersion", default)]
    pub envd_version: String,
    #[serde(rename = "envdAccessToken", default)]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

/// E2B's `SandboxDetail` / `ListedSandbox`: the fields the driver reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SandboxDetail {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "templateID", default)]
    pub template_id: String,
    /// `running` or `paused`.
    #[serde(default)]
    pub state: String,
    #[serde(rename = "startedAt", default)]
    pub started_at: Option<String>,
    #[serde(rename = "endAt", default)]
    pub end_at: Option<String>,
    #[serde(rename = "envdAccessToken", default)]
    pub envd_access_token: Option<String>,
    #[serde(default)]
    pub domain: Option<String>,
}

/// One of E2B's `SandboxMetric` samples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxMetric {
    #[serde(default)]
    pub timestamp_unix: i64,
    #[serde(default)]
    pub cpu_count: u32,
    #[serde(default)]
    pub cpu_used_pct: f64,
    #[serde(default)]
    pub mem_used: u64,
    #[serde(default)]
    pub mem_total: u64,
    #[serde(default)]
    pub disk_used: u64,
    #[serde(default)]
    pub disk_total: u64,
}

/// How a pause went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    Now,
    Already,
    NoSuchSandbox,
}

/// E2B's error body.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
}

/// A control-plane failure: the status and E2B's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("E2B API answered {status}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    fn of(status: StatusCode, body: &[u8]) -> ApiError {
        let message = serde_json::from_slice::<ErrorBody>(body)
            .map(|b| b.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(body).chars().take(300).collect());
        ApiError {
            status: status.as_u16(),
            message,
        }
    }

    /// As a core error, for `what` (an operation on a sandbox, say).
    pub fn into_error(self, what: &str) -> Error {
        match self.status {
            400 | 422 => Error::invalid(what, format!("E2B refused it: {}", self.message)),
            401 | 403 => Error::backend(
                what,
                format!(
                    "E2B refused the API key ({}): {}; check E2B_API_KEY",
                    self.status, self.message
                ),
            ),
            _ => Error::backend(what, self),
        }
    }
}

/// The control plane of one account.
#[derive(Clone)]
pub struct Api {
    http: Http,
    base: String,
    key: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How many times a read is tried when E2B answers with a status its SDKs retry.
const READ_TRIES: u32 = 3;

impl Api {
    /// The API at `base` with `key`.
    pub fn new(http: Http, base: String, key: String) -> Api {
        Api { http, base, key }
    }

    fn what(&self) -> String {
        format!("E2B API at {}", self.base)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<crate::http::Answer> {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![("x-api-key", self.key.clone())];
        let data = match body {
            Some(b) => {
                headers.push(("content-type", "application/json".to_owned()));
                b.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        let req = Http::request(method, &url, &headers, data)?;
        self.http.call(req, &self.what()).await
    }

    /// A read, retried on 429 and 502–504 and on failures to connect.
    async fn read(&self, path: &str) -> Result<crate::http::Answer> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = self.send(Method::GET, path, None).await;
            let retry = match &answer {
                Ok(a) => matches!(a.status.as_u16(), 429 | 502..=504),
                Err(Error::Backend { .. }) => true,
                Err(_) => false,
            };
            if !retry || attempt >= READ_TRIES {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt * attempt))).await;
        }
    }

    /// `POST /v2/sandboxes`: 201 and the new sandbox.
    pub async fn create(&self, body: &CreateSandbox) -> Result<Sandbox> {
        let json = serde_json::to_value(body).map_err(|e| Error::backend("encode the create", e))?;
        let a = self.send(Method::POST, "/v2/sandboxes", Some(json)).await?;
        if a.status != StatusCode::CREATED && a.status != StatusCode::OK {
            return Err(ApiError::of(a.status, &a.body).into_error("create"));
        }
        parse(&a.body, "the create's answer")
    }

    /// `GET /sandboxes/{id}`: `None` when E2B has no such sandbox (killed, or timed out).
    pub async fn get(&self, sandbox_id: &str) -> Result<Option<SandboxDetail>> {
        let a = self
            .read(&format!("/sandboxes/{}", query_value(sandbox_id)))
            .await?;
        match a.status {
            StatusCode::OK => parse(&a.body, "the sandbox's detail").map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(ApiError::of(s, &a.body).into_error("get")),
        }
    }

    /// `GET /v2/sandboxes`: every running and paused sandbox, page by page.
    pub async fn list(&self) -> Result<Vec<SandboxDetail>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        // A bound, so a server that repeats a token cannot loop forever: 1000 pages of 100.
        for _ in 0..1000 {
            let mut path = "/v2/sandboxes?state=running%2Cpaused&limit=100".to_owned();
            if let Some(t) = &token {
                path.push_str(&format!("&nextToken={}", query_value(t)));
            }
            let a = self.read(&path).await?;
            if a.status != StatusCode::OK {
                return Err(ApiError::of(a.status, &a.body).into_error("list"));
            }
            let page: Vec<SandboxDetail> = parse(&a.body, "the list")?;
            all.extend(page);
            token = a
                .headers
                .get("x-next-token")
                .and_then(|v| v.to_str().ok())
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                return Ok(all);
            }
        }
        Err(Error::backend(
            self.what(),
            "the sandbox list did not end after 1000 pages",
        ))
    }

    /// `DELETE /sandboxes/{id}`: whether it was there.
    pub async fn kill(&self, sandbox_id: &str) -> Result<bool> {
        let a = self
            .send(
                Method::DELETE,
                &format!("/sandboxes/{}", query_value(sandbox_id)),
                None,
            )
            .await?;
        match a.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(ApiError::of(s, &a.body).into_error("kill")),
        }
    }

    /// `POST /sandboxes/{id}/pause`.
    pub async fn pause(&self, sandbox_id: &str) -> Result<Paused> {
        let a = self
            .send(
                Method::POST,
                &format!("/sandboxes/{}/pause", query_value(sandbox_id)),
                Some(serde_json::json!({})),
            )
            .await?;
        match a.status {
            StatusCode::NO_CONTENT | StatusCode::OK => Ok(Paused::Now),
            StatusCode::CONFLICT => Ok(Paused::Already),
            StatusCode::NOT_FOUND => Ok(Paused::NoSuchSandbox),
            s => Err(ApiError::of(s, &a.body).into_error("pause")),
        }
    }

    /// `POST /sandboxes/{id}/connect` (200 running, 201 resumed): `None` when there is no
    /// such sandbox. `timeout` only ever extends the sandbox's life.
    pub async fn connect(&self, sandbox_id: &str, timeout_secs: u64) -> Result<Option<Sandbox>> {
        let a = self
            .send(
                Method::POST,
                &format!("/sandboxes/{}/connect", query_value(sandbox_id)),
                Some(serde_json::json!({ "timeout": timeout_secs })),
            )
            .await?;
        match a.status {
            StatusCode::OK | StatusCode::CREATED => parse(&a.body, "the connect's answer").map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(ApiError::of(s, &a.body).into_error("connect")),
        }
    }

    /// `GET /sandboxes/{id}/metrics`: `None` when there is no such sandbox.
    pub async fn metrics(&self, sandbox_id: &str) -> Result<Option<Vec<SandboxMetric>>> {
        let a = self
            .read(&format!("/sandboxes/{}/metrics", query_value(sandbox_id)))
            .await?;
        match a.status {
            StatusCode::OK => parse(&a.body, "the metrics").map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(ApiError::of(s, &a.body).into_error("metrics")),
        }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::backend(format!("E2B API: {what}"), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_create_is_e2bs_shape() {
        let body = CreateSandbox {
            template_id: "base".into(),
            timeout: 3600,
            metadata: BTreeMap::from([("stockade.name".into(), "dev".into())]),
            env_vars: BTreeMap::from([("A".into(), "1".into())]),
            allow_internet_access: false,
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            serde_json::json!({
                "templateID": "base", "timeout": 3600,
                "metadata": {"stockade.name": "dev"}, "envVars": {"A": "1"},
                "allow_internet_access": false,
            })
        );
    }

    #[test]
    fn errors_carry_e2bs_message() {
        let e = ApiError::of(
            StatusCode::BAD_REQUEST,
            br#"{"code":400,"message":"timeout too long"}"#,
        );
        assert_eq!(e.message, "timeout too long");
        assert_eq!(
            e.into_error("create").to_string(),
            "invalid create: E2B refused it: timeout too long"
        );
        let e = ApiError::of(StatusCode::UNAUTHORIZED, b"nope");
        assert!(e.into_error("list").to_string().contains("check E2B_API_KEY"));
    }

    #[test]
    fn sandboxes_parse_with_optional_fields_absent() {
        let s: Sandbox = serde_json::from_str(
            r#"{"templateID":"base","sandboxID":"abc","clientID":"x","envdVersion":"0.5.7","domain":null}"#,
        )
        .unwrap();
        assert_eq!((s.sandbox_id.as_str(), s.envd_access_token), ("abc", None));
    }
}
