//! What Stockade asks of a VMM once its process runs, whatever the VMM: [`VmmControl`]. QEMU
//! answers over QMP ([`QemuControl`]). Firecracker and Cloud Hypervisor would answer over their
//! REST APIs on a unix socket (`PATCH /vm` and `PUT /snapshot/create|load`; `vm.pause`,
//! `vm.snapshot`, `vm.restore`) behind the same trait, with their own command lines beside
//! [`crate::qemu::QemuGuest`]; they are not built, since no package source this was written
//! against ships either (`info` says when one is installed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use stockade_core::{Error, Result};

use crate::qemu::Qmp;

/// Control of one running VM.
#[async_trait]
pub trait VmmControl: Send + Sync {
    /// Halts the vCPUs; memory, devices and the guest's processes stay as they are.
    async fn pause(&self) -> Result<()>;
    /// Runs halted vCPUs again.
    async fn resume(&self) -> Result<()>;
    /// Halts the VM and writes its whole state (memory and devices) to `state`; the VM stays
    /// halted, and its disks are flushed when this returns.
    async fn save(&self, state: &Path) -> Result<()>;
    /// For a VM started from a saved state: waits for the state to be loaded, then runs it.
    async fn finish_restore(&self) -> Result<()>;
}

/// QEMU's QMP socket.
#[derive(Debug, Clone)]
pub struct QemuControl {
    socket: PathBuf,
}

impl QemuControl {
    pub fn at(socket: &Path) -> QemuControl {
        QemuControl {
            socket: socket.to_path_buf(),
        }
    }

    async fn run(&self, command: &str) -> Result<serde_json::Value> {
        Qmp::connect(&self.socket)
            .await?
            .execute(command, json!({}))
            .await
    }
}

#[async_trait]
impl VmmControl for QemuControl {
    async fn pause(&self) -> Result<()> {
        self.run("stop").await.map(drop)
    }

    async fn resume(&self) -> Result<()> {
        self.run("cont").await.map(drop)
    }

    /// QMP `stop`, then `migrate` to `exec:cat > STATE`, polled with `query-migrate`.
    async fn save(&self, state: &Path) -> Result<()> {
        let mut qmp = Qmp::connect(&self.socket).await?;
        qmp.execute("stop", json!({})).await?;
        let uri = format!("exec:cat > {}", crate::template::shell_quote(state));
        qmp.execute("migrate", json!({ "uri": uri })).await?;
        loop {
            let info = qmp.execute("query-migrate", json!({})).await?;
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

    /// Polls `query-status` (QMP answers once QEMU is up) until the incoming state is loaded;
    /// the template was saved halted and QEMU restores that run state, so then `cont`.
    async fn finish_restore(&self) -> Result<()> {
        let mut qmp = loop {
            match Qmp::connect(&self.socket).await {
                Ok(qmp) => break qmp,
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        };
        loop {
            let status = qmp.execute("query-status", json!({})).await?;
            match status["status"].as_str().unwrap_or("") {
                "running" => return Ok(()),
                "inmigrate" | "prelaunch" => tokio::time::sleep(Duration::from_millis(2)).await,
                "paused" => {
                    qmp.execute("cont", json!({})).await?;
                }
                other => {
                    return Err(Error::backend(
                        "restore the VM",
                        format!("QEMU reports {other:?} while loading the template"),
                    ))
                }
            }
        }
    }
}
