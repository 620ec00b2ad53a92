-- Retention and quarantine (store version 5). The background pruner finds each batch
-- through an index instead of scanning a table, and unreadable rows set aside
-- (state 'quarantined') are listed without a scan.
CREATE INDEX inbox_processed ON inbox (processed_at) WHERE state = 'done';
CREATE INDEX history_at ON history (at);
CREATE INDEX outbox_done ON outbox (updated_at) WHERE state = 'done';
CREATE INDEX outbox_event ON outbox (event_id);
CREATE INDEX inbox_quarantined ON inbox (seq) WHERE state = 'quarantined';
CREATE INDEX outbox_quarantined ON outbox (seq) WHERE state = 'quarantined';
