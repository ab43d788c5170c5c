-- The reference platform once spelled `delete-complete` as `deleted-complete`. Rewrite the
-- status and every history entry. Runs before the status triggers exist (next migration), so
-- nothing rejects the rewrite and it does not count as a status change.
UPDATE vfolders SET status = 'delete-complete' WHERE status = 'deleted-complete';
UPDATE vfolders SET status_history = (
        SELECT json_group_array(json(CASE WHEN json_extract(e.value, '$.status') = 'deleted-complete'
                                          THEN json_set(e.value, '$.status', 'delete-complete')
                                          ELSE e.value END))
        FROM (SELECT value FROM json_each(vfolders.status_history) ORDER BY key) AS e)
    WHERE json_valid(status_history) AND json_type(status_history) = 'array'
      AND EXISTS (SELECT 1 FROM json_each(vfolders.status_history) AS h
                  WHERE json_extract(h.value, '$.status') = 'deleted-complete');
