//! Sampling a running job's resources: every interval the run's handle reads its cgroup, the
//! sample goes into the store (`GET /v1/jobs/{id}/usage`), and the peaks go into the outcome.
//! A job keeps at most `max_samples`: at the limit every second sample is dropped and the
//! interval doubles, so a long run keeps all of its time at a coarser step.

use std::time::Duration;

use jobpack_core::exec::{RunHandle, UsagePeaks, UsageSample};

use crate::server::store::Store;

/// How often, and how many per job.
#[derive(Debug, Clone, Copy)]
pub struct UsageOptions {
    /// `None`: no sampling.
    pub interval: Option<Duration>,
    pub max_samples: u32,
}

impl Default for UsageOptions {
    fn default() -> Self {
        UsageOptions {
            interval: Some(Duration::from_secs(1)),
            max_samples: 3600,
        }
    }
}

/// Takes sample `s`, taken at `at_ms` (milliseconds since the epoch), into `peaks`, after
/// `before` (the previous sample and when); returns the cores used between the two. A sample
/// whose CPU counter went down (a retry's new cgroup) or no later than the previous starts anew.
/// The sampler and the series the API shows (`service::jobs::usage`) both step with this, so
/// the outcome's peaks and the series' agree.
pub(crate) fn step(
    peaks: &mut UsagePeaks,
    before: Option<(i64, &UsageSample)>,
    at_ms: i64,
    s: &UsageSample,
) -> Option<f64> {
    let before = before.filter(|(t, b)| *t < at_ms && b.cpu_nanos <= s.cpu_nanos);
    let elapsed = before.map_or(Duration::ZERO, |(t, _)| {
        Duration::from_millis((at_ms - t) as u64)
    });
    peaks.add(before.map(|(_, b)| b), s, elapsed)
}

/// One run's sampler.
pub(crate) struct Sampler {
    interval: Option<Duration>,
    max_samples: u64,
    /// Samples the store has of this job (read at the first sample: an earlier run's count).
    kept: Option<u64>,
    next: tokio::time::Instant,
    /// The previous sample of this run and when (milliseconds since the epoch).
    last: Option<(i64, UsageSample)>,
    peaks: UsagePeaks,
}

impl Sampler {
    pub(crate) fn new(opts: UsageOptions) -> Sampler {
        let now = tokio::time::Instant::now();
        Sampler {
            interval: opts.interval,
            max_samples: u64::from(opts.max_samples.max(2)),
            kept: None,
            next: now + opts.interval.unwrap_or_default(),
            last: None,
            peaks: UsagePeaks::default(),
        }
    }

    /// A run begins: its first sample is one interval from now.
    pub(crate) fn begin(&mut self) {
        self.next = tokio::time::Instant::now() + self.interval.unwrap_or_default();
    }

    /// Resolves when the next sample is due (never, without sampling).
    pub(crate) async fn due(&self) {
        match self.interval {
            Some(_) => tokio::time::sleep_until(self.next).await,
            None => std::future::pending().await,
        }
    }

    /// Takes a sample of `handle` for job `id` and keeps it. A failed write is logged: the
    /// series misses a point, the job goes on.
    pub(crate) async fn take(&mut self, store: &Store, id: &str, handle: &dyn RunHandle) {
        let Some(interval) = self.interval else {
            return;
        };
        self.next += interval;
        let Some(s) = handle.sample() else {
            return;
        };
        // Rates from the stored times, as the series' own are.
        let at_ms = (crate::server::store::now() * 1e3) as i64;
        let before = self.last.as_ref().map(|(t, b)| (*t, b));
        step(&mut self.peaks, before, at_ms, &s);
        self.last = Some((at_ms, s));
        let (store, job) = (store.clone(), id.to_owned());
        let max = self.max_samples;
        let kept = self.kept;
        let written = tokio::task::spawn_blocking(move || {
            let kept = match kept {
                Some(k) => k,
                None => store.usage_count(&job)?,
            };
            store.add_usage(&job, at_ms, &s)?;
            if kept + 1 >= max {
                return store.thin_usage(&job).map(|left| (left, true));
            }
            Ok((kept + 1, false))
        })
        .await;
        match written {
            Ok(Ok((left, thinned))) => {
                self.kept = Some(left);
                if thinned {
                    self.interval = Some(interval * 2);
                    self.next += interval;
                }
            }
            Ok(Err(e)) => tracing::warn!(job_id = id, error = %e, "usage sample not kept"),
            Err(e) => tracing::warn!(job_id = id, error = %e, "usage sample not kept"),
        }
    }

    /// The peaks of the run that ended, to keep in its outcome (`None` when nothing was
    /// sampled); the next run (a retry) starts afresh, its cgroup's counters at zero.
    pub(crate) fn end_run(&mut self) -> Option<UsagePeaks> {
        self.last = None;
        let p = std::mem::take(&mut self.peaks);
        (p.samples > 0).then_some(p)
    }
}
