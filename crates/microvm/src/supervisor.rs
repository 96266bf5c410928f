//! One host process per VM: `stockade-agent vm-supervise`, started by the driver with the home
//! and the sandbox id in its environment, detached in a session of its own so it outlives the
//! command that made the VM.
//!
//! It starts QEMU (which dies with it: parent-death signal), accepts QEMU's connection for the
//! guest agent's virtio-serial port, starts the yamux session over it and gives the guest its
//! config and identity (the first stream), then listens on `vms/ID/agent.sock` and carries each
//! connection there as a stream of its own. Its one line on stdout is `ready PID` or
//! `error MESSAGE`. It ends when QEMU does (the guest powered off or crashed), on SIGTERM (stop:
//! the guest's disks are synced first) or at the TTL (the sandbox is removed, as the native
//! driver's supervisor does); each way it leaves no socket or QEMU behind.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use stockade_core::{Error, ExecRequest, Result, SandboxId};
use stockade_proto::{AgentConfig, GuestIdentity};
use stockade_store::RecordStore;
use tokio::net::UnixListener;

use crate::layout::{Layout, Record, Runtime};
use crate::mux::MuxHandle;
use crate::qemu::QemuGuest;

pub const HOME_ENV: &str = "STOCKADE_MICROVM_HOME";
pub const ID_ENV: &str = "STOCKADE_MICROVM_ID";
/// Set on a sandbox's first start when it is restored: the template state to load.
pub const RESTORE_ENV: &str = "STOCKADE_MICROVM_RESTORE";
/// How long a guest may take from QEMU's start to the agent's answer (software emulation is slow).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The records of `home`.
pub fn records(layout: &Layout) -> Result<RecordStore<Record>> {
    RecordStore::new(layout.records(), layout.lock())
        .with_index(stockade_store::Index::of_home(&layout.home), crate::DRIVER)
}

/// The supervisor's entry point; returns its exit code.
pub fn main(home: &Path, id: &str) -> i32 {
    let _ = nix::unistd::setsid();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&format!("error tokio: {e}"));
            return 1;
        }
    };
    match runtime.block_on(supervise(&Layout::at(home), id)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("{e}");
            // The error as the agent protocol carries one, so the driver keeps its kind (bad
            // input stays bad input).
            let wire = serde_json::to_string(&stockade_proto::Reply::from_error(&e)).unwrap_or_default();
            report(&format!("error {wire}"));
            1
        }
    }
}

