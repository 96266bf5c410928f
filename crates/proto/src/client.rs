//! The host side of the agent protocol over any connected stream: what every driver that runs the
//! Stockade agent (native, docker) uses for exec, files and stats.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream;
use stockade_core::{
    Error, ExecControl, ExecEvent, ExecRequest, ExecSession, FileOp, FileReply, Result, Stats, TtySize,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::{error_from_wire, read_frame, write_frame, Frame, Reply, Request};

/// Sends one file operation and reads its reply on a fresh connection.
pub async fn file<S>(mut conn: S, op: FileOp) -> Result<FileReply>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let payload = match &op {
        FileOp::Write { data, .. } => data.clone(),
        _ => Vec::new(),
    };
    write_frame(&mut conn, &Request::File { op }, &payload).await?;
    conn.flush()
        .await
        .map_err(|e| Error::backend("agent connection", e))?;
    let frame: Frame<Reply> = read_frame(&mut conn).await?;
    match frame.header {
        Reply::File {
            reply: FileReply::Data { .. },
        } => Ok(FileReply::Data { data: frame.payload }),
        Reply::File { reply } => Ok(reply),
        Reply::Error {
            kind,
            message,
            subject,
        } => Err(error_from_wire(&kind, message, subject)),
        other => Err(Error::backend("agent", format!("unexpected reply {other:?}"))),
    }
}

/// Asks the agent to connect to TCP `port` on the sandbox's loopback; the connection, returned,
/// then carries that stream's bytes.
pub async fn connect_port<S>(mut conn: S, port: u16) -> Result<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    write_frame(&mut conn, &Request::Connect { port }, &[]).await?;
    conn.flush()
        .await
        .map_err(|e| Error::backend("agent connection", e))?;
    let frame: Frame<Reply> = read_frame(&mut conn).await?;
    match frame.header {
        Reply::Connected => Ok(conn),
        Reply::Error {
            kind,
            message,
            subject,
        } => Err(error_from_wire(&kind, message, subject)),
        other => Err(Error::backend("agent", format!("unexpected reply {other:?}"))),
    }
}

/// Asks the agent for procfs-based stats.
pub async fn stats<S>(mut conn: S) -> Result<Stats>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    write_frame(&mut conn, &Request::Stats, &[]).await?;
    conn.flush()
        .await
        .map_err(|e| Error::backend("agent connection", e))?;
    match read_frame::<_, Reply>(&mut conn).await?.header {
        Reply::Stats { stats } => Ok(stats),
        Reply::Error {
            kind,
            message,
            subject,
        } => Err(error_from_wire(&kind, message, subject)),
        other => Err(Error::backend("agent", format!("unexpected reply {other:?}"))),
    }
}

/// Starts an exec on `conn`. Returns once the command has started (or failed to), so "command not
/// found" and friends are errors of this call, not events.
pub async fn exec<S>(conn: S, req: ExecRequest) -> Result<ExecSession>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    start_exec(conn, req, None).await
}

/// Starts an exec the agent keeps under `exec_id`: it runs on when this connection goes, and
/// [`attach`] follows it again from any sequence number.
pub async fn exec_kept<S>(conn: S, req: ExecRequest, exec_id: &str) -> Result<ExecSession>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    start_exec(conn, req, Some(exec_id.to_owned())).await
}

async fn start_exec<S>(conn: S, req: ExecRequest, keep_as: Option<String>) -> Result<ExecSession>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    write_frame(&mut wr, &Request::Exec { req, keep_as }, &[]).await?;
    wr.flush()
        .await
        .map_err(|e| Error::backend("agent connection", e))?;
    let first: Frame<Reply> = read_frame(&mut rd).await?;
    let first_event = match first.header {
        Reply::Started { seq, pid } => ExecEvent::Started { seq, pid },
        Reply::Error {
            kind,
            message,
            subject,
        } => return Err(error_from_wire(&kind, message, subject)),
        other => return Err(Error::backend("agent", format!("unexpected reply {other:?}"))),
    };
    Ok(session(rd, wr, Some(first_event)))
}

