-- no-transaction
-- The unreadable-rows gauge counts parked rows on every refresh; without an index that count
-- reads the whole controller state table, one row per folder the controller ever worked on
-- (restored folders keep theirs), ~100 ms at a million rows. Parked rows are rare, so a
-- partial index keeps the count near zero cost. Built CONCURRENTLY (hence alone in its
-- migration) because on an adopted database the platform's DELETE of a folder cascades into
-- this table and must not wait for the build. SQLite: the migration of the same number.
CREATE INDEX CONCURRENTLY IF NOT EXISTS vfolder_controller_state_parked_idx
    ON vfolder_controller_state (vfolder_id) WHERE parked_reason IS NOT NULL;
