//! Group commit for finished removals.
//!
//! Small folders are removed in microseconds; what bounds how fast a backlog of them
//! converges is the database: a completion alone is a transaction of several round trips
//! and a commit. Workers therefore hand their completions to [`WRITERS`] tasks per replica;
//! a free one writes everything queued while the previous writes were in flight as one batch
//! ([`Work::complete_removals`](crate::store::Work::complete_removals): a few statements
//! for the whole batch, one commit). Nothing waits to fill a batch: a lone completion is
//! written at once, and batches grow only when completions arrive faster than they are
//! written.
//!
//! Each folder still gets its own lease check, status change, history entry, audit entry
//! and event, and its own answer. Should a batch fail as a whole, every folder in it is
//! written again alone, so no folder's outcome depends on which others shared its batch.

use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::store::{self, Completion, Store};

/// The most completions one batch writes (the statements' arrays stay small and a batch's
/// transaction short).
const MAX_BATCH: usize = 64;

/// Batches written at the same time. Two let one batch gather while the other commits, so
/// the database's commit latency is paid once for both (PostgreSQL flushes concurrent
/// commits together).
const WRITERS: usize = 2;

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
            for _ in 0..WRITERS {
                let (store, owner) = (self.store.clone(), self.owner.clone());
                tokio::spawn(write_batches(store, owner, pending.clone()));
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

/// Writes batches until every sender is gone.
async fn write_batches(
    store: Arc<dyn Store>,
    owner: String,
    pending: Arc<Mutex<mpsc::UnboundedReceiver<Pending>>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // The queue is held only while taking a batch, so the other writer takes the next one
    // while this one writes.
    while pending.lock().await.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let items: Vec<(Uuid, Completion)> = batch.iter().map(|p| (p.id, p.done)).collect();
        tracing::trace!(folders = items.len(), "writing completions");
        match store.complete_removals(&owner, &items).await {
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
                    let answer = store.complete_removal(p.id, &owner, &p.done).await;
                    let _ = p.reply.send(answer);
                }
            }
        }
    }
}
