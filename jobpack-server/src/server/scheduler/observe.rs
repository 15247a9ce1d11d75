//! What the runner tells the log and the metrics at each recorded state change.

use crate::server::metrics::{FinishedLabels, StageLabels, StatusLabels};
use crate::server::scheduler::queue::Runner;
use crate::server::store::JobStatus;

impl Runner {
    /// One log line per recorded state change: the job, its new state, and how long the state
    /// it left lasted (`packing` is the pack, `packed` the unpack and the sandbox's start,
    /// `running` the run) when this process saw it begin.
    pub(super) fn log_state(&self, id: &str, status: &str) {
        let now = std::time::Instant::now();
        let (previous, born) = self
            .live
            .lock()
            .ok()
            .and_then(|mut live| {
                let l = live.get_mut(id)?;
                Some((
                    std::mem::replace(&mut l.stage, (status.to_owned(), now)),
                    l.born,
                ))
            })
            .unzip();
        let m = crate::server::metrics::get();
        if status.parse::<JobStatus>().is_ok_and(JobStatus::is_final) {
            m.finished
                .get_or_create(&FinishedLabels {
                    status: status.to_owned(),
                    backend: self.executor.backend().to_owned(),
                })
                .inc();
            if let Some(born) = born {
                m.job_total
                    .get_or_create(&StatusLabels {
                        status: status.to_owned(),
                    })
                    .observe((now - born).as_secs_f64());
            }
        }
        match previous {
            Some((stage, since)) => {
                let took = now - since;
                tracing::info!(
                    job_id = id,
                    status,
                    stage = stage.as_str(),
                    stage_ms = took.as_secs_f64() * 1e3,
                    "job state"
                );
                m.stage
                    .get_or_create(&StageLabels { stage })
                    .observe(took.as_secs_f64());
            }
            None => tracing::info!(job_id = id, status, "job state"),
        }
    }
}
