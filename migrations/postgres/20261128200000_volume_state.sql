-- Volume availability as the controller last saw it, one row per volume host, so that
-- `show` (another process) can say "waiting: volume X unavailable since T". Written by a
-- replica whenever its view of the volume changes (the last writer wins; `replica` names
-- it). Controller-owned, like vfolder_controller_state: the vfolders table is not touched.
CREATE TABLE vfolder_volume_state (
    host varchar(128) PRIMARY KEY,
    available boolean NOT NULL,
    since timestamptz NOT NULL,
    reason text NULL,
    replica text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
