-- The reference platform once spelled `delete-complete` as `deleted-complete`. Rewrite the
-- status and every history entry. Runs before the status trigger exists (next migration), so
-- nothing rejects the rewrite and it does not count as a status change.
UPDATE vfolders SET status = 'delete-complete' WHERE status = 'deleted-complete';
UPDATE vfolders v SET status_history = (
        SELECT jsonb_agg(CASE WHEN e ->> 'status' = 'deleted-complete'
                              THEN jsonb_set(e, '{status}', '"delete-complete"')
                              ELSE e END
                         ORDER BY ord)
        FROM jsonb_array_elements(v.status_history) WITH ORDINALITY AS t (e, ord))
    WHERE jsonb_typeof(v.status_history) = 'array'
      AND jsonb_path_exists(v.status_history, '$[*] ? (@.status == "deleted-complete")');
