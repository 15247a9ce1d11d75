//! What separate worker processes share through the database: who is alive (a heartbeat), which
//! worker holds which job (a claim), and the cancels asked for over HTTP.

use rusqlite::params;

use crate::server::store::{JobRow, Store, StoreResult, now, row as job_row};

impl Store {
    /// Registers (or beats again for) worker `id`.
    pub fn worker_beat(&self, id: &str, pid: u32) -> StoreResult<()> {
        let t = now();
        self.with(|c| {
            c.execute(
                "INSERT INTO workers (id, pid, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?3) \
                 ON CONFLICT(id) DO UPDATE SET heartbeat_at = ?3",
                params![id, pid, t],
            )
        })
        .map(drop)
    }

    /// Removes a worker that stops cleanly.
    pub fn worker_gone(&self, id: &str) -> StoreResult<()> {
        self.with(|c| c.execute("DELETE FROM workers WHERE id = ?1", [id]))
            .map(drop)
    }

    /// Workers whose last beat is older than `secs`.
    pub fn stale_workers(&self, secs: f64) -> StoreResult<Vec<String>> {
        let before = now() - secs;
        self.with(|c| {
            let mut st = c.prepare("SELECT id FROM workers WHERE heartbeat_at < ?1")?;
            st.query_map([before], |r| r.get(0))?.collect()
        })
    }

    /// Claims the next queued job nobody holds (highest priority, then the oldest) for
    /// `worker`: one statement, so two workers never claim the same job.
    pub fn claim_next(&self, worker: &str) -> StoreResult<Option<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "UPDATE jobs SET worker = ?1 WHERE id = (SELECT id FROM jobs \
                 WHERE (status = 'queued' OR (status = 'scheduled' AND scheduled_at <= ?2)) \
                 AND worker IS NULL ORDER BY priority DESC, created_at, id LIMIT 1) RETURNING id",
            )?;
            let mut rows = st.query_map(params![worker, now()], |r| r.get::<_, String>(0))?;
            rows.next().transpose()
        })
    }

    /// The unfinished jobs `worker` holds.
    pub fn jobs_of_worker(&self, worker: &str) -> StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM jobs WHERE worker = ?1 \
                 AND status IN ('scheduled', 'queued', 'packing', 'packed', 'running')",
            )?;
            st.query_map([worker], job_row)?.collect()
        })
    }

    /// Gives a job back to the queue (its worker is gone before it ran): `queued`, unclaimed.
    pub fn release_job(&self, id: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET worker = NULL, status = 'queued', updated_at = ?2 WHERE id = ?1",
                params![id, now()],
            )
        })
        .map(drop)
    }

    /// Asks the worker that runs job `id` to stop it. Whether the job is held by a worker.
    pub fn request_cancel(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND worker IS NOT NULL",
                [id],
            )
        })
        .map(|n| n > 0)
    }

    /// Stops a queued job no worker holds yet (`stopped`); whether it was one.
    pub fn stop_unclaimed(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'stopped', reason = 'cancelled', updated_at = ?2, \
                 finished_at = ?2 WHERE id = ?1 AND status IN ('queued', 'scheduled') AND worker IS NULL",
                params![id, now()],
            )
        })
        .map(|n| n > 0)
    }

    /// The jobs of `worker` whose cancel was asked for.
    pub fn cancels_for(&self, worker: &str) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id FROM jobs WHERE worker = ?1 AND cancel_requested = 1 \
                 AND status IN ('scheduled', 'queued', 'packing', 'packed', 'running')",
            )?;
            st.query_map([worker], |r| r.get(0))?.collect()
        })
    }

    /// The worker holding job `id`, if any.
    pub fn worker_of(&self, id: &str) -> StoreResult<Option<String>> {
        use rusqlite::OptionalExtension;
        self.with(|c| {
            c.query_row("SELECT worker FROM jobs WHERE id = ?1", [id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()
            .map(Option::flatten)
        })
    }
}
