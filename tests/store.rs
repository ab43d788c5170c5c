//! The store conformance suite: every test is written once and runs on PostgreSQL and SQLite
//! (`NAME::postgres`, `NAME::sqlite`). The first group proves what the database itself
//! enforces for a raw SQL writer (no store code involved); the second group covers the
//! `Store` trait.
//!
//! Run with `cargo test --test store -- --test-threads 2` (PostgreSQL from `DATABASE_URL`).

#[macro_use]
mod common;

use std::collections::BTreeSet;

use common::{Backend, TestDb};
use vfolder_controller::lifecycle::{ALL, Status, TRANSITIONS};
use vfolder_controller::store::{self, Error};

fn new_id() -> uuid::Uuid {
    uuid::Uuid::new_v4()
}

// ----- the database itself (raw SQL writers) -----------------------------------------------

conformance!(
    seeded_transition_table_equals_lifecycle_transitions,
    minimal_insert_gets_defaults_and_an_initial_history_entry,
    every_legal_transition_is_accepted_from_raw_sql,
    every_illegal_transition_is_rejected_by_the_database_naming_both_statuses,
    unknown_statuses_are_rejected_by_the_database,
    history_has_one_entry_per_change_in_order_with_the_actor,
    writing_the_same_status_is_a_no_op,
    legacy_deleted_complete_rows_are_fixed_by_the_migrations,
    migrations_run_twice_are_a_no_op,
    a_name_is_reserved_while_live_or_trashed_and_free_once_dead,
);

async fn seeded_transition_table_equals_lifecycle_transitions(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let seeded: BTreeSet<(String, String)> = raw.transitions().await.into_iter().collect();
    let expected: BTreeSet<(String, String)> = TRANSITIONS
        .iter()
        .map(|(a, b)| (a.as_str().to_owned(), b.as_str().to_owned()))
        .collect();
    assert_eq!(seeded, expected);
}

async fn minimal_insert_gets_defaults_and_an_initial_history_entry(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "minimal", None).await.unwrap();
    assert_eq!(raw.status(id).await, "ready");
    let ownership = raw
        .text(&format!(
            "SELECT ownership_type FROM vfolders WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(ownership.as_deref(), Some("user"));
    let history = raw.history(id).await;
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["status"], "ready");
    assert!(history[0]["actor"].is_null());
    assert!(raw.status_changed(id).await.is_some());
}

async fn every_legal_transition_is_accepted_from_raw_sql(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    for (i, (from, to)) in TRANSITIONS.iter().enumerate() {
        let id = new_id();
        raw.insert(id, &format!("legal{i}"), Some(from.as_str()))
            .await
            .unwrap();
        let n = raw
            .set_status(id, to.as_str())
            .await
            .unwrap_or_else(|e| panic!("{from} -> {to} rejected: {e}"));
        assert_eq!(n, 1);
        assert_eq!(raw.status(id).await, to.as_str());
        let history = raw.history(id).await;
        assert_eq!(history.len(), 2, "{from} -> {to}: {history:?}");
        assert_eq!(history[1]["status"], to.as_str());
    }
}

async fn every_illegal_transition_is_rejected_by_the_database_naming_both_statuses(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let mut rejected = 0;
    for from in ALL {
        for to in ALL {
            if from == to || TRANSITIONS.contains(&(from, to)) {
                continue;
            }
            let id = new_id();
            raw.insert(id, &format!("illegal-{from}-{to}"), Some(from.as_str()))
                .await
                .unwrap();
            let err = raw
                .set_status(id, to.as_str())
                .await
                .expect_err("illegal transition accepted");
            let expected = format!("illegal vfolder status transition: {from} -> {to}");
            assert!(err.contains(&expected), "{from} -> {to}: {err}");
            assert_eq!(raw.status(id).await, from.as_str());
            assert_eq!(raw.history(id).await.len(), 1);
            rejected += 1;
        }
    }
    assert_eq!(rejected, ALL.len() * (ALL.len() - 1) - TRANSITIONS.len());
}

