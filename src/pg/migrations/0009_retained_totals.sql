-- Retention folds paid calls older than it into one row per day, video and service, so
-- that the per-video and per-day counts survive it while the table of single calls stays
-- as long as the retention. Keyless-create claims are pruned by age, found by it here.
CREATE TABLE paid_call_totals (
    day      DATE NOT NULL,
    video_id TEXT NOT NULL,
    service  TEXT NOT NULL,
    calls    BIGINT NOT NULL,
    PRIMARY KEY (day, video_id, service)
);
CREATE INDEX paid_call_totals_video ON paid_call_totals (video_id);
CREATE INDEX record_creations_started ON record_creations (started_at);
