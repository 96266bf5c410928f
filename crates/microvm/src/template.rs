//! Snapshot restore. A guest booted to the point where its agent has said hello, and nothing
//! further (no config, no identity, no exec), is saved once per template key: QEMU is stopped,
//! its whole state migrated to a file, and its disk kept as it was at that instant. A new
//! sandbox's disk is a qcow2 overlay on that disk, and its QEMU starts with `-incoming` from
//! that file instead of booting; the first thing the restored guest then hears is its config and
//! identity (hostname, machine-id, a random seed the kernel reseeds from, the wall clock).
//!
//! The key is what the saved state depends on: the image, the initramfs (so the agent binary),
//! whether there is a NIC, memory, vCPUs, acceleration and the QEMU binary (a migration stream is only loaded by a QEMU
//! that can read it). Templates live beside their image, in `templates/KEY/`; removing the
//! image removes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use stockade_core::{Error, Result};
use tokio::net::UnixListener;

use crate::layout::{Layout, Record};
use crate::qemu::{QemuGuest, Qmp};

/// How long saving a template may take (a migration of a few hundred MiB to a local file).
const SAVE_TIMEOUT: Duration = Duration::from_secs(120);

/// A saved guest: its disk and its migration stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub dir: PathBuf,
}

impl Template {
    /// The disk as it was when the state was saved; sandboxes' disks are overlays on it.
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    /// QEMU's migration stream.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn is_complete(&self) -> bool {
        self.state().is_file() && self.disk().is_file()
    }
}

