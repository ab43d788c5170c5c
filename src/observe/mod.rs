//! TEMPORARY interface stub (replaced by the observe branch).
#![allow(missing_docs, unused_variables)]
use std::sync::Arc;
use std::time::Duration;
pub struct Metrics;
impl Metrics {
    pub fn new() -> Metrics {
        Metrics
    }
    pub fn encode(&self) -> String {
        todo!()
    }
    pub fn reconcile(&self, action: &str, result: &str, duration: Duration) {}
    pub fn removal_started(&self, volume: &str) {}
    pub fn removal_finished(
        &self,
        volume: &str,
        files: u64,
        dirs: u64,
        bytes: u64,
        duration: Duration,
        result: &str,
    ) {
    }
    pub fn add_removed(&self, volume: &str, files: u64, dirs: u64, bytes: u64) {}
    pub fn set_worker_slots(&self, total: i64, busy: i64) {}
    pub fn set_folders_by_status(&self, counts: &[(crate::lifecycle::Status, i64)]) {}
    pub fn set_oldest_unconverged(&self, kind: &str, age: Duration) {}
    pub fn lease_reclaimed(&self) {}
    pub fn retry(&self, kind: &str) {}
    pub fn terminal_error(&self, kind: &str) {}
    pub fn database_error(&self, operation: &str) {}
    pub fn listener_reconnect(&self) {}
    pub fn timer_run(&self, timer: &str, rows: u64) {}
}
pub struct Health;
impl Health {
    pub fn new(stall_after: Duration) -> Health {
        Health
    }
    pub fn pass_completed(&self) {}
    pub fn set_database_ok(&self, ok: bool, reason: Option<String>) {}
    pub fn liveness(&self) -> Result<(), String> {
        todo!()
    }
}
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub store: Arc<dyn crate::store::Store>,
}
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    todo!()
}
