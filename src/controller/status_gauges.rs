//! Refreshes the gauges that describe the table as a whole: folders by status (one grouped
//! query) and the age of the oldest unconverged row by kind (the SLO signal).

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
        let ages = self
            .store
            .oldest_unconverged(self.trash_retention.horizon())
            .await?;
        self.metrics.set_oldest_unconverged_all(&ages);
        Ok(0)
    }
}
