//! Group commit for finished removals.
//!
//! Small folders are removed in microseconds; what bounds how fast a backlog of them
//! converges is the database: a completion alone is a transaction of several round trips
//! and a commit. Workers therefore hand their completions to [`WRITERS`] tasks per replica,
//! which take turns: one writes everything queued while the previous batch was in flight
//! as one batch ([`Work::complete_removals`](crate::store::Work::complete_removals): a few
//! statements for the whole batch, one commit), and a batch stalled for [`STALLED`] (a row
//! lock) lets the next be written beside it. Nothing waits to fill a batch: a lone
//! completion is written at once, and batches grow only when completions arrive faster than
//! they are written.
//!
//! Each folder still gets its own lease check, status change, history entry, audit entry
//! and event, and its own answer. Should a batch fail as a whole, every folder in it is
//! written again alone, so no folder's outcome depends on which others shared its batch.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use uuid::Uuid;

use crate::store::{self, Completion, Store};

/// The most completions one batch writes (the statements' arrays stay small and a batch's
/// transaction short).
const MAX_BATCH: usize = 64;

/// Writing tasks. One batch is written at a time, so that the completions arriving
/// meanwhile gather into the next batch (fewer, larger transactions: on a 2-core machine
/// sharing its cores with PostgreSQL, two batches written at once converged 14–17 % slower,
/// `benches/README.md`); the second writer takes over when a batch is stalled (see
/// [`STALLED`]).
const WRITERS: usize = 2;

/// How long a batch may take before the next one is written beside it: a batch waiting on
/// a row lock (a long transaction of the platform's on one of its rows) must not hold up
/// every other folder's result.
const STALLED: Duration = Duration::from_millis(200);

type Answer = Result<bool, store::Error>;

/// One worker's finished removal waiting for its write.
struct Pending {
    id: Uuid,
    done: Completion,
    reply: oneshot::Sender<Answer>,
}

/// The replica's completion writers; the writing tasks start on first use.
pub struct Completions {
    store: Arc<dyn Store>,
    owner: String,
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl Completions {
    /// A writer of `owner`'s completions (the replica id that holds the leases).
    pub fn new(store: Arc<dyn Store>, owner: String) -> Completions {
        Completions {
            store,
            owner,
            queue: OnceLock::new(),
        }
    }

    /// `delete-ongoing → delete-complete` for `id`, exactly as
    /// [`Work::complete_removal`](crate::store::Work::complete_removal) promises (`false` when
    /// the lease was lost or the row moved on), written together with whatever other
    /// completions are waiting. Must be called inside the Tokio runtime.
    pub async fn complete(&self, id: Uuid, done: Completion) -> Answer {
        let queue = self.queue.get_or_init(|| {
            let (queue, pending) = mpsc::unbounded_channel();
            let pending = Arc::new(Mutex::new(pending));
            let turn = Arc::new(Semaphore::new(1));
            for _ in 0..WRITERS {
                let (store, owner) = (self.store.clone(), self.owner.clone());
                tokio::spawn(write_batches(store, owner, pending.clone(), turn.clone()));
            }
            queue
        });
        let (reply, answer) = oneshot::channel();
        if queue.send(Pending { id, done, reply }).is_ok() {
            if let Ok(answer) = answer.await {
                return answer;
            }
        }
        // The writing tasks are gone (they can only have panicked): write this one directly.
        self.store.complete_removal(id, &self.owner, &done).await
    }
}

/// Writes batches until every sender is gone, one at a time with the other writers: the
/// turn passes on when a batch is written, or once it has taken [`STALLED`].
async fn write_batches(
    store: Arc<dyn Store>,
    owner: String,
    pending: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
    turn: Arc<Semaphore>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // The semaphore is never closed.
        let Ok(permit) = turn.clone().acquire_owned().await else {
            return;
        };
        if pending.lock().await.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let folders = batch.len();
        let write = write_batch(&*store, &owner, &mut batch);
        tokio::pin!(write);
        tokio::select! {
            () = &mut write => drop(permit),
            () = tokio::time::sleep(STALLED) => {
                drop(permit);
                tracing::debug!(folders, "a batch of completions is slow; writing the next beside it");
                write.await;
            }
        }
    }
}

/// Writes one batch and answers every folder in it; leaves `batch` empty.
async fn write_batch(store: &dyn Store, owner: &str, batch: &mut Vec<Pending>) {
    let items: Vec<(Uuid, Completion)> = batch.iter().map(|p| (p.id, p.done)).collect();
    tracing::trace!(folders = items.len(), "writing completions");
    match store.complete_removals(owner, &items).await {
        // One flag per folder, in order (the store's promise).
        Ok(flags) => {
            for (p, done) in batch.drain(..).zip(flags) {
                let _ = p.reply.send(Ok(done));
            }
        }
        Err(error) if batch.len() == 1 => {
            if let Some(p) = batch.pop() {
                let _ = p.reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::debug!(%error, folders = batch.len(), "a batch of completions failed; writing each alone");
            for p in batch.drain(..) {
                let answer = store.complete_removal(p.id, owner, &p.done).await;
                let _ = p.reply.send(answer);
            }
        }
    }
}
