//! The HTTP endpoint: `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! - `/metrics`: the registry, as OpenMetrics when the scraper's `Accept` asks for
//!   `application/openmetrics-text` (Prometheus does), else Prometheus text 0.0.4.
//! - `/healthz`: 200 `ok` while the reconcile loop reports in, 503 with the reason once it
//!   stalls (see [`Health`]). It never touches the database, so a database outage does not
//!   make Kubernetes restart every replica.
//! - `/readyz`: 200 `ok` when [`Readiness::check_ready`] succeeds within [`READY_TIMEOUT`]
//!   (database reachable and migrated), else 503 with the reason.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use super::{Health, Metrics};
use crate::store::Readiness;

/// How long `/readyz` waits for the database before answering 503. Shorter than the
/// Kubernetes probe timeout in `deploy/`, so the probe sees our reason rather than a timeout.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read. Cloned per request (three `Arc`s).
#[derive(Clone)]
pub struct HttpState {
    /// The registry `/metrics` encodes.
    pub metrics: Arc<Metrics>,
    /// The loop's liveness, for `/healthz`.
    pub health: Arc<Health>,
    /// The database, for `/readyz`.
    pub store: Arc<dyn Readiness>,
}

/// The router with the three endpoints (also usable inside another server).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves the endpoints on `listener` until `shutdown` is cancelled, then finishes the
/// requests in progress and returns. An error is an I/O error of the listener.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn metrics(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let (content_type, body) = if wants_openmetrics(&headers) {
        (
            super::metrics::OPENMETRICS_CONTENT_TYPE,
            state.metrics.encode_openmetrics(),
        )
    } else {
        (
            super::metrics::PROMETHEUS_CONTENT_TYPE,
            state.metrics.encode(),
        )
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// Whether `Accept` lists OpenMetrics text. Prometheus sends it first with the highest
/// weight when it supports it; a client that only lists `text/plain` or nothing gets 0.0.4.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|media| {
            let mut parts = media.split(';').map(str::trim);
            let is_openmetrics = parts.next() == Some("application/openmetrics-text");
            // A weight of 0 (`q=0`, `q=0.0`) means "not acceptable".
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_openmetrics && !refused
        })
}

async fn healthz(State(state): State<HttpState>) -> Response {
    match state.health.liveness() {
        Ok(()) => match state.health.database_error() {
            None => plain(StatusCode::OK, "ok".to_owned()),
            Some(db) => plain(
                StatusCode::OK,
                format!("ok (loop alive, waiting for the database: {db})"),
            ),
        },
        Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, reason),
    }
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.store.check_ready()).await {
        Ok(Ok(())) => plain(StatusCode::OK, "ok".to_owned()),
        Ok(Err(e)) => plain(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}")),
        Err(_) => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the database did not answer within {}",
                humantime::format_duration(READY_TIMEOUT)
            ),
        ),
    }
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
