//! Refreshes the gauges that describe the table as a whole: folders by status, rows parked
//! because they cannot be read, the age of the oldest unconverged row by kind (the SLO
//! signal), and each volume's orphans and unfinished removals as its last complete orphan
//! scan found them.
//!
//! Cost: no statement here reads the live set or the `delete-complete` history, so a refresh
//! costs the same with ten or ten million `ready` or `delete-complete` rows. The folders
//! gauge counts the unfinished deletions; the ages read the oldest few rows off an index; the
//! rest reads the controller's small tables. The price is that a big live status or history
//! is an estimate on PostgreSQL ([`crate::store::Admin::status_counts`]); unfinished
//! deletions are always exact.

use std::sync::Arc;

use super::maintenance::MaintenanceJob;
use crate::config::Retention;
use crate::observe::Metrics;
use crate::store::{self, Store};

/// Refreshes table-wide gauges.
pub struct StatusGauges {
    /// The database.
    pub store: Arc<dyn Store>,
    /// Where the gauges live.
    pub metrics: Arc<Metrics>,
    /// The trash retention, to tell an overdue `delete-pending` row from a waiting one.
    pub trash_retention: Retention,
}

impl MaintenanceJob for StatusGauges {
    const NAME: &'static str = "status-gauges";

    async fn run_once(&self) -> Result<u64, store::Error> {
        let counts = self.store.status_counts().await?;
        self.metrics.set_folders_by_status(&counts);
        self.metrics
            .set_unreadable_rows(self.store.unreadable_rows().await?);
        let ages = self
            .store
            .oldest_unconverged(self.trash_retention.horizon())
            .await?;
        self.metrics.set_oldest_unconverged_all(&ages);
        // Whoever scanned (the CLI, any replica), the totals are in the database.
        for scan in self.store.scan_summaries().await? {
            self.metrics.set_orphan_scan(&scan);
        }
        Ok(0)
    }
}
