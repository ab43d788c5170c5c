//! Structured logs with `tracing`: human text (colored on a terminal) or one JSON object per
//! line, on standard error so that command output on standard output stays clean.
//!
//! The filter is `RUST_LOG` when that is set and non-empty, else the configured one
//! (`log.filter`), so an operator can turn up one module without editing the configuration.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use super::Error;
use crate::config::LogFormat;

/// The environment variable that overrides the configured filter.
pub const FILTER_ENV: &str = "RUST_LOG";

/// Installs the global subscriber. Fails when a filter does not parse (naming the source,
/// `RUST_LOG` or `log.filter`) or when a global subscriber is already installed.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<(), Error> {
    let env = std::env::var(FILTER_ENV).ok();
    let filter = build_filter(filter, env.as_deref())?;
    let ansi = std::io::stderr().is_terminal();
    subscriber(format, filter, std::io::stderr, ansi)
        .try_init()
        .map_err(|e| Error::LoggingInit(e.to_string()))
}

/// The filter: `env_value` (the value of `RUST_LOG`) when set and non-empty, else
/// `configured`.
pub fn build_filter(configured: &str, env_value: Option<&str>) -> Result<EnvFilter, Error> {
    match env_value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) => EnvFilter::try_new(v).map_err(|e| Error::LogFilter {
            source_name: FILTER_ENV,
            filter: v.to_owned(),
            message: e.to_string(),
        }),
        None => EnvFilter::try_new(configured).map_err(|e| Error::LogFilter {
            source_name: "log.filter",
            filter: configured.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// The subscriber `init_logging` installs, writing to `writer`; public so that tests (and
/// embedders) can capture the output with `tracing::subscriber::with_default`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi)
                    .with_target(true),
            ),
        ),
        LogFormat::Json => Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer)
                    .with_current_span(true)
                    .with_span_list(false)
                    .flatten_event(true),
            ),
        ),
    }
}
