//! Submitting a workflow file, whatever the door: parsed, every job checked (all problems at
//! their paths) before anything is stored, then the workflow and its jobs (`waiting`) in one
//! transaction, one audit entry, and the first jobs started.

use jobpack_core::Workflow;

use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{ServiceError, ServiceResult};
use crate::server::service::submit::{Submitter, group_busy, group_detail};
use crate::server::store::workflows::WorkflowRow;
use crate::server::store::{Group, JobStatus, now};

/// The most jobs one workflow may hold, and the largest workflow file.
pub const MAX_JOBS: usize = 1000;
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// What became of a workflow: stored and started, or refused for now (the queue is full; why).
pub enum Accepted {
    Created(WorkflowRow),
    Busy(String),
}

/// Submits the workflow `file` (YAML or JSON) for `caller`.
pub async fn submit(svc: &Service, caller: &Caller, file: Vec<u8>) -> ServiceResult<Accepted> {
    require(caller, Action::Submit, "submit jobs")?;
    let bad = |code: &'static str, m: String| ServiceError::invalid(code, m);
    if file.len() > MAX_FILE_BYTES {
        return Err(bad(
            "bad_request",
            format!("a workflow file is at most {MAX_FILE_BYTES} bytes"),
        ));
    }
    let text = String::from_utf8(file)
        .map_err(|_| bad("bad_request", "the workflow file is not UTF-8".into()))?;
    let wf = Workflow::parse(&text).map_err(|e| bad("invalid_workflow", e.to_string()))?;
    if wf.jobs.len() > MAX_JOBS {
        return Err(bad(
            "invalid_workflow",
            format!(
                "jobs: at most {MAX_JOBS} per workflow, got {}",
                wf.jobs.len()
            ),
        ));
    }
    if let Some(why) = group_busy(&svc.runner, svc.max_queued, wf.jobs.len(), "workflow") {
        return Ok(Accepted::Busy(why));
    }
    let submitter = Submitter::new(svc, caller, None)?;
    let owner = submitter.owner.clone();
    let hooks = {
        let mut top = serde_json::Map::new();
        if let Some(u) = &wf.callback_url {
            top.insert("callback_url".into(), u.clone().into());
        }
        if let Some(h) = &wf.webhooks {
            top.insert("webhooks".into(), h.clone());
        }
        crate::server::service::parse::parse_hooks(&mut top, "workflow.finished")
            .map_err(|m| bad("bad_webhook", m))?
    };
    crate::server::service::webhooks::check_all(&hooks, "workflow", &svc.webhooks)?;
    let w = WorkflowRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: wf.name.clone(),
        owner: owner.clone(),
        source: text,
        created_at: now(),
        cancelled_at: None,
    };
    // Every job is checked (all problems reported at once) before anything is stored.
    let mut rows = Vec::with_capacity(wf.jobs.len());
    let mut job_hooks = Vec::new();
    let mut specs = Vec::with_capacity(wf.jobs.len());
    let message = |e: ServiceError| e.message;
    wf.check_jobs(|j| {
        let mut body =
            crate::server::service::batches::with_default_retry(j.body.clone(), wf.retry.as_ref());
        if let Some(obj) = body.as_object_mut() {
            match obj.get("name") {
                None => {
                    obj.insert("name".into(), j.name.clone().into());
                }
                Some(n) if n.as_str() == Some(j.name.as_str()) => {}
                Some(_) => {
                    return Err(vec![(
                        "name".into(),
                        "a workflow's job is named by its key; leave name out".into(),
                    )]);
                }
            }
            if obj.contains_key("owner") {
                return Err(vec![(
                    "owner".into(),
                    "every job of a workflow belongs to the workflow's owner".into(),
                )]);
            }
        }
        let mut p = submitter
            .parse(body)
            .map_err(|e| vec![(String::new(), message(e))])?;
        if !p.sub.run {
            return Err(vec![(
                "run".into(),
                "a workflow's jobs run (leave run out)".into(),
            )]);
        }
        submitter
            .limit(&mut p)
            .map_err(|e| vec![(String::new(), message(e))])?;
        let id = uuid::Uuid::new_v4().to_string();
        let (mut row, secrets) = submitter
            .row(&id, &p, "spec", None)
            .map_err(|e| vec![(String::new(), message(e))])?;
        row.status = JobStatus::Waiting;
        row.workflow_id = Some(w.id.clone());
        row.workflow_pos = Some(rows.len() as i64);
        row.requires_json = Some(
            serde_json::to_string(&j.requires).map_err(|e| vec![(String::new(), e.to_string())])?,
        );
        specs.push((j.name.clone(), p.sub.spec.clone()));
        if !p.hooks.is_empty() {
            job_hooks.push((id, p.hooks.clone()));
        }
        rows.push((row, secrets));
        Ok(())
    })
    .map_err(|e| bad("invalid_workflow", e.to_string()))?;
    for (name, spec) in &specs {
        submitter.destinations(spec).await.map_err(|e| {
            bad(
                "forbidden_destination",
                format!("jobs.{name}.{}", message(e)),
            )
        })?;
    }
    let detail = group_detail(rows.len(), w.name.as_deref());
    submitter.store(
        Group::Workflow(&w),
        &rows,
        "workflow.submit",
        &w.id,
        Some(&detail),
    )?;
    // Its webhooks before its jobs start (so none of their events is missed).
    submitter.hooks("workflow", &w.id, &hooks)?;
    for (id, h) in &job_hooks {
        submitter.hooks("job", id, h)?;
    }
    svc.runner.advance(&w.id);
    Ok(Accepted::Created(w))
}
