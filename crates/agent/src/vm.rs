//! The agent as a VM guest's init, in two stages.
//!
//! Stage one, `stockade-agent vm-init`, is the initramfs's `/init` (the kernel starts it as
//! `/init` with no arguments): it mounts the kernel's filesystems, loads the modules the image
//! builder listed, mounts the root disk (`stockade.root=` on the kernel command line, default
//! `/dev/vda`), binds itself read-only into a tmpfs there, moves the root, opens the agent's
//! virtio-serial port and clones the agent into a pid and mount namespace of its own, with the
//! sandbox's view of `/proc`, `/dev` and the kernel paths. Stage one stays the guest's init and
//! powers the guest off when the agent ends; anything that fails powers it off too, so the VMM
//! exits and the host reads the console.
//!
//! Stage two, `stockade-agent init --vm-port-fd N`, is the agent for the guest's life: it writes
//! its hello ([`stockade_proto::VM_AGENT_READY`]) on the inherited port, then serves the agent
//! protocol there, with yamux carrying one stream per host connection (the host's supervisor
//! opens one per connection it accepts). The first stream of the guest's life must bring
//! [`Request::Configure`]: the sandbox's config and the guest's identity, which a guest restored
//! from a snapshot must not share with its siblings. Hardening is installed then, as the other
//! drivers' agents install it at start.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::mount::{mount, MsFlags};
use stockade_core::Error;
use stockade_proto::{read_frame, write_frame, Frame, GuestIdentity, Reply, Request};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};

use crate::hardening::Prepared;
use crate::server::State;
use stockade_proto::AgentConfig;

/// The virtio-serial port the host's supervisor talks to.
pub use stockade_proto::VM_AGENT_PORT as PORT_NAME;
/// Where stage one finds its modules, and the file that lists them in load order.
pub const MODULES_DIR: &str = "/modules";
pub const MODULES_ORDER: &str = "/modules/order";
/// Where stage two's binary lives in the guest's root.
pub const AGENT_IN_GUEST: &str = "/.stockade/agent";

/// Stage one. Never returns: it execs stage two, or powers the guest off.
pub fn stage_one() -> ! {
    let err = match setup_and_switch_root() {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("stockade-agent vm-init: {err}");
    power_off()
}

fn power_off() -> ! {
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot(2) only returns on failure; pid 1 must not exit (the kernel would panic).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), String> {
    let _ = std::fs::create_dir_all(target);
    mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| format!("mount {fstype} on {target}: {e}"))
}

fn move_mount(from: &str, to: &str) -> Result<(), String> {
    let _ = std::fs::create_dir_all(to);
    mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("move {from} to {to}: {e}"))
}

/// `key=value` words of the kernel command line.
pub fn cmdline_value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

