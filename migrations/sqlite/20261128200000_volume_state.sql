-- Volume availability as the controller last saw it, one row per volume host, so that
-- `show` (another process) can say "waiting: volume X unavailable since T". Written by the
-- controller whenever its view of the volume changes (the last writer wins; `replica` names
-- it). Timestamps as in the schema migration (UTC ISO-8601 text, three fractional digits).
CREATE TABLE vfolder_volume_state (
    host varchar(128) PRIMARY KEY NOT NULL,
    available integer NOT NULL CHECK (available IN (0, 1)),
    since text NOT NULL,
    reason text NULL,
    replica text NOT NULL,
    updated_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
