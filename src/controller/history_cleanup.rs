//! History cleanup: `delete-complete` rows older than the history retention are removed;
//! their audit entries stay (the audit log has no foreign key to `vfolders`). Tombstones of
//! deleted rows are kept as long again (from their deletion), except those whose removal the
//! controller has still to finish.

use std::sync::Arc;

use super::maintenance::{BATCH, MaintenanceJob, drain_batches};
use crate::config::Retention;
use crate::store::{self, Store};

/// The actor recorded in the audit log for cleanups.
pub const ACTOR: &str = "history-cleanup";

/// Removes old `delete-complete` rows.
pub struct HistoryCleanup {
    /// The database.
    pub store: Arc<dyn Store>,
    /// How long a `delete-complete` row is kept.
    pub retention: Retention,
}

impl MaintenanceJob for HistoryCleanup {
    const NAME: &'static str = "history-cleanup";

    async fn run_once(&self) -> Result<u64, store::Error> {
        let horizon = self.retention.horizon();
        let rows = drain_batches(|| self.store.clean_history(horizon, ACTOR, BATCH)).await?;
        let tombstones = drain_batches(|| self.store.clean_tombstones(horizon, BATCH)).await?;
        Ok(rows + tombstones)
    }
}