fn setup_and_switch_root() -> Result<std::convert::Infallible, String> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", quiet, None)?;
    mount_fs("sysfs", "/sys", "sysfs", quiet, None)?;
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    load_modules()?;
    let root = cmdline_value(&cmdline, "stockade.root").unwrap_or("/dev/vda");
    wait_for(Path::new(root), Duration::from_secs(10))?;
    mount_fs(root, "/newroot", "ext4", MsFlags::MS_NOATIME, None)?;
    mount_fs(
        "tmpfs",
        "/newroot/.stockade",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    // The agent stays where the initramfs has it (in memory once), bound read-only into the new root.
    let agent = format!("/newroot{AGENT_IN_GUEST}");
    std::fs::write(&agent, b"").map_err(|e| format!("create {agent}: {e}"))?;
    let bind = |flags: MsFlags| {
        mount(Some("/init"), agent.as_str(), None::<&str>, flags, None::<&str>)
            .map_err(|e| format!("bind the agent: {e}"))
    };
    bind(MsFlags::MS_BIND)?;
    bind(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)?;
    // The initramfs stays in memory under the new root: free what it no longer needs.
    let _ = std::fs::remove_dir_all(MODULES_DIR);
    for dir in ["/dev", "/proc", "/sys"] {
        move_mount(dir, &format!("/newroot{dir}"))?;
    }
    std::env::set_current_dir("/newroot").map_err(|e| format!("chdir /newroot: {e}"))?;
    move_mount(".", "/")?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )?;
    // For the agent's stats and a user's own limits; a kernel without cgroup2 still boots.
    let _ = mount_fs("cgroup2", "/sys/fs/cgroup", "cgroup2", quiet, None);
    // Unprivileged ICMP echo sockets, as distributions set it (execs hold no CAP_NET_RAW).
    let _ = std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647");
    // The guest is sized a little above --memory and its cgroup holds the limit: allocations
    // are not refused up front (as the heuristic would, past the guest's RAM) but met by the
    // cgroup's OOM killer, as on a host.
    let _ = std::fs::write("/proc/sys/vm/overcommit_memory", "1");
    stockade_sys::loopback_up().map_err(|e| format!("bring up lo: {e}"))?;
    let port = open_port(PORT_NAME)?;
    // The agent runs as pid 1 of a pid and mount namespace of its own: execs see their own
    // processes, not the guest kernel's threads, and a /dev and /proc made for them. This process
    // stays the guest's init above it, and powers the guest off when the agent ends.
    let flags = nix::sched::CloneFlags::CLONE_NEWPID | nix::sched::CloneFlags::CLONE_NEWNS;
    match stockade_sys::clone_namespaces(flags).map_err(|e| format!("clone the agent's namespaces: {e}"))? {
        stockade_sys::Forked::Parent(agent) => init_until(agent),
        stockade_sys::Forked::Child => {}
    }
    if let Err(e) = sandbox_view() {
        eprintln!("stockade-agent vm-init: {e}");
        stockade_sys::exit_now(1);
    }
    let program = CString::new(AGENT_IN_GUEST).map_err(|e| e.to_string())?;
    let fd = port.as_raw_fd().to_string();
    let args = ["stockade-agent", "init", "--vm-port-fd", &fd].map(|a| CString::new(a).unwrap_or_default());
    let env = [CString::new(format!("PATH={}", stockade_proto::DEFAULT_PATH)).unwrap_or_default()];
    nix::unistd::execve(&program, &args, &env).map_err(|e| format!("exec {AGENT_IN_GUEST}: {e}"))
}

/// The guest's init once the agent runs: reaps what reaches it, and powers off when the agent
/// (`agent`) is gone.
fn init_until(agent: nix::unistd::Pid) -> ! {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _)) if pid == agent => break,
            Err(nix::errno::Errno::ECHILD) => break,
            _ => {}
        }
    }
    eprintln!("stockade-agent vm-init: the agent ended; powering off");
    power_off()
}

/// What execs see, made in the agent's own mount namespace: a fresh `/proc` for its pid
/// namespace, a `/dev` with only the usual devices, the kernel paths Docker hides masked or
/// read-only, and `/sys` read-only.
fn sandbox_view() -> Result<(), String> {
    use nix::sys::stat::{fchmodat, makedev, mknod, FchmodatFlags, Mode, SFlag};
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    mount_fs("proc", "/proc", "proc", quiet, None)?;
    mount_fs(
        "tmpfs",
        "/dev",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    )?;
    let numbers: [(u64, u64); 6] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0)];
    for (name, (major, minor)) in stockade_proto::DEVICES.iter().zip(numbers) {
        let path = format!("/dev/{name}");
        let mode = Mode::from_bits_truncate(0o666);
        mknod(path.as_str(), SFlag::S_IFCHR, mode, makedev(major, minor))
            .map_err(|e| format!("mknod {path}: {e}"))?;
        // mknod is subject to the umask.
        fchmodat(None, path.as_str(), mode, FchmodatFlags::FollowSymlink)
            .map_err(|e| format!("chmod {path}: {e}"))?;
    }
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ];
    for (link, target) in links {
        std::os::unix::fs::symlink(target, format!("/dev/{link}"))
            .map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }
    let pts = Some("newinstance,mode=0620,ptmxmode=0666");
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        pts,
    )?;
    mount_fs(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )?;
    for path in stockade_proto::MASKED_PATHS {
        let p = Path::new(path);
        let masked = if p.is_dir() {
            mount(
                Some("tmpfs"),
                *path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | quiet,
                Some("size=0"),
            )
        } else if p.exists() {
            mount(
                Some("/dev/null"),
                *path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        } else {
            Ok(())
        };
        masked.map_err(|e| format!("mask {path}: {e}"))?;
    }
    for path in stockade_proto::READ_ONLY_PATHS.iter().copied().chain(["/sys"]) {
        if Path::new(path).exists() {
            read_only(path)?;
        }
    }
    Ok(())
}

