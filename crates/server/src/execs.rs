//! Execs the daemon runs: each is a kept exec in its sandbox, and a pump task here stores every
//! event in the database (numbered, in order) before publishing it to live followers. A follower
//! reads the stored events from its sequence number, then the live ones, skipping what it has:
//! no gap, no duplicate. After a restart the pump re-attaches from the first event not stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use stockade_core::{Driver, Error, ExecControl, ExecEvent, ExecSession, SandboxId};
use tokio::sync::{broadcast, mpsc};

use crate::db::Db;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::redact::Redactor;

/// Events stored per transaction at most.
const BATCH: usize = 256;

/// A running exec's live side.
struct Live {
    control: Arc<dyn ExecControl>,
    events: broadcast::Sender<ExecEvent>,
}

/// Every exec the daemon follows.
pub struct Execs {
    db: Arc<Db>,
    /// To look secrets up again when an exec that named some is re-attached after a restart.
    secrets: stockade_secrets::SecretStore,
    driver: Arc<dyn Driver>,
    events: Arc<Events>,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<String, Live>>,
}

impl std::fmt::Debug for Execs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Execs")
    }
}

impl Execs {
    pub fn new(
        db: Arc<Db>,
        driver: Arc<dyn Driver>,
        events: Arc<Events>,
        secrets: stockade_secrets::SecretStore,
        metrics: Arc<Metrics>,
    ) -> Arc<Execs> {
        Arc::new(Execs {
            db,
            secrets,
            driver,
            events,
            metrics,
            live: Mutex::new(HashMap::new()),
        })
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.live.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Starts following a started (or re-attached) exec.
    /// `redactor` takes the exec's secret values out of its output before anything is stored;
    /// `driver` (the sandbox's) labels the exec's metrics.
    pub fn follow_session(
        self: &Arc<Self>,
        exec_id: &str,
        sandbox_id: SandboxId,
        driver: String,
        session: ExecSession,
        redactor: Option<Redactor>,
    ) {
        let (tx, _) = broadcast::channel(1024);
        self.live().insert(
            exec_id.to_owned(),
            Live {
                control: Arc::clone(&session.control),
                events: tx.clone(),
            },
        );
        let this = Arc::clone(self);
        let exec_id = exec_id.to_owned();
        // One span per exec: its storing, re-attaching and loss are logged under it.
        let span = tracing::info_span!("exec", exec = %exec_id, sandbox = %sandbox_id);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                this.pump(exec_id, sandbox_id, driver, session, tx, redactor)
                    .await
            },
            span,
        ));
    }

    async fn pump(
        self: Arc<Self>,
        exec_id: String,
        sandbox_id: SandboxId,
        driver: String,
        mut session: ExecSession,
        tx: broadcast::Sender<ExecEvent>,
        mut redactor: Option<Redactor>,
    ) {
        let mut next_seq = self
            .db
            .exec(&exec_id)
            .await
            .ok()
            .flatten()
            .map(|e| e.next_seq)
            .unwrap_or(0);
        let mut reattempts = 0u32;
        // Set once the session's stream ended or failed: it is never polled again, only replaced.
        let mut ended: Option<Error> = None;
        loop {
            let mut batch = Vec::new();
            let mut broken = ended.take();
            if broken.is_none() {
                match session.events.next().await {
                    Some(Ok(event)) => batch.push(event),
                    Some(Err(e)) => broken = Some(e),
                    None => broken = Some(Error::backend("exec", "the event stream ended early")),
                }
            }
            // Take whatever else is ready, so a burst is one transaction.
            while broken.is_none() && batch.len() < BATCH {
                match session.events.next().now_or_never() {
                    Some(Some(Ok(event))) => batch.push(event),
                    Some(Some(Err(e))) => broken = Some(e),
                    Some(None) => broken = Some(Error::backend("exec", "the event stream ended early")),
                    None => break,
                }
            }
            // Events this pump already stored (a re-attach replays from next_seq) are skipped.
            batch.retain(|e| e.seq() >= next_seq);
            if let Some(r) = redactor.as_mut() {
                batch.iter_mut().for_each(|e| r.apply(e));
            }
            if !batch.is_empty() {
                reattempts = 0;
                let exited = batch.iter().find_map(|e| match e {
                    ExecEvent::Exited { exit, .. } => Some(*exit),
                    _ => None,
                });
                if let Err(e) = self
                    .db
                    .append_events(&exec_id, &batch, stockade_store::now_secs())
                    .await
                {
                    tracing::warn!("exec {exec_id}: storing output failed: {e}");
                }
                next_seq = batch.last().map(|e| e.seq() + 1).unwrap_or(next_seq);
                if let Some(exit) = &exited {
                    // Counted and no longer live before a follower hears the end, so a scrape
                    // after it sees both. Its events are stored: a late subscriber reads them.
                    self.metrics.exec_ended(&driver, Some(exit));
                    self.live().remove(&exec_id);
                }
                for event in batch {
                    let _ = tx.send(event);
                }
                if exited.is_some() {
                    self.events
                        .publish(crate::events::exec(&exec_id, sandbox_id.as_str(), "exited"));
                    return;
                }
            }
            if let Some(err) = broken {
                // The connection to the agent broke: follow again from the first missing event.
                reattempts += 1;
                let attached = if reattempts <= 5 {
                    tokio::time::sleep(Duration::from_millis(100 << reattempts.min(4))).await;
                    self.driver.attach(&sandbox_id, &exec_id, next_seq).await
                } else {
                    Err(err)
                };
                match attached {
                    Ok(again) => {
                        if let Some(live) = self.live().get_mut(&exec_id) {
                            live.control = Arc::clone(&again.control);
                        }
                        session = again;
                    }
                    Err(e) if reattempts > 5 || gone(&e) => {
                        tracing::warn!("exec {exec_id} lost: {e}");
                        let _ = self.db.mark_lost(&exec_id, stockade_store::now_secs()).await;
                        self.metrics.exec_ended(&driver, None);
                        self.live().remove(&exec_id);
                        self.events
                            .publish(crate::events::exec(&exec_id, sandbox_id.as_str(), "lost"));
                        return;
                    }
                    // Not gone yet: try again after the next pause, without polling the old stream.
                    Err(e) => ended = Some(e),
                }
            }
        }
    }

    /// Re-attaches every exec the database says is running in a sandbox this daemon's drivers
    /// hold; marks the ones whose sandbox or agent no longer has them as lost.
    pub async fn recover(self: &Arc<Self>) -> usize {
        let Ok(running) = self.db.execs(None).await else {
            return 0;
        };
        let mut recovered = 0;
        for exec in running {
            let attached = match SandboxId::parse(&exec.sandbox_id) {
                Ok(sandbox_id) => self
                    .driver
                    .attach(&sandbox_id, &exec.id, exec.next_seq)
                    .await
                    .map(|session| (sandbox_id, session)),
                Err(e) => Err(e),
            };
            match attached {
                Ok((sandbox_id, session)) => {
                    let names: Vec<String> = exec.request["secrets"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect())
                        .unwrap_or_default();
                    let redactor = match self.secrets.resolve(&names) {
                        Ok(values) => Redactor::new(values),
                        Err(e) => {
                            tracing::warn!(
                                "exec {}: its secrets cannot be read to redact output: {e}",
                                exec.id
                            );
                            None
                        }
                    };
                    // The driver only labels metrics: one that cannot say is `unknown`.
                    let driver = match self.driver.get(sandbox_id.as_str()).await {
                        Ok(info) => info.driver,
                        Err(_) => "unknown".to_owned(),
                    };
                    self.follow_session(&exec.id, sandbox_id, driver, session, redactor);
                    recovered += 1;
                }
                // A sandbox none of this daemon's drivers holds belongs to another daemon sharing
                // the database (or was removed with its rows): not ours to judge.
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!("exec {} lost at restart: {e}", exec.id);
                    let _ = self.db.mark_lost(&exec.id, stockade_store::now_secs()).await;
                }
            }
        }
        recovered
    }

    /// The live control of a running exec.
    pub fn control(&self, exec_id: &str) -> Option<Arc<dyn ExecControl>> {
        self.live().get(exec_id).map(|l| Arc::clone(&l.control))
    }

    pub fn running(&self) -> usize {
        self.live().len()
    }

    /// Every event of `exec_id` from `from_seq` on, stored first then live, ending after the
    /// exit (or when the exec is lost). The receiver ends early only if the caller drops it.
    pub fn subscribe(self: &Arc<Self>, exec_id: &str, from_seq: u64) -> mpsc::Receiver<ExecEvent> {
        let (out, rx) = mpsc::channel(64);
        let this = Arc::clone(self);
        let exec_id = exec_id.to_owned();
        tokio::spawn(async move {
            // Subscribe before reading the store, so nothing falls between the two.
            let mut live = this.live().get(&exec_id).map(|l| l.events.subscribe());
            let mut next = from_seq;
            loop {
                // Stored events first, in pages.
                loop {
                    let page = this.db.events(&exec_id, next, BATCH).await.unwrap_or_default();
                    if page.is_empty() {
                        break;
                    }
                    for event in page {
                        next = event.seq() + 1;
                        let last = matches!(event, ExecEvent::Exited { .. });
                        if out.send(event).await.is_err() || last {
                            return;
                        }
                    }
                }
                let Some(rx) = live.as_mut() else {
                    // Not live: what is stored is all there is (exited or lost).
                    return;
                };
                match rx.recv().await {
                    Ok(event) if event.seq() < next => {}
                    Ok(event) if event.seq() == next => {
                        next += 1;
                        let last = matches!(event, ExecEvent::Exited { .. });
                        if out.send(event).await.is_err() || last {
                            return;
                        }
                    }
                    // A gap (we lagged behind): the store has it.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        // The pump ended: the rest is stored (or the exec was lost).
                        live = None;
                    }
                }
            }
        });
        rx
    }
}

/// Whether an attach error means the exec cannot come back.
fn gone(err: &Error) -> bool {
    matches!(
        err,
        Error::NotFound(_) | Error::ExecNotFound(_) | Error::WrongState { .. }
    )
}
