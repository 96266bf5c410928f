//! `stockade task` as users run it: a `command:` agent on a local git repository gives a patch
//! that applies to the original commit; a matrix of tasks × agents × drivers ends with a table;
//! bad agents, keys and sources fail before any sandbox exists. Real git; native and docker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod common;

use common::{git, Home};

fn repo(root: &Path) -> (PathBuf, String) {
    let dir = root.join("repo");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    std::fs::write(dir.join("lib/calc.py"), "def add(a, b):\n    return a - b\n").unwrap();
    std::fs::write(dir.join("README.md"), "# calc\n").unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "buggy"]);
    let commit = git(&dir, &["rev-parse", "HEAD"]);
    (dir, commit)
}

const AGENT: &str = "command:sed -i 's/a - b/a + b/' lib/calc.py && echo \"$STOCKADE_PROMPT\" >> README.md \
    && printf 'from lib.calc import add\\nassert add(2, 3) == 5\\n' > test_calc.py && echo '{\"type\":\"done\"}'";

#[test]
fn a_command_agent_patch_applies_to_the_original_commit() {
    let Some(home) = Home::new("one") else { return };
    let (repo, commit) = repo(&home.dir.join("src"));
    let out = home.run(&[
        "task",
        "--code",
        repo.to_str().unwrap(),
        "--agent",
        AGENT,
        "--prompt",
        "Fixed add.",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "succeeded");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["agent"], "command");
    assert_eq!(result["driver"], "native");
    assert_eq!(
        result["patch"],
        serde_json::json!({"files": 3, "insertions": 4, "deletions": 1})
    );
    assert!(result["baseline"].as_str().unwrap().len() == 40);
    let dir = PathBuf::from(result["dir"].as_str().unwrap());
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(events.contains("\"stream\":\"stdout\""), "{events}");
    // The patch applies to the original commit and gives the agent's files.
    let check = home.dir.join("check");
    assert!(Command::new("git")
        .args(["clone", "-q"])
        .arg(&repo)
        .arg(&check)
        .status()
        .unwrap()
        .success());
    git(&check, &["checkout", "-q", &commit]);
    let patch = dir.join("patch.diff");
    git(&check, &["apply", "--check", patch.to_str().unwrap()]);
    git(&check, &["apply", patch.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(check.join("lib/calc.py")).unwrap(),
        "def add(a, b):\n    return a + b\n"
    );
    assert_eq!(
        std::fs::read_to_string(check.join("README.md")).unwrap(),
        "# calc\nFixed add.\n"
    );
    assert!(check.join("test_calc.py").exists());
    // The sandbox is gone; the task is listed and shown.
    assert_eq!(String::from_utf8_lossy(&home.run(&["ls", "-q"]).stdout), "");
    let ls = String::from_utf8_lossy(&home.run(&["task", "ls"]).stdout).into_owned();
    assert!(ls.contains("succeeded"), "{ls}");
    let id = result["id"].as_str().unwrap();
    let shown: serde_json::Value =
        serde_json::from_slice(&home.run(&["task", "show", &id[..6]]).stdout).unwrap();
    assert_eq!(shown["id"], id);
}

#[test]
fn a_failing_or_slow_agent_is_recorded_as_such() {
    let Some(home) = Home::new("fail") else { return };
    let out = home.run(&[
        "task",
        "--code",
        "empty",
        "--agent",
        "command:echo partial > f; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("failed") && said.contains("exit 3") && said.contains("1 files changed"),
        "{said}"
    );
    let out = home.run(&[
        "task",
        "--code",
        "empty",
        "--agent",
        "command:sleep 30",
        "--timeout",
        "1s",
    ]);
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("timed_out"));
}

#[test]
fn a_service_that_dies_is_reported_and_a_chatty_one_does_not_stall() {
    let Some(home) = Home::new("service") else { return };
    let out = home.run(&[
        "task",
        "--code",
        "empty",
        "--agent",
        "command:true",
        "--service",
        "echo no model here >&2; exit 7",
        "--json",
    ]);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "error");
    let error = result["error"].as_str().unwrap();
    assert!(
        error.contains("service: it ended (exit 7) before the agent started: no model here"),
        "{error}"
    );
    // A service writing far more than any pipe holds while the agent works.
    let out = home.run(&[
        "task",
        "--code",
        "empty",
        "--agent",
        "command:sleep 1; echo ok > f",
        "--service",
        "yes | head -c 50000000; sleep 60",
        "--json",
    ]);
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["status"], "succeeded", "{result}");
    let dir = PathBuf::from(result["dir"].as_str().unwrap());
    assert!(std::fs::metadata(dir.join("service.log")).unwrap().len() > 1_000_000);
}

