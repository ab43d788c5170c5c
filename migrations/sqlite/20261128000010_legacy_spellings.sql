-- Legacy status spellings of the reference platform, stored as what they mean (SQLite; the
-- PostgreSQL trigger does the same in migrations/postgres/20261128000010): `deleted-complete`
-- was its trash (data on disk, restorable) and is written as `delete-pending`;
-- `purge-ongoing` is written as `delete-ongoing` (lifecycle::LEGACY_SPELLINGS). The enum names
-- of the lifecycle's statuses (DELETE_ONGOING) are written as the status they name, so the
-- table holds canonical values only.
--
-- SQLite cannot change NEW in a trigger, so these triggers write the row again with the
-- status it stands for and drop the original write (RAISE(IGNORE)); the rewrite then passes
-- the ordinary checks and history triggers. The unknown-status checks of migration 3 are
-- recreated to let the legacy spellings through to these triggers, whatever order SQLite
-- fires triggers in (it does not promise one).

DROP TRIGGER vfolders_status_insert_known;
CREATE TRIGGER vfolders_status_insert_known BEFORE INSERT ON vfolders
WHEN NEW.status NOT IN ('deleted-complete', 'purge-ongoing', 'READY', 'PERFORMING', 'CLONING', 'DELETE_PENDING',
                     'DELETE_ONGOING', 'DELETE_COMPLETE', 'DELETE_ERROR')
 AND NEW.status NOT IN (SELECT from_status FROM vfolder_status_transitions
                        UNION SELECT to_status FROM vfolder_status_transitions)
BEGIN
    SELECT RAISE(ABORT, 'unknown vfolder status');
END;

DROP TRIGGER vfolders_status_update_known;
CREATE TRIGGER vfolders_status_update_known BEFORE UPDATE OF status ON vfolders
WHEN OLD.status IS NOT NEW.status
 AND NEW.status NOT IN ('deleted-complete', 'purge-ongoing', 'READY', 'PERFORMING', 'CLONING', 'DELETE_PENDING',
                     'DELETE_ONGOING', 'DELETE_COMPLETE', 'DELETE_ERROR')
 AND NEW.status NOT IN (SELECT from_status FROM vfolder_status_transitions
                        UNION SELECT to_status FROM vfolder_status_transitions)
BEGIN
    SELECT RAISE(ABORT, 'unknown vfolder status');
END;

CREATE TRIGGER vfolders_status_legacy_update BEFORE UPDATE OF status ON vfolders
WHEN NEW.status IN ('deleted-complete', 'purge-ongoing', 'READY', 'PERFORMING', 'CLONING', 'DELETE_PENDING',
                     'DELETE_ONGOING', 'DELETE_COMPLETE', 'DELETE_ERROR')
BEGIN
    UPDATE vfolders SET
        host = NEW.host, quota_scope_id = NEW.quota_scope_id, name = NEW.name,
        "user" = NEW."user", "group" = NEW."group", ownership_type = NEW.ownership_type,
        status = CASE NEW.status WHEN 'deleted-complete' THEN 'delete-pending'
                                 WHEN 'purge-ongoing' THEN 'delete-ongoing'
                                 ELSE lower(replace(NEW.status, '_', '-')) END
    WHERE id = OLD.id;
    SELECT RAISE(IGNORE);
END;

CREATE TRIGGER vfolders_status_legacy_insert BEFORE INSERT ON vfolders
WHEN NEW.status IN ('deleted-complete', 'purge-ongoing', 'READY', 'PERFORMING', 'CLONING', 'DELETE_PENDING',
                     'DELETE_ONGOING', 'DELETE_COMPLETE', 'DELETE_ERROR')
BEGIN
    INSERT INTO vfolders (id, host, quota_scope_id, name, "user", "group", ownership_type,
                          status, status_history, status_changed, created_at)
    VALUES (NEW.id, NEW.host, NEW.quota_scope_id, NEW.name, NEW."user", NEW."group",
            NEW.ownership_type,
            CASE NEW.status WHEN 'deleted-complete' THEN 'delete-pending'
                            WHEN 'purge-ongoing' THEN 'delete-ongoing'
                            ELSE lower(replace(NEW.status, '_', '-')) END,
            NEW.status_history, NEW.status_changed, NEW.created_at);
    SELECT RAISE(IGNORE);
END;
