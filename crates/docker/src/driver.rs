//! The `Driver` implementation: records on the host, containers on the engine, the agent
//! protocol for everything inside.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StatsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use stockade_core::resilience::{Backoff, BreakerState, CircuitBreaker};
use stockade_core::{
    Driver, Error, ExecRequest, ExecSession, FileOp, FileReply, NetworkMode, Result, SandboxId, SandboxInfo,
    SandboxSpec, SandboxStatus, Stats,
};
use stockade_store::{now_secs, random_id, RecordStore, StoredRecord};
use tokio::net::UnixStream;

use crate::container::{self, HostSide, LABEL_ID, LABEL_OWNER};
use crate::engine::{short, Engine, EngineFacts, Flavor};
use crate::image;
use crate::transport::{self, Transport};

/// How long a container may take from start to a listening agent.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The image used when a spec names none.
pub const DEFAULT_IMAGE: &str = "stockade/base:latest";

/// What is stored for each container sandbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: SandboxId,
    pub name: String,
    /// `docker` or `podman`: the driver name it was created with.
    pub driver: String,
    /// The status last asked for (`running` after create and start, `stopped` after stop); the
    /// status shown combines it with the container's state.
    pub status: SandboxStatus,
    pub created_at: u64,
    pub spec: SandboxSpec,
    /// The engine endpoint the container lives on.
    pub engine: String,
    pub container: String,
    pub image: String,
    /// The per-sandbox network, for `--network full`.
    pub network: Option<String>,
    pub transport: Transport,
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
        &self.driver
    }
}

/// Facts learned once the container runs, kept beside the record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Runtime {
    /// The container's memory cgroup OOM-kill counter file, when the host can read it.
    oom_counter: Option<PathBuf>,
}

pub use stockade_core::ProgressSink;

/// The docker driver over one Stockade home.
pub struct DockerDriver {
    name: &'static str,
    flavor: Flavor,
    dir: PathBuf,
    owner: String,
    records: RecordStore<Record>,
    agent: PathBuf,
    engines: Mutex<HashMap<String, Engine>>,
    default_engine: tokio::sync::OnceCell<Engine>,
    progress: ProgressSink,
    force_transport: Option<Transport>,
    /// The caller's environment, for engine discovery (`DOCKER_HOST`, ...).
    env: std::collections::BTreeMap<String, String>,
    /// Per engine endpoint: opens after repeated connection failures, so a dead engine costs one
    /// quick error instead of a timeout per call.
    breakers: Mutex<HashMap<String, CircuitBreaker>>,
    backoff: Backoff,
}

impl std::fmt::Debug for DockerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerDriver")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn engine_err(what: impl Into<String>, e: &bollard::errors::Error) -> Error {
    Error::backend(what, short(e))
}

fn is_404(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }
    )
}

impl DockerDriver {
    /// A driver over the Stockade home `home`, mounting `agent` (a static `stockade-agent`) into
    /// every container. `name` is `docker` (any engine) or `podman` (Podman's sockets only).
    pub fn new(home: &Path, agent: PathBuf, name: &'static str) -> Result<Self> {
        let flavor = match name {
            "docker" => Flavor::Any,
            "podman" => Flavor::Podman,
            other => {
                return Err(Error::invalid(
                    "driver",
                    format!("{other:?} is not a container driver"),
                ))
            }
        };
        let dir = home.join("docker");
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(DockerDriver {
            name,
            flavor,
            records: RecordStore::new(dir.join("records"), dir.join("lock"))
                .with_index(stockade_store::Index::of_home(home), "docker")?,
            owner: format!("{hostname}:{}", home.display()),
            dir,
            agent,
            engines: Mutex::new(HashMap::new()),
            default_engine: tokio::sync::OnceCell::new(),
            progress: Arc::new(|_| {}),
            breakers: Mutex::new(HashMap::new()),
            backoff: Backoff::default(),
            force_transport: None,
            env: Default::default(),
        })
    }

    /// The driver `name` over `config`: its home, the static agent found from it, engine
    /// discovery in its environment, and `STOCKADE_DOCKER_TRANSPORT` (`socket` or `engine-exec`)
    /// from there too.
    pub fn from_config(config: &stockade_core::DriverConfig, name: &'static str) -> Result<Self> {
        let agent = stockade_proto::agent_binary::find(config, "docker")?;
        let mut driver =
            DockerDriver::new(&config.home, agent, name)?.with_progress(Arc::clone(&config.progress));
        driver.force_transport = match config.var("STOCKADE_DOCKER_TRANSPORT") {
            Some("engine-exec") => Some(Transport::EngineExec),
            Some("socket") => Some(Transport::Socket),
            None => None,
            Some(other) => {
                return Err(Error::invalid(
                    "STOCKADE_DOCKER_TRANSPORT",
                    format!("{other:?}: expected socket or engine-exec"),
                ))
            }
        };
        driver.env = config.env.clone();
        Ok(driver)
    }