#[test]
fn bad_tasks_fail_before_any_sandbox() {
    let Some(home) = Home::new("bad") else { return };
    for (args, says) in [
        (
            vec!["task", "--code", "empty", "--agent", "warp", "--prompt", "p"],
            "invalid agent: \"warp\" is not an agent",
        ),
        (
            vec![
                "task",
                "--code",
                "empty",
                "--agent",
                "claude-code:anthropic:sonnet",
                "--prompt",
                "p",
            ],
            "invalid agent: claude-code needs ANTHROPIC_API_KEY in the environment",
        ),
        (
            vec!["task", "--code", "/no/such/dir", "--agent", "command:true"],
            "invalid code: /no/such/dir",
        ),
        (
            vec![
                "task",
                "--code",
                "file:///no/such/repo.git",
                "--agent",
                "command:true",
            ],
            "invalid code: file:///no/such/repo.git",
        ),
        (
            vec!["task", "--agent", "command:true"],
            "invalid code: --code is required",
        ),
        (
            vec![
                "task",
                "--code",
                "empty",
                "--agent",
                "command:true",
                "--mcp",
                "/no/mcp.json",
            ],
            "invalid mcp: /no/mcp.json",
        ),
    ] {
        let out = home.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(String::from_utf8_lossy(&home.run(&["ls", "-q"]).stdout), "");
    assert_eq!(
        std::fs::read_dir(home.dir.join("tasks"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
}

#[test]
fn a_matrix_runs_in_parallel_and_ends_with_a_table() {
    let Some(home) = Home::new("matrix") else { return };
    let docker = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !docker && std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but Docker is not running");
    }
    if docker {
        assert!(home.run(&["image", "base"]).status.success());
    }
    let (repo, _) = repo(&home.dir.join("src"));
    let drivers = if docker {
        r#"["native", "docker"]"#
    } else {
        r#"["native"]"#
    };
    let matrix = format!(
        r#"{{"tasks": [
            {{"name": "fix", "code": "{r}", "prompt": "fix add"}},
            {{"name": "docs", "code": "{r}", "prompt": "document"}},
            {{"name": "fresh", "code": "empty", "prompt": "start"}}],
          "agents": ["command:echo \"$STOCKADE_PROMPT\" > NOTES.md", "command:test -f README.md"],
          "drivers": {drivers}, "parallel": 3, "timeout": "2m"}}"#,
        r = repo.display()
    );
    let file = home.dir.join("matrix.json");
    std::fs::write(&file, matrix).unwrap();
    let out = home.run(&["task", "--matrix", file.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let progress = String::from_utf8_lossy(&out.stderr).into_owned();
    let runs = if docker { 12 } else { 6 };
    assert!(progress.contains(&format!("[{runs}/{runs}]")), "{progress}");
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), runs, "{table}");
    assert!(table.starts_with("NAME"), "{table}");
    // `test -f README.md` fails on the empty code source only: one failure per driver.
    let failed = rows.iter().filter(|r| r.contains(" failed ")).count();
    assert_eq!(failed, runs / 6, "{table}");
    assert_eq!(out.status.code(), Some(1), "not all succeeded: {table}");
    assert!(rows.iter().filter(|r| r.contains("succeeded")).count() == runs - failed);
    let json: serde_json::Value =
        serde_json::from_slice(&home.run(&["task", "ls", "--json"]).stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), runs);
    assert_eq!(
        String::from_utf8_lossy(&home.run(&["ls", "-q"]).stdout),
        "",
        "every sandbox was destroyed"
    );
}

/// Puts fixture `name` into `repo/.fixtures/` (ignored by git, so out of every patch): the code
/// is copied into the sandbox, the rest of the host's /tmp is not.
fn fixture_in(repo: &Path, name: &str) -> String {
    std::fs::create_dir_all(repo.join(".fixtures")).unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::copy(&from, repo.join(".fixtures").join(name)).unwrap();
    format!("/workspace/.fixtures/{name}")
}

