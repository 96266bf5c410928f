//! The native driver's `Driver` implementation: records and supervisors on the host side, the
//! agent protocol over each sandbox's unix socket for everything inside.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stockade_core::{
    Driver, Error, ExecRequest, ExecSession, FileOp, FileReply, Result, SandboxId, SandboxInfo, SandboxSpec,
    SandboxStatus, Stats,
};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;

use crate::cgroup::CgroupHost;
use crate::idmap::IdMap;
use crate::layout::Layout;
use crate::store::{self, Record, Runtime, Store};

/// The name this driver registers as.
pub const DRIVER: &str = "native";
/// How long a supervisor may take to report the sandbox ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long pid 1 and the supervisor may take to go away after a kill.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The native driver over one Stockade home.
#[derive(Debug, Clone)]
pub struct NativeDriver {
    store: Store,
    agent: PathBuf,
    /// This host's cgroup layout, looked at once.
    cgroups: CgroupHost,
    /// Where host helpers (slirp4netns) are looked for, besides the default `PATH`.
    search_path: Vec<PathBuf>,
}

/// Finds the `stockade-agent` binary: the one the config names (the CLI takes `$STOCKADE_AGENT`),
/// then beside the running executable, then (for `cargo test`) one directory up from it, then
/// the config's `PATH`.
pub fn find_agent(config: &stockade_core::DriverConfig) -> Result<PathBuf> {
    if let Some(p) = &config.agent {
        return Ok(p.clone());
    }
    let exe = std::env::current_exe().ok();
    let beside = exe.as_deref().and_then(Path::parent);
    let candidates = [
        beside.map(Path::to_path_buf),
        beside.and_then(Path::parent).map(Path::to_path_buf),
    ];
    for dir in candidates.into_iter().flatten() {
        let p = dir.join("stockade-agent");
        if p.is_file() {
            return Ok(p);
        }
    }
    for dir in config.path_dirs() {
        let p = dir.join("stockade-agent");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::unsupported(
        DRIVER,
        "sandboxes",
        "the stockade-agent binary was not found beside stockade or in PATH (set STOCKADE_AGENT)",
    ))
}

/// What `inspect` says is active in a sandbox's processes.
pub fn hardening_report(spec: &SandboxSpec, idmap: &IdMap) -> serde_json::Value {
    let cfg = crate::supervisor::agent_config(spec).hardening;
    let policy = stockade_proto::seccomp::seccomp_policy();
    let denied: Vec<&str> = policy
        .iter()
        .filter(|r| r.when.is_none() && r.errno == libc::EPERM)
        .map(|r| r.syscall)
        .collect();
    let landlock = match crate::host::landlock_abi() {
        Some(_) => serde_json::json!({ "enforced": true, "writable": cfg.landlock_writable }),
        None => {
            serde_json::json!({ "enforced": false, "reason": "landlock is not an active LSM on this kernel" })
        }
    };
    serde_json::json!({
        "capabilities": "none (bounding, permitted, effective, inheritable and ambient sets emptied)",
        "no_new_privs": cfg.no_new_privs,
        "seccomp": {
            "action": "EPERM",
            "denied": denied,
            "conditional": [
                "clone with any CLONE_NEW* flag",
                "clone3 (ENOSYS, so libc falls back to clone)",
                "socket(AF_VSOCK)",
                "ioctl(TIOCSTI), ioctl(TIOCLINUX)"
            ]
        },
        "landlock": landlock,
        "masked_paths": crate::mount_plan::MASKED_PATHS,
        "read_only_paths": crate::mount_plan::READ_ONLY_PATHS,
        "devices": crate::mount_plan::DEVICES,
        "rlimits": { "nofile": cfg.max_open_files, "fsize": cfg.max_file_size },
        "cgroup_limits": {
            "memory_bytes": spec.resources.memory_bytes,
            "millicpus": spec.resources.millicpus,
            "pids": crate::supervisor::effective_resources(&spec.resources).pids,
        },
        "sandbox_root_is_host_uid": idmap.host_uid,
        "agent_dumpable": false,
    })
}

fn program_on_path(search_path: &[PathBuf], name: &str) -> bool {
    search_path
        .iter()
        .map(PathBuf::as_path)
        .chain(stockade_proto::DEFAULT_PATH.split(':').map(Path::new))
        .any(|dir| dir.join(name).is_file())
}

