//! The Connect protocol as envd speaks it, JSON codec: unary calls (`application/json` both
//! ways, errors as `{"code":"not_found","message"}` with the matching HTTP status) and streams
//! (`application/connect+json`: envelopes of `[flags u8][length u32 BE][JSON]`, the last one
//! flagged end-stream and carrying `{}` or `{"error":{...}}`). A stream's error is an end-stream
//! frame in a 200 answer, never an HTTP status: connect-web reads only the frame.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;
use stockade_core::ErrorKind;

use crate::error::ApiError;

/// Flag of the frame that ends a stream.
const END_STREAM: u8 = 0x02;
/// Flag of a compressed frame (the SDKs never compress; neither do we).
const COMPRESSED: u8 = 0x01;

/// A Connect error code, as the SDKs branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    DeadlineExceeded,
    Unauthenticated,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "invalid_argument",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (the Connect spec's table).
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::FailedPrecondition => StatusCode::BAD_REQUEST,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

/// An RPC's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
        }
    }

    fn body(&self) -> serde_json::Value {
        serde_json::json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> Self {
        let code = match e.code {
            ErrorKind::NotFound | ErrorKind::ExecNotFound => Code::NotFound,
            ErrorKind::Invalid | ErrorKind::CommandNotFound => Code::InvalidArgument,
            ErrorKind::File => file_code(&e.message),
            ErrorKind::Unsupported | ErrorKind::MethodNotAllowed => Code::Unimplemented,
            ErrorKind::Timeout => Code::DeadlineExceeded,
            ErrorKind::WrongState => Code::FailedPrecondition,
            ErrorKind::NameTaken => Code::AlreadyExists,
            ErrorKind::Unauthorized => Code::Unauthenticated,
            ErrorKind::Forbidden => Code::PermissionDenied,
            ErrorKind::Backend | ErrorKind::Internal => Code::Internal,
        };
        RpcError::new(code, e.message)
    }
}

impl From<stockade_core::Error> for RpcError {
    fn from(e: stockade_core::Error) -> Self {
        ApiError::from(e).into()
    }
}

/// A file error's code, from the reason the agent gave (`path: reason`).
fn file_code(message: &str) -> Code {
    let m = message.to_ascii_lowercase();
    if m.contains("no such file") || m.contains("not found") {
        Code::NotFound
    } else if m.contains("already exists") {
        Code::AlreadyExists
    } else if m.contains("permission denied") || m.contains("read-only") {
        Code::PermissionDenied
    } else if m.contains("no space") || m.contains("quota") {
        Code::ResourceExhausted
    } else {
        Code::InvalidArgument
    }
}

/// The JSON message of a unary request (envd's dispatch has refused other codecs). An empty
/// body is the empty message.
pub fn unary_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    parse(if body.is_empty() { b"{}" } else { body })
}

fn parse<T: DeserializeOwned>(json: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(json)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("the request message: {e}")))
}

/// Splits whole envelopes off the front of `buf`: (flags, message) each; what is left is an
/// incomplete envelope.
pub fn envelopes(buf: &mut Vec<u8>) -> Result<Vec<(u8, Vec<u8>)>, RpcError> {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() - at >= 5 {
        let flags = buf[at];
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if flags & COMPRESSED != 0 {
            return Err(RpcError::new(
                Code::Unimplemented,
                "compressed messages are not accepted",
            ));
        }
        if len > crate::MAX_BODY {
            return Err(RpcError::new(
                Code::ResourceExhausted,
                "a message is larger than 64 MiB",
            ));
        }
        if buf.len() - at - 5 < len {
            break;
        }
        out.push((flags, buf[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    buf.drain(..at);
    Ok(out)
}

/// The one message of a server-streaming request (sent as one envelope).
pub fn stream_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    let mut buf = body.to_vec();
    let mut frames = envelopes(&mut buf)?;
    if !buf.is_empty() || frames.len() != 1 {
        return Err(RpcError::new(
            Code::InvalidArgument,
            "a streaming request's body must be exactly one envelope",
        ));
    }
    let (_, message) = frames.remove(0);
    parse(&message)
}

/// One envelope.
pub fn frame(flags: u8, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(flags);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    Bytes::from(out)
}

/// A message envelope.
pub fn message<T: Serialize>(message: &T) -> Bytes {
    frame(0, &serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()))
}

/// The end-stream envelope: `{}`, or the error.
pub fn end_stream(error: Option<&RpcError>) -> Bytes {
    let body = match error {
        None => serde_json::json!({}),
        Some(e) => serde_json::json!({ "error": e.body() }),
    };
    frame(END_STREAM, body.to_string().as_bytes())
}

/// A unary answer.
pub fn unary_reply<T: Serialize>(result: Result<T, RpcError>) -> Response {
    match result {
        Ok(message) => axum::Json(message).into_response(),
        Err(e) => (e.code.status(), axum::Json(e.body())).into_response(),
    }
}

/// A streaming answer from already-framed chunks (end-stream included by the caller). An
/// `Err` item aborts the response mid-body (no end frame), as envd does when its sandbox dies.
pub fn stream_reply<S>(frames: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/connect+json")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A stream that fails before its first message: 200 with only the end-stream error.
pub fn stream_error(e: RpcError) -> Response {
    stream_reply(futures::stream::iter([Ok(end_stream(Some(&e)))]))
}

/// The request's deadline from `Connect-Timeout-Ms`, if any.
pub fn timeout(headers: &HeaderMap) -> Option<std::time::Duration> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(std::time::Duration::from_millis)
}

/// Proto3 JSON's int64 (a string, or a number from a lenient client).
pub mod int64 {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Num(i64),
            Str(String),
        }
        match Option::<Either>::deserialize(d)? {
            None => Ok(None),
            Some(Either::Num(n)) => Ok(Some(n)),
            Some(Either::Str(s)) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelopes_split_whole_frames_and_keep_the_rest() {
        let mut buf = frame(0, b"{\"a\":1}").to_vec();
        buf.extend_from_slice(&frame(END_STREAM, b"{}"));
        buf.extend_from_slice(&[0, 0, 0]);
        let frames = envelopes(&mut buf).unwrap();
        assert_eq!(
            frames,
            vec![(0, b"{\"a\":1}".to_vec()), (END_STREAM, b"{}".to_vec())]
        );
        assert_eq!(buf, vec![0, 0, 0], "an incomplete envelope waits for more");
    }

    #[test]
    fn a_stream_request_is_one_envelope() {
        let v: serde_json::Value = stream_request(&frame(0, b"{\"x\":2}")).unwrap();
        assert_eq!(v["x"], 2);
        let e = stream_request::<serde_json::Value>(b"\0\0\0\0\x09{}").unwrap_err();
        assert_eq!(e.code, Code::InvalidArgument);
    }

    #[test]
    fn end_stream_carries_the_error_code_by_name() {
        let f = end_stream(Some(&RpcError::new(Code::NotFound, "process 7")));
        assert_eq!(f[0], END_STREAM);
        let v: serde_json::Value = serde_json::from_slice(&f[5..]).unwrap();
        assert_eq!(v["error"]["code"], "not_found");
        assert_eq!(v["error"]["message"], "process 7");
    }

    #[test]
    fn file_errors_map_to_the_codes_the_sdk_branches_on() {
        assert_eq!(file_code("/x: no such file or directory"), Code::NotFound);
        assert_eq!(file_code("/x: already exists"), Code::AlreadyExists);
        assert_eq!(file_code("/x: is a directory"), Code::InvalidArgument);
    }
}
