//! The syscalls Stockade makes that the safe wrappers of `nix` do not cover, each in a small
//! checked function with a `// SAFETY:` note. Everything else in the workspace forbids `unsafe`.
//!
//! [`Syscalls`] is the narrow trait the mount-plan code goes through, so that plan can be tested
//! against [`RecordingSyscalls`] without root.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Mutex;

pub use nix::unistd::Pid;

/// Result of [`fork_single_threaded`] and [`clone_namespaces`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    Parent(Pid),
    Child,
}

/// Counts this process's threads from `/proc/self/task`.
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

fn ensure_single_threaded(what: &str) -> io::Result<()> {
    let n = thread_count()?;
    if n != 1 {
        return Err(io::Error::other(format!(
            "{what} needs a single-threaded process, this one has {n} threads"
        )));
    }
    Ok(())
}

/// `fork()`, refused unless this process has exactly one thread, so the child may allocate and
/// lock freely (no other thread can hold a lock at the moment of the fork).
pub fn fork_single_threaded() -> io::Result<Forked> {
    ensure_single_threaded("fork")?;
    // SAFETY: the process has one thread (checked just above, and nothing in it starts threads
    // concurrently), so the child inherits no lock held by another thread.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// `clone(flags | SIGCHLD)` with no new stack: a fork into new namespaces. Same single-thread rule
/// as [`fork_single_threaded`].
pub fn clone_namespaces(flags: nix::sched::CloneFlags) -> io::Result<Forked> {
    ensure_single_threaded("clone")?;
    let raw_flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw clone with a null stack pointer behaves like fork: the child runs on a
    // copy-on-write copy of this stack. The process is single-threaded (checked above), so the
    // child inherits no held lock. No pointers are passed (ptid, ctid, tls are null).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            raw_flags,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0usize,
        )
    };
    match ret {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// Makes `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal); the fd is borrowed and open.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0 as libc::c_int) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a terminal's window size.
pub fn set_window_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which points at a live local.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the system's wall clock (`CLOCK_REALTIME`) to `unix_ns` nanoseconds since the epoch.
pub fn set_wall_clock(unix_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (unix_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (unix_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one `timespec` through the pointer, which points at a live local.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `RNDRESEEDCRNG` (`_IO('R', 0x07)`, linux/random.h; the libc crate does not name it).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Mixes `seed` into the kernel's input pool and makes the kernel reseed its random number
/// generator from the pool now, so that guests restored from one memory snapshot stop sharing
/// generator state at once rather than at the next scheduled reseed.
pub fn reseed_kernel_rng(seed: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut urandom = std::fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    urandom.write_all(seed)?;
    // SAFETY: RNDRESEEDCRNG takes no argument; the fd is open for the call's whole duration.
    if unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets or clears `fd`'s close-on-exec flag.
pub fn set_cloexec(fd: &impl AsRawFd, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let flags = if on { FdFlag::FD_CLOEXEC } else { FdFlag::empty() };
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Marks every fd from `first` up close-on-exec (`close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`).
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range only changes fd flags; no memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            4u32,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd in `first..=last`.
pub fn close_range(first: RawFd, last: RawFd) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range closes fds in the range; the caller owns them (called in a freshly forked
    // child that only keeps the fds outside the range). No memory is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            last as libc::c_uint,
            0u32,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Restores default dispositions for the signals the Rust runtime and tokio change, and unblocks
/// every signal, so an exec'd program starts as it would from a shell.
pub fn reset_signals(reset_sigpipe: bool) -> io::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    let all = [
        Signal::SIGPIPE,
        Signal::SIGCHLD,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ];
    for sig in all.into_iter().filter(|s| reset_sigpipe || *s != Signal::SIGPIPE) {
        // SAFETY: installing SIG_DFL runs no handler code and so cannot break any invariant.
        unsafe { sigaction(sig, &default) }.map_err(io::Error::from)?;
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    )
    .map_err(io::Error::from)
}

/// Takes ownership of a file descriptor this process inherited from its parent (for example a
/// listening socket passed as `--listen-fd 3`). Each fd can be claimed once; a second claim, or a
/// claim of a closed fd, is an error, so no two owners can close the same descriptor.
pub fn claim_inherited_fd(fd: RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    static CLAIMED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
    let mut claimed = CLAIMED
        .lock()
        .map_err(|_| io::Error::other("fd registry poisoned"))?;
    if fd < 3 || claimed.contains(&fd) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("fd {fd} cannot be claimed"),
        ));
    }
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).map_err(io::Error::from)?;
    claimed.push(fd);
    // SAFETY: the fd is open (F_GETFD succeeded), is not stdio, and the registry guarantees it is
    // claimed once, so the OwnedFd is its only owner in this process.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Registers an owned fd (a terminal master) with the tokio reactor of the current runtime.
pub fn async_fd(fd: std::os::fd::OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: an OwnedFd is a valid open descriptor that stays open and refers to the same file for
    // as long as the AsyncFd owns it, and its as_raw_fd always returns that descriptor.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// A pidfd for `pid` (Linux 5.3+): readable once the process has exited.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags, no memory.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until the process behind `pidfd` has exited, without polling.
pub async fn wait_pidfd(pidfd: std::os::fd::OwnedFd) -> io::Result<()> {
    let afd = async_fd_with(pidfd, tokio::io::Interest::READABLE)?;
    let _ready = afd.readable().await?;
    Ok(())
}

fn async_fd_with(
    fd: std::os::fd::OwnedFd,
    interest: tokio::io::Interest,
) -> io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: as in async_fd: the OwnedFd stays open and unchanged while the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// Empties the capability bounding set: one `PR_CAPBSET_DROP` per capability the kernel knows
/// (`/proc/sys/kernel/cap_last_cap`). Needs CAP_SETPCAP.
pub fn drop_bounding_set() -> io::Result<()> {
    let last: libc::c_ulong = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        // SAFETY: PR_CAPBSET_DROP takes a capability number, no memory.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } == -1 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Clears the ambient set, then the effective, permitted and inheritable capability sets in one
/// `capset`. (The bounding set is the caller's business: it needs CAP_SETPCAP to shrink.)
pub fn drop_all_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
    // EINVAL: no ambient set to clear (kernels before 4.3, and gVisor).
    if r == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads one header and, for version 3, two data structs; both are live locals
    // with the kernel's layout.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The landlock ABI version the running kernel offers (`landlock_create_ruleset(NULL, 0,
/// LANDLOCK_CREATE_RULESET_VERSION)`), or `None` when landlock is absent or disabled.
pub fn landlock_abi() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a null attribute pointer and size 0 the kernel reads no memory; it only returns
    // the ABI version.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// Makes the child `cmd` starts get SIGKILL when the thread that started it dies, so a helper
/// process (a VMM) never outlives its supervisor.
pub fn kill_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2), which is
    // async-signal-safe; it touches no memory of the parent's.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Removes the extended attribute `name` from `path` (not following a symlink); `Ok(false)` when
/// the file had none.
pub fn remove_xattr(path: &Path, name: &str) -> io::Result<bool> {
    let path = cstring(&path.to_string_lossy())?;
    let name = cstring(name)?;
    // SAFETY: both pointers are NUL-terminated strings that live across the call.
    if unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(false),
        _ => Err(err),
    }
}

/// Brings the loopback interface up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags field of the ifreq we pass by pointer; it is live.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the union field was just written by the kernel as flags.
    unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we pass by pointer; it is live.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates the tap interface `name` (no packet information header) and returns its queue. The
/// interface is not persistent: it goes away when the last holder of the fd closes it, so a VMM
/// killed at any point leaves no interface behind.
pub fn open_tap(name: &str) -> io::Result<std::os::fd::OwnedFd> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?}: expected 1 to 15 bytes"),
        ));
    }
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and may write back the name into) the ifreq we pass by pointer,
    // which is live; the fd is the open tun device.
    if unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(tun.into())
}

