-- Deleted rows are recorded, never silently forgotten (the PostgreSQL migration of the same
-- number explains the tables; this is the same schema in SQLite's representation).
--
-- SQLite triggers cannot read session settings, so the controller's own deletes (history
-- cleanup, forget) name their action in `vfolder_actor.delete_action` inside their
-- transaction, like the actor; the trigger then writes the tombstone only, since those
-- actions write their own audit entry.

ALTER TABLE vfolder_actor ADD COLUMN delete_action text NULL;

CREATE TABLE vfolder_tombstones (
    seq integer PRIMARY KEY AUTOINCREMENT,
    vfolder_id text NOT NULL,
    host text NULL,
    quota_scope_id text NULL,
    name text NULL,
    status text NULL,
    actor text NULL,
    cause text NOT NULL,
    deleted_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    removal text NOT NULL
        CHECK (removal IN ('none', 'pending', 'removed', 'failed', 'superseded')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at text NULL,
    last_error text NULL,
    lease_owner text NULL,
    lease_expires_at text NULL,
    files integer NOT NULL DEFAULT 0,
    dirs integer NOT NULL DEFAULT 0,
    symlinks integer NOT NULL DEFAULT 0,
    bytes integer NOT NULL DEFAULT 0,
    finished_at text NULL
);
CREATE INDEX vfolder_tombstones_vfolder_idx ON vfolder_tombstones (vfolder_id, seq);
CREATE INDEX vfolder_tombstones_pending_idx ON vfolder_tombstones (host, deleted_at)
    WHERE removal = 'pending';
CREATE INDEX vfolder_tombstones_deleted_at_idx ON vfolder_tombstones (deleted_at);

-- BEFORE DELETE: the controller state is removed by an AFTER DELETE trigger, and its lease
-- and progress pass to the tombstone.
CREATE TRIGGER vfolders_tombstone BEFORE DELETE ON vfolders
BEGIN
    INSERT INTO vfolder_tombstones (vfolder_id, host, quota_scope_id, name, status, actor, cause,
        removal, attempts, lease_owner, lease_expires_at, files, dirs, symlinks, bytes)
    SELECT OLD.id, OLD.host, OLD.quota_scope_id, OLD.name, OLD.status, a.actor,
        coalesce(a.delete_action,
                 CASE WHEN OLD.status = 'delete-ongoing' AND coalesce(s.live, 0)
                      THEN 'row-deleted-during-removal' ELSE 'row-deleted' END),
        CASE WHEN OLD.status = 'delete-ongoing' THEN 'pending' ELSE 'none' END,
        coalesce(s.attempts, 0),
        CASE WHEN OLD.status = 'delete-ongoing' AND coalesce(s.live, 0) THEN s.lease_owner END,
        CASE WHEN OLD.status = 'delete-ongoing' AND coalesce(s.live, 0) THEN s.lease_expires_at END,
        coalesce(s.files, 0), coalesce(s.dirs, 0), coalesce(s.symlinks, 0), coalesce(s.bytes, 0)
    FROM (SELECT 1) AS one
    LEFT JOIN vfolder_actor a ON a.id = 1
    LEFT JOIN (SELECT *, (lease_owner IS NOT NULL
                          AND lease_expires_at > strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) AS live
               FROM vfolder_controller_state) AS s ON s.vfolder_id = OLD.id;
    INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, actor, error)
    SELECT OLD.id, OLD.host, OLD.name, t.cause, OLD.status, t.actor,
        CASE WHEN t.cause = 'row-deleted-during-removal'
             THEN 'row deleted during removal (lease of ' || t.lease_owner
                  || '); the controller finishes the removal from the tombstone'
             WHEN OLD.status = 'delete-ongoing'
             THEN 'the controller finishes the removal from the tombstone' END
    FROM vfolder_tombstones t
    WHERE t.seq = last_insert_rowid()
      AND (SELECT delete_action FROM vfolder_actor WHERE id = 1) IS NULL;
END;

CREATE TABLE vfolder_orphan_sightings (
    host text NOT NULL,
    path text NOT NULL,
    vfolder_id text NOT NULL,
    scope text NULL,
    trash integer NOT NULL CHECK (trash IN (0, 1)),
    first_seen text NOT NULL,
    last_seen text NOT NULL,
    scans integer NOT NULL DEFAULT 1,
    PRIMARY KEY (host, path)
);
CREATE INDEX vfolder_orphan_sightings_vfolder_idx ON vfolder_orphan_sightings (vfolder_id);

CREATE TABLE vfolder_orphan_scans (
    host text PRIMARY KEY NOT NULL,
    started_at text NOT NULL,
    finished_at text NOT NULL,
    counted integer NOT NULL CHECK (counted IN (0, 1)),
    orphans integer NOT NULL,
    orphan_bytes integer NULL,
    unfinished integer NOT NULL,
    unfinished_bytes integer NULL,
    missing integer NOT NULL,
    foreign_entries integer NOT NULL,
    actor text NULL
);
