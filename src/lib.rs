//! vfolder-controller: a reconciliation controller for the deletion lifecycle ("trash bin")
//! of virtual folders.
//!
//! The `vfolders` table is the API: callers write the desired status of a row, and the
//! controller converges the filesystem and the row. Modules, one responsibility each:
//!
//! - [`lifecycle`]: status values and the one table of legal transitions.
//! - [`config`]: the TOML file, environment and defaults.
//! - [`store`]: database access (PostgreSQL and SQLite behind one trait).
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
