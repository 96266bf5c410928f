//! envd, client side: the daemon in one E2B sandbox. Every request carries `E2b-Sandbox-Id`
//! and `E2b-Sandbox-Port` (the proxy routes by them when one URL serves every sandbox),
//! `X-Access-Token`, and for another user `Authorization: Basic base64("user:")`. Unary
//! Connect calls, one server stream (`open_stream`), and `/files`.

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use stockade_core::Error;

use crate::config::ENVD_PORT;
use crate::connect::{self, RpcError};
use crate::http::{query_value, Answer, Http};

/// How often envd is asked to send a keepalive on an idle stream, in seconds.
pub const KEEPALIVE_SECS: u64 = 30;

/// Why an envd call failed.
#[derive(Debug, thiserror::Error)]
pub enum EnvdError {
    /// A Connect error (`not_found`, `invalid_argument`, ...).
    #[error("{0}")]
    Rpc(RpcError),
    /// `/files` answered with this status and message.
    #[error("{status}: {message}")]
    Http { status: u16, message: String },
    /// E2B's proxy has no running sandbox by this id (`502 ... was not found`): paused,
    /// killed or timed out.
    #[error("the sandbox is not running: {0}")]
    NotRunning(String),
    /// The request did not get an answer.
    #[error(transparent)]
    Transport(Error),
}

impl EnvdError {
    /// The Connect code, when it is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EnvdError::Rpc(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// The envd of one sandbox.
#[derive(Clone)]
pub struct Envd {
    http: Http,
    base: String,
    sandbox_id: String,
    token: Option<String>,
}

impl std::fmt::Debug for Envd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envd")
            .field("base", &self.base)
            .field("sandbox_id", &self.sandbox_id)
            .finish_non_exhaustive()
    }
}

/// The `Authorization` header for `user`.
pub fn basic_auth(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

impl Envd {
    /// envd at `base` for E2B sandbox `sandbox_id`, with its access token.
    pub fn new(http: Http, base: String, sandbox_id: String, token: Option<String>) -> Envd {
        Envd {
            http,
            base,
            sandbox_id,
            token,
        }
    }

    fn what(&self) -> String {
        format!("envd of E2B sandbox {}", self.sandbox_id)
    }

    fn headers(&self, user: Option<&str>, content_type: &str) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("e2b-sandbox-id", self.sandbox_id.clone()),
            ("e2b-sandbox-port", ENVD_PORT.to_string()),
            ("content-type", content_type.to_owned()),
        ];
        if let Some(token) = &self.token {
            h.push(("x-access-token", token.clone()));
        }
        if let Some(user) = user {
            h.push(("authorization", basic_auth(user)));
        }
        h
    }

    /// A failed answer's error: the proxy's "not found", a Connect error, or the status.
    fn failure(&self, status: StatusCode, body: &[u8]) -> EnvdError {
        let text = String::from_utf8_lossy(body);
        if status == StatusCode::BAD_GATEWAY && text.contains("was not found") {
            return EnvdError::NotRunning(self.sandbox_id.clone());
        }
        if let Some(e) = connect::unary_error(body) {
            return EnvdError::Rpc(e);
        }
        #[derive(serde::Deserialize)]
        struct Message {
            #[serde(default)]
            message: String,
        }
        let message = serde_json::from_slice::<Message>(body)
            .map(|m| m.message)
            .unwrap_or_else(|_| text.chars().take(300).collect());
        EnvdError::Http {
            status: status.as_u16(),
            message,
        }
    }

    /// A unary call: `POST /<service>/<method>` with a JSON message.
    pub async fn unary<Q: Serialize, A: DeserializeOwned>(
        &self,
        method: &str,
        message: &Q,
        user: Option<&str>,
    ) -> std::result::Result<A, EnvdError> {
        let url = format!("{}/{method}", self.base);
        let mut headers = self.headers(user, "application/json");
        headers.push(("connect-protocol-version", "1".to_owned()));
        let body = serde_json::to_vec(message)
            .map_err(|e| EnvdError::Transport(Error::backend(format!("encode {method}"), e)))?;
        let req = Http::request(Method::POST, &url, &headers, body).map_err(EnvdError::Transport)?;
        let a = self.send(req).await?;
        serde_json::from_slice(if a.body.is_empty() { b"{}" } else { &a.body })
            .map_err(|e| EnvdError::Transport(Error::backend(self.what(), format!("{method}'s answer: {e}"))))
    }

    /// A server stream: `POST /<service>/<method>` with one envelope; the answer's body is
    /// returned to be read envelope by envelope. `timeout_ms` is the request deadline
    /// (`Connect-Timeout-Ms`): envd ends the call, and for `Start` kills the process, then.
    pub async fn open_stream<Q: Serialize>(
        &self,
        method: &str,
        message: &Q,
        user: Option<&str>,
        timeout_ms: Option<u64>,
    ) -> std::result::Result<Incoming, EnvdError> {
        let url = format!("{}/{method}", self.base);
        let mut headers = self.headers(user, "application/connect+json");
        headers.push(("connect-protocol-version", "1".to_owned()));
        headers.push(("keepalive-ping-interval", KEEPALIVE_SECS.to_string()));
        if let Some(ms) = timeout_ms {
            headers.push(("connect-timeout-ms", ms.to_string()));
        }
        let json = serde_json::to_vec(message)
            .map_err(|e| EnvdError::Transport(Error::backend(format!("encode {method}"), e)))?;
        let req = Http::request(Method::POST, &url, &headers, connect::envelope(&json))
            .map_err(EnvdError::Transport)?;
        let res = self
            .http
            .open(req, &self.what())
            .await
            .map_err(EnvdError::Transport)?;
        if res.status() != StatusCode::OK {
            let status = res.status();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(self.failure(status, &body));
        }
        Ok(res.into_body())
    }

    /// Sends a whole request; an answer other than 200 is envd's error.
    async fn send(
        &self,
        req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    ) -> std::result::Result<Answer, EnvdError> {
        let a = self
            .http
            .call(req, &self.what())
            .await
            .map_err(EnvdError::Transport)?;
        if a.status != StatusCode::OK {
            return Err(self.failure(a.status, &a.body));
        }
        Ok(a)
    }

    /// `GET /files?path=`: the file's bytes.
    pub async fn download(&self, path: &str, user: Option<&str>) -> std::result::Result<Vec<u8>, EnvdError> {
        let url = format!("{}/files?path={}", self.base, query_value(path));
        let headers = self.headers(user, "application/octet-stream");
        let req = Http::request(Method::GET, &url, &headers, Vec::new()).map_err(EnvdError::Transport)?;
        let a = self.send(req).await?;
        Ok(a.body.to_vec())
    }

    /// `POST /files?path=` with the raw bytes (`application/octet-stream`, envd 0.5.7 and up).
    pub async fn upload(
        &self,
        path: &str,
        data: Vec<u8>,
        user: Option<&str>,
    ) -> std::result::Result<(), EnvdError> {
        let url = format!("{}/files?path={}", self.base, query_value(path));
        let headers = self.headers(user, "application/octet-stream");
        let req = Http::request(Method::POST, &url, &headers, data).map_err(EnvdError::Transport)?;
        self.send(req).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_the_user_and_an_empty_password() {
        assert_eq!(basic_auth("root"), "Basic cm9vdDo=");
    }
}
