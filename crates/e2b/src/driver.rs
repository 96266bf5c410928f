//! [`E2bDriver`]: the [`Driver`] trait over E2B's control plane and each sandbox's envd, with
//! the local records that give E2B's sandboxes Stockade's ids and names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use stockade_core::{
    Driver, DriverAdmin, DriverConfig, DriverFacts, Error, ExecRequest, ExecSession, FileOp, FileReply,
    Result, SandboxId, SandboxInfo, SandboxSpec, SandboxStatus, Stats,
};
use stockade_store::{RecordStore, StoredRecord};

use crate::config::{self, Endpoints};
use crate::control::{Api, Paused, SandboxDetail};
use crate::envd::Envd;
use crate::files::Files;
use crate::http::Http;
use crate::process::{self, Control, EventReader};
use crate::spec;
use crate::NAME;

/// Kept execs remembered per sandbox (the oldest are forgotten past this).
const KEPT_EXECS: usize = 256;

/// What E2B said about a sandbox when it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Remote {
    sandbox_id: String,
    template_id: String,
    envd_version: String,
    /// envd's access token (`X-Access-Token`); the record file is 0600.
    access_token: Option<String>,
    domain: Option<String>,
}

/// A kept exec: the process envd runs it as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct KeptExec {
    /// 0 while it is being started.
    pid: u32,
    program: String,
    tty: bool,
    user: Option<String>,
    /// Unix seconds.
    started_at: u64,
}

/// One sandbox's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: SandboxId,
    name: String,
    created_at: u64,
    spec: SandboxSpec,
    /// As last known here; E2B's answer wins when there is one.
    status: SandboxStatus,
    /// `None` while the create is in flight.
    #[serde(default)]
    remote: Option<Remote>,
    #[serde(default)]
    execs: BTreeMap<String, KeptExec>,
}

impl StoredRecord for Record {
    fn id(&self) -> &SandboxId {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn created_at(&self) -> u64 {
        self.created_at
    }
    fn driver(&self) -> &str {
        NAME
    }
}

/// The e2b driver over one Stockade home.
pub struct E2bDriver {
    records: RecordStore<Record>,
    home: PathBuf,
    config: DriverConfig,
    endpoints: Endpoints,
    http: Http,
}

impl std::fmt::Debug for E2bDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bDriver")
            .field("home", &self.home)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// E2B's state as Stockade's status: `None` when E2B has no such sandbox.
fn status_of(detail: Option<&SandboxDetail>, recorded: SandboxStatus) -> SandboxStatus {
    match detail.map(|d| d.state.as_str()) {
        Some("running") => SandboxStatus::Running,
        Some("paused") => SandboxStatus::Stopped,
        Some(_) => recorded,
        // A create still in flight has no E2B sandbox yet; otherwise E2B killed it (its
        // timeout passed, or someone killed it elsewhere).
        None if recorded == SandboxStatus::Creating => SandboxStatus::Creating,
        None => SandboxStatus::Lost,
    }
}

fn wrong_state(id: &SandboxId, status: SandboxStatus, operation: &str, needed: &str) -> Error {
    Error::WrongState {
        id: id.to_string(),
        status: status.to_string(),
        operation: operation.into(),
        needed: needed.into(),
    }
}

impl E2bDriver {
    /// The driver for `config`: its records under `home/e2b`, endpoints from its environment.
    pub fn from_config(config: &DriverConfig) -> Result<E2bDriver> {
        let dir = config.home.join(NAME);
        Ok(E2bDriver {
            records: RecordStore::new(dir.join("records"), dir.join("lock"))
                .with_index(stockade_store::Index::of_home(&config.home), NAME)?,
            home: config.home.clone(),
            config: config.clone(),
            endpoints: Endpoints::from_config(config)?,
            http: Http::new()?,
        })
    }

    /// The control plane with this home's key.
    fn api(&self) -> Result<Api> {
        let (key, _) = config::api_key(&self.home, &self.config)?;
        Ok(Api::new(self.http.clone(), self.endpoints.api.clone(), key))
    }

