-- Deleted rows are recorded, never silently forgotten (issue 12). Runs on own and adopted
-- databases alike: everything here is the controller's own, beside `vfolders`, and the
-- trigger only inserts into the controller's tables, so it never blocks the platform's
-- DELETE (its purge deletes rows straight from the trash).
--
-- `vfolder_tombstones`: one row per deleted `vfolders` row, with what is needed to find its
-- data (id, host, quota scope), its status at deletion, who deleted it and when, and why
-- (`cause`: the controller's own action `history-cleanup`/`forget`, else `row-deleted`,
-- or `row-deleted-during-removal` when a controller held a live lease on a delete-ongoing
-- row). A row deleted while `delete-ongoing` had its removal asked for: its tombstone is
-- `removal = 'pending'` and the controller finishes the removal from it, with the lease
-- columns below (inherited from the row's controller state, so a running removal carries on
-- under the same lease). Every other tombstone is `removal = 'none'`: reported by
-- `orphans scan`, never removed by the controller.
--
-- The audit entry: the controller's own deletes (history cleanup, forget) already write
-- theirs, with more context, and say so in the transaction-local setting
-- `vfolder.delete_action`; the trigger then writes only the tombstone. Any other DELETE gets
-- one audit entry from the trigger, `row-deleted` or `row-deleted-during-removal`.
--
-- The actor: `vfolder.actor` when the writer set it, else the database role (`db:<role>`),
-- so a plain psql DELETE is still attributed.

CREATE TABLE vfolder_tombstones (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vfolder_id uuid NOT NULL,
    host varchar(128) NULL,
    quota_scope_id varchar(64) NULL,
    name text NULL,
    status varchar(64) NULL,
    actor text NULL,
    cause varchar(32) NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now(),
    removal varchar(16) NOT NULL
        CHECK (removal IN ('none', 'pending', 'removed', 'failed', 'superseded')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NULL,
    last_error text NULL,
    lease_owner text NULL,
    lease_expires_at timestamptz NULL,
    files bigint NOT NULL DEFAULT 0,
    dirs bigint NOT NULL DEFAULT 0,
    symlinks bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    finished_at timestamptz NULL
);
CREATE INDEX vfolder_tombstones_vfolder_idx ON vfolder_tombstones (vfolder_id, seq);
CREATE INDEX vfolder_tombstones_pending_idx ON vfolder_tombstones (host, deleted_at)
    WHERE removal = 'pending';
CREATE INDEX vfolder_tombstones_deleted_at_idx ON vfolder_tombstones (deleted_at);

-- BEFORE DELETE, so the controller state (removed by the foreign key's cascade, which runs
-- after the row is gone) can still be read: its lease and progress pass to the tombstone.
CREATE OR REPLACE FUNCTION vfolder_tombstone() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    action text := nullif(current_setting('vfolder.delete_action', true), '');
    who text := coalesce(nullif(current_setting('vfolder.actor', true), ''), 'db:' || session_user);
    owner text;
    expires timestamptz;
    n_attempts integer;
    n_files bigint;
    n_dirs bigint;
    n_symlinks bigint;
    n_bytes bigint;
    running boolean;
BEGIN
    SELECT s.lease_owner, s.lease_expires_at, s.attempts, s.files, s.dirs, s.symlinks, s.bytes
      INTO owner, expires, n_attempts, n_files, n_dirs, n_symlinks, n_bytes
      FROM vfolder_controller_state s WHERE s.vfolder_id = OLD.id;
    running := OLD.status = 'delete-ongoing' AND owner IS NOT NULL AND expires > now();
    INSERT INTO vfolder_tombstones (vfolder_id, host, quota_scope_id, name, status, actor, cause,
        removal, attempts, lease_owner, lease_expires_at, files, dirs, symlinks, bytes)
    VALUES (OLD.id, OLD.host, OLD.quota_scope_id, OLD.name, OLD.status, who,
        coalesce(action, CASE WHEN running THEN 'row-deleted-during-removal' ELSE 'row-deleted' END),
        CASE WHEN OLD.status = 'delete-ongoing' THEN 'pending' ELSE 'none' END,
        coalesce(n_attempts, 0),
        CASE WHEN running THEN owner END, CASE WHEN running THEN expires END,
        coalesce(n_files, 0), coalesce(n_dirs, 0), coalesce(n_symlinks, 0), coalesce(n_bytes, 0));
    IF action IS NULL THEN
        INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, actor, error)
        VALUES (OLD.id, OLD.host, left(OLD.name, 64),
            CASE WHEN running THEN 'row-deleted-during-removal' ELSE 'row-deleted' END,
            OLD.status, who,
            CASE WHEN running THEN 'row deleted during removal (lease of ' || owner
                 || '); the controller finishes the removal from the tombstone'
                 WHEN OLD.status = 'delete-ongoing'
                 THEN 'the controller finishes the removal from the tombstone' END);
    END IF;
    RETURN OLD;
END;
$$;

DROP TRIGGER IF EXISTS vfolders_tombstone ON vfolders;
CREATE TRIGGER vfolders_tombstone
    BEFORE DELETE ON vfolders
    FOR EACH ROW EXECUTE FUNCTION vfolder_tombstone();

-- `orphans scan` records what it saw, never touching the data: one row per folder directory
-- that no row accounts for, kept while every scan sees it (`first_seen` .. `last_seen`);
-- a scan that does not see it, or sees a row for it, ends the sighting. `orphans reclaim`
-- removes only sightings older than the volume's grace period.
CREATE TABLE vfolder_orphan_sightings (
    host varchar(128) NOT NULL,
    path text NOT NULL,
    vfolder_id uuid NOT NULL,
    scope uuid NULL,
    trash boolean NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    scans integer NOT NULL DEFAULT 1,
    PRIMARY KEY (host, path)
);
CREATE INDEX vfolder_orphan_sightings_vfolder_idx ON vfolder_orphan_sightings (vfolder_id);

-- The last complete scan of each volume and its totals (the controller's gauges read them).
CREATE TABLE vfolder_orphan_scans (
    host varchar(128) PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    counted boolean NOT NULL,
    orphans bigint NOT NULL,
    orphan_bytes bigint NULL,
    unfinished bigint NOT NULL,
    unfinished_bytes bigint NULL,
    missing bigint NOT NULL,
    foreign_entries bigint NOT NULL,
    actor text NULL
);
