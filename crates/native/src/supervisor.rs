//! The supervisor: one small process per running sandbox, started detached by the driver
//! (`stockade-agent supervise`, with the home and id in its environment). It builds the sandbox,
//! reports `ready PID` or `error MESSAGE` on its stdout, then waits for the sandbox's pid 1. When
//! pid 1 exits (stop, destroy, TTL, or a crash) it removes the cgroups and the socket and exits.
//!
//! Sequence: cgroups → a private mount namespace (as root) with the disk image and the overlay →
//! directories → listening socket → `clone(NEWUSER|NEWPID|NEWNET)` → the parent writes the id maps,
//! joins the child to the cgroups and wires the network → the child unshares mount, ipc, uts and
//! cgroup namespaces, applies the mount plan, and becomes the agent (no exec: the supervisor binary
//! is the agent binary), serving on the socket the supervisor bound.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::{Gid, Pid, Uid};
use stockade_core::{NetworkMode, SandboxId};
use stockade_sys::{Forked, LinuxSyscalls};

use crate::cgroup::{self, CgroupHost};
use crate::layout::Layout;
use crate::mount_plan::{self, MountInputs};
use crate::store::{self, Record, Runtime, Store};

/// The agent's entry point, handed in by the binary that hosts both (see `stockade-agent`): the
/// sandbox's pid 1 calls it after setup instead of exec'ing anything.
pub type AgentEntry =
    fn(std::os::unix::net::UnixListener, stockade_proto::AgentConfig) -> std::io::Result<()>;

/// The environment variables that name the Stockade home and the sandbox to supervise.
pub const HOME_ENV: &str = "STOCKADE_SUPERVISE_HOME";
pub const ID_ENV: &str = "STOCKADE_SUPERVISE_ID";

/// Entry point of `stockade-agent supervise` (home and id from [`HOME_ENV`] and [`ID_ENV`]);
/// returns the process exit code.
pub fn main(home: &Path, id: &str, run_agent: AgentEntry) -> i32 {
    let began = std::time::Instant::now();
    let _ = nix::unistd::setsid();
    let layout = Layout::at(home);
    let mut ready = std::io::stdout();
    let loaded = Store::new(layout.clone()).and_then(|store| {
        SandboxId::parse(id)
            .and_then(|id| store.load(&id))
            .map(|r| (store, r))
    });
    let (store, record) = match loaded {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(ready, "error {e}");
            return 1;
        }
    };
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log(&record.id))
    {
        let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
    }
    let mut sandbox = match start(&layout, &record, run_agent) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(sandbox = %record.id, "{e}");
            let _ = writeln!(ready, "error {e}");
            return 1;
        }
    };
    let runtime = Runtime {
        supervisor_pid: std::process::id() as i32,
        supervisor_start: store::process_start_time(std::process::id() as i32).unwrap_or(0),
        init_pid: sandbox.init.as_raw(),
        init_start: store::process_start_time(sandbox.init.as_raw()).unwrap_or(0),
        cgroups: sandbox.cgroups.clone(),
        cgroup_version: sandbox.cgroup_version.to_owned(),
        network: sandbox.network.clone(),
    };
    if let Err(e) = store.save_runtime(&record.id, &runtime) {
        let _ = writeln!(ready, "error {e}").and_then(|()| ready.flush());
        let _ = nix::sys::signal::kill(sandbox.init, nix::sys::signal::SIGKILL);
    } else if let Err(e) = tell_ready(sandbox.init) {
        // Nobody reads the other end: whoever started us (a daemon or CLI in `create` or
        // `start`) died before the sandbox was up, so it was never handed out, and a daemon's
        // restart may already have destroyed its record while we were starting. Running on
        // would leave a sandbox nobody owns: end it like a start that failed.
        tracing::warn!(sandbox = %record.id, "nobody took the ready line ({e}): the start was abandoned; ending the sandbox");
        let _ = nix::sys::signal::kill(sandbox.init, nix::sys::signal::SIGKILL);
    } else {
        tracing::info!(sandbox = %record.id, "ready after {:?}", began.elapsed());
    }
    // The driver is done listening; from here on stdout is the log too.
    let _ = nix::unistd::dup2(2, 1);
    // The sandbox has its own copy of the mounts now. Going back to the host's mount namespace
    // drops ours here, off the critical path, instead of when the sandbox is destroyed. (Before any
    // thread starts: setns into a mount namespace needs a single-threaded process.)
    if let Some(host_ns) = &sandbox.host_mount_ns {
        if let Err(e) = nix::sched::setns(host_ns, CloneFlags::CLONE_NEWNS) {
            tracing::warn!(sandbox = %record.id, "leave the private mount namespace: {e}");
        }
    }

    let expired = Arc::new(AtomicBool::new(false));
    if let Some(ttl) = record.spec.ttl {
        let created = UNIX_EPOCH + Duration::from_secs(record.created_at);
        let left = (created + ttl)
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        let (init, expired) = (sandbox.init, Arc::clone(&expired));
        std::thread::spawn(move || {
            std::thread::sleep(left);
            expired.store(true, Ordering::SeqCst);
            let _ = nix::sys::signal::kill(init, nix::sys::signal::SIGKILL);
        });
    }
    let mut ended = std::time::Instant::now();
    loop {
        match waitpid(sandbox.init, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(status) => {
                ended = std::time::Instant::now();
                tracing::info!(sandbox = %record.id, "pid 1 ended: {status:?}");
                let mut late = String::new();
                let _ = sandbox.late_errors.read_to_string(&mut late);
                if let Some(msg) = late.strip_prefix('E') {
                    tracing::warn!(sandbox = %record.id, "pid 1 failed: {msg}");
                }
                break;
            }
            Err(e) => {
                tracing::warn!(sandbox = %record.id, "waitpid: {e}");
                break;
            }
        }
    }
    if let Err(e) = cgroup::remove(&sandbox.cgroups) {
        tracing::warn!(sandbox = %record.id, "{e}");
    }
    tracing::info!(sandbox = %record.id, "cgroups removed {:?} after pid 1 ended", ended.elapsed());
    let _ = std::fs::remove_file(layout.socket(&record.id));
    let _ = std::fs::remove_file(layout.runtime(&record.id));
    if expired.load(Ordering::SeqCst) {
        tracing::info!(sandbox = %record.id, "ttl expired, destroying");
        let _ = remove_tree(&layout.sandbox_dir(&record.id));
        let _ = store.remove(&record.id);
        let _ = std::fs::remove_file(layout.log(&record.id));
    }
    0
}

