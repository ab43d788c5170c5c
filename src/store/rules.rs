//! The store's transaction rules, written once for every backend.
//!
//! Each multi-statement change (a requested status change, forgetting a row, the end of a
//! removal, a trash move, a new row) is a sequence of steps that must hold together; the
//! steps are written here over [`Tx`], an open write transaction with one method per SQL
//! statement, which each backend implements in its own dialect (`postgres.rs`, `sqlite.rs`).
//! The backends hold only what truly differs: SQL text, types, locking, LISTEN.
//!
//! Guarantees (the conformance suite in `tests/it/store.rs` runs them on both backends):
//! - The row is locked (PostgreSQL `FOR UPDATE`; SQLite's write transaction) before it is
//!   checked, so the check and the write are one decision.
//! - Every change writes exactly one audit entry, in the same transaction as the change.
//! - Only the lease holder may finish a removal or record a trash move; for anyone else
//!   these are no-ops that return `false`.
//! - Writing the status a row already has is a no-op: no history, no audit, no event.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    AuditAction, Completion, Counts, Error, Folder, Location, NewAudit, NewFolder, Result,
    Sighting, StatusChange, StatusRequest, TombstoneEnd, TombstoneRemoval,
};
use crate::lifecycle::{SchemaMode, Status};

/// A locked row: what the rules check and what the audit entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Locked {
    /// Its status (a status the controller does not own is [`Error::UnknownStatus`]).
    pub status: Status,
    /// Its host.
    pub host: String,
    /// Its name.
    pub name: String,
}

/// A locked tombstone: what its audit entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockedTombstone {
    /// The deleted row's id.
    pub vfolder_id: Uuid,
    /// Its host.
    pub host: Option<String>,
    /// Its name (cut to the audit log's width).
    pub name: Option<String>,
    /// Its status when it was deleted.
    pub status: Option<String>,
}

/// An open write transaction of a backend: one method per statement. Dropping it without
/// [`Tx::commit`] rolls back.
#[async_trait]
pub(crate) trait Tx: Send + Sized {
    /// Locks the row; [`Error::NotFound`] when there is none.
    async fn lock_folder(&mut self, id: Uuid) -> Result<Locked>;

    /// Locks those of the rows `ids` whose lease `owner` holds, with their controller state,
    /// in id order (so two lockers of overlapping sets cannot deadlock); the others are
    /// left out.
    async fn lock_leased(&mut self, ids: &[Uuid], owner: &str) -> Result<Vec<(Uuid, Locked)>>;

    /// Writes status `to` on every row of `rows` (id, name), with `actor` for the trigger's
    /// history entry. The trigger's rejection maps to [`Error::IllegalTransition`], the name
    /// index to [`Error::NameTaken`], both naming the first row: only single-row writes can
    /// be refused (a batch is the end of removals, which the lifecycle always allows).
    async fn write_status(&mut self, rows: &[(Uuid, &str)], to: Status, actor: &str) -> Result<()>;

    /// Inserts a new row as `actor` and reads it back.
    async fn insert_folder(&mut self, new: &NewFolder, actor: &str) -> Result<Folder>;

    /// Deletes the row (its controller state goes with it) as `actor`, naming the deletion
    /// `action` for the tombstone trigger, which then leaves the audit entry to the caller.
    async fn delete_folder(&mut self, id: Uuid, actor: &str, action: &str) -> Result<()>;

    /// The controller state after a requested change `from → to`: a trash gets its
    /// per-folder purge time, a restore forgets it, a retry counts attempts afresh (the
    /// operator fixed the cause).
    async fn note_status_change(
        &mut self,
        id: Uuid,
        from: Status,
        to: Status,
        purge_after: Option<DateTime<Utc>>,
    ) -> Result<()>;

