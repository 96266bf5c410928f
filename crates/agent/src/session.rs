//! One exec, from start to exit event, on one connection: pumps output out, stdin in, and turns
//! kill requests, timeouts and disconnects into a kill of the exec's process tree.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use stockade_core::{Error, ExecExit, ExecRequest, OutputStream, Result};
use stockade_proto::{write_frame, Frame, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use tokio::sync::mpsc;

use crate::hardening::Prepared;
use crate::journal::Journal;
use crate::spawn::{self, Spawned};
use stockade_proto::AgentConfig;

const CHUNK: usize = 64 * 1024;

/// Output side of an exec: a pipe, or a terminal master (which reports EIO once the last slave
/// closes; that is its end of stream).
enum Output {
    Pipe(pipe::Receiver),
    Pty(tokio::io::unix::AsyncFd<OwnedFd>),
}

impl Output {
    fn new(fd: OwnedFd, pty: bool) -> Result<Self> {
        if pty {
            set_nonblocking(&fd)?;
            Ok(Output::Pty(
                stockade_sys::async_fd(fd).map_err(|e| Error::backend("pty", e))?,
            ))
        } else {
            Ok(Output::Pipe(
                pipe::Receiver::from_owned_fd(fd).map_err(|e| Error::backend("pipe", e))?,
            ))
        }
    }

    /// Reads a chunk; 0 means end of stream. Cancel-safe.
    async fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Output::Pipe(p) => p.read(buf).await,
            Output::Pty(fd) => loop {
                let mut guard = fd.readable().await?;
                match guard.try_io(|inner| {
                    nix::unistd::read(inner.get_ref().as_raw_fd(), buf).map_err(std::io::Error::from)
                }) {
                    Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                    Ok(result) => return result,
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| Error::backend("fcntl", e))?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(|e| Error::backend("fcntl", e))
}

/// Where an exec's events go: straight to the connection that started it, or to the journal of
/// a kept exec (which any connection follows).
pub enum Sink<'a> {
    Connection(&'a mut (dyn tokio::io::AsyncWrite + Unpin + Send)),
    Journal(Arc<Journal>),
}

impl Sink<'_> {
    async fn send(&mut self, reply: Reply, payload: &[u8]) -> Result<()> {
        match self {
            Sink::Connection(out) => Ok(write_frame(out, &reply, payload).await?),
            Sink::Journal(journal) => {
                journal.push(reply, payload.to_vec()).await;
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        match self {
            Sink::Connection(out) => out.flush().await.map_err(|e| Error::backend("agent write", e)),
            Sink::Journal(_) => Ok(()),
        }
    }
}

/// Runs `req` to the end, writing events to `out` and taking stdin/resize/kill from `requests`.
/// When `requests` ends (the connection hung up) the exec is killed; a kept exec's journal
/// holds a sender, so a kept exec runs on.
pub async fn run(
    config: &AgentConfig,
    hardening: &Prepared,
    req: ExecRequest,
    mut requests: mpsc::UnboundedReceiver<Frame<Request>>,
    out: &mut Sink<'_>,
) -> Result<()> {
    let started_at = Instant::now();
    let plan = spawn::plan(config, &req)?;
    let ooms_before = hardening.exec_cgroup.as_ref().map(|c| c.oom_kills());
    let Spawned {
        reaper,
        pid,
        stdout,
        stderr,
        stdin,
        pty,
        status,
    } = spawn::spawn(&plan, hardening)?;
    let is_pty = pty.is_some();
    let mut seq = 0u64;
    out.send(Reply::Started { seq, pid }, &[]).await?;
    out.flush().await?;

    let mut stdout = Some(Output::new(stdout, is_pty)?);
    let mut stderr = match stderr {
        Some(fd) => Some(Output::new(fd, false)?),
        None => None,
    };
    // stdin goes through its own task so a command that does not read cannot stall the output.
    let mut stdin_tx = match stdin {
        Some(fd) => Some(spawn_stdin_writer(fd, is_pty)?),
        None => None,
    };
    let (status_tx, mut status_rx) = tokio::sync::oneshot::channel();
    let mut status_pipe = pipe::Receiver::from_owned_fd(status).map_err(|e| Error::backend("pipe", e))?;
    tokio::spawn(async move {
        let mut raw = [0u8; 4];
        let result = status_pipe
            .read_exact(&mut raw)
            .await
            .map(|_| i32::from_le_bytes(raw));
        let _ = status_tx.send(result);
    });

    let deadline = req.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut timed_out = false;
    let mut raw_status: Option<i32> = None;
    let mut buf_out = vec![0u8; CHUNK];
    let mut buf_err = vec![0u8; CHUNK];
    let kill_tree = || crate::process_tree::kill_descendants(reaper.as_raw(), || {});
    // Once the command has ended, output that stays open yet silent for this long is given up on:
    // a process that escaped the tree (where the kernel has no child subreaper, as in gVisor) or
    // a terminal that never reports EIO must not hold the exec open forever.
    const IDLE_AFTER_EXIT: std::time::Duration = std::time::Duration::from_millis(250);
    let mut idle_deadline: Option<tokio::time::Instant> = None;

    while stdout.is_some() || stderr.is_some() || raw_status.is_none() {
        if raw_status.is_some() {
            idle_deadline.get_or_insert_with(|| tokio::time::Instant::now() + IDLE_AFTER_EXIT);
        }
        tokio::select! {
            n = read_some(&mut stdout, &mut buf_out) => {
                if raw_status.is_some() {
                    idle_deadline = Some(tokio::time::Instant::now() + IDLE_AFTER_EXIT);
                }
                match n {
                    Ok(0) | Err(_) => stdout = None,
                    Ok(n) => {
                        seq += 1;
                        out.send(Reply::Output { seq, stream: OutputStream::Stdout }, &buf_out[..n]).await?;
                    }
                }
            }
            n = read_some(&mut stderr, &mut buf_err) => {
                if raw_status.is_some() {
                    idle_deadline = Some(tokio::time::Instant::now() + IDLE_AFTER_EXIT);
                }
                match n {
                    Ok(0) | Err(_) => stderr = None,
                    Ok(n) => {
                        seq += 1;
                        out.send(Reply::Output { seq, stream: OutputStream::Stderr }, &buf_err[..n]).await?;
                    }
                }
            }
            s = &mut status_rx, if raw_status.is_none() => {
                raw_status = Some(s.ok().and_then(|r| r.ok()).unwrap_or(0xff << 8));
            }
            frame = requests.recv() => match frame {
                None => {
                    // The host hung up: nobody will read the output, so end the exec.
                    kill_tree();
                    return Ok(());
                }
                Some(Frame { header: Request::Stdin, payload }) => {
                    if let Some(tx) = &stdin_tx {
                        let _ = tx.send(Some(payload));
                    }
                }
                Some(Frame { header: Request::CloseStdin, .. }) => {
                    if let Some(tx) = stdin_tx.take() {
                        let _ = tx.send(None);
                    }
                }
                Some(Frame { header: Request::Resize { size }, .. }) => {
                    if let Some(master) = &pty {
                        let _ = stockade_sys::set_window_size(master.as_fd(), size.rows, size.cols);
                    }
                }
                Some(Frame { header: Request::Kill, .. }) => kill_tree(),
                Some(_) => {}
            },
            _ = sleep_until(deadline), if !timed_out => {
                timed_out = true;
                kill_tree();
            }
            _ = sleep_until(idle_deadline), if idle_deadline.is_some() => {
                kill_tree();
                stdout = None;
                stderr = None;
            }
        }
        if stdout.is_none() || stderr.is_none() {
            out.flush().await?;
        }
    }
    let (code, signal) = spawn::decode_status(raw_status.unwrap_or(0xff << 8));
    // Where the agent holds the limits itself, it can also tell an out-of-memory kill.
    let oom = signal == Some(libc::SIGKILL)
        && ooms_before.is_some_and(|before| {
            hardening
                .exec_cgroup
                .as_ref()
                .is_some_and(|c| c.oom_kills() > before)
        });
    let exit = ExecExit {
        code,
        signal,
        timed_out,
        oom,
        duration_ms: started_at.elapsed().as_millis() as u64,
    };
    out.send(Reply::Exited { seq: seq + 1, exit }, &[]).await?;
    out.flush().await
}

async fn read_some(output: &mut Option<Output>, buf: &mut [u8]) -> std::io::Result<usize> {
    match output {
        Some(o) => o.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// `Some(bytes)` writes, `None` closes.
type StdinTx = mpsc::UnboundedSender<Option<Vec<u8>>>;

fn spawn_stdin_writer(fd: OwnedFd, is_pty: bool) -> Result<StdinTx> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<Vec<u8>>>();
    if is_pty {
        set_nonblocking(&fd)?;
        let afd = stockade_sys::async_fd(fd).map_err(|e| Error::backend("pty", e))?;
        tokio::spawn(async move {
            while let Some(Some(data)) = rx.recv().await {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let Ok(mut guard) = afd.writable().await else {
                        return;
                    };
                    match guard.try_io(|inner| {
                        nix::unistd::write(inner.get_ref(), rest).map_err(std::io::Error::from)
                    }) {
                        Ok(Ok(n)) => rest = &rest[n..],
                        Ok(Err(_)) => return,
                        Err(_would_block) => {}
                    }
                }
            }
            // A terminal has no half-close; EOF is the user typing ^D, which they send as data.
        });
    } else {
        let mut sender = pipe::Sender::from_owned_fd(fd).map_err(|e| Error::backend("pipe", e))?;
        tokio::spawn(async move {
            while let Some(Some(data)) = rx.recv().await {
                if sender.write_all(&data).await.is_err() {
                    return;
                }
            }
            // Dropping the sender closes the pipe: EOF for the command.
        });
    }
    Ok(tx)
}
