//! The agent protocol: how a host talks to the Stockade agent inside a sandbox over one stream
//! (a unix socket for the native driver, the same socket bind-mounted for container drivers, a
//! multiplexed stream over a virtio-serial port for VM guests).
//!
//! A frame is `u32 header_len, u32 payload_len` (little endian), a JSON header, then raw payload
//! bytes. Headers are small and readable; bulk bytes (output chunks, file contents, stdin) travel
//! as payload so nothing is base64'd or escaped. One connection carries one exec, or any number
//! of file/stats requests one after another.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use stockade_core::{Error, ExecExit, ExecRequest, FileOp, FileReply, OutputStream, Stats, TtySize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bumped on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;
/// The name of the virtio-serial port a VM guest's agent serves on.
pub const VM_AGENT_PORT: &str = "stockade.agent";
/// What a VM guest's agent writes on its port, once, before the host may speak.
pub const VM_AGENT_READY: &[u8] = b"stockade-agent ready\n";
/// Largest JSON header accepted.
pub const MAX_HEADER: usize = 1 << 20;
/// Largest payload accepted (one file read or write).
pub const MAX_PAYLOAD: usize = 1 << 30;

/// Host → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Request {
    /// Start a command; the connection then belongs to this exec.
    Exec {
        req: ExecRequest,
        /// Keep the exec under this id: it then outlives the connection (a hang-up no longer
        /// kills it), its events are kept in the agent, and [`Request::Attach`] reads them again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_as: Option<String>,
    },
    /// Follow a kept exec from event `from_seq` on (earlier events are replayed first); the
    /// connection then steers it like the one that started it. Answered by
    /// [`Reply::Attached`] or an error.
    Attach {
        exec_id: String,
        from_seq: u64,
    },
    /// Payload: bytes for the exec's stdin.
    Stdin,
    CloseStdin,
    Resize {
        size: TtySize,
    },
    /// Kill the exec's whole process tree.
    Kill,
    /// A file operation; the payload is the data of a write.
    File {
        op: FileOp,
    },
    Stats,
    Ping,
    /// Connect to TCP `port` on the sandbox's loopback; after [`Reply::Connected`] the
    /// connection carries that stream's bytes both ways, unframed.
    Connect {
        port: u16,
    },
    /// The first request a VM guest's agent takes, on the first stream of a session, and only
    /// once: the sandbox's config and the guest's identity, which a VM restored from a snapshot
    /// must not share with its siblings. Answered by [`Reply::Configured`].
    Configure {
        config: Box<AgentConfig>,
        identity: GuestIdentity,
    },
}

/// What makes one VM guest distinct from another started from the same snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestIdentity {
    pub hostname: String,
    /// 32 lowercase hex digits, written to `/etc/machine-id`.
    pub machine_id: String,
    /// Hex bytes mixed into the guest kernel's random pool, which is then reseeded.
    pub random_seed: String,
    /// The host's wall clock when it sent this, in nanoseconds since the epoch: a guest restored
    /// from a snapshot wakes with the snapshot's time. 0: leave the guest's clock alone.
    #[serde(default)]
    pub unix_time_ns: u64,
    /// `--network full`: how the guest's NIC (`eth0`) is addressed; none without a NIC.
    #[serde(default)]
    pub network: Option<GuestNetwork>,
}

/// A guest NIC's addressing: a point-to-point /30 with the host's side as the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNetwork {
    /// `ADDRESS/PREFIX`, e.g. `10.200.0.2/30`.
    pub address: String,
    pub gateway: String,
    /// Written to the guest's `/etc/resolv.conf` (left alone when empty).
    pub nameservers: Vec<String>,
}

/// Agent → host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Reply {
    Started {
        seq: u64,
        pid: u32,
    },
    /// Payload: the bytes.
    Output {
        seq: u64,
        stream: OutputStream,
    },
    Exited {
        seq: u64,
        exit: ExecExit,
    },
    /// The payload is the data of a read.
    File {
        reply: FileReply,
    },
    Stats {
        stats: Stats,
    },
    Pong {
        version: u32,
        pid: u32,
    },
    /// The kept exec was found; its events from the requested sequence number follow.
    Attached,
    /// The port answered; raw bytes follow.
    Connected,
    /// The guest took its config and identity.
    Configured,
    /// `subject` is the path of a file error or the field of an invalid-input error, so the host
    /// rebuilds the same typed error (and the CLI picks the same exit code) as the agent had.
    Error {
        kind: String,
        message: String,
        subject: Option<String>,
    },
}

impl Reply {
    /// The wire form of an error.
    pub fn from_error(err: &Error) -> Reply {
        let (message, subject) = match err {
            Error::File { path, reason } => (reason.clone(), Some(path.clone())),
            Error::InvalidSpec { field, reason } => (reason.clone(), Some(field.clone())),
            Error::CommandNotFound(what) | Error::ExecNotFound(what) => (what.clone(), None),
            other => (other.to_string(), None),
        };
        Reply::Error {
            kind: err.kind().as_str().to_owned(),
            message,
            subject,
        }
    }
}