/// The template key of a guest: its QEMU command line with the per-sandbox paths left out (so
/// the image, the initramfs and with it the agent build, the devices, memory, vCPUs and
/// acceleration), and the QEMU binary's stamp.
pub fn key(guest: &QemuGuest) -> String {
    use std::os::unix::fs::MetadataExt;
    let qemu = std::fs::metadata(&guest.binary)
        .map(|m| format!("{}:{}:{}", m.len(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default();
    let unplaced = QemuGuest {
        disk: "DISK".into(),
        console: "CONSOLE".into(),
        agent_socket: "SERIAL".into(),
        qmp_socket: "QMP".into(),
        incoming: None,
        ..guest.clone()
    };
    let args: Vec<String> = unplaced
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let stamp = format!("v1|{}|{qemu}|{}", guest.binary.display(), args.join(" "));
    Sha256::digest(stamp.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The template for `record`'s guest, saved now if there is none yet (the saving guest's sockets
/// are the creating sandbox's, whose paths are known to be short enough).
/// Concurrent callers for one key wait for the first; a failed save leaves nothing.
pub async fn ensure(record: &Record, layout: &Layout, qemu_img: &Path) -> Result<Template> {
    let initramfs = crate::image::initramfs_for(&record.image, &record.agent)?;
    let templates = record.image.dir.join("templates");
    let key = key(&QemuGuest::for_record(record, initramfs.clone(), layout));
    let template = Template {
        dir: templates.join(&key),
    };
    if template.is_complete() {
        return Ok(template);
    }
    std::fs::create_dir_all(&templates)
        .map_err(|e| Error::backend(format!("create {}", templates.display()), e))?;
    let lock_path = templates.join(format!(".{key}.lock"));
    let _lock = tokio::task::spawn_blocking(move || lock(&lock_path))
        .await
        .map_err(|e| Error::backend("template lock", e))??;
    if template.is_complete() {
        return Ok(template);
    }
    let staged = templates.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::create_dir_all(&staged)
        .map_err(|e| Error::backend(format!("create {}", staged.display()), e))?;
    let saved = save(record, layout, &initramfs, qemu_img, &staged).await;
    let _ = std::fs::remove_file(layout.serial_socket(&record.id));
    let _ = std::fs::remove_file(layout.qmp_socket(&record.id));
    if let Err(e) = saved {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&template.dir);
    std::fs::rename(&staged, &template.dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        Error::backend(format!("rename into {}", template.dir.display()), e)
    })?;
    tracing::info!(template = %template.dir.display(), "saved a VM template");
    Ok(template)
}

fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::backend(format!("open {}", path.display()), e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::backend(format!("lock {}", path.display()), e))
}

/// Boots a guest on a fresh overlay of the image in `staged`, waits for its agent's hello, and
/// saves its state beside the disk.
async fn save(
    record: &Record,
    layout: &Layout,
    initramfs: &Path,
    qemu_img: &Path,
    staged: &Path,
) -> Result<()> {
    let disk = staged.join("disk.qcow2");
    crate::driver::create_overlay(qemu_img, &record.image.rootfs, "raw", &disk).await?;
    let serial_socket = layout.serial_socket(&record.id);
    let qmp_socket = layout.qmp_socket(&record.id);
    let _ = std::fs::remove_file(&serial_socket);
    let serial = UnixListener::bind(&serial_socket)
        .map_err(|e| Error::backend(format!("bind {}", serial_socket.display()), e))?;
    let guest = QemuGuest {
        disk: disk.clone(),
        console: staged.join("console.log"),
        agent_socket: serial_socket,
        qmp_socket: qmp_socket.clone(),
        ..QemuGuest::for_record(record, initramfs.to_path_buf(), layout)
    };
    let log = std::fs::File::create(staged.join("qemu.log"))
        .map_err(|e| Error::backend("create the template's QEMU log", e))?;
    let mut command = tokio::process::Command::new(&guest.binary);
    command
        .args(guest.args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    stockade_sys::kill_with_parent(&mut command);
    let boot_turn = crate::supervisor::boot_turn(record)?;
    let mut qemu = command
        .spawn()
        .map_err(|e| Error::backend(format!("start {}", guest.binary.display()), e))?;
    let booted = tokio::select! {
        booted = tokio::time::timeout(crate::supervisor::BOOT_TIMEOUT, async {
            let (conn, _) = serial.accept().await.map_err(|e| Error::backend("accept QEMU's agent port", e))?;
            crate::supervisor::wait_for_hello(conn).await
        }) => booted.unwrap_or_else(|_| Err(Error::Timeout(
            crate::supervisor::BOOT_TIMEOUT,
            "the template guest to boot".into(),
        ))),
        status = qemu.wait() => Err(Error::backend(
            "the template guest",
            format!("QEMU exited ({}) before the agent said hello",
                status.map(|s| s.to_string()).unwrap_or_default()),
        )),
    };
    drop(boot_turn);
    // The connection stays open until QEMU quits: the guest must see its host as present.
    let _conn = booted?;
    let saved = tokio::time::timeout(SAVE_TIMEOUT, migrate_to_file(&qmp_socket, &staged.join("state")))
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout(
                SAVE_TIMEOUT,
                "the template's state to save".into(),
            ))
        });
    let _ = qemu.start_kill();
    let _ = qemu.wait().await;
    saved?;
    for noise in ["console.log", "qemu.log"] {
        let _ = std::fs::remove_file(staged.join(noise));
    }
    // Overlays only read it from here on.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o444))
        .map_err(|e| Error::backend(format!("chmod {}", disk.display()), e))?;
    Ok(())
}

/// Stops the guest and writes QEMU's migration stream to `state`; the guest stays stopped.
pub async fn migrate_to_file(qmp_socket: &Path, state: &Path) -> Result<()> {
    let mut qmp = Qmp::connect(qmp_socket).await?;
    qmp.execute("stop", serde_json::json!({})).await?;
    let uri = format!("exec:cat > {}", shell_quote(state));
    qmp.execute("migrate", serde_json::json!({ "uri": uri })).await?;
    loop {
        let info = qmp.execute("query-migrate", serde_json::json!({})).await?;
        match info["status"].as_str().unwrap_or("") {
            "completed" => return Ok(()),
            "failed" | "cancelled" => {
                return Err(Error::backend(
                    "save the VM's state",
                    info["error-desc"]
                        .as_str()
                        .unwrap_or("migration failed")
                        .to_owned(),
                ))
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// `s` in single quotes for `sh -c` (QEMU runs an `exec:` URI with the shell).
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_path_survives_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