fn read_only(path: &str) -> Result<(), String> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("bind {path}: {e}"))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
        .map_err(|e| format!("make {path} read-only: {e}"))
}

/// Opens the virtio-serial port named `name` (no udev here: the name is in sysfs), non-blocking
/// and inheritable by stage two.
fn open_port(name: &str) -> Result<OwnedFd, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let ports =
        std::fs::read_dir("/sys/class/virtio-ports").map_err(|e| format!("/sys/class/virtio-ports: {e}"))?;
    for entry in ports.flatten() {
        let port_name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if port_name.trim() == name {
            let path = Path::new("/dev").join(entry.file_name());
            // std opens with O_CLOEXEC; stage two inherits this one across exec.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)
                .map_err(|e| format!("open {}: {e}", path.display()))?;
            let fd = OwnedFd::from(file);
            nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .map_err(|e| format!("keep {} across exec: {e}", path.display()))?;
            return Ok(fd);
        }
    }
    Err(format!("no virtio-serial port named {name}"))
}

fn load_modules() -> Result<(), String> {
    let order = std::fs::read_to_string(MODULES_ORDER).unwrap_or_default();
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new(MODULES_DIR).join(format!("{name}.ko"));
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(format!("load module {name}: {e}")),
        }
    }
    Ok(())
}

