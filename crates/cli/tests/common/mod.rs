//! What the CLI test files share: a Stockade home per test that cleans up after itself, real git,
//! and the checks that make a missing prerequisite fail under `CI=true` instead of skipping.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Fails under `CI=true`, else prints why the test is skipped. Returns false either way.
pub fn skip(why: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true and this test cannot run: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// Docker answers (`scripts/engines` starts it).
pub fn docker_running() -> bool {
    let up = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    up || skip("Docker is not running (scripts/engines starts it)")
}

/// A Stockade home under the temp dir; every sandbox in it is destroyed and the directory removed
/// when the value drops.
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `None` (after saying why) when the native driver cannot run here.
    pub fn new(tag: &str) -> Option<Home> {
        if let Err(why) = stockade_native::driver::user_namespaces_available() {
            skip(&why);
            return None;
        }
        Some(Home {
            dir: std::env::temp_dir().join(format!("stockade-{tag}-{}", std::process::id())),
        })
    }

    /// `stockade ARGS` in this home, with no agent keys or tokens from the test's environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stockade"));
        c.args(args).env("STOCKADE_HOME", &self.dir).stdin(Stdio::null());
        for key in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "STOCKADE_GIT_TOKEN"] {
            c.env_remove(key);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
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

/// `git -C dir ARGS` with a fixed identity; asserts success; returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
