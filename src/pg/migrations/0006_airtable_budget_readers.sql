-- Reads waiting for a slot of the base's shared budget (records::budget::PgBudget): a
-- decision waits on a read, nothing in the engine waits on a write, so while a read is
-- registered here writes leave the next free slot to it (unless they have waited long
-- enough: writes are never starved). A waiting read renews its row with every claim and
-- deletes it when granted; the row of a read gone away expires at `until` and is swept
-- later. Times are PostgreSQL's now().
CREATE TABLE airtable_budget_readers (
    base   TEXT NOT NULL,
    waiter TEXT NOT NULL,
    until  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (base, waiter)
);
