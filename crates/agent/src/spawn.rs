//! Starting one exec's processes. The agent forks a *reaper* (a child subreaper), which forks the
//! command. Every descendant of the command, `setsid` or double-forked, stays below the reaper,
//! so killing "the exec" means killing the reaper's descendants. The reaper reports the command's
//! pid and wait status through a pipe, then kills whatever the command left behind and exits.
//!
//! Both children come from `fork` of the single-threaded agent, so they may allocate; the command
//! side ends in `execve` and reports a failure (which step, which errno) through a close-on-exec
//! pipe that stays empty when `execve` succeeds.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{dup2, Gid, Pid, Uid};
use stockade_core::{Error, ExecRequest, Result, TtySize};
use stockade_sys::{exit_now, Forked};

use crate::hardening::{self, Prepared};
use stockade_proto::users::Identity;
use stockade_proto::{AgentConfig, DEFAULT_PATH};

/// Everything the command's process needs, computed before the fork.
#[derive(Debug)]
pub struct SpawnPlan {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub identity: Identity,
    pub tty: Option<TtySize>,
    pub stdin: bool,
}

/// Which step failed in the child before `execve` took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Step {
    User = 1,
    Cwd = 2,
    Exec = 3,
    Stdio = 4,
    Hardening = 5,
}

/// Builds the plan: merges the environment, resolves the user and finds the program in `PATH`.
pub fn plan(config: &AgentConfig, req: &ExecRequest) -> Result<SpawnPlan> {
    req.validate()?;
    let user = req.user.as_deref().or(config.user.as_deref());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let identity = stockade_proto::users::resolve(user, &passwd, &group)?;
    let mut env = std::collections::BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    let home = match (&req.user, &config.home) {
        (None, Some(home)) => home.clone(),
        _ => identity.home.clone(),
    };
    env.insert("HOME".to_owned(), home);
    if req.tty.is_some() {
        env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    }
    env.extend(config.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.extend(req.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let cwd = req.cwd.clone().unwrap_or_else(|| config.workdir.clone());
    let program = find_program(
        &req.argv[0],
        env.get("PATH").map(String::as_str).unwrap_or(""),
        &cwd,
    )?;
    let c = |s: &str| stockade_sys::cstring(s).map_err(|e| Error::invalid("command", e.to_string()));
    Ok(SpawnPlan {
        program: c(&program)?,
        argv: req.argv.iter().map(|a| c(a)).collect::<Result<_>>()?,
        envp: env
            .iter()
            .map(|(k, v)| c(&format!("{k}={v}")))
            .collect::<Result<_>>()?,
        cwd: c(&cwd)?,
        identity,
        tty: req.tty,
        stdin: req.stdin,
    })
}

fn find_program(name: &str, path: &str, cwd: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        return Ok(name.to_owned());
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let dir = if dir.starts_with('/') {
            dir.to_owned()
        } else {
            format!("{cwd}/{dir}")
        };
        let candidate = std::path::Path::new(&dir).join(name);
        if executable(&candidate) {
            return Ok(candidate.to_string_lossy().into_owned());
        }
    }
    Err(Error::CommandNotFound(format!("{name}: not found in PATH")))
}

/// The parent's ends of a started exec.
#[derive(Debug)]
pub struct Spawned {
    /// Pid of the reaper (the exec's process tree is its descendants).
    pub reaper: Pid,
    /// Pid of the command.
    pub pid: u32,
    /// stdout, or the terminal's output in tty mode.
    pub stdout: OwnedFd,
    /// stderr (absent in tty mode).
    pub stderr: Option<OwnedFd>,
    /// stdin's write end, or the terminal master in tty mode.
    pub stdin: Option<OwnedFd>,
    /// Terminal master (tty mode), for resizing.
    pub pty: Option<OwnedFd>,
    /// Yields the command's raw wait status (4 bytes, little endian) when it ends.
    pub status: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::backend("pipe", e))
}