use stockade_store::{now_secs, random_id};

/// Whether this host lets us make user namespaces, and why not.
pub fn user_namespaces_available() -> std::result::Result<(), String> {
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Err(
            "user namespaces are disabled on this host (/proc/sys/user/max_user_namespaces is 0)".into(),
        );
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Err("this kernel has no user namespaces (/proc/self/ns/user is missing)".into());
    }
    if !nix::unistd::geteuid().is_root() {
        let clone = std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone").unwrap_or_default();
        if clone.trim() == "0" {
            return Err("unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0); run as root or enable them".into());
        }
    }
    Ok(())
}

impl NativeDriver {
    /// A driver over `layout`, running `agent` in each sandbox.
    pub fn new(layout: Layout, agent: PathBuf) -> Result<Self> {
        let home = layout.home.to_string_lossy().into_owned();
        if home.contains(',') || home.contains(':') {
            return Err(Error::invalid(
                "STOCKADE_HOME",
                format!("{home}: overlayfs cannot take ',' or ':' in a path"),
            ));
        }
        // A unix socket path has room for 107 bytes; ours is HOME/run/<12 hex>.sock.
        if home.len() + "/run/000000000000.sock".len() > 107 {
            return Err(Error::invalid(
                "STOCKADE_HOME",
                format!("{home}: too long for a unix socket path (at most 85 bytes)"),
            ));
        }
        layout
            .ensure()
            .map_err(|e| Error::backend(format!("create {}", layout.home.display()), e))?;
        Ok(NativeDriver {
            store: Store::new(layout)?,
            agent,
            cgroups: CgroupHost::detect(),
            search_path: Vec::new(),
        })
    }

    /// The driver over `config.home` with the agent found by [`find_agent`].
    pub fn from_config(config: &stockade_core::DriverConfig) -> Result<Self> {
        let mut driver = NativeDriver::new(Layout::at(&config.home), find_agent(config)?)?;
        driver.search_path = config.path_dirs();
        Ok(driver)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn layout(&self) -> &Layout {
        self.store.layout()
    }

    /// The status as it really is: a record that says running (or creating, as every record does
    /// until it is first stopped) with a live supervisor and pid 1 is running; with none it is
    /// lost, except during a create's start window.
    fn live_status(&self, record: &Record) -> (SandboxStatus, Option<Runtime>) {
        let runtime = self.store.load_runtime(&record.id);
        let alive = || {
            runtime.as_ref().is_some_and(|rt| {
                store::is_same_process(rt.supervisor_pid, rt.supervisor_start)
                    && store::is_same_process(rt.init_pid, rt.init_start)
            })
        };
        match record.status {
            SandboxStatus::Paused if alive() => (SandboxStatus::Paused, runtime),
            SandboxStatus::Paused => (SandboxStatus::Lost, runtime),
            SandboxStatus::Running | SandboxStatus::Creating => {
                if alive() {
                    (SandboxStatus::Running, runtime)
                } else if record.status == SandboxStatus::Creating
                    && runtime.is_none()
                    && now_secs() < record.created_at + START_TIMEOUT.as_secs() + 1
                {
                    // Not started yet (the supervisor writes its runtime file once the sandbox runs)
                    // and within its start window; after it, a create that never finished (its
                    // process was killed) reads as lost and can be removed.
                    (SandboxStatus::Creating, runtime)
                } else {
                    (SandboxStatus::Lost, runtime)
                }
            }
            other => (other, runtime),
        }
    }

    fn info(&self, record: &Record) -> SandboxInfo {
        let (status, runtime) = self.live_status(record);
        let mut details = serde_json::Map::new();
        let l = self.layout();
        details.insert("home".into(), l.home.display().to_string().into());
        details.insert(
            "upper_dir".into(),
            l.upper(&record.id).display().to_string().into(),
        );
        details.insert(
            "workspace_dir".into(),
            l.workspace(&record.id).display().to_string().into(),
        );
        details.insert("socket".into(), l.socket(&record.id).display().to_string().into());
        details.insert("log".into(), l.log(&record.id).display().to_string().into());
        details.insert("uid_map".into(), record.idmap.uid_map().trim().into());
        details.insert(
            "rootfs".into(),
            record
                .spec
                .rootfs
                .as_deref()
                .unwrap_or(Path::new("/"))
                .display()
                .to_string()
                .into(),
        );
        if let Some(rt) = runtime.filter(|_| status == SandboxStatus::Running) {
            details.insert("supervisor_pid".into(), rt.supervisor_pid.into());
            details.insert("init_pid".into(), rt.init_pid.into());
            details.insert("cgroup".into(), rt.cgroup_version.clone().into());
            details.insert(
                "cgroup_dirs".into(),
                rt.cgroups
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .into(),
            );
            details.insert("network_namespace".into(), rt.network.clone().into());
        }
        details.insert("hardening".into(), hardening_report(&record.spec, &record.idmap));
        details.insert(
            "namespaces".into(),
            serde_json::json!([
                "user",
                "mount",
                "pid",
                "ipc",
                "uts",
                "cgroup",
                if record.spec.network == stockade_core::NetworkMode::None {
                    "net"
                } else {
                    "net (host, shared)"
                }
            ]),
        );
        SandboxInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            driver: DRIVER.into(),
            status,
            created_at: record.created_at,
            spec: record.spec.clone(),
            details,
        }
    }

