-- Every start of a paid external call (a GoAPI task, an NCA render), re-submissions
-- included: the outbox keeps only an effect's last start, and retention deletes done
-- effects, so the counts per video and per day live here. The pruner leaves this table
-- alone (a row is a few dozen bytes per call). Calls started before this migration are not
-- known.
CREATE TABLE paid_calls (
    id        BIGSERIAL PRIMARY KEY,
    video_id  TEXT NOT NULL,
    job_id    TEXT,
    effect_id TEXT NOT NULL,
    service   TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX paid_calls_video ON paid_calls (video_id);
CREATE INDEX paid_calls_at ON paid_calls (at, service);
