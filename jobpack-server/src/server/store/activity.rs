//! The times of the jobs active in a window (created before its end, not ended before its
//! start), for the activity series (`service::activity`).

use super::{Store, StoreResult};

/// When a job was created, started and ended, and how it ended.
#[derive(Debug, Clone)]
pub struct JobTimes {
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    pub status: String,
}

impl Store {
    /// The jobs (of `owner`, or everyone's) that were waiting, running or ended between `since`
    /// and `until`; at most `limit`, and whether there were more.
    pub fn active_between(
        &self,
        owner: Option<&str>,
        since: f64,
        until: f64,
        limit: u32,
    ) -> StoreResult<(Vec<JobTimes>, bool)> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT created_at, started_at, finished_at, status FROM jobs \
                 WHERE (finished_at IS NULL OR finished_at >= ?1) AND created_at <= ?2 \
                 AND (?3 IS NULL OR owner = ?3) LIMIT ?4",
            )?;
            let rows = st.query_map(
                rusqlite::params![since, until, owner, i64::from(limit) + 1],
                |r| {
                    Ok(JobTimes {
                        created_at: r.get(0)?,
                        started_at: r.get(1)?,
                        finished_at: r.get(2)?,
                        status: r.get(3)?,
                    })
                },
            )?;
            let mut rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let more = rows.len() > limit as usize;
            rows.truncate(limit as usize);
            Ok((rows, more))
        })
    }
}
