//! Stockade's core: the types every driver speaks, the [`Driver`] trait and the error enum.
//!
//! Nothing here touches the operating system or the network; drivers live in their own crates
//! and the CLI and daemon only ever hold a `dyn Driver`.
#![forbid(unsafe_code)]

pub mod driver;
pub mod error;
pub mod exec;
pub mod files;
pub mod flags;
pub mod parse;
pub mod registry;
pub mod resilience;
pub mod sandbox;
pub mod stats;

pub use driver::{Driver, ExecControl, ExecOutput, ExecSession, ExecStream, PortStream};
pub use error::{Error, ErrorKind, Result};
pub use exec::{ExecEvent, ExecExit, ExecRequest, OutputStream, TtySize};
pub use files::{DirEntry, FileEntry, FileKind, FileOp, FileReply, FileStat, WatchEvent, WatchEventKind};
pub use flags::SpecFlags;
pub use registry::{
    CircuitInfo, DriverAdmin, DriverConfig, DriverFactory, DriverFacts, ImageBuilder, ProgressSink, Registry,
};
pub use sandbox::{
    Mount, NetworkMode, Resources, SandboxId, SandboxInfo, SandboxSpec, SandboxStatus, TaskStatus,
    DEFAULT_WORKDIR,
};
pub use stats::Stats;
