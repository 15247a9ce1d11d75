//! Submitting a batch, whatever the door: every job checked (each error names its job,
//! `jobs[3]: ...`) before anything is stored, then the batch and all its jobs in one
//! transaction, one audit entry, and the jobs started.

use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{Kind, ServiceError, ServiceResult};
use crate::server::service::submit::{Submitter, group_busy, group_detail};
use crate::server::store::batches::BatchRow;
use crate::server::store::{Group, now};

/// The most jobs one batch may hold.
pub const MAX_BATCH: usize = 10_000;

/// A batch as a door read it: each job a jobpack submission object.
pub struct BatchRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Admins: the user the batch belongs to.
    pub owner: Option<String>,
    pub jobs: Vec<serde_json::Value>,
    /// `callback_url` and `webhooks` of the batch (its end, and its jobs' events).
    pub hooks: Vec<crate::server::service::webhooks::HookRequest>,
    /// The `retry` of every job that has none of its own.
    pub retry: Option<serde_json::Value>,
}

/// Gives `job` the group's default `retry` unless it has its own.
pub(crate) fn with_default_retry(
    mut job: serde_json::Value,
    retry: Option<&serde_json::Value>,
) -> serde_json::Value {
    if let (Some(r), Some(obj)) = (retry, job.as_object_mut())
        && !obj.contains_key("retry")
    {
        obj.insert("retry".into(), r.clone());
    }
    job
}

/// What became of a batch: stored (with the webhooks it carried, their secrets in them) and
/// started, or refused for now (the queue is full; why).
pub enum Accepted {
    Created(BatchRow, Vec<crate::server::store::webhooks::WebhookRow>),
    Busy(String),
}

/// The batch `id` if `caller` may read it; another user's is "not found", as a missing one.
pub fn visible(svc: &Service, caller: &Caller, id: &str) -> ServiceResult<BatchRow> {
    require(caller, Action::Read, "read batches")?;
    svc.runner
        .store
        .batch(id)
        .map_err(ServiceError::internal)?
        .filter(|b| caller.sees(&b.owner))
        .ok_or_else(|| ServiceError::not_found(format!("no batch {id}")))
}

/// Names the job an error is about: `jobs[3]: ...`.
fn at(i: usize, mut e: ServiceError) -> ServiceError {
    if matches!(e.kind, Kind::Invalid | Kind::OverQuota | Kind::Forbidden) {
        e.message = format!("jobs[{i}]: {}", e.message);
        for (field, _) in &mut e.fields {
            *field = format!("jobs[{i}].{field}");
        }
    }
    e
}

pub async fn submit(svc: &Service, caller: &Caller, req: BatchRequest) -> ServiceResult<Accepted> {
    let jobs = req.jobs;
    if jobs.is_empty() {
        return Err(ServiceError::invalid(
            "bad_request",
            "jobs: expected a non-empty array of job submissions",
        ));
    }
    if jobs.len() > MAX_BATCH {
        return Err(ServiceError::invalid(
            "bad_request",
            format!("jobs: at most {MAX_BATCH} per batch, got {}", jobs.len()),
        ));
    }
    if let Some(why) = group_busy(&svc.runner, svc.max_queued, jobs.len(), "batch") {
        return Ok(Accepted::Busy(why));
    }
    let submitter = Submitter::new(svc, caller, req.owner)?;
    crate::server::service::webhooks::check_all(&req.hooks, "batch", &svc.webhooks)?;
    let owner = submitter.owner.clone();
    let batch = BatchRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: req.name,
        description: req.description,
        owner: owner.clone(),
        created_at: now(),
        cancelled_at: None,
    };
    // Everything is checked before anything is stored.
    let mut rows = Vec::with_capacity(jobs.len());
    let mut job_hooks = Vec::new();
    for (i, v) in jobs.into_iter().enumerate() {
        let v = with_default_retry(v, req.retry.as_ref());
        let mut p = submitter.parse(v).map_err(|e| at(i, e))?;
        if p.owner.as_ref().is_some_and(|o| *o != owner) {
            let why = "owner: every job of a batch belongs to the batch's owner";
            return Err(at(i, ServiceError::invalid("bad_request", why)));
        }
        submitter.check(&mut p).await.map_err(|e| at(i, e))?;
        let id = uuid::Uuid::new_v4().to_string();
        rows.push(submitter.row(&id, &p, "spec", Some(&batch.id))?);
        if !p.hooks.is_empty() {
            job_hooks.push((id, p.hooks));
        }
    }
    let detail = group_detail(rows.len(), batch.name.as_deref());
    submitter.store(
        Group::Batch(&batch),
        &rows,
        "batch.submit",
        &batch.id,
        Some(&detail),
    )?;
    // Its webhooks before its jobs start (so none of their events is missed).
    let mut hooks = submitter.hooks("batch", &batch.id, &req.hooks)?;
    for (id, h) in &job_hooks {
        hooks.extend(submitter.hooks("job", id, h)?);
    }
    for (row, _) in rows {
        svc.runner.spawn(row.id);
    }
    Ok(Accepted::Created(batch, hooks))
}
