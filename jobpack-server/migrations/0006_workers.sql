-- Separate worker processes (`jobpack worker`, with `jobpack serve` under INLINE_WORKER=0): each
-- registers and beats; a queued job is claimed by one worker (highest priority first); a job of
-- a worker that stopped beating is recovered by the others. A cancel asked for over HTTP is a
-- flag the worker running the job acts on.
ALTER TABLE jobs ADD COLUMN worker TEXT;
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(status, priority DESC, created_at);
CREATE TABLE IF NOT EXISTS workers (
    id            TEXT PRIMARY KEY,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
);