/// Writes `ready PID` to the driver in one unbuffered write: when it fails, no copy may stay in
/// stdout's buffer to land in the log later (stdout becomes the log).
fn tell_ready(init: Pid) -> std::io::Result<()> {
    let line = format!("ready {init}\n");
    match nix::unistd::write(std::io::stdout(), line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(n) => Err(std::io::Error::other(format!(
            "wrote {n} of {} bytes",
            line.len()
        ))),
        Err(e) => Err(e.into()),
    }
}

struct Started {
    init: Pid,
    cgroups: Vec<std::path::PathBuf>,
    cgroup_version: &'static str,
    /// What the sandbox's network is, for `inspect`.
    network: String,
    /// The host's mount namespace, to return to once the sandbox runs (root only).
    host_mount_ns: Option<std::fs::File>,
    /// The child's report pipe, still open: a failure after it said ready (the agent failing to start) lands
    /// here and is logged when pid 1 ends.
    late_errors: std::fs::File,
    /// slirp4netns, for `--network full` without root; ends when this is dropped.
    _user_network: Option<crate::network::UserModeNetwork>,
}

/// What `start_in_cgroups` hands back.
struct Launched {
    init: Pid,
    network: String,
    host_mount_ns: Option<std::fs::File>,
    late_errors: std::fs::File,
    user_network: Option<crate::network::UserModeNetwork>,
}

fn io_err(context: impl std::fmt::Display, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{context}: {e}"))
}

/// Builds the sandbox and returns once the agent runs (or with why it could not).
fn start(layout: &Layout, record: &Record, run_agent: AgentEntry) -> std::io::Result<Started> {
    let id = &record.id;
    let spec = &record.spec;
    let cg_host = CgroupHost::detect();
    let cgroups = cg_host
        .create(id.as_str(), &effective_resources(&spec.resources))
        .map_err(|e| io_err("cgroups", e))?;
    let result = start_in_cgroups(layout, record, &cgroups, run_agent);
    match result {
        Ok(l) => Ok(Started {
            init: l.init,
            cgroups,
            cgroup_version: cg_host.version(),
            network: l.network,
            host_mount_ns: l.host_mount_ns,
            late_errors: l.late_errors,
            _user_network: l.user_network,
        }),
        Err(e) => {
            let _ = cgroup::remove(&cgroups);
            Err(e)
        }
    }
}