/// Turns a wire error back into a typed one.
pub fn error_from_wire(kind: &str, message: String, subject: Option<String>) -> Error {
    match (kind, subject) {
        ("command_not_found", _) => Error::CommandNotFound(message),
        ("exec_not_found", _) => Error::ExecNotFound(message),
        ("file", Some(path)) => Error::File {
            path,
            reason: message,
        },
        ("invalid", Some(field)) => Error::InvalidSpec {
            field,
            reason: message,
        },
        ("invalid", None) => Error::invalid("request", message),
        _ => Error::backend("agent", message),
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<H> {
    pub header: H,
    pub payload: Vec<u8>,
}

/// Framing errors.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame too large: {0} bytes")]
    TooLarge(usize),
    #[error("bad header: {0}")]
    BadHeader(#[from] serde_json::Error),
}

impl From<ProtoError> for Error {
    fn from(e: ProtoError) -> Self {
        Error::backend("agent connection", e)
    }
}

/// Writes one frame. The caller flushes when it wants the bytes on the wire.
pub async fn write_frame<W, H>(w: &mut W, header: &H, payload: &[u8]) -> Result<(), ProtoError>
where
    W: AsyncWrite + Unpin,
    H: Serialize,
{
    let head = serde_json::to_vec(header)?;
    if head.len() > MAX_HEADER {
        return Err(ProtoError::TooLarge(head.len()));
    }
    if payload.len() > MAX_PAYLOAD {
        return Err(ProtoError::TooLarge(payload.len()));
    }
    let mut prefix = [0u8; 8];
    prefix[..4].copy_from_slice(&(head.len() as u32).to_le_bytes());
    prefix[4..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    if payload.len() < 64 * 1024 {
        // One write for the common small frame keeps latency down.
        let mut buf = Vec::with_capacity(8 + head.len() + payload.len());
        buf.extend_from_slice(&prefix);
        buf.extend_from_slice(&head);
        buf.extend_from_slice(payload);
        w.write_all(&buf).await?;
    } else {
        w.write_all(&prefix).await?;
        w.write_all(&head).await?;
        w.write_all(payload).await?;
    }
    Ok(())
}

/// Reads one frame; [`ProtoError::Closed`] on a clean end of stream between frames.
pub async fn read_frame<R, H>(r: &mut R) -> Result<Frame<H>, ProtoError>
where
    R: AsyncRead + Unpin,
    H: for<'de> Deserialize<'de>,
{
    let mut prefix = [0u8; 8];
    let mut got = 0;
    while got < prefix.len() {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                ProtoError::Closed
            } else {
                ProtoError::Io(std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        got += n;
    }
    let head_len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    let payload_len = u32::from_le_bytes([prefix[4], prefix[5], prefix[6], prefix[7]]) as usize;
    if head_len > MAX_HEADER {
        return Err(ProtoError::TooLarge(head_len));
    }
    if payload_len > MAX_PAYLOAD {
        return Err(ProtoError::TooLarge(payload_len));
    }
    let mut head = vec![0u8; head_len];
    r.read_exact(&mut head).await?;
    let mut payload = vec![0u8; payload_len];
    r.read_exact(&mut payload).await?;
    Ok(Frame {
        header: serde_json::from_slice(&head)?,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let big = vec![7u8; 200_000];
        write_frame(
            &mut a,
            &Reply::Output {
                seq: 3,
                stream: OutputStream::Stderr,
            },
            &big,
        )
        .await
        .unwrap();
        write_frame(&mut a, &Request::Ping, &[]).await.unwrap();
        drop(a);
        let f: Frame<Reply> = read_frame(&mut b).await.unwrap();
        assert_eq!(
            f.header,
            Reply::Output {
                seq: 3,
                stream: OutputStream::Stderr
            }
        );
        assert_eq!(f.payload, big);
        let f: Frame<Request> = read_frame(&mut b).await.unwrap();
        assert_eq!(f.header, Request::Ping);
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(ProtoError::Closed)
        ));
    }

    #[tokio::test]
    async fn oversized_header_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let _ = a.write_all(&(u32::MAX).to_le_bytes()).await;
            let _ = a.write_all(&0u32.to_le_bytes()).await;
        });
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(ProtoError::TooLarge(_))
        ));
    }

    #[test]
    fn errors_keep_their_kind() {
        let e = Error::File {
            path: "/x".into(),
            reason: "No such file".into(),
        };
        let Reply::Error {
            kind,
            message,
            subject,
        } = Reply::from_error(&e)
        else {
            panic!()
        };
        let back = error_from_wire(&kind, message, subject);
        assert_eq!(back.to_string(), "/x: No such file");
        let e = Error::invalid("workdir", "/nope: no such directory");
        let Reply::Error {
            kind,
            message,
            subject,
        } = Reply::from_error(&e)
        else {
            panic!()
        };
        let back = error_from_wire(&kind, message, subject);
        assert_eq!(back.to_string(), "invalid workdir: /nope: no such directory");
    }
}

pub mod agent_binary;
pub mod client;
pub mod config;
pub mod seccomp;
pub mod users;

pub use config::{
    AgentConfig, ExecLimits, Hardening, CONFIG_ENV, DEFAULT_PATH, DEVICES, MASKED_PATHS, READ_ONLY_PATHS,
};
