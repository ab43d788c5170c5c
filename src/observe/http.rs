//! The HTTP endpoint: `/metrics`, `/healthz` and `/readyz` on one port.
//!
//! - `/metrics`: the registry, as OpenMetrics when the scraper's `Accept` asks for
//!   `application/openmetrics-text` (Prometheus does), else Prometheus text 0.0.4.
//! - `/healthz`: 200 `ok` while the reconcile loop reports in, 503 with the reason once it
//!   stalls (see [`Health`]). It never touches the database, so a database outage does not
//!   make Kubernetes restart every replica.
//! - `/readyz`: 200 `ok` when [`Readiness::check_ready`] succeeds within [`READY_TIMEOUT`]
//!   (database reachable and migrated), else 503 with the reason.
//!
//! The endpoint protects the process it reports on: it serves at most [`MAX_CONNECTIONS`]
//! connections at once (more wait in the kernel's backlog, costing no descriptor of ours),
//! closes a connection whose request headers do not arrive within [`HEADER_READ_TIMEOUT`]
//! (a half-sent request, or an idle keep-alive connection) and any connection older than
//! [`CONNECTION_MAX_AGE`] (a client that never reads its response). Without that, enough
//! half-open requests used up the descriptors removals need. A failed `accept` (out of
//! descriptors, for one) pauses accepting briefly instead of ending the endpoint.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

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

/// How long a client may take to send a request's headers, counted from the connection's
/// start or the end of its previous response.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may stay open; a scraper simply connects again.
pub const CONNECTION_MAX_AGE: Duration = Duration::from_secs(60);

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection being closed (too old, or on shutdown) may take to finish the
/// response in flight.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The pause after a failed `accept` that is not the client's doing (e.g. `EMFILE`).
const ACCEPT_PAUSE: Duration = Duration::from_millis(200);

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

/// Serves the endpoints on `listener` until `shutdown` is cancelled, then lets the requests
/// in progress finish (for [`CLOSE_GRACE`]) and returns. Failed `accept`s are logged and
/// retried, never fatal: the endpoint outlives a descriptor shortage.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let connections = TaskTracker::new();
    let mut accept_failing = false;
    loop {
        // A slot first: at the cap, new connections stay in the backlog, unaccepted.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    accept_failing = false;
                    stream
                }
                Err(error) if is_connection_error(&error) => continue,
                Err(error) => {
                    // Once per streak: a descriptor shortage fails every accept.
                    if !accept_failing {
                        tracing::warn!(%error, "cannot accept HTTP connections; retrying");
                        accept_failing = true;
                    }
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let service = TowerToHyperService::new(app.clone());
        let closing = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = tokio::time::sleep(CONNECTION_MAX_AGE) => {}
                _ = closing.cancelled() => {}
            }
            connection.as_mut().graceful_shutdown();
            // A client that does not read its response is not waited for.
            let _ = tokio::time::timeout(CLOSE_GRACE, connection).await;
        });
    }
    connections.close();
    let _ = tokio::time::timeout(CLOSE_GRACE, connections.wait()).await;
    Ok(())
}

/// `accept` errors that concern one connection only (it was reset before we took it).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
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