    fn envd(&self, remote: &Remote) -> Envd {
        Envd::new(
            self.http.clone(),
            self.endpoints.envd(&remote.sandbox_id, remote.domain.as_deref()),
            remote.sandbox_id.clone(),
            remote.access_token.clone(),
        )
    }

    /// The record of `id` and its E2B sandbox (an error while it is still being made).
    fn remote(&self, id: &SandboxId, operation: &str) -> Result<(Record, Remote)> {
        let record = self.records.load(id)?;
        match record.remote.clone() {
            Some(remote) => Ok((record, remote)),
            None => Err(wrong_state(id, record.status, operation, "running")),
        }
    }

    fn info(record: &Record, detail: Option<&SandboxDetail>, api_error: Option<&Error>) -> SandboxInfo {
        let status = match api_error {
            Some(_) => record.status,
            None => status_of(detail, record.status),
        };
        let mut details = serde_json::Map::new();
        if let Some(r) = &record.remote {
            details.insert("e2b_sandbox_id".into(), json!(r.sandbox_id));
            details.insert("template".into(), json!(r.template_id));
            details.insert("envd_version".into(), json!(r.envd_version));
        }
        if let Some(d) = detail {
            if let Some(end) = &d.end_at {
                details.insert("end_at".into(), json!(end));
            }
        }
        if let Some(e) = api_error {
            details.insert("api_error".into(), json!(e.to_string()));
        }
        SandboxInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            driver: NAME.into(),
            status,
            created_at: record.created_at,
            spec: record.spec.clone(),
            details,
        }
    }

    /// A "not running" from envd said precisely: paused (stopped) or gone (lost).
    async fn refine(&self, e: Error, record: &Record, remote: &Remote, operation: &str) -> Error {
        let Error::WrongState { status, .. } = &e else {
            return e;
        };
        if status != "not running" {
            return e;
        }
        let Ok(api) = self.api() else {
            return e;
        };
        match api.get(&remote.sandbox_id).await {
            Ok(detail) => {
                let status = status_of(detail.as_ref(), SandboxStatus::Running);
                wrong_state(&record.id, status, operation, "running")
            }
            Err(_) => e,
        }
    }

    /// The user an exec or file operation runs as: the request's, else the spec's, else the
    /// template's default (no `Authorization` header).
    fn user_of(record: &Record, asked: Option<&str>) -> Result<Option<String>> {
        let user = asked.or(record.spec.user.as_deref()).map(str::to_owned);
        if let Some(u) = &user {
            spec::check_user(u)?;
        }
        Ok(user)
    }

    /// Starts `req` in the sandbox and waits for its process to start; events are numbered
    /// from 0.
    async fn start_exec(
        &self,
        record: &Record,
        remote: &Remote,
        req: &ExecRequest,
        kill_on_drop: bool,
    ) -> Result<(ExecSession, Control)> {
        req.validate()?;
        let user = Self::user_of(record, req.user.as_deref())?;
        let cwd = req.cwd.clone().unwrap_or_else(|| record.spec.workdir.clone());
        let message = process::start_message(req, &cwd);
        let envd = self.envd(remote);
        let timeout_ms = req
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        let body = match envd
            .open_stream("process.Process/Start", &message, user.as_deref(), timeout_ms)
            .await
        {
            Ok(body) => body,
            Err(e) => {
                let e = process::call_error(e, "exec");
                return Err(self.refine(e, record, remote, "exec").await);
            }
        };
        let program = req.argv.first().cloned().unwrap_or_default();
        let mut reader = EventReader::new(body, &program, 0);
        let pid = reader.first().await?;
        let control = Control {
            envd,
            pid,
            tty: req.tty.is_some(),
            user,
        };
        if kill_on_drop {
            reader.kill_on_drop(Arc::new(control.clone()));
        }
        let started = reader.started_event(pid);
        Ok((session(Some(started), reader, control.clone()), control))
    }

    /// Makes the spec's workdir, as root: a template's default user may not write where it goes.
    async fn make_workdir(&self, record: &Record, remote: &Remote) -> Result<()> {
        let envd = self.envd(remote);
        Files {
            envd: &envd,
            user: Some("root"),
        }
        .run(FileOp::Mkdir {
            path: record.spec.workdir.clone(),
        })
        .await
        .map(drop)
        .map_err(|e| Error::backend(format!("making the workdir {}", record.spec.workdir), e))
    }

