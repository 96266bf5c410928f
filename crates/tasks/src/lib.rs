//! Coding-agent tasks: give Stockade code, an agent and a prompt; it makes a sandbox, loads the
//! code (with a baseline commit), prepares and runs the agent, and writes a task directory:
//! `result.json`, `patch.diff`, `events.jsonl` (the agent's stream, parsed where it is JSON
//! lines), `stdout.log`, `stderr.log`. Everything that can be checked is checked before a sandbox
//! exists: the agent, its keys, the code source, the MCP file.
#![forbid(unsafe_code)]

pub mod agents;
pub mod matrix;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use stockade_core::{
    Driver, Error, ExecEvent, ExecRequest, NetworkMode, OutputStream, Result, SandboxSpec, TaskStatus,
};

pub use agents::{AgentChoice, Harness};

/// How long a task's agent may run when the task does not say, as users write it (`--timeout`,
/// the API's `timeout`): parsed by `stockade_core::parse::duration` like theirs.
pub const DEFAULT_TIMEOUT: &str = "30m";

/// How long installing the agent in the sandbox may take (npm, pip); a task's service runs
/// through the install and the agent's own timeout.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// What to run.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// The task's id; a random one when absent (a daemon picks it first to answer at once).
    pub id: Option<String>,
    pub code: String,
    pub agent: String,
    pub prompt: String,
    pub driver: String,
    pub image: Option<String>,
    pub timeout: Duration,
    /// An MCP servers file (JSON) on the host, passed to agents that take one.
    pub mcp: Option<PathBuf>,
    /// Network for the sandbox; agents that call a model API need `full` (their default).
    pub network: Option<NetworkMode>,
    /// Keep the sandbox after the task (its id is in the result).
    pub keep: bool,
    /// A label for matrices and listings.
    pub name: Option<String>,
    /// A helper started in the sandbox before the agent and stopped after it (a local model
    /// server, a proxy): `sh -c SERVICE`.
    pub service: Option<String>,
}

/// Lines changed by the patch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchStats {
    pub files: u64,
    pub insertions: u64,
    pub deletions: u64,
}

impl PatchStats {
    /// Reads git's `--stat` summary line.
    pub fn from_stat(stat: &str) -> PatchStats {
        let mut s = PatchStats::default();
        let Some(last) = stat.lines().rev().find(|l| l.contains("changed")) else {
            return s;
        };
        for part in last.split(',') {
            let n: u64 = part
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if part.contains("changed") {
                s.files = n;
            } else if part.contains("insertion") {
                s.insertions = n;
            } else if part.contains("deletion") {
                s.deletions = n;
            }
        }
        s
    }
}

/// `result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskResult {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// How it ended (`succeeded`, `failed`, `timed_out` or `error` on the wire).
    pub status: TaskStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub started_at: u64,
    pub agent: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub driver: String,
    pub code: String,
    /// The commit the code was checked out at (git sources).
    pub code_commit: Option<String>,
    /// The baseline commit the patch is against.
    pub baseline: Option<String>,
    pub patch: PatchStats,
    pub sandbox: Option<String>,
    pub prompt: String,
    pub error: Option<String>,
    /// Where the task directory is.
    pub dir: PathBuf,
}

/// The task directories under `$STOCKADE_HOME/tasks`.
#[derive(Debug, Clone)]
pub struct TaskStore {
    pub dir: PathBuf,
}

impl TaskStore {
    pub fn new(home: &Path) -> Self {
        TaskStore {
            dir: home.join("tasks"),
        }
    }

