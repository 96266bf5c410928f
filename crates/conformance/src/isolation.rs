//! The isolation battery: what an attacker inside a sandbox would try, each case asserting the
//! specific outcome (an errno, an observable effect), not just a failure. Written against the
//! `Driver` API like the conformance suite, so every driver that claims isolation runs it.
//! The commands it runs need python3, bash, coreutils, util-linux and iproute2 inside.

use std::time::{Duration, Instant};

use stockade_core::{ExecRequest, NetworkMode, SandboxSpec, TtySize};

use crate::{text, Harness, Sandbox};

/// Stamps out the battery for one driver, like [`crate::conformance_suite!`].
#[macro_export]
macro_rules! isolation_suite {
    ($make:path) => {
        $crate::__with_cases!(__stamp!(isolation $make));
    };
}

fn spec_with(h: &dyn Harness, f: impl FnOnce(&mut SandboxSpec)) -> SandboxSpec {
    let mut spec = h.spec();
    f(&mut spec);
    spec
}

/// Runs a python3 program; returns stdout.
async fn py(sb: &Sandbox, program: &str) -> String {
    let out = sb.run(ExecRequest::new(["python3", "-c", program])).await;
    assert!(
        out.stderr.is_empty() || out.exit.code == Some(0),
        "python failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub async fn fork_bomb_stops_at_the_pids_limit(h: &dyn Harness) {
    let sb = Sandbox::with_spec(h, spec_with(h, |s| s.resources.pids = Some(64))).await;
    let program = r#"
import os, errno, time
n = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, errno.errorcode[e.errno])
"#;
    let out = sb.run(ExecRequest::new(["python3", "-c", program])).await;
    let s = text(&out.stdout);
    let mut words = s.split_whitespace();
    let forked: u32 = words.next().and_then(|n| n.parse().ok()).unwrap_or(u32::MAX);
    assert_eq!(words.next(), Some("EAGAIN"), "{s}");
    assert!(forked < 64, "forked {forked} processes past a limit of 64");
    // A real shell fork bomb: it stops, the host stays responsive, the timeout cleans it up.
    let d = std::sync::Arc::clone(&sb.driver);
    let id = sb.id.clone();
    let bomb = tokio::spawn(async move {
        let mut req = ExecRequest::new(["bash", "-c", "f() { f | f & }; f; sleep 100"]);
        req.timeout = Some(Duration::from_secs(4));
        d.exec(&id, req).await.unwrap().output().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let t = Instant::now();
        assert!(std::process::Command::new("true").status().unwrap().success());
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "the host stalled: {slowest:?} for fork+exec"
    );
    let out = bomb.await.unwrap();
    assert!(out.exit.timed_out);
    let left = sb.sh("ps -e --no-headers | wc -l").await;
    assert!(
        text(&left.stdout).trim().parse::<u32>().unwrap() < 8,
        "bomb survived: {}",
        text(&left.stdout)
    );
}

pub async fn memory_past_the_limit_is_oom_killed(h: &dyn Harness) {
    let sb = Sandbox::with_spec(h, spec_with(h, |s| s.resources.memory_bytes = Some(64 << 20))).await;
    let out = sb
        .run(ExecRequest::new([
            "python3",
            "-c",
            "x = bytearray(256 << 20); print('survived')",
        ]))
        .await;
    assert!(out.exit.oom, "{:?}", out.exit);
    assert_eq!(out.exit.signal, Some(9));
    assert!(!text(&out.stdout).contains("survived"));
    // The sandbox itself is fine afterwards.
    assert_eq!(sb.sh("echo alive").await.stdout, b"alive\n");
}

pub async fn file_past_the_size_limit_fails_with_efbig(h: &dyn Harness) {
    let sb = Sandbox::with_spec(h, spec_with(h, |s| s.resources.file_size_bytes = Some(1 << 20))).await;
    let program = r#"
import signal, errno
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
f = open('/workspace/big', 'wb')
try:
    f.write(b'x' * (2 << 20)); f.flush()
    print('wrote')
except OSError as e:
    print(errno.errorcode[e.errno])
"#;
    assert_eq!(py(&sb, program).await.trim(), "EFBIG");
    // Without ignoring SIGXFSZ the writer is killed by it.
    let out = sb.sh("exec head -c 2000000 /dev/zero > /workspace/big2").await;
    assert_eq!(out.exit.signal, Some(libc::SIGXFSZ), "{:?}", out.exit);
}

pub async fn writes_past_the_disk_limit_fail_with_enospc(h: &dyn Harness) {
    let sb = Sandbox::with_spec(h, spec_with(h, |s| s.resources.disk_bytes = Some(32 << 20))).await;
    let program = r#"
import errno
for path in ['/workspace/fill', '/root/fill', '/tmp/fill']:
    written = 0
    try:
        with open(path, 'wb') as f:
            while True:
                f.write(b'x' * (1 << 20)); f.flush(); written += 1
    except OSError as e:
        print(path, errno.errorcode[e.errno], written <= 33)
"#;
    assert_eq!(
        py(&sb, program).await,
        "/workspace/fill ENOSPC True\n/root/fill ENOSPC True\n/tmp/fill ENOSPC True\n"
    );
    // What was written before stays, and the sandbox still works after a stop and start.
    sb.sh("rm /workspace/fill /root/fill; echo kept > /workspace/k")
        .await;
    sb.driver.stop(&sb.id).await.unwrap();
    sb.driver.start(&sb.id).await.unwrap();
    assert_eq!(sb.sh("cat /workspace/k").await.stdout, b"kept\n");
}

pub async fn spinning_tree_with_setsid_child_is_gone_after_timeout(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let mut req = ExecRequest::new([
        "sh",
        "-c",
        "setsid sh -c 'while :; do :; done' & while :; do :; done",
    ]);
    req.timeout = Some(Duration::from_secs(1));
    let out = sb.run(req).await;
    assert!(out.exit.timed_out);
    let ps = sb
        .sh("ps -eo args --no-headers | grep -c '[w]hile :' || true")
        .await;
    assert_eq!(text(&ps.stdout).trim(), "0", "spinners left");
}

pub async fn fd_exhaustion_hits_the_limit(h: &dyn Harness) {
    let sb = Sandbox::with_spec(h, spec_with(h, |s| s.resources.open_files = Some(64))).await;
    let program = r#"
import errno
fs = []
try:
    while True:
        fs.append(open('/dev/null'))
except OSError as e:
    print(len(fs), errno.errorcode[e.errno])
"#;
    let s = py(&sb, program).await;
    let mut w = s.split_whitespace();
    let n: u32 = w.next().unwrap().parse().unwrap();
    assert_eq!(w.next(), Some("EMFILE"));
    assert!(n <= 64, "{n} files open past a limit of 64");
    assert_eq!(text(&sb.sh("ulimit -n").await.stdout).trim(), "64");
}

pub async fn kernel_paths_are_masked_or_read_only(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    // Masked files read as empty; masked directories cannot be listed or are empty.
    for file in [
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/kcore",
    ] {
        if std::path::Path::new(file).exists() {
            let out = sb.run(ExecRequest::new(["cat", file])).await;
            assert!(out.stdout.is_empty(), "{file} is readable inside");
        }
    }
    for dir in ["/sys/firmware", "/proc/acpi", "/proc/scsi"] {
        if std::path::Path::new(dir).exists() {
            let out = sb.sh(&format!("ls -A {dir} 2>/dev/null | wc -l")).await;
            assert_eq!(text(&out.stdout).trim(), "0", "{dir} shows contents inside");
        }
    }
    // Read-only: no write lands. The hostname is the sandbox's own (its UTS namespace), so root
    // there could change it through a writable /proc/sys: the refusal must come from the mount
    // (EROFS) or, under a kernel that emulates /proc (gVisor), from that kernel (EACCES), and the
    // hostname must read back unchanged.
    let program = r#"
import errno, socket
before = socket.gethostname()
for p in ['/proc/sys/kernel/hostname', '/proc/sys/vm/drop_caches', '/proc/sysrq-trigger']:
    try:
        open(p, 'w').write('1')
        print(p, 'written')
    except FileNotFoundError:
        pass
    except OSError as e:
        print(p, errno.errorcode[e.errno])
print('hostname', 'unchanged' if socket.gethostname() == before else 'changed')
"#;
    let s = py(&sb, program).await;
    assert!(
        s.contains("/proc/sys/kernel/hostname EROFS") || s.contains("/proc/sys/kernel/hostname EACCES"),
        "{s}"
    );
    assert!(s.contains("hostname unchanged"), "{s}");
    assert!(!s.contains("written"), "{s}");
    // No host devices beyond the minimal set.
    let devs = text(&sb.sh("ls /dev | sort | tr '\\n' ' '").await.stdout);
    for forbidden in ["sda", "vda", "mem", "kmsg", "port", "nvme0", "kvm", "fuse"] {
        assert!(
            !devs.split(' ').any(|d| d == forbidden),
            "/dev/{forbidden} is visible: {devs}"
        );
    }
}

pub async fn host_pids_are_invisible_and_unkillable(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let out = sb.sh("ps -e --no-headers | wc -l; cat /proc/1/comm").await;
    let s = text(&out.stdout);
    let count: u32 = s.lines().next().unwrap().trim().parse().unwrap();
    assert!(count < 10, "{count} processes visible: the host's are showing");
    let host_pid = std::process::id();
    let program = format!(
        "import os, errno\ntry:\n    os.kill({host_pid}, 9)\n    print('killed')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])"
    );
    assert_eq!(py(&sb, &program).await.trim(), "ESRCH");
}

pub async fn ptrace_fails(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let program = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
pid = os.fork()
if pid == 0:
    import time; time.sleep(5); os._exit(0)
for req, target in [(0, 0), (16, pid), (16, 1)]:   # TRACEME, ATTACH child, ATTACH pid 1
    r = libc.ptrace(req, target, 0, 0)
    print(r, errno.errorcode.get(ctypes.get_errno()))
os.kill(pid, 9)
"#;
    assert_eq!(py(&sb, program).await, "-1 EPERM\n-1 EPERM\n-1 EPERM\n");
    // process_vm_readv on pid 1 too
    let program = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall(310, 1, 0, 0, 0, 0, 0), errno.errorcode.get(ctypes.get_errno()))
"#;
    assert_eq!(py(&sb, program).await, "-1 EPERM\n");
}

