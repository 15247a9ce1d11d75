//! `/v1/batches`: many jobs submitted together (all validated first, all stored in one
//! transaction, or none), followed by counters over their member jobs, and cancelled together.

use std::sync::Arc;

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::server::http::jobs::{JobInfo, rfc3339};
use crate::server::http::problem::{ApiError, ApiResult, Submitted, internal, problem};
use crate::server::http::schema::{BatchSubmissionDoc, Documented};
use crate::server::service::auth::require;
use crate::server::service::auth::{Action, Caller};
use crate::server::service::batches::{Accepted, BatchRequest};
use crate::server::service::{self, Service};
use crate::server::store::ListFilter;
use crate::server::store::batches::{BatchRow, Counters};

#[derive(Tags)]
enum BatchTags {
    /// Batches: many jobs submitted, followed and cancelled together.
    Batches,
}

pub struct BatchesApi {
    pub svc: Arc<Service>,
}

/// A batch: its counters (computed from its jobs at the time of the request) and, on
/// `GET /batches/{id}`, its jobs.
#[derive(Debug, Object)]
pub struct BatchInfo {
    pub batch_id: String,
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    pub owner: String,
    /// queued, running, completed, failed (all ended, some failed), stopped.
    pub status: String,
    pub total: u64,
    /// queued, packing, or packed and about to run.
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    /// failed, timed_out, oom_killed or limit_exceeded.
    pub failed: u64,
    pub stopped: u64,
    pub created_at: String,
    /// When the first job started running.
    #[oai(nullable)]
    pub started_at: Option<String>,
    /// When the last job ended, once all have.
    #[oai(nullable)]
    pub finished_at: Option<String>,
    #[oai(nullable)]
    pub cancelled_at: Option<String>,
    /// Member jobs, oldest first (on `GET /batches/{id}` only).
    #[oai(nullable)]
    pub jobs: Option<Vec<JobInfo>>,
    /// The webhooks the submission carried, with their secrets (in the answer to it only).
    #[oai(skip_serializing_if_is_none)]
    pub webhooks: Option<Vec<crate::server::http::webhooks::WebhookInfo>>,
}

fn info(b: BatchRow, c: Counters, jobs: Option<Vec<JobInfo>>) -> BatchInfo {
    BatchInfo {
        batch_id: b.id,
        name: b.name,
        description: b.description,
        owner: b.owner,
        status: c.status().into(),
        total: c.total,
        queued: c.queued,
        running: c.running,
        completed: c.completed,
        failed: c.failed,
        stopped: c.stopped,
        created_at: rfc3339(b.created_at),
        started_at: c.started_at.map(rfc3339),
        finished_at: c.finished_at.map(rfc3339),
        cancelled_at: b.cancelled_at.map(rfc3339),
        jobs,
        webhooks: None,
    }
}

#[derive(Debug, Object)]
pub struct BatchList {
    pub batches: Vec<BatchInfo>,
}

// One answer per request: the size of the variants does not matter.

#[derive(ApiResponse)]
pub enum BatchCancelled {
    /// Its unfinished jobs are being stopped.
    #[oai(status = 202)]
    Accepted(Json<BatchInfo>),
}

impl BatchesApi {
    fn visible(&self, caller: &Caller, id: &str) -> ApiResult<BatchRow> {
        Ok(service::batches::visible(&self.svc, caller, id)?)
    }
}

