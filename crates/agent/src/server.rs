//! The agent's accept loop and per-connection dispatch.

use std::sync::Arc;

use stockade_core::{Error, FileOp, FileReply, Result, Stats};
use stockade_proto::{read_frame, write_frame, Frame, ProtoError, Reply, Request, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::hardening::Prepared;
use crate::journal::Journals;
use crate::session::Sink;
use stockade_proto::AgentConfig;

/// What every connection shares.
pub struct State {
    config: AgentConfig,
    hardening: Prepared,
    journals: Journals,
}

impl State {
    pub fn new(config: AgentConfig, hardening: Prepared) -> Arc<State> {
        Arc::new(State {
            config,
            hardening,
            journals: Journals::default(),
        })
    }
}

/// Serves connections until the process is killed. Also reaps every child that reaches pid 1.
pub async fn serve(listener: UnixListener, config: AgentConfig, hardening: Prepared) -> std::io::Result<()> {
    let state = State::new(config, hardening);
    tokio::spawn(reap_forever());
    // As a container's init the engine stops us with SIGTERM; pid 1 gets no default action, so
    // leave on it (the kernel then kills everything else in the pid namespace).
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            _ = sigterm.recv() => return Ok(()),
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _ = serve_connection(state, stream).await;
        });
    }
}

/// Reaps every child that reaches this process (pid 1 of a sandbox) for as long as it runs.
pub async fn reap_forever() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) else {
        return;
    };
    loop {
        while let Ok(ws) = waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if ws == WaitStatus::StillAlive {
                break;
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

/// Forwards the connection's later frames (stdin, resize, kill) to an exec until it hangs up.
fn forward_requests<R>(mut rd: R, tx: mpsc::UnboundedSender<Frame<Request>>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok(frame) = read_frame::<_, Request>(&mut rd).await {
            if tx.send(frame).is_err() {
                return;
            }
        }
    });
}

/// Serves one connection's requests until it hangs up or becomes an exec's.
pub async fn serve_connection<S>(state: Arc<State>, stream: S) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (config, hardening) = (&state.config, &state.hardening);
    let (mut rd, mut wr) = tokio::io::split(stream);
    loop {
        let frame: Frame<Request> = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(ProtoError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match frame.header {
            Request::Exec { req, keep_as: None } => {
                let (tx, rx) = mpsc::unbounded_channel();
                forward_requests(rd, tx);
                let mut sink = Sink::Connection(&mut wr);
                if let Err(e) = crate::session::run(config, hardening, req, rx, &mut sink).await {
                    write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
                    wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
                }
                return Ok(());
            }
            Request::Exec {
                req,
                keep_as: Some(exec_id),
            } => {
                let (journal, rx) = match state.journals.open(&exec_id) {
                    Ok(opened) => opened,
                    Err(e) => {
                        write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
                        wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
                        continue;
                    }
                };
                let exec_state = Arc::clone(&state);
                let exec_journal = Arc::clone(&journal);
                tokio::spawn(async move {
                    let mut sink = Sink::Journal(Arc::clone(&exec_journal));
                    let (config, hardening) = (&exec_state.config, &exec_state.hardening);
                    if let Err(e) = crate::session::run(config, hardening, req, rx, &mut sink).await {
                        exec_journal.push(Reply::from_error(&e), Vec::new()).await;
                    }
                });
                forward_requests(rd, journal.control.clone());
                return journal.follow(0, &mut wr).await;
            }
            Request::Attach { exec_id, from_seq } => {
                let journal = match state
                    .journals
                    .get(&exec_id)
                    .and_then(|j| j.check_kept(from_seq).map(|()| j))
                {
                    Ok(journal) => journal,
                    Err(e) => {
                        write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
                        wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
                        continue;
                    }
                };
                write_frame(&mut wr, &Reply::Attached, &[]).await?;
                forward_requests(rd, journal.control.clone());
                return journal.follow(from_seq, &mut wr).await;
            }
            Request::File { mut op } => {
                if let FileOp::Write { data, .. } = &mut op {
                    *data = frame.payload;
                }
                match crate::files::apply(op) {
                    Ok(FileReply::Data { data }) => {
                        write_frame(
                            &mut wr,
                            &Reply::File {
                                reply: FileReply::Data { data: Vec::new() },
                            },
                            &data,
                        )
                        .await?
                    }
                    Ok(reply) => write_frame(&mut wr, &Reply::File { reply }, &[]).await?,
                    Err(e) => write_frame(&mut wr, &Reply::from_error(&e), &[]).await?,
                }
            }
            Request::Connect { port } => {
                let mut tcp =
                    match tokio::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port)).await {
                        Ok(tcp) => tcp,
                        Err(e) => {
                            let e = Error::Backend {
                                context: format!("port {port} in the sandbox"),
                                reason: e.to_string(),
                            };
                            write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
                            wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
                            continue;
                        }
                    };
                let _ = tcp.set_nodelay(true);
                write_frame(&mut wr, &Reply::Connected, &[]).await?;
                wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
                let (mut tcp_rd, mut tcp_wr) = tcp.split();
                let to_host = async {
                    let _ = tokio::io::copy(&mut tcp_rd, &mut wr).await;
                    let _ = wr.shutdown().await;
                };
                let to_port = async {
                    let _ = tokio::io::copy(&mut rd, &mut tcp_wr).await;
                    let _ = tcp_wr.shutdown().await;
                    // The host is done sending; its answer may still be coming.
                    std::future::pending::<()>().await
                };
                // The port's side ending ends the connection: closed, not half-closed, since a
                // half-close does not cross every transport (gVisor's host-backed sockets).
                tokio::select! {
                    () = to_host => {}
                    () = to_port => {}
                }
                return Ok(());
            }
            Request::Stats => {
                write_frame(
                    &mut wr,
                    &Reply::Stats {
                        stats: procfs_stats(),
                    },
                    &[],
                )
                .await?
            }
            Request::Ping => {
                write_frame(
                    &mut wr,
                    &Reply::Pong {
                        version: PROTOCOL_VERSION,
                        pid: std::process::id(),
                    },
                    &[],
                )
                .await?
            }
            Request::Configure { .. } => {
                let e = Error::invalid("request", "this agent is configured already");
                write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
            }
            other => {
                let e = Error::invalid(
                    "request",
                    format!("{other:?} needs a running exec on this connection"),
                );
                write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
            }
        }
        wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
    }
}

/// Usage summed over every process the agent can see; for drivers without cgroup numbers.
pub fn procfs_stats() -> Stats {
    let procs = crate::process_tree::all_processes();
    let ticks_per_sec = 100u64;
    let page = 4096u64;
    Stats {
        cpu_usec: procs
            .iter()
            .map(|p| (p.utime + p.stime) * 1_000_000 / ticks_per_sec)
            .sum(),
        memory_bytes: procs.iter().map(|p| p.rss_pages * page).sum(),
        memory_peak_bytes: 0,
        pids: procs.iter().map(|p| p.threads).sum(),
        source: "procfs".into(),
    }
}
