//! The seed's `JobService`: the same job RPCs as `JobletService`, and workflows (run a workflow
//! file, its status with each job's name, dependencies and times, the list, its jobs).

use std::time::{Duration, UNIX_EPOCH};

use tonic::{Request, Response, Status};

use super::pb::job_service_server::JobService;
use super::pb::joblet_service_server::JobletService;
use super::{Door, pb, seed_status, status_of};
use crate::server::http::jobs::rfc3339;
use crate::server::service::auth::Action;
use crate::server::service::workflows::{self, Accepted};
use crate::server::store::JobRow;
use crate::server::store::workflows::{WorkflowRow, requirements, status};

fn timestamp(t: Option<f64>) -> Option<prost_types::Timestamp> {
    let d = UNIX_EPOCH + Duration::from_secs_f64(t?.max(0.0));
    Some(prost_types::Timestamp::from(d))
}

fn workflow_job(j: &JobRow) -> pb::WorkflowJob {
    let started = j.started_at.is_some();
    pb::WorkflowJob {
        job_id: if started { j.id.clone() } else { "0".into() },
        job_name: j.name.clone().unwrap_or_default(),
        status: seed_status(j.status.as_str()).into(),
        dependencies: requirements(j).into_iter().map(|r| r.job).collect(),
        start_time: timestamp(j.started_at),
        end_time: timestamp(j.finished_at),
        exit_code: if j.status.as_str() == "stopped" {
            -1
        } else {
            j.exit_code.unwrap_or(0)
        },
    }
}

fn workflow_info(w: &WorkflowRow, jobs: &[JobRow]) -> pb::WorkflowInfo {
    let completed = jobs
        .iter()
        .filter(|j| j.status.as_str() == "completed")
        .count();
    let failed = jobs
        .iter()
        .filter(|j| seed_status(j.status.as_str()) == "FAILED")
        .count();
    let last_end = jobs
        .iter()
        .filter_map(|j| j.finished_at)
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    let st = status(w, jobs);
    pb::WorkflowInfo {
        id: w.id.clone(),
        name: w.name.clone().unwrap_or_default(),
        status: st.to_uppercase(),
        total_jobs: jobs.len() as i32,
        completed_jobs: completed as i32,
        failed_jobs: failed as i32,
        created_at: rfc3339(w.created_at),
        completed_at: if matches!(st, "queued" | "running") {
            String::new()
        } else {
            last_end.map(rfc3339).unwrap_or_default()
        },
    }
}

impl Door {
    fn workflow(
        &self,
        req_caller: &crate::server::service::auth::Caller,
        id: &str,
    ) -> Result<(WorkflowRow, Vec<JobRow>), Status> {
        let store = &self.svc.runner.store;
        let w = store
            .workflow(id)
            .map_err(|e| Status::internal(e.to_string()))?
            .filter(|w| req_caller.sees(&w.owner))
            .ok_or_else(|| Status::not_found(format!("workflow not found: {id}")))?;
        let jobs = store
            .workflow_jobs(id)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok((w, jobs))
    }
}

#[tonic::async_trait]
impl JobService for Door {
    async fn run_job(
        &self,
        req: Request<pb::RunJobReq>,
    ) -> Result<Response<pb::RunJobRes>, Status> {
        JobletService::run_job(self, req).await
    }

    async fn get_job_status(
        &self,
        req: Request<pb::GetJobStatusReq>,
    ) -> Result<Response<pb::GetJobStatusRes>, Status> {
        JobletService::get_job_status(self, req).await
    }

    async fn stop_job(
        &self,
        req: Request<pb::StopJobReq>,
    ) -> Result<Response<pb::StopJobRes>, Status> {
        JobletService::stop_job(self, req).await
    }

    async fn list_jobs(
        &self,
        req: Request<pb::EmptyRequest>,
    ) -> Result<Response<pb::Jobs>, Status> {
        JobletService::list_jobs(self, req).await
    }

    type GetJobLogsStream = <Door as JobletService>::GetJobLogsStream;

    async fn get_job_logs(
        &self,
        req: Request<pb::GetJobLogsReq>,
    ) -> Result<Response<Self::GetJobLogsStream>, Status> {
        JobletService::get_job_logs(self, req).await
    }

    async fn run_workflow(
        &self,
        req: Request<pb::RunWorkflowRequest>,
    ) -> Result<Response<pb::RunWorkflowResponse>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Submit, "run_workflow")?;
        let file = req.into_inner().yaml_content;
        match workflows::submit(&self.svc, &caller, file)
            .await
            .map_err(status_of)?
        {
            Accepted::Created(w) => {
                let (w, jobs) = self.workflow(&caller, &w.id)?;
                Ok(Response::new(pb::RunWorkflowResponse {
                    workflow_id: w.id.clone(),
                    status: status(&w, &jobs).to_uppercase(),
                }))
            }
            Accepted::Busy(why) => Err(Status::unavailable(why)),
        }
    }

    async fn get_workflow_status(
        &self,
        req: Request<pb::GetWorkflowStatusRequest>,
    ) -> Result<Response<pb::GetWorkflowStatusResponse>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Read, "get_workflow_status")?;
        let (w, jobs) = self.workflow(&caller, &req.get_ref().workflow_id)?;
        Ok(Response::new(pb::GetWorkflowStatusResponse {
            workflow: Some(workflow_info(&w, &jobs)),
            jobs: jobs.iter().map(workflow_job).collect(),
        }))
    }

    async fn list_workflows(
        &self,
        req: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Read, "list_workflows")?;
        let store = &self.svc.runner.store;
        let rows = store
            .workflows(caller.owner_filter().as_deref(), 1000, 0)
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut out = Vec::with_capacity(rows.len());
        for w in rows {
            let jobs = store
                .workflow_jobs(&w.id)
                .map_err(|e| Status::internal(e.to_string()))?;
            out.push(workflow_info(&w, &jobs));
        }
        Ok(Response::new(pb::ListWorkflowsResponse { workflows: out }))
    }

    async fn get_workflow_jobs(
        &self,
        req: Request<pb::GetWorkflowJobsRequest>,
    ) -> Result<Response<pb::GetWorkflowJobsResponse>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Read, "get_workflow_jobs")?;
        let (_, jobs) = self.workflow(&caller, &req.get_ref().workflow_id)?;
        Ok(Response::new(pb::GetWorkflowJobsResponse {
            jobs: jobs.iter().map(workflow_job).collect(),
        }))
    }
}