    /// The controller state at the end of removals: leases released, next attempts cleared,
    /// attempts reset when `complete`, each folder's error text and final counts stored.
    async fn finish_state(&mut self, ended: &[Ended<'_>], complete: bool) -> Result<()>;

    /// The controller state after a trash move or restore: the data's place, lease released.
    async fn set_location(&mut self, id: Uuid, location: Location) -> Result<()>;

    /// Locks a tombstone whose removal is pending and whose lease `owner` holds; `None`
    /// otherwise.
    async fn lock_tombstone(&mut self, seq: i64, owner: &str) -> Result<Option<LockedTombstone>>;

    /// Ends a tombstone's removal: its final state, error and counts, lease released.
    async fn finish_tombstone_state(
        &mut self,
        seq: i64,
        removal: TombstoneRemoval,
        error: Option<&str>,
        counts: Counts,
    ) -> Result<()>;

    /// Ends the sighting of a reclaimed orphan.
    async fn end_sighting(&mut self, host: &str, path: &str) -> Result<()>;

    /// Appends audit entries, in order.
    async fn insert_audits(&mut self, audits: &[NewAudit<'_>]) -> Result<()>;

    /// Commits; `context` names the change in an error.
    async fn commit(self, context: &'static str) -> Result<()>;
}

/// One folder's end of a removal, for its controller state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ended<'a> {
    /// The folder.
    pub id: Uuid,
    /// Why it failed; `None` when it completed.
    pub error: Option<&'a str>,
    /// What was removed in all.
    pub progress: Counts,
}

/// A requested status change ([`StatusRequest::check`] decides under the row lock).
pub(crate) async fn set_status(mut tx: impl Tx, req: &StatusRequest) -> Result<StatusChange> {
    let row = tx.lock_folder(req.id).await?;
    let change = check(req, row.status)?;
    if !change.changed {
        return Ok(change);
    }
    tx.write_status(&[(req.id, &row.name)], req.to, &req.actor)
        .await?;
    tx.note_status_change(req.id, row.status, req.to, req.purge_after)
        .await?;
    tx.insert_audits(&[NewAudit {
        host: Some(&row.host),
        name: Some(&row.name),
        from_status: Some(row.status.as_str()),
        to_status: Some(req.to.as_str()),
        actor: Some(&req.actor),
        ..NewAudit::new(req.id, req.action)
    }])
    .await?;
    tx.commit("committing a status change").await?;
    Ok(change)
}

/// Decides what writing `req` over a row in status `from` means: a no-op (`changed: false`),
/// a change, or an error. Called under the row lock, so the lifecycle check and the caller's
/// expectation ([`StatusRequest::expect_from`]) are one atomic decision.
fn check(req: &StatusRequest, from: Status) -> Result<StatusChange> {
    let change = StatusChange {
        id: req.id,
        from,
        to: req.to,
        changed: from != req.to,
    };
    if !change.changed {
        return Ok(change);
    }
    from.transition_to(req.to)
        .map_err(|source| Error::IllegalTransition { id: req.id, source })?;
    if !req.expect_from.is_empty() && !req.expect_from.contains(&from) {
        return Err(Error::UnexpectedStatus {
            id: req.id,
            status: from,
            action: req.action,
        });
    }
    Ok(change)
}

/// Removes a `delete-error` row after manual cleanup; the audit entry stays.
pub(crate) async fn forget(mut tx: impl Tx, id: Uuid, actor: &str) -> Result<()> {
    let row = tx.lock_folder(id).await?;
    if row.status != Status::DeleteError {
        return Err(Error::NotForgettable {
            id,
            status: row.status,
        });
    }
    tx.delete_folder(id, actor, "forget").await?;
    tx.insert_audits(&[NewAudit {
        host: Some(&row.host),
        name: Some(&row.name),
        from_status: Some(row.status.as_str()),
        actor: Some(actor),
        ..NewAudit::new(id, AuditAction::Forget)
    }])
    .await?;
    tx.commit("committing forget").await
}

/// The lease-guarded end of removals: `delete-ongoing → to` for every folder of `audits`
/// (one entry each, naming the action and carrying the counts or the error), with its state
/// and its audit entry, all in one transaction whose statements each cover the whole batch.
/// Returns one flag per entry, in order: `false` where `owner` lost the lease, the row moved
/// on or is gone, or the id came earlier in the batch. A folder's flag and writes depend on
/// its own row alone, never on the others in the batch.
async fn finish_removals(
    mut tx: impl Tx,
    owner: &str,
    to: Status,
    audits: &[NewAudit<'_>],
) -> Result<Vec<bool>> {
    let ids: Vec<Uuid> = audits.iter().map(|a| a.vfolder_id).collect();
    let mut ongoing: HashMap<Uuid, Locked> = tx
        .lock_leased(&ids, owner)
        .await?
        .into_iter()
        .filter(|(_, row)| row.status == Status::DeleteOngoing)
        .collect();
    // Each entry takes its row out of the map, so a repeated id ends its folder only once.
    let taken: Vec<Option<(&NewAudit<'_>, Locked)>> = audits
        .iter()
        .map(|a| ongoing.remove(&a.vfolder_id).map(|row| (a, row)))
        .collect();
    let ended: Vec<&(&NewAudit<'_>, Locked)> = taken.iter().flatten().collect();
    if ended.is_empty() {
        return Ok(vec![false; audits.len()]);
    }
    let rows: Vec<(Uuid, &str)> = ended
        .iter()
        .map(|(a, row)| (a.vfolder_id, row.name.as_str()))
        .collect();
    tx.write_status(&rows, to, owner).await?;
    let states: Vec<Ended<'_>> = ended
        .iter()
        .map(|(a, _)| Ended {
            id: a.vfolder_id,
            error: a.error,
            progress: a.progress.unwrap_or_default(),
        })
        .collect();
    tx.finish_state(&states, to == Status::DeleteComplete)
        .await?;
    let entries: Vec<NewAudit<'_>> = ended
        .iter()
        .map(|(a, row)| NewAudit {
            host: Some(&row.host),
            name: Some(&row.name),
            from_status: Some(Status::DeleteOngoing.as_str()),
            to_status: Some(to.as_str()),
            actor: Some(owner),
            replica: Some(owner),
            ..(*a).clone()
        })
        .collect();
    tx.insert_audits(&entries).await?;
    tx.commit("committing removal results").await?;
    Ok(taken.iter().map(Option::is_some).collect())
}

/// `delete-ongoing → delete-complete` for each folder of `done`, with its counts and
/// duration in its audit entry (see [`finish_removals`] for the batch's guarantees).
pub(crate) async fn complete_removals(
    tx: impl Tx,
    owner: &str,
    done: &[(Uuid, Completion)],
) -> Result<Vec<bool>> {
    let audits: Vec<NewAudit<'_>> = done
        .iter()
        .map(|(id, done)| NewAudit {
            progress: Some(done.progress),
            duration_ms: Some(i64::try_from(done.duration.as_millis()).unwrap_or(i64::MAX)),
            ..NewAudit::new(*id, AuditAction::Removed)
        })
        .collect();
    finish_removals(tx, owner, Status::DeleteComplete, &audits).await
}

/// `delete-ongoing → delete-error` with the error in the state and the audit entry.
pub(crate) async fn fail_removal(tx: impl Tx, id: Uuid, owner: &str, error: &str) -> Result<bool> {
    let audit = NewAudit {
        error: Some(error),
        ..NewAudit::new(id, AuditAction::RemoveFailed)
    };
    let done = finish_removals(tx, owner, Status::DeleteError, &[audit]).await?;
    Ok(done.first().copied().unwrap_or(false))
}

/// Records that the data now is at `location`, audits it and releases the lease. `false`
/// when `owner` lost the lease.
pub(crate) async fn record_location(
    mut tx: impl Tx,
    id: Uuid,
    owner: &str,
    location: Location,
) -> Result<bool> {
    let Some((_, row)) = tx.lock_leased(&[id], owner).await?.pop() else {
        return Ok(false);
    };
    tx.set_location(id, location).await?;
    tx.insert_audits(&[NewAudit {
        host: Some(&row.host),
        name: Some(&row.name),
        from_status: Some(row.status.as_str()),
        to_status: Some(row.status.as_str()),
        actor: Some(owner),
        replica: Some(owner),
        ..NewAudit::new(id, super::location_action(location))
    }])
    .await?;
    tx.commit("committing a location").await?;
    Ok(true)
}

/// Inserts a row in `ready` and audits `create`. Refused on an adopted table: the platform
/// creates folders and fills columns the controller does not know.
pub(crate) async fn create_folder(
    mut tx: impl Tx,
    mode: SchemaMode,
    new: &NewFolder,
    actor: &str,
) -> Result<Folder> {
    if mode == SchemaMode::Adopted {
        return Err(Error::AdoptedTable(
            "folders are created by the platform, which fills columns the controller does not know",
        ));
    }
    let folder = tx.insert_folder(new, actor).await?;
    tx.insert_audits(&[NewAudit {
        host: Some(&new.host),
        name: Some(&new.name),
        to_status: Some(folder.status.as_str()),
        actor: Some(actor),
        ..NewAudit::new(new.id, AuditAction::Create)
    }])
    .await?;
    tx.commit("committing a new vfolder").await?;
    Ok(folder)
}

/// Ends a pending tombstone's removal with its audit entry, and releases its lease. `false`
/// when `owner` no longer holds the lease.
pub(crate) async fn finish_tombstone(
    mut tx: impl Tx,
    seq: i64,
    owner: &str,
    end: &TombstoneEnd,
) -> Result<bool> {
    let Some(row) = tx.lock_tombstone(seq, owner).await? else {
        return Ok(false);
    };
    let audit = super::tombstone_audit(row.vfolder_id, end);
    tx.finish_tombstone_state(
        seq,
        super::tombstone_end_removal(end),
        audit.error,
        audit.progress.unwrap_or_default(),
    )
    .await?;
    tx.insert_audits(&[NewAudit {
        host: row.host.as_deref(),
        name: row.name.as_deref(),
        from_status: row.status.as_deref(),
        actor: Some(owner),
        replica: Some(owner),
        ..audit
    }])
    .await?;
    tx.commit("committing a tombstone result").await?;
    Ok(true)
}

/// Records a reclaimed orphan: its audit entry and the end of its sighting, together.
pub(crate) async fn record_reclaim(
    mut tx: impl Tx,
    sighting: &Sighting,
    done: &Completion,
    actor: &str,
) -> Result<()> {
    tx.insert_audits(&[super::reclaim_audit(sighting, done, actor)])
        .await?;
    tx.end_sighting(&sighting.host, &sighting.seen.path).await?;
    tx.commit("committing a reclaim").await
}
