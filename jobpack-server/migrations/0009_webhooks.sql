-- Webhooks: standing ones (a user's, or the server's for admins) and those a submission carried
-- (scope job/batch/workflow, target_id its id). Each event is written by a trigger in the same
-- transaction as the status change that causes it (job_events, an outbox), whichever process
-- made it; the server turns events into deliveries, one per webhook and event and subject, kept
-- with their attempts until acknowledged or given up.
CREATE TABLE IF NOT EXISTS webhooks (
    id            TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    scope         TEXT NOT NULL,
    target_id     TEXT,
    url           TEXT NOT NULL,
    events_json   TEXT NOT NULL,
    secret        TEXT NOT NULL,
    headers_json  TEXT NOT NULL DEFAULT '{}',
    created_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_target ON webhooks(scope, target_id);
CREATE INDEX IF NOT EXISTS webhooks_owner ON webhooks(scope, owner);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id            TEXT PRIMARY KEY,
    webhook_id    TEXT NOT NULL REFERENCES webhooks(id) ON DELETE CASCADE,
    event         TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    body          TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_at       REAL NOT NULL,
    last_code     INTEGER,
    last_error    TEXT,
    created_at    REAL NOT NULL,
    delivered_at  REAL,
    UNIQUE (webhook_id, event, subject_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_at);
CREATE TABLE IF NOT EXISTS job_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    event   TEXT NOT NULL,
    at      REAL NOT NULL
);
CREATE TRIGGER IF NOT EXISTS job_started_event AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'running' AND OLD.status != 'running'
BEGIN
    INSERT INTO job_events (job_id, event, at) VALUES (NEW.id, 'job.started', NEW.updated_at);
END;
CREATE TRIGGER IF NOT EXISTS job_finished_event AFTER UPDATE OF status ON jobs
WHEN (NEW.status IN ('completed', 'failed', 'stopped', 'timed_out', 'oom_killed',
                     'limit_exceeded', 'skipped') OR (NEW.status = 'packed' AND NEW.run = 0))
 AND NOT (OLD.status IN ('completed', 'failed', 'stopped', 'timed_out', 'oom_killed',
                         'limit_exceeded', 'skipped') OR (OLD.status = 'packed' AND OLD.run = 0))
BEGIN
    INSERT INTO job_events (job_id, event, at) VALUES (NEW.id, 'job.finished', NEW.updated_at);
END;
