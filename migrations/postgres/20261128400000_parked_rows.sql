-- Rows the controller cannot read are parked, not retried in a loop (PostgreSQL; SQLite in
-- the migration of the same number): the reason, for operators (`show`, the
-- vfolder_controller_unreadable_rows gauge). A parked row is read again after an hour and
-- leaves the parking as soon as it reads.
ALTER TABLE vfolder_controller_state ADD COLUMN parked_reason text NULL;