pub async fn mount_unshare_and_pivot_root_fail(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    // The tools fail (their messages differ between kernels; what counts is that nothing got
    // mounted), then each syscall is refused by the kernel itself.
    let out = sb
        .sh("mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo $?; grep -c ' /tmp/m ' /proc/self/mounts")
        .await;
    let s = text(&out.stdout);
    let mut lines = s.lines();
    assert_ne!(lines.next(), Some("0"), "mount succeeded: {}", text(&out.stderr));
    assert_eq!(lines.next(), Some("0"), "/tmp/m is mounted");
    let out = sb.run(ExecRequest::new(["unshare", "-Urm", "true"])).await;
    assert_ne!(out.exit.code, Some(0), "unshare -Urm succeeded");
    let program = r#"
import ctypes, errno
libc = ctypes.CDLL(None, use_errno=True)
for name, nr, args in [('mount', 165, (b'none', b'/tmp/m', b'tmpfs', 0, None)), ('pivot_root', 155, (b'/tmp', b'/tmp')), ('unshare', 272, (0x10000000,)), ('setns', 308, (0, 0)), ('umount2', 166, (b'/proc', 2))]:
    r = libc.syscall(nr, *args)
    print(name, r, errno.errorcode.get(ctypes.get_errno()))
"#;
    assert_eq!(
        py(&sb, program).await,
        "mount -1 EPERM\npivot_root -1 EPERM\nunshare -1 EPERM\nsetns -1 EPERM\numount2 -1 EPERM\n"
    );
}