    /// Where slow steps report progress (the CLI prints it on stderr).
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = sink;
        self
    }

    /// Uses `engine` for new sandboxes instead of discovering one.
    pub fn with_engine(self, engine: Engine) -> Self {
        let _ = self.default_engine.set(engine);
        self
    }

    /// Reaches the agent through the engine's exec API even where a socket would work.
    pub fn with_transport(mut self, transport: Transport) -> Self {
        self.force_transport = Some(transport);
        self
    }

    /// The engine new sandboxes go to.
    pub async fn engine(&self) -> Result<&Engine> {
        self.default_engine
            .get_or_try_init(|| Engine::discover(self.flavor, &self.env))
            .await
    }

    /// What `stockade info` shows.
    pub async fn facts(&self) -> Result<EngineFacts> {
        self.engine().await?.facts().await
    }

    fn engine_at(&self, endpoint: &str) -> Result<Engine> {
        if let Some(e) = self.default_engine.get().filter(|e| e.endpoint == endpoint) {
            return Ok(e.clone());
        }
        let mut engines = self.engines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = engines.get(endpoint) {
            return Ok(e.clone());
        }
        let engine = Engine::connect(endpoint, "sandbox record")?;
        engines.insert(endpoint.to_owned(), engine.clone());
        Ok(engine)
    }

    fn sandbox_dir(&self, id: &SandboxId) -> PathBuf {
        self.dir.join("sandboxes").join(id.as_str())
    }
    fn run_dir(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("run")
    }
    fn socket(&self, id: &SandboxId) -> PathBuf {
        self.run_dir(id).join("agent.sock")
    }
    fn workspace(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("workspace")
    }
    fn root_home(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("root")
    }
    fn runtime_file(&self, id: &SandboxId) -> PathBuf {
        self.sandbox_dir(id).join("runtime.json")
    }

    /// The record of a sandbox, for callers that route by driver.
    pub fn record(&self, id_or_name: &str) -> Result<Record> {
        self.records.resolve(id_or_name)
    }

    /// Every record, without asking any engine.
    pub fn records(&self) -> Result<Vec<Record>> {
        self.records.list()
    }

    fn check_spec(&self, spec: &SandboxSpec) -> Result<()> {
        spec.validate()?;
        if !spec.driver.is_empty() && spec.driver != self.name {
            return Err(Error::invalid(
                "driver",
                format!("{:?} given to the {} driver", spec.driver, self.name),
            ));
        }
        if spec.rootfs.is_some() {
            return Err(Error::unsupported(
                self.name,
                "--rootfs",
                "containers start from an image; make one from a directory with `stockade image import`",
            ));
        }
        if spec.resources.disk_bytes.is_some() {
            return Err(Error::unsupported(
                self.name,
                "disk limit",
                "the overlay2 storage driver limits a container's disk only on xfs with project quotas; \
                 use --driver native --disk",
            ));
        }
        for m in &spec.mounts {
            if !m.host.exists() {
                return Err(Error::invalid(
                    "volume",
                    format!("{}: no such file or directory on the host", m.host.display()),
                ));
            }
        }
        if !self.agent.is_file() {
            return Err(Error::unsupported(
                self.name,
                "sandboxes",
                format!("the agent binary {} is missing", self.agent.display()),
            ));
        }
        Ok(())
    }

    /// Picks the runtime, transport and network for `spec` on `facts`' engine, or says why not.
    fn plan(&self, spec: &SandboxSpec, facts: &EngineFacts) -> Result<Transport> {
        let runtime_name = spec.runtime.as_deref().unwrap_or(&facts.default_runtime);
        let runtime = facts.runtimes.iter().find(|r| r.name == runtime_name);
        if spec.runtime.is_some() && runtime.is_none() && !facts.runtimes.is_empty() {
            let known: Vec<&str> = facts.runtimes.iter().map(|r| r.name.as_str()).collect();
            return Err(Error::invalid(
                "runtime",
                format!(
                    "{runtime_name:?} is not a runtime of the engine at {} (it knows: {}). Register it \
                     (Docker: \"runtimes\" in /etc/docker/daemon.json, then restart dockerd)",
                    facts.endpoint,
                    known.join(", ")
                ),
            ));
        }
        if spec.network == NetworkMode::Full && runtime.is_some_and(|r| r.has_no_network()) {
            return Err(Error::unsupported(
                self.name,
                "--network full",
                format!("the engine runs {runtime_name} with --network=none, so its containers have loopback only"),
            ));
        }
        let local = crate::engine::socket_path(&facts.endpoint).is_some();
        if !local {
            return Err(Error::unsupported(
                self.name,
                "remote engines",
                format!(
                    "{} is not a local socket; the agent and workspace are bind-mounted from this host",
                    facts.endpoint
                ),
            ));
        }
        let transport = match self.force_transport {
            Some(t) => t,
            None if runtime.is_some_and(|r| r.blocks_host_sockets()) => {
                (self.progress)(&format!(
                    "note: {runtime_name} does not let the agent's socket reach the host (add --host-uds=all to its \
                     runtimeArgs for fast exec); using the engine's exec API instead"
                ));
                Transport::EngineExec
            }
            None => Transport::Socket,
        };
        Ok(transport)
    }

    fn host_side(&self, record: &Record) -> HostSide {
        HostSide {
            id: record.id.clone(),
            owner: self.owner.clone(),
            agent: self.agent.clone(),
            run_dir: self.run_dir(&record.id),
            workspace: self.workspace(&record.id),
            root_home: self.root_home(&record.id),
            network: record.network.clone(),
            limits: crate::engine::local_engine_limits(&record.engine),
        }
    }

    /// Makes the network, container and host directories of `record` and starts it.
    async fn build(&self, engine: &Engine, record: &Record) -> Result<()> {
        for dir in [
            self.run_dir(&record.id),
            self.workspace(&record.id),
            self.root_home(&record.id),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::backend(format!("create {}", dir.display()), e))?;
        }
        let _ = std::fs::set_permissions(
            self.root_home(&record.id),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        if let Some(network) = &record.network {
            let labels = HashMap::from([
                (LABEL_ID.to_owned(), record.id.to_string()),
                (LABEL_OWNER.to_owned(), self.owner.clone()),
            ]);
            crate::firewall::ensure()?;
            let options = HashMap::from([(
                "com.docker.network.bridge.name".to_owned(),
                crate::firewall::bridge_name(record.id.as_str()),
            )]);
            match engine
                .client
                .create_network(NetworkCreateRequest {
                    name: network.clone(),
                    driver: Some("bridge".into()),
                    labels: Some(labels),
                    options: Some(options),
                    ..Default::default()
                })
                .await
            {
                Ok(_) => {}
                // Left from before (a lost sandbox started again): it is ours, by name and label.
                Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {}
                Err(e) => return Err(engine_err(format!("create network {network}"), &e)),
            }
        }
        let body = container::create_body(&record.spec, &record.image, &self.host_side(record));
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(&record.container)
            .build();
        engine
            .client
            .create_container(Some(options), body)
            .await
            .map_err(|e| self.create_error(record, &e))?;
        self.launch(engine, record).await
    }

    fn create_error(&self, record: &Record, e: &bollard::errors::Error) -> Error {
        let msg = short(e);
        if msg.contains("unknown or invalid runtime") || msg.contains("runtime") && msg.contains("not") {
            return Error::invalid(
                "runtime",
                format!("{msg} (configure the runtime in the engine, or leave out --runtime)"),
            );
        }
        Error::backend(format!("create container {}", record.container), msg)
    }

    /// Starts the container and waits for its agent.
    async fn launch(&self, engine: &Engine, record: &Record) -> Result<()> {
        let _ = std::fs::remove_file(self.socket(&record.id));
        engine
            .client
            .start_container(&record.container, None)
            .await
            .map_err(|e| self.create_error(record, &e))?;
        self.wait_ready(engine, record).await?;
        if record.spec.resources.memory_bytes.is_some() {
            self.learn_runtime(engine, record).await;
        }
        Ok(())
    }

    async fn wait_ready(&self, engine: &Engine, record: &Record) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut next_check = Instant::now() + Duration::from_millis(200);
        let socket = self.socket(&record.id);
        loop {
            let ready = match record.transport {
                Transport::Socket => UnixStream::connect(&socket).await.is_ok(),
                Transport::EngineExec => socket.exists() || self.agent_answers(engine, record).await,
            };
            if ready {
                return Ok(());
            }
            let now = Instant::now();
            if now > deadline {
                return Err(Error::Timeout(
                    START_TIMEOUT,
                    format!("the agent in container {} to listen", record.container),
                ));
            }
            if now > next_check {
                next_check = now + Duration::from_millis(200);
                let inspect = engine
                    .client
                    .inspect_container(&record.container, None)
                    .await
                    .map_err(|e| engine_err(format!("inspect {}", record.container), &e))?;
                let state = inspect.state.unwrap_or_default();
                if state.running != Some(true) && state.restarting != Some(true) {
                    let logs = self.logs(engine, &record.container).await;
                    return Err(Error::backend(
                        format!("start container {}", record.container),
                        format!(
                            "it exited with {} before its agent listened{}{}",
                            state.exit_code.unwrap_or(-1),
                            state
                                .error
                                .filter(|e| !e.is_empty())
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default(),
                            if logs.is_empty() {
                                String::new()
                            } else {
                                format!("; its log: {logs}")
                            }
                        ),
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn agent_answers(&self, engine: &Engine, record: &Record) -> bool {
        match transport::engine_exec_connection(engine, &record.container).await {
            Ok(conn) => stockade_proto::client::stats(conn).await.is_ok(),
            Err(_) => false,
        }
    }

    async fn logs(&self, engine: &Engine, container: &str) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let mut out = String::new();
        let mut logs = engine.client.logs(container, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        out.trim().replace('\n', " | ")
    }

    /// Finds the container's OOM-kill counter through its init's cgroup (runc and crun; gVisor
    /// keeps its own books).
    async fn learn_runtime(&self, engine: &Engine, record: &Record) {
        let pid = match engine.client.inspect_container(&record.container, None).await {
            Ok(i) => i.state.and_then(|s| s.pid).unwrap_or(0),
            Err(_) => 0,
        };
        let rt = Runtime {
            oom_counter: oom_counter_of(pid),
        };
        if let Ok(json) = serde_json::to_vec(&rt) {
            let _ = stockade_store::write_atomic(&self.runtime_file(&record.id), &json, 0o600);
        }
    }

    fn runtime(&self, id: &SandboxId) -> Runtime {
        std::fs::read(self.runtime_file(id))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or_default()
    }

    /// Removes the container, its network and its host directories; missing pieces are fine.
    async fn teardown(&self, record: &Record) -> Result<()> {
        let engine = self.engine_at(&record.engine)?;
        let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        match engine
            .client
            .remove_container(&record.container, Some(options))
            .await
        {
            Ok(()) => {}
            Err(e) if is_404(&e) => {}
            Err(e) => return Err(engine_err(format!("remove container {}", record.container), &e)),
        }
        if let Some(network) = &record.network {
            match engine.client.remove_network(network).await {
                Ok(()) => {}
                Err(e) if is_404(&e) => {}
                Err(e) => return Err(engine_err(format!("remove network {network}"), &e)),
            }
        }
        let dir = self.sandbox_dir(&record.id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::backend(format!("remove {}", dir.display()), e)),
        }
    }

    /// The status shown: the record's intent checked against the container's state (`running`,
    /// `exited`, ... as the engine words it).
    fn status_of(record: &Record, state: Option<&str>) -> SandboxStatus {
        match state {
            Some("running") => SandboxStatus::Running,
            Some("paused") => SandboxStatus::Paused,
            Some("restarting" | "created") if record.status != SandboxStatus::Stopped => {
                SandboxStatus::Creating
            }
            Some(_) if record.status == SandboxStatus::Stopped => SandboxStatus::Stopped,
            _ => SandboxStatus::Lost,
        }
    }

    fn info(&self, record: &Record, status: SandboxStatus, note: Option<String>) -> SandboxInfo {
        let mut details = serde_json::Map::new();
        details.insert("engine".into(), record.engine.clone().into());
        details.insert("container".into(), record.container.clone().into());
        details.insert("image".into(), record.image.clone().into());
        details.insert(
            "runtime".into(),
            record
                .spec
                .runtime
                .clone()
                .unwrap_or_else(|| "engine default".into())
                .into(),
        );
        details.insert("transport".into(), record.transport.as_str().into());
        if let Some(n) = &record.network {
            details.insert("network".into(), n.clone().into());
        }
        details.insert(
            "workspace_dir".into(),
            self.workspace(&record.id).display().to_string().into(),
        );
        if let Some(note) = note {
            details.insert("engine_error".into(), note.into());
        }
        details.insert(
            "hardening".into(),
            serde_json::json!({
                "read_only_root": true,
                "capabilities": format!(
                    "none for execs (the agent keeps {} to switch users, then empties the bounding set)",
                    container::AGENT_CAPABILITIES.join(", ")
                ),
                "no_new_privs": true,
                "seccomp": "the engine's default profile, plus Stockade's deny-list in the agent",
                "pids_limit": record.spec.resources.pids.unwrap_or(stockade_core::sandbox::DEFAULT_PIDS),
            }),
        );
        SandboxInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            driver: record.driver.clone(),
            status,
            created_at: record.created_at,
            spec: record.spec.clone(),
            details,
        }
    }

    /// Runs an idempotent engine call with retries (connection failures only, exponential
    /// backoff with jitter) behind the endpoint's circuit breaker.
    async fn read_call<T, F, Fut>(
        &self,
        endpoint: &str,
        call: F,
    ) -> std::result::Result<T, bollard::errors::Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, bollard::errors::Error>>,
    {
        let breaker = |f: &mut dyn FnMut(&mut CircuitBreaker)| {
            let mut all = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
            f(all
                .entry(endpoint.to_owned())
                .or_insert_with(|| CircuitBreaker::new(3, Duration::from_secs(10))));
        };
        let mut refused = None;
        breaker(&mut |b| refused = b.allow(Instant::now()).err());
        if let Some(wait) = refused {
            return Err(bollard::errors::Error::IOError {
                err: std::io::Error::other(format!(
                    "the engine failed repeatedly; not calling it again for {:.1} s (circuit open)",
                    wait.as_secs_f64()
                )),
            });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call().await {
                Ok(v) => {
                    breaker(&mut |b| b.success());
                    return Ok(v);
                }
                // The engine answered: it is up, whatever it said.
                Err(e @ bollard::errors::Error::DockerResponseServerError { .. }) => {
                    breaker(&mut |b| b.success());
                    return Err(e);
                }
                Err(e) if attempt >= self.backoff.attempts => {
                    breaker(&mut |b| b.failure(Instant::now()));
                    return Err(e);
                }
                Err(_) => {
                    let jitter = f64::from(
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.subsec_nanos() % 1000)
                            .unwrap_or(500),
                    ) / 1000.0;
                    tokio::time::sleep(self.backoff.delay(attempt, jitter)).await;
                }
            }
        }
    }

    /// Each engine's breaker, for health reporting.
    pub fn breaker_states(&self) -> Vec<(String, BreakerState, u32)> {
        let all = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        all.iter()
            .map(|(k, b)| (k.clone(), b.state(now), b.failures()))
            .collect()
    }

    async fn live_info(&self, record: &Record) -> SandboxInfo {
        let engine = match self.engine_at(&record.engine) {
            Ok(e) => e,
            Err(e) => return self.info(record, SandboxStatus::Lost, Some(e.to_string())),
        };
        let inspected = self
            .read_call(&record.engine, || {
                engine.client.inspect_container(&record.container, None)
            })
            .await;
        match inspected {
            Ok(i) => {
                let state = i.state.and_then(|s| s.status).map(|s| s.to_string());
                self.info(record, Self::status_of(record, state.as_deref()), None)
            }
            Err(e) if is_404(&e) => {
                self.info(record, SandboxStatus::Lost, Some("the container is gone".into()))
            }
            Err(e) => self.info(record, SandboxStatus::Lost, Some(short(&e))),
        }
    }

    async fn connect(&self, record: &Record) -> Result<AgentConnection> {
        // A paused container's agent would take the connection and never answer.
        if record.status == SandboxStatus::Paused {
            let status = self.live_info(record).await.status;
            if status != SandboxStatus::Running {
                return Err(Error::WrongState {
                    id: record.id.to_string(),
                    status: status.to_string(),
                    operation: "this".into(),
                    needed: "running (stockade resume)".into(),
                });
            }
        }
        match record.transport {
            Transport::Socket => match UnixStream::connect(self.socket(&record.id)).await {
                Ok(c) => Ok(AgentConnection::Socket(c)),
                Err(e) => Err(self.why_unreachable(record, e.to_string()).await),
            },
            Transport::EngineExec => {
                let engine = self.engine_at(&record.engine)?;
                match transport::engine_exec_connection(&engine, &record.container).await {
                    Ok(c) => Ok(AgentConnection::Exec(c)),
                    Err(e) => Err(self.why_unreachable(record, e.to_string()).await),
                }
            }
        }
    }

    /// Pauses (`frozen`) a running sandbox, or resumes a paused one.
    async fn freeze(&self, id: &SandboxId, frozen: bool) -> Result<()> {
        let mut record = self.records.load(id)?;
        let to = self.live_info(&record).await.status.after_freeze(id, frozen)?;
        let engine = self.engine_at(&record.engine)?;
        let done = if frozen {
            engine.client.pause_container(&record.container).await
        } else {
            engine.client.unpause_container(&record.container).await
        };
        done.map_err(|e| {
            engine_err(
                format!(
                    "{} {}",
                    if frozen { "pause" } else { "unpause" },
                    record.container
                ),
                &e,
            )
        })?;
        record.status = to;
        self.records.save(&record)
    }

    async fn why_unreachable(&self, record: &Record, error: String) -> Error {
        let info = self.live_info(record).await;
        if !info.status.can_exec() {
            return Error::WrongState {
                id: record.id.to_string(),
                status: info.status.to_string(),
                operation: "this".into(),
                needed: "running".into(),
            };
        }
        Error::backend(format!("connect to the agent in {}", record.container), error)
    }

    /// `stockade gc`: removes containers and networks labelled as ours with no record. Returns
    /// what was removed.
    pub async fn gc(&self) -> Result<Vec<String>> {
        let engine = self.engine().await?;
        // Held throughout: a create saves its record under this lock before it makes anything,
        // so nothing being created can look unrecorded.
        let _lock = self.records.lock()?;
        let known: std::collections::BTreeSet<String> = self
            .records
            .list()?
            .into_iter()
            .map(|r| r.id.to_string())
            .collect();
        let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={}", self.owner)])]);
        let mut removed = Vec::new();
        let containers = engine
            .client
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .map_err(|e| engine_err("list containers", &e))?;
        for c in containers {
            let id = sandbox_label(c.labels.as_ref());
            if known.contains(&id) {
                continue;
            }
            let Some(cid) = c.id else { continue };
            let options = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            match engine.client.remove_container(&cid, Some(options)).await {
                Ok(()) => {}
                Err(e) if is_404(&e) => {}
                Err(e) => return Err(engine_err(format!("remove container {cid}"), &e)),
            }
            let name = c.names.and_then(|n| n.first().cloned()).unwrap_or(cid);
            removed.push(format!("container {}", name.trim_start_matches('/')));
            if let Ok(sid) = SandboxId::parse(&id) {
                let _ = std::fs::remove_dir_all(self.sandbox_dir(&sid));
            }
        }
        let networks = engine
            .client
            .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
            .await
            .map_err(|e| engine_err("list networks", &e))?;
        for n in networks {
            let id = sandbox_label(n.labels.as_ref());
            if known.contains(&id) {
                continue;
            }
            let Some(name) = n.name else { continue };
            match engine.client.remove_network(&name).await {
                Ok(()) => removed.push(format!("network {name}")),
                Err(e) if is_404(&e) => {}
                Err(e) => return Err(engine_err(format!("remove network {name}"), &e)),
            }
        }
        Ok(removed)
    }
}

/// The `stockade.id` label of an engine object ("" when it has none).
fn sandbox_label(labels: Option<&HashMap<String, String>>) -> String {
    labels.and_then(|l| l.get(LABEL_ID)).cloned().unwrap_or_default()
}

/// A connection to an agent over either transport.
enum AgentConnection {
    Socket(UnixStream),
    Exec(tokio::io::DuplexStream),
}

/// The OOM-kill counter file of the memory cgroup `pid` is in (v1 `memory.oom_control`, v2
/// `memory.events`), if this host shows it.
fn oom_counter_of(pid: i64) -> Option<PathBuf> {
    if pid <= 0 {
        return None;
    }
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.split(',').any(|c| c == "memory") {
            let f = Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.oom_control");
            if f.exists() {
                return Some(f);
            }
        }
        if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                let f = Path::new(root).join(path).join("memory.events");
                if f.exists() {
                    return Some(f);
                }
            }
        }
    }
    None
}