fn start_in_cgroups(
    layout: &Layout,
    record: &Record,
    cgroups: &[std::path::PathBuf],
    run_agent: AgentEntry,
) -> std::io::Result<Launched> {
    let id = &record.id;
    let spec = &record.spec;
    let map = record.idmap;
    let own_uid = Uid::from_raw(map.host_uid);
    let own_gid = Gid::from_raw(map.host_gid);

    // Directories: the sandbox's own tree belongs to its root uid.
    let sandbox_dir = layout.sandbox_dir(id);
    for dir in [sandbox_dir.clone(), layout.data(id), layout.root(id)] {
        std::fs::create_dir_all(&dir).map_err(|e| io_err(dir.display(), e))?;
        nix::unistd::chown(&dir, Some(own_uid), Some(own_gid)).map_err(|e| io_err(dir.display(), e))?;
    }
    std::fs::set_permissions(&sandbox_dir, std::fs::Permissions::from_mode(0o700))?;
    // As host root, everything below is mounted in a mount namespace of our own, which the
    // sandbox's copies; nothing shows up in the host's.
    let host_root = nix::unistd::geteuid().is_root();
    let mut host_mount_ns = None;
    if host_root {
        host_mount_ns =
            Some(std::fs::File::open("/proc/self/ns/mnt").map_err(|e| io_err("/proc/self/ns/mnt", e))?);
        nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| io_err("unshare mount namespace", e))?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| io_err("make mounts private", e))?;
        if let Some(bytes) = spec.resources.disk_bytes {
            mount_disk(
                &layout.disk_image(id),
                &layout.data(id),
                bytes,
                map.host_uid,
                map.host_gid,
            )?;
        }
    }
    for dir in [
        layout.upper(id),
        layout.work(id),
        layout.workspace(id),
        layout.home_dir(id),
    ] {
        std::fs::create_dir_all(&dir).map_err(|e| io_err(dir.display(), e))?;
        nix::unistd::chown(&dir, Some(own_uid), Some(own_gid)).map_err(|e| io_err(dir.display(), e))?;
    }
    std::fs::set_permissions(layout.workspace(id), std::fs::Permissions::from_mode(0o755))?;
    // The workspace and a home belong to the user execs run as, so a non-root `--user` can write.
    let user = default_user(spec)?;
    if let Some(user) = &user {
        let (uid, gid) = host_ids(user, &map)?;
        let home = layout.user_home_dir(id);
        std::fs::create_dir_all(&home).map_err(|e| io_err(home.display(), e))?;
        for dir in [layout.workspace(id), home] {
            nix::unistd::chown(&dir, Some(uid), Some(gid)).map_err(|e| io_err(dir.display(), e))?;
        }
    }

    let lower = spec.rootfs.clone().unwrap_or_else(|| "/".into());
    let workdir_mounted = spec.mounts.iter().any(|m| m.sandbox == Path::new(&spec.workdir));
    let inputs = MountInputs {
        lower: lower.clone(),
        upper: layout.upper(id),
        work: layout.work(id),
        root: layout.root(id),
        workspace: (!workdir_mounted).then(|| layout.workspace(id)),
        workdir: spec.workdir.clone().into(),
        root_home: layout.home_dir(id),
        binds: spec
            .mounts
            .iter()
            .map(|m| (m.host.clone(), m.sandbox.clone(), m.read_only))
            .chain(
                user.as_ref()
                    .map(|u| (layout.user_home_dir(id), u.home.clone(), false)),
            )
            .collect(),
        masks: vec![layout.home.clone()],
        own_netns: true,
        tmp_size: spec.resources.disk_bytes,
    };
    // Mount points the sandbox's root could not create itself go in the upper layer now.
    for (point, is_dir) in mount_plan::mount_points(&inputs) {
        if mount_plan::inside(&lower, &point).exists() {
            continue;
        }
        let in_upper = mount_plan::inside(&layout.upper(id), &point);
        if let Some(parent) = in_upper.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent.display(), e))?;
        }
        let made = if is_dir {
            std::fs::create_dir_all(&in_upper)
        } else {
            std::fs::File::create(&in_upper).map(drop)
        };
        made.map_err(|e| io_err(in_upper.display(), e))?;
        nix::unistd::chown(&in_upper, Some(own_uid), Some(own_gid))
            .map_err(|e| io_err(in_upper.display(), e))?;
    }
    let steps = mount_plan::plan(&inputs);
    let overlay = mount_plan::overlay_steps(&inputs);
    // As host root, mount the overlay here (see overlay_steps); unprivileged, the child mounts it
    // inside its user namespace (a --rootfs dir allows that).
    if host_root {
        mount_plan::apply(&overlay, &LinuxSyscalls).map_err(|e| io_err("overlay", e))?;
    }
    let steps = if host_root {
        steps
    } else {
        overlay.into_iter().chain(steps).collect()
    };

    let socket_path = layout.socket(id);
    let _ = std::fs::remove_file(&socket_path);
    let listener =
        std::os::unix::net::UnixListener::bind(&socket_path).map_err(|e| io_err(socket_path.display(), e))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))?;
    let listen_fd = OwnedFd::from(listener);

    let agent_config = agent_config(spec);
    let hostname = record.name.clone();
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;
    let (done_r, done_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io_err("pipe", e))?;

    let child = ChildSetup {
        own_netns: true,
        setgroups_allowed: !map.needs_setgroups_deny(),
        hostname,
        steps,
        listen_fd,
        run_agent,
        agent_config,
    };
    let dns_note = prepare_resolver(spec.network, &layout.upper(id), &lower)?;
    let clone_flags = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNET;
    match stockade_sys::clone_namespaces(clone_flags)
        .map_err(|e| io_err("clone (user, pid and net namespaces)", e))?
    {
        Forked::Child => {
            drop((go_w, done_r));
            child_main(child, go_r, done_w)
        }
        Forked::Parent(pid) => {
            drop((go_r, done_w, child));
            let parent = || -> std::io::Result<(String, Option<crate::network::UserModeNetwork>)> {
                let proc_dir = format!("/proc/{pid}");
                if map.needs_setgroups_deny() {
                    std::fs::write(format!("{proc_dir}/setgroups"), "deny")
                        .map_err(|e| io_err("setgroups", e))?;
                }
                std::fs::write(format!("{proc_dir}/uid_map"), map.uid_map())
                    .map_err(|e| io_err("uid_map", e))?;
                std::fs::write(format!("{proc_dir}/gid_map"), map.gid_map())
                    .map_err(|e| io_err("gid_map", e))?;
                cgroup::add_process(cgroups, pid.as_raw())?;
                let network = match spec.network {
                    NetworkMode::None => ("none: loopback only".to_owned(), None),
                    NetworkMode::Full if !nix::unistd::geteuid().is_root() => {
                        let net =
                            crate::network::user_mode(pid.as_raw()).map_err(|e| io_err("network", e))?;
                        (
                            format!(
                                "full: user-mode (slirp4netns), tap0 10.0.2.100, DNS {} ; host loopback not reachable",
                                crate::network::SLIRP_DNS
                            ),
                            Some(net),
                        )
                    }
                    NetworkMode::Full => {
                        let link = crate::network::apply(
                            id.as_str(),
                            pid.as_raw(),
                            &layout.home.join("network.lock"),
                        )
                        .map_err(|e| io_err("network", e))?;
                        let text = format!(
                            "full: veth {} ({}) <-> eth0 ({}), NAT out of the host{dns_note}",
                            link.host_if, link.host_ip, link.sandbox_ip
                        );
                        (text, None)
                    }
                };
                nix::unistd::write(&go_w, b"g").map_err(|e| io_err("start child", e))?;
                Ok(network)
            };
            let (network, user_network) = match parent() {
                Ok(n) => n,
                Err(e) => {
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGKILL);
                    let _ = waitpid(pid, None);
                    return Err(e);
                }
            };
            // 'K' when the sandbox is set up; 'E' and the reason when it is not.
            let mut done = std::fs::File::from(done_r);
            let mut first = [0u8; 1];
            let got = done.read(&mut first).unwrap_or(0);
            if got == 1 && first[0] == b'K' {
                return Ok(Launched {
                    init: pid,
                    network,
                    host_mount_ns,
                    late_errors: done,
                    user_network,
                });
            }
            let mut report = String::new();
            let _ = done.read_to_string(&mut report);
            let _ = waitpid(pid, None);
            if report.is_empty() {
                report = "the sandbox's first process exited during setup".into();
            }
            Err(std::io::Error::other(report))
        }
    }
}

