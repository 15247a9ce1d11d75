//! What the service did minute by minute (the dashboard's overview): jobs ended per minute by
//! status, and how many were waiting and running at the end of each minute, from the jobs'
//! own times (nothing is sampled for it). A caller who sees only their own jobs gets theirs.

use std::collections::BTreeMap;

use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{ServiceError, ServiceResult};

/// Most minutes one answer covers (a day).
pub const MAX_MINUTES: u32 = 1440;
/// Most jobs read for one answer; beyond it the series says it is partial.
const MAX_JOBS: u32 = 200_000;

/// One minute.
#[derive(Debug, Clone, PartialEq)]
pub struct Minute {
    /// Its end (seconds since the epoch).
    pub end: f64,
    /// Jobs that ended in it, by final status.
    pub ended: BTreeMap<String, u64>,
    /// Jobs created but not yet started (nor ended) at its end.
    pub waiting: u64,
    /// Jobs started and not ended at its end.
    pub running: u64,
}

pub struct Activity {
    pub minutes: Vec<Minute>,
    /// More jobs were active than one answer reads: the counts are of the first ones.
    pub partial: bool,
}

/// The last `minutes` whole minutes and the current one, oldest first.
pub fn activity(svc: &Service, caller: &Caller, minutes: u32) -> ServiceResult<Activity> {
    require(caller, Action::Read, "read jobs")?;
    let n = minutes.clamp(1, MAX_MINUTES);
    let now = crate::server::store::now();
    let last_end = (now / 60.0).floor() * 60.0 + 60.0;
    let since = last_end - 60.0 * f64::from(n);
    let owner = caller.owner_filter();
    let (jobs, partial) = svc
        .runner
        .store
        .active_between(owner.as_deref(), since, now, MAX_JOBS)
        .map_err(ServiceError::internal)?;
    let mut out: Vec<Minute> = (1..=n)
        .map(|k| Minute {
            end: since + 60.0 * f64::from(k),
            ended: BTreeMap::new(),
            waiting: 0,
            running: 0,
        })
        .collect();
    // Each job adds one to every minute whose end falls in its waiting [created, started) and
    // running [started, ended) spans: a difference array over the minutes' ends (the current
    // minute's end is now).
    let ends: Vec<f64> = out.iter().map(|m| m.end.min(now)).collect();
    let first_at_or_after = |t: f64| ends.partition_point(|e| *e < t);
    let (mut waiting, mut running) = (vec![0i64; n as usize + 1], vec![0i64; n as usize + 1]);
    let span = |d: &mut Vec<i64>, from: f64, to: f64| {
        let (a, b) = (first_at_or_after(from), first_at_or_after(to));
        if a < b {
            d[a] += 1;
            d[b] -= 1;
        }
    };
    for j in &jobs {
        let end = j.finished_at.unwrap_or(f64::INFINITY);
        if let Some(f) = j.finished_at
            && f >= since
        {
            let k = (((f - since) / 60.0) as usize).min(out.len() - 1);
            *out[k].ended.entry(j.status.clone()).or_default() += 1;
        }
        let started = j.started_at.unwrap_or(f64::INFINITY).min(end);
        span(&mut waiting, j.created_at, started);
        span(&mut running, started, end);
    }
    let (mut w, mut r) = (0i64, 0i64);
    for (k, m) in out.iter_mut().enumerate() {
        w += waiting[k];
        r += running[k];
        m.waiting = w.max(0) as u64;
        m.running = r.max(0) as u64;
    }
    Ok(Activity {
        minutes: out,
        partial,
    })
}
