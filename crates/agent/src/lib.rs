//! The Stockade agent: the process that runs as pid 1 inside a sandbox and carries out the agent
//! protocol ([`stockade_proto`]) for the host: execs with streamed output, files and stats.
//!
//! It runs a single-threaded tokio runtime on purpose: execs are started with `fork`, which is only
//! safe to follow with ordinary Rust code when the forking process has one thread.
#![forbid(unsafe_code)]

pub mod files;
pub mod journal;
pub mod process_tree;
pub mod server;
pub mod session;
pub mod spawn;
pub mod vm;
pub mod watch;

pub mod hardening;

pub use stockade_proto::{AgentConfig, CONFIG_ENV};

/// Runs the agent on an already-listening socket until killed.
pub fn run(listener: std::os::unix::net::UnixListener, config: AgentConfig) -> std::io::Result<()> {
    // Not dumpable: processes in the sandbox share our uid, and must not reach into our memory
    // through /proc/1/mem or ptrace.
    nix::sys::prctl::set_dumpable(false)?;
    let hardening = hardening::Prepared::new(config.hardening.clone()).map_err(std::io::Error::other)?;
    hardening.install_in_agent().map_err(std::io::Error::other)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        server::serve(listener, config, hardening).await
    })
}

/// As a container's or VM guest's init: gives the workdir to the default user when the config
/// says the workdir is the sandbox's own (`own_workdir`).
pub fn give_workdir_to_default_user(config: &stockade_proto::AgentConfig) -> Result<(), String> {
    let Some(user) = config.user.as_deref().filter(|_| config.own_workdir) else {
        return Ok(());
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let who = stockade_proto::users::resolve(Some(user), &passwd, &group).map_err(|e| e.to_string())?;
    nix::unistd::chown(
        std::path::Path::new(&config.workdir),
        Some(nix::unistd::Uid::from_raw(who.uid)),
        Some(nix::unistd::Gid::from_raw(who.gid)),
    )
    .map_err(|e| format!("chown {} to {user}: {e}", config.workdir))
}
