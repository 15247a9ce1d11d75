//! Earlier attempts of jobs that were retried: one row each, kept with the job (and removed
//! with it).

use super::Cached;
use rusqlite::params;
use serde::Serialize;

use super::{Store, StoreResult};

/// One ended attempt of a job that then ran again.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRow {
    pub job_id: String,
    /// 1, 2, ...
    pub attempt: i64,
    pub status: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub started_at: Option<f64>,
    pub finished_at: f64,
    pub outcome_json: Option<String>,
}

impl Store {
    pub fn add_attempt(&self, a: &AttemptRow) -> StoreResult<()> {
        self.with(|c| {
            c.exec_cached(
                "INSERT OR REPLACE INTO job_attempts (job_id, attempt, status, exit_code, signal, \
                 reason, started_at, finished_at, outcome_json) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    a.job_id,
                    a.attempt,
                    a.status,
                    a.exit_code,
                    a.signal,
                    a.reason,
                    a.started_at,
                    a.finished_at,
                    a.outcome_json
                ],
            )
            .map(drop)
        })
    }

    /// A job's earlier attempts, first first.
    pub fn attempts(&self, job_id: &str) -> StoreResult<Vec<AttemptRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT job_id, attempt, status, exit_code, signal, reason, started_at, \
                 finished_at, outcome_json FROM job_attempts WHERE job_id = ?1 ORDER BY attempt",
            )?;
            st.query_map([job_id], |r| {
                Ok(AttemptRow {
                    job_id: r.get(0)?,
                    attempt: r.get(1)?,
                    status: r.get(2)?,
                    exit_code: r.get(3)?,
                    signal: r.get(4)?,
                    reason: r.get(5)?,
                    started_at: r.get(6)?,
                    finished_at: r.get(7)?,
                    outcome_json: r.get(8)?,
                })
            })?
            .collect()
        })
    }

    /// How many earlier attempts a job has.
    pub fn attempt_count(&self, job_id: &str) -> StoreResult<i64> {
        self.with(|c| {
            c.row_cached(
                "SELECT COUNT(*) FROM job_attempts WHERE job_id = ?1",
                [job_id],
                |r| r.get(0),
            )
        })
    }
}
