//! `MicrovmDriver: Driver`: records and supervisors on the host side, the agent protocol over
//! each VM's `agent.sock` (the supervisor carries it into the guest) for everything inside.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stockade_core::{
    Driver, Error, ExecRequest, ExecSession, FileOp, FileReply, NetworkMode, Result, SandboxId, SandboxInfo,
    SandboxSpec, SandboxStatus, Stats,
};
use stockade_store::{now_secs, random_id, RecordStore};
use tokio::io::AsyncBufReadExt;
use tokio::net::UnixStream;

use crate::accel::{Accel, KvmProbe};
use crate::layout::{Layout, Record, Runtime};
use crate::supervisor::{BOOT_TIMEOUT, HOME_ENV, ID_ENV};
use crate::vmm::{QemuControl, VmmControl};
use crate::DRIVER;

/// A guest's memory when the spec sets no limit.
pub const DEFAULT_MEMORY_MIB: u64 = 512;
/// What a guest gets beyond a `--memory` limit (which its execs' cgroup enforces): the guest
/// kernel, the agent and some page cache.
pub const GUEST_OVERHEAD_MIB: u64 = 192;
/// How long a supervisor may take to tear its VM down.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// The microvm driver over one Stockade home.
#[derive(Debug, Clone)]
pub struct MicrovmDriver {
    layout: Layout,
    /// Where VM images are found ([`crate::image::images_dir`]).
    images: PathBuf,
    records: RecordStore<Record>,
    /// The static agent: the guest's init and the supervisor's binary.
    agent: Result<PathBuf, String>,
    search_path: Vec<PathBuf>,
    /// `$STOCKADE_QEMU`: the QEMU binary to use instead of the one on `PATH`.
    qemu_override: Option<PathBuf>,
    /// New sandboxes start from a template's saved state (`$STOCKADE_MICROVM_SNAPSHOTS=off`:
    /// every one boots).
    snapshots: bool,
}