/// Forks the reaper and the command; returns once `execve` has succeeded, or with the error that
/// stopped it (command not found, bad workdir, bad user).
pub fn spawn(plan: &SpawnPlan, hardening: &Prepared) -> Result<Spawned> {
    let (err_r, err_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // (child side, parent side) per stream
    let (stdin_child, stdin_parent, stdout_child, stdout_parent, stderr_child, stderr_parent, pty) =
        if let Some(size) = plan.tty {
            let ws = nix::pty::Winsize {
                ws_row: size.rows,
                ws_col: size.cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&ws), None).map_err(|e| Error::backend("openpty", e))?;
            set_cloexec(&pty.master)?;
            set_cloexec(&pty.slave)?;
            let master_out = pty.master.try_clone().map_err(|e| Error::backend("dup", e))?;
            let master_in = pty.master.try_clone().map_err(|e| Error::backend("dup", e))?;
            (
                pty.slave,
                Some(master_in),
                None,
                master_out,
                None,
                None,
                Some(pty.master),
            )
        } else {
            let (in_child, in_parent) = if plan.stdin {
                let (r, w) = pipe()?;
                (r, Some(w))
            } else {
                let null =
                    std::fs::File::open("/dev/null").map_err(|e| Error::backend("open /dev/null", e))?;
                (OwnedFd::from(null), None)
            };
            let (out_r, out_w) = pipe()?;
            let (err_r2, err_w2) = pipe()?;
            (
                in_child,
                in_parent,
                Some(out_w),
                out_r,
                Some(err_w2),
                Some(err_r2),
                None,
            )
        };

    match stockade_sys::fork_single_threaded().map_err(|e| Error::backend("fork", e))? {
        Forked::Child => {
            let fds = ChildFds {
                stdin: stdin_child,
                stdout: stdout_child,
                stderr: stderr_child,
                err: err_w,
            };
            reaper_main(plan, hardening, fds, status_w)
        }
        Forked::Parent(reaper) => {
            drop((stdin_child, stdout_child, stderr_child, err_w, status_w));
            let mut report = Vec::new();
            let mut err_file = std::fs::File::from(err_r);
            let _ = std::io::Read::read_to_end(&mut err_file, &mut report);
            let mut status_file = std::fs::File::from(status_r);
            let mut pid_bytes = [0u8; 4];
            std::io::Read::read_exact(&mut status_file, &mut pid_bytes)
                .map_err(|e| Error::backend("exec reaper", format!("no pid reported: {e}")))?;
            if report.len() >= 8 {
                return Err(child_error(plan, &report));
            }
            Ok(Spawned {
                reaper,
                pid: u32::from_le_bytes(pid_bytes),
                stdout: stdout_parent,
                stderr: stderr_parent,
                stdin: stdin_parent,
                pty,
                status: OwnedFd::from(status_file),
            })
        }
    }
}

fn set_cloexec(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(drop)
        .map_err(|e| Error::backend("fcntl", e))
}

fn child_error(plan: &SpawnPlan, report: &[u8]) -> Error {
    let step = u32::from_le_bytes([report[0], report[1], report[2], report[3]]);
    let errno = nix::errno::Errno::from_raw(i32::from_le_bytes([report[4], report[5], report[6], report[7]]));
    let program = plan
        .argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    match step {
        s if s == Step::Cwd as u32 => Error::invalid(
            "workdir",
            format!("{}: {}", plan.cwd.to_string_lossy(), errno.desc()),
        ),
        s if s == Step::User as u32 => Error::invalid(
            "user",
            format!(
                "cannot switch to uid {} gid {}: {}",
                plan.identity.uid,
                plan.identity.gid,
                errno.desc()
            ),
        ),
        s if s == Step::Exec as u32 && errno == nix::errno::Errno::ENOENT => {
            Error::CommandNotFound(format!("{program}: no such file or directory"))
        }
        s if s == Step::Exec as u32 => Error::invalid("command", format!("{program}: {}", errno.desc())),
        s if s == Step::Hardening as u32 => Error::backend(
            format!("exec hardening ({})", String::from_utf8_lossy(&report[8..])),
            errno.desc(),
        ),
        _ => Error::backend("exec setup", errno.desc()),
    }
}

struct ChildFds {
    stdin: OwnedFd,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    err: OwnedFd,
}

/// The reaper: forks the command, waits for it, reports, cleans up the tree, exits.
fn reaper_main(plan: &SpawnPlan, hardening: &Prepared, fds: ChildFds, status_w: OwnedFd) -> ! {
    // Keep SIGPIPE ignored here: a host that went away must not kill the reaper mid-cleanup.
    let _ = stockade_sys::reset_signals(false);
    let _ = nix::sys::prctl::set_child_subreaper(true);
    // Before the command exists, so everything it starts is under the limits from its first step.
    if let Some(cgroup) = &hardening.exec_cgroup {
        if cgroup.join().is_err() {
            exit_now(126);
        }
    }
    let command = match stockade_sys::fork_single_threaded() {
        Ok(Forked::Child) => command_main(plan, hardening, fds),
        Ok(Forked::Parent(pid)) => pid,
        Err(_) => exit_now(126),
    };
    drop(fds);
    // Keep only the status pipe open.
    let status_fd = status_w.as_raw_fd();
    let _ = stockade_sys::close_range(3, status_fd - 1);
    let _ = stockade_sys::close_range(status_fd + 1, i32::MAX);
    let mut status = std::fs::File::from(status_w);
    let _ = status.write_all(&(command.as_raw() as u32).to_le_bytes());
    let me = nix::unistd::getpid().as_raw();
    let mut raw_status: Option<i32> = None;
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(ws) if ws.pid() == Some(command) => {
                raw_status = Some(encode_status(ws));
                crate::process_tree::kill_descendants(me, reap_nohang);
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break, // ECHILD: nothing left
        }
    }
    let _ = status.write_all(&raw_status.unwrap_or(encode_exit(255)).to_le_bytes());
    exit_now(0)
}