    /// Under the store lock: `f` on the record of `id`, saved after.
    fn update<T>(&self, id: &SandboxId, f: impl FnOnce(&mut Record) -> Result<T>) -> Result<T> {
        let _lock = self.records.lock()?;
        let mut record = self.records.load(id)?;
        let out = f(&mut record)?;
        self.records.save(&record)?;
        Ok(out)
    }
}

/// A session over `reader`, with `first` (the start) ahead of its events.
fn session(first: Option<stockade_core::ExecEvent>, reader: EventReader, control: Control) -> ExecSession {
    let head = futures::stream::iter(first.map(Ok));
    let rest = futures::stream::unfold(
        reader,
        |mut r| async move { r.next_event().await.map(|e| (e, r)) },
    );
    ExecSession {
        events: Box::pin(head.chain(rest)),
        control: Arc::new(control),
    }
}

#[async_trait]
impl DriverAdmin for E2bDriver {
    async fn probe(&self) -> Result<()> {
        let api = self.api()?;
        // One cheap authenticated read says the endpoint answers and takes the key.
        match tokio::time::timeout(Duration::from_secs(10), api.list()).await {
            Ok(listed) => listed.map(drop),
            Err(_) => Err(Error::Timeout(
                Duration::from_secs(10),
                format!("the E2B API at {}", self.endpoints.api),
            )),
        }
    }

    async fn facts(&self) -> Result<DriverFacts> {
        let (_, from) = config::api_key(&self.home, &self.config)?;
        self.probe().await?;
        let envd = match &self.endpoints.sandbox_url {
            Some(url) => format!("{url} (E2B_SANDBOX_URL, routed by E2b-Sandbox-Id)"),
            None => format!("https://49983-<sandbox>.{}", self.endpoints.domain),
        };
        Ok(DriverFacts {
            summary: format!("E2B API at {}", self.endpoints.api),
            details: vec![
                ("API key".into(), format!("from {}", from.describe())),
                ("envd".into(), envd),
                (
                    "defaults".into(),
                    format!(
                        "template {} (--image), timeout {} s (--ttl)",
                        spec::DEFAULT_TEMPLATE,
                        spec::DEFAULT_TIMEOUT.as_secs()
                    ),
                ),
            ],
            json: json!({
                "api": self.endpoints.api,
                "sandbox_url": self.endpoints.sandbox_url,
                "domain": self.endpoints.domain,
                "key_from": from.describe(),
                "default_template": spec::DEFAULT_TEMPLATE,
                "default_timeout_secs": spec::DEFAULT_TIMEOUT.as_secs(),
            }),
        })
    }
}

