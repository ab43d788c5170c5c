//! The store conformance suite: every test is written once and runs on PostgreSQL and SQLite
//! (`NAME::postgres`, `NAME::sqlite`). The first group proves what the database itself
//! enforces for a raw SQL writer (no store code involved); the second group covers the
//! `Store` trait.
//!
//! Run with `cargo test --test it store:: -- --test-threads 2` (PostgreSQL from `DATABASE_URL`).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};

use common::{Backend, TestDb};
use vfolder_controller::lifecycle::{ADOPTED_TRANSITIONS, ALL, RowStatus, Status, TRANSITIONS};
use vfolder_controller::store::{self, AuditAction, Error};

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
    legacy_spellings_mean_what_the_platform_meant,
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
    let adopted: BTreeSet<(String, String)> = raw.adopted_transitions().await.into_iter().collect();
    let expected: BTreeSet<(String, String)> = match db.backend {
        // Only a PostgreSQL table can be adopted.
        Backend::Postgres => ADOPTED_TRANSITIONS
            .iter()
            .map(|(a, b)| (a.as_str().to_owned(), b.as_str().to_owned()))
            .collect(),
        Backend::Sqlite => BTreeSet::new(),
    };
    assert_eq!(adopted, expected);
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
    let err = raw.set_status(id, "deleting").await.unwrap_err();
    assert!(err.contains("unknown vfolder status"), "{err}");
    let err = raw
        .insert(new_id(), "bogus", Some("delete_pending"))
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
            action: AuditAction::Trash,
            purge_after: None,
            expect_from: &[],
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
async fn legacy_spellings_mean_what_the_platform_meant(db: TestDb) {
    let _store = db.migrated().await;
    let raw = db.raw().await;
    // deleted-complete was the platform's trash: written, it is delete-pending (restorable),
    // never delete-complete, which would orphan the data.
    let inserted = new_id();
    raw.insert(inserted, "legacy-insert", Some("deleted-complete"))
        .await
        .unwrap();
    assert_eq!(raw.status(inserted).await, "delete-pending");
    let trashed = new_id();
    raw.insert(trashed, "legacy-update", None).await.unwrap();
    raw.set_status(trashed, "deleted-complete").await.unwrap();
    assert_eq!(raw.status(trashed).await, "delete-pending");
    raw.set_status(trashed, "purge-ongoing").await.unwrap();
    assert_eq!(raw.status(trashed).await, "delete-ongoing");
    let statuses: Vec<String> = raw
        .history(trashed)
        .await
        .iter()
        .map(|e| e["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["ready", "delete-pending", "delete-ongoing"]);
    // The rewritten row is still guarded: a legacy spelling is no way around the lifecycle.
    let err = raw
        .set_status(trashed, "deleted-complete")
        .await
        .unwrap_err();
    assert!(
        err.contains("illegal vfolder status transition: delete-ongoing -> delete-pending"),
        "{err}"
    );
}

async fn migrations_run_twice_are_a_no_op(db: TestDb) {
    let store = db.store().await;
    let err = store.check_ready().await.unwrap_err();
    assert!(matches!(err, Error::NotMigrated(_)), "{err}");
    store.migrate(false).await.unwrap();
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "kept", None).await.unwrap();
    store.migrate(false).await.unwrap();
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

// ----- the Store trait ----------------------------------------------------------------------

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use store::{
    AuditFilter, ClaimRequest, Completion, Counts, Location, NewFolder, StatusRequest, Store,
    WorkKind,
};

const HOST: &str = "local:volume1";
const MOVE_HOST: &str = "local:moving";

fn new_folder(name: &str, host: &str) -> NewFolder {
    NewFolder {
        id: new_id(),
        host: host.to_owned(),
        quota_scope_id: Some(format!("user:{}", new_id())),
        name: name.to_owned(),
        user: Some(new_id()),
        group: None,
        ownership_type: "user".to_owned(),
    }
}

fn request(id: uuid::Uuid, to: Status, action: AuditAction) -> StatusRequest {
    StatusRequest {
        id,
        to,
        actor: "alice".to_owned(),
        action,
        purge_after: None,
        expect_from: &[],
    }
}

fn claim_request(owner: &str) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        lease: Duration::from_secs(60),
        limit: 10,
        hosts: vec![HOST.to_owned(), MOVE_HOST.to_owned()],
        move_hosts: vec![MOVE_HOST.to_owned()],
        exclude: vec![],
    }
}

/// A folder in `delete-ongoing` (created, then force-deleted).
async fn ongoing(store: &Arc<dyn Store>, name: &str, host: &str) -> uuid::Uuid {
    created_then(
        store,
        name,
        host,
        Status::DeleteOngoing,
        AuditAction::ForceDelete,
    )
    .await
}

/// A folder in `delete-pending` (created, then trashed), with no purge time of its own.
async fn trashed(store: &Arc<dyn Store>, name: &str, host: &str) -> uuid::Uuid {
    created_then(store, name, host, Status::DeletePending, AuditAction::Trash).await
}

/// A new folder, then one status change.
async fn created_then(
    store: &Arc<dyn Store>,
    name: &str,
    host: &str,
    to: Status,
    action: AuditAction,
) -> uuid::Uuid {
    let folder = store
        .create_folder(&new_folder(name, host), "alice")
        .await
        .unwrap();
    store
        .set_status(&request(folder.id, to, action))
        .await
        .unwrap();
    folder.id
}

fn done() -> Completion {
    Completion {
        progress: Counts {
            files: 3,
            dirs: 2,
            symlinks: 1,
            bytes: 42,
        },
        duration: Duration::from_millis(1500),
    }
}

