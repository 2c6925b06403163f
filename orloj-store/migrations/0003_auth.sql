-- Native auth (spec §6.3, reference migrations 004/009): users, sessions, API tokens.
-- Secrets are never stored: passwords as Argon2id PHC strings, session and API tokens as
-- SHA-256 hex.

CREATE TABLE IF NOT EXISTS auth_local_users (
    username      TEXT PRIMARY KEY CHECK (length(username) BETWEEN 1 AND 253),
    role          TEXT NOT NULL CHECK (role IN ('admin', 'writer', 'reader', 'controller')),
    password_hash TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS auth_sessions (
    session_id_hash TEXT PRIMARY KEY,
    username        TEXT NOT NULL REFERENCES auth_local_users(username) ON DELETE CASCADE,
    created_at      TIMESTAMPTZ NOT NULL,
    last_seen_at    TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_auth_sessions_username ON auth_sessions (username);

CREATE TABLE IF NOT EXISTS auth_api_tokens (
    name       TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 253),
    token_hash TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'writer', 'reader', 'controller')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