/// Follows the kept exec `exec_id` from event `from_seq` on: the events the agent kept are
/// replayed, then live ones follow, ending with the exit. The session steers the exec too.
pub async fn attach<S>(conn: S, exec_id: &str, from_seq: u64) -> Result<ExecSession>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(conn);
    let req = Request::Attach {
        exec_id: exec_id.to_owned(),
        from_seq,
    };
    write_frame(&mut wr, &req, &[]).await?;
    wr.flush()
        .await
        .map_err(|e| Error::backend("agent connection", e))?;
    match read_frame::<_, Reply>(&mut rd).await?.header {
        Reply::Attached => Ok(session(rd, wr, None)),
        Reply::Error {
            kind,
            message,
            subject,
        } => Err(error_from_wire(&kind, message, subject)),
        other => Err(Error::backend("agent", format!("unexpected reply {other:?}"))),
    }
}

fn session<R, W>(rd: R, wr: W, first_event: Option<ExecEvent>) -> ExecSession
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let control = Arc::new(AgentExecControl {
        writer: Mutex::new(Some(Box::new(wr))),
    });
    let events = stream::unfold((first_event, Some(rd), false), |(pending, rd, done)| async move {
        if let Some(ev) = pending {
            return Some((Ok(ev), (None, rd, done)));
        }
        if done {
            return None;
        }
        let mut rd = rd?;
        let item = match read_frame::<_, Reply>(&mut rd).await {
            Ok(Frame {
                header: Reply::Started { seq, pid },
                ..
            }) => Ok(ExecEvent::Started { seq, pid }),
            Ok(Frame {
                header: Reply::Output { seq, stream },
                payload,
            }) => Ok(ExecEvent::Output {
                seq,
                stream,
                data: payload,
            }),
            Ok(Frame {
                header: Reply::Exited { seq, exit },
                ..
            }) => {
                return Some((Ok(ExecEvent::Exited { seq, exit }), (None, None, true)));
            }
            Ok(Frame {
                header:
                    Reply::Error {
                        kind,
                        message,
                        subject,
                    },
                ..
            }) => Err(error_from_wire(&kind, message, subject)),
            Ok(Frame { header, .. }) => Err(Error::backend("agent", format!("unexpected reply {header:?}"))),
            Err(e) => Err(Error::backend(
                "agent connection",
                format!("lost before the exec ended: {e}"),
            )),
        };
        let done = item.is_err();
        Some((item, (None, Some(rd), done)))
    });
    ExecSession {
        events: Box::pin(events),
        control,
    }
}

type BoxWriter = Box<dyn AsyncWrite + Unpin + Send>;

struct AgentExecControl {
    writer: Mutex<Option<BoxWriter>>,
}

impl AgentExecControl {
    async fn send(&self, req: Request, payload: &[u8]) -> Result<()> {
        let mut guard = self.writer.lock().await;
        let Some(w) = guard.as_mut() else {
            return Err(Error::invalid("stdin", "stdin is already closed"));
        };
        write_frame(w, &req, payload).await?;
        w.flush().await.map_err(|e| Error::backend("agent connection", e))
    }
}

#[async_trait]
impl ExecControl for AgentExecControl {
    async fn write_stdin(&self, data: &[u8]) -> Result<()> {
        self.send(Request::Stdin, data).await
    }
    async fn close_stdin(&self) -> Result<()> {
        self.send(Request::CloseStdin, &[]).await
    }
    async fn resize(&self, size: TtySize) -> Result<()> {
        self.send(Request::Resize { size }, &[]).await
    }
    async fn kill(&self) -> Result<()> {
        self.send(Request::Kill, &[]).await
    }
}

/// Gives a VM guest's agent its config and identity: the first request of a session.
pub async fn configure<S>(
    mut conn: S,
    config: crate::AgentConfig,
    identity: crate::GuestIdentity,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    write_frame(
        &mut conn,
        &Request::Configure {
            config: Box::new(config),
            identity,
        },
        &[],
    )
    .await?;
    conn.flush()
        .await
        .map_err(|e| Error::backend("agent connection", e))?;
    match read_frame::<_, Reply>(&mut conn).await?.header {
        Reply::Configured => Ok(()),
        Reply::Error {
            kind,
            message,
            subject,
        } => Err(error_from_wire(&kind, message, subject)),
        other => Err(Error::backend("agent", format!("unexpected reply {other:?}"))),
    }
}
