//! Coding-agent tasks run by the daemon (the routes are [`crate::api::tasks`]): a checked task
//! runs in the background with the same code as `stockade task`; its directory under
//! `$STOCKADE_HOME/tasks` holds the logs, events, patch and result, so finished tasks outlive
//! the daemon. Progress lines are kept in memory while a task runs and written to
//! `progress.log` in its directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use stockade_core::{Driver, Error};
use stockade_tasks::{Checked, PatchStats, TaskResult, TaskSpec, TaskStore};
use utoipa::ToSchema;

use crate::AppState;

/// A task as the API shows it: running, or its stored result.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TaskView {
    pub id: String,
    pub name: Option<String>,
    pub status: stockade_core::TaskStatus,
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    pub started_at: u64,
    pub agent: String,
    pub driver: String,
    pub code: String,
    pub prompt: String,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub patch: PatchStats,
    pub sandbox: Option<String>,
    pub baseline: Option<String>,
}

impl From<&TaskResult> for TaskView {
    fn from(r: &TaskResult) -> Self {
        TaskView {
            id: r.id.clone(),
            name: r.name.clone(),
            status: r.status,
            exit_code: r.exit_code,
            duration_ms: r.duration_ms,
            started_at: r.started_at,
            agent: r.agent.clone(),
            driver: r.driver.clone(),
            code: r.code.clone(),
            prompt: r.prompt.clone(),
            error: r.error.clone(),
            patch: r.patch.clone(),
            sandbox: r.sandbox.clone(),
            baseline: r.baseline.clone(),
        }
    }
}

/// Tasks this daemon runs now.
#[derive(Debug, Default)]
pub struct Running {
    by_id: Mutex<HashMap<String, RunningTask>>,
}

