//! Code in sandboxes through the CLI: `--code` from a local git repository, a directory without
//! git, a git URL at a ref, and `empty`; `stockade diff` and `stockade apply`; bad sources refused
//! before any sandbox exists. Real git throughout (a bare repository served over file://).
//! Runs on the native driver, and on docker when Docker is running (always under CI=true).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::{git, Home};

/// A repository with a few files, an ignore rule and a binary file; returns (dir, commit).
fn sample_repo(root: &Path) -> (PathBuf, String) {
    let dir = root.join("repo");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("README.md"), "hello\n").unwrap();
    std::fs::write(dir.join("src/main.py"), "print('one')\n").unwrap();
    std::fs::write(dir.join("src/util.py"), "X = 1\n").unwrap();
    std::fs::write(dir.join("old.txt"), "to be deleted\n").unwrap();
    std::fs::write(dir.join("logo.bin"), [0u8, 1, 2, 255, 0, 9]).unwrap();
    std::fs::write(dir.join(".gitignore"), "*.log\n").unwrap();
    // Tracked although an ignore rule matches it: must stay in the baseline.
    std::fs::write(dir.join("keep.log"), "tracked log\n").unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["add", "-f", "keep.log"]);
    git(&dir, &["commit", "-q", "-m", "first"]);
    let commit = git(&dir, &["rev-parse", "HEAD"]);
    (dir, commit)
}

const EDIT: &str =
    "set -e; cd /workspace; echo \"print('two')\" >> src/main.py; echo 'X = 2' > src/util.py; \
    echo new > src/new.py; rm old.txt; printf '\\001\\002\\003' > logo.bin; echo noise > debug.log";

fn patch_applies_to(commit: &str, repo: &Path, patch: &str, scratch: &Path) -> String {
    let check = scratch.join("check");
    let _ = std::fs::remove_dir_all(&check);
    let status = Command::new("git")
        .args(["clone", "-q"])
        .arg(repo)
        .arg(&check)
        .status()
        .unwrap();
    assert!(status.success());
    git(&check, &["checkout", "-q", commit]);
    let patch_file = scratch.join("change.patch");
    std::fs::write(&patch_file, patch).unwrap();
    git(&check, &["apply", "--check", patch_file.to_str().unwrap()]);
    git(&check, &["apply", patch_file.to_str().unwrap()]);
    git(&check, &["add", "-A"]);
    git(&check, &["status", "--porcelain"])
}

fn edits_come_back_as_a_patch_that_applies(driver: &str) {
    let Some(home) = Home::new(&format!("patch-{driver}")) else {
        return;
    };
    let scratch = home.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (repo, commit) = sample_repo(&scratch);
    let id = home.ok(&["create", "--driver", driver, "--code", repo.to_str().unwrap()]);
    let id = id.trim();
    assert_eq!(home.ok(&["diff", id]), "", "nothing changed yet");
    // The copy keeps the repository: same commit checked out.
    assert_eq!(
        home.ok(&[
            "exec",
            id,
            "--",
            "git",
            "-c",
            "safe.directory=*",
            "rev-parse",
            "HEAD"
        ])
        .trim(),
        commit
    );
    home.ok(&["exec", id, "--", "sh", "-c", EDIT]);
    let stat = home.ok(&["diff", id, "--stat"]);
    for f in ["src/main.py", "src/util.py", "src/new.py", "old.txt", "logo.bin"] {
        assert!(stat.contains(f), "{f} missing from {stat}");
    }
    assert!(!stat.contains("debug.log"), "ignored files stay out: {stat}");
    let patch = home.ok(&["diff", id]);
    assert!(patch.contains("GIT binary patch"), "{patch}");
    assert!(patch.contains("deleted file mode"), "{patch}");
    assert!(patch.contains("new file mode"), "{patch}");
    let status = patch_applies_to(&commit, &repo, &patch, &scratch);
    assert_eq!(
        status.lines().collect::<Vec<_>>(),
        [
            "M  logo.bin",
            "D  old.txt",
            "M  src/main.py",
            "A  src/new.py",
            "M  src/util.py"
        ]
    );
    // And `apply` puts the same patch into a fresh sandbox of the original commit.
    let patch_file = scratch.join("change.patch");
    let other = home.ok(&["create", "--driver", driver, "--code", repo.to_str().unwrap()]);
    let other = other.trim();
    home.ok(&["apply", other, patch_file.to_str().unwrap()]);
    assert_eq!(home.ok(&["diff", other]), patch);
}

