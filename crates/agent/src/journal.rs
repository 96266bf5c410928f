//! Kept execs: an exec started with `keep_as` writes its events here instead of to the
//! connection, so it outlives the host that started it (a daemon killed with `-9`, say) and any
//! connection can follow it again from a sequence number with no gap and no duplicate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use stockade_core::{Error, Result};
use stockade_proto::{write_frame, Frame, Reply, Request};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Output bytes one kept exec holds. Beyond it, events every follower has written are dropped;
/// while a follower is behind by more, the exec's output waits for it (backpressure down to the
/// command, as a plain exec has); with no follower at all, the oldest events go (this bounds a
/// host's absence: the daemon normally follows every kept exec and stores the events itself).
const MAX_KEPT_BYTES: usize = 32 << 20;
/// Finished execs kept for a late attach; the oldest finished go first.
const MAX_FINISHED: usize = 256;

/// The events of one kept exec, and the way to steer it.
pub struct Journal {
    kept: Mutex<Kept>,
    /// How many events were ever pushed; followers wait on it.
    pushed: watch::Sender<u64>,
    /// Bumped when a follower writes a batch or leaves; a full journal waits on it.
    progress: watch::Sender<u64>,
    /// Stdin, resize and kill requests from whichever connection follows the exec.
    pub control: mpsc::UnboundedSender<Frame<Request>>,
}

struct Kept {
    /// Sequence number of `events[0]`.
    first_seq: u64,
    events: VecDeque<(Reply, Vec<u8>)>,
    bytes: usize,
    finished_at: Option<Instant>,
    /// Each live follower's next sequence number, by follower number.
    followers: HashMap<u64, u64>,
    next_follower: u64,
}

impl Kept {
    /// The first event some follower has not written yet (`None`: nobody follows).
    fn slowest(&self) -> Option<u64> {
        self.followers.values().copied().min()
    }

    /// Drops the oldest events past the byte bound that no follower still needs.
    fn trim(&mut self) {
        let keep_from = self.slowest().unwrap_or(u64::MAX);
        while self.bytes > MAX_KEPT_BYTES && self.events.len() > 1 && self.first_seq < keep_from {
            if let Some((_, dropped)) = self.events.pop_front() {
                self.bytes -= dropped.len();
                self.first_seq += 1;
            }
        }
    }
}

/// A follower's place in a journal, given up when dropped.
struct Following<'a> {
    journal: &'a Journal,
    id: u64,
}

impl Following<'_> {
    fn advance(&self, next: u64) {
        self.journal.lock().followers.insert(self.id, next);
        self.journal.progress.send_modify(|n| *n += 1);
    }
}

impl Drop for Following<'_> {
    fn drop(&mut self) {
        self.journal.lock().followers.remove(&self.id);
        self.journal.progress.send_modify(|n| *n += 1);
    }
}

impl Journal {
    fn lock(&self) -> MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one event; `Exited` or `Error` ends the exec. Returns once the journal is within
    /// its bound again, which waits while a follower is more than the bound behind.
    pub async fn push(&self, reply: Reply, payload: Vec<u8>) {
        let mut progress = self.progress.subscribe();
        let total = {
            let mut kept = self.lock();
            if matches!(reply, Reply::Exited { .. } | Reply::Error { .. }) {
                kept.finished_at = Some(Instant::now());
            }
            kept.bytes += payload.len();
            kept.events.push_back((reply, payload));
            kept.trim();
            kept.first_seq + kept.events.len() as u64
        };
        self.pushed.send_replace(total);
        loop {
            {
                let mut kept = self.lock();
                kept.trim();
                if kept.bytes <= MAX_KEPT_BYTES || kept.slowest().is_none() || kept.events.len() <= 1 {
                    return;
                }
            }
            if progress.changed().await.is_err() {
                return;
            }
        }
    }

    /// Writes the events from `from_seq` on to `out`, live ones as they come, until the exec
    /// ends or `out` fails.
    pub async fn follow<W: AsyncWrite + Unpin>(&self, from_seq: u64, out: &mut W) -> Result<()> {
        let mut pushed = self.pushed.subscribe();
        let mut next = from_seq;
        let place = {
            let mut kept = self.lock();
            check_kept(&kept, next)?;
            let id = kept.next_follower;
            kept.next_follower += 1;
            kept.followers.insert(id, next);
            Following { journal: self, id }
        };
        loop {
            let batch: Vec<(Reply, Vec<u8>)> = {
                let kept = self.lock();
                check_kept(&kept, next)?;
                let skip = (next - kept.first_seq) as usize;
                kept.events.iter().skip(skip).cloned().collect()
            };
            for (reply, payload) in &batch {
                write_frame(out, reply, payload).await?;
                if matches!(reply, Reply::Exited { .. } | Reply::Error { .. }) {
                    return out.flush().await.map_err(|e| Error::backend("agent write", e));
                }
            }
            next += batch.len() as u64;
            out.flush().await.map_err(|e| Error::backend("agent write", e))?;
            place.advance(next);
            if pushed.changed().await.is_err() {
                return Ok(());
            }
        }
    }

    /// Checks that events from `from_seq` on are still kept.
    pub fn check_kept(&self, from_seq: u64) -> Result<()> {
        check_kept(&self.lock(), from_seq)
    }

    fn finished_at(&self) -> Option<Instant> {
        self.lock().finished_at
    }
}