/// `name` in `dirs`, then the default `PATH`.
pub fn find_program(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(PathBuf::as_path)
        .chain(stockade_proto::DEFAULT_PATH.split(':').map(Path::new))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The QEMU system emulator for this host's architecture.
pub fn qemu_binary() -> String {
    format!("qemu-system-{}", std::env::consts::ARCH)
}

/// The acceleration `runtime` asks for: `qemu` (the best there is), `qemu:kvm` or `qemu:tcg`.
pub fn parse_runtime(runtime: Option<&str>) -> Result<Option<Accel>> {
    match runtime {
        None | Some("qemu") => Ok(None),
        Some("qemu:kvm") => Ok(Some(Accel::Kvm)),
        Some("qemu:tcg") => Ok(Some(Accel::Tcg)),
        Some(vmm @ ("firecracker" | "cloud-hypervisor")) => Err(Error::unsupported(
            DRIVER,
            if vmm == "firecracker" {
                "--runtime firecracker"
            } else {
                "--runtime cloud-hypervisor"
            },
            "that VMM's backend is not built yet; QEMU is (--runtime qemu, qemu:kvm or qemu:tcg)",
        )),
        Some(other) => Err(Error::invalid(
            "runtime",
            format!("{other:?}: expected qemu, qemu:kvm or qemu:tcg"),
        )),
    }
}

impl MicrovmDriver {
    pub fn from_config(config: &stockade_core::DriverConfig) -> Result<Self> {
        let layout = Layout::at(&config.home);
        if layout.agent_socket(&SandboxId::from_random(0)).as_os_str().len() > 107 {
            return Err(Error::invalid(
                "STOCKADE_HOME",
                format!(
                    "{}: too long for a unix socket path below it",
                    config.home.display()
                ),
            ));
        }
        std::fs::create_dir_all(layout.root.join("vms"))
            .map_err(|e| Error::backend(format!("create {}", layout.root.display()), e))?;
        Ok(MicrovmDriver {
            records: crate::supervisor::records(&layout)?,
            layout,
            images: crate::image::images_dir(config),
            agent: stockade_proto::agent_binary::find(config, DRIVER).map_err(|e| e.to_string()),
            search_path: config.path_dirs(),
            qemu_override: config.var("STOCKADE_QEMU").map(PathBuf::from),
            snapshots: match config.var("STOCKADE_MICROVM_SNAPSHOTS") {
                None | Some("on") => true,
                Some("off") => false,
                Some(other) => {
                    return Err(Error::invalid(
                        "STOCKADE_MICROVM_SNAPSHOTS",
                        format!("{other:?}: expected on or off"),
                    ))
                }
            },
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn images_dir(&self) -> &Path {
        &self.images
    }

    fn agent(&self) -> Result<&Path> {
        self.agent
            .as_deref()
            .map_err(|why| Error::unsupported(DRIVER, "sandboxes", why.clone()))
    }

    /// QEMU's path, or what to install.
    pub fn qemu(&self) -> Result<PathBuf> {
        if let Some(path) = &self.qemu_override {
            return if path.is_file() {
                Ok(path.clone())
            } else {
                Err(Error::unsupported(
                    DRIVER,
                    "sandboxes",
                    format!("STOCKADE_QEMU names {}, which does not exist", path.display()),
                ))
            };
        }
        let name = qemu_binary();
        find_program(&self.search_path, &name).ok_or_else(|| {
            Error::unsupported(
                DRIVER,
                "sandboxes",
                format!("{name} is not installed (apt-get install qemu-system-x86 qemu-utils)"),
            )
        })
    }

    fn load_runtime(&self, id: &SandboxId) -> Option<Runtime> {
        serde_json::from_slice(&std::fs::read(self.layout.runtime(id)).ok()?).ok()
    }

    /// As native's: a record that says running (or creating) with a live supervisor and QEMU is
    /// running; with none it is lost, except in a create's start window.
    fn live_status(&self, record: &Record) -> (SandboxStatus, Option<Runtime>) {
        let runtime = self.load_runtime(&record.id);
        match record.status {
            SandboxStatus::Paused => {
                if runtime.as_ref().is_some_and(Runtime::alive) {
                    (SandboxStatus::Paused, runtime)
                } else {
                    (SandboxStatus::Lost, runtime)
                }
            }
            SandboxStatus::Running | SandboxStatus::Creating => {
                if runtime.as_ref().is_some_and(Runtime::alive) {
                    (SandboxStatus::Running, runtime)
                } else if record.status == SandboxStatus::Creating
                    && runtime.is_none()
                    && now_secs() < record.created_at + BOOT_TIMEOUT.as_secs() + 5
                {
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
        let l = &self.layout;
        let mut details = serde_json::Map::new();
        details.insert("vmm".into(), "qemu (-M microvm)".into());
        details.insert("accel".into(), record.accel.as_str().into());
        details.insert("kernel".into(), record.image.kernel_release.clone().into());
        details.insert("image".into(), record.image.key.clone().into());
        details.insert("memory_mib".into(), record.memory_mib.into());
        details.insert("vcpus".into(), record.vcpus.into());
        details.insert("disk".into(), l.disk(&record.id).display().to_string().into());
        details.insert(
            "console".into(),
            l.console(&record.id).display().to_string().into(),
        );
        details.insert(
            "socket".into(),
            l.agent_socket(&record.id).display().to_string().into(),
        );
        details.insert("agent_channel".into(), "yamux over virtio-serial".into());
        if let Some(template) = &record.template {
            details.insert("template".into(), template.display().to_string().into());
        }
        let network = match (
            record.spec.network,
            runtime.as_ref().and_then(|rt| rt.network.clone()),
        ) {
            (NetworkMode::None, _) => "none (no NIC; the guest's loopback only)".to_owned(),
            (NetworkMode::Full, Some(link)) => link,
            (NetworkMode::Full, None) => "full (a tap behind the host rules, made at start)".to_owned(),
        };
        details.insert("network".into(), network.into());
        if let Some(rt) = runtime.filter(|_| matches!(status, SandboxStatus::Running | SandboxStatus::Paused))
        {
            details.insert("supervisor_pid".into(), rt.supervisor_pid.into());
            details.insert("qemu_pid".into(), rt.qemu_pid.into());
            details.insert("boot_ms".into(), rt.boot_ms.into());
            details.insert(
                "started_from".into(),
                if rt.restored {
                    "template (snapshot restore)"
                } else {
                    "cold boot"
                }
                .into(),
            );
        }
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

    /// Checks `spec` against what this driver does, and picks memory, vCPUs and acceleration.
    fn plan(&self, spec: &SandboxSpec) -> Result<(u64, u32, Accel)> {
        spec.validate()?;
        if !spec.driver.is_empty() && spec.driver != DRIVER {
            return Err(Error::invalid(
                "driver",
                format!("{:?} given to the microvm driver", spec.driver),
            ));
        }
        if spec.rootfs.is_some() {
            return Err(Error::unsupported(
                DRIVER,
                "--rootfs",
                "a VM boots a disk image: use --image (a VM image key; `stockade image vm` builds one)",
            ));
        }
        if !spec.mounts.is_empty() {
            return Err(Error::unsupported(
                DRIVER,
                "volumes",
                "host directories are not shared into VMs: Debian 12's virtiofsd runs as host root without uid translation, so a guest could leave setuid-root files in them",
            ));
        }
        if spec.network == NetworkMode::Full && !nix::unistd::geteuid().is_root() {
            return Err(Error::unsupported(
                DRIVER,
                "--network full",
                "a VM's NIC is a tap behind host firewall rules, which needs root",
            ));
        }
        let r = &spec.resources;
        let accel = KvmProbe::host()
            .choose(parse_runtime(spec.runtime.as_deref())?)
            .map_err(|why| Error::unsupported(DRIVER, "--runtime qemu:kvm", why))?;
        let memory_mib = r
            .memory_bytes
            .map_or(DEFAULT_MEMORY_MIB, |b| b.div_ceil(1 << 20) + GUEST_OVERHEAD_MIB);
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let vcpus = r.millicpus.map_or(1, |m| m.div_ceil(1000)).max(1);
        if vcpus > host_cpus {
            return Err(Error::invalid(
                "cpus",
                format!("{vcpus} vCPUs asked; this host has {host_cpus}"),
            ));
        }
        Ok((memory_mib, vcpus, accel))
    }

    /// Starts the supervisor for `record` and waits for its `ready` line.
    /// `restore`: the template state to start from instead of booting.
    async fn launch(&self, record: &Record, restore: Option<&Path>) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.log(&record.id))
            .map_err(|e| Error::backend("open the supervisor log", e))?;
        let mut command = tokio::process::Command::new(&record.agent);
        command.env_clear();
        if let Some(state) = restore {
            command.env(crate::supervisor::RESTORE_ENV, state);
        }
        let mut child = command
            .arg0("stockade-agent")
            .arg("vm-supervise")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .env("PATH", stockade_proto::DEFAULT_PATH)
            .env(HOME_ENV, &self.layout.home)
            .env(ID_ENV, record.id.as_str())
            .spawn()
            .map_err(|e| Error::backend(format!("start supervisor {}", record.agent.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::backend("supervisor", "no stdout"))?;
        let mut line = String::new();
        let wait = BOOT_TIMEOUT + Duration::from_secs(10);
        let read = tokio::time::timeout(wait, tokio::io::BufReader::new(stdout).read_line(&mut line)).await;
        if !matches!(&read, Ok(Ok(_)) if line.starts_with("ready ")) {
            // QEMU dies with its supervisor (parent-death signal).
            let _ = child.start_kill();
            let _ = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await;
        }
        drop(child);
        match read {
            Err(_) => Err(Error::Timeout(wait, format!("VM {} to start", record.id))),
            Ok(Err(e)) => Err(Error::backend("supervisor", e)),
            Ok(Ok(_)) if line.starts_with("ready ") => Ok(()),
            Ok(Ok(_)) => {
                let msg = line.trim().strip_prefix("error ").unwrap_or(line.trim());
                let context = format!("start VM {}", record.id);
                match serde_json::from_str::<stockade_proto::Reply>(msg) {
                    // Bad input keeps its kind and field; anything else is this start's failure.
                    Ok(stockade_proto::Reply::Error {
                        kind,
                        message,
                        subject,
                    }) if kind == "invalid" => Err(stockade_proto::error_from_wire(&kind, message, subject)),
                    Ok(stockade_proto::Reply::Error { message, .. }) => Err(Error::backend(context, message)),
                    _ if msg.is_empty() => {
                        Err(Error::backend(context, "the supervisor exited without a word"))
                    }
                    _ => Err(Error::backend(context, msg)),
                }
            }
        }
    }

    /// Stops the supervisor (which syncs the guest, kills QEMU and removes its sockets) and waits
    /// for it; after a crash, kills whatever is left itself.
    async fn halt(&self, id: &SandboxId) -> Result<()> {
        let Some(rt) = self.load_runtime(id) else {
            return Ok(());
        };
        let supervisor = stockade_sys::pidfd_open(rt.supervisor_pid)
            .ok()
            .filter(|_| stockade_store::is_same_process(rt.supervisor_pid, rt.supervisor_start));
        if let Some(pidfd) = supervisor {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(rt.supervisor_pid),
                nix::sys::signal::SIGTERM,
            );
            if tokio::time::timeout(STOP_TIMEOUT, stockade_sys::wait_pidfd(pidfd))
                .await
                .is_err()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(rt.supervisor_pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while stockade_store::is_same_process(rt.qemu_pid, rt.qemu_start) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(rt.qemu_pid), nix::sys::signal::SIGKILL);
            if Instant::now() > deadline {
                return Err(Error::Timeout(STOP_TIMEOUT, format!("QEMU of {id} to exit")));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let l = &self.layout;
        for path in [
            l.agent_socket(id),
            l.serial_socket(id),
            l.qmp_socket(id),
            l.runtime(id),
            l.paused_marker(id),
        ] {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    async fn connect(&self, id: &SandboxId) -> Result<UnixStream> {
        // A paused guest's socket still answers (its supervisor runs), but nothing would reply.
        if self.layout.paused_marker(id).exists() {
            let (status, _) = self.live_status(&self.records.load(id)?);
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "this".into(),
                needed: "running (stockade resume)".into(),
            });
        }
        let connect_error = match UnixStream::connect(self.layout.agent_socket(id)).await {
            Ok(conn) => return Ok(conn),
            Err(e) => e,
        };
        let record = self.records.load(id)?;
        let (status, _) = self.live_status(&record);
        if !status.can_exec() {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "this".into(),
                needed: "running".into(),
            });
        }
        Err(Error::backend(
            format!("connect to VM {id}"),
            format!(
                "{connect_error}{}",
                crate::supervisor::console_tail(&self.layout, id)
            ),
        ))
    }

    fn qemu_img(&self) -> Result<PathBuf> {
        find_program(&self.search_path, "qemu-img").ok_or_else(|| {
            Error::unsupported(
                DRIVER,
                "sandboxes",
                "qemu-img is not installed (apt-get install qemu-utils)",
            )
        })
    }

    /// The control side of the VM's VMM.
    fn control(&self, id: &SandboxId) -> QemuControl {
        QemuControl::at(&self.layout.qmp_socket(id))
    }

    /// Pauses (`frozen`) a running VM, or resumes a paused one.
    async fn freeze(&self, id: &SandboxId, frozen: bool) -> Result<()> {
        let _lock = self.records.lock()?;
        let mut record = self.records.load(id)?;
        let to = self.live_status(&record).0.after_freeze(id, frozen)?;
        let marker = self.layout.paused_marker(id);
        if frozen {
            self.control(id).pause().await?;
            std::fs::write(&marker, b"")
                .map_err(|e| Error::backend(format!("write {}", marker.display()), e))?;
        } else {
            self.control(id).resume().await?;
            let _ = std::fs::remove_file(&marker);
        }
        record.status = to;
        self.records.save(&record)
    }

    async fn start_exec(
        &self,
        id: &SandboxId,
        req: ExecRequest,
        keep_as: Option<&str>,
    ) -> Result<ExecSession> {
        req.validate()?;
        let conn = self.connect(id).await?;
        match keep_as {
            Some(exec_id) => stockade_proto::client::exec_kept(conn, req, exec_id).await,
            None => stockade_proto::client::exec(conn, req).await,
        }
    }
}

/// Creates the qcow2 overlay `disk` on `backing` (of format `backing_format`).
pub(crate) async fn create_overlay(
    qemu_img: &Path,
    backing: &Path,
    backing_format: &str,
    disk: &Path,
) -> Result<()> {
    let out = tokio::process::Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-F", backing_format, "-b"])
        .arg(backing)
        .arg(disk)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::backend(format!("run {}", qemu_img.display()), e))?;
    if !out.status.success() {
        return Err(Error::backend(
            "qemu-img create",
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    Ok(())
}

#[async_trait]
impl Driver for MicrovmDriver {
    fn name(&self) -> &'static str {
        DRIVER
    }

    fn admin(&self) -> Option<&dyn stockade_core::DriverAdmin> {
        Some(self)
    }

    async fn create(&self, mut spec: SandboxSpec) -> Result<SandboxInfo> {
        let (memory_mib, vcpus, accel) = self.plan(&spec)?;
        let qemu = self.qemu()?;
        let agent = self.agent()?.to_path_buf();
        let image = crate::image::find(&self.images, spec.image.as_deref().unwrap_or("latest"))?;
        spec.driver = DRIVER.into();
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
                id,
                status: SandboxStatus::Creating,
                created_at: now_secs(),
                spec,
                image,
                accel,
                qemu,
                agent,
                memory_mib,
                vcpus,
                template: None,
            };
            std::fs::create_dir_all(self.layout.vm(&record.id))
                .map_err(|e| Error::backend("create the VM's directory", e))?;
            self.records.save(&record)?;
            record
        };
        let started = async {
            let record = &record;
            let qemu_img = self.qemu_img()?;
            let disk = self.layout.disk(&record.id);
            if !self.snapshots {
                create_overlay(&qemu_img, &record.image.rootfs, "raw", &disk).await?;
                return self.launch(record, None).await.map(|()| record.clone());
            }
            let template = crate::template::ensure(record, &self.layout, &qemu_img).await?;
            create_overlay(&qemu_img, &template.disk(), "qcow2", &disk).await?;
            let record = Record {
                template: Some(template.dir.clone()),
                ..record.clone()
            };
            self.records.save(&record)?;
            self.launch(&record, Some(&template.state()))
                .await
                .map(|()| record)
        }
        .await;
        let record = match started {
            Ok(record) => record,
            Err(e) => {
                let _ = self.halt(&record.id).await;
                let _ = std::fs::remove_dir_all(self.layout.vm(&record.id));
                let _ = self.records.remove(&record.id);
                return Err(e);
            }
        };
        Ok(self.info(&record))
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(self.records.list()?.iter().map(|r| self.info(r)).collect())
    }

    async fn get(&self, id_or_name: &str) -> Result<SandboxInfo> {
        Ok(self.info(&self.records.resolve(id_or_name)?))
    }

    async fn stop(&self, id: &SandboxId) -> Result<()> {
        let mut record = self.records.load(id)?;
        let (status, _) = self.live_status(&record);
        if !status.can_stop() && status != SandboxStatus::Lost {
            return Err(Error::WrongState {
                id: id.to_string(),
                status: status.to_string(),
                operation: "stop".into(),
                needed: "running".into(),
            });
        }
        if status == SandboxStatus::Paused {
            // The guest syncs its disk before it is stopped, so it must run again first.
            self.control(id).resume().await?;
            let _ = std::fs::remove_file(self.layout.paused_marker(id));
        }
        self.halt(id).await?;
        record.status = SandboxStatus::Stopped;
        self.records.save(&record)
    }

    async fn start(&self, id: &SandboxId) -> Result<()> {
        let mut record = self.records.load(id)?;
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
        self.launch(&record, None).await?;
        record.status = SandboxStatus::Running;
        self.records.save(&record)
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.records.load(id)?;
        if self.layout.paused_marker(id).exists() {
            // No sync on the way out is worth waiting for a frozen guest: it is killed as is.
            if let Some(rt) = self.load_runtime(id) {
                if stockade_store::is_same_process(rt.qemu_pid, rt.qemu_start) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(rt.qemu_pid),
                        nix::sys::signal::SIGKILL,
                    );
                }
            }
        }
        self.halt(id).await?;
        let dir = self.layout.vm(id);
        std::fs::remove_dir_all(&dir)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .map_err(|e| Error::backend(format!("remove {}", dir.display()), e))?;
        self.records.remove(id)
    }

    async fn exec(&self, id: &SandboxId, req: ExecRequest) -> Result<ExecSession> {
        self.start_exec(id, req, None).await
    }

    /// The vCPUs halt (QEMU: QMP `stop`); memory, devices and the guest's processes stay.
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, true).await
    }

    /// QEMU: QMP `cont`.
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, false).await
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
        let conn = self.connect(id).await?;
        stockade_proto::client::stats(conn).await
    }

    async fn connect_port(&self, id: &SandboxId, port: u16) -> Result<Box<dyn stockade_core::PortStream>> {
        let conn = self.connect(id).await?;
        Ok(Box::new(stockade_proto::client::connect_port(conn, port).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_name_the_vmm_and_its_acceleration() {
        assert_eq!(parse_runtime(None).ok(), Some(None));
        assert_eq!(parse_runtime(Some("qemu:kvm")).ok(), Some(Some(Accel::Kvm)));
        assert_eq!(parse_runtime(Some("qemu:tcg")).ok(), Some(Some(Accel::Tcg)));
        let bad = parse_runtime(Some("runsc")).unwrap_err().to_string();
        assert!(bad.contains("runtime") && bad.contains("qemu:kvm"), "{bad}");
        let later = parse_runtime(Some("firecracker")).unwrap_err().to_string();
        assert!(later.contains("not built yet"), "{later}");
    }
}