#[OpenApi(tag = "BatchTags::Batches")]
impl BatchesApi {
    /// Submit a batch: `{name, description, jobs: [submission, ...]}`, each job as for
    /// `POST /jobs` (JSON). If any is invalid, nothing is created.
    #[oai(path = "/batches", method = "post")]
    async fn create(
        &self,
        caller: Caller,
        body: Json<Documented<BatchSubmissionDoc>>,
    ) -> ApiResult<Submitted<BatchInfo>> {
        require(&caller, Action::Submit, "submit jobs")?;
        let bad = |m: String| ApiError::BadRequest(problem(400, "bad_request", m));
        let mut body = body.0.0;
        let obj = body
            .as_object_mut()
            .ok_or_else(|| bad("the body must be a JSON object".into()))?;
        let text =
            |obj: &mut serde_json::Map<String, serde_json::Value>, k: &str| match obj.remove(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) if s.len() <= 1024 => Ok(Some(s)),
                Some(_) => Err(bad(format!("{k}: expected a string of at most 1024 bytes"))),
            };
        let name = text(obj, "name")?;
        let description = text(obj, "description")?;
        let owner = text(obj, "owner")?;
        let hooks = crate::server::service::parse::parse_hooks(obj, "batch.finished")
            .map_err(|m| ApiError::BadRequest(problem(400, "bad_webhook", m)))?;
        let retry = obj.remove("retry").filter(|r| !r.is_null());
        let jobs = match obj.remove("jobs") {
            Some(serde_json::Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return Err(bad(
                    "jobs: expected a non-empty array of job submissions".into()
                ));
            }
        };
        if let Some(k) = obj.keys().next() {
            return Err(bad(format!(
                "unknown field {k:?}: a batch has name, description, owner, jobs, retry, \
                 callback_url and webhooks"
            )));
        }
        let req = BatchRequest {
            name,
            description,
            owner,
            jobs,
            hooks,
            retry,
        };
        let (batch, hooks) = match service::batches::submit(&self.svc, &caller, req).await? {
            Accepted::Created(b, h) => (b, h),
            Accepted::Busy(why) => return Ok(Submitted::Busy(problem(503, "busy", why))),
        };
        let counters = self
            .svc
            .runner
            .store
            .batch_counters(&batch.id)
            .map_err(internal)?;
        let mut shown = info(batch, counters, None);
        if !hooks.is_empty() {
            shown.webhooks = Some(
                hooks
                    .into_iter()
                    .map(|w| crate::server::http::webhooks::info(w, true))
                    .collect(),
            );
        }
        Ok(Submitted::Created(Json(shown)))
    }

    /// Batches, newest first (the caller's own; admins see everyone's, or `owner`'s).
    #[oai(path = "/batches", method = "get")]
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
    ) -> ApiResult<Json<BatchList>> {
        require(&caller, Action::Read, "read batches")?;
        let owner = caller.owner_filter().or(owner.0);
        let rows = self
            .svc
            .runner
            .store
            .batches(owner.as_deref(), limit.0, offset.0)
            .map_err(internal)?;
        let mut batches = Vec::with_capacity(rows.len());
        for b in rows {
            let c = self
                .svc
                .runner
                .store
                .batch_counters(&b.id)
                .map_err(internal)?;
            batches.push(info(b, c, None));
        }
        Ok(Json(BatchList { batches }))
    }

    /// One batch with its counters and member jobs (oldest first, at most `limit`).
    #[oai(path = "/batches/:id", method = "get")]
    async fn get(
        &self,
        caller: Caller,
        id: Path<String>,
        #[oai(
            default = "default_members",
            validator(minimum(value = "0"), maximum(value = "10000"))
        )]
        limit: Query<u32>,
    ) -> ApiResult<Json<BatchInfo>> {
        let b = self.visible(&caller, &id)?;
        let c = self
            .svc
            .runner
            .store
            .batch_counters(&b.id)
            .map_err(internal)?;
        let (mut rows, _) = self
            .svc
            .runner
            .store
            .list(&ListFilter {
                batch_id: Some(b.id.clone()),
                limit: limit.0,
                ..ListFilter::default()
            })
            .map_err(internal)?;
        rows.reverse();
        let jobs = rows.into_iter().map(JobInfo::from).collect();
        Ok(Json(info(b, c, Some(jobs))))
    }

    /// Cancel a batch: every member job that has not ended is stopped.
    #[oai(path = "/batches/:id/cancel", method = "post")]
    async fn cancel(&self, caller: Caller, id: Path<String>) -> ApiResult<BatchCancelled> {
        require(&caller, Action::Cancel, "cancel batches")?;
        let b = self.visible(&caller, &id)?;
        self.svc
            .runner
            .store
            .set_batch_cancelled(&b.id)
            .map_err(internal)?;
        let ids = self
            .svc
            .runner
            .store
            .batch_unfinished(&b.id)
            .map_err(internal)?;
        for j in &ids {
            self.svc.runner.cancel(j);
        }
        self.svc.runner.store.audit(
            &caller.user,
            "batch.cancel",
            Some(&b.id),
            Some(&format!("stopping={}", ids.len())),
        );
        let b = self.visible(&caller, &id)?;
        let c = self
            .svc
            .runner
            .store
            .batch_counters(&b.id)
            .map_err(internal)?;
        Ok(BatchCancelled::Accepted(Json(info(b, c, None))))
    }
}

fn default_limit() -> u32 {
    100
}

fn default_members() -> u32 {
    1000
}

/// A batch as `GET /v1/batches/{id}` answers it (without its members), as JSON (a webhook's
/// `data`).
pub(crate) fn batch_json(
    store: &crate::server::store::Store,
    id: &str,
) -> Option<serde_json::Value> {
    use poem_openapi::types::ToJSON;
    let b = store.batch(id).ok()??;
    let c = store.batch_counters(id).ok()?;
    info(b, c, None).to_json()
}