#[derive(Debug, Clone)]
struct RunningTask {
    view: TaskView,
    progress: Vec<String>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningTask>> {
        self.by_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The running tasks as they started.
    pub fn views(&self) -> Vec<TaskView> {
        self.lock().values().map(|t| t.view.clone()).collect()
    }

    fn view(&self, id: &str) -> Option<TaskView> {
        self.lock().get(id).map(|t| t.view.clone())
    }

    fn contains(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }
}

pub fn store(state: &AppState) -> TaskStore {
    TaskStore::new(&state.home)
}

/// Runs the checked `spec` in the background under a new id; the task as it starts.
pub fn start(state: &Arc<AppState>, mut spec: TaskSpec, checked: Checked) -> stockade_core::Result<TaskView> {
    let id = stockade_store::random_id()?.to_string();
    spec.id = Some(id.clone());
    let view = TaskView {
        id: id.clone(),
        name: spec.name.clone(),
        status: stockade_core::TaskStatus::Running,
        exit_code: None,
        duration_ms: 0,
        started_at: stockade_store::now_secs(),
        agent: spec.agent.clone(),
        driver: spec.driver.clone(),
        code: spec.code.clone(),
        prompt: spec.prompt.clone(),
        error: None,
        patch: PatchStats::default(),
        sandbox: None,
        baseline: None,
    };
    state.tasks.lock().insert(
        id.clone(),
        RunningTask {
            view: view.clone(),
            progress: Vec::new(),
        },
    );
    // Marks the task as this daemon's, so a restart after a crash can close it (see `recover`).
    let task_dir = store(state).dir.join(&id);
    std::fs::create_dir_all(&task_dir)
        .and_then(|()| {
            std::fs::write(
                task_dir.join(DAEMON_MARKER),
                serde_json::to_vec(&view).unwrap_or_default(),
            )
        })
        .map_err(|e| Error::backend(format!("task directory {}", task_dir.display()), e))?;
    state.events.publish(crate::events::task(&id, "running"));
    let bg = Arc::clone(state);
    let bg_view = view.clone();
    tokio::spawn(async move {
        let view = bg_view;
        let store = store(&bg);
        let scratch = bg.home.join("cache");
        let task_dir = store.dir.join(&id);
        let progress_state = Arc::clone(&bg);
        let progress_id = id.clone();
        let mut progress = move |line: &str| {
            if let Some(task) = progress_state.tasks.lock().get_mut(&progress_id) {
                task.progress.push(line.to_owned());
            }
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(task_dir.join("progress.log"))
            {
                let _ = writeln!(f, "{line}");
            }
        };
        let driver = Arc::clone(&bg.driver) as Arc<dyn Driver>;
        let outcome =
            stockade_tasks::run(driver.as_ref(), spec, checked, &store, &scratch, &mut progress).await;
        let status = match &outcome {
            Ok(result) => result.status,
            Err(e) => {
                // Failed before its directory existed: record the error there now.
                write_error_result(&store, &id, &view, e);
                stockade_core::TaskStatus::Error
            }
        };
        bg.tasks.lock().remove(&id);
        bg.events.publish(crate::events::task(&id, status.as_str()));
    });
    Ok(view)
}

/// A file in a task's directory saying a daemon runs it (the task as it started, JSON).
const DAEMON_MARKER: &str = "daemon";

/// At start: a task a daemon ran that has no result died with that daemon (its agent exec ended
/// when the daemon's connection did). Its result says so, and its sandbox is destroyed.
pub async fn recover(state: &AppState) -> usize {
    let store = store(state);
    let Ok(entries) = std::fs::read_dir(&store.dir) else {
        return 0;
    };
    let mut closed = 0;
    for dir in entries.flatten().map(|e| e.path()) {
        if !dir.join(DAEMON_MARKER).exists() || dir.join("result.json").exists() {
            continue;
        }
        let Some(id) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        // The marker holds the task as it was when it started.
        let Ok(view) = std::fs::read(dir.join(DAEMON_MARKER))
            .map_err(|e| e.to_string())
            .and_then(|d| serde_json::from_slice::<TaskView>(&d).map_err(|e| e.to_string()))
        else {
            continue;
        };
        let err = Error::backend("task", "the daemon stopped while this task ran");
        write_error_result(&store, &id, &view, &err);
        for sandbox in state.driver.list().await.unwrap_or_default() {
            if sandbox.spec.labels.get("stockade.task") == Some(&id) {
                let _ = state.driver.destroy(&sandbox.id).await;
            }
        }
        tracing::info!("task {id} ended with the previous daemon; marked as an error");
        state.events.publish(crate::events::task(&id, "error"));
        closed += 1;
    }
    closed
}

fn write_error_result(store: &TaskStore, id: &str, view: &TaskView, err: &Error) {
    let dir = store.dir.join(id);
    let _ = std::fs::create_dir_all(&dir);
    let result = TaskResult {
        id: id.to_owned(),
        name: view.name.clone(),
        status: stockade_core::TaskStatus::Error,
        exit_code: None,
        duration_ms: 0,
        started_at: view.started_at,
        agent: view.agent.clone(),
        provider: None,
        model: None,
        driver: view.driver.clone(),
        code: view.code.clone(),
        code_commit: None,
        baseline: None,
        patch: PatchStats::default(),
        sandbox: None,
        prompt: view.prompt.clone(),
        error: Some(err.to_string()),
        dir: dir.clone(),
    };
    if let Ok(json) = serde_json::to_vec_pretty(&result) {
        let _ = stockade_store::write_atomic(&dir.join("result.json"), &json, 0o644);
    }
}

/// Every task, running and finished, oldest first.
pub fn list(state: &AppState) -> Vec<TaskView> {
    let mut all: Vec<TaskView> = store(state).list().iter().map(TaskView::from).collect();
    for r in state.tasks.views() {
        if !all.iter().any(|t| t.id == r.id) {
            all.push(r);
        }
    }
    all.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
    all
}

/// The task `id`, and its directory once it has finished (`None` while it runs).
pub fn find(state: &AppState, id: &str) -> stockade_core::Result<(TaskView, Option<PathBuf>)> {
    if let Some(view) = state.tasks.view(id) {
        return Ok((view, None));
    }
    let result = store(state)
        .get(id)
        .map_err(|_| Error::NotFound(format!("task {id}")))?;
    if result.id != id {
        return Err(Error::NotFound(format!("task {id}")));
    }
    Ok((TaskView::from(&result), Some(result.dir)))
}

/// One entry of a task's log.
#[derive(Debug, Clone)]
pub enum LogEntry {
    /// A line of `progress.log`, `stdout.log` or `stderr.log`; `stream` is `progress`, `stdout`
    /// or `stderr`.
    Line { stream: &'static str, line: String },
    /// The task has finished: as it ended.
    Done(Box<TaskView>),
}

/// The task's log files, tailed: their lines as they come, whole lines while the task runs,
/// then [`LogEntry::Done`] once it has finished.
pub fn log(state: Arc<AppState>, id: String) -> impl Stream<Item = LogEntry> + Send {
    const FILES: [(&str, &str); 3] = [
        ("progress.log", "progress"),
        ("stdout.log", "stdout"),
        ("stderr.log", "stderr"),
    ];
    struct Tail {
        state: Arc<AppState>,
        id: String,
        dir: PathBuf,
        offsets: [usize; 3],
        pending: std::collections::VecDeque<LogEntry>,
        done: bool,
    }
    let dir = store(&state).dir.join(&id);
    let tail = Tail {
        state,
        id,
        dir,
        offsets: [0; 3],
        pending: Default::default(),
        done: false,
    };
    stream::unfold(tail, |mut t| async move {
        loop {
            if let Some(e) = t.pending.pop_front() {
                return Some((e, t));
            }
            if t.done {
                return None;
            }
            let finished = !t.state.tasks.contains(&t.id);
            for (i, (file, stream)) in FILES.iter().enumerate() {
                let Ok(data) = std::fs::read(t.dir.join(file)) else {
                    continue;
                };
                // Whole lines only, unless the task is over.
                let end = if finished {
                    data.len()
                } else {
                    data.iter().rposition(|b| *b == b'\n').map(|p| p + 1).unwrap_or(0)
                };
                if end > t.offsets[i] {
                    for line in String::from_utf8_lossy(&data[t.offsets[i]..end]).lines() {
                        t.pending.push_back(LogEntry::Line {
                            stream,
                            line: line.to_owned(),
                        });
                    }
                    t.offsets[i] = end;
                }
            }
            if finished {
                if let Ok((view, _)) = find(&t.state, &t.id) {
                    t.pending.push_back(LogEntry::Done(Box::new(view)));
                }
                t.done = true;
                continue;
            }
            if t.pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
}
