-- Workflows: jobs named by key with requirements on each other. Every job of a workflow is a row
-- of `jobs` from the start (status `waiting` until its requirements are met, `skipped` if they
-- can no longer be), so a restart finds the whole workflow in the database.
CREATE TABLE IF NOT EXISTS workflows (
    id           TEXT PRIMARY KEY,
    name         TEXT,
    owner        TEXT NOT NULL,
    source       TEXT NOT NULL,          -- the workflow file as submitted
    created_at   REAL NOT NULL,
    cancelled_at REAL
);
CREATE INDEX IF NOT EXISTS workflows_owner ON workflows(owner, created_at);
ALTER TABLE jobs ADD COLUMN workflow_id TEXT;
-- The job's place in the file and its requirements: [{"job": name, "status": status}, ...].
ALTER TABLE jobs ADD COLUMN workflow_pos INTEGER;
ALTER TABLE jobs ADD COLUMN requires_json TEXT;
CREATE INDEX IF NOT EXISTS jobs_workflow ON jobs(workflow_id, workflow_pos);
