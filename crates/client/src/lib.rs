//! [`RemoteDriver`]: the [`Driver`] trait over a Stockade daemon's HTTP API, so the CLI (or any
//! program) uses a daemon exactly as it would use a driver in-process. `STOCKADE_HOST` names the
//! daemon: `http://HOST:PORT` (with `STOCKADE_TOKEN`) or `unix:///path/to/stockade.sock`.
//!
//! Execs are started with `POST /api/sandboxes/ID/execs` and followed over the exec's WebSocket
//! from sequence 0, which also carries stdin, resizes and kills. Errors come back as
//! [`Error::Remote`] with the daemon's kind and message, so they print as local ones do.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use stockade_api::{ApiExecEvent, CreateSandbox, ErrorBody, ExecRecord, Rename, StartExec, WsInput};
use stockade_core::{
    DirEntry, Driver, Error, ExecControl, ExecEvent, ExecRequest, ExecSession, FileOp, FileReply, FileStat,
    Result, SandboxId, SandboxInfo, SandboxSpec, SpecFlags, Stats, TtySize,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port`.
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    /// Parses `STOCKADE_HOST`: `http://HOST:PORT`, `tcp://HOST:PORT`, `unix:///PATH` or `/PATH`.
    pub fn parse(s: &str) -> Result<Target> {
        let bad = || {
            Error::invalid(
                "STOCKADE_HOST",
                format!("{s:?}: expected http://HOST:PORT or unix:///path/to/stockade.sock"),
            )
        };
        if let Some(path) = s.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Target::Unix(path.into()));
        }
        if s.starts_with('/') {
            return Ok(Target::Unix(s.into()));
        }
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("tcp://"))
            .ok_or_else(bad)?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
            return Err(bad());
        }
        Ok(Target::Tcp(authority.to_owned()))
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A driver that is a daemon.
#[derive(Debug, Clone)]
pub struct RemoteDriver {
    target: Target,
    token: Option<String>,
    /// Secrets (by name) the daemon injects into every exec this client starts.
    exec_secrets: Vec<String>,
}