fn wait_for(path: &Path, limit: Duration) -> Result<(), String> {
    let start = std::time::Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return Err(format!("{} did not appear within {limit:?}", path.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Stage two: serves the agent protocol over the port stage one opened (`port`, inherited)
/// until the guest powers off.
pub fn serve(port: OwnedFd) -> std::io::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        tokio::spawn(crate::server::reap_forever());
        let fd = port;
        let port = Arc::new(SerialPort {
            fd: stockade_sys::async_fd(fd)?,
        });
        let state: Arc<OnceLock<Arc<State>>> = Arc::default();
        // The host must not write before the guest reads: QEMU 7.2 spins on a chardev that has
        // bytes for a port the guest has not opened, starving the guest of timer ticks (seen: a
        // boot stuck on jiffies). So the guest speaks first, once; a guest restored from a
        // snapshot said it before the snapshot, and its host knows.
        let mut hello = PortHandle {
            port: Arc::clone(&port),
            host_absent: None,
        };
        hello.write_all(stockade_proto::VM_AGENT_READY).await?;
        loop {
            let mut session = yamux::Connection::new(
                PortHandle {
                    port: Arc::clone(&port),
                    host_absent: None,
                }
                .compat(),
                yamux::Config::default(),
                yamux::Mode::Server,
            );
            while let Some(Ok(stream)) = std::future::poll_fn(|cx| session.poll_next_inbound(cx)).await {
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let _ = serve_stream(state, stream.compat()).await;
                });
            }
            // The host went away; a new supervisor (or a restored VMM) starts the next session.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

async fn serve_stream<S>(state: Arc<OnceLock<Arc<State>>>, mut stream: S) -> stockade_core::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if let Some(ready) = state.get() {
        return crate::server::serve_connection(Arc::clone(ready), stream).await;
    }
    let frame: Frame<Request> = read_frame(&mut stream).await?;
    let reply = match frame.header {
        Request::Configure { config, identity } => match configure(*config, &identity) {
            Ok(configured) => {
                let _ = state.set(configured);
                Reply::Configured
            }
            Err(e) => Reply::from_error(&e),
        },
        _ => Reply::from_error(&Error::invalid(
            "request",
            "this guest's agent is not configured yet",
        )),
    };
    write_frame(&mut stream, &reply, &[]).await?;
    stream
        .flush()
        .await
        .map_err(|e| Error::backend("agent write", e))?;
    match state.get() {
        Some(ready) => crate::server::serve_connection(Arc::clone(ready), stream).await,
        None => Ok(()),
    }
}

/// Takes on the identity, then installs the hardening every exec inherits.
fn configure(config: AgentConfig, identity: &GuestIdentity) -> stockade_core::Result<Arc<State>> {
    let valid_id =
        identity.machine_id.len() == 32 && identity.machine_id.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid_id {
        return Err(Error::invalid("machine_id", "expected 32 hex digits"));
    }
    nix::unistd::sethostname(&identity.hostname).map_err(|e| Error::backend("sethostname", e))?;
    std::fs::write("/etc/machine-id", format!("{}\n", identity.machine_id))
        .map_err(|e| Error::backend("write /etc/machine-id", e))?;
    std::fs::write("/etc/hostname", format!("{}\n", identity.hostname))
        .map_err(|e| Error::backend("write /etc/hostname", e))?;
    if identity.unix_time_ns > 0 {
        stockade_sys::set_wall_clock(identity.unix_time_ns)
            .map_err(|e| Error::backend("set the wall clock", e))?;
    }
    // Siblings restored from one snapshot share the kernel's generator state until it reseeds:
    // the seed is mixed in and the generator reseeded now.
    let seed: Vec<u8> = (0..identity.random_seed.len() / 2)
        .filter_map(|i| u8::from_str_radix(identity.random_seed.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    stockade_sys::reseed_kernel_rng(&seed).map_err(|e| Error::backend("reseed the kernel's generator", e))?;
    if let Some(network) = &identity.network {
        configure_nic(network).map_err(|e| Error::backend("network", e))?;
    }
    crate::give_workdir_to_default_user(&config).map_err(|e| Error::backend("workdir", e))?;
    let mut hardening =
        Prepared::new(config.hardening.clone()).map_err(|e| Error::backend("hardening", e))?;
    if let Some(bytes) = config.exec_limits.as_ref().and_then(|l| l.disk_bytes) {
        reserve_disk(bytes).map_err(|e| Error::invalid("disk", e))?;
    }
    if let Some(limits) = &config.exec_limits {
        hardening.exec_cgroup = Some(exec_cgroup(limits).map_err(|e| Error::backend("exec limits", e))?);
    }
    hardening
        .install_in_agent()
        .map_err(|e| Error::backend("hardening", e))?;
    Ok(State::new(config, hardening))
}

/// Where the space a `--disk` limit keeps from the sandbox is allocated (on the root disk; an
/// empty read-only tmpfs covers it in the sandbox's view).
const DISK_RESERVE: &str = "/var/lib/stockade/disk-reserve";

/// Leaves the sandbox `limit` bytes of the root disk: the rest of the space its processes could
/// use is allocated to a file the sandbox can neither see nor remove. The file stays on the
/// disk, so a stopped and started sandbox keeps the limit, and what it wrote counts against it.
fn reserve_disk(limit: u64) -> Result<(), String> {
    use nix::sys::statvfs::statvfs;
    let dir = Path::new(DISK_RESERVE);
    let file = dir.join("space");
    if !file.exists() {
        let vfs = statvfs("/").map_err(|e| format!("statvfs /: {e}"))?;
        // Execs may run as uid 0, which ext4 lets into the blocks reserved for root (its
        // `resuid` is 0, capabilities or not): what they can use is the free space less only
        // ext4's own reserve for metadata (`reserved_clusters`; the image has no bigalloc, so
        // a cluster is a block).
        let block = vfs.fragment_size() as u64;
        let ext4_reserve = std::fs::read_to_string("/sys/fs/ext4/vda/reserved_clusters")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let available = match ext4_reserve {
            Some(clusters) => (vfs.blocks_free() as u64).saturating_sub(clusters) * block,
            None => vfs.blocks_available() as u64 * block,
        };
        if limit > available {
            return Err(format!(
                "{limit} bytes asked; the VM image's disk has {available} bytes free, the most --disk can give"
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("create {DISK_RESERVE}: {e}"))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| format!("chmod {DISK_RESERVE}: {e}"))?;
        let out = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new().write(true).create_new(true),
            0o600,
        )
        .open(&file)
        .map_err(|e| format!("create {}: {e}", file.display()))?;
        // A file in a 0700 directory: nobody but root sees it before it is covered.
        let keep = (available - limit) as libc::off_t;
        if keep > 0 {
            nix::fcntl::fallocate(out.as_raw_fd(), nix::fcntl::FallocateFlags::empty(), 0, keep)
                .map_err(|e| format!("allocate {keep} bytes to {}: {e}", file.display()))?;
        }
        out.sync_all()
            .map_err(|e| format!("sync {}: {e}", file.display()))?;
    }
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=0,mode=0555"),
    )
    .map_err(|e| format!("cover {DISK_RESERVE}: {e}"))
}

/// Addresses `eth0` (the VM's NIC), routes through the host's side and names the resolvers, with
/// the image's iproute2, before any exec runs.
fn configure_nic(network: &stockade_proto::GuestNetwork) -> Result<(), String> {
    let ip = |args: &[&str]| -> Result<(), String> {
        let out = std::process::Command::new("ip")
            .args(args)
            .env("PATH", stockade_proto::DEFAULT_PATH)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("ip {}: {e} (the image needs iproute2)", args.join(" ")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    ip(&["addr", "add", &network.address, "dev", "eth0"])?;
    ip(&["link", "set", "eth0", "up"])?;
    ip(&["route", "add", "default", "via", &network.gateway])?;
    if !network.nameservers.is_empty() {
        let conf: String = network
            .nameservers
            .iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect();
        std::fs::write("/etc/resolv.conf", conf).map_err(|e| format!("write /etc/resolv.conf: {e}"))?;
    }
    Ok(())
}

/// The cgroup every exec joins, with `limits` written to it; the cgroup file system is then
/// made read-only for the sandbox (the agent keeps `cgroup.procs` open for writing).
fn exec_cgroup(limits: &stockade_proto::ExecLimits) -> Result<crate::hardening::ExecCgroup, String> {
    const ROOT: &str = "/sys/fs/cgroup";
    let dir = Path::new(ROOT).join("sandbox");
    let write = |file: &Path, value: &str| {
        std::fs::write(file, value).map_err(|e| format!("write {value:?} to {}: {e}", file.display()))
    };
    write(
        &Path::new(ROOT).join("cgroup.subtree_control"),
        "+memory +pids +cpu",
    )?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    if let Some(bytes) = limits.memory_bytes {
        write(&dir.join("memory.max"), &bytes.to_string())?;
        write(&dir.join("memory.swap.max"), "0")?;
    }
    if let Some(pids) = limits.pids {
        write(&dir.join("pids.max"), &pids.to_string())?;
    }
    if let Some(millicpus) = limits.millicpus {
        write(
            &dir.join("cpu.max"),
            &format!("{} 100000", u64::from(millicpus) * 100),
        )?;
    }
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .map_err(|e| format!("open {}/cgroup.procs: {e}", dir.display()))?;
    read_only(ROOT)?;
    Ok(crate::hardening::ExecCgroup {
        procs,
        events: dir.join("memory.events"),
    })
}

/// The guest's end of the virtio-serial port, non-blocking, in the reactor.
struct SerialPort {
    fd: AsyncFd<OwnedFd>,
}

/// One session's handle on the port; the port outlives sessions.
///
/// A read of nothing means the host side is not connected (yet, or for a moment): the port is
/// then polled again after [`HOST_ABSENT_POLL`] instead of ending the session, so bytes the host
/// sends once it is there are never met by a session that already gave up.
struct PortHandle {
    port: Arc<SerialPort>,
    host_absent: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How often a port without its host side is looked at again.
const HOST_ABSENT_POLL: Duration = Duration::from_millis(10);

impl AsyncRead for PortHandle {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(wait) = self.host_absent.as_mut() {
                ready!(std::future::Future::poll(wait.as_mut(), cx));
                self.host_absent = None;
            }
            let mut guard = ready!(self.port.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd.as_raw_fd(), unfilled).map_err(std::io::Error::from))
            {
                Ok(Ok(0)) if !unfilled.is_empty() => {
                    drop(guard);
                    self.host_absent = Some(Box::pin(tokio::time::sleep(HOST_ABSENT_POLL)));
                }
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PortHandle {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        loop {
            let mut guard = ready!(self.port.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values_are_found_by_whole_key() {
        let line = "console=ttyS0 stockade.rootx=/dev/vdb stockade.root=/dev/vda quiet";
        assert_eq!(cmdline_value(line, "stockade.root"), Some("/dev/vda"));
        assert_eq!(cmdline_value(line, "console"), Some("ttyS0"));
        assert_eq!(cmdline_value(line, "missing"), None);
    }
}
