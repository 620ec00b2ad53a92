-- The engine's store: the same tables as the embedded SQLite store, plus the leases that
-- let several replicas share the work. Timestamps are PostgreSQL's (now()), so that every
-- replica measures leases and due times on one clock.

CREATE TABLE inbox (
    seq          BIGSERIAL PRIMARY KEY,
    event_id     TEXT NOT NULL UNIQUE,
    video_id     TEXT NOT NULL,
    source       TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    -- Duplicate detection across replicas: the constraint, not a cache, decides.
    dedupe_key   TEXT UNIQUE,
    raw_body     TEXT NOT NULL,
    headers      TEXT NOT NULL,
    received_at  TIMESTAMPTZ NOT NULL,
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    outcome      TEXT,
    note         TEXT,
    job_id       TEXT,
    processed_at TIMESTAMPTZ
);
CREATE INDEX inbox_pending ON inbox (seq) WHERE state = 'pending';
CREATE INDEX inbox_video ON inbox (video_id, seq);
CREATE INDEX inbox_outcome ON inbox (outcome, seq);

CREATE TABLE video_state (
    video_id   TEXT PRIMARY KEY,
    snapshot   TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE job_index (
    job_id    TEXT PRIMARY KEY,
    video_id  TEXT NOT NULL,
    record_id TEXT
);

CREATE TABLE history (
    id          BIGSERIAL PRIMARY KEY,
    video_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    event       TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX history_video ON history (video_id, id);

CREATE TABLE outbox (
    seq             BIGSERIAL PRIMARY KEY,
    effect_id       TEXT NOT NULL UNIQUE,
    video_id        TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    effect          TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    -- Set just before an external call, cleared when its result is stored: still set
    -- later means a process died with the call in flight.
    started_at      TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX outbox_video ON outbox (video_id, seq) WHERE state = 'pending';
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_failed ON outbox (event_id) WHERE state = 'failed';

CREATE TABLE active_jobs (
    job_id        TEXT PRIMARY KEY,
    video_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    external_id   TEXT,
    since         TIMESTAMPTZ NOT NULL,
    checks        INTEGER NOT NULL DEFAULT 0,
    next_check_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX active_jobs_due ON active_jobs (next_check_at);

-- Who works on a video: one row per (lane, video), claimed with FOR UPDATE SKIP LOCKED
-- while expired. `token` grows with every claim: a commit names the token it was
-- claimed under, so a replica whose lease was taken over cannot write any more.
CREATE TABLE leases (
    lane       TEXT NOT NULL,
    video_id   TEXT NOT NULL,
    owner      TEXT NOT NULL DEFAULT '',
    token      BIGINT NOT NULL DEFAULT 0,
    expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (lane, video_id)
);

CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY,
    at TIMESTAMPTZ NOT NULL
);