fn path_query(path: &str) -> String {
    let mut out = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl RemoteDriver {
    pub fn new(target: Target, token: Option<String>) -> RemoteDriver {
        RemoteDriver {
            target,
            token,
            exec_secrets: Vec::new(),
        }
    }

    /// From `STOCKADE_HOST` and `STOCKADE_TOKEN`; `None` when `STOCKADE_HOST` is unset.
    pub fn from_env() -> Result<Option<RemoteDriver>> {
        match std::env::var("STOCKADE_HOST") {
            Ok(host) if !host.is_empty() => Ok(Some(RemoteDriver::new(
                Target::parse(&host)?,
                std::env::var("STOCKADE_TOKEN").ok().filter(|t| !t.is_empty()),
            ))),
            _ => Ok(None),
        }
    }

    /// Secrets (by name) for the daemon to inject into every exec this client starts; their
    /// values stay with the daemon.
    pub fn with_exec_secrets(mut self, names: Vec<String>) -> Self {
        self.exec_secrets = names;
        self
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Tcp(a) => format!("http://{a}"),
            Target::Unix(p) => format!("unix://{}", p.display()),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Stream>> {
        let unreachable = |e: std::io::Error| {
            Error::backend(
                format!("daemon at {}", self.describe()),
                format!("{e} (is `stockade serve` running? STOCKADE_HOST names it)"),
            )
        };
        Ok(match &self.target {
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await.map_err(unreachable)?;
                let _ = s.set_nodelay(true);
                Box::new(s)
            }
            Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await.map_err(unreachable)?),
        })
    }

    fn host_header(&self) -> &str {
        match &self.target {
            Target::Tcp(a) => a,
            Target::Unix(_) => "localhost",
        }
    }

    /// One request; a non-2xx answer becomes the daemon's error.
    async fn call(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Bytes> {
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::backend("daemon connection", e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.host_header());
        if let Some(token) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some((content_type, data)) => req
                .header(hyper::header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(data))),
            None => req.body(Full::new(Bytes::new())),
        }
        .map_err(|e| Error::backend("request", e))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| Error::backend("daemon connection", e))?;
        let status = res.status();
        let data = res
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::backend("daemon connection", e))?
            .to_bytes();
        if status.is_success() {
            return Ok(data);
        }
        Err(self.error(status, &data))
    }

    fn error(&self, status: StatusCode, data: &[u8]) -> Error {
        error_from_response(&self.describe(), status.as_u16(), data)
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let data = self.call(method, path, body).await?;
        serde_json::from_slice(&data).map_err(|e| Error::backend("daemon answer", e))
    }

    /// Opens an exec's WebSocket from `from_seq`.
    async fn follow(&self, sandbox: &str, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        let stream = self.connect().await?;
        let uri = format!(
            "ws://{}/api/sandboxes/{sandbox}/execs/{exec_id}/ws?from_seq={from_seq}",
            self.host_header()
        );
        let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(uri)
            .map_err(|e| Error::backend("websocket", e))?;
        if let Some(token) = &self.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::invalid("STOCKADE_TOKEN", "not a valid header value"))?;
            req.headers_mut().insert(hyper::header::AUTHORIZATION, value);
        }
        let (ws, _) = tokio_tungstenite::client_async(req, stream)
            .await
            .map_err(|e| Error::backend("exec websocket", e))?;
        let (mut sink, source) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<WsInput>();
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let text = serde_json::to_string(&msg).unwrap_or_default();
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            // The control was dropped, not the events: a close frame here would end the stream
            // the caller still reads. The connection closes when both halves are gone.
            drop(sink);
        });
        let events = source.filter_map(|msg| async move {
            match msg {
                Ok(Message::Text(text)) => Some(event_from_json(text.as_str())),
                Ok(_) => None,
                Err(e) => Some(Err(Error::backend("exec websocket", e))),
            }
        });
        Ok(ExecSession {
            events: Box::pin(events),
            control: Arc::new(WsControl { tx }),
        })
    }

    async fn start(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        req.validate()?;
        let body = StartExec {
            argv: req.argv,
            env: req.env,
            cwd: req.cwd,
            user: req.user,
            stdin: req.stdin,
            tty: req.tty,
            timeout_ms: req
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            secrets: self.exec_secrets.clone(),
        };
        let body = serde_json::to_value(body).map_err(|e| Error::backend("encode", e))?;
        let started: ExecRecord = self
            .json(Method::POST, &format!("/api/sandboxes/{id}/execs"), Some(body))
            .await?;
        self.follow(id.as_str(), &started.id, 0).await
    }
}

/// The error a daemon's non-2xx answer means: its `ErrorBody` as [`Error::Remote`], or, when the
/// body is not one (a proxy's page, a newer daemon's unknown kind), a backend error that says so.
pub fn error_from_response(daemon: &str, status: u16, data: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorBody>(data) {
        Ok(body) => body.into_error(),
        Err(e) => Error::backend(
            format!("daemon at {daemon}"),
            format!(
                "{status}: {} (not an error body this client knows: {e})",
                String::from_utf8_lossy(data).trim()
            ),
        ),
    }
}

fn event_from_json(text: &str) -> Result<ExecEvent> {
    ApiExecEvent::parse(text).map_err(|e| Error::backend("exec event from the daemon", e))
}

struct WsControl {
    tx: mpsc::UnboundedSender<WsInput>,
}

impl WsControl {
    fn send(&self, msg: WsInput) -> Result<()> {
        self.tx
            .send(msg)
            .map_err(|_| Error::backend("exec websocket", "closed"))
    }
}

#[async_trait]
impl ExecControl for WsControl {
    async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.send(WsInput::Stdin {
            data: base64::engine::general_purpose::STANDARD.encode(data),
        })
    }
    async fn close_stdin(&self) -> Result<()> {
        self.send(WsInput::CloseStdin)
    }
    async fn resize(&self, size: TtySize) -> Result<()> {
        self.send(WsInput::Resize {
            rows: size.rows,
            cols: size.cols,
        })
    }
    async fn kill(&self) -> Result<()> {
        self.send(WsInput::Kill)
    }
}

