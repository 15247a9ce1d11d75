-- Retention: a pinned job's files are never collected; a collected job keeps its row (status,
-- times, digests) with the time its files went.
ALTER TABLE jobs ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN collected_at REAL;
CREATE INDEX IF NOT EXISTS jobs_collectable ON jobs (collected_at, pinned, finished_at);