/// What a real agent's task left: the result and the task directory's patch and events.
struct AgentRun {
    result: serde_json::Value,
    patch: String,
    events: String,
}

/// Runs `agent` from npm on a one-file repository against the scripted model server `fixture`
/// (started in the sandbox as a `--service` with `service_args`, `{port}` filled in); `env` gives
/// the agent its key and base URL (`{port}` filled in). `None` when npm is missing outside CI.
fn real_agent_task(
    tag: &str,
    agent: &str,
    fixture: &str,
    service_args: &str,
    env: &[(&str, &str)],
) -> Option<AgentRun> {
    let home = Home::new(tag)?;
    if Command::new("npm").arg("--version").output().is_err() {
        common::skip("npm is not installed (scripts/test-deps installs nodejs and npm)");
        return None;
    }
    let src = home.dir.join("src/repo");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello.py"), "print(\"Hello, world\")\n").unwrap();
    std::fs::write(src.join(".gitignore"), ".fixtures/\n").unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "hello"]);
    let port = (20000 + std::process::id() % 20000 + tag.len() as u32 * 7).to_string();
    let fake = fixture_in(&src, fixture);
    let service = format!("python3 {fake} {}", service_args.replace("{port}", &port));
    let mut cmd = home.cmd(&[
        "task",
        "--code",
        src.to_str().unwrap(),
        "--agent",
        agent,
        "--prompt",
        "Change the greeting to Goodbye",
        "--service",
        &service,
        "--timeout",
        "2m",
        "--json",
    ]);
    for (k, v) in env {
        cmd.env(k, v.replace("{port}", &port));
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{stderr}"));
    let dir = PathBuf::from(result["dir"].as_str().unwrap());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let (log, events) = (read("stderr.log"), read("events.jsonl"));
    assert_eq!(
        result["status"], "succeeded",
        "{result}\n{stderr}\n{log}\n{events}"
    );
    let patch = read("patch.diff");
    assert!(
        patch.contains("-print(\"Hello, world\")\n+print(\"Goodbye, world\")"),
        "{patch}"
    );
    Some(AgentRun {
        result,
        patch,
        events,
    })
}

/// The real Claude Code CLI, installed from npm inside the sandbox, against a scripted streaming
/// Messages API server (tests/fixtures/fake_anthropic.py) run in the same sandbox: it reads
/// hello.py, edits it, says it is done; the task's patch holds the edit.
#[test]
fn claude_code_edits_a_file_end_to_end() {
    let Some(run) = real_agent_task(
        "claude",
        "claude-code:anthropic:sonnet",
        "fake_anthropic.py",
        "{port} /workspace/hello.py Hello Goodbye /tmp/fake-anthropic.log",
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key"),
            ("ANTHROPIC_BASE_URL", "http://127.0.0.1:{port}"),
        ],
    ) else {
        return;
    };
    assert_eq!(run.result["model"], "sonnet");
    assert!(!run.patch.is_empty());
    // Its stream-json output was parsed: the tool calls and the final result are events.
    let parsed: Vec<serde_json::Value> = run
        .events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(run.events.contains("\"name\":\"Edit\""), "{}", run.events);
    let last = parsed
        .iter()
        .rev()
        .find(|e| e["json"]["type"] == "result")
        .unwrap();
    assert_eq!(last["json"]["result"], "I changed the greeting.");
}

/// The real Codex CLI, installed from npm inside the sandbox, against a scripted Responses API
/// server (tests/fixtures/fake_openai.py) given through OPENAI_BASE_URL: it runs the command the
/// server asks for, which edits hello.py; the task's patch holds the edit.
#[test]
fn codex_edits_a_file_end_to_end() {
    let Some(run) = real_agent_task(
        "codex",
        "codex:openai:gpt-5-codex",
        "fake_openai.py",
        "{port} 'sed -i s/Hello/Goodbye/ hello.py' /tmp/fake-openai.log",
        &[
            ("OPENAI_API_KEY", "sk-test-not-a-real-key"),
            ("OPENAI_BASE_URL", "http://127.0.0.1:{port}/v1"),
        ],
    ) else {
        return;
    };
    assert_eq!(run.result["agent"], "codex");
    assert!(
        run.events.contains("\"type\":\"turn.completed\""),
        "{}",
        run.events
    );
    assert!(run.events.contains("I changed the greeting."), "{}", run.events);
}