#[async_trait]
impl Driver for RemoteDriver {
    fn name(&self) -> &'static str {
        "remote"
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let body = CreateSandbox {
            flags: SpecFlags::from_spec(&spec),
            ..CreateSandbox::default()
        };
        let flags = serde_json::to_value(body).map_err(|e| Error::backend("encode", e))?;
        self.json(Method::POST, "/api/sandboxes", Some(flags)).await
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        self.json(Method::GET, "/api/sandboxes", None).await
    }
    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        if id_or_name.is_empty()
            || !id_or_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::NotFound(id_or_name.to_owned()));
        }
        self.json(Method::GET, &format!("/api/sandboxes/{id_or_name}"), None)
            .await
    }
    async fn stop(&self, id: &SandboxId) -> Result<()> {
        self.call(Method::POST, &format!("/api/sandboxes/{id}/stop"), None)
            .await
            .map(drop)
    }
    async fn start(&self, id: &SandboxId) -> Result<()> {
        self.call(Method::POST, &format!("/api/sandboxes/{id}/start"), None)
            .await
            .map(drop)
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.call(Method::DELETE, &format!("/api/sandboxes/{id}"), None)
            .await
            .map(drop)
    }
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.call(Method::POST, &format!("/api/sandboxes/{id}/pause"), None)
            .await
            .map(drop)
    }
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.call(Method::POST, &format!("/api/sandboxes/{id}/resume"), None)
            .await
            .map(drop)
    }
    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        self.start(id, req).await
    }
    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, _exec_id: &str) -> Result<ExecSession> {
        // Every exec a daemon starts is kept; it picks the id.
        self.start(id, req).await
    }
    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        self.follow(id.as_str(), exec_id, from_seq).await
    }
    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        let base = format!("/api/sandboxes/{id}");
        match op {
            FileOp::Read { path } => {
                let data = self
                    .call(
                        Method::GET,
                        &format!("{base}/files?path={}", path_query(&path)),
                        None,
                    )
                    .await?;
                Ok(FileReply::Data { data: data.to_vec() })
            }
            FileOp::Write { path, mode, data, .. } => {
                let uri = format!("{base}/files?path={}&mode={mode:o}", path_query(&path));
                self.call(Method::PUT, &uri, Some(("application/octet-stream", data)))
                    .await?;
                Ok(FileReply::Done)
            }
            FileOp::List { path } => {
                let entries: Vec<DirEntry> = self
                    .json(
                        Method::GET,
                        &format!("{base}/dir?path={}", path_query(&path)),
                        None,
                    )
                    .await?;
                Ok(FileReply::Entries { entries })
            }
            FileOp::Stat { path } => {
                let stat: FileStat = self
                    .json(
                        Method::GET,
                        &format!("{base}/stat?path={}", path_query(&path)),
                        None,
                    )
                    .await?;
                Ok(FileReply::Stat { stat })
            }
            FileOp::Mkdir { path } => {
                self.call(
                    Method::POST,
                    &format!("{base}/mkdir?path={}", path_query(&path)),
                    None,
                )
                .await?;
                Ok(FileReply::Done)
            }
            FileOp::Remove { path, recursive } => {
                let uri = format!("{base}/files?path={}&recursive={recursive}", path_query(&path));
                self.call(Method::DELETE, &uri, None).await?;
                Ok(FileReply::Done)
            }
            FileOp::Rename { from, to } => {
                let body =
                    serde_json::to_value(Rename { from, to }).map_err(|e| Error::backend("encode", e))?;
                self.call(
                    Method::POST,
                    &format!("{base}/rename"),
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await?;
                Ok(FileReply::Done)
            }
            // Not in the daemon's API: its E2B surface serves them to E2B's SDKs.
            op @ (FileOp::Entry { .. }
            | FileOp::Walk { .. }
            | FileOp::WatchStart { .. }
            | FileOp::WatchEvents { .. }
            | FileOp::WatchStop { .. }) => Err(Error::Unsupported {
                driver: "remote".into(),
                feature: format!("file operation {}", op.name()),
                reason: "the daemon's API has no route for it".into(),
            }),
        }
    }
    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        self.json(Method::GET, &format!("/api/sandboxes/{id}/stats"), None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_and_bad_ones_name_the_variable() {
        assert_eq!(
            Target::parse("http://127.0.0.1:7070").unwrap(),
            Target::Tcp("127.0.0.1:7070".into())
        );
        assert_eq!(
            Target::parse("unix:///run/s.sock").unwrap(),
            Target::Unix("/run/s.sock".into())
        );
        let err = Target::parse("ftp://x").unwrap_err().to_string();
        assert!(err.starts_with("invalid STOCKADE_HOST"), "{err}");
    }
}
