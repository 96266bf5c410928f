//! Snapshot restore. A guest booted to the point where its agent has said hello, and nothing
//! further (no config, no identity, no exec), is saved once per template key: QEMU is stopped,
//! its whole state migrated to a file, and its disk kept as it was at that instant. A new
//! sandbox's disk is a qcow2 overlay on that disk, and its QEMU starts with `-incoming` from
//! that file instead of booting; the first thing the restored guest then hears is its config and
//! identity (hostname, machine-id, a random seed the kernel reseeds from, the wall clock).
//!
//! The key is what the saved state depends on: QEMU's command line without the per-sandbox
//! paths (the image, the initramfs and so the agent build, the devices, memory, vCPUs,
//! acceleration) and the QEMU binary (a migration stream loads only in a QEMU that reads it).
//! Templates live beside their image, in `templates/KEY/` (then `KEY.1`, ... when a state was
//! reclaimed: see [`reclaim_unused`]); removing the image removes them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use stockade_core::{Error, Result};
use tokio::net::UnixListener;

use crate::layout::{Layout, Record};
use crate::qemu::QemuGuest;
use crate::vmm::{QemuControl, VmmControl};

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

/// The saved generations of one key, oldest first: `KEY`, then `KEY.1`, `KEY.2`, ... A
/// generation's directory is never removed here, since sandboxes' disks are overlays on its
/// disk: when its state is gone (reclaimed by `gc`, or removed by hand to free space), the next
/// save goes into a new generation.
fn generations<'a>(templates: &'a Path, key: &str) -> impl Iterator<Item = Template> + 'a {
    let key = key.to_owned();
    (0u32..).map(move |n| Template {
        dir: templates.join(if n == 0 { key.clone() } else { format!("{key}.{n}") }),
    })
}

/// The newest complete generation of `key`, or the directory the next save goes to.
fn current(templates: &Path, key: &str) -> std::result::Result<Template, Template> {
    let mut complete = None;
    for template in generations(templates, key) {
        if !template.dir.exists() {
            return complete.ok_or(template);
        }
        if template.is_complete() {
            complete = Some(template);
        }
    }
    unreachable!("generations never end")
}

/// The template for `record`'s guest, saved now if there is none yet (the saving guest's sockets
/// are the creating sandbox's, whose paths are known to be short enough).
/// Concurrent callers for one key wait for the first; a failed save leaves nothing.
pub async fn ensure(record: &Record, layout: &Layout, qemu_img: &Path) -> Result<Template> {
    let initramfs = crate::image::initramfs_for(&record.image, &record.agent)?;
    let templates = record.image.dir.join("templates");
    let key = key(&QemuGuest::for_record(record, initramfs.clone(), layout));
    if let Ok(template) = current(&templates, &key) {
        mark_used(&template);
        return Ok(template);
    }
    std::fs::create_dir_all(&templates)
        .map_err(|e| Error::backend(format!("create {}", templates.display()), e))?;
    let lock_path = templates.join(format!(".{key}.lock"));
    let _lock = tokio::task::spawn_blocking(move || crate::supervisor::lock_exclusive(&lock_path))
        .await
        .map_err(|e| Error::backend("template lock", e))??;
    let template = match current(&templates, &key) {
        Ok(template) => {
            mark_used(&template);
            return Ok(template);
        }
        Err(next) => next,
    };
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
    std::fs::rename(&staged, &template.dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&staged);
        Error::backend(format!("rename into {}", template.dir.display()), e)
    })?;
    tracing::info!(template = %template.dir.display(), "saved a VM template");
    Ok(template)
}

/// Records a restore from `template` (its state's modification time), for `gc`.
fn mark_used(template: &Template) {
    if let Ok(state) = std::fs::File::options().append(true).open(template.state()) {
        let _ = state.set_modified(std::time::SystemTime::now());
    }
}

/// How long a template's state may go unused before `gc` reclaims it.
pub const UNUSED_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes the saved states (the large part) of templates in `images` that no sandbox has been
/// restored from for [`UNUSED_FOR`]; their disks stay, since sandboxes' disks may be overlays
/// on them. Returns what was removed.
pub fn reclaim_unused(images: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let now = std::time::SystemTime::now();
    let Ok(images) = std::fs::read_dir(images) else {
        return removed;
    };
    for image in images.flatten() {
        // `latest` is a symlink to one of the others.
        if image.file_type().map_or(true, |t| t.is_symlink()) {
            continue;
        }
        let Ok(templates) = std::fs::read_dir(image.path().join("templates")) else {
            continue;
        };
        for template in templates.flatten() {
            let state = template.path().join("state");
            let unused = std::fs::metadata(&state)
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > UNUSED_FOR);
            if unused && std::fs::remove_file(&state).is_ok() {
                removed.push(format!("VM template state {}", state.display()));
            }
        }
    }
    removed
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
    let saved = tokio::time::timeout(
        SAVE_TIMEOUT,
        QemuControl::at(&qmp_socket).save(&staged.join("state")),
    )
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

/// `s` in single quotes for `sh -c` (QEMU runs an `exec:` URI with the shell).
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_whose_state_is_gone_is_saved_again_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        // Nothing yet: the first save goes to KEY.
        assert_eq!(current(t, "k").unwrap_err().dir, t.join("k"));
        std::fs::create_dir_all(t.join("k")).unwrap();
        std::fs::write(t.join("k/disk.qcow2"), "").unwrap();
        std::fs::write(t.join("k/state"), "").unwrap();
        assert_eq!(current(t, "k").unwrap().dir, t.join("k"));
        // Its state reclaimed, KEY stays (sandboxes' disks may sit on its disk) and the next
        // save goes to KEY.1.
        std::fs::remove_file(t.join("k/state")).unwrap();
        assert_eq!(current(t, "k").unwrap_err().dir, t.join("k.1"));
        std::fs::create_dir_all(t.join("k.1")).unwrap();
        std::fs::write(t.join("k.1/disk.qcow2"), "").unwrap();
        std::fs::write(t.join("k.1/state"), "").unwrap();
        assert_eq!(current(t, "k").unwrap().dir, t.join("k.1"));
    }

    #[test]
    fn gc_reclaims_only_states_unused_for_a_week() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path();
        for (name, age) in [
            ("old", UNUSED_FOR + Duration::from_secs(60)),
            ("new", Duration::ZERO),
        ] {
            let t = images.join("img/templates").join(name);
            std::fs::create_dir_all(&t).unwrap();
            std::fs::write(t.join("disk.qcow2"), "").unwrap();
            let state = std::fs::File::create(t.join("state")).unwrap();
            state.set_modified(std::time::SystemTime::now() - age).unwrap();
        }
        std::os::unix::fs::symlink("img", images.join("latest")).unwrap();
        let removed = reclaim_unused(images);
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert!(removed[0].contains("old/state"), "{removed:?}");
        assert!(!images.join("img/templates/old/state").exists());
        assert!(images.join("img/templates/old/disk.qcow2").exists());
        assert!(images.join("img/templates/new/state").exists());
    }

    #[test]
    fn a_quoted_path_survives_the_shell() {
        assert_eq!(shell_quote(Path::new("/a b/it's")), r"'/a b/it'\''s'");
    }
}