pub async fn mknod_fails(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let program = r#"
import os, errno, stat
for path in ['/tmp/null', '/workspace/null']:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        print('made')
    except OSError as e:
        print(errno.errorcode[e.errno])
"#;
    assert_eq!(py(&sb, program).await, "EPERM\nEPERM\n");
}

pub async fn landlock_confines_writes(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let program = r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
print(libc.syscall(444, None, 0, 1))
for path in ['/landlock-probe', '/dev/landlock-probe', '/etc/landlock-probe', '/var/tmp/landlock-probe', '/workspace/ok', '/root/ok', '/tmp/ok', '/dev/shm/ok']:
    try:
        open(path, 'w').close(); print(path, 'ok')
    except OSError as e:
        print(path, errno.errorcode[e.errno])
"#;
    let s = py(&sb, program).await;
    let abi: i64 = s.lines().next().unwrap_or("-1").trim().parse().unwrap_or(-1);
    if abi <= 0 {
        eprintln!(
            "SKIPPED: this kernel has no landlock (stockade info says so); DAC and seccomp still apply"
        );
        return;
    }
    // "/" and "/dev" belong to the sandbox's root, so only landlock stops these (a read-only root,
    // as the docker driver mounts it, says EROFS first).
    assert!(
        s.contains("\n/landlock-probe EACCES") || s.contains("\n/landlock-probe EROFS"),
        "{s}"
    );
    assert!(s.contains("/dev/landlock-probe EACCES"), "{s}");
    assert!(
        !s.contains("/etc/landlock-probe ok") && !s.contains("/var/tmp/landlock-probe ok"),
        "{s}"
    );
    for ok in ["/workspace/ok ok", "/root/ok ok", "/tmp/ok ok", "/dev/shm/ok ok"] {
        assert!(s.contains(ok), "{ok} missing in {s}");
    }
}

