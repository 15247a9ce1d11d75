//! Persistence: one SQLite file in the data directory (WAL mode), schema migrations kept in
//! `migrations/` and applied in order at start. Every state change of a job is one UPDATE, so a
//! crash leaves each job in the last state it reached.

pub mod accounts;
pub mod activity;
pub mod attempts;
pub mod batches;
pub mod documents;
mod listing;
mod migrations;
pub mod retention;
pub mod sign_in;
#[cfg(test)]
mod tests;
pub mod usage;
pub mod webhooks;
pub mod workers;
pub mod workflows;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

pub use jobpack_core::JobStatus;
pub use listing::{ListFilter, cursor_of, parse_cursor};

/// A job as stored.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub name: Option<String>,
    pub status: JobStatus,
    pub source: String,
    pub request_json: String,
    pub run: bool,
    pub created_at: f64,
    pub updated_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub error_code: Option<String>,
    pub artifact_sha256: Option<String>,
    pub artifact_size: Option<i64>,
    pub commit_id: Option<String>,
    pub outcome_json: Option<String>,
    /// The user who submitted it (or for whom an admin did).
    pub owner: String,
    /// CPU time of the run, when measured.
    pub cpu_seconds: Option<f64>,
    /// The batch it was submitted in, if any.
    pub batch_id: Option<String>,
    /// The workflow it belongs to, if any (`name` is then its key in the workflow file).
    pub workflow_id: Option<String>,
    /// Its place in the workflow file.
    pub workflow_pos: Option<i64>,
    /// What it requires in its workflow: `[{"job": name, "status": status}, ...]`.
    pub requires_json: Option<String>,
    /// Never collected by retention (`POST /v1/jobs/{id}/pin`).
    pub pinned: bool,
    /// When retention removed its files (the row stays).
    pub collected_at: Option<f64>,
    /// The earlier job whose results answered this one (the result cache).
    pub cached_from: Option<String>,
}

/// Statuses a job cannot leave: a run's final statuses, and `skipped` (a workflow's job whose
/// requirements can no longer be met), as the library's workflows know them.
pub const FINAL: &[&str] = jobpack_core::workflow::FINAL;

pub fn is_final(status: JobStatus, run: bool) -> bool {
    status.is_final_for(run)
}

/// A status read from the database (an unknown name is a conversion error naming it).
fn status_of(r: &Row<'_>) -> rusqlite::Result<JobStatus> {
    let s: String = r.get("status")?;
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// A time as the APIs show it: RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(t: f64) -> String {
    let st = UNIX_EPOCH + std::time::Duration::from_secs_f64(t.max(0.0));
    humantime::format_rfc3339_millis(st).to_string()
}

pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// What a set of inserted jobs forms.
pub enum Group<'a> {
    None,
    Batch(&'a batches::BatchRow),
    Workflow(&'a workflows::WorkflowRow),
}

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or SQLite's database) is full: nothing was written; try again once there is
    /// space.
    #[error(transparent)]
    Full(rusqlite::Error),
    #[error(transparent)]
    Db(rusqlite::Error),
    #[error("the database lock is poisoned (a thread panicked while holding it)")]
    Poisoned,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            StoreError::Full(e)
        } else {
            StoreError::Db(e)
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Why a job was not inserted.
#[derive(Debug)]
pub enum InsertError {
    /// The owner already has this many jobs that have not ended.
    TooManyActive(u64),
    Db(anyhow::Error),
}

/// The statuses of jobs that have not ended (a pack-only job ends at `packed`; a workflow's job
/// is `waiting` until its requirements are met).
pub(super) const ACTIVE_SQL: &str = "(status IN ('waiting', 'scheduled', 'queued', 'packing', 'running') \
     OR (status = 'packed' AND run = 1))";

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

pub(super) fn row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get("id")?,
        name: r.get("name")?,
        status: status_of(r)?,
        source: r.get("source")?,
        request_json: r.get("request_json")?,
        run: r.get::<_, i64>("run")? != 0,
        created_at: r.get("created_at")?,
        updated_at: r.get("updated_at")?,
        started_at: r.get("started_at")?,
        finished_at: r.get("finished_at")?,
        exit_code: r.get("exit_code")?,
        signal: r.get("signal")?,
        reason: r.get("reason")?,
        error_code: r.get("error_code")?,
        artifact_sha256: r.get("artifact_sha256")?,
        artifact_size: r.get("artifact_size")?,
        commit_id: r.get("commit_id")?,
        outcome_json: r.get("outcome_json")?,
        owner: r.get("owner")?,
        cpu_seconds: r.get("cpu_seconds")?,
        batch_id: r.get("batch_id")?,
        workflow_id: r.get("workflow_id")?,
        workflow_pos: r.get("workflow_pos")?,
        requires_json: r.get("requires_json")?,
        pinned: r.get::<_, i64>("pinned")? != 0,
        collected_at: r.get("collected_at")?,
        cached_from: r.get("cached_from")?,
    })
}

