-- vfolder-controller schema, PostgreSQL.
--
-- Adoption of an existing reference-platform `vfolders` table: the table is created only when
-- missing; otherwise every column this program needs is added when missing (with its
-- default), and a `status_history` that is a JSON object `{status: timestamp}` (the
-- reference platform's older shape) is converted to the list shape `[{status, at, actor}]`,
-- oldest first. Adoption fails (and the migration rolls back) when live folders of one owner
-- share a name, because the partial unique index cannot be built; rename them first.
-- Status legality is not enforced here: the trigger arrives in a later migration, after the
-- legacy-spelling fix, so that fix can rewrite rows the trigger would reject.

CREATE TABLE IF NOT EXISTS vfolders (
    id uuid PRIMARY KEY,
    host varchar(128) NOT NULL,
    quota_scope_id varchar(64) NULL,
    name varchar(64) NOT NULL,
    "user" uuid NULL,
    "group" uuid NULL,
    ownership_type varchar(16) NOT NULL DEFAULT 'user',
    status varchar(64) NOT NULL DEFAULT 'ready',
    status_history jsonb NOT NULL DEFAULT '[]'::jsonb,
    status_changed timestamptz NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS quota_scope_id varchar(64) NULL;
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS "user" uuid NULL;
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS "group" uuid NULL;
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS ownership_type varchar(16) NOT NULL DEFAULT 'user';
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS status varchar(64) NOT NULL DEFAULT 'ready';
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS status_history jsonb NULL;
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS status_changed timestamptz NULL;
ALTER TABLE vfolders ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();

-- The reference platform's history is nullable and may be an object; make it a list.
UPDATE vfolders SET status_history = '[]'::jsonb WHERE status_history IS NULL OR status_history = 'null'::jsonb;
UPDATE vfolders v SET status_history = coalesce((
        SELECT jsonb_agg(jsonb_build_object('status', h.key, 'at', h.value #>> '{}', 'actor', NULL)
                         ORDER BY h.value #>> '{}')
        FROM jsonb_each(v.status_history) AS h), '[]'::jsonb)
    WHERE jsonb_typeof(v.status_history) = 'object';
-- Rows that never changed status count from their creation (the trigger sets
-- status_changed on every insert and change from now on), so "in status X since before T"
-- is one range scan of (status, status_changed).
UPDATE vfolders SET status_changed = created_at WHERE status_changed IS NULL;
ALTER TABLE vfolders ALTER COLUMN status_history SET DEFAULT '[]'::jsonb;
ALTER TABLE vfolders ALTER COLUMN status_history SET NOT NULL;
ALTER TABLE vfolders ALTER COLUMN ownership_type SET DEFAULT 'user';
ALTER TABLE vfolders ALTER COLUMN status SET DEFAULT 'ready';
ALTER TABLE vfolders ALTER COLUMN created_at SET DEFAULT now();

-- A name is reserved per owner while the folder is live or in the trash; a dead row
-- (delete-complete, delete-error) frees it without being renamed.
CREATE UNIQUE INDEX IF NOT EXISTS vfolders_owner_name_live_key
    ON vfolders ((coalesce("user", "group")), name)
    WHERE status IN ('ready', 'performing', 'cloning', 'delete-pending', 'delete-ongoing');

-- "Rows in status X older than T" (trash timer, history cleanup, claims, status counts).
CREATE INDEX IF NOT EXISTS vfolders_status_changed_idx ON vfolders (status, status_changed);
-- Claims: work of one kind on the volumes a replica serves.
CREATE INDEX IF NOT EXISTS vfolders_host_status_idx ON vfolders (host, status);

-- The legal transitions, checked by the trigger; equal to lifecycle::TRANSITIONS (tested).
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

-- The controller's own state per folder; removed with the row.
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
-- The claim query's restore branch and the trash timer's per-folder purge times.
CREATE INDEX vfolder_controller_state_trash_idx ON vfolder_controller_state (vfolder_id)
    WHERE location = 'trash';
CREATE INDEX vfolder_controller_state_purge_idx ON vfolder_controller_state (purge_after)
    WHERE purge_after IS NOT NULL;

-- Append-only audit log; deliberately no foreign key: it outlives purged rows.
CREATE TABLE vfolder_audit (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    vfolder_id uuid NOT NULL,
    host varchar(128) NULL,
    name varchar(64) NULL,
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
