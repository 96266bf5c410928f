//! The conformance suite against the e2b driver, pointed at Stockade's own E2B surface: the
//! harness starts `stockade serve` (the built binary, `target/debug/stockade`, or
//! `STOCKADE_BIN`) on a loopback port with a temporary home, sandboxes on the native driver
//! (`STOCKADE_E2B_DRIVER=native`), and a token from `stockade token create` as the API key;
//! the driver gets `E2B_API_URL` = `E2B_SANDBOX_URL` = that port. Needs what the native driver
//! needs (root, user namespaces) and `cargo build -p stockade -p stockade-agent` first.
//! The real E2B cloud is not reached.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};

use stockade_conformance::{conformance_suite, skip, Case, Harness};
use stockade_core::{Driver, DriverConfig, SandboxId, SandboxSpec};
use stockade_e2b::E2bDriver;

struct E2b {
    config: DriverConfig,
}

/// The daemon this test binary runs, once.
struct Daemon {
    url: String,
    key: String,
}

/// The directory cargo builds binaries into: `CARGO_TARGET_TMPDIR`'s parent, plus `debug`.
fn built(name: &str) -> PathBuf {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    target.parent().unwrap_or(&target).join("debug").join(name)
}

fn stockade_bin() -> PathBuf {
    std::env::var_os("STOCKADE_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| built("stockade"))
}

/// Starts `stockade serve`; it is ended when this process goes (its stdin, a pipe held here,
/// closes, and the shell around it kills it).
fn start_daemon() -> Result<Daemon, String> {
    let bin = stockade_bin();
    if !bin.is_file() {
        return Err(format!(
            "{} is missing (build it with cargo build -p stockade -p stockade-agent, or set STOCKADE_BIN)",
            bin.display()
        ));
    }
    let home = std::env::temp_dir().join(format!("stockade-e2b-daemon-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let token = Command::new(&bin)
        .args(["token", "create", "--name", "t"])
        .env("STOCKADE_HOME", &home)
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !token.status.success() {
        return Err(format!(
            "stockade token create failed: {}",
            String::from_utf8_lossy(&token.stderr)
        ));
    }
    let key = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("a free port: {e}"))?
        .port();
    let log = std::fs::File::create(home.join("daemon.log")).unwrap();
    let mut child = Command::new("sh")
        .args([
            "-c",
            "\"$0\" serve --listen \"$1\" --socket \"$2\" & pid=$!; read _ignored; kill $pid; wait $pid",
        ])
        .arg(&bin)
        .arg(format!("127.0.0.1:{port}"))
        .arg(home.join("d.sock"))
        .env("STOCKADE_HOME", &home)
        .env("STOCKADE_E2B_DRIVER", "native")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("sh: {e}"))?;
    // Held until the process ends: then the pipe closes and the daemon is killed.
    let stdin = child.stdin.take().unwrap();
    std::mem::forget(stdin);
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "stockade serve exited with {status}; see {}",
                home.join("daemon.log").display()
            ));
        }
        if started.elapsed().as_secs() > 60 {
            return Err(format!("stockade serve did not listen on 127.0.0.1:{port}"));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::mem::forget(child);
    Ok(Daemon {
        url: format!("http://127.0.0.1:{port}"),
        key,
    })
}

fn daemon() -> &'static Result<Daemon, String> {
    static DAEMON: OnceLock<Result<Daemon, String>> = OnceLock::new();
    DAEMON.get_or_init(start_daemon)
}

impl Harness for E2b {
    fn driver(&self) -> Arc<dyn Driver> {
        Arc::new(E2bDriver::from_config(&self.config).unwrap())
    }

    fn spec(&self) -> SandboxSpec {
        SandboxSpec {
            driver: "e2b".into(),
            ..SandboxSpec::default()
        }
    }

    fn leftovers(&self, id: &SandboxId) -> Vec<String> {
        let record = self.config.home.join(format!("e2b/records/{id}.json"));
        if record.exists() {
            vec![format!("file {}", record.display())]
        } else {
            Vec::new()
        }
    }