#[test]
fn native_edits_come_back_as_a_patch_that_applies() {
    edits_come_back_as_a_patch_that_applies("native");
}

#[test]
fn docker_edits_come_back_as_a_patch_that_applies() {
    let up = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !up.is_ok_and(|s| s.success()) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but Docker is not running");
        }
        eprintln!("SKIPPED: Docker is not running");
        return;
    }
    let Some(home) = Home::new("docker-base") else {
        return;
    };
    home.ok(&["image", "base"]);
    edits_come_back_as_a_patch_that_applies("docker");
}

#[test]
fn a_git_url_at_a_ref_a_plain_directory_and_empty() {
    let Some(home) = Home::new("sources") else { return };
    let scratch = home.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (repo, first) = sample_repo(&scratch);
    git(&repo, &["tag", "v1"]);
    std::fs::write(repo.join("README.md"), "second\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "second"]);
    let bare = scratch.join("remote.git");
    let status = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&repo)
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    // A tag, a commit and the default branch.
    let url = format!("file://{}", bare.display());
    for (source, want_head, readme) in [
        (format!("{url}@v1"), first.clone(), "hello\n"),
        (format!("{url}@{first}"), first.clone(), "hello\n"),
        (url.clone(), git(&repo, &["rev-parse", "HEAD"]), "second\n"),
    ] {
        let id = home.ok(&["create", "--code", &source]);
        let id = id.trim();
        let head = home.ok(&[
            "exec",
            id,
            "--",
            "git",
            "-c",
            "safe.directory=*",
            "rev-parse",
            "HEAD",
        ]);
        assert_eq!(head.trim(), want_head, "{source}");
        assert_eq!(
            home.ok(&["exec", id, "--", "cat", "README.md"]),
            readme,
            "{source}"
        );
        home.ok(&["rm", "-f", id]);
    }
    // The same over the git protocol, from `git daemon` on loopback. git-daemon itself: `git
    // daemon` runs it as a child, which killing `git` would leave running.
    let port = 30000 + std::process::id() % 20000;
    let exec_path = Command::new("git").arg("--exec-path").output().unwrap();
    let exec_path = PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim());
    let mut daemon = Command::new(exec_path.join("git-daemon"))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", scratch.display()))
        .arg(&scratch)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let git_url = format!("git://127.0.0.1:{port}/remote.git@v1");
    let mut created = None;
    for _ in 0..50 {
        let out = home.run(&["create", "--code", &git_url]);
        if out.status.success() {
            created = Some(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let id = created.expect("clone over git daemon");
    let head = home.ok(&[
        "exec",
        &id,
        "--",
        "git",
        "-c",
        "safe.directory=*",
        "rev-parse",
        "HEAD",
    ]);
    assert_eq!(head.trim(), first);
    home.ok(&["rm", "-f", &id]);
    // A directory without git gets a repository and a baseline; new files show as added.
    let plain = scratch.join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("a.txt"), "a\n").unwrap();
    let id = home.ok(&["create", "--code", plain.to_str().unwrap()]);
    let id = id.trim();
    home.ok(&["exec", id, "--", "sh", "-c", "echo b > b.txt"]);
    assert!(home.ok(&["diff", id]).contains("+++ b/b.txt"));
    assert!(!plain.join(".git").exists(), "the host directory is left alone");
    // Empty: a repository with nothing in it yet.
    let id = home.ok(&["create", "--code", "empty"]);
    let id = id.trim();
    home.ok(&["exec", id, "--", "sh", "-c", "echo x > x"]);
    assert!(home.ok(&["diff", id, "--stat"]).contains("x | 1 +"));
}

#[test]
fn bad_code_sources_fail_before_any_sandbox_exists() {
    let Some(home) = Home::new("bad") else { return };
    let scratch = home.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (repo, _) = sample_repo(&scratch);
    let url = format!("file://{}", repo.display());
    let missing_repo = format!("file://{}/nope.git", scratch.display());
    let unknown_ref = format!("{url}@no-such-branch");
    for (source, says) in [
        (
            "/no/such/dir",
            "invalid code: /no/such/dir: No such file or directory",
        ),
        (missing_repo.as_str(), "invalid code: file://"),
        (unknown_ref.as_str(), "no-such-branch"),
        ("github:only-owner", "expected github:OWNER/REPO[@REF]"),
    ] {
        let out = home.run(&["create", "--code", source]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{source}: {err}");
        assert!(err.contains(says), "{source}: {err}");
        assert_eq!(err.lines().count(), 1, "{source}: {err}");
    }
    assert_eq!(home.ok(&["ls", "-q"]), "", "no sandbox was made");
    let out = home.run(&["apply", "nope", "/no/such.patch"]);
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn push_lands_on_the_bare_remote_and_the_token_stays_on_the_host() {
    let Some(home) = Home::new("push") else { return };
    let scratch = home.dir.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (repo, commit) = sample_repo(&scratch);
    let bare = scratch.join("remote.git");
    let status = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&repo)
        .arg(&bare)
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("file://{}@main", bare.display());
    // Made up now, so no file on this host holds it already (the native sandbox sees the host's /).
    let token = format!(
        "stk-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let token = token.as_str();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
            .args(args)
            .env("STOCKADE_HOME", &home.dir)
            .env("STOCKADE_GIT_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let id = run(&["create", "--code", &url, "-e", "VISIBLE=1"]);
    run(&["exec", &id, "--", "sh", "-c", EDIT]);
    let pushed = run(&[
        "push",
        &id,
        "--remote",
        &format!("file://{}", bare.display()),
        "--branch",
        "agent/fix",
        "-m",
        "Fix it",
    ]);
    // The commit is on the remote's branch, child of the original commit, with the change.
    assert_eq!(git(&bare, &["rev-parse", "refs/heads/agent/fix"]), pushed);
    assert_eq!(git(&bare, &["rev-parse", "agent/fix^"]), commit);
    assert_eq!(git(&bare, &["log", "-1", "--format=%s", "agent/fix"]), "Fix it");
    assert_eq!(git(&bare, &["show", "agent/fix:src/new.py"]), "new");
    assert!(git(&bare, &["ls-tree", "-r", "--name-only", "agent/fix"])
        .lines()
        .all(|f| f != "old.txt"));
    // main is untouched.
    assert_eq!(git(&bare, &["rev-parse", "main"]), commit);
    // The token is nowhere in the sandbox: not in any process's environment, not in its files
    // (the workdir and its .git, homes, temporary and config directories).
    let env = run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'",
    ]);
    assert!(env.contains("VISIBLE=1"));
    assert!(!env.contains(token), "{env}");
    let found = run(&[
        "exec", &id, "--", "sh", "-c",
        &format!("grep -rl -e {token} /workspace /root /home /tmp /dev/shm /etc /var/tmp 2>/dev/null | head -5; true"),
    ]);
    assert_eq!(found, "", "the token is in these files: {found}");
    // Nothing to push once the sandbox matches its baseline again is an error, not an empty commit.
    let other = run(&["create", "--code", &url]);
    let out = home.run(&[
        "push",
        &other,
        "--remote",
        &format!("file://{}", bare.display()),
        "--branch",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to push"));
}
