-- Every status change, by any writer, goes through this trigger: it rejects transitions not
-- in vfolder_status_transitions (naming both statuses), appends {status, at, actor} to
-- status_history, sets status_changed and announces the change on the `vfolder_status`
-- channel. Writing the status a row already has is a no-op. An INSERT records the initial
-- status as the first history entry and announces it with "from": null.
--
-- The actor is read from the transaction-local setting `vfolder.actor`
-- (`SELECT set_config('vfolder.actor', 'alice', true)` or `SET LOCAL vfolder.actor = 'alice'`);
-- without it the entry's actor is null.
-- Timestamps in history and events are UTC text with microseconds:
-- 2026-11-27T19:25:12.123456Z.

CREATE FUNCTION vfolder_status_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    actor text := nullif(current_setting('vfolder.actor', true), '');
    at_text text := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    old_status text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_status := OLD.status;
        IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
            RETURN NEW;
        END IF;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM vfolder_status_transitions
                   WHERE from_status = NEW.status OR to_status = NEW.status) THEN
        RAISE EXCEPTION 'unknown vfolder status: %', NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'vfolder_status_known';
    END IF;
    IF TG_OP = 'UPDATE' AND NOT EXISTS (
            SELECT 1 FROM vfolder_status_transitions
            WHERE from_status = OLD.status AND to_status = NEW.status) THEN
        RAISE EXCEPTION 'illegal vfolder status transition: % -> %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'vfolder_status_transition';
    END IF;
    IF TG_OP = 'UPDATE' OR NEW.status_history IS NULL OR NEW.status_history = '[]'::jsonb THEN
        NEW.status_history := coalesce(NEW.status_history, '[]'::jsonb)
            || jsonb_build_array(jsonb_build_object('status', NEW.status, 'at', at_text, 'actor', actor));
    END IF;
    IF TG_OP = 'UPDATE' OR NEW.status_changed IS NULL THEN
        NEW.status_changed := now();
    END IF;
    PERFORM pg_notify('vfolder_status', json_build_object(
        'id', NEW.id, 'from', old_status, 'to', NEW.status, 'at', at_text)::text);
    RETURN NEW;
END;
$$;

CREATE TRIGGER vfolders_status_change
    BEFORE INSERT OR UPDATE OF status ON vfolders
    FOR EACH ROW EXECUTE FUNCTION vfolder_status_change();
