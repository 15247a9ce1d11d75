-- job_events is the webhooks' outbox. With no webhook at all, every job still wrote two events
-- (its start and its end, each also bumping the AUTOINCREMENT sequence), which the dispatcher
-- then read back, looked up the job of, found no webhook for and deleted: a dozen WAL pages and
-- two more commits per job for nothing. An event is written now only while some webhook exists;
-- which webhooks want it is decided at dispatch, as before. (A webhook hears of what happens
-- after it is created; an event before any webhook existed had no one to go to.)
DROP TRIGGER IF EXISTS job_started_event;
CREATE TRIGGER job_started_event AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'running' AND OLD.status != 'running'
 AND EXISTS (SELECT 1 FROM webhooks)
BEGIN
    INSERT INTO job_events (job_id, event, at) VALUES (NEW.id, 'job.started', NEW.updated_at);
END;
DROP TRIGGER IF EXISTS job_finished_event;
CREATE TRIGGER job_finished_event AFTER UPDATE OF status ON jobs
WHEN (NEW.status IN ('completed', 'failed', 'stopped', 'timed_out', 'oom_killed',
                     'limit_exceeded', 'skipped') OR (NEW.status = 'packed' AND NEW.run = 0))
 AND NOT (OLD.status IN ('completed', 'failed', 'stopped', 'timed_out', 'oom_killed',
                         'limit_exceeded', 'skipped') OR (OLD.status = 'packed' AND OLD.run = 0))
 AND EXISTS (SELECT 1 FROM webhooks)
BEGIN
    INSERT INTO job_events (job_id, event, at) VALUES (NEW.id, 'job.finished', NEW.updated_at);
END;