#[async_trait]
impl Driver for E2bDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn admin(&self) -> Option<&dyn DriverAdmin> {
        Some(self)
    }

    async fn create(&self, mut spec: SandboxSpec) -> Result<SandboxInfo> {
        spec.validate()?;
        if !spec.driver.is_empty() && spec.driver != NAME {
            return Err(Error::invalid(
                "driver",
                format!("{:?} given to the e2b driver", spec.driver),
            ));
        }
        spec.driver = NAME.into();
        let id = stockade_store::random_id()?;
        let name = spec.name.clone().unwrap_or_else(|| id.to_string());
        let body = spec::create_request(&spec, &id, &name)?;
        let api = self.api()?;
        let mut record = Record {
            id: id.clone(),
            name,
            created_at: stockade_store::now_secs(),
            spec,
            status: SandboxStatus::Creating,
            remote: None,
            execs: BTreeMap::new(),
        };
        {
            // The name is claimed before E2B is asked, so two creates cannot both take it.
            let _lock = self.records.lock()?;
            if record.spec.name.is_some() && self.records.name_taken(&record.name)? {
                return Err(Error::NameTaken(record.name));
            }
            self.records.save(&record)?;
        }
        let created = match api.create(&body).await {
            Ok(c) => c,
            Err(e) => {
                let _ = self.records.remove(&id);
                return Err(e);
            }
        };
        let remote = Remote {
            sandbox_id: created.sandbox_id,
            template_id: created.template_id,
            envd_version: created.envd_version,
            access_token: created.envd_access_token,
            domain: created.domain,
        };
        record.remote = Some(remote.clone());
        record.status = SandboxStatus::Running;
        let made = async {
            self.records.save(&record)?;
            self.make_workdir(&record, &remote).await
        }
        .await;
        if let Err(e) = made {
            let _ = api.kill(&remote.sandbox_id).await;
            let _ = self.records.remove(&id);
            return Err(e);
        }
        Ok(Self::info(&record, None, None))
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let records = self.records.list()?;
        if records.iter().all(|r| r.remote.is_none()) {
            return Ok(records.iter().map(|r| Self::info(r, None, None)).collect());
        }
        let listed = match self.api() {
            Ok(api) => api.list().await,
            Err(e) => Err(e),
        };
        Ok(match listed {
            Ok(sandboxes) => {
                let by_id: BTreeMap<&str, &SandboxDetail> =
                    sandboxes.iter().map(|s| (s.sandbox_id.as_str(), s)).collect();
                records
                    .iter()
                    .map(|r| {
                        let detail = r
                            .remote
                            .as_ref()
                            .and_then(|remote| by_id.get(remote.sandbox_id.as_str()).copied());
                        Self::info(r, detail, None)
                    })
                    .collect()
            }
            Err(e) => records.iter().map(|r| Self::info(r, None, Some(&e))).collect(),
        })
    }

    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        let record = self.records.resolve(id_or_name)?;
        let Some(remote) = &record.remote else {
            return Ok(Self::info(&record, None, None));
        };
        let fetched = match self.api() {
            Ok(api) => api.get(&remote.sandbox_id).await,
            Err(e) => Err(e),
        };
        Ok(match fetched {
            Ok(detail) => Self::info(&record, detail.as_ref(), None),
            Err(e) => Self::info(&record, None, Some(&e)),
        })
    }

    async fn stop(&self, id: &SandboxId) -> Result<()> {
        let (_, remote) = self.remote(id, "stop")?;
        match self.api()?.pause(&remote.sandbox_id).await? {
            Paused::Now => {}
            Paused::Already => return Err(wrong_state(id, SandboxStatus::Stopped, "stop", "running")),
            Paused::NoSuchSandbox => return Err(wrong_state(id, SandboxStatus::Lost, "stop", "running")),
        }
        self.update(id, |r| {
            r.status = SandboxStatus::Stopped;
            Ok(())
        })
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        let (record, remote) = self.remote(id, "start")?;
        let api = self.api()?;
        let status = status_of(api.get(&remote.sandbox_id).await?.as_ref(), record.status);
        if status != SandboxStatus::Stopped {
            return Err(wrong_state(id, status, "start", "stopped"));
        }
        let timeout = record.spec.ttl.unwrap_or(spec::DEFAULT_TIMEOUT).as_secs().max(1);
        let Some(connected) = api.connect(&remote.sandbox_id, timeout).await? else {
            return Err(wrong_state(id, SandboxStatus::Lost, "start", "stopped"));
        };
        let remote = self.update(id, |r| {
            r.status = SandboxStatus::Running;
            if let Some(remote) = &mut r.remote {
                if connected.envd_access_token.is_some() {
                    remote.access_token = connected.envd_access_token.clone();
                }
                if connected.domain.is_some() {
                    remote.domain = connected.domain.clone();
                }
            }
            Ok(r.remote.clone().unwrap_or(remote))
        })?;
        // A workdir on a file system that does not outlive a pause (a tmpfs) is made again.
        self.make_workdir(&record, &remote).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let record = self.records.load(id)?;
        if let Some(remote) = &record.remote {
            // Killed, or already gone: either way E2B holds nothing of it now.
            self.api()?.kill(&remote.sandbox_id).await?;
        }
        self.records.remove(id)
    }

    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        let (record, remote) = self.remote(id, "exec")?;
        Ok(self.start_exec(&record, &remote, &req, true).await?.0)
    }

    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        if exec_id.is_empty() || exec_id.len() > 128 || exec_id.chars().any(char::is_control) {
            return Err(Error::invalid("exec id", "must be 1 to 128 printable characters"));
        }
        let program = req.argv.first().cloned().unwrap_or_default();
        let (record, remote) = self.remote(id, "exec")?;
        // Reserved first, so a second exec under the same id is refused while this one starts.
        self.update(id, |r| {
            if r.execs.contains_key(exec_id) {
                return Err(Error::invalid(
                    "exec id",
                    format!("{exec_id:?} is already in use in this sandbox"),
                ));
            }
            while r.execs.len() >= KEPT_EXECS {
                let oldest = r
                    .execs
                    .iter()
                    .min_by_key(|(_, e)| e.started_at)
                    .map(|(k, _)| k.clone());
                match oldest {
                    Some(k) => r.execs.remove(&k),
                    None => break,
                };
            }
            r.execs.insert(
                exec_id.to_owned(),
                KeptExec {
                    pid: 0,
                    program: program.clone(),
                    tty: req.tty.is_some(),
                    user: None,
                    started_at: stockade_store::now_secs(),
                },
            );
            Ok(())
        })?;
        let started = self.start_exec(&record, &remote, &req, false).await;
        let (session, control) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = self.update(id, |r| {
                    r.execs.remove(exec_id);
                    Ok(())
                });
                return Err(e);
            }
        };
        self.update(id, |r| {
            if let Some(kept) = r.execs.get_mut(exec_id) {
                kept.pid = control.pid;
                kept.user = control.user.clone();
            }
            Ok(())
        })?;
        Ok(session)
    }

    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        let (record, remote) = self.remote(id, "attach")?;
        let kept = record
            .execs
            .get(exec_id)
            .filter(|k| k.pid != 0)
            .cloned()
            .ok_or_else(|| Error::ExecNotFound(exec_id.to_owned()))?;
        let envd = self.envd(&remote);
        let message = json!({ "process": { "pid": kept.pid } });
        let body = match envd
            .open_stream("process.Process/Connect", &message, kept.user.as_deref(), None)
            .await
        {
            Ok(body) => body,
            Err(e) => {
                let e = process::call_error(e, "attach");
                return Err(self.refine(e, &record, &remote, "attach").await);
            }
        };
        // Live events only: numbered from where the caller says it is.
        let mut reader = EventReader::new(body, &kept.program, from_seq);
        let pid = match reader.first().await {
            Ok(pid) => pid,
            Err(Error::ExecNotFound(_)) => {
                return Err(Error::ExecNotFound(format!(
                    "{exec_id} (its process {} has ended, and envd keeps no output of ended processes)",
                    kept.pid
                )))
            }
            Err(e) => return Err(e),
        };
        let first = (from_seq == 0).then(|| reader.started_event(pid));
        let control = Control {
            envd,
            pid,
            tty: kept.tty,
            user: kept.user,
        };
        Ok(session(first, reader, control))
    }

    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        let (record, remote) = self.remote(id, "file operations")?;
        let user = Self::user_of(&record, None)?;
        let envd = self.envd(&remote);
        let files = Files {
            envd: &envd,
            user: user.as_deref(),
        };
        match files.run(op).await {
            Ok(reply) => Ok(reply),
            Err(e) => Err(self.refine(e, &record, &remote, "file operations").await),
        }
    }

    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        let (_, remote) = self.remote(id, "stats")?;
        let Some(samples) = self.api()?.metrics(&remote.sandbox_id).await? else {
            return Err(wrong_state(id, SandboxStatus::Lost, "stats", "running"));
        };
        let Some(last) = samples.iter().max_by_key(|s| s.timestamp_unix) else {
            // E2B keeps no samples of a paused sandbox.
            return Err(wrong_state(id, SandboxStatus::Stopped, "stats", "running"));
        };
        Ok(Stats {
            cpu_usec: 0,
            memory_bytes: last.mem_used,
            memory_peak_bytes: 0,
            pids: 0,
            source: "e2b metrics (memory in use only: E2B reports CPU as a percentage per sample, \
                     not CPU time, and no process count)"
                .into(),
        })
    }
}
