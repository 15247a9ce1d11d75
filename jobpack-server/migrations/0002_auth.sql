-- Users, API tokens, job owners, secrets of pending jobs, and the audit log.
CREATE TABLE IF NOT EXISTS users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL CHECK (role IN ('admin', 'submitter', 'viewer')),
    disabled    INTEGER NOT NULL DEFAULT 0,
    quota_json  TEXT NOT NULL DEFAULT '{}',  -- per-user caps (null fields: no cap)
    created_at  REAL NOT NULL
);
-- Tokens are stored as the SHA-256 of the token (they are 256-bit random strings, so a plain
-- hash is enough); the token itself is shown once, when it is created.
CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL REFERENCES users(name),
    name         TEXT,
    hash         TEXT NOT NULL UNIQUE,
    created_at   REAL NOT NULL,
    last_used_at REAL,
    revoked_at   REAL
);
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT 'local';
ALTER TABLE jobs ADD COLUMN cpu_seconds REAL;
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner, created_at);
-- secret_env values of jobs that may still run; removed when the job ends.
CREATE TABLE IF NOT EXISTS job_secrets (
    job_id      TEXT PRIMARY KEY,
    secret_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT,
    detail  TEXT
);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, seq);