/// After secrets were deleted: copies the WAL into the database (where `secure_delete` has
/// zeroed them) and truncates the WAL to nothing, so no frame that held a secret stays on disk.
fn forget_wal(c: &Connection) -> rusqlite::Result<()> {
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Statements through the connection's cache of prepared statements: a job's reads and state
/// changes run thousands of times, and parsing their SQL each time was ~2% of the server's CPU
/// under load.
pub(super) trait Cached {
    fn exec_cached<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize>;
    fn row_cached<T, P, F>(&self, sql: &str, p: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec_cached<P: rusqlite::Params>(&self, sql: &str, p: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }

    fn row_cached<T, P, F>(&self, sql: &str, p: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(p, f)
    }
}

/// Distinct statements kept prepared (rusqlite's default is 16; the store has ~100).
const STATEMENT_CACHE: usize = 128;

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(path)?;
        // It holds token hashes and the secrets of pending jobs: the server's user only (SQLite
        // gives its -wal and -shm files the same mode).
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        // Deleted secrets are overwritten, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL)",
        )?;
        for (name, sql) in migrations::MIGRATIONS {
            let done: Option<String> = conn
                .query_row(
                    "SELECT name FROM schema_migrations WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            if done.is_none() {
                let tx = conn.unchecked_transaction()?;
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO schema_migrations (name, applied_at) VALUES (?1, ?2)",
                    params![name, now()],
                )?;
                tx.commit()?;
            }
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let c = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        Ok(f(&c)?)
    }

    /// Inserts a new job (and its secrets, kept until it ends), unless its owner already has
    /// `max_active` jobs that have not ended: the check and the insert are one transaction.
    pub fn insert(
        &self,
        j: &JobRow,
        secret_json: Option<&str>,
        max_active: Option<u64>,
    ) -> Result<(), InsertError> {
        self.insert_all(
            Group::None,
            &[(j.clone(), secret_json.map(str::to_owned))],
            max_active,
            None,
        )
    }

    /// Inserts jobs of one owner (and the batch or workflow they form, if any) in one
    /// transaction, unless the owner's unfinished jobs would then be more than `max_active`: all
    /// or nothing, with the `audit` entry that records it (one commit, not two).
    pub fn insert_all(
        &self,
        group: Group<'_>,
        jobs: &[(JobRow, Option<String>)],
        max_active: Option<u64>,
        audit: Option<&accounts::Audit<'_>>,
    ) -> Result<(), InsertError> {
        let c = self
            .conn
            .lock()
            .map_err(|_| InsertError::Db(anyhow::anyhow!("database lock poisoned")))?;
        let db = |e: rusqlite::Error| InsertError::Db(e.into());
        let tx = c.unchecked_transaction().map_err(db)?;
        if let (Some(max), Some((first, _))) = (max_active, jobs.first()) {
            let n: i64 = tx
                .query_row(
                    &format!("SELECT COUNT(*) FROM jobs WHERE owner = ?1 AND {ACTIVE_SQL}"),
                    [&first.owner],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if n as u64 + jobs.len() as u64 > max {
                return Err(InsertError::TooManyActive(max));
            }
        }
        match group {
            Group::None => {}
            Group::Batch(b) => batches::insert_batch(&tx, b).map_err(db)?,
            Group::Workflow(w) => workflows::insert_workflow(&tx, w).map_err(db)?,
        }
        for (j, secret) in jobs {
            insert_job(&tx, j, secret.as_deref()).map_err(db)?;
        }
        if let Some(entry) = audit {
            accounts::write_audit(&tx, entry).map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    /// The secret_env of a job that has not ended (JSON object), if it has one.
    pub fn secrets(&self, id: &str) -> StoreResult<Option<String>> {
        self.with(|c| {
            c.row_cached(
                "SELECT secret_json FROM job_secrets WHERE job_id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()
        })
    }

    pub fn get(&self, id: &str) -> StoreResult<Option<JobRow>> {
        self.with(|c| {
            c.row_cached("SELECT * FROM jobs WHERE id = ?1", [id], row)
                .optional()
        })
    }

    /// Writes and commits the readiness row: whether the store takes writes now (the file
    /// system has room, the database is not locked or read-only).
    pub fn probe_write(&self) -> StoreResult<()> {
        self.with(|c| {
            c.exec_cached(
                "INSERT INTO readiness (id, at) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                [now()],
            )
            .map(drop)
        })
    }

    /// Ids of jobs in `status`, oldest first.
    pub fn ids_with_status(&self, status: JobStatus) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id FROM jobs WHERE status = ?1 ORDER BY created_at")?;
            st.query_map([status.as_str()], |r| r.get(0))?.collect()
        })
    }

    /// Sets the status (and `started_at` when entering `running`).
    pub fn set_status(&self, id: &str, status: JobStatus) -> StoreResult<()> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE jobs SET status = ?2, updated_at = ?3, \
                 started_at = CASE WHEN ?2 = 'running' THEN ?3 ELSE started_at END WHERE id = ?1",
                params![id, status.as_str(), now()],
            )
            .map(drop)
        })
    }

    /// Records that job `id` is packed, with its artifact's signed `provenance` (one commit).
    pub fn set_packed(
        &self,
        id: &str,
        sha256: &str,
        size: u64,
        commit: Option<&str>,
        provenance: &[u8],
    ) -> StoreResult<()> {
        self.with(|c| {
            // One transaction: the state, its provenance and the secrets' end are one change
            // (and one commit).
            let tx = c.unchecked_transaction()?;
            tx.exec_cached(
                "UPDATE jobs SET status = 'packed', updated_at = ?2, artifact_sha256 = ?3, \
                 artifact_size = ?4, commit_id = ?5 WHERE id = ?1",
                params![id, now(), sha256, size as i64, commit],
            )?;
            documents::put(&tx, id, documents::Doc::Provenance, provenance)?;
            // A pack-only job has ended: its secrets are not needed any more, nor the WAL's
            // frames that held them (as when a run ends).
            let had_secrets = tx.exec_cached(
                "DELETE FROM job_secrets WHERE job_id = ?1 \
                 AND EXISTS (SELECT 1 FROM jobs WHERE id = ?1 AND run = 0)",
                [id],
            )? > 0;
            tx.commit()?;
            if had_secrets {
                forget_wal(c)?;
            }
            Ok(())
        })
    }

    /// Records a final state, with the run's receipt if it has one (and forgets the job's
    /// secrets: it will not run again).
    pub fn finish(&self, id: &str, end: &Finish<'_>) -> StoreResult<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.exec_cached(
                "UPDATE jobs SET status = ?2, updated_at = ?3, finished_at = ?3, exit_code = ?4, \
                 signal = ?5, reason = ?6, error_code = ?7, outcome_json = ?8, cpu_seconds = ?9 \
                 WHERE id = ?1",
                params![
                    id,
                    end.status.as_str(),
                    now(),
                    end.exit_code,
                    end.signal,
                    end.reason,
                    end.error_code,
                    end.outcome_json,
                    end.cpu_seconds
                ],
            )?;
            if let Some(receipt) = end.receipt {
                documents::put(&tx, id, documents::Doc::Receipt, receipt)?;
            }
            let had_secrets =
                tx.exec_cached("DELETE FROM job_secrets WHERE job_id = ?1", [id])? > 0;
            tx.commit()?;
            if had_secrets {
                forget_wal(c)?;
            }
            Ok(())
        })
    }

    pub fn delete(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| {
            let had_secrets = c.exec_cached("DELETE FROM job_secrets WHERE job_id = ?1", [id])? > 0;
            c.exec_cached("DELETE FROM job_attempts WHERE job_id = ?1", [id])?;
            c.exec_cached("DELETE FROM job_usage WHERE job_id = ?1", [id])?;
            documents::remove(c, id)?;
            webhooks::delete_job_hooks(c, id)?;
            let n = c.exec_cached("DELETE FROM jobs WHERE id = ?1", [id])?;
            if had_secrets {
                forget_wal(c)?;
            }
            Ok(n > 0)
        })
    }

    /// Counts by status, of one owner's jobs or (`None`) of all.
    pub fn counts(&self, owner: Option<&str>) -> StoreResult<Vec<(String, u64)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT status, COUNT(*) FROM jobs WHERE (?1 IS NULL OR owner = ?1) \
                 GROUP BY status ORDER BY status",
            )?;
            st.query_map([owner], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect()
        })
    }

    /// Running jobs by owner (owners with none are not listed).
    pub fn running_by_owner(&self) -> StoreResult<Vec<(String, u64)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT owner, COUNT(*) FROM jobs WHERE status = 'running' GROUP BY owner",
            )?;
            st.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
                .collect()
        })
    }

    /// CPU seconds used by one owner's finished runs.
    pub fn cpu_seconds(&self, owner: &str) -> StoreResult<f64> {
        self.with(|c| {
            c.row_cached(
                "SELECT COALESCE(SUM(cpu_seconds), 0) FROM jobs WHERE owner = ?1",
                [owner],
                |r| r.get(0),
            )
        })
    }

    /// Jobs of one owner that have not ended.
    pub fn active_count(&self, owner: &str) -> StoreResult<u64> {
        self.with(|c| {
            c.row_cached(
                &format!("SELECT COUNT(*) FROM jobs WHERE owner = ?1 AND {ACTIVE_SQL}"),
                [owner],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
        })
    }

    /// Durations of finished jobs, seconds from creation to finish (for metrics).
    pub fn durations(&self) -> StoreResult<(u64, f64)> {
        self.with(|c| {
            c.row_cached(
                "SELECT COUNT(*), COALESCE(SUM(finished_at - created_at), 0) FROM jobs \
                 WHERE finished_at IS NOT NULL",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
        })
    }
}

/// A job's final state, for [`Store::finish`].
#[derive(Debug)]
pub struct Finish<'a> {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub outcome_json: Option<&'a str>,
    pub cpu_seconds: Option<f64>,
    /// The signed receipt of the run (a DSSE envelope, JSON), stored in the same commit.
    pub receipt: Option<&'a [u8]>,
}