/// `_exit(code)`: ends a forked child without running the parent's atexit handlers or destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// The mount-namespace operations the sandbox setup needs, behind a trait so the plan that drives
/// them can be checked without root (see [`RecordingSyscalls`]).
pub trait Syscalls {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: u64,
        data: Option<&str>,
    ) -> io::Result<()>;
    fn umount_detach(&self, target: &Path) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()>;
    fn create_file(&self, path: &Path) -> io::Result<()>;
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// `Some(true)` for a directory, `Some(false)` for anything else, `None` when missing.
    fn kind(&self, path: &Path) -> Option<bool>;
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinuxSyscalls;

impl Syscalls for LinuxSyscalls {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: u64,
        data: Option<&str>,
    ) -> io::Result<()> {
        let flags = nix::mount::MsFlags::from_bits_retain(flags as libc::c_ulong);
        nix::mount::mount(src, target, fstype, flags, data).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "mount {:?} on {} ({}): {e}",
                    src.unwrap_or(Path::new("none")),
                    target.display(),
                    fstype.unwrap_or("bind")
                ),
            )
        })
    }
    fn umount_detach(&self, target: &Path) -> io::Result<()> {
        nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| io::Error::other(format!("umount {}: {e}", target.display())))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
            .map_err(|e| io::Error::other(format!("pivot_root {}: {e}", new_root.display())))
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(mode).create(path)
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }
    fn kind(&self, path: &Path) -> Option<bool> {
        std::fs::symlink_metadata(path).ok().map(|m| m.is_dir())
    }
}

/// Records every call instead of making it; for unit tests of mount plans.
#[derive(Debug, Default)]
pub struct RecordingSyscalls {
    pub calls: Mutex<Vec<String>>,
}

impl RecordingSyscalls {
    fn record(&self, s: String) -> io::Result<()> {
        self.calls
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?
            .push(s);
        Ok(())
    }
    /// The calls so far, one line each.
    pub fn lines(&self) -> Vec<String> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Syscalls for RecordingSyscalls {
    fn mount(
        &self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: u64,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {} {} {} {flags:#x} {}",
            src.map(|p| p.display().to_string())
                .unwrap_or_else(|| "none".into()),
            target.display(),
            fstype.unwrap_or("-"),
            data.unwrap_or("-")
        ))
    }
    fn umount_detach(&self, target: &Path) -> io::Result<()> {
        self.record(format!("umount {}", target.display()))
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(format!("pivot_root {} {}", new_root.display(), put_old.display()))
    }
    fn mkdir_all(&self, path: &Path, mode: u32) -> io::Result<()> {
        self.record(format!("mkdir {} {mode:o}", path.display()))
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.record(format!("touch {}", path.display()))
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        self.record(format!("symlink {} {}", target.display(), link.display()))
    }
    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }
    /// Pretends paths without a dot in their last part are directories and all others files.
    fn kind(&self, path: &Path) -> Option<bool> {
        let last = path.file_name()?.to_string_lossy().into_owned();
        Some(
            !last.contains('.')
                && !["kcore", "keys", "timer_list", "sched_debug", "sysrq-trigger"].contains(&last.as_str()),
        )
    }
}

/// A C string from user-controlled text; NUL bytes are an error naming the text.
pub fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{s:?} contains a NUL byte")))
}
