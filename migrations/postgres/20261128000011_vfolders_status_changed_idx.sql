-- no-transaction
-- The indexes the controller's queries need on `vfolders` (PostgreSQL), one per migration:
-- PostgreSQL runs several statements sent at once as one implicit transaction, and
-- CREATE INDEX CONCURRENTLY refuses to run in one. A table the controller created has them
-- already (migration 20261127000001); on an adopted table they are built CONCURRENTLY, so
-- the platform's writes are never blocked while they build. Should a build fail half-way,
-- `DROP INDEX CONCURRENTLY` the invalid index and migrate again.
--
-- "Rows in status X older than T" (trash timer, history cleanup, claims, status counts).
CREATE INDEX CONCURRENTLY IF NOT EXISTS vfolders_status_changed_idx ON vfolders (status, status_changed);