/// The limits applied: the spec's, with [`stockade_core::sandbox::DEFAULT_PIDS`] when it sets
/// none.
pub fn effective_resources(r: &stockade_core::Resources) -> stockade_core::Resources {
    let mut r = r.clone();
    r.pids = Some(r.pids.unwrap_or(stockade_core::sandbox::DEFAULT_PIDS));
    r
}

/// The agent's configuration for this sandbox: exec defaults and hardening. Writes are allowed
/// (where landlock exists) in the workdir, `/root`, `/tmp`, `/dev/shm` and read-write mounts.
pub fn agent_config(spec: &stockade_core::SandboxSpec) -> stockade_proto::AgentConfig {
    let user_home = default_user(spec)
        .ok()
        .flatten()
        .map(|u| u.home.display().to_string());
    stockade_proto::AgentConfig::for_spec(spec, user_home)
}

/// `--disk`: the sandbox's writable data lives in an ext4 image of `bytes`, made on first start
/// (no reserved blocks, no journal: a scratch disk), loop-mounted on `data`. Writes past it fail
/// with ENOSPC; the image is kept across stop and start and removed with the sandbox.
fn mount_disk(image: &Path, data: &Path, bytes: u64, uid: u32, gid: u32) -> std::io::Result<()> {
    let run = |cmd: &mut std::process::Command| -> std::io::Result<()> {
        let out = cmd.output().map_err(|e| io_err(format!("{cmd:?}"), e))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io_err(
                format!("{cmd:?}"),
                String::from_utf8_lossy(&out.stderr).trim(),
            ))
        }
    };
    if !image.exists() {
        let file = std::fs::File::create(image)?;
        // Too large for the host's file system: the caller's --disk, named as such.
        file.set_len(bytes).map_err(|e| {
            std::io::Error::other(format!(
                "invalid disk: {bytes} bytes is more than {} allows for one file ({e})",
                image.parent().unwrap_or(image).display()
            ))
        })?;
        drop(file);
        run(std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal", "-E"])
            .arg(format!("root_owner={uid}:{gid}"))
            .arg(image))?;
    }
    run(std::process::Command::new("mount")
        .args(["-o", "loop,nosuid,nodev"])
        .arg(image)
        .arg(data))
}

