-- Records the engine created on a base with no writable key field (ARCHITECTURE.md,
-- "Creating a record without a key"): the intent is noted before the create request, the
-- record id claimed after it; a record is claimed by at most one owner.
CREATE TABLE record_creations (
    owner      TEXT PRIMARY KEY,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    record_id  TEXT UNIQUE
);
