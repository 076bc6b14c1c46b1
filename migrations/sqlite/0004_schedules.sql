-- Issue 17 (campaigns and reach). Recurring posts: a 5-field crontab in a time zone, the
-- submission to post (or a template), a holiday policy and a catch-up policy. `next_fire_at`
-- is compared-and-set by the instance that fires; `version` moves on every edit, and a
-- firing commits only if the version it rendered is still current (an edit or a delete that
-- has answered is never overtaken by the old content).
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,            -- UUIDv7
    name            TEXT NOT NULL,
    cron            TEXT NOT NULL,               -- 5 fields: minute hour day-of-month month day-of-week
    timezone        TEXT NOT NULL,               -- IANA name, e.g. Asia/Tokyo
    announcement    TEXT NOT NULL,               -- the submission to post (JSON)
    starts_at       BIGINT,
    ends_at         BIGINT,
    paused          BOOLEAN NOT NULL DEFAULT FALSE,
    catch_up        TEXT NOT NULL,               -- once | skip
    holidays        TEXT NOT NULL,               -- ignore | skip | next_day
    next_fire_at    BIGINT,                      -- null: no more firings
    version         BIGINT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    deleted_at      BIGINT
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE deleted_at IS NULL;

-- One row per firing: what it became. The announcement itself is unique on
-- (created_by = 'schedule:<id>', idempotency_key = fire time), so a firing happens once
-- whatever the instances and crashes.
CREATE TABLE schedule_firings (
    schedule_id     TEXT NOT NULL,
    fire_at         BIGINT NOT NULL,
    announcement_id TEXT,
    note            TEXT,
    fired_at        BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, fire_at)
);