pub async fn no_capabilities_and_no_network_admin(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let status = text(
        &sb.sh("grep -E '^Cap(Eff|Prm|Bnd|Amb|Inh)' /proc/self/status")
            .await
            .stdout,
    );
    for line in status.lines() {
        assert!(line.ends_with("0000000000000000"), "{line}");
    }
    // Every set the kernel reports is empty; the effective, permitted and bounding sets are
    // always reported (gVisor's 2022 release has no CapAmb line).
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:"] {
        assert!(status.lines().any(|l| l.starts_with(set)), "no {set} in {status}");
    }
    let out = sb
        .run(ExecRequest::new(["ip", "link", "add", "dummy0", "type", "dummy"]))
        .await;
    // Refused by the kernel: EPERM from Linux, EACCES ("Permission denied") from gVisor.
    let refused =
        |stderr: &str| stderr.contains("Operation not permitted") || stderr.contains("Permission denied");
    assert_ne!(out.exit.code, Some(0));
    assert!(refused(&text(&out.stderr)), "{}", text(&out.stderr));
    let out = sb.sh("chown 1234 /workspace; echo $?").await;
    assert!(refused(&text(&out.stderr)), "{}", text(&out.stderr));
    assert_ne!(text(&out.stdout).trim(), "0", "chown succeeded");
}

pub async fn setuid_binaries_give_no_privilege(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    // no_new_privs as prctl(2) reads it (gVisor's 2022 release has no NoNewPrivs line in
    // /proc/self/status, but answers the prctl).
    let program = r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.prctl(39, 0, 0, 0, 0))   # PR_GET_NO_NEW_PRIVS
"#;
    assert_eq!(py(&sb, program).await, "1\n");
    // A setuid-root copy of `id`, run by an ordinary user, still runs as that user.
    let out = sb.sh("cp /usr/bin/id /workspace/suid-id && chmod 4755 /workspace/suid-id && python3 -c 'import os, stat; print(stat.filemode(os.stat(\"/workspace/suid-id\").st_mode))'").await;
    assert_eq!(text(&out.stdout), "-rwsr-xr-x\n", "{}", text(&out.stderr));
    let mut req = ExecRequest::new(["/workspace/suid-id", "-u"]);
    req.user = Some("1000".into());
    let out = sb.run(req).await;
    assert_eq!(text(&out.stdout), "1000\n", "{}", text(&out.stderr));
    // Host setuid binaries give nothing either.
    let mut req = ExecRequest::new(["sh", "-c", "su -c id root </dev/null; echo $?"]);
    req.user = Some("1000".into());
    let out = sb.run(req).await;
    assert!(!text(&out.stdout).contains("uid=0"), "{}", text(&out.stdout));
}