fn oom_kills(counter: Option<&Path>) -> u64 {
    let Some(text) = counter.and_then(|p| std::fs::read_to_string(p).ok()) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[async_trait]
impl Driver for DockerDriver {
    fn name(&self) -> &'static str {
        self.name
    }

    fn admin(&self) -> Option<&dyn stockade_core::DriverAdmin> {
        Some(self)
    }

    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        self.check_spec(&spec)?;
        let engine = self.engine().await?;
        let image_name = spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        let (facts, image_found) = tokio::join!(engine.runtime_facts(), image::exists(engine, &image_name));
        let facts = facts?;
        let transport = self.plan(&spec, &facts)?;
        if !image_found? {
            if image_name == DEFAULT_IMAGE && spec.image.is_none() {
                return Err(Error::invalid(
                    "image",
                    format!(
                        "no --image given and the default {DEFAULT_IMAGE} is not on the engine at {}; make it with \
                         `stockade image base` or pass --image",
                        engine.endpoint
                    ),
                ));
            }
            let sink = Arc::clone(&self.progress);
            image::ensure(engine, &image_name, &mut move |line: &str| sink(line)).await?;
        }
        let record = {
            let _lock = self.records.lock()?;
            if let Some(name) = &spec.name {
                if self.records.name_taken(name)? {
                    return Err(Error::NameTaken(name.clone()));
                }
            }
            let id = random_id()?;
            let record = Record {
                name: spec.name.clone().unwrap_or_else(|| id.to_string()),
                driver: self.name.to_owned(),
                status: SandboxStatus::Running,
                created_at: now_secs(),
                engine: engine.endpoint.clone(),
                container: container::container_name(&id),
                image: image_name,
                network: (spec.network == NetworkMode::Full).then(|| container::container_name(&id)),
                transport,
                spec,
                id,
            };
            self.records.save(&record)?;
            record
        };
        if let Err(e) = self.build(engine, &record).await {
            let _ = self.teardown(&record).await;
            let _ = std::fs::remove_dir_all(self.sandbox_dir(&record.id));
            let _ = self.records.remove(&record.id);
            return Err(e);
        }
        Ok(self.info(&record, SandboxStatus::Running, None))
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        // docker and podman share the records directory; each lists its own.
        let mut records = self.records.list()?;
        records.retain(|r| r.driver == self.name);
        let mut states: HashMap<String, Option<String>> = HashMap::new();
        let mut unreachable: HashMap<String, String> = HashMap::new();
        let endpoints: std::collections::BTreeSet<&str> = records.iter().map(|r| r.engine.as_str()).collect();
        for endpoint in endpoints {
            let listed = match self.engine_at(endpoint) {
                Ok(engine) => {
                    let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={}", self.owner)])]);
                    self.read_call(endpoint, || {
                        engine.client.list_containers(Some(
                            ListContainersOptionsBuilder::new()
                                .all(true)
                                .filters(&filters)
                                .build(),
                        ))
                    })
                    .await
                    .map_err(|e| short(&e))
                }
                Err(e) => Err(e.to_string()),
            };
            match listed {
                Ok(containers) => {
                    for c in containers {
                        if let Some(id) = c.labels.as_ref().and_then(|l| l.get(LABEL_ID)) {
                            let state = c.state.map(|s| s.to_string());
                            states.insert(id.clone(), state);
                        }
                    }
                }
                Err(e) => {
                    unreachable.insert(endpoint.to_owned(), e);
                }
            }
        }
        Ok(records
            .iter()
            .map(|r| {
                if let Some(e) = unreachable.get(&r.engine) {
                    return self.info(r, SandboxStatus::Lost, Some(format!("engine unreachable: {e}")));
                }
                match states.get(r.id.as_str()) {
                    Some(state) => self.info(r, Self::status_of(r, state.as_deref()), None),
                    None => self.info(r, SandboxStatus::Lost, Some("the container is gone".into())),
                }
            })
            .collect())
    }

    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        let record = self.records.resolve(id_or_name)?;
        Ok(self.live_info(&record).await)
    }

    async fn stop(&self, id: &SandboxId) -> Result<()> {
        let mut record = self.records.load(id)?;
        let engine = self.engine_at(&record.engine)?;
        if record.status == SandboxStatus::Paused {
            // A frozen container takes no signal: thawed first, then stopped as usual (already
            // running again, if someone unpaused it behind our back, is as good).
            let _ = engine.client.unpause_container(&record.container).await;
        }
        let options = StopContainerOptionsBuilder::new().t(2).build();
        match engine
            .client
            .stop_container(&record.container, Some(options))
            .await
        {
            Ok(()) => {}
            // Already stopped (304) or gone (404, a lost sandbox): stopped is what was asked.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => {}
            Err(e) => return Err(engine_err(format!("stop {}", record.container), &e)),
        }
        record.status = SandboxStatus::Stopped;
        self.records.save(&record)
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        let mut record = self.records.load(id)?;
        let info = self.live_info(&record).await;
        if !info.status.can_start() {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: info.status.to_string(),
                operation: "start".into(),
                needed: "stopped".into(),
            });
        }
        let engine = self.engine_at(&record.engine)?;
        match engine.client.inspect_container(&record.container, None).await {
            Ok(_) => self.launch(&engine, &record).await?,
            // A lost sandbox whose container is gone comes back as a new container with its files.
            Err(e) if is_404(&e) => self.build(&engine, &record).await?,
            Err(e) => return Err(engine_err(format!("inspect {}", record.container), &e)),
        }
        record.status = SandboxStatus::Running;
        self.records.save(&record)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let record = self.records.load(id)?;
        self.teardown(&record).await?;
        self.records.remove(id)
    }

    /// The engine's pause (the cgroup freezer under runc and Podman, gVisor's own under runsc).
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, true).await
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, false).await
    }

    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        self.start_exec(id, req, None).await
    }

    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        self.start_exec(id, req, Some(exec_id)).await
    }

    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        let record = self.records.load(id)?;
        match self.connect(&record).await? {
            AgentConnection::Socket(c) => stockade_proto::client::attach(c, exec_id, from_seq).await,
            AgentConnection::Exec(c) => stockade_proto::client::attach(c, exec_id, from_seq).await,
        }
    }

    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        let record = self.records.load(id)?;
        match self.connect(&record).await? {
            AgentConnection::Socket(c) => stockade_proto::client::file(c, op).await,
            AgentConnection::Exec(c) => stockade_proto::client::file(c, op).await,
        }
    }

    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        self.engine_stats(id).await
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<Box<dyn stockade_core::PortStream>> {
        let record = self.records.load(id)?;
        Ok(match self.connect(&record).await? {
            AgentConnection::Socket(c) => Box::new(stockade_proto::client::connect_port(c, port).await?),
            AgentConnection::Exec(c) => Box::new(stockade_proto::client::connect_port(c, port).await?),
        })
    }
}

