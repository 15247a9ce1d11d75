//! Workflows in the store: the workflow rows, their jobs, and the conditional UPDATEs
//! (`WHERE status = 'waiting'`) with which the scheduler (`server::workflows`) starts or skips a
//! waiting job exactly once, however many of its requirements end at the same moment.

use jobpack_core::workflow::Requirement;
use rusqlite::{OptionalExtension, Row, params};

use super::{JobRow, Store, now};

#[derive(Debug, Clone)]
pub struct WorkflowRow {
    pub id: String,
    pub name: Option<String>,
    pub owner: String,
    /// The workflow file as submitted.
    pub source: String,
    pub created_at: f64,
    pub cancelled_at: Option<f64>,
}

pub(super) fn insert_workflow(
    tx: &rusqlite::Transaction<'_>,
    w: &WorkflowRow,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO workflows (id, name, owner, source, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![w.id, w.name, w.owner, w.source, w.created_at],
    )
    .map(drop)
}

fn workflow_row(r: &Row<'_>) -> rusqlite::Result<WorkflowRow> {
    Ok(WorkflowRow {
        id: r.get("id")?,
        name: r.get("name")?,
        owner: r.get("owner")?,
        source: r.get("source")?,
        created_at: r.get("created_at")?,
        cancelled_at: r.get("cancelled_at")?,
    })
}

/// A job's requirements as stored (none if unreadable: it then waits for nothing).
pub fn requirements(j: &JobRow) -> Vec<Requirement> {
    j.requires_json
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// What a workflow's jobs add up to: `queued` (none started), `running`, `completed` (all
/// completed), `stopped` (cancelled), `failed` (ended otherwise).
pub fn status(w: &WorkflowRow, jobs: &[JobRow]) -> &'static str {
    let active = |j: &&JobRow| !super::is_final(j.status, j.run);
    if jobs.iter().any(|j| active(&j)) {
        if jobs
            .iter()
            .all(|j| matches!(j.status.as_str(), "waiting" | "queued"))
        {
            "queued"
        } else {
            "running"
        }
    } else if w.cancelled_at.is_some() {
        "stopped"
    } else if jobs.iter().all(|j| j.status == super::JobStatus::Completed) {
        "completed"
    } else {
        "failed"
    }
}

impl Store {
    pub fn workflow(&self, id: &str) -> super::StoreResult<Option<WorkflowRow>> {
        self.with(|c| {
            c.query_row("SELECT * FROM workflows WHERE id = ?1", [id], workflow_row)
                .optional()
        })
    }

    /// Workflows, newest first, of one owner or (`None`) of all.
    pub fn workflows(
        &self,
        owner: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> super::StoreResult<Vec<WorkflowRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM workflows WHERE (?1 IS NULL OR owner = ?1) \
                 ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3",
            )?;
            st.query_map(params![owner, limit, offset], workflow_row)?
                .collect()
        })
    }

    /// The workflow's jobs in the order of its file.
    pub fn workflow_jobs(&self, id: &str) -> super::StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT * FROM jobs WHERE workflow_id = ?1 ORDER BY workflow_pos")?;
            st.query_map([id], super::row)?.collect()
        })
    }

    /// Workflows that have jobs still waiting.
    pub fn workflows_waiting(&self) -> super::StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT DISTINCT workflow_id FROM jobs WHERE status = 'waiting' \
                 AND workflow_id IS NOT NULL",
            )?;
            st.query_map([], |r| r.get(0))?.collect()
        })
    }

    pub fn set_workflow_cancelled(&self, id: &str) -> super::StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE workflows SET cancelled_at = COALESCE(cancelled_at, ?2) WHERE id = ?1",
                params![id, now()],
            )
            .map(drop)
        })
    }

    /// `waiting` -> `queued`; false if the job was not waiting (someone else moved it).
    pub fn start_waiting(&self, id: &str) -> super::StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET status = 'queued', updated_at = ?2 \
                 WHERE id = ?1 AND status = 'waiting'",
                params![id, now()],
            )
            .map(|n| n == 1)
        })
    }

    /// Ends a job that is still `waiting` (it never ran); false if it was not waiting.
    pub fn end_waiting(
        &self,
        id: &str,
        status: super::JobStatus,
        reason: &str,
        error_code: &str,
    ) -> super::StoreResult<bool> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let n = tx.execute(
                "UPDATE jobs SET status = ?2, updated_at = ?3, finished_at = ?3, reason = ?4, \
                 error_code = ?5 WHERE id = ?1 AND status = 'waiting'",
                params![id, status.as_str(), now(), reason, error_code],
            )?;
            tx.execute("DELETE FROM job_secrets WHERE job_id = ?1", [id])?;
            tx.commit()?;
            Ok(n == 1)
        })
    }
}