    fn check_spec(&self, spec: &SandboxSpec) -> Result<()> {
        spec.validate()?;
        if !spec.driver.is_empty() && spec.driver != DRIVER {
            return Err(Error::invalid(
                "driver",
                format!("{:?} given to the native driver", spec.driver),
            ));
        }
        if spec.rootfs.is_none() && !nix::unistd::geteuid().is_root() {
            // The kernel refuses an overlay whose lower layer has locked submounts (the host `/`
            // has many) inside an unprivileged user namespace.
            return Err(Error::unsupported(
                DRIVER,
                "the host / as root filesystem",
                "without root it needs --rootfs DIR (a directory tree such as one made by debootstrap)",
            ));
        }
        if spec.image.is_some() {
            return Err(Error::unsupported(
                DRIVER,
                "images",
                "use --rootfs DIR, or --driver docker for images",
            ));
        }
        if let Some(runtime) = &spec.runtime {
            return Err(Error::unsupported(
                DRIVER,
                "--runtime",
                format!("{runtime:?} is a container runtime; use --driver docker"),
            ));
        }
        if let Some(rootfs) = &spec.rootfs {
            if !rootfs.is_dir() {
                return Err(Error::invalid(
                    "rootfs",
                    format!("{} is not a directory", rootfs.display()),
                ));
            }
            let s = rootfs.to_string_lossy();
            if s.contains(',') || s.contains(':') {
                return Err(Error::invalid(
                    "rootfs",
                    format!("{s}: overlayfs cannot take ',' or ':' in a path"),
                ));
            }
        }
        for m in &spec.mounts {
            if !m.host.exists() {
                return Err(Error::invalid(
                    "volume",
                    format!("{}: no such file or directory on the host", m.host.display()),
                ));
            }
        }
        if spec.network == stockade_core::NetworkMode::Full
            && !nix::unistd::geteuid().is_root()
            && !program_on_path(&self.search_path, "slirp4netns")
        {
            return Err(Error::unsupported(
                DRIVER,
                "--network full",
                "without root it needs slirp4netns (apt-get install slirp4netns)",
            ));
        }
        let r = &spec.resources;
        if r.disk_bytes.is_some() && !nix::unistd::geteuid().is_root() {
            return Err(Error::unsupported(
                DRIVER,
                "disk limit",
                "it needs root (a loop-mounted ext4 image)",
            ));
        }
        if r.memory_bytes.is_some() || r.millicpus.is_some() || r.pids.is_some() {
            if let CgroupHost::None { reason } = CgroupHost::detect() {
                return Err(Error::unsupported(
                    DRIVER,
                    "resource limits",
                    format!("no usable cgroups: {reason}"),
                ));
            }
        }
        user_namespaces_available().map_err(|why| Error::unsupported(DRIVER, "sandboxes", why))
    }

