-- The result cache: a job answered from an earlier completed job with the same artifact,
-- runtime, limits and network names it (its outputs, log and receipt are copies of that job's).
ALTER TABLE jobs ADD COLUMN cached_from TEXT;
CREATE INDEX IF NOT EXISTS jobs_artifact ON jobs(artifact_sha256, status);