    /// Every task, oldest first.
    pub fn list(&self) -> Vec<TaskResult> {
        let mut out: Vec<TaskResult> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("result.json")).ok())
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect();
        out.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        out
    }

    /// One task by id or unique prefix.
    pub fn get(&self, id: &str) -> Result<TaskResult> {
        let matches: Vec<TaskResult> = self.list().into_iter().filter(|t| t.id.starts_with(id)).collect();
        match matches.len() {
            1 => Ok(matches
                .into_iter()
                .next()
                .ok_or_else(|| Error::NotFound(id.into()))?),
            0 => Err(Error::NotFound(format!("task {id}"))),
            _ => Err(Error::invalid(
                "task",
                format!("{id:?} matches {} tasks; give more of the id", matches.len()),
            )),
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::backend(format!("write {}", path.display()), e)
}

/// Everything checked before a sandbox is made.
pub struct Checked {
    pub agent: AgentChoice,
    pub keys: Vec<(String, String)>,
    pub source: stockade_code::CodeSource,
    pub mcp: Option<Vec<u8>>,
    /// The image the sandbox gets: the spec's, else the agent's `STOCKADE_<AGENT>_IMAGE` when
    /// the driver runs images.
    pub image: Option<String>,
    /// Base URLs for local or proxied model APIs, passed through when the host sets them.
    pub base_urls: Vec<(String, String)>,
}

/// Checks `spec` against the environment `env`: agent, keys, code source, MCP file.
/// `takes_images` says whether the spec's driver runs images.
pub fn check(spec: &TaskSpec, env: &dyn Fn(&str) -> Option<String>, takes_images: bool) -> Result<Checked> {
    let agent = AgentChoice::parse(&spec.agent)?;
    let keys = agent.keys(env)?;
    let source = stockade_code::CodeSource::parse(&spec.code)?;
    if spec.prompt.trim().is_empty() && agent.shell.is_none() {
        return Err(Error::invalid("prompt", "empty; say what the agent should do"));
    }
    let mcp = match &spec.mcp {
        Some(path) => {
            let data =
                std::fs::read(path).map_err(|e| Error::invalid("mcp", format!("{}: {e}", path.display())))?;
            // Checked now, against this agent, so a bad file stops the task before a sandbox.
            agent.mcp_plan(&data).map_err(|e| match e {
                Error::InvalidSpec { reason, .. } => {
                    Error::invalid("mcp", format!("{}: {reason}", path.display()))
                }
                other => other,
            })?;
            Some(data)
        }
        None => None,
    };
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let image = spec.image.clone().or_else(|| {
        let var = agent.harness.image_env;
        (takes_images && !var.is_empty()).then(|| set(var)).flatten()
    });
    let base_urls = ["ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL"]
        .into_iter()
        .filter_map(|k| set(k).map(|v| (k.to_owned(), v)))
        .collect();
    Ok(Checked {
        agent,
        keys,
        source,
        mcp,
        image,
        base_urls,
    })
}

/// Runs one task to its end. Errors before the sandbox exists are returned as errors; once a
/// task directory exists, failures are recorded in it and returned as a result with status
/// `error`.
pub async fn run(
    driver: &dyn Driver,
    spec: TaskSpec,
    checked: Checked,
    store: &TaskStore,
    scratch: &Path,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<TaskResult> {
    let prepared = stockade_code::prepare(&checked.source, scratch, progress).await?;
    let id = match &spec.id {
        Some(id) => id.clone(),
        None => stockade_store::random_id()?.to_string(),
    };
    let dir = store.dir.join(&id);
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let started = Instant::now();
    let mut result = TaskResult {
        id: id.clone(),
        name: spec.name.clone(),
        status: TaskStatus::Error,
        exit_code: None,
        duration_ms: 0,
        started_at: stockade_store::now_secs(),
        agent: checked.agent.harness.name.to_owned(),
        provider: checked.agent.provider.clone(),
        model: checked.agent.model.clone(),
        driver: spec.driver.clone(),
        code: checked.source.describe(),
        code_commit: prepared.commit.clone(),
        baseline: None,
        patch: PatchStats::default(),
        sandbox: None,
        prompt: spec.prompt.clone(),
        error: None,
        dir: dir.clone(),
    };
    let outcome = run_in_sandbox(driver, &spec, &checked, &prepared, &dir, &mut result, progress).await;
    if let Err(e) = outcome {
        result.status = TaskStatus::Error;
        result.error = Some(e.to_string());
    }
    if let (Some(sandbox), false) = (&result.sandbox, spec.keep) {
        if let Ok(info) = driver.get(sandbox).await {
            let _ = driver.destroy(&info.id).await;
        }
    }
    result.duration_ms = started.elapsed().as_millis() as u64;
    let json = serde_json::to_vec_pretty(&result).map_err(|e| Error::backend("encode result", e))?;
    let path = dir.join("result.json");
    stockade_store::write_atomic(&path, &json, 0o644).map_err(|e| io_err(&path, e))?;
    Ok(result)
}

const AGENT_PREFIX: &str = "/root/.stockade/agents";

/// Debian's (and most distributions') bundle of trusted CAs, site CAs included.
const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

async fn run_in_sandbox(
    driver: &dyn Driver,
    spec: &TaskSpec,
    checked: &Checked,
    prepared: &stockade_code::Prepared,
    dir: &Path,
    result: &mut TaskResult,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<()> {
    let harness = &checked.agent.harness;
    let needs_api = harness.install != agents::Install::Nothing;
    let image = checked.image.clone();
    let sandbox_spec = SandboxSpec {
        driver: spec.driver.clone(),
        image,
        network: spec.network.unwrap_or(if needs_api {
            NetworkMode::Full
        } else {
            NetworkMode::None
        }),
        labels: [("stockade.task".to_owned(), result.id.clone())].into(),
        ..Default::default()
    };
    let info = driver.create(sandbox_spec).await?;
    result.sandbox = Some(info.id.to_string());
    let workdir = info.spec.workdir.clone();
    result.baseline = Some(stockade_code::load(driver, &info.id, &workdir, prepared, progress).await?);

    let service = match &spec.service {
        Some(cmd) => {
            let mut req = ExecRequest::new(["sh", "-c", cmd]);
            req.cwd = Some(workdir.clone());
            req.timeout = Some(spec.timeout + INSTALL_TIMEOUT);
            progress(&format!("starting service: {cmd}"));
            Some(Service::start(driver.exec(&info.id, req).await?, dir)?)
        }
        None => None,
    };
    let mut path = format!(
        "{AGENT_PREFIX}/node_modules/.bin:{AGENT_PREFIX}/bin:/root/.local/bin:{}",
        stockade_core_path()
    );
    install(driver, &info.id, harness, &path, progress).await?;
    let mcp = match &checked.mcp {
        Some(data) => checked.agent.mcp_plan(data)?,
        None => agents::McpPlan::default(),
    };
    for (path, data) in &mcp.files {
        if let Some(dir) = std::path::Path::new(path).parent() {
            driver.mkdir(&info.id, &dir.to_string_lossy()).await?;
        }
        driver.write_file(&info.id, path, data.clone(), 0o600).await?;
    }
    let openai_base_url = checked
        .base_urls
        .iter()
        .find(|(k, _)| k == "OPENAI_BASE_URL")
        .map(|(_, v)| v.clone());
    let mut req = ExecRequest::new(
        checked
            .agent
            .argv(&spec.prompt, &mcp.args, openai_base_url.as_deref()),
    );
    req.cwd = Some(workdir.clone());
    req.timeout = Some(spec.timeout);
    for (k, v) in &checked.keys {
        req.env.insert(k.clone(), v.clone());
    }
    for (k, v) in &checked.base_urls {
        req.env.insert(k.clone(), v.clone());
    }
    for (k, v) in harness.env {
        req.env.insert((*k).into(), (*v).into());
    }
    req.env.insert("STOCKADE_PROMPT".into(), spec.prompt.clone());
    // Node agents trust the system's CAs too (a missing file only earns a warning).
    req.env.insert("NODE_EXTRA_CA_CERTS".into(), SYSTEM_CA.into());
    path.push_str(":/root/.stockade/bin");
    req.env.insert("PATH".into(), path);
    if let Some(service) = &service {
        // A moment for a service that fails at once to say so.
        tokio::time::sleep(Duration::from_millis(100)).await;
        service.check_alive()?;
    }
    progress(&format!("running {} in {}", harness.name, info.id));
    let exit = stream_agent(driver, &info.id, req, harness.output, dir).await;
    if let Some(service) = service {
        service.stop().await;
    }
    let exit = exit?;
    result.exit_code = exit.code.or(exit.signal.map(|s| 128 + s));
    result.status = if exit.timed_out {
        TaskStatus::TimedOut
    } else if exit.success() {
        TaskStatus::Succeeded
    } else {
        TaskStatus::Failed
    };

    let patch = stockade_code::diff(driver, &info.id, &workdir, false).await?;
    let patch_path = dir.join("patch.diff");
    std::fs::write(&patch_path, &patch).map_err(|e| io_err(&patch_path, e))?;
    let stat = stockade_code::diff(driver, &info.id, &workdir, true).await?;
    result.patch = PatchStats::from_stat(&String::from_utf8_lossy(&stat));
    Ok(())
}

fn stockade_core_path() -> &'static str {
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

/// A `--service` exec: its output drained into `service.log` as it comes (so a chatty service
/// never stalls on a full pipe), its end noticed.
struct Service {
    control: std::sync::Arc<dyn stockade_core::ExecControl>,
    ended: std::sync::Arc<std::sync::Mutex<Option<stockade_core::ExecExit>>>,
    drain: tokio::task::JoinHandle<()>,
    log: PathBuf,
}

impl Service {
    fn start(session: stockade_core::ExecSession, dir: &Path) -> Result<Service> {
        let log = dir.join("service.log");
        let mut file = std::fs::File::create(&log).map_err(|e| io_err(&log, e))?;
        let ended = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen = std::sync::Arc::clone(&ended);
        let mut events = session.events;
        let drain = tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                match event {
                    ExecEvent::Output { data, .. } => {
                        let _ = file.write_all(&data);
                    }
                    ExecEvent::Exited { exit, .. } => {
                        if let Ok(mut e) = seen.lock() {
                            *e = Some(exit);
                        }
                        return;
                    }
                    ExecEvent::Started { .. } => {}
                }
            }
        });
        Ok(Service {
            control: session.control,
            ended,
            drain,
            log,
        })
    }

    /// An error naming the exit and the service's last words when it has already ended.
    fn check_alive(&self) -> Result<()> {
        let exit = self.ended.lock().ok().and_then(|e| *e);
        match exit {
            None => Ok(()),
            Some(exit) => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("no output");
                Err(Error::invalid(
                    "service",
                    format!(
                        "it ended (exit {}) before the agent started: {}",
                        exit.code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| format!("signal {:?}", exit.signal)),
                        last.trim()
                    ),
                ))
            }
        }
    }

    async fn stop(self) {
        let _ = self.control.kill().await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.drain).await;
    }
}