    /// Starts the supervisor for `record` and waits for its `ready` line.
    async fn launch(&self, record: &Record) -> Result<()> {
        let l = self.layout();
        // Home and id travel in the environment, not argv: the supervisor's fork becomes the
        // sandbox's pid 1, whose command line everyone inside can read.
        let mut child = tokio::process::Command::new(&self.agent)
            .arg0("stockade-agent")
            .arg("supervise")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .env_clear()
            // For the network tools it runs (ip, nsenter, iptables); nothing else of ours leaks in.
            .env("PATH", stockade_proto::DEFAULT_PATH)
            .env(crate::supervisor::HOME_ENV, &l.home)
            .env(crate::supervisor::ID_ENV, record.id.as_str())
            .spawn()
            .map_err(|e| Error::backend(format!("start supervisor {}", self.agent.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::backend("supervisor", "no stdout"))?;
        let mut line = String::new();
        let mut reader = tokio::io::BufReader::new(stdout);
        let read = tokio::time::timeout(START_TIMEOUT, reader.read_line(&mut line)).await;
        if !matches!(&read, Ok(Ok(_)) if line.starts_with("ready ")) {
            // A supervisor that did not come up must not linger: kill it (its pid 1 follows by
            // parent-death signal) and remove the cgroups it may have made.
            let _ = child.start_kill();
            let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
            let _ = crate::cgroup::remove(&CgroupHost::detect().dirs_for(record.id.as_str()));
        }
        // On success the supervisor lives on, detached in its own session; tokio reaps it if it
        // exits while this process still runs.
        drop(child);
        match read {
            Err(_) => Err(Error::Timeout(
                START_TIMEOUT,
                format!("sandbox {} to start", record.id),
            )),
            Ok(Err(e)) => Err(Error::backend("supervisor", e)),
            Ok(Ok(_)) if line.starts_with("ready ") => Ok(()),
            Ok(Ok(_)) => {
                let msg = line
                    .trim()
                    .strip_prefix("error ")
                    .unwrap_or(line.trim())
                    .to_owned();
                let msg = if msg.is_empty() {
                    "the supervisor exited without a word".to_owned()
                } else {
                    msg
                };
                // The supervisor reports a bad spec field as "invalid FIELD: reason".
                if let Some((field, reason)) = msg.strip_prefix("invalid ").and_then(|m| m.split_once(": ")) {
                    return Err(Error::invalid(field, reason));
                }
                Err(Error::backend(format!("start sandbox {}", record.id), msg))
            }
        }
    }

    /// Kills pid 1 and waits until the supervisor has cleaned up and gone. When the supervisor is
    /// already gone, cleans up after it.
    async fn halt(&self, id: &SandboxId) -> Result<()> {
        let Some(rt) = self.store.load_runtime(id) else {
            return Ok(());
        };
        // Open the pidfd before the kill, and check it is still the same process afterwards, so a
        // reused pid can never be waited on by mistake.
        let supervisor = stockade_sys::pidfd_open(rt.supervisor_pid)
            .ok()
            .filter(|_| store::is_same_process(rt.supervisor_pid, rt.supervisor_start));
        if store::is_same_process(rt.init_pid, rt.init_start) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(rt.init_pid), nix::sys::signal::SIGKILL);
        }
        if let Some(pidfd) = supervisor {
            tokio::time::timeout(STOP_TIMEOUT, stockade_sys::wait_pidfd(pidfd))
                .await
                .map_err(|_| Error::Timeout(STOP_TIMEOUT, format!("the supervisor of {id} to exit")))?
                .map_err(|e| Error::backend("wait for the supervisor", e))?;
        }
        // The supervisor normally does the rest; after a crash (a lost sandbox) we do.
        let deadline = Instant::now() + STOP_TIMEOUT;
        while store::is_same_process(rt.init_pid, rt.init_start) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(rt.init_pid), nix::sys::signal::SIGKILL);
            if Instant::now() > deadline {
                return Err(Error::Timeout(STOP_TIMEOUT, format!("pid 1 of {id} to exit")));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        crate::cgroup::remove(&rt.cgroups).map_err(|e| Error::backend("remove cgroups", e))?;
        let _ = std::fs::remove_file(self.layout().socket(id));
        let _ = std::fs::remove_file(self.layout().runtime(id));
        let _ = std::fs::remove_file(self.layout().paused_marker(id));
        Ok(())
    }

