//! What retention needs of the store: pinning, the jobs whose files may go (ended, not pinned,
//! not collected yet), oldest first, and marking one collected (its row stays).

use rusqlite::params;

use super::{ACTIVE_SQL, JobRow, Store, StoreResult, now, row};

impl Store {
    /// Pins or unpins a job; `false` if there is no such job.
    pub fn set_pinned(&self, id: &str, pinned: bool) -> StoreResult<bool> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET pinned = ?2 WHERE id = ?1",
                params![id, pinned as i64],
            )
            .map(|n| n > 0)
        })
    }

    /// Jobs whose files retention may remove, the longest-ended first: not active, not pinned,
    /// not collected, and ended (`updated_at`) before `ended_before`.
    pub fn collectable(&self, ended_before: f64) -> StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let sql = format!(
                "SELECT * FROM jobs WHERE collected_at IS NULL AND pinned = 0 \
                 AND NOT {ACTIVE_SQL} AND updated_at < ?1 \
                 ORDER BY COALESCE(finished_at, updated_at), id"
            );
            let mut st = c.prepare(&sql)?;
            st.query_map([ended_before], row)?.collect()
        })
    }

    /// Records that a job's files are gone (once: a second call changes nothing), and its
    /// signed statements with them.
    pub fn set_collected(&self, id: &str) -> StoreResult<bool> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let n = tx.execute(
                "UPDATE jobs SET collected_at = ?2 WHERE id = ?1 AND collected_at IS NULL",
                params![id, now()],
            )?;
            super::documents::remove(&tx, id)?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Completed jobs with the artifact `sha256` whose files are still there, newest first:
    /// the result cache's candidates for job `not`.
    pub fn cache_candidates(&self, sha256: &str, not: &str) -> StoreResult<Vec<JobRow>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT * FROM jobs WHERE artifact_sha256 = ?1 AND status = 'completed' \
                 AND collected_at IS NULL AND id != ?2 ORDER BY finished_at DESC LIMIT 20",
            )?;
            st.query_map(params![sha256, not], row)?.collect()
        })
    }

    /// Records that `id` was answered by `source`'s results.
    pub fn set_cached_from(&self, id: &str, source: &str) -> StoreResult<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET cached_from = ?2 WHERE id = ?1",
                params![id, source],
            )
            .map(drop)
        })
    }
}
