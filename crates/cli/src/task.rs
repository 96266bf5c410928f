//! `stockade task`: one task, a matrix of them, and the records they leave.

use std::time::Duration;

use stockade_core::{parse, Error, Result, TaskStatus};
use stockade_tasks::{matrix::Matrix, TaskResult, TaskSpec, TaskStore};

use crate::args::{TaskAction, TaskArgs};
use crate::commands::print_json;
use stockade_router::Router;

/// An agent's key: the environment first, then the secret store.
fn env(k: &str) -> Option<String> {
    stockade_secrets::SecretStore::new(&crate::drivers::home_from_env()).env_or_stored(k)
}

/// Checks a task's driver against the registry (an empty name is the default) and the task
/// against the environment.
fn check(
    router: &Router,
    spec: &mut TaskSpec,
    file: Option<&std::path::Path>,
) -> Result<stockade_tasks::Checked> {
    let registry = router.registry();
    let named = registry.check(&spec.driver).map_err(|e| match (e, file) {
        (Error::InvalidSpec { field, reason }, Some(file)) => {
            Error::invalid(field, format!("{}: {reason}", file.display()))
        }
        (e, _) => e,
    })?;
    spec.driver = named.to_owned();
    stockade_tasks::check(spec, &env, registry.factory(named)?.takes_images())
}

/// The exit code for a task's status.
fn code_for(status: TaskStatus) -> i32 {
    match status {
        TaskStatus::Succeeded => 0,
        TaskStatus::Failed => 1,
        TaskStatus::TimedOut => crate::exit::TIMEOUT,
        TaskStatus::Running | TaskStatus::Error => crate::exit::BACKEND,
    }
}

fn summary(r: &TaskResult) -> String {
    let model = match (&r.provider, &r.model) {
        (Some(p), Some(m)) => format!(":{p}:{m}"),
        (None, Some(m)) => format!(":{m}"),
        _ => String::new(),
    };
    let mut s = format!(
        "task {} {} in {:.1} s (agent {}{model}, driver {}, exit {}): {} files changed, +{} -{}\n  {}",
        r.id,
        r.status,
        r.duration_ms as f64 / 1000.0,
        r.agent,
        r.driver,
        r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
        r.patch.files,
        r.patch.insertions,
        r.patch.deletions,
        r.dir.join("patch.diff").display()
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("\n  error: {e}"));
    }
    s
}

fn table(results: &[TaskResult]) {
    println!(
        "{:<14} {:<30} {:<8} {:<10} {:>5} {:>9} {:>6} {:>12}  ID",
        "NAME", "AGENT", "DRIVER", "STATUS", "EXIT", "TIME", "FILES", "+/-"
    );
    for r in results {
        let mut agent = r.agent.clone();
        if let Some(m) = &r.model {
            agent.push(':');
            agent.push_str(m);
        }
        println!(
            "{:<14} {:<30} {:<8} {:<10} {:>5} {:>8.1}s {:>6} {:>12}  {}",
            r.name.clone().unwrap_or_else(|| "-".into()),
            agent,
            r.driver,
            r.status,
            r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            r.duration_ms as f64 / 1000.0,
            r.patch.files,
            format!("+{} -{}", r.patch.insertions, r.patch.deletions),
            if r.id.is_empty() {
                r.error.clone().unwrap_or_default()
            } else {
                r.id.clone()
            }
        );
    }
}

pub async fn run(router: &Router, a: TaskArgs) -> Result<i32> {
    let home = router.registry().config().home.clone();
    let store = TaskStore::new(&home);
    let scratch = home.join("cache");
    match a.action {
        Some(TaskAction::Ls(l)) => {
            let all = store.list();
            if l.json {
                print_json(&all);
            } else {
                table(&all);
            }
            return Ok(0);
        }
        Some(TaskAction::Show { id }) => {
            print_json(&store.get(&id)?);
            return Ok(0);
        }
        None => {}
    }
    let timeout = parse::duration("timeout", &a.timeout)?;
    if let Some(file) = &a.matrix {
        return matrix(router, &a, std::path::Path::new(file), timeout, &store, &scratch).await;
    }
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| Error::invalid(flag, format!("--{flag} is required (or --matrix FILE)")))
    };
    let mut spec = TaskSpec {
        id: None,
        code: need(&a.code, "code")?,
        agent: need(&a.agent, "agent")?,
        prompt: a.prompt.clone().unwrap_or_default(),
        driver: a.driver.clone().unwrap_or_default(),
        image: a.image.clone(),
        timeout,
        mcp: a.mcp.as_ref().map(Into::into),
        network: a.network.as_deref().map(str::parse).transpose()?,
        keep: a.keep,
        name: None,
        service: a.service.clone(),
    };
    let checked = check(router, &mut spec, None)?;
    let mut progress = crate::progress::sink();
    let result = stockade_tasks::run(router, spec, checked, &store, &scratch, &mut progress).await;
    crate::progress::finish();
    let result = result?;
    if a.json {
        print_json(&result);
    } else {
        println!("{}", summary(&result));
    }
    Ok(code_for(result.status))
}

async fn matrix(
    router: &Router,
    a: &TaskArgs,
    file: &std::path::Path,
    timeout: Duration,
    store: &TaskStore,
    scratch: &std::path::Path,
) -> Result<i32> {
    let m = Matrix::load(file)?;
    let timeout = match &m.timeout {
        Some(t) => parse::duration("timeout", t)?,
        None => timeout,
    };
    // Everything is checked before the first sandbox: agents, keys, sources, drivers.
    let mut specs = Vec::new();
    for mut spec in m.expand(timeout) {
        let checked = check(router, &mut spec, Some(file))?;
        specs.push((spec, checked));
    }
    let parallel = m.parallel.unwrap_or(2);
    eprintln!("stockade: {} tasks, {parallel} at a time", specs.len());
    let progress = |line: &str| eprintln!("stockade: {line}");
    let results = stockade_tasks::matrix::run_all(router, specs, parallel, store, scratch, &progress).await;
    if a.json {
        print_json(&results);
    } else {
        table(&results);
    }
    Ok(if results.iter().all(|r| r.status == TaskStatus::Succeeded) {
        0
    } else {
        1
    })
}