pub async fn network_none_has_only_loopback(h: &dyn Harness) {
    let sb = Sandbox::with_spec(h, spec_with(h, |s| s.network = NetworkMode::None)).await;
    let links = text(&sb.sh("ip -o link | awk -F': ' '{print $2}'").await.stdout);
    assert_eq!(links, "lo\n");
    let program = r#"
import socket, errno
for addr in [('1.1.1.1', 80), ('10.200.0.1', 80)]:
    try:
        socket.create_connection(addr, timeout=3); print('connected')
    except OSError as e:
        print(errno.errorcode.get(e.errno, e))
try:
    socket.getaddrinfo('deb.debian.org', 80); print('resolved')
except socket.gaierror as e:
    print('gaierror')
"#;
    // No route: Linux says ENETUNREACH, gVisor EHOSTUNREACH.
    let s = py(&sb, program).await.replace("EHOSTUNREACH", "ENETUNREACH");
    assert_eq!(s, "ENETUNREACH\nENETUNREACH\ngaierror\n");
    let out = sb
        .run(ExecRequest::new(["curl", "-sS", "-m", "3", "http://1.1.1.1/"]))
        .await;
    assert_eq!(out.exit.code, Some(7), "curl: {}", text(&out.stderr));
    let out = sb
        .run(ExecRequest::new(["bash", "-c", "echo > /dev/tcp/1.1.1.1/80"]))
        .await;
    assert!(
        text(&out.stderr).contains("Network is unreachable")
            || text(&out.stderr).contains("No route to host"),
        "{}",
        text(&out.stderr)
    );
    let out = sb
        .run(ExecRequest::new(["ping", "-c", "1", "-W", "1", "1.1.1.1"]))
        .await;
    assert_ne!(out.exit.code, Some(0));
    assert!(
        text(&out.stderr).contains("unreachable")
            || text(&out.stderr).contains("not permitted")
            || text(&out.stderr).contains("No route to host"),
        "{}",
        text(&out.stderr)
    );
}

pub async fn host_loopback_services_are_unreachable(h: &dyn Harness) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let any = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let any_port = any.local_addr().unwrap().port();
    let host_ip = String::from_utf8(
        std::process::Command::new("sh")
            .args([
                "-c",
                "ip -4 route get 1.1.1.1 | grep -o 'src [0-9.]*' | cut -d' ' -f2",
            ])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let host_ip = host_ip.trim().to_owned();
    for network in [NetworkMode::None, NetworkMode::Full] {
        let sb = Sandbox::with_spec(h, spec_with(h, |s| s.network = network)).await;
        let program = format!(
            r#"
import socket, errno
for addr in [('127.0.0.1', {port}), ('{host_ip}', {any_port})]:
    try:
        socket.create_connection(addr, timeout=3); print('connected')
    except OSError as e:
        print(errno.errorcode.get(e.errno, 'timeout'))
"#
        );
        let s = py(&sb, &program).await;
        assert!(!s.contains("connected"), "{network}: {s}");
        let first = s.lines().next().unwrap_or_default();
        assert_eq!(
            first, "ECONNREFUSED",
            "{network}: the sandbox's 127.0.0.1 is its own"
        );
    }
}

pub async fn vsock_and_io_uring_are_denied(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let program = r#"
import socket, ctypes, errno
try:
    socket.socket(40, socket.SOCK_STREAM); print('vsock')
except OSError as e:
    print(errno.errorcode[e.errno])
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
print(libc.syscall(425, 8, params), errno.errorcode.get(ctypes.get_errno()))
print(libc.syscall(323, 0), errno.errorcode.get(ctypes.get_errno()))
print(libc.syscall(321, 0, 0, 0), errno.errorcode.get(ctypes.get_errno()))
"#;
    // AF_VSOCK; io_uring_setup; userfaultfd; bpf
    assert_eq!(py(&sb, program).await, "EPERM\n-1 EPERM\n-1 EPERM\n-1 EPERM\n");
}

pub async fn tiocsti_is_denied(h: &dyn Harness) {
    let sb = Sandbox::new(h).await;
    let mut req = ExecRequest::new([
        "python3",
        "-c",
        "import fcntl, termios, errno\ntry:\n    fcntl.ioctl(0, termios.TIOCSTI, b'x'); print('injected')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])",
    ]);
    req.tty = Some(TtySize::default());
    let out = sb.run(req).await;
    assert_eq!(text(&out.stdout).trim(), "EPERM");
}

