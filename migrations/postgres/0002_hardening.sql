-- Issue 12 (hardening). When a delivery's first attempt with its current idempotency key
-- started: how far back a reconcile looks, and how old a LINE retry key is. Set by the
-- first claim; moved only when the key is renewed.
ALTER TABLE deliveries ADD COLUMN first_attempt_at BIGINT;

-- A platform's rate-limit answer holds the whole channel until then (ms), in every instance.
ALTER TABLE channel_states ADD COLUMN hold_until BIGINT;

-- Live instances, so each paces itself at its share of every channel's configured rate.
-- heartbeat_at is the database's own clock (ms).
CREATE TABLE instances (
    owner           TEXT PRIMARY KEY,
    heartbeat_at    BIGINT NOT NULL
);
