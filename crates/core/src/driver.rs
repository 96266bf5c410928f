//! The driver trait: the small surface every backend implements, plus default conveniences.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::exec::{ExecEvent, ExecExit, ExecRequest, OutputStream, TtySize};
use crate::files::{DirEntry, FileOp, FileReply, FileStat};
use crate::sandbox::{SandboxId, SandboxInfo, SandboxSpec};
use crate::stats::Stats;

/// The events of one exec, ending with [`ExecEvent::Exited`].
pub type ExecStream = Pin<Box<dyn Stream<Item = Result<ExecEvent>> + Send>>;

/// Steering a running exec: stdin, terminal size, signals. Usable while the events are read.
#[async_trait]
pub trait ExecControl: Send + Sync {
    /// Sends bytes to the process's stdin (needs `ExecRequest::stdin` or a tty).
    async fn write_stdin(&self, data: &[u8]) -> Result<()>;
    /// Closes stdin (EOF for the process).
    async fn close_stdin(&self) -> Result<()>;
    /// Resizes the pseudo-terminal.
    async fn resize(&self, size: TtySize) -> Result<()>;
    /// Kills the exec's whole process tree, `setsid` descendants included.
    async fn kill(&self) -> Result<()>;
}

/// A started exec.
pub struct ExecSession {
    pub events: ExecStream,
    pub control: Arc<dyn ExecControl>,
}

/// Collected result of an exec that ran to the end.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: ExecExit,
}

impl ExecSession {
    /// Marks the exit as an OOM kill when it came by SIGKILL and `oom_killed()` (asked then)
    /// says the out-of-memory killer struck during the exec: the agent cannot see its cgroup, the
    /// host driver can.
    pub fn report_oom(mut self, oom_killed: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        const SIGKILL: i32 = 9;
        self.events = Box::pin(self.events.map(move |event| match event {
            Ok(ExecEvent::Exited { seq, mut exit }) => {
                exit.oom |= exit.signal == Some(SIGKILL) && oom_killed();
                Ok(ExecEvent::Exited { seq, exit })
            }
            other => other,
        }));
        self
    }

    /// Reads every event to the end and gathers the output.
    pub async fn output(mut self) -> Result<ExecOutput> {
        let mut out = ExecOutput::default();
        while let Some(event) = self.events.next().await {
            match event? {
                ExecEvent::Started { .. } => {}
                ExecEvent::Output {
                    stream: OutputStream::Stdout,
                    data,
                    ..
                } => out.stdout.extend(data),
                ExecEvent::Output {
                    stream: OutputStream::Stderr,
                    data,
                    ..
                } => out.stderr.extend(data),
                ExecEvent::Exited { exit, .. } => {
                    out.exit = exit;
                    return Ok(out);
                }
            }
        }
        Err(Error::backend(
            "exec",
            "the event stream ended without an exit event",
        ))
    }
}

/// A byte stream to a port inside a sandbox ([`Driver::connect_port`]).
pub trait PortStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> PortStream for T {}

/// A sandbox backend. Required methods are the lifecycle, `exec`, `file` and `stats`; the file
/// helpers are default methods over `file`.
#[async_trait]
pub trait Driver: Send + Sync {
    /// The driver's name as users type it (`--driver NAME`).
    fn name(&self) -> &'static str;

    /// The driver's administrative side (availability, facts, circuits, gc, images), if it has
    /// one.
    fn admin(&self) -> Option<&dyn crate::registry::DriverAdmin> {
        None
    }

