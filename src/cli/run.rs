//! `vfolder-controller run`: start the controller and keep it running until SIGTERM, SIGINT
//! or SIGHUP.
//!
//! [`run`] is the one place that wires configuration, logging, database and controller
//! together, so the body can grow into the full controller without touching the CLI.

use std::sync::Arc;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Error;
use crate::config::{Config, VolumeConfig};
use crate::controller::shutdown::shutdown_on_signal;
use crate::controller::{self, Context};
use crate::observe::{self, Health, HttpState, Metrics};
use crate::store::{self, Store};

/// Runs the controller: logging, database connection and migrations, the built-in volume
/// directory, the HTTP endpoint, then the reconcile loop until SIGTERM, SIGINT or SIGHUP (a
/// second signal exits at once). Returns `Ok` (exit 0) after a graceful stop.
pub async fn run(config: Config) -> Result<(), Error> {
    observe::init_logging(config.log.format, &config.log.filter)?;
    raise_descriptor_limit();
    let store: Arc<dyn Store> = store::connect(&config.database_url).await?;
    store.migrate(false).await?;
    ensure_builtin_volume(&config)?;
    // Installed before the "running" line, so a signal sent after it is never missed.
    let shutdown = CancellationToken::new();
    shutdown_on_signal(shutdown.clone()).map_err(|source| Error::Io {
        what: "cannot install signal handlers for",
        path: "SIGTERM/SIGINT/SIGHUP".into(),
        source,
    })?;

    let metrics = Arc::new(Metrics::new());
    // Liveness tolerates a few missed passes (a slow claim under load is not a stall).
    let pass_interval = config
        .controller
        .resync_interval
        .max(config.controller.poll_interval);
    let health = Arc::new(Health::new(pass_interval * 3 + Duration::from_secs(5)));
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|source| Error::Io {
            what: "cannot listen for /metrics, /healthz and /readyz on",
            path: config.http.listen.to_string().into(),
            source,
        })?;
    tracing::info!(listen = %listener.local_addr().unwrap_or(config.http.listen), "serving /metrics, /healthz, /readyz");
    let http = tokio::spawn(observe::serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
            store: store.clone(),
        },
        shutdown.clone(),
    ));

    let ctx = Arc::new(Context::new(&config, store, metrics, health));
    controller::run(ctx, &config, shutdown.clone()).await;
    shutdown.cancel();
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(%error, "HTTP endpoint failed"),
        Err(error) => tracing::warn!(%error, "HTTP endpoint task failed"),
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit. Parallel removals hold a
/// descriptor per open directory and thread, on top of database and HTTP connections; the
/// soft limit many systems start processes with (1024) is meant for programs that do not
/// know their needs. Failing to raise it is logged, not fatal: the controller treats running
/// out as its own transient condition (see `controller::pressure`).
fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none() || limit.current == limit.maximum {
        tracing::debug!(soft = ?limit.current, hard = ?limit.maximum, "open files limit");
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(
            from = ?limit.current,
            to = ?limit.maximum,
            "raised the open files limit to the hard limit"
        ),
        Err(error) => {
            tracing::warn!(%error, soft = ?limit.current, hard = ?limit.maximum, "cannot raise the open files limit")
        }
    }
}

/// Creates the built-in volume's directory (`./var/volumes/volume1`) when it is the volume
/// in use, so the zero-configuration setup works from a clean checkout. Configured volumes
/// are never created: a missing mount must read as "not available", not as an empty volume.
pub fn ensure_builtin_volume(config: &Config) -> Result<(), Error> {
    let builtin = VolumeConfig::builtin_default();
    for v in &config.volumes {
        if v.host == builtin.host && v.mount == builtin.mount {
            std::fs::create_dir_all(&v.mount).map_err(|source| Error::Io {
                what: "cannot create the built-in volume directory",
                path: v.mount.clone(),
                source,
            })?;
        }
    }
    Ok(())
}
