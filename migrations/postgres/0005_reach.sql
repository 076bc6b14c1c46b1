-- Issue 17 (reach and KPIs). Every measurement with its lineage: the channel, the
-- platform's own metric name, the API version, the period it covers, what it is about
-- (the account, or one post), when it was collected, and whether it was measured by an API,
-- counted by the daemon, or entered by a person (with a source note).
CREATE TABLE reach_samples (
    id              BIGSERIAL PRIMARY KEY,
    channel         TEXT NOT NULL,
    metric          TEXT NOT NULL,
    value           DOUBLE PRECISION NOT NULL,
    period          TEXT NOT NULL,               -- lifetime | day | days_28 | fiscal_year
    api_version     TEXT,
    subject         TEXT,                        -- a post or message id; null = the account
    collected_at    BIGINT NOT NULL,
    source          TEXT NOT NULL,               -- api | daemon | manual
    note            TEXT,                        -- a manual figure's source
    entered_by      TEXT
);
CREATE INDEX reach_samples_series ON reach_samples (channel, metric, collected_at);

-- Each collection from each channel, and its failure if it failed.
CREATE TABLE reach_runs (
    id              BIGSERIAL PRIMARY KEY,
    channel         TEXT NOT NULL,
    started_at      BIGINT NOT NULL,
    samples         BIGINT NOT NULL,
    error           TEXT
);
CREATE INDEX reach_runs_channel ON reach_runs (channel, started_at);

-- Website page views the daemon counts itself when it serves /site/ (no tracker).
CREATE TABLE site_views (
    day             TEXT NOT NULL,               -- YYYY-MM-DD, Asia/Tokyo
    path            TEXT NOT NULL,
    views           BIGINT NOT NULL,
    PRIMARY KEY (day, path)
);
