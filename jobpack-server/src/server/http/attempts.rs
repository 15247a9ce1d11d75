//! `/v1/jobs/{id}/attempts`: the runs of a job that was retried (its `retry` policy), each with
//! its status, exit code, times, outcome and log; the last is the job's own.

use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use crate::server::http::jobs::rfc3339;
use crate::server::http::logs::{LogText, log_text};
use crate::server::http::problem::{ApiError, ApiResult, internal, problem};
use crate::server::service::Service;
use crate::server::service::auth::Caller;
use crate::server::service::jobs::{files_row, visible_row};

#[derive(Tags)]
enum AttemptTags {
    /// Attempts: the runs of a retried job.
    Attempts,
}

/// One run of a job.
#[derive(Debug, Object)]
pub struct AttemptInfo {
    /// 1, 2, ...; the last is the job's current or final run.
    pub attempt: i64,
    pub status: String,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    #[oai(nullable)]
    pub signal: Option<i32>,
    #[oai(nullable)]
    pub reason: Option<String>,
    #[oai(nullable)]
    pub started_at: Option<String>,
    #[oai(nullable)]
    pub finished_at: Option<String>,
    /// The executor's outcome of that run.
    #[oai(nullable)]
    pub outcome: Option<serde_json::Value>,
    /// Where its log is.
    pub log_url: String,
}

#[derive(Debug, Object)]
pub struct AttemptList {
    pub attempts: Vec<AttemptInfo>,
}

pub struct AttemptsApi {
    pub svc: Arc<Service>,
}

#[OpenApi(tag = "AttemptTags::Attempts")]
impl AttemptsApi {
    /// Every run of a job, first first: the ended attempts of a retried job, then its current or
    /// final run (a job that never retried has one).
    #[oai(path = "/jobs/:id/attempts", method = "get")]
    async fn attempts(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<AttemptList>> {
        let r = visible_row(&self.svc.runner, &caller, &id)?;
        let earlier = self.svc.runner.store.attempts(&r.id).map_err(internal)?;
        let mut attempts: Vec<AttemptInfo> = earlier
            .into_iter()
            .map(|a| AttemptInfo {
                log_url: format!("/v1/jobs/{}/attempts/{}/logs", r.id, a.attempt),
                attempt: a.attempt,
                status: a.status,
                exit_code: a.exit_code,
                signal: a.signal,
                reason: a.reason,
                started_at: a.started_at.map(rfc3339),
                finished_at: Some(rfc3339(a.finished_at)),
                outcome: a.outcome_json.and_then(|o| serde_json::from_str(&o).ok()),
            })
            .collect();
        attempts.push(AttemptInfo {
            attempt: attempts.len() as i64 + 1,
            status: r.status.as_str().to_owned(),
            exit_code: r.exit_code,
            signal: r.signal,
            reason: r.reason,
            started_at: r.started_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
            outcome: r.outcome_json.and_then(|o| serde_json::from_str(&o).ok()),
            log_url: format!("/v1/jobs/{}/logs", r.id),
        });
        Ok(Json(AttemptList { attempts }))
    }

    /// The log of one run (the last one's is `/v1/jobs/{id}/logs`).
    #[oai(path = "/jobs/:id/attempts/:n/logs", method = "get")]
    async fn attempt_logs(
        &self,
        caller: Caller,
        id: Path<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))] n: Path<i64>,
    ) -> ApiResult<LogText> {
        let r = files_row(&self.svc.runner, &caller, &id)?;
        let earlier = self
            .svc
            .runner
            .store
            .attempt_count(&r.id)
            .map_err(internal)?;
        let path = if n.0 <= earlier {
            self.svc.runner.attempt_log_path(&r.id, n.0)
        } else if n.0 == earlier + 1 {
            self.svc.runner.log_path(&r.id)
        } else {
            return Err(ApiError::NotFound(problem(
                404,
                "not_found",
                format!("job {} has {} attempts", r.id, earlier + 1),
            )));
        };
        log_text(path, |_| 0, None).await
    }
}
