-- no-transaction
-- Claims: work of one kind on the volumes a replica serves (see the previous migration for
-- why it is built CONCURRENTLY and alone).
CREATE INDEX CONCURRENTLY IF NOT EXISTS vfolders_host_status_idx ON vfolders (host, status);
