//! Usage samples of running jobs (CPU, memory, processes, IO from their cgroups), one row each,
//! bounded per job by the runner ([`Store::thin_usage`]) and removed with the job.

use super::Cached;
use jobpack_core::exec::UsageSample;
use rusqlite::params;

use super::{Store, StoreResult};

impl Store {
    /// Keeps one sample of job `job_id`, taken at `at_ms` (milliseconds since the epoch).
    pub fn add_usage(&self, job_id: &str, at_ms: i64, s: &UsageSample) -> StoreResult<()> {
        let n = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        self.with(|c| {
            c.prepare_cached(
                "INSERT OR REPLACE INTO job_usage (job_id, at_ms, cpu_nanos, memory_bytes, pids, \
                 io_read_bytes, io_write_bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                job_id,
                at_ms,
                n(Some(s.cpu_nanos)),
                n(s.memory_bytes),
                n(s.pids),
                n(s.io_read_bytes),
                n(s.io_write_bytes),
            ])?;
            Ok(())
        })
    }

    /// Job `job_id`'s samples, oldest first: (milliseconds since the epoch, sample).
    pub fn usage(&self, job_id: &str) -> StoreResult<Vec<(i64, UsageSample)>> {
        let u = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT at_ms, cpu_nanos, memory_bytes, pids, io_read_bytes, io_write_bytes \
                 FROM job_usage WHERE job_id = ?1 ORDER BY at_ms",
            )?;
            let rows = st.query_map([job_id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    UsageSample {
                        cpu_nanos: u(r.get(1)?).unwrap_or(0),
                        memory_bytes: u(r.get(2)?),
                        pids: u(r.get(3)?),
                        io_read_bytes: u(r.get(4)?),
                        io_write_bytes: u(r.get(5)?),
                    },
                ))
            })?;
            rows.collect()
        })
    }

    /// How many samples job `job_id` has.
    pub fn usage_count(&self, job_id: &str) -> StoreResult<u64> {
        self.with(|c| {
            c.row_cached(
                "SELECT count(*) FROM job_usage WHERE job_id = ?1",
                [job_id],
                |r| r.get::<_, i64>(0),
            )
        })
        .map(|n| n as u64)
    }

    /// Drops every second sample of job `job_id` (the 2nd, 4th, ... oldest; the first stays),
    /// returning how many are left.
    pub fn thin_usage(&self, job_id: &str) -> StoreResult<u64> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.exec_cached(
                "DELETE FROM job_usage WHERE job_id = ?1 AND at_ms IN (SELECT at_ms FROM \
                 (SELECT at_ms, row_number() OVER (ORDER BY at_ms) AS n FROM job_usage \
                 WHERE job_id = ?1) WHERE n % 2 = 0)",
                [job_id],
            )?;
            let left: i64 = tx.row_cached(
                "SELECT count(*) FROM job_usage WHERE job_id = ?1",
                [job_id],
                |r| r.get(0),
            )?;
            tx.commit()?;
            Ok(left as u64)
        })
    }
}