fn check_kept(kept: &Kept, from_seq: u64) -> Result<()> {
    if from_seq < kept.first_seq {
        return Err(Error::invalid(
            "from_seq",
            format!(
                "events before {} are no longer kept (more than {} MiB of output)",
                kept.first_seq,
                MAX_KEPT_BYTES >> 20
            ),
        ));
    }
    Ok(())
}

/// Every kept exec of this agent, by id.
#[derive(Default)]
pub struct Journals {
    by_id: Mutex<HashMap<String, Arc<Journal>>>,
}

impl Journals {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Journal>>> {
        self.by_id.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes the journal for a new kept exec; the receiver carries its control requests.
    pub fn open(&self, exec_id: &str) -> Result<(Arc<Journal>, mpsc::UnboundedReceiver<Frame<Request>>)> {
        if exec_id.is_empty() || exec_id.len() > 128 {
            return Err(Error::invalid("exec id", "must be 1 to 128 characters"));
        }
        let mut by_id = self.lock();
        if by_id.contains_key(exec_id) {
            return Err(Error::invalid(
                "exec id",
                format!("{exec_id:?} is already in use in this sandbox"),
            ));
        }
        let mut finished: Vec<(Instant, String)> = by_id
            .iter()
            .filter_map(|(id, j)| j.finished_at().map(|at| (at, id.clone())))
            .collect();
        if finished.len() >= MAX_FINISHED {
            finished.sort();
            for (_, id) in finished.iter().take(finished.len() + 1 - MAX_FINISHED) {
                by_id.remove(id);
            }
        }
        let (control, requests) = mpsc::unbounded_channel();
        let journal = Arc::new(Journal {
            kept: Mutex::new(Kept {
                first_seq: 0,
                events: VecDeque::new(),
                bytes: 0,
                finished_at: None,
                followers: HashMap::new(),
                next_follower: 0,
            }),
            pushed: watch::channel(0).0,
            progress: watch::channel(0).0,
            control,
        });
        by_id.insert(exec_id.to_owned(), Arc::clone(&journal));
        Ok((journal, requests))
    }

    /// The kept exec `exec_id`.
    pub fn get(&self, exec_id: &str) -> Result<Arc<Journal>> {
        self.lock()
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::ExecNotFound(exec_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_core::OutputStream;
    use stockade_proto::read_frame;

    fn output(seq: u64) -> Reply {
        Reply::Output {
            seq,
            stream: OutputStream::Stdout,
        }
    }

    #[tokio::test]
    async fn a_follower_gets_kept_then_live_events_from_its_seq() {
        let journals = Journals::default();
        let (journal, _rx) = journals.open("e1").unwrap();
        journal.push(Reply::Started { seq: 0, pid: 7 }, vec![]).await;
        journal.push(output(1), b"a".to_vec()).await;
        journal.push(output(2), b"b".to_vec()).await;
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
        let follower = {
            let journal = journals.get("e1").unwrap();
            tokio::spawn(async move { journal.follow(2, &mut ours).await })
        };
        journal.push(output(3), b"c".to_vec()).await;
        journal
            .push(
                Reply::Exited {
                    seq: 4,
                    exit: Default::default(),
                },
                vec![],
            )
            .await;
        follower.await.unwrap().unwrap();
        let mut seen = Vec::new();
        while let Ok(frame) = read_frame::<_, Reply>(&mut theirs).await {
            seen.push((frame.header, frame.payload));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[0], (output(2), b"b".to_vec()));
        assert_eq!(seen[1], (output(3), b"c".to_vec()));
        assert!(matches!(seen[2].0, Reply::Exited { seq: 4, .. }));
    }

    #[tokio::test]
    async fn a_slow_follower_holds_the_exec_back_instead_of_losing_events() {
        let journals = Journals::default();
        let (journal, _rx) = journals.open("big").unwrap();
        let chunk = vec![7u8; 1 << 20];
        let chunks = (MAX_KEPT_BYTES >> 20) as u64 + 8;
        // A follower from the start that reads through a small pipe: far slower than the pushes.
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 12);
        let follower = {
            let journal = Arc::clone(&journal);
            tokio::spawn(async move { journal.follow(0, &mut ours).await })
        };
        tokio::task::yield_now().await;
        let producer = {
            let journal = Arc::clone(&journal);
            tokio::spawn(async move {
                for seq in 0..chunks {
                    journal.push(output(seq), chunk.clone()).await;
                }
                let exit = Reply::Exited {
                    seq: chunks,
                    exit: Default::default(),
                };
                journal.push(exit, vec![]).await;
            })
        };
        let mut seqs = Vec::new();
        while let Ok(frame) = read_frame::<_, Reply>(&mut theirs).await {
            seqs.push(match frame.header {
                Reply::Output { seq, .. } | Reply::Exited { seq, .. } => seq,
                other => panic!("unexpected {other:?}"),
            });
            assert!(
                journal.lock().bytes <= MAX_KEPT_BYTES + (1 << 20),
                "the journal outgrew its bound"
            );
        }
        producer.await.unwrap();
        follower.await.unwrap().unwrap();
        assert_eq!(seqs, (0..=chunks).collect::<Vec<_>>(), "every event, in order");
    }

    #[test]
    fn ids_are_unique_and_unknown_ones_are_named() {
        let journals = Journals::default();
        let _kept = journals.open("x").unwrap();
        assert!(journals.open("x").is_err());
        assert_eq!(
            journals.get("nope").err().unwrap().to_string(),
            "no such exec: nope"
        );
    }
}