    /// Freezes (`frozen`) a running sandbox, or thaws a paused one.
    fn freeze(&self, id: &SandboxId, frozen: bool) -> Result<()> {
        let mut record = self.store.load(id)?;
        let (status, runtime) = self.live_status(&record);
        let to = status.after_freeze(id, frozen)?;
        let rt = runtime
            .ok_or_else(|| Error::backend("the cgroup freezer", "the sandbox has no runtime record"))?;
        crate::cgroup::freeze(&rt.cgroups, frozen).map_err(|e| match e.kind() {
            std::io::ErrorKind::Unsupported => Error::unsupported(DRIVER, "pause", e.to_string()),
            _ => Error::backend("the cgroup freezer", e),
        })?;
        let marker = self.layout().paused_marker(id);
        if frozen {
            std::fs::write(&marker, b"")
                .map_err(|e| Error::backend(format!("write {}", marker.display()), e))?;
        } else {
            let _ = std::fs::remove_file(&marker);
        }
        record.status = to;
        self.store.save(&record)
    }

    async fn connect(&self, id: &SandboxId) -> Result<UnixStream> {
        // A paused sandbox's socket still takes connections (the kernel queues them), but its
        // frozen pid 1 would never answer.
        if self.layout().paused_marker(id).exists() {
            let (status, _) = self.live_status(&self.store.load(id)?);
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "this".into(),
                needed: "running (stockade resume)".into(),
            });
        }
        // The socket exists only while the sandbox runs; the slow path below explains why not.
        let connect_error = match UnixStream::connect(self.layout().socket(id)).await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        let record = self.store.load(id)?;
        let (status, _) = self.live_status(&record);
        if !status.can_exec() {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "this".into(),
                needed: "running".into(),
            });
        }
        // Say why pid 1 went away, if the supervisor logged it.
        let log = std::fs::read_to_string(self.layout().log(id)).unwrap_or_default();
        let why = log
            .lines()
            .rev()
            .find(|l| l.contains("pid 1 failed:"))
            .map(|l| format!(" ({l})"));
        Err(Error::backend(
            format!("connect to sandbox {id}"),
            format!("{connect_error}{}", why.unwrap_or_default()),
        ))
    }
}

