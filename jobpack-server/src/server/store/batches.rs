//! Batches in the store: a row per batch, and counters computed from the member jobs' rows on
//! every read, so they are exact however many jobs change at once (nothing to keep in step).

use rusqlite::{OptionalExtension, Row, params};

use super::{Store, now};

#[derive(Debug, Clone)]
pub struct BatchRow {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub owner: String,
    pub created_at: f64,
    pub cancelled_at: Option<f64>,
}

/// Member jobs by state, and when the batch started and ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// queued, packing, or packed and about to run.
    pub queued: u64,
    pub running: u64,
    /// completed (and pack-only jobs that were packed).
    pub completed: u64,
    /// failed, timed_out, oom_killed, limit_exceeded.
    pub failed: u64,
    pub stopped: u64,
    pub total: u64,
    pub started_at: Option<f64>,
    /// The last member's end, once all have ended.
    pub finished_at: Option<f64>,
}

impl Counters {
    /// queued, running, completed (all completed), failed (ended, some failed), stopped (ended,
    /// some stopped, none failed).
    pub fn status(&self) -> &'static str {
        if self.queued + self.running > 0 {
            if self.running > 0 || self.completed + self.failed + self.stopped > 0 {
                "running"
            } else {
                "queued"
            }
        } else if self.failed > 0 {
            "failed"
        } else if self.stopped > 0 {
            "stopped"
        } else {
            "completed"
        }
    }
}

pub(super) fn insert_batch(tx: &rusqlite::Transaction<'_>, b: &BatchRow) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO batches (id, name, description, owner, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![b.id, b.name, b.description, b.owner, b.created_at],
    )
    .map(drop)
}

fn batch_row(r: &Row<'_>) -> rusqlite::Result<BatchRow> {
    Ok(BatchRow {
        id: r.get("id")?,
        name: r.get("name")?,
        description: r.get("description")?,
        owner: r.get("owner")?,
        created_at: r.get("created_at")?,
        cancelled_at: r.get("cancelled_at")?,
    })
}

impl Store {
    pub fn batch(&self, id: &str) -> super::StoreResult<Option<BatchRow>> {
        self.with(|c| {
            c.query_row("SELECT * FROM batches WHERE id = ?1", [id], batch_row)
                .optional()
        })
    }

    /// Batches, newest first, of one owner or (`None`) of all.
    pub fn batches(
        &self,
        owner: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> super::StoreResult<Vec<BatchRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM batches WHERE (?1 IS NULL OR owner = ?1) \
                 ORDER BY created_at DESC, id LIMIT ?2 OFFSET ?3",
            )?;
            st.query_map(params![owner, limit, offset], batch_row)?
                .collect()
        })
    }

    pub fn batch_counters(&self, id: &str) -> super::StoreResult<Counters> {
        self.with(|c| {
            c.query_row(
                "SELECT \
                   COALESCE(SUM(status IN ('queued', 'packing') OR (status = 'packed' AND run = 1)), 0), \
                   COALESCE(SUM(status = 'running'), 0), \
                   COALESCE(SUM(status = 'completed' OR (status = 'packed' AND run = 0)), 0), \
                   COALESCE(SUM(status IN ('failed', 'timed_out', 'oom_killed', 'limit_exceeded')), 0), \
                   COALESCE(SUM(status = 'stopped'), 0), \
                   COUNT(*), MIN(started_at), MAX(finished_at) \
                 FROM jobs WHERE batch_id = ?1",
                [id],
                |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok(Counters {
                        queued: n(0)?,
                        running: n(1)?,
                        completed: n(2)?,
                        failed: n(3)?,
                        stopped: n(4)?,
                        total: n(5)?,
                        started_at: r.get(6)?,
                        finished_at: r.get(7)?,
                    })
                },
            )
        })
        .map(|mut c| {
            if c.queued + c.running > 0 {
                c.finished_at = None;
            }
            c
        })
    }

    /// Ids of the batch's jobs that have not ended.
    pub fn batch_unfinished(&self, id: &str) -> super::StoreResult<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT id FROM jobs WHERE batch_id = ?1 AND {} ORDER BY created_at",
                super::ACTIVE_SQL
            ))?;
            st.query_map([id], |r| r.get(0))?.collect()
        })
    }

    pub fn set_batch_cancelled(&self, id: &str) -> super::StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE batches SET cancelled_at = COALESCE(cancelled_at, ?2) WHERE id = ?1",
                params![id, now()],
            )
            .map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_status_follows_its_counters() {
        let c = |queued, running, completed, failed, stopped| {
            Counters {
                queued,
                running,
                completed,
                failed,
                stopped,
                ..Counters::default()
            }
            .status()
        };
        assert_eq!(c(3, 0, 0, 0, 0), "queued");
        assert_eq!(c(2, 0, 1, 0, 0), "running");
        assert_eq!(c(0, 1, 0, 0, 0), "running");
        assert_eq!(c(0, 0, 3, 0, 0), "completed");
        assert_eq!(c(0, 0, 2, 1, 1), "failed");
        assert_eq!(c(0, 0, 2, 0, 1), "stopped");
    }
}
