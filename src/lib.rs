//! vfolder-controller: a reconciliation controller for the deletion lifecycle ("trash bin")
//! of virtual folders.
//!
//! The `vfolders` table is the API: callers write the desired status of a row, and the
//! controller converges the filesystem and the row. Modules, one responsibility each:
//!
//! - [`lifecycle`]: status values and the one table of legal transitions.
//! - [`config`]: the TOML file, environment and defaults.
//! - [`model`]: the data the store, the controller and the CLI exchange.
//! - [`store`]: database access: the rules once, PostgreSQL and SQLite dialects below them,
//!   behind role traits (readiness, admin, the controller's work).
//! - [`storage`]: volumes, path layout and the safe parallel remover (no database, no tokio).
//! - [`controller`]: the reconcile loop: claims, workers, backoff, timers, shutdown.
//! - [`observe`]: metrics, health and readiness endpoints, logging.
//! - [`cli`]: the admin subcommands.

pub mod cli;
pub mod config;
pub mod controller;
pub mod lifecycle;
pub mod model;
pub mod observe;
pub mod storage;
pub mod store;