    /// Creates and starts a sandbox; returns once it is ready to exec.
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo>;
    /// Every sandbox this driver knows, including stopped and lost ones.
    async fn list(&self) -> Result<Vec<SandboxInfo>>;
    /// Finds a sandbox by id or name.
    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo>;
    /// Stops every process but keeps the files.
    async fn stop(&self, id: &SandboxId) -> Result<()>;
    /// Starts a stopped sandbox again.
    async fn start(&self, id: &SandboxId) -> Result<()>;
    /// Removes every process, mount, cgroup and file the sandbox had.
    async fn destroy(&self, id: &SandboxId) -> Result<()>;
    /// Freezes a running sandbox: its processes and memory stay, and get no CPU until
    /// [`Driver::resume`]. Execs, files and stats are refused while it is paused.
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let _ = id;
        Err(crate::Error::unsupported(
            self.name(),
            "pause",
            "this driver cannot freeze a sandbox (stop keeps its files)",
        ))
    }
    /// Thaws a paused sandbox; its processes go on where they were.
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let _ = id;
        Err(crate::Error::unsupported(
            self.name(),
            "resume",
            "this driver cannot freeze a sandbox, so none of its sandboxes is paused",
        ))
    }
    /// Starts a command.
    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession>;
    /// Starts a command the sandbox keeps under `exec_id`: it runs on when the caller goes away
    /// (a daemon killed and restarted, say), and [`Driver::attach`] follows it again.
    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        let _ = (id, req, exec_id);
        Err(Error::unsupported(
            self.name(),
            "kept execs",
            "this driver cannot keep an exec running without its caller",
        ))
    }
    /// Follows a kept exec from event `from_seq` on: kept events are replayed, live ones follow,
    /// and the session steers the exec (stdin, resize, kill) like the one that started it.
    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        let _ = (id, exec_id, from_seq);
        Err(Error::unsupported(
            self.name(),
            "attach",
            "this driver cannot keep an exec running without its caller",
        ))
    }
    /// One file operation.
    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply>;
    /// Resource usage.
    async fn stats(&self, id: &SandboxId) -> Result<Stats>;

    /// A byte stream to TCP `port` on the sandbox's own loopback (what a server inside listens
    /// on, whatever its network mode), for drivers that can reach it.
    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<Box<dyn PortStream>> {
        let _ = (id, port);
        Err(Error::Unsupported {
            driver: "this".into(),
            feature: "reaching a port inside the sandbox".into(),
            reason: "the driver has no way to it".into(),
        })
    }

    /// Reads a whole file.
    async fn read_file(&self, id: &SandboxId, path: &str) -> Result<Vec<u8>> {
        match self.file(id, FileOp::Read { path: path.into() }).await? {
            FileReply::Data { data } => Ok(data),
            other => Err(unexpected(path, &other)),
        }
    }
    /// Writes a whole file atomically.
    async fn write_file(&self, id: &SandboxId, path: &str, data: Vec<u8>, mode: u32) -> Result<()> {
        self.file(
            id,
            FileOp::Write {
                path: path.into(),
                mode,
                data,
                in_place: false,
                owner: None,
            },
        )
        .await
        .map(drop)
    }
    /// Lists a directory.
    async fn list_dir(&self, id: &SandboxId, path: &str) -> Result<Vec<DirEntry>> {
        match self.file(id, FileOp::List { path: path.into() }).await? {
            FileReply::Entries { entries } => Ok(entries),
            other => Err(unexpected(path, &other)),
        }
    }
    /// Stats one path.
    async fn stat(&self, id: &SandboxId, path: &str) -> Result<FileStat> {
        match self.file(id, FileOp::Stat { path: path.into() }).await? {
            FileReply::Stat { stat } => Ok(stat),
            other => Err(unexpected(path, &other)),
        }
    }
    /// `mkdir -p`.
    async fn mkdir(&self, id: &SandboxId, path: &str) -> Result<()> {
        self.file(id, FileOp::Mkdir { path: path.into() }).await.map(drop)
    }
    /// Removes a file, or a directory tree when `recursive`.
    async fn remove(&self, id: &SandboxId, path: &str, recursive: bool) -> Result<()> {
        self.file(
            id,
            FileOp::Remove {
                path: path.into(),
                recursive,
            },
        )
        .await
        .map(drop)
    }
    /// Renames within the sandbox.
    async fn rename(&self, id: &SandboxId, from: &str, to: &str) -> Result<()> {
        self.file(
            id,
            FileOp::Rename {
                from: from.into(),
                to: to.into(),
            },
        )
        .await
        .map(drop)
    }
}

fn unexpected(path: &str, reply: &FileReply) -> Error {
    Error::backend(
        format!("file operation on {path}"),
        format!("unexpected reply {reply:?}"),
    )
}
