//! The native driver: each sandbox is the Stockade agent running as pid 1 in new user, mount, pid,
//! ipc, uts, net and cgroup namespaces, on an overlay of the host `/` (or a given rootfs), under a
//! small supervisor process that outlives the CLI.
//!
//! - [`layout`]: where a sandbox's files live under `$STOCKADE_HOME`.
//! - [`store`]: the records that let `ls` work after the CLI exits.
//! - [`mount_plan`]: the sandbox's mounts as a plain list, applied through `stockade_sys::Syscalls`.
//! - [`cgroup`]: limits and stats on cgroup v2 or v1 hosts.
//! - [`network`]: veth and NAT for `--network full`.
//! - [`supervisor`]: the process that builds the namespaces, waits on pid 1 and cleans up.
//! - [`driver`]: the `Driver` implementation the CLI and daemon use.
//! - [`host`]: what this host supports, for `stockade info`.
//! - [`plugin`]: the driver's factory for the registry and its admin side (`info` facts).
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod driver;
pub mod host;
pub mod idmap;
pub mod layout;
pub mod mount_plan;
pub mod network;
pub mod plugin;
pub mod store;
pub mod supervisor;

pub use driver::NativeDriver;
pub use layout::Layout;
pub use plugin::{register, NativeFactory};
