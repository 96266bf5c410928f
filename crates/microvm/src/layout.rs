//! Where a microvm sandbox's files live under `$STOCKADE_HOME/microvm`, and its records.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stockade_core::{SandboxId, SandboxSpec, SandboxStatus};
use stockade_store::StoredRecord;

use crate::accel::Accel;
use crate::image::VmImage;

/// The driver's directories.
#[derive(Debug, Clone)]
pub struct Layout {
    pub home: PathBuf,
    pub root: PathBuf,
}

impl Layout {
    pub fn at(home: &Path) -> Layout {
        Layout {
            home: home.to_path_buf(),
            root: home.join("microvm"),
        }
    }
    pub fn records(&self) -> PathBuf {
        self.root.join("records")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("lock")
    }
    /// One VM's directory: its disk, console, sockets and runtime file.
    pub fn vm(&self, id: &SandboxId) -> PathBuf {
        self.root.join("vms").join(id.as_str())
    }
    pub fn disk(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("disk.qcow2")
    }
    /// What host processes connect to for the agent protocol.
    pub fn agent_socket(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("agent.sock")
    }
    /// Where QEMU connects the guest's virtio-serial port.
    pub fn serial_socket(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("serial.sock")
    }
    pub fn qmp_socket(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("qmp.sock")
    }
    pub fn console(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("console.log")
    }
    /// The supervisor's own log (QEMU's stderr goes there too).
    pub fn log(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("supervisor.log")
    }
    /// Present while the VM is paused: execs are refused without reading the record.
    pub fn paused_marker(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("paused")
    }
    pub fn runtime(&self, id: &SandboxId) -> PathBuf {
        self.vm(id).join("runtime.json")
    }
}

/// A microvm sandbox's record: the spec and what create decided for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: SandboxId,
    pub name: String,
    pub status: SandboxStatus,
    pub created_at: u64,
    pub spec: SandboxSpec,
    pub image: VmImage,
    pub accel: Accel,
    pub qemu: PathBuf,
    /// The static agent the initramfs carries; also the supervisor's binary.
    pub agent: PathBuf,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The template ([`crate::template`]) the sandbox was restored from and its disk is an
    /// overlay on; none when it booted cold.
    #[serde(default)]
    pub template: Option<PathBuf>,
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
        crate::DRIVER
    }
}

/// What the supervisor writes once the guest's agent answers: the processes to check and kill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    pub supervisor_pid: i32,
    pub supervisor_start: u64,
    pub qemu_pid: i32,
    pub qemu_start: u64,
    /// Milliseconds from QEMU's start to the agent's answer.
    pub boot_ms: u64,
    /// Started from a template's saved state rather than booted.
    #[serde(default)]
    pub restored: bool,
    /// `--network full`: the guest's link, described.
    #[serde(default)]
    pub network: Option<String>,
}

impl Runtime {
    pub fn alive(&self) -> bool {
        stockade_store::is_same_process(self.supervisor_pid, self.supervisor_start)
            && stockade_store::is_same_process(self.qemu_pid, self.qemu_start)
    }
}
