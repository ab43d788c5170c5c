//! Observability: Prometheus metrics, the `/metrics` `/healthz` `/readyz` endpoint, and logging.
//!
//! The controller loop owns an `Arc<Metrics>` and an `Arc<Health>` and reports to them; the
//! HTTP server reads them. Nothing here decides anything about folders: this module only
//! counts, exposes and logs, so it can be tested without a controller.

mod health;
mod http;
mod logging;
mod metrics;

pub use health::Health;
pub use http::{
    CONNECTION_MAX_AGE, HEADER_READ_TIMEOUT, HttpState, MAX_CONNECTIONS, READY_TIMEOUT, router,
    serve,
};
pub use logging::{FILTER_ENV, build_filter, init_logging, subscriber};
pub use metrics::{
    Metrics, OPENMETRICS_CONTENT_TYPE, PREFIX, PROMETHEUS_CONTENT_TYPE, openmetrics_to_prometheus,
};

/// Errors of this module (logging set-up; metrics and health cannot fail).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A log filter does not parse.
    #[error("invalid log filter {filter:?} in {source_name}: {message}")]
    LogFilter {
        /// Where the filter came from: `RUST_LOG` or `log.filter`.
        source_name: &'static str,
        /// The filter text.
        filter: String,
        /// What is wrong with it.
        message: String,
    },
    /// The global subscriber could not be installed (one is installed already).
    #[error("cannot install the log subscriber: {0}")]
    LoggingInit(String),
}
