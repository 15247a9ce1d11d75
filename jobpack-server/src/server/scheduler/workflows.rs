//! Workflow scheduling. Every job of a workflow is stored when the workflow is accepted,
//! `waiting`; [`Runner::advance`] moves a waiting job to `queued` once its requirements are met
//! (the library's [`readiness`] decides) or ends it `skipped` with the reason when they can no
//! longer be, and runs whenever one of the workflow's jobs ends, when it is cancelled, and at
//! start-up. The moves are the store's conditional UPDATEs, so each happens once.

use std::collections::HashMap;
use std::sync::Arc;

use jobpack_core::workflow::{Readiness, Requirement, readiness};

use crate::server::scheduler::queue::Runner;
use crate::server::store::workflows::requirements;
use crate::server::store::{JobRow, JobStatus};

impl Runner {
    /// Starts the workflow's waiting jobs whose requirements are met and skips those whose
    /// requirements can no longer be (all of them once the workflow is cancelled), until nothing
    /// changes: a skip can decide the jobs that require the skipped one.
    pub fn advance(self: &Arc<Self>, workflow_id: &str) {
        if let Err(e) = self.try_advance(workflow_id) {
            tracing::warn!(workflow_id = %workflow_id, "cannot schedule its jobs: {e:#}");
        }
    }

    fn try_advance(self: &Arc<Self>, workflow_id: &str) -> anyhow::Result<()> {
        // One advance at a time: a cancel must see every job an earlier advance started.
        let _one = self
            .workflow_lock
            .lock()
            .map_err(|_| anyhow::anyhow!("workflow lock poisoned"))?;
        let Some(wf) = self.store.workflow(workflow_id)? else {
            return Ok(());
        };
        let jobs = self.store.workflow_jobs(workflow_id)?;
        let mut status: HashMap<String, String> = jobs
            .iter()
            .filter_map(|j| Some((j.name.clone()?, j.status.as_str().to_owned())))
            .collect();
        // Each job's requirements, read once for all the rounds below.
        let requires: Vec<Vec<Requirement>> = jobs.iter().map(requirements).collect();
        loop {
            let mut changed = false;
            for (j, requires) in jobs.iter().zip(&requires) {
                let Some(name) = &j.name else { continue };
                if status.get(name).map(String::as_str) != Some(JobStatus::Waiting.as_str()) {
                    continue;
                }
                let decision = if wf.cancelled_at.is_some() {
                    Readiness::Unmeetable("the workflow was cancelled".into())
                } else {
                    readiness(requires, |n| status.get(n).map(String::as_str))
                };
                match decision {
                    Readiness::Waiting => {}
                    Readiness::Ready => {
                        if self.store.start_waiting(&j.id)? {
                            status.insert(name.clone(), JobStatus::Queued.as_str().into());
                            self.spawn(j.id.clone());
                        }
                    }
                    Readiness::Unmeetable(reason) => {
                        if self.store.end_waiting(
                            &j.id,
                            JobStatus::Skipped,
                            &reason,
                            "requirement_unmet",
                        )? {
                            status.insert(name.clone(), JobStatus::Skipped.as_str().into());
                            changed = true;
                        }
                    }
                }
            }
            if !changed {
                return Ok(());
            }
        }
    }

    /// Ends a job that waits for its requirements (`stopped`) and lets its workflow move on.
    /// False if it was not waiting.
    pub fn cancel_waiting(self: &Arc<Self>, row: &JobRow) -> bool {
        let ended = self
            .store
            .end_waiting(
                &row.id,
                JobStatus::Stopped,
                "cancelled before its requirements were met",
                "cancelled",
            )
            .unwrap_or(false);
        if ended && let Some(w) = &row.workflow_id {
            self.advance(w);
        }
        ended
    }

    /// The working directories (`code/` of the unpacked artifact, where the command runs) of
    /// the jobs `row` requires, to be shown read-only at `deps/<name>/` of its own (a required
    /// job that never ran has none).
    pub fn dependency_dirs(
        &self,
        row: &JobRow,
    ) -> anyhow::Result<Vec<(String, std::path::PathBuf)>> {
        let Some(w) = &row.workflow_id else {
            return Ok(Vec::new());
        };
        let ids: HashMap<String, String> = self
            .store
            .workflow_jobs(w)?
            .into_iter()
            .filter_map(|j| Some((j.name?, j.id)))
            .collect();
        Ok(requirements(row)
            .into_iter()
            .filter_map(|r| {
                let dir = self.work_dir(ids.get(&r.job)?).join("code");
                dir.is_dir().then_some((r.job, dir))
            })
            .collect())
    }
}