impl<'a> Finish<'a> {
    /// A job that ended without running to an outcome (failed, stopped before running, ...).
    pub fn early(status: JobStatus, reason: &'a str, error_code: Option<&'a str>) -> Self {
        Finish {
            status,
            reason: Some(reason),
            error_code,
            exit_code: None,
            signal: None,
            outcome_json: None,
            cpu_seconds: None,
            receipt: None,
        }
    }
}

impl Store {
    /// Everyone who owns a job.
    pub fn owners(&self) -> StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT DISTINCT owner FROM jobs ORDER BY owner")?;
            st.query_map([], |r| r.get(0))?.collect()
        })
    }
}

/// Inserts one job row (and its secrets) inside the caller's transaction.
pub(super) fn insert_job(
    tx: &rusqlite::Transaction<'_>,
    j: &JobRow,
    secret_json: Option<&str>,
) -> rusqlite::Result<()> {
    tx.exec_cached(
        "INSERT INTO jobs (id, name, status, source, request_json, run, created_at, updated_at, \
         owner, batch_id, workflow_id, workflow_pos, requires_json, priority, scheduled_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, \
                 COALESCE(json_extract(?5, '$.priority'), 0), json_extract(?5, '$.scheduled_at'))",
        params![
            j.id,
            j.name,
            j.status.as_str(),
            j.source,
            j.request_json,
            j.run as i64,
            j.created_at,
            j.updated_at,
            j.owner,
            j.batch_id,
            j.workflow_id,
            j.workflow_pos,
            j.requires_json
        ],
    )?;
    if let Some(s) = secret_json {
        tx.exec_cached(
            "INSERT INTO job_secrets (job_id, secret_json) VALUES (?1, ?2)",
            params![j.id, s],
        )?;
    }
    Ok(())
}
