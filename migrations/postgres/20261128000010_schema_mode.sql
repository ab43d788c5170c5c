-- Which kind of database this is, and one status trigger for both kinds (PostgreSQL).
--
-- `vfolder_controller_meta` records the mode chosen by `vfolder-controller migrate`, which
-- passes it in the session setting `vfolder.schema_mode`: `own` (the controller created
-- `vfolders`) or `adopted` (the reference platform did; see migrations/postgres-adopted).
-- `adopted_at` starts every clock the controller cannot trust: a folder already in the
-- trash (or in delete-complete) when the table was adopted counts from that moment, whatever
-- its `status_changed` says.

CREATE TABLE vfolder_controller_meta (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mode varchar(16) NOT NULL CHECK (mode IN ('own', 'adopted')),
    adopted_at timestamptz NULL CHECK ((mode = 'adopted') = (adopted_at IS NOT NULL)),
    migrated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO vfolder_controller_meta (mode, adopted_at)
SELECT m, CASE WHEN m = 'adopted' THEN now() END
FROM (SELECT coalesce(nullif(current_setting('vfolder.schema_mode', true), ''), 'own') AS m) AS s;

-- Transitions only an adopted table accepts (lifecycle::ADOPTED_TRANSITIONS): the
-- platform's repeated "delete forever" of a folder whose files are gone, and its
-- storage-failure event on a trashed folder.
ALTER TABLE vfolder_status_transitions ADD COLUMN adopted_only boolean NOT NULL DEFAULT false;
INSERT INTO vfolder_status_transitions (from_status, to_status, adopted_only) VALUES
    ('delete-complete', 'delete-ongoing', true),
    ('delete-pending', 'delete-error', true);

-- Every status change, by any writer, goes through this trigger (lifecycle::SchemaMode::allows
-- states the rule; a test compares the two over every pair):
-- - legacy spellings are stored as what they mean (deleted-complete -> delete-pending,
--   purge-ongoing -> delete-ongoing; lifecycle::LEGACY_SPELLINGS), and so are the enum names
--   of the lifecycle's statuses (DELETE_ONGOING -> delete-ongoing): the table holds canonical
--   values only, which the claim and the timers match;
-- - writing the status a row already has is a no-op;
-- - own table: only listed transitions between known statuses; adopted table: anything
--   between statuses outside the deletion lifecycle (the platform's business), listed
--   transitions into, out of and within it;
-- - the history keeps the row's shape: a list gets {status, at, actor}; on an adopted table
--   an object (or NULL, which the platform's writer treats as an empty object) gets the
--   platform's {"DELETE_PENDING": "<iso time>"}; any other JSON is left alone. The actor
--   always reaches the audit log through the writer;
-- - status_changed is stamped on every change (and on insert when NULL);
-- - the change is announced on `vfolder_status` (JSON id/from/to/at; "from" null on insert).
-- The rejection messages are the ones the store parses (store::write_err).
CREATE OR REPLACE FUNCTION vfolder_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    actor text := nullif(current_setting('vfolder.actor', true), '');
    at_text text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    adopted boolean := coalesce((SELECT mode = 'adopted' FROM vfolder_controller_meta), false);
    deletion text[] := ARRAY['delete-pending', 'delete-ongoing', 'delete-complete', 'delete-error'];
    old_status text;
    shape text;
BEGIN
    NEW.status := CASE NEW.status
        WHEN 'deleted-complete' THEN 'delete-pending'
        WHEN 'purge-ongoing' THEN 'delete-ongoing'
        ELSE coalesce((SELECT DISTINCT to_status FROM vfolder_status_transitions
                       WHERE upper(replace(to_status, '-', '_')) = NEW.status), NEW.status) END;
    IF TG_OP = 'UPDATE' THEN
        old_status := OLD.status;
        IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
            RETURN NEW;
        END IF;
    END IF;
    IF NOT adopted AND NOT EXISTS (
            SELECT 1 FROM vfolder_status_transitions
            WHERE NOT adopted_only AND (from_status = NEW.status OR to_status = NEW.status)) THEN
        RAISE EXCEPTION 'unknown vfolder status: %', NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'vfolder_status_known';
    END IF;
    IF TG_OP = 'UPDATE'
       AND NOT (adopted AND NOT (OLD.status = ANY (deletion)) AND NOT (NEW.status = ANY (deletion)))
       AND NOT EXISTS (
            SELECT 1 FROM vfolder_status_transitions
            WHERE from_status = OLD.status AND to_status = NEW.status
              AND (adopted OR NOT adopted_only)) THEN
        RAISE EXCEPTION 'illegal vfolder status transition: % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'vfolder_status_transition';
    END IF;
    shape := coalesce(jsonb_typeof(NEW.status_history), 'null');
    IF NOT adopted THEN
        IF TG_OP = 'UPDATE' OR shape = 'null' OR NEW.status_history = '[]'::jsonb THEN
            NEW.status_history := coalesce(NEW.status_history, '[]'::jsonb)
                || jsonb_build_array(jsonb_build_object('status', NEW.status, 'at', at_text, 'actor', actor));
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        IF shape = 'array' THEN
            NEW.status_history := NEW.status_history
                || jsonb_build_array(jsonb_build_object('status', NEW.status, 'at', at_text, 'actor', actor));
        ELSIF shape IN ('object', 'null') THEN
            NEW.status_history := (CASE WHEN shape = 'object' THEN NEW.status_history ELSE '{}'::jsonb END)
                || jsonb_build_object(upper(replace(NEW.status, '-', '_')),
                       to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'));
        END IF;
    END IF;
    IF TG_OP = 'UPDATE' OR NEW.status_changed IS NULL THEN
        NEW.status_changed := now();
    END IF;
    PERFORM pg_notify('vfolder_status', json_build_object(
        'id', NEW.id, 'from', old_status, 'to', NEW.status, 'at', at_text)::text);
    RETURN NEW;
END;
$$;

DROP TRIGGER IF EXISTS vfolders_status_change ON vfolders;
CREATE TRIGGER vfolders_status_change
    BEFORE INSERT OR UPDATE OF status ON vfolders
    FOR EACH ROW EXECUTE FUNCTION vfolder_status_change();
