//! The rules of reading and acting on jobs that every door shares: who may see which job, and
//! what cancelling and deleting one does.

use std::time::Duration;

use crate::server::scheduler::queue::{Runner, row_is_final};
use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{ServiceError, ServiceResult};
use crate::server::store::JobRow;

/// The job `id` if `caller` may read it; another user's job is "not found", as a missing one.
pub fn visible_row(runner: &Runner, caller: &Caller, id: &str) -> ServiceResult<JobRow> {
    require(caller, Action::Read, "read jobs")?;
    runner
        .store
        .get(id)
        .map_err(ServiceError::internal)?
        .filter(|r| caller.sees(&r.owner))
        .ok_or_else(|| ServiceError::not_found(format!("no job {id}")))
}

/// The job `id` for reading its files (log, artifact, manifest, working directory):
/// `Gone` once retention removed them.
pub fn files_row(runner: &Runner, caller: &Caller, id: &str) -> ServiceResult<JobRow> {
    let r = visible_row(runner, caller, id)?;
    match r.collected_at {
        Some(t) => Err(ServiceError::gone(format!(
            "the files of job {id} were removed by retention at {}; its record stays",
            crate::server::store::rfc3339(t)
        ))),
        None => Ok(r),
    }
}

/// Whether a failure to open one of a job's files means it is gone (a collection moved it
/// away): `Gone` then, else a failure of the server.
pub fn file_error(id: &str, e: std::io::Error) -> ServiceError {
    if e.kind() == std::io::ErrorKind::NotFound {
        ServiceError::gone(format!("the files of job {id} are gone"))
    } else {
        ServiceError::internal(e)
    }
}

/// Pins a job (retention never collects it) or unpins it; returns the row as it is now.
pub fn pin(svc: &Service, caller: &Caller, id: &str, pinned: bool) -> ServiceResult<JobRow> {
    require(caller, Action::Cancel, "pin jobs")?;
    visible_row(&svc.runner, caller, id)?;
    svc.runner
        .store
        .set_pinned(id, pinned)
        .map_err(ServiceError::internal)?;
    let action = if pinned { "job.pin" } else { "job.unpin" };
    svc.runner.store.audit(&caller.user, action, Some(id), None);
    visible_row(&svc.runner, caller, id)
}

/// Stops a job (SIGTERM to all of it, SIGKILL after the grace period; a waiting one is
/// skipped): `Conflict` if it has already ended. Returns the row as it was.
pub fn cancel(svc: &Service, caller: &Caller, id: &str) -> ServiceResult<JobRow> {
    require(caller, Action::Cancel, "cancel jobs")?;
    let r = visible_row(&svc.runner, caller, id)?;
    let runner = &svc.runner;
    // Here (an inline worker), or in the worker process that holds it, or not yet claimed.
    let elsewhere = || {
        let store = &runner.store;
        store.stop_unclaimed(id).unwrap_or(false) || store.request_cancel(id).unwrap_or(false)
    };
    if row_is_final(&r) || !(runner.cancel(id) || runner.cancel_waiting(&r) || elsewhere()) {
        return Err(ServiceError::conflict(
            "already_finished",
            format!("job {} has already ended ({})", r.id, r.status),
        ));
    }
    svc.runner
        .store
        .audit(&caller.user, "job.cancel", Some(&r.id), None);
    Ok(r)
}

/// Deletes a job: cancels it if it runs (waiting up to a minute for it to stop), then removes
/// its record and its files; a workflow's dependants of it are skipped.
pub async fn delete(svc: &Service, caller: &Caller, id: &str) -> ServiceResult<()> {
    require(caller, Action::Delete, "delete jobs")?;
    let r = visible_row(&svc.runner, caller, id)?;
    let runner = &svc.runner;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    if runner.cancel(id) {
        while runner.is_live(id) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else if !row_is_final(&r) && !runner.store.stop_unclaimed(id).unwrap_or(false) {
        // A worker process runs it: ask it to stop, and wait until it has.
        if runner
            .store
            .request_cancel(id)
            .map_err(ServiceError::internal)?
        {
            while tokio::time::Instant::now() < deadline {
                match runner.store.get(id).map_err(ServiceError::internal)? {
                    Some(now) if !row_is_final(&now) => {
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    _ => break,
                }
            }
        }
    }
    runner.store.delete(id).map_err(ServiceError::internal)?;
    runner.remove_files(id).map_err(ServiceError::internal)?;
    if let Some(w) = &r.workflow_id {
        // Jobs that required it can no longer have it: they are skipped.
        runner.advance(w);
    }
    let detail = format!("owner={} status={}", r.owner, r.status);
    runner
        .store
        .audit(&caller.user, "job.delete", Some(id), Some(&detail));
    Ok(())
}

/// One point of a job's usage series, with the CPU rate since the point before it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsagePoint {
    pub at_ms: i64,
    pub sample: jobpack_core::exec::UsageSample,
    /// Cores used since the previous point (`None` for the first of a run).
    pub cpu_cores: Option<f64>,
}

/// A job's usage series, oldest first, and its peaks: the outcome's when the job ended, else
/// those of the points so far.
pub struct UsageSeries {
    pub job: JobRow,
    pub points: Vec<UsagePoint>,
    pub peaks: Option<jobpack_core::exec::UsagePeaks>,
    /// The server's step between two samples (`None`: it does not sample).
    pub interval: Option<Duration>,
}

pub fn usage(svc: &Service, caller: &Caller, id: &str) -> ServiceResult<UsageSeries> {
    let job = visible_row(&svc.runner, caller, id)?;
    let raw = svc
        .runner
        .store
        .usage(&job.id)
        .map_err(ServiceError::internal)?;
    let mut points: Vec<UsagePoint> = Vec::with_capacity(raw.len());
    let mut peaks = jobpack_core::exec::UsagePeaks::default();
    for (at_ms, sample) in raw {
        let before = points.last().map(|p| (p.at_ms, &p.sample));
        let cpu_cores = crate::server::scheduler::usage::step(&mut peaks, before, at_ms, &sample);
        points.push(UsagePoint {
            at_ms,
            sample,
            cpu_cores,
        });
    }
    let recorded = job
        .outcome_json
        .as_deref()
        .and_then(|o| serde_json::from_str::<jobpack_core::exec::Outcome>(o).ok())
        .and_then(|o| o.peaks);
    Ok(UsageSeries {
        peaks: recorded.or((peaks.samples > 0).then_some(peaks)),
        interval: svc.runner.usage_interval(),
        points,
        job,
    })
}
