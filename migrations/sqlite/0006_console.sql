-- Issue 18 (the web console). People who sign in: a name, a role (the API's), an argon2id
-- password hash, disabled or not. Sessions are kept by the SHA-256 of their cookie; the
-- CSRF token of each session is a separate random value. Failed sign-ins are remembered
-- for the lock-out, per account and per address.
CREATE TABLE users (
    name            TEXT PRIMARY KEY,
    role            TEXT NOT NULL,               -- viewer | staff | disaster | admin
    password_hash   TEXT NOT NULL,               -- argon2id, PHC string
    disabled        BOOLEAN NOT NULL DEFAULT FALSE,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_sha256    TEXT PRIMARY KEY,
    user_name       TEXT NOT NULL REFERENCES users (name),
    csrf            TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    last_seen_at    BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);

CREATE TABLE sign_in_failures (
    key             TEXT NOT NULL,               -- account:<name> | address:<ip>
    at              BIGINT NOT NULL
);
CREATE INDEX sign_in_failures_key ON sign_in_failures (key, at);