#[async_trait]
impl Driver for NativeDriver {
    fn name(&self) -> &'static str {
        DRIVER
    }

    fn admin(&self) -> Option<&dyn stockade_core::DriverAdmin> {
        Some(self)
    }

    async fn create(&self, mut spec: SandboxSpec) -> Result<SandboxInfo> {
        self.check_spec(&spec)?;
        spec.driver = DRIVER.into();
        let record = {
            let _lock = self.store.lock()?;
            if let Some(name) = &spec.name {
                if self.store.name_taken(name)? {
                    return Err(Error::NameTaken(name.clone()));
                }
            }
            let id = random_id()?;
            let record = Record {
                name: spec.name.clone().unwrap_or_else(|| id.to_string()),
                idmap: IdMap::for_sandbox(
                    &id,
                    nix::unistd::geteuid().as_raw(),
                    nix::unistd::getegid().as_raw(),
                ),
                id,
                status: SandboxStatus::Creating,
                created_at: now_secs(),
                spec,
                agent: self.agent.clone(),
            };
            self.store.save(&record)?;
            record
        };
        if let Err(e) = self.launch(&record).await {
            let _ = self.halt(&record.id).await;
            let l = self.layout();
            let _ = crate::supervisor::remove_tree(&l.sandbox_dir(&record.id));
            for leftover in [l.socket(&record.id), l.runtime(&record.id), l.log(&record.id)] {
                let _ = std::fs::remove_file(leftover);
            }
            let _ = self.store.remove(&record.id);
            return Err(e);
        }
        // The record keeps saying `creating`: with a live supervisor and pid 1 that reads as
        // running (see live_status). Not rewriting it saves a replace-by-rename, which ext4 turns
        // into a synchronous data flush (auto_da_alloc).
        Ok(self.info(&record))
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(self.store.list()?.iter().map(|r| self.info(r)).collect())
    }

    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        Ok(self.info(&self.store.resolve(id_or_name)?))
    }

    async fn stop(&self, id: &SandboxId) -> Result<()> {
        let mut record = self.store.load(id)?;
        let (status, _) = self.live_status(&record);
        if status == SandboxStatus::Paused {
            // Frozen processes do not die until thawed (v1's freezer).
            self.freeze(id, false)?;
        }
        if !status.can_stop() && status != SandboxStatus::Lost {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "stop".into(),
                needed: "running".into(),
            });
        }
        self.halt(id).await?;
        record.status = SandboxStatus::Stopped;
        self.store.save(&record)
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        let mut record = self.store.load(id)?;
        let (status, _) = self.live_status(&record);
        if !status.can_start() {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "start".into(),
                needed: "stopped".into(),
            });
        }
        self.halt(id).await?;
        self.launch(&record).await?;
        record.status = SandboxStatus::Running;
        self.store.save(&record)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let record = self.store.load(id)?;
        if self.layout().paused_marker(id).exists() {
            // Frozen processes do not die until thawed (v1's freezer). A sandbox whose
            // supervisor died while paused (lost) has nothing to thaw.
            match self.freeze(id, false) {
                Err(e) if e.kind() != stockade_core::ErrorKind::WrongState => return Err(e),
                _ => {}
            }
        }
        // Nothing runs in the sandbox once pid 1 is killed, so its files can go while the
        // supervisor is still tearing down the namespaces and cgroups.
        let dir = self.layout().sandbox_dir(&record.id);
        let (halted, removed) = tokio::join!(
            self.halt(id),
            tokio::task::spawn_blocking(move || crate::supervisor::remove_tree(&dir))
        );
        halted?;
        removed
            .map_err(|e| Error::backend("remove sandbox files", e))?
            .map_err(|e| Error::backend("remove sandbox files", e))?;
        let _ = std::fs::remove_file(self.layout().log(id));
        self.store.remove(id)
    }

    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        self.start_exec(id, req, None).await
    }

    /// The cgroup freezer: every process of the sandbox, pid 1 included, stops getting CPU.
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, true)
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, false)
    }

    async fn exec_kept(&self, id: &SandboxId, req: ExecRequest, exec_id: &str) -> Result<ExecSession> {
        self.start_exec(id, req, Some(exec_id)).await
    }

    async fn attach(&self, id: &SandboxId, exec_id: &str, from_seq: u64) -> Result<ExecSession> {
        let conn = self.connect(id).await?;
        stockade_proto::client::attach(conn, exec_id, from_seq).await
    }

    async fn file(&self, id: &SandboxId, op: FileOp) -> Result<FileReply> {
        let conn = self.connect(id).await?;
        stockade_proto::client::file(conn, op).await
    }

    async fn stats(&self, id: &SandboxId) -> Result<Stats> {
        self.stats_of(id).await
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<Box<dyn stockade_core::PortStream>> {
        let conn = self.connect(id).await?;
        Ok(Box::new(stockade_proto::client::connect_port(conn, port).await?))
    }
}

impl NativeDriver {
    async fn start_exec(
        &self,
        id: &SandboxId,
        req: ExecRequest,
        keep_as: Option<&str>,
    ) -> Result<ExecSession> {
        req.validate()?;
        let conn = self.connect(id).await?;
        let (version, cgroups) = (self.cgroups.version(), self.cgroups.dirs_for(id.as_str()));
        let ooms_before = crate::cgroup::oom_kills(version, &cgroups);
        let session = match keep_as {
            Some(exec_id) => stockade_proto::client::exec_kept(conn, req, exec_id).await?,
            None => stockade_proto::client::exec(conn, req).await?,
        };
        Ok(session.report_oom(move || crate::cgroup::oom_kills(version, &cgroups) > ooms_before))
    }

    async fn stats_of(&self, id: &SandboxId) -> Result<Stats> {
        let record = self.store.load(id)?;
        if let (SandboxStatus::Running, Some(rt)) = self.live_status(&record) {
            if let Some(mut stats) = crate::cgroup::stats(&rt.cgroup_version, &rt.cgroups) {
                // Without a memory limit there is no memory cgroup on v1: memory comes from /proc.
                if rt.cgroup_version == "v1"
                    && !rt
                        .cgroups
                        .iter()
                        .any(|d| d.join("memory.usage_in_bytes").exists())
                {
                    let conn = self.connect(id).await?;
                    stats.memory_bytes = stockade_proto::client::stats(conn).await?.memory_bytes;
                    stats.source = "cgroup v1 (cpu, pids) + procfs (memory)".into();
                }
                return Ok(stats);
            }
        }
        let conn = self.connect(id).await?;
        stockade_proto::client::stats(conn).await
    }
}
