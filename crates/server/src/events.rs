//! Status changes of sandboxes, execs and tasks, for `GET /api/events` (SSE).

use tokio::sync::broadcast;

pub use stockade_api::{ChangeKind, StatusChange};

fn change(kind: ChangeKind, id: &str, sandbox_id: Option<&str>, status: &str) -> StatusChange {
    StatusChange {
        kind,
        id: id.to_owned(),
        sandbox_id: sandbox_id.map(str::to_owned),
        status: status.to_owned(),
        at: stockade_store::now_secs(),
    }
}

/// A sandbox's new status.
pub fn sandbox(id: &str, status: &str) -> StatusChange {
    change(ChangeKind::Sandbox, id, None, status)
}

/// A task's new status.
pub fn task(id: &str, status: &str) -> StatusChange {
    change(ChangeKind::Task, id, None, status)
}

/// An exec's new status.
pub fn exec(id: &str, sandbox_id: &str, status: &str) -> StatusChange {
    change(ChangeKind::Exec, id, Some(sandbox_id), status)
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
