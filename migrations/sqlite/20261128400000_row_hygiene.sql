-- One bad row never stops the others (SQLite).
--
-- 1. Rows the controller cannot read are parked (see the PostgreSQL migration of the same
--    number): the reason, for operators.
ALTER TABLE vfolder_controller_state ADD COLUMN parked_reason text NULL;

-- 2. A status change always records an entry, whatever the history holds, as on PostgreSQL:
--    a list gets the entry appended; anything else (an object, a scalar, text that is not
--    JSON) is kept as the first element of a new list, so nothing is lost and the history
--    is a list again. json_insert on text that is not JSON used to fail, which wedged the
--    completion of a removal.
DROP TRIGGER vfolders_status_update_history;
CREATE TRIGGER vfolders_status_update_history AFTER UPDATE OF status ON vfolders
WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE vfolders
    SET status_history = CASE
            WHEN status_history IS NULL THEN json_array(json_object('status', NEW.status,
                'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                'actor', (SELECT actor FROM vfolder_actor WHERE id = 1)))
            WHEN json_valid(status_history) AND json_type(status_history) = 'array'
            THEN json_insert(status_history, '$[#]', json_object('status', NEW.status,
                'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                'actor', (SELECT actor FROM vfolder_actor WHERE id = 1)))
            ELSE json_array(CASE WHEN json_valid(status_history) THEN json(status_history)
                                 ELSE status_history END,
                json_object('status', NEW.status, 'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
                            'actor', (SELECT actor FROM vfolder_actor WHERE id = 1)))
            END,
        status_changed = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    WHERE id = NEW.id;
END;

-- 3. New writes cannot store values the program cannot read: uuids are lowercase hyphenated
--    text, timestamps are `YYYY-MM-DDTHH:MM:SS.sssZ` (SQLite's own datetime('now') format
--    sorts and compares differently), the history is JSON. (SQLite cannot add CHECK
--    constraints to an existing table, so these are triggers.)
CREATE TRIGGER vfolders_valid_insert BEFORE INSERT ON vfolders
WHEN NEW.id NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
  OR coalesce(NEW."user", '00000000-0000-0000-0000-000000000000') NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
  OR coalesce(NEW."group", '00000000-0000-0000-0000-000000000000') NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
  OR NEW.created_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z'
  OR coalesce(NEW.status_changed, '2000-01-01T00:00:00.000Z') NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z'
  OR NOT json_valid(NEW.status_history)
BEGIN
    SELECT RAISE(ABORT, 'invalid vfolder row: ids must be lowercase uuids, times YYYY-MM-DDTHH:MM:SS.sssZ, status_history JSON');
END;

-- An update is checked on the values it changes only, so a row stored before these checks
-- existed can still be moved through the lifecycle (and stamped by the timers).
CREATE TRIGGER vfolders_valid_update BEFORE UPDATE OF id, "user", "group", created_at, status_changed, status_history ON vfolders
WHEN (NEW.id IS NOT OLD.id AND NEW.id NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]')
  OR (NEW."user" IS NOT OLD."user" AND coalesce(NEW."user", '00000000-0000-0000-0000-000000000000') NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]')
  OR (NEW."group" IS NOT OLD."group" AND coalesce(NEW."group", '00000000-0000-0000-0000-000000000000') NOT GLOB '[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f]-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]')
  OR (NEW.created_at IS NOT OLD.created_at AND NEW.created_at NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z')
  OR (NEW.status_changed IS NOT OLD.status_changed AND coalesce(NEW.status_changed, '2000-01-01T00:00:00.000Z') NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9]Z')
  OR (NEW.status_history IS NOT OLD.status_history AND NOT json_valid(NEW.status_history))
BEGIN
    SELECT RAISE(ABORT, 'invalid vfolder row: ids must be lowercase uuids, times YYYY-MM-DDTHH:MM:SS.sssZ, status_history JSON');
END;