/// Makes sure the agent's binary runs in the sandbox: present already (a prepared image), or
/// installed from its registry into /root/.stockade/agents.
async fn install(
    driver: &dyn Driver,
    id: &stockade_core::SandboxId,
    harness: &Harness,
    path: &str,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<()> {
    let script = match harness.install {
        agents::Install::Nothing => return Ok(()),
        agents::Install::Npm(pkg) => format!(
            "command -v {bin} >/dev/null || {{ command -v npm >/dev/null || {{ echo 'npm is not in the sandbox (use an image with node, or {img})' >&2; exit 3; }}; npm install --no-fund --no-audit --loglevel=error --prefix {AGENT_PREFIX} {pkg} >&2; }}",
            bin = harness.binary,
            img = harness.image_env
        ),
        agents::Install::Pip(pkg) => format!(
            "command -v {bin} >/dev/null || python3 -m pip install --quiet --user {pkg} >&2",
            bin = harness.binary
        ),
        agents::Install::ImageOnly => format!(
            "command -v {bin} >/dev/null || {{ echo '{bin} is not in the image; build one with it and set {img}' >&2; exit 3; }}",
            bin = harness.binary,
            img = harness.image_env
        ),
    };
    progress(&format!("preparing {}", harness.name));
    // Node and pip carry their own CA lists; the system's (with any site CA) is the one to trust.
    let script = format!(
        "if [ -f {SYSTEM_CA} ]; then export NODE_EXTRA_CA_CERTS={SYSTEM_CA} npm_config_cafile={SYSTEM_CA} PIP_CERT={SYSTEM_CA}; fi; {script}"
    );
    let mut req = ExecRequest::new(["sh", "-c", &script]);
    req.env.insert("PATH".into(), path.to_owned());
    req.timeout = Some(INSTALL_TIMEOUT);
    let out = driver.exec(id, req).await?.output().await?;
    if !out.exit.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::backend(
            format!("install {}", harness.name),
            err.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed")
                .trim(),
        ));
    }
    Ok(())
}

