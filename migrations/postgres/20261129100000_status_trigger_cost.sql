-- The status trigger of 20261128000010_schema_mode, with the same rules and messages, at
-- about half the cost per row (it runs for every status change, the platform's bulk writes
-- included, and was most of the cost of a batch of completions; numbers in benches/README.md):
-- - a status that has a lowercase letter cannot be a lifecycle enum name (those are the
--   upper-cased statuses), so only other spellings are looked up in the transitions table;
-- - a write of the status the row already has returns before anything else is read;
-- - on an update, the transition is checked first, and only a refused one looks further
--   to say whether the status is unknown or the step illegal (a listed transition names a
--   known status, so the unknown-status rejection is still raised first, as before).
-- Only the function body is replaced: the trigger on vfolders is not touched, so no lock is
-- taken on the table.
CREATE OR REPLACE FUNCTION vfolder_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    adopted boolean;
    at_text text;
    old_status text;
    shape text;
BEGIN
    IF NEW.status = 'deleted-complete' THEN
        NEW.status := 'delete-pending';
    ELSIF NEW.status = 'purge-ongoing' THEN
        NEW.status := 'delete-ongoing';
    ELSIF NEW.status = upper(NEW.status) THEN
        NEW.status := coalesce((SELECT DISTINCT to_status FROM vfolder_status_transitions
                                WHERE upper(replace(to_status, '-', '_')) = NEW.status), NEW.status);
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
            RETURN NEW;
        END IF;
        old_status := OLD.status;
    END IF;
    adopted := coalesce((SELECT mode = 'adopted' FROM vfolder_controller_meta), false);
    -- An insert, or an update whose transition is refused, is checked for a known status
    -- first (an allowed transition names a known status, so it needs no look of its own).
    IF TG_OP = 'INSERT'
       OR (NOT (adopted
                AND OLD.status NOT IN ('delete-pending', 'delete-ongoing', 'delete-complete', 'delete-error')
                AND NEW.status NOT IN ('delete-pending', 'delete-ongoing', 'delete-complete', 'delete-error'))
           AND NOT EXISTS (
               SELECT 1 FROM vfolder_status_transitions
               WHERE from_status = OLD.status AND to_status = NEW.status
                 AND (adopted OR NOT adopted_only))) THEN
        IF NOT adopted AND NOT EXISTS (
                SELECT 1 FROM vfolder_status_transitions
                WHERE NOT adopted_only AND (from_status = NEW.status OR to_status = NEW.status)) THEN
            RAISE EXCEPTION 'unknown vfolder status: %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'vfolder_status_known';
        END IF;
        IF TG_OP = 'UPDATE' THEN
            RAISE EXCEPTION 'illegal vfolder status transition: % -> %', OLD.status, NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'vfolder_status_transition';
        END IF;
    END IF;
    at_text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    shape := coalesce(jsonb_typeof(NEW.status_history), 'null');
    IF NOT adopted THEN
        IF TG_OP = 'UPDATE' OR shape = 'null' OR NEW.status_history = '[]'::jsonb THEN
            NEW.status_history := coalesce(NEW.status_history, '[]'::jsonb)
                || jsonb_build_array(jsonb_build_object('status', NEW.status, 'at', at_text,
                       'actor', nullif(current_setting('vfolder.actor', true), '')));
        END IF;
    ELSIF TG_OP = 'UPDATE' THEN
        IF shape = 'array' THEN
            NEW.status_history := NEW.status_history
                || jsonb_build_array(jsonb_build_object('status', NEW.status, 'at', at_text,
                       'actor', nullif(current_setting('vfolder.actor', true), '')));
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
