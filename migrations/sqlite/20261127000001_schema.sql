-- vfolder-controller schema, SQLite.
--
-- Representation (same column names as PostgreSQL):
-- - uuids are lowercase hyphenated text (`0b5c...-...`), enforced by CHECK constraints;
-- - timestamps are UTC ISO-8601 text with exactly three fractional digits
--   (`2026-11-27T19:25:12.123Z`, i.e. strftime('%Y-%m-%dT%H:%M:%fZ')), so text order is
--   time order and comparisons work;
-- - status_history is JSON text (a list, oldest first).
-- The status trigger arrives in a later migration, after the legacy-spelling fix.

CREATE TABLE IF NOT EXISTS vfolders (
    id text PRIMARY KEY NOT NULL CHECK (length(id) = 36 AND id = lower(id)),
    host varchar(128) NOT NULL,
    quota_scope_id varchar(64) NULL,
    name varchar(64) NOT NULL,
    "user" text NULL,
    "group" text NULL,
    ownership_type varchar(16) NOT NULL DEFAULT 'user',
    status varchar(64) NOT NULL DEFAULT 'ready',
    status_history text NOT NULL DEFAULT '[]',
    status_changed text NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- A name is reserved per owner while the folder is live or in the trash; a dead row
-- (delete-complete, delete-error) frees it without being renamed.
CREATE UNIQUE INDEX IF NOT EXISTS vfolders_owner_name_live_key
    ON vfolders (coalesce("user", "group"), name)
    WHERE status IN ('ready', 'performing', 'cloning', 'delete-pending', 'delete-ongoing');

CREATE INDEX IF NOT EXISTS vfolders_status_changed_idx ON vfolders (status, status_changed);
-- Claims: work of one kind on the volumes a replica serves.
CREATE INDEX IF NOT EXISTS vfolders_host_status_idx ON vfolders (host, status);

-- Rows that never changed status count from their creation (the trigger sets status_changed
-- on every insert and change from now on).
UPDATE vfolders SET status_changed = created_at WHERE status_changed IS NULL;

-- The legal transitions, checked by the triggers; equal to lifecycle::TRANSITIONS (tested).
CREATE TABLE vfolder_status_transitions (
    from_status varchar(64) NOT NULL,
    to_status varchar(64) NOT NULL,
    PRIMARY KEY (from_status, to_status)
) WITHOUT ROWID;
INSERT INTO vfolder_status_transitions (from_status, to_status) VALUES
    ('ready', 'performing'),
    ('performing', 'ready'),
    ('ready', 'cloning'),
    ('cloning', 'ready'),
    ('ready', 'delete-pending'),
    ('delete-pending', 'ready'),
    ('delete-pending', 'delete-ongoing'),
    ('ready', 'delete-ongoing'),
    ('delete-ongoing', 'delete-complete'),
    ('delete-ongoing', 'delete-error'),
    ('delete-error', 'delete-ongoing');

-- SQLite triggers cannot read session state, so a writer that wants its name in the status
-- history puts it here inside its transaction and deletes it again before committing.
CREATE TABLE vfolder_actor (
    id integer PRIMARY KEY CHECK (id = 1),
    actor text NULL
);

-- The controller's own state per folder; removed with the row (trigger below, so that a
-- DELETE from the sqlite3 shell without foreign_keys=ON cleans up too).
CREATE TABLE vfolder_controller_state (
    vfolder_id text PRIMARY KEY NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at text NULL,
    last_error text NULL,
    lease_owner text NULL,
    lease_expires_at text NULL,
    files integer NOT NULL DEFAULT 0,
    dirs integer NOT NULL DEFAULT 0,
    symlinks integer NOT NULL DEFAULT 0,
    bytes integer NOT NULL DEFAULT 0,
    location text NOT NULL DEFAULT 'live' CHECK (location IN ('live', 'trash')),
    purge_after text NULL,
    updated_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX vfolder_controller_state_lease_idx ON vfolder_controller_state (lease_owner);
CREATE INDEX vfolder_controller_state_trash_idx ON vfolder_controller_state (vfolder_id)
    WHERE location = 'trash';
CREATE INDEX vfolder_controller_state_purge_idx ON vfolder_controller_state (purge_after)
    WHERE purge_after IS NOT NULL;

CREATE TRIGGER vfolders_delete_controller_state AFTER DELETE ON vfolders
BEGIN
    DELETE FROM vfolder_controller_state WHERE vfolder_id = OLD.id;
END;

-- Append-only audit log; deliberately no foreign key: it outlives purged rows.
CREATE TABLE vfolder_audit (
    seq integer PRIMARY KEY AUTOINCREMENT,
    at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    vfolder_id text NOT NULL,
    host text NULL,
    name text NULL,
    action text NOT NULL,
    from_status text NULL,
    to_status text NULL,
    actor text NULL,
    replica text NULL,
    files integer NULL,
    dirs integer NULL,
    symlinks integer NULL,
    bytes integer NULL,
    duration_ms integer NULL,
    error text NULL
);
CREATE INDEX vfolder_audit_vfolder_seq_idx ON vfolder_audit (vfolder_id, seq);
CREATE INDEX vfolder_audit_at_idx ON vfolder_audit (at);
