//! One HTTP/1.1 client for both of E2B's surfaces: hyper 1 with a connection pool, plain TCP
//! for `http://` (Stockade's own E2B surface, a local stand-in) and rustls for `https://`
//! (E2B's cloud), with webpki's root certificates so no host store is needed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stockade_core::{Error, Result};

/// How long a TCP (and TLS) connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a whole unary call (request, answer and body) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// What the driver identifies itself as.
pub const USER_AGENT: &str = concat!("stockade-e2b/", env!("CARGO_PKG_VERSION"));

/// The shared client.
#[derive(Clone)]
pub struct Http {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Http {
    /// A client; nothing is connected until a request is sent.
    pub fn new() -> Result<Http> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| Error::backend("TLS setup", e))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new()).build(https);
        Ok(Http { client })
    }

    /// A request to `url` with `headers` and `body`.
    pub fn request(
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(url)
            .header(hyper::header::USER_AGENT, USER_AGENT);
        for (name, value) in headers {
            builder = builder.header(*name, value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::backend(format!("request to {}", redact_url(url)), e))
    }

    /// Sends `req` and waits for the answer's head; the body streams after. `what` names the
    /// endpoint in errors.
    pub async fn open(&self, req: Request<Full<Bytes>>, what: &str) -> Result<Response<Incoming>> {
        match tokio::time::timeout(CALL_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(res)) => Ok(res),
            Ok(Err(e)) => Err(Error::backend(what, transport_reason(&e))),
            Err(_) => Err(Error::Timeout(CALL_TIMEOUT, what.to_owned())),
        }
    }

    /// Sends `req` and reads the whole answer.
    pub async fn call(&self, req: Request<Full<Bytes>>, what: &str) -> Result<Answer> {
        let run = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| Error::backend(what, transport_reason(&e)))?;
            let (parts, body) = res.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| Error::backend(what, format!("reading the answer: {e}")))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(CALL_TIMEOUT, run).await {
            Ok(answer) => answer,
            Err(_) => Err(Error::Timeout(CALL_TIMEOUT, what.to_owned())),
        }
    }
}

/// The reason of a transport failure, with its cause (hyper's own text is only "client error").
fn transport_reason(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A URL without its query (which may carry paths, never secrets, but is long).
pub fn redact_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Percent-encodes a query value.
pub fn query_value(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Reads the next chunk of a streaming body: `None` at its end.
pub async fn next_chunk(body: &mut Incoming) -> Option<std::result::Result<Bytes, hyper::Error>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                // Trailers: not data, keep reading.
                Err(_) => continue,
            },
            Err(e) => return Some(Err(e)),
        }
    }
}
