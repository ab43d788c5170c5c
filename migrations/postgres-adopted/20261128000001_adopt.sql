-- Adoption of an existing `vfolders` table that the reference platform created and keeps
-- writing to (PostgreSQL). It replaces, for such a database, the three own-schema migrations
-- of migrations/postgres (20261127000001-3), which create the table; every later migration
-- of migrations/postgres runs on both kinds of database.
--
-- A guest's rules: nothing of `vfolders` is retyped, reshaped or dropped, no constraint is
-- added to it, no row is deleted. The controller adds its own tables beside it. The only
-- rows it rewrites are legacy status spellings, as the platform itself meant them (its
-- alembic revision 7ff52ff68bfc does the same): `deleted-complete` was the trash in
-- 24.03-25.x (data on disk, restorable) and becomes `delete-pending`; `purge-ongoing`
-- becomes `delete-ongoing`. Each remap is audited. History entries are left as written.
--
-- Locks are taken with a short lock_timeout, so a long transaction of the platform makes the
-- migration fail (run it again) instead of queueing the platform's writes behind it.

SET LOCAL lock_timeout = '5s';

-- The legal transitions of the deletion lifecycle, checked by the trigger (a later migration
-- adds the ones only an adopted table accepts); equal to lifecycle::TRANSITIONS (tested).
CREATE TABLE vfolder_status_transitions (
    from_status varchar(64) NOT NULL,
    to_status varchar(64) NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
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

-- The controller's own state per folder; removed with the row (the platform's purge deletes
-- rows, and the state must not outlive them).
CREATE TABLE vfolder_controller_state (
    vfolder_id uuid PRIMARY KEY REFERENCES vfolders (id) ON DELETE CASCADE,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NULL,
    last_error text NULL,
    lease_owner text NULL,
    lease_expires_at timestamptz NULL,
    files bigint NOT NULL DEFAULT 0,
    dirs bigint NOT NULL DEFAULT 0,
    symlinks bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    location varchar(8) NOT NULL DEFAULT 'live' CHECK (location IN ('live', 'trash')),
    purge_after timestamptz NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vfolder_controller_state_lease_idx ON vfolder_controller_state (lease_owner);
CREATE INDEX vfolder_controller_state_trash_idx ON vfolder_controller_state (vfolder_id)
    WHERE location = 'trash';
CREATE INDEX vfolder_controller_state_purge_idx ON vfolder_controller_state (purge_after)
    WHERE purge_after IS NOT NULL;

-- Append-only audit log; no foreign key: it outlives purged rows. `name` is as wide as the
-- platform's column.
CREATE TABLE vfolder_audit (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    vfolder_id uuid NOT NULL,
    host varchar(128) NULL,
    name varchar(128) NULL,
    action varchar(32) NOT NULL,
    from_status varchar(64) NULL,
    to_status varchar(64) NULL,
    actor text NULL,
    replica text NULL,
    files bigint NULL,
    dirs bigint NULL,
    symlinks bigint NULL,
    bytes bigint NULL,
    duration_ms bigint NULL,
    error text NULL
);
CREATE INDEX vfolder_audit_vfolder_seq_idx ON vfolder_audit (vfolder_id, seq);
CREATE INDEX vfolder_audit_at_idx ON vfolder_audit (at);

-- Legacy spellings (the trigger does not exist yet, so this is not a status change and
-- leaves status_changed and status_history alone); lifecycle::LEGACY_SPELLINGS.
WITH remapped AS (
    UPDATE vfolders v SET status = m.status
    FROM (VALUES ('deleted-complete', 'delete-pending'),
                 ('purge-ongoing', 'delete-ongoing')) AS m (legacy, status)
    WHERE v.status = m.legacy
    RETURNING v.id, v.host, v.name, m.legacy, m.status
)
INSERT INTO vfolder_audit (vfolder_id, host, name, action, from_status, to_status, actor)
SELECT id, host, name, 'adopt-remap', legacy, status, 'vfolder-controller migrate' FROM remapped;
