-- Each state change of a job (queued, packing, packed, running, and its end) moved its entry in
-- every index that holds its status: five b-tree pages written to the WAL per change instead of
-- two. Only the indexes a query needs keep the status now:
-- - jobs_status (status) goes: jobs_claim (status, priority DESC, created_at) begins with it, so
--   every `status = ?` query still has an index;
-- - jobs_batch holds only the jobs of a batch (a query by batch_id = ? implies it is not null);
-- - jobs_artifact holds only completed jobs, the result cache's candidates (its query says
--   status = 'completed'), entered once when a job completes.
DROP INDEX IF EXISTS jobs_status;
DROP INDEX IF EXISTS jobs_batch;
CREATE INDEX jobs_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
DROP INDEX IF EXISTS jobs_artifact;
CREATE INDEX jobs_artifact ON jobs (artifact_sha256) WHERE status = 'completed';
