//! A docker sandbox across a Docker daemon restart: while the engine is down the sandbox reads as
//! lost and execs say so; when the engine is back the container restarts (policy
//! `unless-stopped`) and the same name works again with its files. Restarts dockerd, so it lives
//! in its own test binary (cargo runs test binaries one at a time). Needs Docker started the way
//! `scripts/engines` starts it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn docker_up() -> bool {
    Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_dockerd() {
    if docker_up() {
        return;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/stockade-dockerd.log")
        .unwrap();
    // `setsid --fork` returns at once, leaving dockerd in its own session beyond this test.
    let status = Command::new("setsid")
        .args(["--fork", "dockerd"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("dockerd to start", Duration::from_secs(60), docker_up);
}

/// Brings dockerd back even when the test fails half-way.
struct RestartGuard;

impl Drop for RestartGuard {
    fn drop(&mut self) {
        start_dockerd();
    }
}

fn stockade(home: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .env("STOCKADE_HOME", home)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_sandbox_survives_a_docker_daemon_restart() {
    if !docker_up() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but Docker is not running (scripts/engines starts it)");
        }
        eprintln!("SKIPPED: Docker is not running");
        return;
    }
    if Command::new("pidof")
        .arg("dockerd")
        .output()
        .map(|o| o.stdout.is_empty())
        .unwrap_or(true)
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but dockerd is not a local process here; scripts/engines starts one");
        }
        eprintln!("SKIPPED: dockerd is not a local process here; cannot restart it");
        return;
    }
    let home = std::env::temp_dir().join(format!("stockade-engine-restart-{}", std::process::id()));
    assert!(stockade(&home, &["image", "base"]).status.success());
    let out = stockade(&home, &["create", "--driver", "docker", "--name", "survivor"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = stockade(
        &home,
        &["exec", "survivor", "--", "sh", "-c", "echo before > /workspace/f"],
    );
    assert!(out.status.success());

    let _guard = RestartGuard;
    assert!(Command::new("pkill")
        .args(["-TERM", "-x", "dockerd"])
        .status()
        .unwrap()
        .success());
    wait_for("dockerd to stop", Duration::from_secs(60), || {
        Command::new("pidof")
            .arg("dockerd")
            .output()
            .map(|o| o.stdout.is_empty())
            .unwrap_or(false)
    });

    // Down: lost, with the reason, and an exec that says why.
    let ls: serde_json::Value = serde_json::from_slice(&stockade(&home, &["ls", "--json"]).stdout).unwrap();
    assert_eq!(ls[0]["status"], "lost", "{ls}");
    assert!(
        ls[0]["details"]["engine_error"]
            .as_str()
            .unwrap()
            .contains("engine unreachable"),
        "{ls}"
    );
    let out = stockade(&home, &["exec", "survivor", "--", "true"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is lost"));

    // Back: the restart policy brings the container and its agent back.
    start_dockerd();
    wait_for("the sandbox to run again", Duration::from_secs(60), || {
        stockade(&home, &["exec", "survivor", "--", "true"])
            .status
            .success()
    });
    let out = stockade(&home, &["exec", "survivor", "--", "cat", "/workspace/f"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\n");
    let info: serde_json::Value =
        serde_json::from_slice(&stockade(&home, &["inspect", "survivor"]).stdout).unwrap();
    assert_eq!(info["status"], "running");
    assert!(stockade(&home, &["rm", "-f", "survivor"]).status.success());
    let _ = std::fs::remove_dir_all(&home);
}
