-- Issue 16 (the disaster desk). One row per disaster announcement: whether it is live or a
-- drill, what it is (an alert, an update of one, its all-clear, a correction), what it
-- follows, its CAP identity when it came as CAP, and how it ended. An alert is active while
-- it is live, released (not awaiting confirmation, not cancelled), not ended and not
-- expired; while any is active the channels in [disaster] pause_channels hold other work.
CREATE TABLE alerts (
    announcement_id TEXT PRIMARY KEY REFERENCES announcements (id),
    live            BOOLEAN NOT NULL,            -- false = a drill: never active
    kind            TEXT NOT NULL,               -- alert | update | all_clear | correction
    follows         TEXT,                        -- the announcement this one updates, clears or corrects
    cap_sender      TEXT,
    cap_identifier  TEXT,
    cap_sent        TEXT,
    cap_status      TEXT,                        -- Actual | Exercise | Test | System | Draft
    expires_at      BIGINT,                      -- null = until its all-clear
    ended_at        BIGINT,
    ended_by        TEXT,                        -- the announcement (or caller) that ended it
    confirmed_by    TEXT,
    confirmed_at    BIGINT,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX alerts_cap ON alerts (cap_sender, cap_identifier, cap_sent)
    WHERE cap_sender IS NOT NULL;
CREATE INDEX alerts_open ON alerts (ended_at) WHERE ended_at IS NULL;

-- Every CAP message received (POST /api/v1/cap, or a polled feed), whatever became of it:
-- System, Draft, Ack and Error messages are stored and shown here, never sent.
CREATE TABLE cap_messages (
    id              TEXT PRIMARY KEY,            -- UUIDv7
    sender          TEXT NOT NULL,
    identifier      TEXT NOT NULL,
    sent            TEXT NOT NULL,
    status          TEXT NOT NULL,               -- Actual | Exercise | System | Test | Draft
    msg_type        TEXT NOT NULL,               -- Alert | Update | Cancel | Ack | Error
    announcement_id TEXT,                        -- what it became, when it was sent
    note            TEXT,                        -- why it was not sent, or what was odd (unknown references)
    source          TEXT NOT NULL,               -- api:<caller> | feed:<url>
    xml             TEXT NOT NULL,
    received_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX cap_messages_identity ON cap_messages (sender, identifier, sent);
