-- Batches: many jobs submitted together, followed by live counters over their member jobs.
CREATE TABLE IF NOT EXISTS batches (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    description  TEXT,
    owner        TEXT NOT NULL,
    created_at   REAL NOT NULL,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS batches_owner ON batches(owner, created_at);
ALTER TABLE jobs ADD COLUMN batch_id TEXT;
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs(batch_id, status);