/// The one line the driver waits for; stdout is closed after it (the driver stops reading).
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn supervise(layout: &Layout, id: &str) -> Result<()> {
    let id = SandboxId::parse(id)?;
    let store = records(layout)?;
    let record = store.load(&id)?;
    let vm = layout.vm(&id);
    for stale in [
        layout.agent_socket(&id),
        layout.serial_socket(&id),
        layout.qmp_socket(&id),
        layout.runtime(&id),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let serial = UnixListener::bind(layout.serial_socket(&id))
        .map_err(|e| Error::backend(format!("bind {}", layout.serial_socket(&id).display()), e))?;
    let initramfs = crate::image::initramfs_for(&record.image, &record.agent)?;
    let restore = std::env::var_os(RESTORE_ENV).map(std::path::PathBuf::from);
    let mut guest = QemuGuest {
        incoming: restore.clone(),
        ..QemuGuest::for_record(&record, initramfs, layout)
    };
    // --network full: a tap of this VM's own behind the host rules every sandbox shares. Only
    // QEMU holds it once started, so it goes when QEMU does, however QEMU ends.
    let tap = match guest.nic {
        crate::qemu::Nic::None => None,
        _ => {
            let (link, tap) =
                stockade_hostnet::reserve(id.as_str(), &layout.home.join("network.lock"), |link| {
                    let tap = stockade_sys::open_tap(&link.host_if)?;
                    stockade_hostnet::address_host_side(link)?;
                    Ok(tap)
                })
                .map_err(|e| Error::backend("the VM's network", e))?;
            guest.nic = crate::qemu::Nic::Tap {
                fd: std::os::fd::AsRawFd::as_raw_fd(&tap),
            };
            Some((link, tap))
        }
    };
    let qemu_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log(&id))
        .map_err(|e| Error::backend("open the supervisor log", e))?;
    let mut command = tokio::process::Command::new(&guest.binary);
    command
        .args(guest.args())
        .current_dir(&vm)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(qemu_log)
        .kill_on_drop(true);
    stockade_sys::kill_with_parent(&mut command);
    // Emulated guests boot one at a time per host: booting several at once on a small host
    // leaves some stuck for good in early boot (seen: four on two cores, each spinning in a delay
    // loop or on jiffies with its timer starved). A boot takes a few seconds, so a queue is
    // short; a running guest holds nothing.
    let boot_turn = match restore {
        Some(_) => None,
        None => boot_turn(&record)?,
    };
    let started = Instant::now();
    // The tap's fd must survive exec in QEMU (it is close-on-exec here). Cleared right before
    // the spawn and dropped after it: this supervisor is single-threaded, nothing else spawns.
    if let Some((_, fd)) = &tap {
        stockade_sys::set_cloexec(fd, false).map_err(|e| Error::backend("the tap's fd", e))?;
    }
    let spawned = command.spawn();
    let link = tap.map(|(link, fd)| {
        drop(fd);
        link
    });
    let mut qemu = spawned.map_err(|e| Error::backend(format!("start {}", guest.binary.display()), e))?;
    let qemu_pid = qemu.id().unwrap_or_default() as i32;
    let booted = tokio::select! {
        booted = boot(&serial, &record, restore.is_some().then(|| layout.qmp_socket(&id)), link.as_ref()) => booted.map_err(|e| match e {
            Error::Timeout(after, what) => Error::Timeout(after, format!("{what}{}", console_tail(layout, &id))),
            Error::Backend { context, reason } => Error::Backend {
                context,
                reason: format!("{reason}{}", qemu_says(layout, &id)),
            },
            other => other,
        }),
        status = qemu.wait() => Err(Error::backend(
            "the VM",
            format!("QEMU exited ({}) before the guest's agent answered{}{}",
                status.map(|s| s.to_string()).unwrap_or_default(), qemu_says(layout, &id), console_tail(layout, &id)),
        )),
    };
    drop(boot_turn);
    let mux = match booted {
        Ok(mux) => mux,
        Err(e) => {
            let _ = qemu.start_kill();
            let _ = qemu.wait().await;
            cleanup(layout, &id);
            return Err(e);
        }
    };
    let agent = UnixListener::bind(layout.agent_socket(&id))
        .map_err(|e| Error::backend(format!("bind {}", layout.agent_socket(&id).display()), e))?;
    let rt = Runtime {
        supervisor_pid: std::process::id() as i32,
        supervisor_start: stockade_store::process_start_time(std::process::id() as i32).unwrap_or_default(),
        qemu_pid,
        qemu_start: stockade_store::process_start_time(qemu_pid).unwrap_or_default(),
        boot_ms: started.elapsed().as_millis() as u64,
        restored: restore.is_some(),
        network: link.as_ref().map(|link| {
            format!(
                "full: tap {} ({}) <-> eth0 ({}), NAT out of the host; no host, no other sandbox, no 169.254/16",
                link.host_if, link.host_ip, link.sandbox_ip
            )
        }),
    };
    let json = serde_json::to_vec(&rt).map_err(|e| Error::backend("runtime", e))?;
    stockade_store::write_atomic(&layout.runtime(&id), &json, 0o600)
        .map_err(|e| Error::backend("write runtime", e))?;
    tracing::info!(
        boot_ms = rt.boot_ms,
        restored = rt.restored,
        accel = record.accel.as_str(),
        "guest ready"
    );
    report(&format!("ready {}", std::process::id()));
    // Nobody reads stdout any more; a later write must not raise SIGPIPE.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::backend("SIGTERM handler", e))?;
    let ttl_left = record.spec.ttl.map(|ttl| {
        let age = stockade_store::now_secs().saturating_sub(record.created_at);
        ttl.saturating_sub(Duration::from_secs(age))
    });
    let ttl = async {
        match ttl_left {
            Some(left) => tokio::time::sleep(left).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(ttl);
    let ending = loop {
        tokio::select! {
            accepted = agent.accept() => {
                if let Ok((conn, _)) = accepted {
                    let mux = mux.clone();
                    tokio::spawn(async move { carry(conn, &mux).await });
                }
            }
            _ = qemu.wait() => break Ending::GuestGone,
            _ = sigterm.recv() => break Ending::Stop,
            () = &mut ttl => break Ending::Ttl,
        }
    };
    drop(agent);
    if ending != Ending::GuestGone {
        // The guest's page cache holds writes the disk has not seen; stop keeps the disk.
        let _ = tokio::time::timeout(Duration::from_secs(10), sync_guest(&mux)).await;
        let _ = qemu.start_kill();
        let _ = qemu.wait().await;
    }
    cleanup(layout, &id);
    if ending == Ending::Ttl {
        tracing::info!("ttl reached: removing the sandbox");
        let _ = std::fs::remove_dir_all(&vm);
        let _ = store.remove(&id);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    GuestGone,
    Stop,
    Ttl,
}

/// Waits for QEMU's connection to the agent port, starts the session and configures the guest.
/// A guest restored from a template (QMP at `restored_qmp`) said its hello before it was saved;
/// the host waits instead for QEMU to have loaded the state and resumed it.
async fn boot(
    serial: &UnixListener,
    record: &Record,
    restored_qmp: Option<std::path::PathBuf>,
    link: Option<&stockade_hostnet::Link>,
) -> Result<MuxHandle> {
    let work = async {
        let (conn, _) = serial
            .accept()
            .await
            .map_err(|e| Error::backend("accept QEMU's agent port", e))?;
        let conn = match restored_qmp {
            Some(qmp) => {
                crate::vmm::VmmControl::finish_restore(&crate::vmm::QemuControl::at(&qmp)).await?;
                conn
            }
            None => wait_for_hello(conn).await?,
        };
        let (mux, _session) = crate::mux::start(conn);
        let stream = mux.open().await?;
        stockade_proto::client::configure(stream, agent_config(record), identity(record, link)?).await?;
        Ok(mux)
    };
    tokio::time::timeout(BOOT_TIMEOUT, work)
        .await
        .map_err(|_| Error::Timeout(BOOT_TIMEOUT, format!("VM {} to boot", record.id)))?
}

/// Under emulation, waits for this host's boot turn (see where the supervisor takes it).
pub(crate) fn boot_turn(record: &Record) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    match record.accel {
        crate::accel::Accel::Tcg => boot_lock(&record.image.dir).map(Some),
        crate::accel::Accel::Kvm => Ok(None),
    }
}

/// Waits for this host's boot turn: an exclusive lock on a file beside the image.
fn boot_lock(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    lock_exclusive(&dir.join(".boot.lock"))
}

/// An exclusive lock on the file at `path` (made if missing), held until dropped; blocks.
pub(crate) fn lock_exclusive(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::backend(format!("open {}", path.display()), e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::backend(format!("lock {}", path.display()), e))
}

/// Reads the guest agent's hello (the host says nothing before it: see the agent's `vm.rs`).
pub(crate) async fn wait_for_hello(mut conn: tokio::net::UnixStream) -> Result<tokio::net::UnixStream> {
    use tokio::io::AsyncReadExt;
    let want = stockade_proto::VM_AGENT_READY;
    let mut got = vec![0u8; want.len()];
    conn.read_exact(&mut got)
        .await
        .map_err(|e| Error::backend("the guest's agent port", format!("no hello: {e}")))?;
    if got != want {
        return Err(Error::backend(
            "the guest's agent port",
            format!(
                "expected the agent's hello, got {:?}",
                String::from_utf8_lossy(&got)
            ),
        ));
    }
    Ok(conn)
}

/// The agent's config for the sandbox: the spec's exec defaults and the strict hardening.
pub fn agent_config(record: &Record) -> AgentConfig {
    let mut config = AgentConfig::for_spec(&record.spec, None);
    config.own_workdir = record.spec.user.is_some();
    // The guest kernel is the sandbox's: the limits are its cgroup's, set by the agent.
    let r = &record.spec.resources;
    config.exec_limits = Some(stockade_proto::ExecLimits {
        memory_bytes: r.memory_bytes,
        pids: r.pids,
        millicpus: r.millicpus.filter(|m| m % 1000 != 0),
        disk_bytes: r.disk_bytes,
    });
    config
}

fn identity(record: &Record, link: Option<&stockade_hostnet::Link>) -> Result<GuestIdentity> {
    let mut bytes = [0u8; 48];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| Error::backend("read /dev/urandom", e))?;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Ok(GuestIdentity {
        hostname: record.name.chars().take(63).collect(),
        machine_id: hex(&bytes[..16]),
        random_seed: hex(&bytes[16..]),
        unix_time_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        network: link.map(|link| stockade_proto::GuestNetwork {
            address: format!("{}/30", link.sandbox_ip),
            gateway: link.host_ip.to_string(),
            nameservers: stockade_hostnet::sandbox_nameservers(),
        }),
    })
}

/// Carries one host connection over a stream of its own, both ways, until either side ends.
async fn carry(mut conn: tokio::net::UnixStream, mux: &MuxHandle) {
    let Ok(mut stream) = mux.open().await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut stream).await;
}

async fn sync_guest(mux: &MuxHandle) -> Result<()> {
    let stream = mux.open().await?;
    let session = stockade_proto::client::exec(
        stream,
        ExecRequest {
            argv: vec!["sync".into()],
            user: Some("root".into()),
            ..Default::default()
        },
    )
    .await?;
    session.output().await.map(drop)
}

fn cleanup(layout: &Layout, id: &SandboxId) {
    for path in [
        layout.agent_socket(id),
        layout.serial_socket(id),
        layout.qmp_socket(id),
        layout.runtime(id),
    ] {
        let _ = std::fs::remove_file(path);
    }
}

/// QEMU's last complaint on its stderr (the supervisor's log), for an error message.
fn qemu_says(layout: &Layout, id: &SandboxId) -> String {
    let log = std::fs::read_to_string(layout.log(id)).unwrap_or_default();
    log.lines()
        .rev()
        .filter(|l| l.starts_with("qemu-system"))
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|l| format!("; QEMU said: {}", l.trim()))
        .collect()
}

/// The last lines the guest printed, for an error message.
pub fn console_tail(layout: &Layout, id: &SandboxId) -> String {
    let text = std::fs::read_to_string(layout.console(id)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
    format!("; the console's last lines: {tail}")
}