/// The sandbox's default user when it is not root: ids inside, and the home it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultUser {
    pub uid: u32,
    pub gid: u32,
    /// Its home from the root filesystem's passwd, or `/home/<name or uid>` when that names none.
    pub home: PathBuf,
}

/// Resolves the spec's `user` against the root filesystem's passwd and group files.
pub fn default_user(spec: &stockade_core::SandboxSpec) -> std::io::Result<Option<DefaultUser>> {
    let Some(user) = spec.user.as_deref() else {
        return Ok(None);
    };
    let lower = spec.rootfs.clone().unwrap_or_else(|| "/".into());
    let passwd = std::fs::read_to_string(lower.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(lower.join("etc/group")).unwrap_or_default();
    let identity =
        stockade_proto::users::resolve(Some(user), &passwd, &group).map_err(std::io::Error::other)?;
    if identity.uid == 0 {
        return Ok(None);
    }
    let home = match identity.home.as_str() {
        "" | "/" | "/nonexistent" => {
            let name = user.split(':').next().unwrap_or(user);
            PathBuf::from("/home").join(name)
        }
        other => PathBuf::from(other),
    };
    Ok(Some(DefaultUser {
        uid: identity.uid,
        gid: identity.gid,
        home,
    }))
}

/// Host ids of the default user, checked against the id map.
fn host_ids(user: &DefaultUser, map: &crate::idmap::IdMap) -> std::io::Result<(Uid, Gid)> {
    if user.uid >= map.count || user.gid >= map.count {
        return Err(std::io::Error::other(format!(
            // "invalid user: ..." reaches the caller as an invalid-spec error naming the field.
            "invalid user: uid {} is outside the sandbox's {} mapped ids{}",
            user.uid,
            map.count,
            if map.count == 1 {
                "; without root only root can be mapped"
            } else {
                ""
            }
        )));
    }
    Ok((
        Uid::from_raw(map.host_uid + user.uid),
        Gid::from_raw(map.host_gid + user.gid),
    ))
}

/// With `--network full` on a host whose resolver is a loopback stub (systemd-resolved's
/// 127.0.0.53), the sandbox gets the stub's upstream servers in its own `/etc/resolv.conf`, written
/// to the upper layer. Returns a note for `inspect` when DNS cannot work.
fn prepare_resolver(network: NetworkMode, upper: &Path, lower: &Path) -> std::io::Result<String> {
    if network != NetworkMode::Full {
        return Ok(String::new());
    }
    if !nix::unistd::geteuid().is_root() {
        // slirp4netns forwards DNS from its own address to the host's resolver, loopback or not.
        std::fs::create_dir_all(upper.join("etc"))?;
        std::fs::write(
            upper.join("etc/resolv.conf"),
            format!("nameserver {}\n", crate::network::SLIRP_DNS),
        )?;
        return Ok(String::new());
    }
    let host = std::fs::read_to_string(lower.join("etc/resolv.conf")).unwrap_or_default();
    if !crate::network::resolver_is_loopback_only(&host) {
        return Ok(String::new());
    }
    let upstream = std::fs::read_to_string("/run/systemd/resolve/resolv.conf").unwrap_or_default();
    if upstream.is_empty() || crate::network::resolver_is_loopback_only(&upstream) {
        return Ok("; DNS: the host's resolver listens on loopback only and has no upstream to copy".into());
    }
    std::fs::create_dir_all(upper.join("etc"))?;
    std::fs::write(upper.join("etc/resolv.conf"), upstream)?;
    Ok("; DNS: the host's upstream resolvers".into())
}

/// What the child needs; computed before the clone.
struct ChildSetup {
    own_netns: bool,
    setgroups_allowed: bool,
    hostname: String,
    steps: Vec<mount_plan::Step>,
    listen_fd: OwnedFd,
    run_agent: AgentEntry,
    agent_config: stockade_proto::AgentConfig,
}

/// Runs in the new user and pid namespaces as pid 1. Never returns: ends in the agent, or exits
/// after writing what failed to `done`.
fn child_main(setup: ChildSetup, go: OwnedFd, done: OwnedFd) -> ! {
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        let _ = nix::unistd::write(&done, format!("E{what}: {e}").as_bytes());
        stockade_sys::exit_now(1)
    };
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::SIGKILL);
    let mut byte = [0u8; 1];
    if !matches!(nix::unistd::read(go.as_raw_fd(), &mut byte), Ok(1)) {
        stockade_sys::exit_now(1);
    }
    drop(go);
    if setup.setgroups_allowed {
        if let Err(e) = nix::unistd::setgroups(&[]) {
            fail("setgroups", &e);
        }
    }
    let root_gid = Gid::from_raw(0);
    let root_uid = Uid::from_raw(0);
    if let Err(e) = nix::unistd::setresgid(root_gid, root_gid, root_gid) {
        fail("become root in the user namespace (gid)", &e);
    }
    if let Err(e) = nix::unistd::setresuid(root_uid, root_uid, root_uid) {
        fail("become root in the user namespace (uid)", &e);
    }
    // Die with the supervisor. Set again here: changing credentials (just above) clears it. (The
    // supervisor cannot be gone yet: it is blocked reading our report.)
    if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::SIGKILL) {
        fail("parent-death signal", &e);
    }
    // The network namespace came with the clone, so the supervisor could wire it up.
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    if let Err(e) = nix::sched::unshare(flags) {
        fail("unshare mount/ipc/uts/cgroup/net namespaces", &e);
    }
    if let Err(e) = nix::unistd::sethostname(&setup.hostname) {
        fail("sethostname", &e);
    }
    if setup.own_netns {
        if let Err(e) = stockade_sys::loopback_up() {
            fail("bring up loopback", &e);
        }
    }
    if let Err(e) = mount_plan::apply(&setup.steps, &LinuxSyscalls) {
        fail("mount", &e);
    }
    // Our stdout is the driver's pipe for the ready line; pid 1 must not hold it.
    let _ = nix::unistd::dup2(2, 1);
    // Ready: everything that can fail for a reason worth reporting has run. The socket is already
    // listening, so connections made before the agent serves wait in its backlog.
    let _ = nix::unistd::write(&done, b"K");
    // This process becomes the agent: it is a fork of the supervisor, which is the agent binary,
    // so there is nothing to exec (and the root filesystem needs no copy of it).
    let listener = std::os::unix::net::UnixListener::from(setup.listen_fd);
    match (setup.run_agent)(listener, setup.agent_config) {
        Ok(()) => stockade_sys::exit_now(0),
        Err(e) => fail("agent", &e),
    }
}

/// `rm -rf` that also gets through directories the sandbox made unwritable.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            make_writable(path);
            match std::fs::remove_dir_all(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path.display(), e)),
                _ => Ok(()),
            }
        }
    }
}

fn make_writable(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                make_writable(&e.path());
            }
        }
    }
}