async fn unknown_statuses_are_rejected_by_the_database(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "known", None).await.unwrap();
    let err = raw.set_status(id, "deleted-complete").await.unwrap_err();
    assert!(err.contains("unknown vfolder status"), "{err}");
    let err = raw
        .insert(new_id(), "bogus", Some("DELETE_PENDING"))
        .await
        .unwrap_err();
    assert!(err.contains("unknown vfolder status"), "{err}");
    assert_eq!(raw.status(id).await, "ready");
}

async fn history_has_one_entry_per_change_in_order_with_the_actor(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "hist", None).await.unwrap();
    raw.set_status(id, "delete-pending").await.unwrap();
    raw.set_status_as(id, "ready", "alice").await.unwrap();
    raw.set_status_as(id, "delete-ongoing", "bob")
        .await
        .unwrap();
    let history = raw.history(id).await;
    let statuses: Vec<&str> = history
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["ready", "delete-pending", "ready", "delete-ongoing"]
    );
    let actors: Vec<Option<&str>> = history.iter().map(|e| e["actor"].as_str()).collect();
    assert_eq!(actors, [None, None, Some("alice"), Some("bob")]);
    let times: Vec<chrono::DateTime<chrono::Utc>> = history
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The actor does not leak into a later writer's change.
    raw.set_status(id, "delete-complete").await.unwrap();
    let history = raw.history(id).await;
    assert!(history[4]["actor"].is_null(), "{history:?}");
}

async fn writing_the_same_status_is_a_no_op(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "same", None).await.unwrap();
    raw.set_status(id, "delete-pending").await.unwrap();
    let changed = raw.status_changed(id).await;
    assert_eq!(raw.set_status(id, "delete-pending").await, Ok(1));
    assert_eq!(raw.history(id).await.len(), 2);
    assert_eq!(raw.status_changed(id).await, changed);
    // Through the store: changed = false and nothing audited.
    let before = store
        .audit(&store::AuditFilter::default())
        .await
        .unwrap()
        .len();
    let change = store
        .set_status(&store::StatusRequest {
            id,
            to: Status::DeletePending,
            actor: "alice".into(),
            action: "trash",
            purge_after: None,
        })
        .await
        .unwrap();
    assert!(!change.changed);
    assert_eq!(change.from, Status::DeletePending);
    assert_eq!(raw.history(id).await.len(), 2);
    let after = store
        .audit(&store::AuditFilter::default())
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);
}