    fn unsupported(&self, case: Case) -> Option<String> {
        let why = match case {
            Case::kept_exec_outlives_its_caller_and_replays_from_seq => {
                "envd keeps no events: process.Connect gives live output only, so what a kept exec printed \
                 before an attach is not replayed (from seq 0 or any other), and a finished process cannot be \
                 read again"
            }
            Case::a_non_root_user_owns_the_workspace => {
                "envd runs a process as a user of the template named in Basic auth: a uid:gid user is not one, \
                 and E2B's create has no way to give the workdir to a user"
            }
            Case::pause_stops_a_spinner_and_resume_goes_on => {
                "E2B's pause snapshots the sandbox and ends its processes (the driver maps it to stop); E2B's API \
                 has no freeze that keeps processes running in place"
            }
            Case::a_port_inside_is_reachable => {
                "envd's port routing carries HTTP requests, not a raw TCP stream: the driver has no byte \
                 stream to a sandbox's port to give"
            }
            Case::stats_report_usage => {
                "E2B's metrics are memory in use and CPU as a percentage per sample: no CPU time and no \
                 process count to report"
            }
            _ => return None,
        };
        Some(why.into())
    }
}

fn e2b() -> Option<E2b> {
    if let Err(why) = stockade_native::driver::user_namespaces_available() {
        skip(&format!("the daemon's native driver: {why}"));
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        skip("the daemon's native driver needs root for its limits and networking");
        return None;
    }
    if !built("stockade-agent").is_file() && std::env::var_os("STOCKADE_BIN").is_none() {
        skip("target/debug/stockade-agent is missing (cargo build -p stockade -p stockade-agent)");
        return None;
    }
    let daemon = match daemon() {
        Ok(d) => d,
        Err(why) => {
            skip(why);
            return None;
        }
    };
    // The driver's own home, apart from the daemon's: its records and index are the client's.
    let home = std::env::temp_dir().join(format!("stockade-e2b-client-{}", std::process::id()));
    let mut config = DriverConfig::new(home);
    config.env.insert("E2B_API_URL".into(), daemon.url.clone());
    config.env.insert("E2B_SANDBOX_URL".into(), daemon.url.clone());
    config.env.insert("E2B_API_KEY".into(), daemon.key.clone());
    Some(E2b { config })
}

conformance_suite!(e2b);

/// What E2B's attach does give, in place of the excused replay case: a kept exec runs on when
/// its caller goes, and an attach follows it live, numbered from the caller's sequence number,
/// and steers it.
#[test]
fn kept_exec_is_followed_live_after_its_caller_goes() {
    use futures::StreamExt;
    use stockade_core::{ExecEvent, ExecRequest};
    let Some(h) = e2b() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sb = stockade_conformance::Sandbox::new(&h).await;
        let mut req = ExecRequest::new(["sh", "-c", "echo one; read x; echo got $x; exit 7"]);
        req.stdin = true;
        let first = sb.driver.exec_kept(&sb.id, req.clone(), "kept-1").await.unwrap();
        let mut events = first.events;
        let started = events.next().await.unwrap().unwrap();
        assert!(
            matches!(started, ExecEvent::Started { seq: 0, .. }),
            "{started:?}"
        );
        let one = events.next().await.unwrap().unwrap();
        assert!(
            matches!(&one, ExecEvent::Output { seq: 1, data, .. } if data == b"one\n"),
            "{one:?}"
        );
        drop(events);
        drop(first.control);
        let err = sb.driver.exec_kept(&sb.id, req, "kept-1").await.err().unwrap();
        assert!(err.to_string().contains("already in use"), "{err}");
        let err = sb.driver.attach(&sb.id, "no-such-exec", 0).await.err().unwrap();
        assert_eq!(err.to_string(), "no such exec: no-such-exec");
        let again = h.driver();
        let rest = again.attach(&sb.id, "kept-1", 2).await.unwrap();
        rest.control.write_stdin(b"hi\n").await.unwrap();
        let mut events = rest.events;
        let mut next_seq = 2;
        let mut stdout = Vec::new();
        let exit = loop {
            let event = events.next().await.unwrap().unwrap();
            assert_eq!(event.seq(), next_seq, "{event:?}");
            next_seq += 1;
            match event {
                ExecEvent::Output { data, .. } => stdout.extend(data),
                ExecEvent::Exited { exit, .. } => break exit,
                ExecEvent::Started { .. } => panic!("Started after seq 0"),
            }
        };
        assert_eq!(stdout, b"got hi\n");
        assert_eq!(exit.code, Some(7));
        let gone = again.attach(&sb.id, "kept-1", 0).await.err().unwrap();
        assert_eq!(gone.kind(), stockade_core::ErrorKind::ExecNotFound, "{gone}");
    });
}
