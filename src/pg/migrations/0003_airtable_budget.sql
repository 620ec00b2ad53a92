-- The Airtable request budget shared by every replica (records::budget::PgBudget): Airtable
-- allows 5 requests per second per base whoever sends them, so the replicas draw from one
-- set of slots. Times are PostgreSQL's (now()): no replica's clock is ever read.

-- N rows per base, created on first use. A slot is free once now() has passed busy_until:
-- a claim sets it to now() + a lease (so a replica that dies holding it loses it), the
-- release to now() + one window after the response arrived.
CREATE TABLE airtable_budget_slots (
    base       TEXT NOT NULL,
    slot       INTEGER NOT NULL,
    busy_until TIMESTAMPTZ NOT NULL DEFAULT 'epoch',
    -- The current claim's token: a release whose lease ran out (and whose slot another
    -- claim may hold) finds another token and changes nothing.
    holder     TEXT,
    PRIMARY KEY (base, slot)
);

-- After a 429 nobody sends to the base until locked_until; it only ever moves later.
CREATE TABLE airtable_budget_lockouts (
    base         TEXT PRIMARY KEY,
    locked_until TIMESTAMPTZ NOT NULL
);
