-- The claim (up to p_limit due rows of the given volumes, leased to p_owner) as one function
-- call: one statement and one round trip, where it took a transaction of three (BEGIN with
-- the planner settings, the claim, COMMIT) and a fourth for the pool's liveness ping. The
-- statement is the one the controller sent before, unchanged but for its parameters' names,
-- its result's casts and the switch on the move branches (below).
--
-- Why the planner settings: a burst of new `delete-ongoing` rows is invisible to the
-- statistics until the next ANALYZE (which a big table may not get for a long time), and with
-- "no row waiting" estimates the planner reads and sorts the whole backlog on every claim:
-- with a bitmap scan (40-60 ms at 10,000 rows instead of 0.5 ms), or with an index scan hashed
-- against the state table and sorted (3-6 ms at 10,000 rows). Ordered index scans in nested
-- loops, which stop after p_limit rows, are right for this statement whatever the statistics
-- say. As SET clauses of the function they hold while its statement is planned and run and
-- end with the call: nothing is left on the connection for a pooler to carry over.
--
-- The statuses below are those that create work (lifecycle::Status::creates_work). Every
-- column is cast to its declared result type (text for the platform's varchar and enum
-- columns), so the function returns the same row shape on either kind of table.
-- Only a function is added: no table, index or trigger is touched, so no lock is taken on the
-- platform's table, and `unadopt` drops it with the rest.
CREATE FUNCTION vfolder_controller_claim(
    p_hosts text[], p_move_hosts text[], p_exclude uuid[], p_limit bigint, p_owner text,
    p_lease_secs double precision)
RETURNS TABLE (
    id uuid, host text, quota_scope_id text, name text, "user" uuid, "group" uuid,
    ownership_type text, status text, status_changed timestamptz, created_at timestamptz,
    attempts bigint, location text, kind text, prev_owner text,
    files bigint, dirs bigint, symlinks bigint, bytes bigint)
LANGUAGE plpgsql
SET enable_bitmapscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $$
-- The result columns share names with table columns; every reference below means the column.
#variable_conflict use_column
BEGIN
    -- `candidates` walks each work kind's (status, status_changed) index in age order and
    -- stops after p_limit due rows, so a claim costs the same with ten or a million rows
    -- waiting. Besides the planner settings, two guards keep it on that path when its
    -- statistics say no row is waiting: `host || ''` is not indexable, so the (host, status)
    -- index cannot tempt it into sorting the whole backlog, and the materialized candidates
    -- drive `due` through the primary key. `due` re-checks every condition and locks; rows
    -- another replica is claiming are skipped.
    --
    -- Volumes whose trash is in place (the default) have no moves to make: the two branches
    -- of moves are switched off by a condition on the parameter alone, tested once before
    -- anything is read. Without it, the move branch read every row in the trash on every
    -- claim, found none of them due and stopped at the end: 37-180 ms a claim with 200,000
    -- folders in the trash, against about 1 ms. The condition is a sub-select so that a plan
    -- made for one call cannot fold it away: folded, it made every such plan look cheaper
    -- than the kept one, and every claim was planned again (0.5 ms each).
    RETURN QUERY
    WITH candidates AS MATERIALIZED (
        (SELECT v.id FROM vfolders v
           LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
         WHERE v.status = 'delete-ongoing' AND (v.host || '') = ANY(p_hosts)
           AND NOT (v.id = ANY(p_exclude))
           AND (s.lease_owner IS NULL OR s.lease_expires_at < now())
           AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
         ORDER BY v.status, v.status_changed LIMIT p_limit)
        UNION ALL
        (SELECT v.id FROM vfolders v
           LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
         WHERE (SELECT cardinality(p_move_hosts)) > 0
           AND v.status = 'delete-pending' AND (v.host || '') = ANY(p_move_hosts)
           AND coalesce(s.location, 'live') = 'live'
           AND NOT (v.id = ANY(p_exclude))
           AND (s.lease_owner IS NULL OR s.lease_expires_at < now())
           AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
         ORDER BY v.status, v.status_changed LIMIT p_limit)
        UNION ALL
        (SELECT v.id FROM vfolder_controller_state s
           JOIN vfolders v ON v.id = s.vfolder_id
         WHERE (SELECT cardinality(p_move_hosts)) > 0
           AND s.location = 'trash' AND v.status = 'ready' AND v.host = ANY(p_move_hosts)
           AND NOT (v.id = ANY(p_exclude))
           AND (s.lease_owner IS NULL OR s.lease_expires_at < now())
           AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
         LIMIT p_limit)
    ), due AS (
        SELECT v.id, s.lease_owner AS prev_owner,
               CASE WHEN v.status = 'delete-ongoing' THEN 'remove'
                    WHEN v.status = 'delete-pending' THEN 'move-to-trash'
                    ELSE 'restore' END AS kind
        FROM candidates c JOIN vfolders v ON v.id = c.id
          LEFT JOIN vfolder_controller_state s ON s.vfolder_id = v.id
        WHERE v.host = ANY(p_hosts)
          AND NOT (v.id = ANY(p_exclude))
          AND (v.status = 'delete-ongoing'
               OR (v.status = 'delete-pending' AND v.host = ANY(p_move_hosts)
                   AND coalesce(s.location, 'live') = 'live')
               OR (v.status = 'ready' AND v.host = ANY(p_move_hosts) AND s.location = 'trash'))
          AND (s.lease_owner IS NULL OR s.lease_expires_at < now())
          AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
        ORDER BY v.status_changed NULLS FIRST, v.id
        LIMIT p_limit
        FOR UPDATE OF v SKIP LOCKED
    ), claimed AS (
        INSERT INTO vfolder_controller_state AS s
            (vfolder_id, lease_owner, lease_expires_at, updated_at)
        SELECT due.id, p_owner, now() + make_interval(secs => p_lease_secs), now() FROM due
        ON CONFLICT (vfolder_id) DO UPDATE SET
            lease_owner = excluded.lease_owner,
            lease_expires_at = excluded.lease_expires_at,
            parked_reason = NULL,
            updated_at = now()
        WHERE (s.lease_owner IS NULL OR s.lease_expires_at < now())
          AND (s.next_attempt_at IS NULL OR s.next_attempt_at <= now())
        RETURNING s.vfolder_id, s.attempts, s.location, s.files, s.dirs, s.symlinks, s.bytes
    )
    SELECT v.id, v.host::text, v.quota_scope_id::text, v.name::text, v."user", v."group",
           v.ownership_type::text, v.status::text, v.status_changed::timestamptz,
           v.created_at::timestamptz,
           c.attempts::int8, c.location::text, d.kind, d.prev_owner,
           c.files, c.dirs, c.symlinks, c.bytes
    FROM claimed c JOIN due d ON d.id = c.vfolder_id JOIN vfolders v ON v.id = c.vfolder_id
    ORDER BY v.status_changed NULLS FIRST, v.id;
END
$$;