/// Runs the agent, writing its output as it comes: raw logs and `events.jsonl`.
async fn stream_agent(
    driver: &dyn Driver,
    id: &stockade_core::SandboxId,
    req: ExecRequest,
    format: agents::OutputFormat,
    dir: &Path,
) -> Result<stockade_core::ExecExit> {
    let open = |name: &str| {
        let p = dir.join(name);
        std::fs::File::create(&p)
            .map(std::io::BufWriter::new)
            .map_err(|e| io_err(&p, e))
    };
    let (mut out_log, mut err_log, mut events) =
        (open("stdout.log")?, open("stderr.log")?, open("events.jsonl")?);
    let started = Instant::now();
    let mut session = driver.exec(id, req).await?;
    let (mut out_line, mut err_line) = (Vec::new(), Vec::new());
    let mut n = 0u64;
    let mut emit = |stream: &str, line: &[u8], events: &mut std::io::BufWriter<std::fs::File>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        let parsed = (format == agents::OutputFormat::JsonLines && stream == "stdout")
            .then(|| serde_json::from_str::<serde_json::Value>(text).ok())
            .flatten();
        let mut event =
            serde_json::json!({ "seq": n, "t_ms": started.elapsed().as_millis() as u64, "stream": stream });
        match parsed {
            Some(v) => event["json"] = v,
            None => event["text"] = text.into(),
        }
        n += 1;
        let _ = writeln!(events, "{event}");
    };
    let exit = loop {
        let Some(event) = session.events.next().await else {
            return Err(Error::backend("agent", "the stream ended before the agent did"));
        };
        match event? {
            ExecEvent::Started { .. } => {}
            ExecEvent::Output { stream, data, .. } => {
                let (log, buf, name) = match stream {
                    OutputStream::Stdout => (&mut out_log, &mut out_line, "stdout"),
                    OutputStream::Stderr => (&mut err_log, &mut err_line, "stderr"),
                };
                let _ = log.write_all(&data);
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    emit(name, &line[..line.len() - 1], &mut events);
                }
                // Readers follow these files while the agent runs (the daemon's task log).
                let _ = log.flush();
                let _ = events.flush();
            }
            ExecEvent::Exited { exit, .. } => break exit,
        }
    };
    for (name, rest) in [("stdout", &out_line), ("stderr", &err_line)] {
        if !rest.is_empty() {
            emit(name, rest, &mut events);
        }
    }
    for w in [&mut out_log, &mut err_log, &mut events] {
        w.flush().map_err(|e| io_err(dir, e))?;
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timeout_parses() {
        // The daemon parses it as it parses a client's: a bad one would blame the client.
        let t = stockade_core::parse::duration("timeout", DEFAULT_TIMEOUT).unwrap();
        assert!(!t.is_zero());
    }

    #[test]
    fn stat_lines_parse() {
        assert_eq!(
            PatchStats::from_stat(" a | 2 +-\n 3 files changed, 4 insertions(+), 1 deletion(-)\n"),
            PatchStats {
                files: 3,
                insertions: 4,
                deletions: 1
            }
        );
        assert_eq!(
            PatchStats::from_stat(" 1 file changed, 1 deletion(-)"),
            PatchStats {
                files: 1,
                insertions: 0,
                deletions: 1
            }
        );
        assert_eq!(PatchStats::from_stat(""), PatchStats::default());
    }
}
