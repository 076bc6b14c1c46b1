-- Noroshi core schema (PostgreSQL). Times are milliseconds since the Unix epoch (UTC) in both
-- dialects, so comparisons never depend on a database's text format for timestamps.

CREATE TABLE announcements (
    id              TEXT PRIMARY KEY,            -- UUIDv7
    title           TEXT NOT NULL,
    body            TEXT NOT NULL,
    link            TEXT,
    priority        TEXT NOT NULL,               -- normal | urgent | disaster
    lane            INTEGER NOT NULL,            -- 0 normal, 1 urgent, 2 disaster
    lang            TEXT NOT NULL,
    exercise        BOOLEAN NOT NULL DEFAULT FALSE,
    status          TEXT NOT NULL,
    request         TEXT NOT NULL,               -- the submission as accepted (JSON)
    created_by      TEXT NOT NULL,               -- token name
    idempotency_key TEXT,
    request_hash    TEXT NOT NULL,
    request_id      TEXT,
    scheduled_at    BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX announcements_idempotency ON announcements (created_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX announcements_newest ON announcements (created_at DESC, id DESC);
CREATE INDEX announcements_status ON announcements (status);

-- One row per announcement and channel: what was rendered at accept time.
CREATE TABLE announcement_channels (
    announcement_id TEXT NOT NULL REFERENCES announcements (id),
    channel         TEXT NOT NULL,
    rendering       TEXT NOT NULL,               -- JSON: units + preview
    audience        TEXT NOT NULL,               -- fixed | email_subscribers
    PRIMARY KEY (announcement_id, channel)
);

-- The durable queue. kind 'send' = one unit to one platform (or one subscriber);
-- kind 'expand' = the job that multiplies an email unit by the subscribers, in batches.
CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    announcement_id TEXT NOT NULL REFERENCES announcements (id),
    channel         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    unit_index      INTEGER NOT NULL,
    subscriber_id   BIGINT NOT NULL DEFAULT 0,   -- 0 = not per subscriber
    lane            INTEGER NOT NULL,
    status          TEXT NOT NULL,               -- pending | in_flight | sent | retrying | failed | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    run_after       BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    idempotency_key TEXT NOT NULL,
    uncertain       BOOLEAN NOT NULL DEFAULT FALSE,
    expand_cursor   BIGINT NOT NULL DEFAULT 0,
    remote_id       TEXT,
    last_error      TEXT,
    sent_at         BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX deliveries_unit ON deliveries (announcement_id, channel, kind, unit_index, subscriber_id);
CREATE INDEX deliveries_due ON deliveries (channel, lane DESC, run_after, id)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX deliveries_leased ON deliveries (lease_until) WHERE status = 'in_flight';
CREATE INDEX deliveries_by_status ON deliveries (announcement_id, status);

-- The delivery log: one row per attempt.
CREATE TABLE delivery_attempts (
    id              BIGSERIAL PRIMARY KEY,
    delivery_id     BIGINT NOT NULL,
    announcement_id TEXT NOT NULL,
    channel         TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    outcome         TEXT NOT NULL,               -- sent | already_sent | transient | uncertain | rate_limited | quota | auth | permanent | reconciled
    status_code     INTEGER,
    error           TEXT,
    note            TEXT,                        -- what the platform said besides the id (a soft bounce, message ids)
    remote_id       TEXT,
    worker          TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT NOT NULL
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);
CREATE INDEX delivery_attempts_announcement ON delivery_attempts (announcement_id, id);
CREATE INDEX delivery_attempts_newest ON delivery_attempts (id DESC);

CREATE TABLE subscribers (
    id              BIGSERIAL PRIMARY KEY,
    email           TEXT NOT NULL,
    lang            TEXT NOT NULL,
    topics          TEXT NOT NULL,               -- JSON array
    token           TEXT NOT NULL UNIQUE,        -- unsubscribe token (random, unguessable)
    status          TEXT NOT NULL,               -- active | unsubscribed
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX subscribers_active ON subscribers (status, id);
-- One subscription per address, whatever its case (Taro@Example.jp is taro@example.jp).
CREATE UNIQUE INDEX subscribers_email ON subscribers (lower(email));

CREATE TABLE channel_states (
    channel         TEXT PRIMARY KEY,
    state           TEXT NOT NULL,               -- ok | degraded | paused
    reason          TEXT,
    since           BIGINT NOT NULL,
    last_error      TEXT,
    last_error_at   BIGINT,
    last_success_at BIGINT
);

-- Tokens created by the daemon itself (the first-start admin token); configured tokens
-- live in the config file. Only hashes are stored.
CREATE TABLE api_tokens (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL,
    token_sha256    TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);

-- Credentials a platform issued in place of configured ones (X's rotated OAuth 2.0
-- refresh token), kept so a restart does not log the city out. Opaque to the daemon.
CREATE TABLE channel_credentials (
    channel         TEXT PRIMARY KEY,
    credentials     TEXT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- LINE friends as the webhook reports them (follow / unfollow).
CREATE TABLE line_followers (
    user_id         TEXT PRIMARY KEY,
    following       BOOLEAN NOT NULL,
    updated_at      BIGINT NOT NULL
);