fn reap_nohang() {
    while let Ok(ws) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if ws == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Wait status in the kernel's encoding: exit code << 8, or the signal number.
fn encode_status(ws: WaitStatus) -> i32 {
    match ws {
        WaitStatus::Exited(_, code) => encode_exit(code),
        WaitStatus::Signaled(_, sig, _) => sig as i32,
        _ => encode_exit(255),
    }
}

fn encode_exit(code: i32) -> i32 {
    (code & 0xff) << 8
}

/// Decodes [`encode_status`]: (exit code, signal).
pub fn decode_status(raw: i32) -> (Option<i32>, Option<i32>) {
    if raw & 0x7f == 0 {
        (Some((raw >> 8) & 0xff), None)
    } else {
        (None, Some(raw & 0x7f))
    }
}

/// The command: session, stdio, user, cwd, then execve. Never returns.
fn command_main(plan: &SpawnPlan, hardening: &Prepared, fds: ChildFds) -> ! {
    let fail_with = |step: Step, errno: nix::errno::Errno, what: &str, err: &OwnedFd| -> ! {
        let mut report = Vec::with_capacity(8 + what.len());
        report.extend_from_slice(&(step as u32).to_le_bytes());
        report.extend_from_slice(&(errno as i32).to_le_bytes());
        report.extend_from_slice(what.as_bytes());
        let _ = nix::unistd::write(err, &report);
        exit_now(if step == Step::Exec && errno == nix::errno::Errno::ENOENT {
            127
        } else {
            126
        })
    };
    let fail = |step: Step, errno: nix::errno::Errno, err: &OwnedFd| -> ! { fail_with(step, errno, "", err) };
    let _ = nix::unistd::setsid();
    let stdio_result = (|| -> nix::Result<()> {
        if plan.tty.is_some() {
            stockade_sys::set_controlling_tty(fds.stdin.as_fd())
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
            for target in 0..3 {
                dup2(fds.stdin.as_raw_fd(), target)?;
            }
        } else {
            dup2(fds.stdin.as_raw_fd(), 0)?;
            if let Some(out) = &fds.stdout {
                dup2(out.as_raw_fd(), 1)?;
            }
            if let Some(err) = &fds.stderr {
                dup2(err.as_raw_fd(), 2)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = stdio_result {
        fail(Step::Stdio, e, &fds.err);
    }
    // Everything but stdio closes at execve, the error pipe included.
    let _ = stockade_sys::cloexec_from(3);
    if let Err((what, e)) = hardening::apply_privileged(hardening) {
        fail_with(Step::Hardening, e, what, &fds.err);
    }
    let id = &plan.identity;
    if Uid::current().as_raw() != id.uid || Gid::current().as_raw() != id.gid {
        let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        let switched = nix::unistd::setgroups(&groups)
            .and_then(|_| {
                nix::unistd::setresgid(
                    Gid::from_raw(id.gid),
                    Gid::from_raw(id.gid),
                    Gid::from_raw(id.gid),
                )
            })
            .and_then(|_| {
                nix::unistd::setresuid(
                    Uid::from_raw(id.uid),
                    Uid::from_raw(id.uid),
                    Uid::from_raw(id.uid),
                )
            });
        if let Err(e) = switched {
            fail(Step::User, e, &fds.err);
        }
    }
    if let Err(e) = nix::unistd::chdir(plan.cwd.as_c_str()) {
        fail(Step::Cwd, e, &fds.err);
    }
    if let Err((what, e)) = hardening::apply(hardening) {
        fail_with(Step::Hardening, e, what, &fds.err);
    }
    let _ = stockade_sys::reset_signals(true);
    let e = match nix::unistd::execve(&plan.program, &plan.argv, &plan.envp) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    fail(Step::Exec, e, &fds.err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codec() {
        assert_eq!(decode_status(encode_exit(3)), (Some(3), None));
        assert_eq!(decode_status(9), (None, Some(9)));
    }

    #[test]
    fn program_lookup() {
        assert_eq!(find_program("sh", "/nonexistent:/bin", "/").unwrap(), "/bin/sh");
        assert_eq!(find_program("./x", "/bin", "/").unwrap(), "./x");
        let e = find_program("no-such-cmd-xyz", "/bin:/usr/bin", "/").unwrap_err();
        assert_eq!(e.kind(), stockade_core::ErrorKind::CommandNotFound);
    }
}
