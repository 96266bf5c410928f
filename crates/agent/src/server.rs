//! The agent's accept loop and per-connection dispatch.

use std::sync::Arc;

use stockade_core::{Error, FileOp, FileReply, Result, Stats};
use stockade_proto::{read_frame, write_frame, Frame, ProtoError, Reply, Request, PROTOCOL_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::hardening::Prepared;
use stockade_proto::AgentConfig;

/// Serves connections until the process is killed. Also reaps every child that reaches pid 1.
pub async fn serve(listener: UnixListener, config: AgentConfig, hardening: Prepared) -> std::io::Result<()> {
    let state = Arc::new((config, hardening));
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
            let _ = serve_connection(&state.0, &state.1, stream).await;
        });
    }
}

async fn reap_forever() {
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

async fn serve_connection(config: &AgentConfig, hardening: &Prepared, stream: UnixStream) -> Result<()> {
    let (mut rd, mut wr) = stream.into_split();
    loop {
        let frame: Frame<Request> = match read_frame(&mut rd).await {
            Ok(f) => f,
            Err(ProtoError::Closed) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        match frame.header {
            Request::Exec { req } => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(async move {
                    loop {
                        match read_frame::<_, Request>(&mut rd).await {
                            Ok(f) => {
                                if tx.send(f).is_err() {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                });
                if let Err(e) = crate::session::run(config, hardening, req, rx, &mut wr).await {
                    write_frame(&mut wr, &Reply::from_error(&e), &[]).await?;
                    wr.flush().await.map_err(|e| Error::backend("agent write", e))?;
                }
                return Ok(());
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
