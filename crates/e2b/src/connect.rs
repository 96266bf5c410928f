//! The Connect protocol's JSON codec as envd speaks it, client side and pure: a streaming
//! request is one envelope `[flags u8][length u32 BE][JSON]`; a streaming answer is envelopes,
//! the last flagged end-stream with `{}` or `{"error":{"code","message"}}`; a unary error is a
//! JSON body `{"code":"not_found","message"}`.

use serde::Deserialize;

/// Flag of the envelope that ends a stream.
pub const END_STREAM: u8 = 0x02;
/// Flag of a compressed envelope (never asked for, so never accepted).
pub const COMPRESSED: u8 = 0x01;
/// The largest envelope accepted (envd's messages are at most a few MiB of output).
pub const MAX_MESSAGE: usize = 64 << 20;

/// One envelope around `json`.
pub fn envelope(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + json.len());
    out.push(0);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    out
}

/// One envelope of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The end-stream envelope (its JSON is `{}` or an error).
    pub end: bool,
    pub json: Vec<u8>,
}

/// A Connect error, as the wire names it (`not_found`, `deadline_exceeded`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RpcError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Splits envelopes off a byte stream as chunks arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole envelope, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if flags & COMPRESSED != 0 {
            return Err("a compressed envelope, which was not asked for".into());
        }
        if len > MAX_MESSAGE {
            return Err(format!("an envelope of {len} bytes (at most {MAX_MESSAGE})"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        let json = self.buf[5..5 + len].to_vec();
        self.buf.drain(..5 + len);
        Ok(Some(Frame {
            end: flags & END_STREAM != 0,
            json,
        }))
    }

    /// Whether bytes of an unfinished envelope are waiting.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The error an end-stream envelope carries, if any.
pub fn end_stream_error(json: &[u8]) -> Result<Option<RpcError>, String> {
    #[derive(Deserialize)]
    struct End {
        #[serde(default)]
        error: Option<RpcError>,
    }
    let end: End = serde_json::from_slice(if json.is_empty() { b"{}" } else { json })
        .map_err(|e| format!("the end-stream message: {e}"))?;
    Ok(end.error)
}

/// A unary error body, when the body is one.
pub fn unary_error(body: &[u8]) -> Option<RpcError> {
    serde_json::from_slice::<RpcError>(body)
        .ok()
        .filter(|e| !e.code.is_empty())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelopes_split_across_chunks() {
        let mut wire = envelope(br#"{"a":1}"#);
        let mut end = vec![END_STREAM];
        end.extend_from_slice(&2u32.to_be_bytes());
        end.extend_from_slice(b"{}");
        wire.extend_from_slice(&end);
        let mut d = Decoder::default();
        let mut frames = Vec::new();
        for chunk in wire.chunks(3) {
            d.push(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert!(d.is_empty());
        assert_eq!(
            frames,
            [
                Frame {
                    end: false,
                    json: br#"{"a":1}"#.to_vec()
                },
                Frame {
                    end: true,
                    json: b"{}".to_vec()
                }
            ]
        );
    }

    #[test]
    fn compressed_and_huge_envelopes_are_refused() {
        let mut d = Decoder::default();
        d.push(&[COMPRESSED, 0, 0, 0, 0]);
        assert!(d.next_frame().is_err());
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
    }

    #[test]
    fn end_stream_errors_are_read() {
        assert_eq!(end_stream_error(b"{}").unwrap(), None);
        let e = end_stream_error(br#"{"error":{"code":"deadline_exceeded","message":"late"}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(e.code, "deadline_exceeded");
        assert_eq!(
            unary_error(br#"{"code":"not_found","message":"x"}"#)
                .unwrap()
                .message,
            "x"
        );
        assert_eq!(unary_error(br#"{"code":502}"#), None);
    }
}
