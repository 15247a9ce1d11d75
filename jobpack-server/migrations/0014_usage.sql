-- Samples of running jobs' cgroups (GET /v1/jobs/{id}/usage): a bounded number per job (the
-- runner thins them), removed with the job.
CREATE TABLE IF NOT EXISTS job_usage (
    job_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    cpu_nanos INTEGER NOT NULL,
    memory_bytes INTEGER,
    pids INTEGER,
    io_read_bytes INTEGER,
    io_write_bytes INTEGER,
    PRIMARY KEY (job_id, at_ms)
);

-- The dashboard's activity (GET /v1/activity): jobs that ended in the last hours, found without
-- reading the older ones.
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
