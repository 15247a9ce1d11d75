-- Retries: each attempt of a job that ran again (its `retry` policy) keeps its outcome here and
-- its log beside the job's as attempt-N.log; the job's row holds the last attempt.
CREATE TABLE IF NOT EXISTS job_attempts (
    job_id        TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    exit_code     INTEGER,
    signal        INTEGER,
    reason        TEXT,
    started_at    REAL,
    finished_at   REAL NOT NULL,
    outcome_json  TEXT,
    PRIMARY KEY (job_id, attempt)
);
