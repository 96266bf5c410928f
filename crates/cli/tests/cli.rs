//! The `stockade` command as a user runs it: exit codes, output, errors, and that `rm` leaves
//! nothing behind. Needs user namespaces (root in CI).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Home {
    dir: PathBuf,
}

impl Home {
    fn new() -> Option<Home> {
        if let Err(why) = stockade_native::driver::user_namespaces_available() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but the native driver cannot run here: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "stockade-cli-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        Some(Home { dir })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stockade"));
        c.args(args).env("STOCKADE_HOME", &self.dir).stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let ids = self.run(&["ls", "-q"]);
        for id in String::from_utf8_lossy(&ids.stdout).lines() {
            let _ = self.run(&["rm", "-f", id]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn run_prints_hello_and_exits_with_the_command_code() {
    let Some(home) = Home::new() else { return };
    let out = home.run(&["run", "--", "sh", "-c", "echo hello; exit 3"]);
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // run destroys what it made
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
}

#[test]
fn create_then_exec_from_another_process_then_rm_leaves_nothing() {
    let Some(home) = Home::new() else { return };
    let out = home.run(&["create", "--name", "keeper", "--memory", "256m", "--pids", "100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id.len(), 12);

    let out = home.run(&["exec", &id, "--", "cat", "/proc/1/cmdline"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out) == "stockade-agent\0supervise\0",
        "{:?}",
        stdout(&out)
    );
    // by name too
    assert_eq!(
        stdout(&home.run(&["exec", "keeper", "--", "hostname"])),
        "keeper\n"
    );

    let inspect: serde_json::Value = serde_json::from_slice(&home.run(&["inspect", &id]).stdout).unwrap();
    assert_eq!(inspect["status"], "running");
    let d = &inspect["details"];
    let pids = [
        d["init_pid"].as_i64().unwrap() as i32,
        d["supervisor_pid"].as_i64().unwrap() as i32,
    ];
    let cgroups: Vec<PathBuf> = d["cgroup_dirs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().into())
        .collect();
    let sandbox_dir = Path::new(d["upper_dir"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let socket = PathBuf::from(d["socket"].as_str().unwrap());
    assert!(!cgroups.is_empty(), "limits need cgroups: {d}");
    assert!(cgroups.iter().all(|c| c.exists()));
    assert!(sandbox_dir.exists() && socket.exists());
    assert!(pids.iter().all(|p| Path::new(&format!("/proc/{p}")).exists()));

    let out = home.run(&["rm", &id]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "rm without -f refuses a running sandbox: {}",
        stderr(&out)
    );
    let out = home.run(&["rm", "-f", &id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // processes: gone (a zombie waiting for the host's init to reap it is not running)
    for pid in pids {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = !state.is_empty()
            && !state
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z');
        assert!(!running, "pid {pid} still runs: {state}");
    }
    // cgroups, files, socket: gone
    for c in &cgroups {
        assert!(!c.exists(), "{} left behind", c.display());
    }
    assert!(!sandbox_dir.exists(), "{} left behind", sandbox_dir.display());
    assert!(!socket.exists());
    assert!(!home.dir.join("records").join(format!("{id}.json")).exists());
    assert!(!home.dir.join("run").join(format!("{id}.log")).exists());
    // mounts: none anywhere on the host that mention the sandbox
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(mi) = std::fs::read_to_string(entry.path().join("mountinfo")) {
            assert!(
                !mi.contains(&id),
                "a mount of {id} is left in {}",
                entry.path().display()
            );
        }
    }
    // and no process anywhere mentions it
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmd).contains(&id),
                "process {} left",
                entry.path().display()
            );
        }
    }
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
}

#[test]
fn ls_json_and_stop_start() {
    let Some(home) = Home::new() else { return };
    let id = stdout(&home.run(&["create", "--name", "lister", "-l", "team=a"]))
        .trim()
        .to_owned();
    let list: serde_json::Value = serde_json::from_slice(&home.run(&["ls", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["spec"]["labels"]["team"], "a");
    let table = stdout(&home.run(&["ls"]));
    assert!(table.lines().nth(1).unwrap().contains("running"), "{table}");
    let inspect: serde_json::Value =
        serde_json::from_slice(&home.run(&["inspect", "lister"]).stdout).unwrap();
    let init = inspect["details"]["init_pid"].as_i64().unwrap();
    assert!(home.run(&["stop", "lister"]).status.success());
    assert!(stdout(&home.run(&["ls"])).contains("stopped"));
    // Stopped means no process and no cgroup, but the files stay.
    let state = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z"),
        "pid 1 still runs after stop: {state}"
    );
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/stockade/{id}")).exists());
    assert!(home.dir.join("sandboxes").join(&id).exists());
    let out = home.run(&["exec", "lister", "--", "true"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("is stopped"), "{}", stderr(&out));
    assert!(home.run(&["start", "lister"]).status.success());
    assert!(home.run(&["exec", "lister", "--", "true"]).status.success());
    let stats: serde_json::Value =
        serde_json::from_slice(&home.run(&["stats", "lister", "--json"]).stdout).unwrap();
    assert!(stats["pids"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn lost_supervisor_shows_as_lost_and_rm_cleans_up() {
    let Some(home) = Home::new() else { return };
    let id = stdout(&home.run(&["create"])).trim().to_owned();
    let inspect: serde_json::Value = serde_json::from_slice(&home.run(&["inspect", &id]).stdout).unwrap();
    let sup = inspect["details"]["supervisor_pid"].as_i64().unwrap() as i32;
    let init = inspect["details"]["init_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(sup), nix::sys::signal::SIGKILL).unwrap();
    // pid 1 dies with its supervisor (parent-death signal)
    let mut init_died = false;
    for _ in 0..200 {
        let alive = std::fs::read_to_string(format!("/proc/{init}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false);
        if !alive {
            init_died = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(init_died, "the sandbox's pid 1 outlived its supervisor");
    let table = stdout(&home.run(&["ls"]));
    assert!(table.contains("lost"), "{table}");
    let out = home.run(&["exec", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        home.run(&["rm", &id]).status.success(),
        "a lost sandbox can be removed without -f"
    );
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
}

#[test]
fn cp_both_ways_and_shell_exec_flags() {
    let Some(home) = Home::new() else { return };
    let id = stdout(&home.run(&["create"])).trim().to_owned();
    let tmp = home.dir.with_extension("files");
    std::fs::create_dir_all(tmp.join("tree/sub")).unwrap();
    std::fs::write(tmp.join("tree/sub/f.bin"), [0u8, 1, 2, 255]).unwrap();
    let out = home.run(&[
        "cp",
        tmp.join("tree").to_str().unwrap(),
        &format!("{id}:/workspace"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = home.run(&[
        "exec",
        "-w",
        "/workspace/tree",
        "-e",
        "X=1",
        &id,
        "--",
        "sh",
        "-c",
        "od -An -tu1 sub/f.bin; pwd; echo $X",
    ]);
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "255", "/workspace/tree", "1"]
    );
    let back = tmp.join("back");
    let out = home.run(&["cp", &format!("{id}:/workspace/tree"), back.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(back.join("sub/f.bin")).unwrap(), [0u8, 1, 2, 255]);
    // stdin with -i
    let mut child = home
        .cmd(&["exec", "-i", &id, "--", "tr", "a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    assert_eq!(stdout(&child.wait_with_output().unwrap()), "SHOUT\n");
    // timeout exit code
    let out = home.run(&["exec", "--timeout", "300ms", &id, "--", "sleep", "10"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    // --json events
    let out = home.run(&["exec", "--json", &id, "--", "sh", "-c", "echo a; echo b >&2"]);
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.first().unwrap()["type"], "started");
    assert_eq!(events.last().unwrap()["type"], "exited");
    assert!(events
        .iter()
        .any(|e| e["stream"] == "stderr" && e["text"] == "b\n"));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// (args, exit code, what the one-line message must contain)
const BAD_INPUT: &[(&[&str], i32, &str)] = &[
    (
        &["create", "--memory", "lots"],
        2,
        "invalid memory: \"lots\" is not a size",
    ),
    (
        &["create", "--network", "bogus"],
        2,
        "invalid network: \"bogus\": expected \"none\" or \"full\"",
    ),
    (&["create", "--cpus", "0"], 2, "invalid cpus"),
    (&["create", "--pids", "many"], 2, "invalid pids"),
    (&["create", "--ttl", "soon"], 2, "invalid ttl"),
    (&["create", "-v", "relative:/x"], 2, "invalid volume"),
    (&["create", "-v", "/definitely/not/here:/x"], 2, "invalid volume"),
    (
        &["create", "-e", "NOVALUE"],
        2,
        "invalid env: \"NOVALUE\": expected KEY=VALUE",
    ),
    (&["create", "--name", "bad/name"], 2, "invalid name"),
    (
        &["create", "--rootfs", "/definitely/not/here"],
        2,
        "invalid rootfs",
    ),
    (
        &["create", "--driver", "warp"],
        2,
        "invalid driver: \"warp\" is not a driver; known drivers: native, docker, podman, microvm, e2b",
    ),
    (
        &["create", "--disk", "lots"],
        2,
        "invalid disk: \"lots\" is not a size",
    ),
    (
        &["exec", "no-such-sandbox", "--", "true"],
        3,
        "no such sandbox: no-such-sandbox",
    ),
    (
        &["inspect", "no-such-sandbox"],
        3,
        "no such sandbox: no-such-sandbox",
    ),
    (&["rm", "no-such-sandbox"], 3, "no such sandbox: no-such-sandbox"),
    (
        &["cp", "/etc/hostname", "/tmp/x"],
        2,
        "one side must be SANDBOX:/absolute/path",
    ),
];

#[test]
fn bad_input_gets_one_line_errors_and_documented_codes() {
    let Some(home) = Home::new() else { return };
    for (args, code, message) in BAD_INPUT {
        let out = home.run(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {err:?} lacks {message:?}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err:?}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Nothing was created by any of them.
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
    // Command not found inside, and a missing workdir, inside a real sandbox.
    let id = stdout(&home.run(&["create"])).trim().to_owned();
    let out = home.run(&["exec", &id, "--", "no-such-command-xyz"]);
    assert_eq!(out.status.code(), Some(127));
    assert_eq!(
        stderr(&out),
        "stockade: command not found in sandbox: no-such-command-xyz: not found in PATH\n"
    );
    let out = home.run(&["exec", &id, "--", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "stockade: invalid command: /etc/passwd: Permission denied\n"
    );
    let out = home.run(&["exec", "-w", "/nope", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid workdir: /nope"),
        "{}",
        stderr(&out)
    );
    let out = home.run(&["create", "--name", "twin"]);
    assert!(out.status.success());
    let out = home.run(&["create", "--name", "twin"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("a sandbox named \"twin\" already exists"));
}

#[test]
fn a_home_overlayfs_cannot_use_is_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["ls"])
        .env("STOCKADE_HOME", "/tmp/a,b")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "stockade: invalid STOCKADE_HOME: /tmp/a,b: overlayfs cannot take ',' or ':' in a path\n"
    );
    assert!(
        !Path::new("/tmp/a,b").exists(),
        "nothing is created for a refused home"
    );
}

#[test]
fn host_without_user_namespaces_gets_a_clear_error() {
    let Some(home) = Home::new() else { return };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to make a user namespace with user namespaces switched off");
        return;
    }
    // Inside a user namespace whose max_user_namespaces is 0, no further user namespace can be made:
    // to stockade this is a host without user namespaces.
    let script = format!(
        "echo 0 > /proc/sys/user/max_user_namespaces && STOCKADE_HOME={} exec {} run -- true",
        home.dir.display(),
        env!("CARGO_BIN_EXE_stockade")
    );
    let out = Command::new("unshare")
        .args(["-Ur", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "stockade: sandboxes is not supported by the native driver: user namespaces are disabled on this host (/proc/sys/user/max_user_namespaces is 0)\n"
    );
}

#[test]
fn info_reports_the_host() {
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["info", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["drivers"][0]["facts"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n == "user"));
    assert!(["v1", "v2", "none"].contains(&v["drivers"][0]["facts"]["cgroup"].as_str().unwrap()));
    assert_eq!(v["drivers"][0]["name"], "native");
}

#[test]
fn network_full_resolves_through_the_host_resolver() {
    let Some(home) = Home::new() else { return };
    let host = Command::new("getent")
        .args(["hosts", "deb.debian.org"])
        .output()
        .unwrap();
    if !host.status.success() {
        let why = "the host itself cannot resolve deb.debian.org, so there is no resolver to go through";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: {why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let out = home.run(&[
        "run",
        "--network",
        "full",
        "--",
        "getent",
        "hosts",
        "deb.debian.org",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deb.debian.org"), "{}", stdout(&out));
    // and with no network, it cannot
    let out = home.run(&["run", "--", "getent", "hosts", "deb.debian.org"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "getent exits 2 when a key is not found: {}",
        stdout(&out)
    );
}

#[test]
fn ttl_destroys_the_sandbox_and_everything_it_made() {
    let Some(home) = Home::new() else { return };
    // Long enough that the exec below lands before expiry on a loaded CI machine
    // (1 s failed there once), short enough to keep the test quick.
    let out = home.run(&["create", "--ttl", "4s", "--name", "brief"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    let out = home.run(&["exec", "brief", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for _ in 0..200 {
        if stdout(&home.run(&["ls", "-q"])).is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        stdout(&home.run(&["ls", "-q"])),
        "",
        "the ttl did not remove the sandbox"
    );
    assert!(!home.dir.join("sandboxes").join(&id).exists());
    assert!(!Path::new(&format!("/sys/fs/cgroup/pids/stockade/{id}")).exists());
    let out = home.run(&["exec", "brief", "--", "true"]);
    assert_eq!(out.status.code(), Some(3));
}

/// A root filesystem of busybox alone (Debian's busybox-static), owned by `owner`.
fn busybox_rootfs(dir: &Path, owner: u32) -> Option<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())?;
    let is_static = Command::new("ldd")
        .arg(busybox)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(false);
    if !is_static {
        return None;
    }
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "dev", "sys", "root", "workspace"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "ls", "cat", "id", "echo", "hostname", "touch", "nslookup", "nc", "grep", "sleep",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let status = Command::new("chown")
        .args(["-R", &owner.to_string()])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    Some(root)
}

fn need_busybox() -> Option<()> {
    let why = "needs Debian's busybox-static (a static /bin/busybox) to build a root filesystem";
    if ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        return Some(());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    None
}

#[test]
fn a_rootfs_directory_is_the_whole_filesystem() {
    let Some(home) = Home::new() else { return };
    if need_busybox().is_none() {
        return;
    }
    let dir = home.dir.with_extension("rootfs");
    let Some(root) = busybox_rootfs(&dir, 0) else {
        return;
    };
    let out = home.run(&[
        "run",
        "--rootfs",
        root.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "ls /; id -u; echo hi > /workspace/f; cat /workspace/f",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "bin\ndev\netc\nproc\nroot\nsys\ntmp\nworkspace\n0\nhi\n",
        "only the rootfs shows"
    );
    // The rootfs directory itself is untouched: writes went to the sandbox's upper layer.
    assert!(!root.join("workspace/f").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unprivileged_user_runs_a_rootfs_sandbox() {
    let Some(home) = Home::new() else { return };
    if need_busybox().is_none() {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to switch to an unprivileged user for the test");
        return;
    }
    // Everything the unprivileged user touches lives in a world-traversable temp dir.
    let dir = home.dir.with_extension("rootless");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_stockade"));
    for name in ["stockade", "stockade-agent"] {
        std::fs::copy(bin.with_file_name(name), dir.join("bin").join(name)).unwrap();
    }
    let Some(root) = busybox_rootfs(&dir, 65534) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = |args: &[&str]| {
        Command::new("runuser")
            .args(["-u", "nobody", "--", "env", "-i"])
            .arg(format!("HOME={}", dir.display()))
            .arg(format!("STOCKADE_HOME={}/home", dir.display()))
            .arg(dir.join("bin/stockade"))
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "run",
        "--rootfs",
        root.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.starts_with("0\n"), "{s}");
    assert!(s.contains("65534"), "sandbox root is the invoking user: {s}");
    // --network full without root: slirp4netns, the host's resolver through it, no host loopback.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "nslookup deb.debian.org >/dev/null 2>&1 && echo resolved; echo | nc -w 2 127.0.0.1 {port} && echo reached-host-loopback; ip link 2>/dev/null | grep -c tap0 || cat /sys/class/net/tap0/operstate"
    );
    let out = run(&[
        "run",
        "--network",
        "full",
        "--rootfs",
        root.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let s = stdout(&out);
    assert!(s.contains("resolved"), "{s} {}", stderr(&out));
    assert!(!s.contains("reached-host-loopback"), "{s}");
    let slirps = Command::new("pgrep")
        .args(["-u", "nobody", "slirp4netns"])
        .output()
        .unwrap();
    assert!(
        slirps.stdout.is_empty(),
        "slirp4netns left running: {}",
        stdout(&slirps)
    );
    // Without --rootfs an unprivileged user gets a clear refusal.
    let out = run(&["run", "--", "true"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("without root it needs --rootfs DIR"),
        "{}",
        stderr(&out)
    );
    let _ = Command::new("rm").arg("-rf").arg(&dir).status();
}

#[test]
fn a_closed_output_pipe_stops_the_command() {
    let Some(home) = Home::new() else { return };
    let id = stdout(&home.run(&["create"])).trim().to_owned();
    let script = format!(
        "STOCKADE_HOME={} {} exec {id} -- yes | head -n 2 >/dev/null; echo ${{PIPESTATUS[0]}}",
        home.dir.display(),
        env!("CARGO_BIN_EXE_stockade")
    );
    let out = Command::new("timeout")
        .args(["20", "bash", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        "141\n",
        "stockade exec should end like a SIGPIPE'd command: {}",
        stderr(&out)
    );
    let left = home.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "ps -eo comm | grep -c '^yes$' || true",
    ]);
    assert_eq!(stdout(&left), "0\n", "yes is still running");
}

#[test]
fn run_destroys_its_sandbox_when_interrupted_or_terminated() {
    let Some(home) = Home::new() else { return };
    for (signal, code) in [(nix::sys::signal::SIGTERM, 143), (nix::sys::signal::SIGINT, 130)] {
        let mut child = home
            .cmd(&["run", "--", "sleep", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for _ in 0..100 {
            if !stdout(&home.run(&["ls", "-q"])).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{signal}");
        assert_eq!(
            stdout(&home.run(&["ls", "-q"])),
            "",
            "{signal} left the sandbox behind"
        );
    }
}

#[test]
fn a_supervisor_that_fails_to_start_leaves_nothing() {
    let Some(home) = Home::new() else { return };
    // An "agent" that dies at once: the create fails with a message and cleans up after itself.
    let out = home
        .cmd(&["create"])
        .env("STOCKADE_AGENT", "/bin/false")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the supervisor exited without a word"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&home.run(&["ls", "-q"])), "");
    for dir in ["sandboxes", "run", "records"] {
        let left: Vec<_> = std::fs::read_dir(home.dir.join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{dir}: {left:?}");
    }
}

#[test]
fn secrets_are_stored_encrypted_listed_by_name_and_injected_by_request() {
    let Some(home) = Home::new() else { return };
    let value = format!("sk-{}-{}", std::process::id(), rand_suffix());
    let mut set = home.cmd(&["secret", "set", "API_TOKEN"]);
    set.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = set.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), format!("{value}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&home.run(&["secret", "ls"])), "API_TOKEN\n");
    // Not in clear on disk.
    let raw = std::fs::read(home.dir.join("secrets.enc")).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains(&value));
    // Only the exec that asks gets it, under the name it asks for.
    let out = home.run(&[
        "run",
        "--secret",
        "KEY=API_TOKEN",
        "--",
        "sh",
        "-c",
        "echo \"$KEY\"",
    ]);
    assert_eq!(stdout(&out), format!("{value}\n"), "{}", stderr(&out));
    let id = stdout(&home.run(&["create"])).trim().to_owned();
    let out = home.run(&[
        "exec",
        "--secret",
        "API_TOKEN",
        &id,
        "--",
        "sh",
        "-c",
        "echo \"$API_TOKEN\"",
    ]);
    assert_eq!(stdout(&out), format!("{value}\n"));
    let out = home.run(&["exec", &id, "--", "env"]);
    assert!(!stdout(&out).contains(&value), "an exec that did not ask has it");
    // Unknown names and bad names are named.
    let out = home.run(&["exec", "--secret", "NOPE", &id, "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"NOPE\" is not in the secret store"),
        "{}",
        stderr(&out)
    );
    let out = home.run(&["secret", "rm", "API_TOKEN"]);
    assert!(out.status.success());
    assert_eq!(stdout(&home.run(&["secret", "ls"])), "");
    let out = home.run(&["secret", "rm", "API_TOKEN"]);
    assert_eq!(out.status.code(), Some(3));
}
