//! The integration tests, one binary (one link, shared helpers compiled once): real
//! PostgreSQL (required in CI: a test that cannot reach it fails, it never skips), SQLite,
//! real directories, the real `vfolder-controller` binary.
//!
//! Run one group with `cargo test --test it store::` (module paths name the groups).

#[macro_use]
mod common;
mod harness;
mod storage_support;

mod adopt;
mod cli;
mod controller;
mod deploy_manifests;
mod deploy_monitoring;
mod hostile_config;
mod observe_docs;
mod observe_e2e;
mod observe_http;
mod observe_logging;
mod observe_metrics;
mod orphans;
mod outage;
mod self_protection;
mod storage_order;
mod storage_remove;
mod storage_safety;
mod store;
mod volumes;
