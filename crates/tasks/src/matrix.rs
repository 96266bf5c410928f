//! `stockade task --matrix FILE`: tasks × agents × drivers, run in parallel with a bound.
//!
//! ```json
//! { "tasks": [{ "name": "fix", "code": "github:o/r@sha", "prompt": "Fix the bug" }],
//!   "agents": ["claude-code:anthropic:sonnet", "command:make fix"],
//!   "drivers": ["native", "docker"], "parallel": 3, "timeout": "30m" }
//! ```

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use stockade_core::{Driver, Error, Result};

use crate::{Checked, TaskResult, TaskSpec, TaskStore};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixTask {
    pub name: String,
    pub code: String,
    pub prompt: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub tasks: Vec<MatrixTask>,
    pub agents: Vec<String>,
    /// Driver names; the registry's default when absent.
    #[serde(default = "default_driver")]
    pub drivers: Vec<String>,
    #[serde(default)]
    pub parallel: Option<usize>,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
}

/// One empty name: the registry's default driver.
fn default_driver() -> Vec<String> {
    vec![String::new()]
}

impl Matrix {
    /// Reads and checks a matrix file; errors name the file and what is wrong.
    pub fn load(path: &Path) -> Result<Matrix> {
        let data =
            std::fs::read(path).map_err(|e| Error::invalid("matrix", format!("{}: {e}", path.display())))?;
        let m: Matrix = serde_json::from_slice(&data)
            .map_err(|e| Error::invalid("matrix", format!("{}: {e}", path.display())))?;
        if m.tasks.is_empty() || m.agents.is_empty() || m.drivers.is_empty() {
            return Err(Error::invalid(
                "matrix",
                format!("{}: needs at least one task, agent and driver", path.display()),
            ));
        }
        if m.parallel == Some(0) {
            return Err(Error::invalid(
                "matrix",
                format!("{}: parallel must be at least 1", path.display()),
            ));
        }
        Ok(m)
    }

    /// Every combination, tasks outermost.
    pub fn expand(&self, timeout: Duration) -> Vec<TaskSpec> {
        let mut out = Vec::new();
        for t in &self.tasks {
            for a in &self.agents {
                for d in &self.drivers {
                    out.push(TaskSpec {
                        id: None,
                        code: t.code.clone(),
                        agent: a.clone(),
                        prompt: t.prompt.clone(),
                        driver: d.clone(),
                        image: self.image.clone(),
                        timeout,
                        mcp: None,
                        network: None,
                        keep: false,
                        name: Some(t.name.clone()),
                        service: None,
                    });
                }
            }
        }
        out
    }
}

/// Runs `specs` (already checked) at most `parallel` at a time; `progress` hears each end.
pub async fn run_all(
    driver: &dyn Driver,
    specs: Vec<(TaskSpec, Checked)>,
    parallel: usize,
    store: &TaskStore,
    scratch: &Path,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Vec<TaskResult> {
    let total = specs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let runs = futures::stream::iter(specs.into_iter().map(|(spec, checked)| {
        let done = &done;
        async move {
            let label = format!(
                "{} × {} × {}",
                spec.name.clone().unwrap_or_default(),
                spec.agent,
                spec.driver
            );
            let mut quiet = |_: &str| {};
            let result = crate::run(driver, spec.clone(), checked, store, scratch, &mut quiet).await;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            match result {
                Ok(r) => {
                    progress(&format!(
                        "[{n}/{total}] {label}: {} ({} ms)",
                        r.status, r.duration_ms
                    ));
                    r
                }
                Err(e) => {
                    progress(&format!("[{n}/{total}] {label}: error: {e}"));
                    TaskResult {
                        id: String::new(),
                        name: spec.name.clone(),
                        status: stockade_core::TaskStatus::Error,
                        exit_code: None,
                        duration_ms: 0,
                        started_at: stockade_store::now_secs(),
                        agent: spec.agent.clone(),
                        provider: None,
                        model: None,
                        driver: spec.driver.clone(),
                        code: spec.code.clone(),
                        code_commit: None,
                        baseline: None,
                        patch: Default::default(),
                        sandbox: None,
                        prompt: spec.prompt.clone(),
                        error: Some(e.to_string()),
                        dir: Default::default(),
                    }
                }
            }
        }
    }))
    .buffered(parallel.max(1));
    runs.collect().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_expands_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.json");
        std::fs::write(
            &f,
            r#"{"tasks":[{"name":"a","code":"empty","prompt":"p"},{"name":"b","code":"empty","prompt":"q"}],
                "agents":["command:true","command:false"],"drivers":["native","docker"],"parallel":3}"#,
        )
        .unwrap();
        let m = Matrix::load(&f).unwrap();
        let specs = m.expand(Duration::from_secs(60));
        assert_eq!(specs.len(), 8);
        assert_eq!(specs[0].name.as_deref(), Some("a"));
        std::fs::write(&f, r#"{"tasks":[],"agents":["x"]}"#).unwrap();
        assert!(Matrix::load(&f)
            .unwrap_err()
            .to_string()
            .contains("at least one task"));
        std::fs::write(
            &f,
            r#"{"tasks":[{"name":"a","code":"empty","prompt":"p","extra":1}],"agents":["x"]}"#,
        )
        .unwrap();
        assert!(Matrix::load(&f)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }
}
