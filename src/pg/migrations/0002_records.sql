-- The Videos, Jobs and Webhook Events records for a service on PostgreSQL without an
-- Airtable base (records::postgres): the embedded SQLite records' layout, one row per
-- record and one per non-empty cell, so that both backends keep records the same way.

CREATE TABLE records (
    -- Airtable's id format, which the engine parses every id into.
    id         TEXT PRIMARY KEY CHECK (id ~ '^rec[A-Za-z0-9]{14}$'),
    tbl        TEXT NOT NULL,
    -- Airtable lists records oldest first, and random ids do not sort that way.
    seq        BIGINT GENERATED ALWAYS AS IDENTITY,
    -- The database's clock, so that replicas do not stamp records on clocks of their own.
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A text cell is kept in `text`, any other cell in `json`: finding a record by a text value
-- is then an exact comparison of strings, with no JSON path to escape. No unique index on
-- values: Airtable lets two records share one (a plain create may repeat it), so upserts
-- take a lock on their key instead (see records::postgres).
CREATE TABLE records_cells (
    record_id TEXT NOT NULL REFERENCES records (id),
    field     TEXT NOT NULL,
    text      TEXT,
    json      JSONB,
    PRIMARY KEY (record_id, field),
    CHECK ((text IS NULL) <> (json IS NULL))
);

-- Indexed by a hash of the text: a B-tree entry holds at most about 2.7 kB, and text cells
-- hold whole webhook payloads. Lookups compare the text itself as well.
CREATE INDEX records_cells_by_text
    ON records_cells (field, hashtextextended(text, 0)) WHERE text IS NOT NULL;
