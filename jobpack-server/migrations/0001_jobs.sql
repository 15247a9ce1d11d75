-- Jobs: one row per submitted job. Timestamps are Unix seconds (REAL).
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    name            TEXT,
    status          TEXT NOT NULL,
    source          TEXT NOT NULL,          -- 'spec' or 'upload'
    request_json    TEXT NOT NULL,          -- the submission, as accepted
    run             INTEGER NOT NULL,       -- 0: pack only
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    started_at      REAL,
    finished_at     REAL,
    exit_code       INTEGER,
    signal          INTEGER,
    reason          TEXT,
    error_code      TEXT,
    artifact_sha256 TEXT,
    artifact_size   INTEGER,
    commit_id       TEXT,
    outcome_json    TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
