-- The unreadable-rows gauge counts parked rows on every refresh: a partial index keeps that
-- count from reading the whole controller state table (PostgreSQL: the migration of the same
-- number).
CREATE INDEX IF NOT EXISTS vfolder_controller_state_parked_idx
    ON vfolder_controller_state (vfolder_id) WHERE parked_reason IS NOT NULL;
