-- Issue 12 (hardening). When a delivery's first attempt with its current idempotency key
-- started: how far back a reconcile looks, and how old a LINE retry key is. Set by the
-- first claim; moved only when the key is renewed.
ALTER TABLE deliveries ADD COLUMN first_attempt_at BIGINT;

-- A platform's rate-limit answer holds the whole channel until then (ms), in every instance.
ALTER TABLE channel_states ADD COLUMN hold_until BIGINT;

-- Live instances (PostgreSQL only uses it; SQLite serves one process). Kept in both
-- schemas so the two stay alike.
CREATE TABLE instances (
    owner           TEXT PRIMARY KEY,
    heartbeat_at    BIGINT NOT NULL
);

-- Subscriber imports are written in short turns as invisible 'importing' rows, then made
-- active; an import cut short is removed (staging) or completed (committing) at the next
-- start, so an import is all or nothing and never holds the writer for long.
ALTER TABLE subscribers ADD COLUMN import_id TEXT;
CREATE INDEX subscribers_import ON subscribers (import_id) WHERE import_id IS NOT NULL;
CREATE TABLE subscriber_imports (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL,               -- staging | committing
    created_at      BIGINT NOT NULL
);

-- Every successful write through the API: who, how authenticated, what, when, from where.
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    at              BIGINT NOT NULL,
    who             TEXT NOT NULL,
    role            TEXT NOT NULL,
    via             TEXT NOT NULL,               -- bearer_token (console sessions later)
    client          TEXT,                        -- the client's address
    method          TEXT NOT NULL,
    route           TEXT NOT NULL,               -- /api/v1/announcements/{id}/cancel
    path            TEXT NOT NULL,               -- /api/v1/announcements/0193…/cancel
    status          INTEGER NOT NULL
);

-- Storage probe: after the database was full, a row of this table is written and rolled
-- back to learn whether there is room again (no row is ever kept).
CREATE TABLE storage_probe (
    id              INTEGER PRIMARY KEY,
    filler          BLOB NOT NULL
);