pub async fn host_environment_is_invisible(h: &dyn Harness) {
    std::env::set_var("STOCKADE_PLANTED_SECRET", "correct-horse-battery-staple");
    let sb = Sandbox::new(h).await;
    let out = sb
        .sh("env; cat /proc/1/environ | tr '\\0' '\\n'; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
        .await;
    assert!(
        !text(&out.stdout).contains("correct-horse"),
        "the host's environment leaked"
    );
    let env = text(&sb.run(ExecRequest::new(["env"])).await.stdout);
    let keys: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert_eq!(keys, ["HOME", "PATH"], "{env}");
    // No descriptors beyond stdio leak from the agent into commands (3 is the listing's own).
    let fds = py(
        &sb,
        "import os; print(' '.join(sorted(os.listdir('/proc/self/fd'), key=int)))",
    )
    .await;
    assert_eq!(fds, "0 1 2 3\n", "fds: {fds}");
}

pub async fn sandboxes_cannot_see_each_other(h: &dyn Harness) {
    let a = Sandbox::new(h).await;
    let b = Sandbox::new(h).await;
    let d = std::sync::Arc::clone(&a.driver);
    let id = a.id.clone();
    // System V IPC objects under fixed keys, looked up by key with shmget/msgget (what a program
    // would do), not through /proc/sysvipc, which gVisor's 2022 release does not fill.
    let holder = tokio::spawn(async move {
        let req = ExecRequest::new([
            "sh",
            "-c",
            "echo a-secret > /dev/shm/a-shm; echo a-secret > /workspace/a-file; echo a-secret > /tmp/a-tmp; \
             python3 -c \"import ctypes; l = ctypes.CDLL(None); assert l.shmget(0x53544b44, 4096, 0o1600) >= 0; assert l.msgget(0x53544b45, 0o1600) >= 0\" && echo ready; exec sleep 30",
        ]);
        let mut req = req;
        req.timeout = Some(Duration::from_secs(20));
        d.exec(&id, req).await.unwrap().output().await
    });
    let lookup = r#"
import ctypes, errno
l = ctypes.CDLL(None, use_errno=True)
for name, r in [('shm', l.shmget(0x53544b44, 0, 0)), ('msg', l.msgget(0x53544b45, 0))]:
    print(name, 'found' if r >= 0 else errno.errorcode.get(ctypes.get_errno()))
"#;
    // Wait until a's processes are in place.
    for _ in 0..100 {
        if a.sh("ls /dev/shm").await.stdout == b"a-shm\n" && py(&a, lookup).await == "shm found\nmsg found\n"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = b
        .sh("ps -eo args --no-headers | grep -c '[s]leep 30'; ls -A /dev/shm /tmp | grep -c a- ; grep -rl a-secret /workspace /tmp /dev/shm 2>/dev/null | wc -l")
        .await;
    assert_eq!(
        text(&out.stdout).split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"],
        "{}",
        text(&out.stderr)
    );
    assert_eq!(py(&b, lookup).await, "shm ENOENT\nmsg ENOENT\n");
    // ...while a itself sees them.
    assert_eq!(py(&a, lookup).await, "shm found\nmsg found\n");
    assert_eq!(text(&a.sh("cat /dev/shm/a-shm").await.stdout), "a-secret\n");
    drop(b);
    holder.abort();
}

pub async fn destroy_leaves_nothing_behind(h: &dyn Harness) {
    let driver = h.driver();
    let info = driver
        .create(spec_with(h, |s| s.resources.memory_bytes = Some(128 << 20)))
        .await
        .unwrap();
    let out = driver
        .exec(
            &info.id,
            ExecRequest::new([
                "sh",
                "-c",
                "setsid sleep 1000 & sleep 1000 & echo x > /dev/shm/y; echo started",
            ]),
        )
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(out.stdout, b"started\n");
    let before = h.leftovers(&info.id);
    assert!(
        !before.is_empty(),
        "the harness sees nothing of a live sandbox; its leftover check would prove nothing"
    );
    driver.destroy(&info.id).await.unwrap();
    let gone = driver.get(info.id.as_str()).await.err().map(|e| e.kind());
    assert_eq!(gone, Some(stockade_core::ErrorKind::NotFound));
    assert_eq!(h.leftovers(&info.id), Vec::<String>::new());
}