/// Creates a table shaped like the reference platform's (before this program existed), with
/// legacy rows, then migrates.
async fn legacy_deleted_complete_rows_are_fixed_by_the_migrations(db: TestDb) {
    let raw = db.raw().await;
    let legacy = new_id();
    let object_history = new_id();
    let live = new_id();
    match db.backend {
        Backend::Postgres => {
            raw.execute(
                r#"CREATE TABLE vfolders (
                       id uuid PRIMARY KEY, host varchar(128) NOT NULL,
                       quota_scope_id varchar(64), name varchar(64) NOT NULL,
                       "user" uuid, "group" uuid, ownership_type varchar(16) NOT NULL,
                       status varchar(64) NOT NULL, status_history jsonb,
                       status_changed timestamptz, created_at timestamptz DEFAULT now())"#,
            )
            .await
            .unwrap();
        }
        Backend::Sqlite => {
            raw.execute(
                r#"CREATE TABLE vfolders (
                       id text PRIMARY KEY NOT NULL, host varchar(128) NOT NULL,
                       quota_scope_id varchar(64), name varchar(64) NOT NULL,
                       "user" text, "group" text, ownership_type varchar(16) NOT NULL DEFAULT 'user',
                       status varchar(64) NOT NULL DEFAULT 'ready',
                       status_history text NOT NULL DEFAULT '[]', status_changed text,
                       created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"#,
            )
            .await
            .unwrap();
        }
    }
    raw.execute(&format!(
        r#"INSERT INTO vfolders (id, host, name, ownership_type, status, status_history)
           VALUES ('{legacy}', 'local:volume1', 'old', 'user', 'deleted-complete',
                   '[{{"status": "delete-ongoing", "at": "2024-01-01T00:00:00.000Z", "actor": null}},
                     {{"status": "deleted-complete", "at": "2024-01-02T00:00:00.000Z", "actor": null}}]'),
                  ('{live}', 'local:volume1', 'live', 'user', 'ready', '[]')"#
    ))
    .await
    .unwrap();
    if db.backend == Backend::Postgres {
        // The reference platform's older history shape: an object {status: time}.
        raw.execute(&format!(
            r#"INSERT INTO vfolders (id, host, name, ownership_type, status, status_history)
               VALUES ('{object_history}', 'local:volume1', 'obj', 'user', 'deleted-complete',
                       '{{"deleted-complete": "2024-01-02T00:00:00Z", "ready": "2024-01-01T00:00:00Z"}}')"#
        ))
        .await
        .unwrap();
    }

    let store = db.migrated().await;
    store.check_ready().await.unwrap();

    assert_eq!(raw.status(legacy).await, "delete-complete");
    let history = raw.history(legacy).await;
    let statuses: Vec<&str> = history
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["delete-ongoing", "delete-complete"]);
    if db.backend == Backend::Postgres {
        assert_eq!(raw.status(object_history).await, "delete-complete");
        let statuses: Vec<String> = raw
            .history(object_history)
            .await
            .iter()
            .map(|e| e["status"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(statuses, ["ready", "delete-complete"]);
    }
    // The fixed row reads through the store, and the trigger now guards it.
    let detail = store.get_folder(legacy).await.unwrap();
    assert_eq!(detail.folder.status, Status::DeleteComplete);
    let err = raw.set_status(legacy, "ready").await.unwrap_err();
    assert!(
        err.contains("illegal vfolder status transition: delete-complete -> ready"),
        "{err}"
    );
    // An adopted live row takes part in the lifecycle.
    raw.set_status(live, "delete-pending").await.unwrap();
    assert_eq!(raw.history(live).await.len(), 1);
}

async fn migrations_run_twice_are_a_no_op(db: TestDb) {
    let store = db.store().await;
    let err = store.check_ready().await.unwrap_err();
    assert!(matches!(err, Error::NotMigrated(_)), "{err}");
    store.migrate().await.unwrap();
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "kept", None).await.unwrap();
    store.migrate().await.unwrap();
    store.check_ready().await.unwrap();
    assert_eq!(raw.status(id).await, "ready");
    assert_eq!(raw.history(id).await.len(), 1);
    let migrations = match db.backend {
        Backend::Postgres => store::postgres::MIGRATOR.iter().count(),
        Backend::Sqlite => store::sqlite::MIGRATOR.iter().count(),
    };
    let applied = raw.int("SELECT count(*) FROM _sqlx_migrations").await;
    assert_eq!(applied, i64::try_from(migrations).unwrap());
    assert_eq!(raw.transitions().await.len(), TRANSITIONS.len());
}

async fn a_name_is_reserved_while_live_or_trashed_and_free_once_dead(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let owner = new_id();
    let insert = |id: uuid::Uuid| {
        format!(
            r#"INSERT INTO vfolders (id, host, quota_scope_id, name, "user")
               VALUES ('{id}', 'local:volume1', NULL, 'data', '{owner}')"#
        )
    };
    let first = new_id();
    raw.execute(&insert(first)).await.unwrap();
    // Another owner may use the name.
    raw.execute(&format!(
        r#"INSERT INTO vfolders (id, host, quota_scope_id, name, "user")
           VALUES ('{}', 'local:volume1', NULL, 'data', '{}')"#,
        new_id(),
        new_id()
    ))
    .await
    .unwrap();
    for status in ["delete-pending", "delete-ongoing"] {
        raw.set_status(first, status).await.unwrap();
        let err = raw.execute(&insert(new_id())).await.unwrap_err();
        assert!(
            err.contains("vfolders_owner_name_live_key") || err.to_lowercase().contains("unique"),
            "{status}: {err}"
        );
    }
    raw.set_status(first, "delete-complete").await.unwrap();
    let second = new_id();
    raw.execute(&insert(second)).await.unwrap();
    // The dead row keeps its name: no rename.
    let name = raw
        .text(&format!("SELECT name FROM vfolders WHERE id = '{first}'"))
        .await;
    assert_eq!(name.as_deref(), Some("data"));
}