async fn actions(store: &Arc<dyn Store>, id: uuid::Uuid) -> Vec<String> {
    store
        .audit(&AuditFilter {
            id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect()
}

conformance!(
    create_get_and_list_round_trip,
    set_status_checks_the_lifecycle_and_audits,
    set_status_maps_a_taken_name,
    claim_returns_due_rows_once_and_a_second_claimant_gets_nothing,
    expired_lease_is_reclaimed_by_another_replica,
    claim_honours_hosts_exclude_and_limit,
    move_volumes_get_trash_and_restore_work,
    lease_guarded_operations_are_no_ops_for_a_non_owner,
    completion_writes_exactly_one_audit_entry,
    a_batch_of_completions_ends_each_folder_on_its_own_row,
    concurrent_completions_answer_each_folder_alone_even_when_one_cannot_be_written,
    retries_back_off_and_failures_go_to_delete_error,
    released_leases_are_claimable_again,
    trash_timer_respects_default_retention_and_purge_after,
    history_cleanup_removes_rows_but_keeps_the_audit,
    forget_works_only_from_delete_error,
    audit_filters_by_folder_time_and_limit,
    status_counts_and_oldest_unconverged,
    the_trash_timer_age_is_that_of_the_most_overdue_purge_time,
    status_counts_of_small_sets_are_exact,
);

async fn create_get_and_list_round_trip(db: TestDb) {
    let store = db.migrated().await;
    let new = new_folder("round", HOST);
    let folder = store.create_folder(&new, "alice").await.unwrap();
    assert_eq!(folder.id, new.id);
    assert_eq!(folder.status, Status::Ready);
    assert_eq!(folder.user, new.user);
    assert_eq!(folder.quota_scope_id, new.quota_scope_id);
    let detail = store.get_folder(new.id).await.unwrap();
    assert_eq!(detail.folder, folder);
    assert_eq!(detail.history.len(), 1);
    assert_eq!(detail.history[0].actor.as_deref(), Some("alice"));
    assert!(detail.state.is_none());
    let other = store
        .create_folder(&new_folder("other", HOST), "alice")
        .await
        .unwrap();
    store
        .set_status(&request(
            other.id,
            Status::DeletePending,
            AuditAction::Trash,
        ))
        .await
        .unwrap();
    let live = store.list_folders(&[Status::Ready], false).await.unwrap();
    assert_eq!(live.iter().map(|f| f.id).collect::<Vec<_>>(), [new.id]);
    let trash = store
        .list_folders(&[Status::DeletePending, Status::DeleteOngoing], false)
        .await
        .unwrap();
    assert_eq!(trash.iter().map(|f| f.id).collect::<Vec<_>>(), [other.id]);
    assert!(matches!(
        store.get_folder(new_id()).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(actions(&store, new.id).await, ["create"]);
}

async fn set_status_checks_the_lifecycle_and_audits(db: TestDb) {
    let store = db.migrated().await;
    let folder = store
        .create_folder(&new_folder("life", HOST), "alice")
        .await
        .unwrap();
    let change = store
        .set_status(&request(
            folder.id,
            Status::DeletePending,
            AuditAction::Trash,
        ))
        .await
        .unwrap();
    assert!(change.changed);
    assert_eq!(
        (change.from, change.to),
        (Status::Ready, Status::DeletePending)
    );
    let err = store
        .set_status(&request(
            folder.id,
            Status::DeleteComplete,
            AuditAction::Purge,
        ))
        .await
        .unwrap_err();
    match err {
        Error::IllegalTransition { id, source } => {
            assert_eq!(id, folder.id);
            assert_eq!(
                (source.from, source.to),
                (Status::DeletePending, Status::DeleteComplete)
            );
        }
        other => panic!("expected IllegalTransition, got {other}"),
    }
    let err = store
        .set_status(&request(new_id(), Status::Ready, AuditAction::Restore))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err}");
    let audit = store
        .audit(&AuditFilter {
            id: Some(folder.id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[1].action, "trash");
    assert_eq!(audit[1].from_status.as_deref(), Some("ready"));
    assert_eq!(audit[1].to_status.as_deref(), Some("delete-pending"));
    assert_eq!(audit[1].actor.as_deref(), Some("alice"));
    let detail = store.get_folder(folder.id).await.unwrap();
    assert_eq!(
        detail.history.last().unwrap().actor.as_deref(),
        Some("alice")
    );
    assert_eq!(detail.history.len(), 2);
}

async fn set_status_maps_a_taken_name(db: TestDb) {
    let store = db.migrated().await;
    let first = new_folder("taken", HOST);
    store.create_folder(&first, "alice").await.unwrap();
    let mut second = new_folder("taken", HOST);
    second.user = first.user;
    let err = store.create_folder(&second, "alice").await.unwrap_err();
    assert!(
        matches!(&err, Error::NameTaken { name } if name == "taken"),
        "{err}"
    );
    // Free once the first folder is dead; the new one is created.
    store
        .set_status(&request(
            first.id,
            Status::DeleteOngoing,
            AuditAction::ForceDelete,
        ))
        .await
        .unwrap();
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert!(store.fail_removal(first.id, "r1", "boom").await.unwrap());
    store.create_folder(&second, "alice").await.unwrap();
    // Retrying the dead folder would take the name again: refused as NameTaken.
    let err = store
        .set_status(&request(
            first.id,
            Status::DeleteOngoing,
            AuditAction::Retry,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NameTaken { .. }), "{err}");
}

async fn claim_returns_due_rows_once_and_a_second_claimant_gets_nothing(db: TestDb) {
    let store = db.migrated().await;
    let a = ongoing(&store, "a", HOST).await;
    let b = ongoing(&store, "b", HOST).await;
    let ready = store
        .create_folder(&new_folder("c", HOST), "alice")
        .await
        .unwrap();
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    let ids: BTreeSet<_> = claims.iter().map(|c| c.folder.id).collect();
    assert_eq!(ids, BTreeSet::from([a, b]));
    assert!(!ids.contains(&ready.id));
    for c in &claims {
        assert_eq!(c.kind, WorkKind::Remove);
        assert_eq!(c.attempts, 0);
        assert_eq!(c.location, Location::Live);
        assert_eq!(c.reclaimed_from, None);
        assert_eq!(c.folder.status, Status::DeleteOngoing);
    }
    assert!(
        store
            .claim_due(&claim_request("r1"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim_due(&claim_request("r2"))
            .await
            .unwrap()
            .is_empty()
    );
    let state = store.get_folder(a).await.unwrap().state.unwrap();
    assert_eq!(state.lease_owner.as_deref(), Some("r1"));
    assert!(state.lease_expires_at.unwrap() > Utc::now());
}

async fn expired_lease_is_reclaimed_by_another_replica(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let id = ongoing(&store, "a", HOST).await;
    assert_eq!(
        store.claim_due(&claim_request("r1")).await.unwrap().len(),
        1
    );
    raw.expire_lease(id).await;
    let claims = store.claim_due(&claim_request("r2")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].reclaimed_from.as_deref(), Some("r1"));
    // The old owner lost it: its renewal and completion are refused.
    assert!(
        !store
            .renew_lease(id, "r1", Duration::from_secs(60), Counts::default())
            .await
            .unwrap()
    );
    assert!(!store.complete_removal(id, "r1", &done()).await.unwrap());
    assert!(store.complete_removal(id, "r2", &done()).await.unwrap());
}

async fn claim_honours_hosts_exclude_and_limit(db: TestDb) {
    let store = db.migrated().await;
    let a = ongoing(&store, "a", HOST).await;
    let b = ongoing(&store, "b", HOST).await;
    let elsewhere = ongoing(&store, "c", "other:volume").await;
    let mut req = claim_request("r1");
    req.exclude = vec![a];
    req.limit = 5;
    let claims = store.claim_due(&req).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.folder.id).collect::<Vec<_>>(), [b]);
    let mut req = claim_request("r1");
    req.limit = 1;
    let claims = store.claim_due(&req).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.folder.id).collect::<Vec<_>>(), [a]);
    let mut req = claim_request("r1");
    req.hosts = vec![];
    assert!(store.claim_due(&req).await.unwrap().is_empty());
    let mut req = claim_request("r1");
    req.hosts = vec!["other:volume".to_owned()];
    let claims = store.claim_due(&req).await.unwrap();
    assert_eq!(
        claims.iter().map(|c| c.folder.id).collect::<Vec<_>>(),
        [elsewhere]
    );
}

async fn move_volumes_get_trash_and_restore_work(db: TestDb) {
    let store = db.migrated().await;
    let moving = store
        .create_folder(&new_folder("m", MOVE_HOST), "alice")
        .await
        .unwrap();
    let in_place = store
        .create_folder(&new_folder("p", HOST), "alice")
        .await
        .unwrap();
    for id in [moving.id, in_place.id] {
        store
            .set_status(&request(id, Status::DeletePending, AuditAction::Trash))
            .await
            .unwrap();
    }
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].folder.id, moving.id);
    assert_eq!(claims[0].kind, WorkKind::MoveToTrash);
    assert!(
        store
            .record_location(moving.id, "r1", Location::Trash)
            .await
            .unwrap()
    );
    let state = store.get_folder(moving.id).await.unwrap().state.unwrap();
    assert_eq!(state.location, Location::Trash);
    assert_eq!(state.lease_owner, None);
    assert!(
        store
            .claim_due(&claim_request("r1"))
            .await
            .unwrap()
            .is_empty()
    );
    store
        .set_status(&request(moving.id, Status::Ready, AuditAction::Restore))
        .await
        .unwrap();
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].kind, WorkKind::Restore);
    assert_eq!(claims[0].location, Location::Trash);
    assert!(
        store
            .record_location(moving.id, "r1", Location::Live)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_due(&claim_request("r1"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        actions(&store, moving.id).await,
        [
            "create",
            "trash",
            "moved-to-trash",
            "restore",
            "restored-from-trash"
        ]
    );
    // A purge of trashed data is a removal, whatever the location.
    store
        .set_status(&request(
            moving.id,
            Status::DeleteOngoing,
            AuditAction::ForceDelete,
        ))
        .await
        .unwrap();
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    let kinds: Vec<_> = claims.iter().map(|c| (c.folder.id, c.kind)).collect();
    assert_eq!(kinds, [(moving.id, WorkKind::Remove)]);
}

async fn lease_guarded_operations_are_no_ops_for_a_non_owner(db: TestDb) {
    let store = db.migrated().await;
    let id = ongoing(&store, "a", HOST).await;
    store.claim_due(&claim_request("r1")).await.unwrap();
    let before = store.get_folder(id).await.unwrap();
    assert!(!store.complete_removal(id, "r2", &done()).await.unwrap());
    assert!(!store.fail_removal(id, "r2", "nope").await.unwrap());
    assert_eq!(
        store
            .record_retry(id, "r2", "nope", Utc::now())
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .record_location(id, "r2", Location::Trash)
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_lease(id, "r2", Duration::from_secs(60), Counts::default())
            .await
            .unwrap()
    );
    store.release_lease(id, "r2").await.unwrap();
    assert_eq!(store.release_all_leases("r2").await.unwrap(), 0);
    assert_eq!(store.get_folder(id).await.unwrap(), before);
    assert_eq!(actions(&store, id).await, ["create", "force-delete"]);
    // The owner's renewal stores progress and extends the lease.
    let progress = Counts {
        files: 7,
        dirs: 1,
        symlinks: 0,
        bytes: 9,
    };
    assert!(
        store
            .renew_lease(id, "r1", Duration::from_secs(600), progress)
            .await
            .unwrap()
    );
    let state = store.get_folder(id).await.unwrap().state.unwrap();
    assert_eq!(state.progress, progress);
    assert!(state.lease_expires_at.unwrap() > Utc::now() + chrono::Duration::seconds(300));
}

/// A completion whose counts tell the folders of a batch apart.
fn done_with(n: u64) -> Completion {
    Completion {
        progress: Counts {
            files: n,
            dirs: n + 1,
            symlinks: 0,
            bytes: 10 * n,
        },
        duration: Duration::from_millis(n),
    }
}

async fn a_batch_of_completions_ends_each_folder_on_its_own_row(db: TestDb) {
    let store = db.migrated().await;
    let mut events = store.subscribe().await.unwrap();
    assert_eq!(
        events.is_some(),
        matches!(db.backend, Backend::Postgres),
        "PostgreSQL has events, SQLite none"
    );
    let (a, b, d) = (
        ongoing(&store, "batch-a", HOST).await,
        ongoing(&store, "batch-b", HOST).await,
        ongoing(&store, "batch-d", HOST).await,
    );
    assert_eq!(
        store.claim_due(&claim_request("r1")).await.unwrap().len(),
        3
    );
    // e is leased by another replica; b moved on (failed) before the batch; `gone` has no row.
    let e = ongoing(&store, "batch-e", HOST).await;
    assert_eq!(
        store.claim_due(&claim_request("r2")).await.unwrap().len(),
        1
    );
    assert!(store.fail_removal(b, "r1", "disk on fire").await.unwrap());
    let gone = new_id();
    let batch = [
        (a, done_with(1)),
        (b, done_with(2)),
        (gone, done_with(3)),
        (e, done_with(4)),
        (a, done_with(5)),
        (d, done_with(6)),
    ];
    let flags = store.complete_removals("r1", &batch).await.unwrap();
    assert_eq!(flags, [true, false, false, false, false, true]);

    for (id, n) in [(a, 1), (d, 6)] {
        let detail = store.get_folder(id).await.unwrap();
        assert_eq!(detail.folder.status, Status::DeleteComplete);
        let last = detail.history.last().unwrap();
        assert_eq!(
            (last.status.as_str(), last.actor.as_deref()),
            ("delete-complete", Some("r1"))
        );
        let state = detail.state.unwrap();
        assert_eq!(
            (state.lease_owner, state.progress),
            (None, done_with(n).progress)
        );
        let audit = store
            .audit(&AuditFilter {
                id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        let removed: Vec<_> = audit.iter().filter(|x| x.action == "removed").collect();
        assert_eq!(removed.len(), 1, "one entry, its own counts: {audit:?}");
        assert_eq!(removed[0].progress, Some(done_with(n).progress));
        assert_eq!(removed[0].duration_ms, Some(n as i64));
        assert_eq!(
            removed[0].name.as_deref(),
            Some(detail.folder.name.as_str())
        );
    }
    // The others are exactly as the batch found them.
    let lost = store.get_folder(e).await.unwrap();
    assert_eq!(lost.folder.status, Status::DeleteOngoing);
    assert_eq!(lost.state.unwrap().lease_owner.as_deref(), Some("r2"));
    assert_eq!(actions(&store, e).await, ["create", "force-delete"]);
    assert_eq!(
        store.get_folder(b).await.unwrap().folder.status,
        Status::DeleteError
    );
    assert_eq!(
        actions(&store, b).await,
        ["create", "force-delete", "remove-failed"]
    );
    assert!(matches!(
        store.get_folder(gone).await,
        Err(Error::NotFound(_))
    ));

    // One event per completed folder (PostgreSQL; SQLite has no notifications).
    if let Some(events) = events.as_mut() {
        use futures::StreamExt;
        let mut completed = BTreeSet::new();
        while completed.len() < 2 {
            let event = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event within 10 s")
                .unwrap()
                .unwrap();
            if event.to == Status::DeleteComplete {
                assert!(completed.insert(event.id), "one event per folder");
            }
        }
        assert_eq!(completed, BTreeSet::from([a, d]));
    }
    // An empty batch writes nothing.
    assert!(store.complete_removals("r1", &[]).await.unwrap().is_empty());
}

/// A raw transaction holding a lock for a test.
enum Hold {
    Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    Lite(sqlx::Transaction<'static, sqlx::Sqlite>),
}

async fn concurrent_completions_answer_each_folder_alone_even_when_one_cannot_be_written(
    db: TestDb,
) {
    use vfolder_controller::controller::completions::Completions;
    let store = db.migrated().await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(ongoing(&store, &format!("group-{i}"), HOST).await);
    }
    let mut claim = claim_request("r1");
    claim.limit = 12;
    assert_eq!(store.claim_due(&claim).await.unwrap().len(), 12);
    // The database refuses the audit entry of one folder: whichever batch it lands in fails,
    // and the others in that batch must still complete.
    let poisoned = ids[7];
    let raw = db.raw().await;
    let poison = match db.backend {
        Backend::Postgres => format!(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.vfolder_id = '{poisoned}' THEN RAISE EXCEPTION 'poisoned'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER poison BEFORE INSERT ON vfolder_audit
                 FOR EACH ROW EXECUTE FUNCTION poison();"
        ),
        Backend::Sqlite => format!(
            "CREATE TRIGGER poison BEFORE INSERT ON vfolder_audit
             WHEN NEW.vfolder_id = '{poisoned}'
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
        ),
    };
    raw.execute(&poison).await.unwrap();

    // Hold the audit log while the first completion is written, so the other eleven queue
    // behind it and share one batch, the poisoned folder's.
    let hold = match &raw {
        common::Raw::Pg(pool) => {
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("LOCK TABLE vfolder_audit IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut *tx)
                .await
                .unwrap();
            Hold::Pg(tx)
        }
        common::Raw::Lite(pool) => Hold::Lite(pool.begin_with("BEGIN IMMEDIATE").await.unwrap()),
    };
    let completions = Arc::new(Completions::new(store.clone(), "r1".to_owned()));
    let mut answers = tokio::task::JoinSet::new();
    for (n, &id) in ids.iter().enumerate() {
        let completions = completions.clone();
        answers.spawn(async move { (id, n, completions.complete(id, done_with(n as u64)).await) });
        if n == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    match hold {
        Hold::Pg(tx) => tx.rollback().await.unwrap(),
        Hold::Lite(tx) => tx.rollback().await.unwrap(),
    }
    while let Some(joined) = answers.join_next().await {
        let (id, n, answer) = joined.unwrap();
        let detail = store.get_folder(id).await.unwrap();
        let removed: Vec<_> = store
            .audit(&AuditFilter {
                id: Some(id),
                ..AuditFilter::default()
            })
            .await
            .unwrap()
            .into_iter()
            .filter(|x| x.action == "removed")
            .collect();
        if id == poisoned {
            assert!(answer.is_err(), "{answer:?}");
            assert_eq!(detail.folder.status, Status::DeleteOngoing);
            assert_eq!(detail.state.unwrap().lease_owner.as_deref(), Some("r1"));
            assert!(removed.is_empty());
        } else {
            assert!(answer.unwrap(), "folder {n} completes");
            assert_eq!(detail.folder.status, Status::DeleteComplete);
            assert_eq!(removed.len(), 1, "folder {n}");
            assert_eq!(removed[0].progress, Some(done_with(n as u64).progress));
        }
    }
}

async fn completion_writes_exactly_one_audit_entry(db: TestDb) {
    let store = db.migrated().await;
    let id = ongoing(&store, "a", HOST).await;
    store.claim_due(&claim_request("r1")).await.unwrap();
    assert!(store.complete_removal(id, "r1", &done()).await.unwrap());
    assert!(!store.complete_removal(id, "r1", &done()).await.unwrap());
    let audit = store
        .audit(&AuditFilter {
            id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let removed: Vec<_> = audit.iter().filter(|e| e.action == "removed").collect();
    assert_eq!(removed.len(), 1, "{audit:?}");
    let entry = removed[0];
    assert_eq!(entry.from_status.as_deref(), Some("delete-ongoing"));
    assert_eq!(entry.to_status.as_deref(), Some("delete-complete"));
    assert_eq!(entry.replica.as_deref(), Some("r1"));
    assert_eq!(entry.actor.as_deref(), Some("r1"));
    assert_eq!(entry.progress, Some(done().progress));
    assert_eq!(entry.duration_ms, Some(1500));
    let detail = store.get_folder(id).await.unwrap();
    assert_eq!(detail.folder.status, Status::DeleteComplete);
    assert_eq!(detail.history.last().unwrap().actor.as_deref(), Some("r1"));
    let state = detail.state.unwrap();
    assert_eq!(state.lease_owner, None);
    assert_eq!(state.progress, done().progress);
    assert!(
        store
            .claim_due(&claim_request("r1"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn retries_back_off_and_failures_go_to_delete_error(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let id = ongoing(&store, "a", HOST).await;
    store.claim_due(&claim_request("r1")).await.unwrap();
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(
        store.record_retry(id, "r1", "ESTALE", later).await.unwrap(),
        Some(1)
    );
    let state = store.get_folder(id).await.unwrap().state.unwrap();
    assert_eq!(state.attempts, 1);
    assert_eq!(state.last_error.as_deref(), Some("ESTALE"));
    assert_eq!(state.lease_owner, None);
    assert!(
        store
            .claim_due(&claim_request("r2"))
            .await
            .unwrap()
            .is_empty()
    );
    raw.set_time(
        "vfolder_controller_state",
        "next_attempt_at",
        "vfolder_id",
        id,
        Utc::now() - chrono::Duration::seconds(1),
    )
    .await;
    let claims = store.claim_due(&claim_request("r2")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].attempts, 1);
    assert!(store.fail_removal(id, "r2", "unsafe path").await.unwrap());
    let detail = store.get_folder(id).await.unwrap();
    assert_eq!(detail.folder.status, Status::DeleteError);
    assert_eq!(
        detail.state.unwrap().last_error.as_deref(),
        Some("unsafe path")
    );
    let audit = store
        .audit(&AuditFilter {
            id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let failed = audit.last().unwrap();
    assert_eq!(failed.action, "remove-failed");
    assert_eq!(failed.error.as_deref(), Some("unsafe path"));
    assert_eq!(failed.to_status.as_deref(), Some("delete-error"));
    assert!(
        store
            .claim_due(&claim_request("r2"))
            .await
            .unwrap()
            .is_empty()
    );
    // The operator's retry starts afresh.
    store
        .set_status(&request(id, Status::DeleteOngoing, AuditAction::Retry))
        .await
        .unwrap();
    let claims = store.claim_due(&claim_request("r3")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].attempts, 0);
}

async fn released_leases_are_claimable_again(db: TestDb) {
    let store = db.migrated().await;
    let a = ongoing(&store, "a", HOST).await;
    let _b = ongoing(&store, "b", HOST).await;
    assert_eq!(
        store.claim_due(&claim_request("r1")).await.unwrap().len(),
        2
    );
    store.release_lease(a, "r1").await.unwrap();
    let claims = store.claim_due(&claim_request("r2")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].folder.id, a);
    assert_eq!(claims[0].reclaimed_from, None);
    assert_eq!(store.release_all_leases("r1").await.unwrap(), 1);
    assert_eq!(store.release_all_leases("r2").await.unwrap(), 1);
    assert_eq!(
        store.claim_due(&claim_request("r3")).await.unwrap().len(),
        2
    );
}

async fn trash_timer_respects_default_retention_and_purge_after(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let week = Duration::from_secs(7 * 86400);
    let mut ids = Vec::new();
    for name in ["old", "fresh", "early", "late"] {
        let f = store
            .create_folder(&new_folder(name, HOST), "alice")
            .await
            .unwrap();
        ids.push(f.id);
    }
    let [old, fresh, early, late] = ids[..] else {
        unreachable!()
    };
    for id in [old, fresh] {
        store
            .set_status(&request(id, Status::DeletePending, AuditAction::Trash))
            .await
            .unwrap();
    }
    let mut req = request(early, Status::DeletePending, AuditAction::Trash);
    req.purge_after = Some(Utc::now() - chrono::Duration::seconds(1));
    store.set_status(&req).await.unwrap();
    let mut req = request(late, Status::DeletePending, AuditAction::Trash);
    req.purge_after = Some(Utc::now() + chrono::Duration::days(30));
    store.set_status(&req).await.unwrap();
    raw.age_status(old, chrono::Duration::days(8)).await;
    raw.age_status(late, chrono::Duration::days(8)).await;
    let stored = store.get_folder(early).await.unwrap().state.unwrap();
    assert!(stored.purge_after.is_some());

    assert_eq!(
        store
            .purge_expired_trash(week, "trash-timer", 100)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .purge_expired_trash(week, "trash-timer", 100)
            .await
            .unwrap(),
        0
    );
    for (id, want) in [
        (old, Status::DeleteOngoing),
        (early, Status::DeleteOngoing),
        (fresh, Status::DeletePending),
        (late, Status::DeletePending),
    ] {
        let detail = store.get_folder(id).await.unwrap();
        assert_eq!(detail.folder.status, want, "{id}");
    }
    let audit = store
        .audit(&AuditFilter {
            id: Some(old),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let timer = audit.last().unwrap();
    assert_eq!(timer.action, "trash-timer");
    assert_eq!(timer.actor.as_deref(), Some("trash-timer"));
    assert_eq!(
        store
            .get_folder(old)
            .await
            .unwrap()
            .history
            .last()
            .unwrap()
            .actor
            .as_deref(),
        Some("trash-timer")
    );
    // A restore forgets the per-folder purge time.
    store
        .set_status(&request(late, Status::Ready, AuditAction::Restore))
        .await
        .unwrap();
    let state = store.get_folder(late).await.unwrap().state.unwrap();
    assert_eq!(state.purge_after, None);
    // The limit bounds one pass.
    raw.age_status(fresh, chrono::Duration::days(8)).await;
    store
        .set_status(&request(late, Status::DeletePending, AuditAction::Trash))
        .await
        .unwrap();
    raw.age_status(late, chrono::Duration::days(8)).await;
    assert_eq!(store.purge_expired_trash(week, "t", 1).await.unwrap(), 1);
    assert_eq!(store.purge_expired_trash(week, "t", 1).await.unwrap(), 1);
    assert_eq!(store.purge_expired_trash(week, "t", 1).await.unwrap(), 0);
}

async fn history_cleanup_removes_rows_but_keeps_the_audit(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let month = Duration::from_secs(30 * 86400);
    let old = ongoing(&store, "old", HOST).await;
    let recent = ongoing(&store, "recent", HOST).await;
    store.claim_due(&claim_request("r1")).await.unwrap();
    for id in [old, recent] {
        assert!(store.complete_removal(id, "r1", &done()).await.unwrap());
    }
    raw.age_status(old, chrono::Duration::days(31)).await;
    assert_eq!(store.clean_history(month, "history", 100).await.unwrap(), 1);
    assert_eq!(store.clean_history(month, "history", 100).await.unwrap(), 0);
    assert!(matches!(
        store.get_folder(old).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        raw.int(&format!(
            "SELECT count(*) FROM vfolder_controller_state WHERE vfolder_id = '{old}'"
        ))
        .await,
        0
    );
    assert_eq!(
        store.get_folder(recent).await.unwrap().folder.status,
        Status::DeleteComplete
    );
    assert_eq!(
        actions(&store, old).await,
        ["create", "force-delete", "removed", "history-cleanup"]
    );
}

async fn forget_works_only_from_delete_error(db: TestDb) {
    let store = db.migrated().await;
    let id = ongoing(&store, "a", HOST).await;
    let err = store.forget(id, "alice").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::NotForgettable {
                status: Status::DeleteOngoing,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        store.forget(new_id(), "alice").await,
        Err(Error::NotFound(_))
    ));
    store.claim_due(&claim_request("r1")).await.unwrap();
    assert!(store.fail_removal(id, "r1", "EIO").await.unwrap());
    store.forget(id, "alice").await.unwrap();
    assert!(matches!(
        store.get_folder(id).await,
        Err(Error::NotFound(_))
    ));
    let audit = store
        .audit(&AuditFilter {
            id: Some(id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let last = audit.last().unwrap();
    assert_eq!(last.action, "forget");
    assert_eq!(last.from_status.as_deref(), Some("delete-error"));
    assert_eq!(last.actor.as_deref(), Some("alice"));
}

async fn audit_filters_by_folder_time_and_limit(db: TestDb) {
    let store = db.migrated().await;
    let a = store
        .create_folder(&new_folder("a", HOST), "alice")
        .await
        .unwrap();
    let b = store
        .create_folder(&new_folder("b", HOST), "alice")
        .await
        .unwrap();
    store
        .set_status(&request(a.id, Status::DeletePending, AuditAction::Trash))
        .await
        .unwrap();
    store
        .set_status(&request(a.id, Status::Ready, AuditAction::Restore))
        .await
        .unwrap();
    let all = store.audit(&AuditFilter::default()).await.unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let only_b = store
        .audit(&AuditFilter {
            id: Some(b.id),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0].vfolder_id, b.id);
    let newest = store
        .audit(&AuditFilter {
            limit: Some(2),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["trash", "restore"]
    );
    let future = store
        .audit(&AuditFilter {
            since: Some(Utc::now() + chrono::Duration::minutes(1)),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert!(future.is_empty());
    let past = store
        .audit(&AuditFilter {
            since: Some(Utc::now() - chrono::Duration::minutes(1)),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(past.len(), 4);
}

async fn status_counts_and_oldest_unconverged(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let id = ongoing(&store, "a", HOST).await;
    store
        .create_folder(&new_folder("b", HOST), "alice")
        .await
        .unwrap();
    store
        .create_folder(&new_folder("c", HOST), "alice")
        .await
        .unwrap();
    let mut counts = store.status_counts().await.unwrap();
    counts.sort();
    // Small live sets are counted exactly on every backend.
    assert_eq!(
        counts,
        [
            exact_count(Status::Ready, 2),
            exact_count(Status::DeleteOngoing, 1)
        ]
    );
    raw.age_status(id, chrono::Duration::hours(2)).await;
    let ages = store
        .oldest_unconverged(Duration::from_secs(86400))
        .await
        .unwrap();
    let remove = ages.iter().find(|(k, _)| *k == "remove").unwrap().1;
    assert!(remove >= Duration::from_secs(7000), "{remove:?}");
    let timer = ages.iter().find(|(k, _)| *k == "trash-timer").unwrap().1;
    assert_eq!(timer, Duration::ZERO);
}

fn exact_count(status: Status, rows: i64) -> store::StatusCount {
    store::StatusCount {
        status,
        rows,
        exact: true,
    }
}

/// The `trash-timer` age is how long the most overdue folder in the trash has waited past its
/// purge time: its own `purge_after` when it has one (however old its status time), else its
/// status time plus the retention.
async fn the_trash_timer_age_is_that_of_the_most_overdue_purge_time(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let week = Duration::from_secs(7 * 86400);
    let trash = async |name: &str, purge_after: Option<chrono::Duration>| {
        let folder = store
            .create_folder(&new_folder(name, HOST), "alice")
            .await
            .unwrap();
        let mut req = request(folder.id, Status::DeletePending, AuditAction::Trash);
        req.purge_after = purge_after.map(|d| Utc::now() + d);
        store.set_status(&req).await.unwrap();
        folder.id
    };
    let timer_age = async || {
        let ages = store.oldest_unconverged(week).await.unwrap();
        let (_, age) = ages.into_iter().find(|(k, _)| *k == "trash-timer").unwrap();
        age.as_secs_f64()
    };
    let near = |age: f64, want: f64| (age - want).abs() < 600.0;

    // Trashed a month ago but kept until next month by its own purge time: not overdue.
    let kept = trash("kept", Some(chrono::Duration::days(30))).await;
    raw.age_status(kept, chrono::Duration::days(30)).await;
    trash("fresh", None).await;
    assert_eq!(timer_age().await, 0.0);
    // An own purge time two hours ago.
    trash("early", Some(chrono::Duration::hours(-2))).await;
    let age = timer_age().await;
    assert!(near(age, 7200.0), "{age}");
    // Trashed eight days ago with a week's retention: a day overdue, the most.
    let old = trash("old", None).await;
    raw.age_status(old, chrono::Duration::days(8)).await;
    let age = timer_age().await;
    assert!(near(age, 86400.0), "{age}");
}

async fn status_counts_of_small_sets_are_exact(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let wanted = [
        (Status::DeletePending, 4),
        (Status::DeleteOngoing, 3),
        (Status::DeleteComplete, 2),
        (Status::DeleteError, 1),
    ];
    for (status, n) in wanted {
        for i in 0..n {
            raw.insert(new_id(), &format!("{status}-{i}"), Some(status.as_str()))
                .await
                .unwrap();
        }
    }
    raw.insert(new_id(), "live", None).await.unwrap();
    let counts = store.status_counts().await.unwrap();
    for (status, n) in wanted {
        assert!(
            counts.contains(&exact_count(status, n)),
            "{status}: {counts:?}"
        );
    }
    assert!(
        counts.contains(&exact_count(Status::Ready, 1)),
        "{counts:?}"
    );
    assert!(
        !counts.iter().any(|c| c.status == Status::Cloning),
        "a status without rows is not reported: {counts:?}"
    );
}

// ----- PostgreSQL only -----------------------------------------------------------------------

/// Past `EXACT_COUNT_LIMIT` rows a live status, or the `delete-complete` history, is not
/// counted on PostgreSQL (that would read the whole set every refresh) but estimated by the
/// planner; unfinished deletions stay exact whatever their size and the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_live_and_history_sets_are_estimated_on_postgres_and_unfinished_deletions_stay_exact() {
    let db = TestDb::postgres().await;
    let store = db.migrated().await;
    let raw = db.raw().await;
    let big = 3 * store::EXACT_COUNT_LIMIT;
    let trash = store::EXACT_COUNT_LIMIT + 5;
    raw.execute(&format!(
        "INSERT INTO vfolders (id, host, name, status)
         SELECT gen_random_uuid(), 'local:volume1', 'bulk-' || g, 'ready'
         FROM generate_series(1, {big}) g;
         INSERT INTO vfolders (id, host, name, status)
         SELECT gen_random_uuid(), 'local:volume1', 'gone-' || g, 'delete-complete'
         FROM generate_series(1, {big}) g;
         INSERT INTO vfolders (id, host, name, status)
         SELECT gen_random_uuid(), 'local:volume1', 'trashed-' || g, 'delete-pending'
         FROM generate_series(1, {trash}) g;
         INSERT INTO vfolders (id, host, name, status)
         SELECT gen_random_uuid(), 'local:volume1', 'failed-' || g, 'delete-error'
         FROM generate_series(1, 7) g;
         INSERT INTO vfolders (id, host, name, status)
         VALUES (gen_random_uuid(), 'local:volume1', 'busy', 'performing');
         ANALYZE vfolders;"
    ))
    .await
    .unwrap();
    let counts = store.status_counts().await.unwrap();
    for status in [Status::Ready, Status::DeleteComplete] {
        let count = counts
            .iter()
            .find(|c| c.status == status)
            .unwrap_or_else(|| panic!("{status} is reported: {counts:?}"));
        assert!(!count.exact, "{count:?}");
        // After ANALYZE the estimate is close (the whole table was sampled).
        let error = (count.rows - big).abs();
        assert!(
            error <= big / 20,
            "{status}: estimate {} for {big} rows",
            count.rows
        );
    }
    assert!(
        counts.contains(&exact_count(Status::DeletePending, trash)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&exact_count(Status::DeleteError, 7)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&exact_count(Status::Performing, 1)),
        "{counts:?}"
    );
}

/// On an adopted table the unconverged ages count from the adoption at the earliest: a status
/// time before it, or none at all, is not trusted (a removal without one counts from its
/// creation). Only PostgreSQL tables are adopted; the adoption is stood in for by its clock,
/// `vfolder_controller_meta.adopted_at`, set after the rows were written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconverged_ages_count_from_the_adoption_at_the_earliest() {
    let db = TestDb::postgres().await;
    let store = db.migrated().await;
    let raw = db.raw().await;
    let week = Duration::from_secs(7 * 86400);
    let recent = trashed(&store, "recent", HOST).await;
    let untimed = trashed(&store, "untimed", HOST).await;
    let removal = ongoing(&store, "removal", HOST).await;
    let old_removal = ongoing(&store, "old-removal", HOST).await;
    raw.execute(&format!(
        "UPDATE vfolder_controller_meta SET mode = 'adopted', adopted_at = now() - interval '10 days';
         UPDATE vfolders SET status_changed = now() - interval '9 days' WHERE id = '{recent}';
         UPDATE vfolders SET status_changed = NULL, created_at = now() - interval '5 days'
         WHERE id = '{removal}';"
    ))
    .await
    .unwrap();
    let ages = async || {
        let ages: BTreeMap<_, _> = store
            .oldest_unconverged(week)
            .await
            .unwrap()
            .into_iter()
            .map(|(kind, age)| (kind, (age.as_secs_f64() / 86400.0 * 10.0).round() / 10.0))
            .collect();
        (ages["remove"], ages["trash-timer"])
    };
    // Times after the adoption are trusted: trashed 9 days ago, 2 days overdue; a removal
    // without a time, created 5 days ago.
    assert_eq!(ages().await, (5.0, 2.0));
    // No time, or one from two years ago: counted from the adoption 10 days ago.
    raw.execute(&format!(
        "UPDATE vfolders SET status_changed = NULL WHERE id = '{untimed}';
         UPDATE vfolders SET status_changed = now() - interval '2 years' WHERE id = '{old_removal}';"
    ))
    .await
    .unwrap();
    assert_eq!(ages().await, (10.0, 3.0));
    raw.execute(&format!(
        "UPDATE vfolders SET status_changed = now() - interval '2 years' WHERE id = '{untimed}'"
    ))
    .await
    .unwrap();
    assert_eq!(ages().await, (10.0, 3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_payload_follows_a_raw_update() {
    use futures::StreamExt;
    let db = TestDb::postgres().await;
    let store = db.migrated().await;
    let raw = db.raw().await;
    let common::Raw::Pg(pool) = &raw else {
        unreachable!()
    };
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .unwrap();
    listener.listen(store::EVENT_CHANNEL).await.unwrap();
    let mut events = store
        .subscribe()
        .await
        .unwrap()
        .expect("PostgreSQL has events");
    let id = new_id();
    raw.insert(id, "notified", None).await.unwrap();
    raw.set_status(id, "delete-pending").await.unwrap();
    raw.set_status(id, "delete-pending").await.unwrap(); // no-op: no event
    raw.set_status(id, "ready").await.unwrap();

    let mut seen: Vec<(Option<RowStatus>, RowStatus)> = Vec::new();
    for _ in 0..3 {
        let n = listener.recv().await.unwrap();
        let event: store::StatusEvent = serde_json::from_str(n.payload()).unwrap();
        assert_eq!(event.id, id);
        seen.push((event.from, event.to));
    }
    let expected = vec![
        (None, Status::Ready.into()),
        (Some(Status::Ready.into()), Status::DeletePending.into()),
        (Some(Status::DeletePending.into()), Status::Ready.into()),
    ];
    assert_eq!(seen, expected);
    let mut from_store = Vec::new();
    for _ in 0..3 {
        let e = events.next().await.unwrap().unwrap();
        from_store.push((e.from, e.to));
    }
    assert_eq!(from_store, expected);
    // A broken listener connection ends the stream with an error.
    raw.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'
           AND pid <> pg_backend_pid()",
    )
    .await
    .unwrap();
    let end = events.next().await;
    assert!(matches!(end, Some(Err(_))), "{end:?}");
}

/// A claim for volumes whose trash is in place does not read the trash: the move branch of
/// the claim is switched off by its parameter before anything is read. Without that it read
/// every `delete-pending` row on every claim (tens of milliseconds with a large trash). The
/// index reads are counted in one session, whose statistics are flushed on demand; the same
/// claim with the volume moving its trash reads them all, so the count can tell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_no_trash_when_nothing_is_moved() {
    use sqlx::Connection;
    let db = TestDb::postgres().await;
    db.migrated().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let trash = 2_000_i64;
    sqlx::raw_sql(&format!(
        "ALTER TABLE vfolders DISABLE TRIGGER USER;
         INSERT INTO vfolders (id, host, name, status, status_changed)
         SELECT gen_random_uuid(), '{MOVE_HOST}', 't' || i, 'delete-pending', now()
         FROM generate_series(1, {trash}) AS i;
         INSERT INTO vfolder_controller_state (vfolder_id, location)
         SELECT id, 'trash' FROM vfolders;
         ALTER TABLE vfolders ENABLE TRIGGER USER;"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    let mut index_reads = async |move_hosts: &[&str]| -> i64 {
        let claimed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM vfolder_controller_claim($1, $2, '{}', 16, 'r1', 60)",
        )
        .bind([MOVE_HOST])
        .bind(move_hosts)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(claimed, 0, "everything in the trash is already moved");
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query_scalar(
            "SELECT idx_tup_read FROM pg_stat_user_indexes
             WHERE indexrelname = 'vfolders_status_changed_idx'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    let before = index_reads(&[]).await;
    let in_place = index_reads(&[]).await - before;
    let moving = index_reads(&[MOVE_HOST]).await - before - in_place;
    assert_eq!(in_place, 0, "an in-place claim read the trash");
    assert!(
        moving >= trash,
        "the count missed the trash reads ({moving})"
    );
}

/// Ends every other session of the test database (as a server restart or a failover would
/// end the store's pooled connections) and waits until they are gone; returns how many.
async fn end_other_sessions(db: &TestDb) -> i64 {
    use sqlx::Connection;
    let mut killer = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut ended = None;
    for _ in 0..200 {
        // Each pass ends whatever is still there and counts it; the first pass's count is
        // how many there were.
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'",
        )
        .fetch_one(&mut killer)
        .await
        .unwrap();
        let first = *ended.get_or_insert(left);
        if left == 0 {
            return first;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the ended sessions did not go");
}

/// Pooled connections are not pinged when they were used moments ago (a round trip per
/// statement saved), only when they sat idle: a connection the server ended while it was
/// idle is replaced without an error, and one it ended just after its last statement costs
/// that connection's next statement, never more, with an error the controller retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_the_server_ended_are_replaced() {
    let db = TestDb::postgres().await;
    let store = db.migrated().await;
    store.claim_due(&claim_request("r1")).await.unwrap();
    assert!(
        end_other_sessions(&db).await > 0,
        "the store kept no connection"
    );
    // Idle longer than the ping threshold: checked on the way out of the pool.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let id = ongoing(&store, "after-restart", HOST).await;
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.folder.id).collect::<Vec<_>>(), [id]);

    // Used moments ago: not checked; each ended connection fails one statement at most.
    store.release_lease(id, "r1").await.unwrap();
    let ended = end_other_sessions(&db).await;
    let mut failures = 0;
    let claims = loop {
        match store.claim_due(&claim_request("r2")).await {
            Ok(claims) => break claims,
            Err(error) => {
                failures += 1;
                assert!(
                    failures <= ended,
                    "{failures} failures for {ended} connections: {error}"
                );
                // The controller retries such a failure (completions) or backs off and claims
                // again (claims): it is never a folder's error.
                assert!(error.is_transient(), "{error}");
            }
        }
    };
    assert_eq!(claims.iter().map(|c| c.folder.id).collect::<Vec<_>>(), [id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimants_never_claim_the_same_row_twice() {
    let db = TestDb::postgres().await;
    let store = db.migrated().await;
    let raw = db.raw().await;
    let rows = 300;
    raw.execute(&format!(
        "INSERT INTO vfolders (id, host, name, status)
         SELECT gen_random_uuid(), '{HOST}', 'f' || i, 'delete-ongoing'
         FROM generate_series(1, {rows}) AS i"
    ))
    .await
    .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let mut req = claim_request(&format!("r{worker}"));
                req.limit = 7;
                let claims = store.claim_due(&req).await.unwrap();
                if claims.is_empty() {
                    return mine;
                }
                mine.extend(claims.into_iter().map(|c| c.folder.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = tasks.join_next().await {
        all.extend(mine.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a row was claimed twice");
    assert_eq!(all.len(), rows);
}

conformance!(the_database_has_the_last_word_on_transitions);

/// When the database's table and the program disagree (a race with another writer, or a
/// table edited by an operator), the trigger's rejection comes back as `IllegalTransition`.
async fn the_database_has_the_last_word_on_transitions(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let folder = store
        .create_folder(&new_folder("race", HOST), "alice")
        .await
        .unwrap();
    raw.execute(
        "DELETE FROM vfolder_status_transitions
         WHERE from_status = 'ready' AND to_status = 'performing'",
    )
    .await
    .unwrap();
    let err = store
        // The audit label is irrelevant here: the trigger rejects the write first.
        .set_status(&request(folder.id, Status::Performing, AuditAction::Trash))
        .await
        .unwrap_err();
    match err {
        Error::IllegalTransition { id, source } => {
            assert_eq!(id, folder.id);
            assert_eq!(
                (source.from, source.to),
                (Status::Ready, Status::Performing)
            );
        }
        other => panic!("expected IllegalTransition, got {other}"),
    }
    let detail = store.get_folder(folder.id).await.unwrap();
    assert_eq!(detail.folder.status, Status::Ready);
    assert_eq!(actions(&store, folder.id).await, ["create"]);
}

// ----- connecting ----------------------------------------------------------------------------

#[tokio::test]
async fn connect_chooses_the_backend_by_url_scheme_and_creates_the_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.db");
    let store = store::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    assert!(file.exists());
    store.migrate(false).await.unwrap();
    store.check_ready().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");

    let db = TestDb::postgres().await;
    assert_eq!(db.store().await.backend(), "postgres");

    let err = store::connect("mysql://localhost/x").await.err().unwrap();
    assert!(matches!(err, Error::UnsupportedUrl(_)), "{err}");
    let err = store::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .err()
        .unwrap();
    assert!(matches!(err, Error::Database { .. }), "{err}");
    assert!(err.is_transient(), "{err}");
}

// ----- one bad row never stops the others ----------------------------------------------------

conformance!(
    a_status_change_records_an_entry_whatever_the_history_holds,
    an_unknown_trash_time_starts_when_the_controller_first_sees_the_row,
    enum_name_spellings_are_stored_canonically,
);

/// A history that is not a list (an object, a scalar, on SQLite text that is not JSON) gets
/// the change recorded the same way on both backends: the old value is kept as the first
/// element of a list, the entry follows; the removal completes and `show` reads it.
async fn a_status_change_records_an_entry_whatever_the_history_holds(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let odd = match db.backend {
        Backend::Postgres => vec![r#"{}"#, r#""a string""#],
        // Stored before the row checks existed.
        Backend::Sqlite => vec![r#"{}"#, r#""a string""#, "not json at all"],
    };
    if db.backend == Backend::Sqlite {
        raw.execute("DROP TRIGGER vfolders_valid_update")
            .await
            .unwrap();
    }
    for (i, history) in odd.into_iter().enumerate() {
        let id = ongoing(&store, &format!("odd-history-{i}"), HOST).await;
        let quoted = history.replace('\'', "''");
        let value = match db.backend {
            Backend::Postgres => format!("'{quoted}'::jsonb"),
            Backend::Sqlite => format!("'{quoted}'"),
        };
        raw.execute(&format!(
            "UPDATE vfolders SET status_history = {value} WHERE id = '{id}'"
        ))
        .await
        .unwrap();
        let claims = store.claim_due(&claim_request("r1")).await.unwrap();
        assert!(claims.iter().any(|c| c.folder.id == id), "{history}");
        let done = store.complete_removal(id, "r1", &done()).await.unwrap();
        assert!(done, "{history}: the removal did not complete");
        let text = raw
            .text(&format!(
                "SELECT CAST(status_history AS text) FROM vfolders WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        let list = list.as_array().expect("a list again");
        assert_eq!(list.len(), 2, "{history}: {text}");
        assert_eq!(list[1]["status"], "delete-complete", "{text}");
        // show reads it, marked as unreadable and shown raw.
        let detail = store.get_folder(id).await.unwrap();
        assert!(
            matches!(detail.history_shape, store::HistoryShape::Unreadable(_)),
            "{:?}",
            detail.history_shape
        );
    }
}

/// A `delete-pending` row whose `status_changed` was set to NULL is neither purged at once
/// nor counted overdue for ever: its trash time starts when the trash timer first sees it.
async fn an_unknown_trash_time_starts_when_the_controller_first_sees_the_row(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let folder = trashed(&store, "null-time", HOST).await;
    raw.age_status(folder, chrono::Duration::days(400)).await;
    raw.execute(&format!(
        "UPDATE vfolders SET status_changed = NULL WHERE id = '{folder}'"
    ))
    .await
    .unwrap();
    let retention = Duration::from_secs(3600);
    assert_eq!(
        store
            .purge_expired_trash(retention, "timer", 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(raw.status(folder).await, "delete-pending");
    assert!(raw.status_changed(folder).await.is_some(), "not stamped");
    let ages = store.oldest_unconverged(retention).await.unwrap();
    assert_eq!(
        ages.iter()
            .find(|(k, _)| *k == "trash-timer")
            .map(|(_, d)| *d),
        Some(Duration::ZERO),
        "counted overdue: {ages:?}"
    );
    // Once the full retention has passed since it was first seen, it is purged.
    raw.age_status(folder, chrono::Duration::hours(2)).await;
    assert_eq!(
        store
            .purge_expired_trash(retention, "timer", 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(raw.status(folder).await, "delete-ongoing");
}

/// The database holds canonical statuses only: an enum-name spelling is stored as the status
/// it names, so the claim and the timers see it.
async fn enum_name_spellings_are_stored_canonically(db: TestDb) {
    let store = db.migrated().await;
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "enum-name", Some("DELETE_PENDING"))
        .await
        .unwrap();
    assert_eq!(raw.status(id).await, "delete-pending");
    raw.set_status(id, "DELETE_ONGOING").await.unwrap();
    assert_eq!(raw.status(id).await, "delete-ongoing");
    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    assert!(claims.iter().any(|c| c.folder.id == id));
    let err = raw.set_status(id, "READY").await.unwrap_err();
    assert!(
        err.contains("illegal vfolder status transition: delete-ongoing -> ready"),
        "{err}"
    );
}

/// SQLite rows that cannot be read (stored before the row checks existed) are skipped by
/// lists and parked by claims, named in the log and counted; every other row goes on. Rows
/// in SQLite's own time format or with a name that is not UTF-8 are read as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_rows_that_cannot_be_read_are_isolated() {
    let db = TestDb::sqlite().await;
    let store = db.migrated().await;
    let raw = db.raw().await;
    raw.execute("DROP TRIGGER vfolders_valid_insert")
        .await
        .unwrap();
    let good = ongoing(&store, "good", HOST).await;
    let bad_id = "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz";
    let bad_user = new_id();
    let sqlite_time = new_id();
    let not_utf8 = new_id();
    raw.execute(&format!(
        r#"INSERT INTO vfolders (id, host, name, status) VALUES ('{bad_id}', '{HOST}', 'bad-id', 'delete-ongoing');
           INSERT INTO vfolders (id, host, name, "user", status) VALUES ('{bad_user}', '{HOST}', 'bad-user', 'not-a-uuid', 'delete-ongoing');
           INSERT INTO vfolders (id, host, name, status, created_at) VALUES ('{sqlite_time}', '{HOST}', 'sqlite-time', 'delete-ongoing', datetime('now'));
           INSERT INTO vfolders (id, host, name, status) VALUES ('{not_utf8}', '{HOST}', CAST(X'6e616d65ff' AS TEXT), 'delete-ongoing');"#
    ))
    .await
    .unwrap();

    let listed = store
        .list_folders(&[Status::DeleteOngoing], false)
        .await
        .unwrap();
    let ids: BTreeSet<_> = listed.iter().map(|f| f.id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([good, sqlite_time, not_utf8]),
        "the readable rows, and only them"
    );
    assert!(listed.iter().any(|f| f.name == "name\u{fffd}"));

    let claims = store.claim_due(&claim_request("r1")).await.unwrap();
    let claimed: BTreeSet<_> = claims.iter().map(|c| c.folder.id).collect();
    assert_eq!(claimed, BTreeSet::from([good, sqlite_time, not_utf8]));
    assert_eq!(store.unreadable_rows().await.unwrap(), 2);
    let reason = raw
        .text(&format!(
            "SELECT last_error FROM vfolder_controller_state WHERE vfolder_id = '{bad_user}'"
        ))
        .await
        .unwrap();
    assert!(reason.contains("row cannot be read, parked"), "{reason}");
    // Parked rows are not claimed again meanwhile, by anyone; the database is fine.
    assert!(
        store
            .claim_due(&claim_request("r2"))
            .await
            .unwrap()
            .is_empty()
    );
    store.check_ready().await.unwrap();
    // Once fixed (and its hour is up), a parked row reads and leaves the parking.
    raw.execute(&format!(
        r#"UPDATE vfolders SET "user" = NULL WHERE id = '{bad_user}';
           UPDATE vfolder_controller_state SET next_attempt_at = NULL WHERE vfolder_id = '{bad_user}'"#
    ))
    .await
    .unwrap();
    let claims = store.claim_due(&claim_request("r2")).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(store.unreadable_rows().await.unwrap(), 1);
}

/// New writes cannot store what the program cannot read (SQLite has no types to refuse it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_refuses_values_it_could_not_read() {
    let db = TestDb::sqlite().await;
    let _store = db.migrated().await;
    let raw = db.raw().await;
    let id = new_id();
    raw.insert(id, "checked", None).await.unwrap();
    for sql in [
        format!(
            "INSERT INTO vfolders (id, host, name) VALUES ('ZZZZZZZZ-0000-0000-0000-000000000000', '{HOST}', 'x')"
        ),
        format!(
            "INSERT INTO vfolders (id, host, name, status_changed) VALUES ('{}', '{HOST}', 'y', datetime('now'))",
            new_id()
        ),
        format!(r#"UPDATE vfolders SET "user" = 'bogus' WHERE id = '{id}'"#),
        format!("UPDATE vfolders SET status_history = 'not json' WHERE id = '{id}'"),
        format!("UPDATE vfolders SET status_changed = datetime('now') WHERE id = '{id}'"),
    ] {
        let err = raw.execute(&sql).await.unwrap_err();
        assert!(err.contains("invalid vfolder row"), "{sql}: {err}");
    }
}
