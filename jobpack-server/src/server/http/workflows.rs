//! `/v1/workflows`: a workflow file (YAML or JSON) is checked whole by the library (names,
//! requirements, cycles) and each job as a submission; then every job is stored `waiting` in one
//! transaction and the runner starts those whose requirements are met (`workflows.rs`).

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Binary, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::server::http::jobs::rfc3339;
use crate::server::http::problem::{ApiError, ApiResult, Submitted, internal, problem};
use crate::server::service::auth::require;
use crate::server::service::auth::{Action, Caller};
use crate::server::service::workflows::Accepted;
use crate::server::service::{self, Service};
use crate::server::store::JobRow;
use crate::server::store::workflows::{WorkflowRow, requirements, status};

#[derive(Tags)]
enum WorkflowTags {
    /// Workflows: jobs that start when the jobs they require have ended as required.
    Workflows,
}

pub struct WorkflowsApi {
    pub svc: Arc<Service>,
}

/// A job another one requires, and the status it must end in.
#[derive(Debug, Object)]
pub struct Dependency {
    /// Its name in the workflow.
    pub job: String,
    /// completed, failed, stopped, timed_out, oom_killed, limit_exceeded, or ended (any).
    pub status: String,
    #[oai(nullable)]
    pub job_id: Option<String>,
}

/// One job of a workflow.
#[derive(Debug, Object)]
pub struct WorkflowJobInfo {
    /// Its key in the workflow file.
    pub name: String,
    pub job_id: String,
    /// waiting, queued, packing, packed, running, completed, failed, stopped, timed_out,
    /// oom_killed, limit_exceeded, or skipped (its requirements can no longer be met).
    pub status: String,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    /// Why it failed, stopped or was skipped.
    #[oai(nullable)]
    pub reason: Option<String>,
    pub dependencies: Vec<Dependency>,
    #[oai(nullable)]
    pub started_at: Option<String>,
    #[oai(nullable)]
    pub finished_at: Option<String>,
}

/// A workflow and its jobs, in the order of its file.
#[derive(Debug, Object)]
pub struct WorkflowInfo {
    pub workflow_id: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub owner: String,
    /// queued (no job started), running, completed (every job completed), failed (ended, not
    /// all completed), stopped (cancelled).
    pub status: String,
    pub created_at: String,
    /// When the last job ended, once all have.
    #[oai(nullable)]
    pub finished_at: Option<String>,
    #[oai(nullable)]
    pub cancelled_at: Option<String>,
    pub jobs: Vec<WorkflowJobInfo>,
}

fn info(w: WorkflowRow, jobs: Vec<JobRow>) -> WorkflowInfo {
    let status = status(&w, &jobs).to_owned();
    let finished_at = if matches!(status.as_str(), "queued" | "running") {
        None
    } else {
        jobs.iter()
            .filter_map(|j| j.finished_at)
            .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))))
    };
    let ids: std::collections::HashMap<String, String> = jobs
        .iter()
        .filter_map(|j| Some((j.name.clone()?, j.id.clone())))
        .collect();
    let jobs = jobs
        .into_iter()
        .map(|j| WorkflowJobInfo {
            dependencies: requirements(&j)
                .into_iter()
                .map(|r| Dependency {
                    job_id: ids.get(&r.job).cloned(),
                    job: r.job,
                    status: r.status,
                })
                .collect(),
            name: j.name.unwrap_or_default(),
            job_id: j.id,
            status: j.status.as_str().into(),
            exit_code: j.exit_code,
            reason: j.reason,
            started_at: j.started_at.map(rfc3339),
            finished_at: j.finished_at.map(rfc3339),
        })
        .collect();
    WorkflowInfo {
        workflow_id: w.id,
        name: w.name,
        owner: w.owner,
        status,
        created_at: rfc3339(w.created_at),
        finished_at: finished_at.map(rfc3339),
        cancelled_at: w.cancelled_at.map(rfc3339),
        jobs,
    }
}

#[derive(Debug, Object)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowInfo>,
}

// One answer per request: the size of the variants does not matter.

#[derive(ApiResponse)]
pub enum WorkflowCancelled {
    /// Its running jobs are being stopped; its waiting jobs are skipped.
    #[oai(status = 202)]
    Accepted(Json<WorkflowInfo>),
}

