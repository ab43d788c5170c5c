//! The trash timer: folders in the trash longer than the retention (or past their own
//! `purge-after` time) are purged, `delete-pending → delete-ongoing`.
//!
//! One idempotent, LIMITed statement per batch (see `Store::purge_expired_trash`); the
//! removal itself is then ordinary `delete-ongoing` work for the loop.

use std::sync::Arc;

use super::maintenance::{BATCH, MaintenanceJob, drain_batches};
use crate::config::Retention;
use crate::store::{self, Store};

/// The actor recorded in history and audit for timer purges.
pub const ACTOR: &str = "trash-timer";

/// Purges expired trash.
pub struct TrashTimer {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Default time a folder stays in the trash.
    pub retention: Retention,
}

impl MaintenanceJob for TrashTimer {
    const NAME: &'static str = "trash-timer";

    async fn run_once(&self) -> Result<u64, store::Error> {
        drain_batches(|| {
            self.store
                .purge_expired_trash(self.retention.horizon(), ACTOR, BATCH)
        })
        .await
    }
}