impl DockerDriver {
    async fn start_exec(
        &self,
        id: &SandboxId,
        req: ExecRequest,
        keep_as: Option<&str>,
    ) -> Result<ExecSession> {
        req.validate()?;
        let record = self.records.load(id)?;
        let conn = self.connect(&record).await?;
        let counter = if record.spec.resources.memory_bytes.is_some() {
            self.runtime(id).oom_counter
        } else {
            None
        };
        let ooms_before = oom_kills(counter.as_deref());
        let mut session = match (conn, keep_as) {
            (AgentConnection::Socket(c), None) => stockade_proto::client::exec(c, req).await?,
            (AgentConnection::Exec(c), None) => stockade_proto::client::exec(c, req).await?,
            (AgentConnection::Socket(c), Some(exec_id)) => {
                stockade_proto::client::exec_kept(c, req, exec_id).await?
            }
            (AgentConnection::Exec(c), Some(exec_id)) => {
                stockade_proto::client::exec_kept(c, req, exec_id).await?
            }
        };
        if counter.is_some() {
            session = session.report_oom(move || oom_kills(counter.as_deref()) > ooms_before);
        }
        Ok(session)
    }

    async fn engine_stats(&self, id: &SandboxId) -> Result<Stats> {
        let record = self.records.load(id)?;
        let engine = self.engine_at(&record.engine)?;
        let options = StatsOptionsBuilder::new().stream(false).one_shot(true).build();
        let reading = engine.client.stats(&record.container, Some(options)).next().await;
        match reading {
            Some(Ok(s)) => {
                let memory = s.memory_stats.unwrap_or_default();
                let cache = memory
                    .stats
                    .as_ref()
                    .and_then(|m| m.get("total_inactive_file").or_else(|| m.get("inactive_file")))
                    .copied()
                    .unwrap_or(0);
                let usage = memory.usage.unwrap_or(0);
                if usage == 0 && s.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0) == 0 {
                    // Nothing useful (a stopped container, or a runtime that keeps no cgroup stats).
                    return self.agent_stats(&record).await;
                }
                Ok(Stats {
                    cpu_usec: s
                        .cpu_stats
                        .and_then(|c| c.cpu_usage)
                        .and_then(|u| u.total_usage)
                        .unwrap_or(0)
                        / 1000,
                    memory_bytes: usage.saturating_sub(cache),
                    memory_peak_bytes: memory.max_usage.unwrap_or(0),
                    pids: s.pids_stats.and_then(|p| p.current).unwrap_or(0),
                    source: "engine stats API".into(),
                })
            }
            Some(Err(e)) if is_404(&e) => Err(self.why_unreachable(&record, short(&e)).await),
            _ => self.agent_stats(&record).await,
        }
    }
}

impl DockerDriver {
    async fn agent_stats(&self, record: &Record) -> Result<Stats> {
        match self.connect(record).await? {
            AgentConnection::Socket(c) => stockade_proto::client::stats(c).await,
            AgentConnection::Exec(c) => stockade_proto::client::stats(c).await,
        }
    }
}