impl WorkflowsApi {
    fn visible(&self, caller: &Caller, id: &str) -> ApiResult<WorkflowRow> {
        require(caller, Action::Read, "read workflows")?;
        self.svc
            .runner
            .store
            .workflow(id)
            .map_err(internal)?
            .filter(|w| caller.sees(&w.owner))
            .ok_or_else(|| {
                ApiError::NotFound(problem(404, "not_found", format!("no workflow {id}")))
            })
    }

    fn info(&self, w: WorkflowRow) -> ApiResult<WorkflowInfo> {
        let jobs = self
            .svc
            .runner
            .store
            .workflow_jobs(&w.id)
            .map_err(internal)?;
        Ok(info(w, jobs))
    }
}

#[OpenApi(tag = "WorkflowTags::Workflows")]
impl WorkflowsApi {
    /// Submit a workflow: the file itself (YAML or JSON, any content type) with `name` and
    /// `jobs`, each job a submission as for `POST /jobs` plus `requires: [{other: status}]`.
    /// Everything is checked before anything is stored or started.
    #[oai(path = "/workflows", method = "post")]
    async fn create(
        &self,
        caller: Caller,
        body: Binary<Vec<u8>>,
    ) -> ApiResult<Submitted<WorkflowInfo>> {
        match service::workflows::submit(&self.svc, &caller, body.0).await? {
            Accepted::Created(w) => Ok(Submitted::Created(Json(self.info(w)?))),
            Accepted::Busy(why) => Ok(Submitted::Busy(problem(503, "busy", why))),
        }
    }

    /// Workflows, newest first (the caller's own; admins see everyone's, or `owner`'s).
    #[oai(path = "/workflows", method = "get")]
    async fn list(
        &self,
        caller: Caller,
        owner: Query<Option<String>>,
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        #[oai(
            default,
            validator(minimum(value = "0"), maximum(value = "4294967295"))
        )]
        offset: Query<u32>,
    ) -> ApiResult<Json<WorkflowList>> {
        require(&caller, Action::Read, "read workflows")?;
        let owner = caller.owner_filter().or(owner.0);
        let rows = self
            .svc
            .runner
            .store
            .workflows(owner.as_deref(), limit.0, offset.0)
            .map_err(internal)?;
        let workflows = rows
            .into_iter()
            .map(|w| self.info(w))
            .collect::<ApiResult<_>>()?;
        Ok(Json(WorkflowList { workflows }))
    }

    /// One workflow: its status and every job's name, id, status, exit code and dependencies.
    #[oai(path = "/workflows/:id", method = "get")]
    async fn get(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<WorkflowInfo>> {
        let w = self.visible(&caller, &id)?;
        Ok(Json(self.info(w)?))
    }

    /// Cancel a workflow: its running (and queued) jobs are stopped, its waiting jobs skipped.
    #[oai(path = "/workflows/:id/cancel", method = "post")]
    async fn cancel(&self, caller: Caller, id: Path<String>) -> ApiResult<WorkflowCancelled> {
        require(&caller, Action::Cancel, "cancel workflows")?;
        let w = self.visible(&caller, &id)?;
        self.svc
            .runner
            .store
            .set_workflow_cancelled(&w.id)
            .map_err(internal)?;
        // Skips every waiting job; after it, no job of the workflow starts any more.
        self.svc.runner.advance(&w.id);
        let jobs = self
            .svc
            .runner
            .store
            .workflow_jobs(&w.id)
            .map_err(internal)?;
        let mut stopping = 0;
        for j in jobs
            .iter()
            .filter(|j| !crate::server::scheduler::queue::row_is_final(j))
        {
            if self.svc.runner.cancel(&j.id) {
                stopping += 1;
            }
        }
        self.svc.runner.store.audit(
            &caller.user,
            "workflow.cancel",
            Some(&w.id),
            Some(&format!("stopping={stopping}")),
        );
        let w = self.visible(&caller, &id)?;
        Ok(WorkflowCancelled::Accepted(Json(self.info(w)?)))
    }
}

fn default_limit() -> u32 {
    100
}

/// A workflow as `GET /v1/workflows/{id}` answers it, as JSON (a webhook's `data`).
pub(crate) fn workflow_json(
    store: &crate::server::store::Store,
    id: &str,
) -> Option<serde_json::Value> {
    use poem_openapi::types::ToJSON;
    let w = store.workflow(id).ok()??;
    let jobs = store.workflow_jobs(id).ok()?;
    info(w, jobs).to_json()
}
