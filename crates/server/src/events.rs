//! Status changes of sandboxes, execs and tasks, for `GET /api/events` (SSE).

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// One change.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusChange {
    /// `sandbox`, `exec` or `task`.
    pub kind: &'static str,
    pub id: String,
    /// The sandbox an exec belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    /// The new status (`running`, `stopped`, `destroyed`, `lost`, `exited`, ...).
    pub status: String,
    /// Unix seconds.
    pub at: u64,
}

impl StatusChange {
    pub fn sandbox(id: &str, status: &str) -> Self {
        StatusChange {
            kind: "sandbox",
            id: id.to_owned(),
            sandbox_id: None,
            status: status.to_owned(),
            at: stockade_store::now_secs(),
        }
    }

    pub fn task(id: &str, status: &str) -> Self {
        StatusChange {
            kind: "task",
            id: id.to_owned(),
            sandbox_id: None,
            status: status.to_owned(),
            at: stockade_store::now_secs(),
        }
    }

    pub fn exec(id: &str, sandbox_id: &str, status: &str) -> Self {
        StatusChange {
            kind: "exec",
            id: id.to_owned(),
            sandbox_id: Some(sandbox_id.to_owned()),
            status: status.to_owned(),
            at: stockade_store::now_secs(),
        }
    }
}

/// The fan-out of changes; slow listeners miss old ones rather than slowing anyone.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<StatusChange>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Events {
    pub fn publish(&self, change: StatusChange) {
        let _ = self.tx.send(change);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<StatusChange> {
        self.tx.subscribe()
    }
}
