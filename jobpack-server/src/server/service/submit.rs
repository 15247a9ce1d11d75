//! Submissions, whatever the front door: a lone job, a batch or a workflow goes through the same
//! steps ([`Submitter`]): the caller may submit; the owner (the caller, or whom an admin names) and
//! their quota; every job checked (spec, owner, limits against the quota and the server's, host
//! network grant, fetch destinations, secrets) before anything is stored; one transaction for all
//! of it (the quota of unfinished jobs included); one audit entry. Starting the jobs is the
//! caller's last step (`Runner::spawn` or a workflow's advance).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::server::scheduler::queue::{Runner, Submission};
use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{Kind, ServiceError, ServiceResult};
use crate::server::service::limits::ServerLimits;
pub(crate) use crate::server::service::parse::{Parsed, parse_submission};
use crate::server::store::accounts::Quota;
use crate::server::store::{Group, InsertError, JobRow, JobStatus, now};
use jobpack_core::JobSpec;
use jobpack_core::exec::{Limits, NetworkPolicy};

/// One submission being checked and stored, for its owner.
pub(crate) struct Submitter<'a> {
    svc: &'a Service,
    caller: &'a Caller,
    /// Whom the jobs belong to.
    pub owner: String,
    pub quota: Quota,
    /// The `stdin` texts of the rows made so far, by job id: written to their upload
    /// directories by [`Submitter::store`] (never into the rows, which lists read by hundreds).
    stdin: std::sync::Mutex<Vec<(String, String)>>,
}

impl<'a> Submitter<'a> {
    /// 403 unless the caller may submit; the owner (`owner`: an admin's choice) and their quota.
    pub fn new(svc: &'a Service, caller: &'a Caller, owner: Option<String>) -> ServiceResult<Self> {
        require(caller, Action::Submit, "submit jobs")?;
        let (owner, quota) = owner_and_quota(&svc.runner.store, caller, owner)?;
        Ok(Submitter {
            svc,
            caller,
            owner,
            quota,
            stdin: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Parses one job's submission object (spec plus `run`, `limits`, `network`, `secret_env`,
    /// `owner`).
    pub fn parse(&self, body: serde_json::Value) -> ServiceResult<Parsed> {
        parse_submission(body, self.svc.allow_file_urls)
    }

    /// The checks that need no network: the limits (quota, server defaults and maxima) and the
    /// host-network grant.
    pub fn limit(&self, p: &mut Parsed) -> ServiceResult<()> {
        apply_quota(&mut p.sub, &self.quota, &self.svc.limits)?;
        if let Some(q) = &p.sub.queue
            && q != DEFAULT_QUEUE
            && !self.svc.queues.contains_key(q)
        {
            let known: Vec<&str> = std::iter::once(DEFAULT_QUEUE)
                .chain(self.svc.queues.keys().map(String::as_str))
                .collect();
            return Err(ServiceError::invalid(
                "bad_request",
                format!(
                    "queue: no queue {q:?} on this server (queues: {})",
                    known.join(", ")
                ),
            ));
        }
        if let Some(w) = p.sub.working_dir.clone() {
            p.sub.shared_dir = Some(self.svc.workdirs.resolve(&w)?);
        }
        crate::server::service::webhooks::check_all(&p.hooks, "job", &self.svc.webhooks)
    }

    /// Stores the webhooks a submission carried, for its `scope` (`job`, `batch`, `workflow`)
    /// and `target` id.
    pub fn hooks(
        &self,
        scope: &str,
        target: &str,
        hooks: &[crate::server::service::webhooks::HookRequest],
    ) -> ServiceResult<Vec<crate::server::store::webhooks::WebhookRow>> {
        hooks
            .iter()
            .map(|h| {
                crate::server::service::webhooks::create(
                    &self.svc.runner.store,
                    &self.svc.webhooks,
                    self.caller,
                    &self.owner,
                    h,
                    scope,
                    Some(target),
                )
            })
            .collect()
    }

    /// Every check of one job: [`Submitter::limit`], then [`Submitter::destinations`].
    pub async fn check(&self, p: &mut Parsed) -> ServiceResult<()> {
        self.limit(p)?;
        self.runtime_fs(&p.sub.spec)?;
        self.destinations(&p.sub.spec).await
    }

    /// The runtime a spec names is installed here (and is the pinned one): 400 otherwise, at
    /// submission rather than when the job is packed.
    pub fn runtime_fs(&self, spec: &JobSpec) -> ServiceResult<()> {
        let Some(text) = &spec.runtime_fs else {
            return Ok(());
        };
        let bad = |m: String| ServiceError::invalid("invalid_spec", format!("runtime_fs: {m}"));
        let want = jobpack_core::rootfs::RuntimeRef::parse(text).map_err(|e| bad(e.to_string()))?;
        let Some(store) = &self.svc.runner.runtimes else {
            return Err(bad("this server has no usable runtime store".into()));
        };
        store
            .resolve(&want)
            .map(drop)
            .map_err(|e| bad(e.to_string()))
    }

    /// The check that resolves names: every destination the spec fetches from is allowed.
    pub async fn destinations(&self, spec: &JobSpec) -> ServiceResult<()> {
        check_destinations(&self.svc.limits, spec).await
    }

    /// The row of a checked job (`queued`) and its secrets as stored.
    pub fn row(
        &self,
        id: &str,
        p: &Parsed,
        source: &str,
        batch_id: Option<&str>,
    ) -> ServiceResult<(JobRow, Option<String>)> {
        if let Some(text) = &p.sub.stdin
            && let Ok(mut pending) = self.stdin.lock()
        {
            pending.push((id.to_owned(), text.clone()));
        }
        new_job_row(id, &p.sub, &p.secrets, &self.owner, source, batch_id)
    }

    /// Stores the jobs (and their batch or workflow) in one transaction, unless the owner's
    /// unfinished jobs would then be over their quota (429), and audits it as `action` on
    /// `target`.
    pub fn store(
        &self,
        group: Group<'_>,
        rows: &[(JobRow, Option<String>)],
        action: &str,
        target: &str,
        detail: Option<&str>,
    ) -> ServiceResult<()> {
        let runner = &self.svc.runner;
        let forget = || {
            for (row, _) in rows {
                if let Err(e) = runner.remove_files(&row.id) {
                    tracing::warn!(job_id = %row.id, "cannot remove a refused job's files: {e}");
                }
            }
        };
        let pending = std::mem::take(&mut *self.stdin.lock().map_err(|_| {
            ServiceError::internal(anyhow::anyhow!("the submission's lock is poisoned"))
        })?);
        for (id, text) in &pending {
            let path = runner
                .job_dir(id)
                .join("upload")
                .join(jobpack_core::manifest::STDIN_NAME);
            if let Err(e) = crate::server::scheduler::write_new(&path, text.as_bytes()) {
                forget();
                return Err(ServiceError::internal(e));
            }
        }
        // The audit entry in the same commit as the rows it records.
        let audit = crate::server::store::accounts::Audit {
            actor: &self.caller.user,
            action,
            target: Some(target),
            detail,
        };
        if let Err(e) =
            runner
                .store
                .insert_all(group, rows, self.quota.max_concurrent, Some(&audit))
        {
            forget();
            return Err(insert_failed(&self.owner, e));
        }
        for (row, _) in rows {
            tracing::info!(
                job_id = row.id.as_str(),
                owner = row.owner.as_str(),
                source = row.source.as_str(),
                "job accepted"
            );
        }
        Ok(())
    }
}

impl Submitter<'_> {
    /// Refused (`TooManyJobs`) when the owner already has as many unfinished jobs as their quota
    /// allows: a quick answer before an upload is stored (the insert checks it again, atomically).
    pub fn has_room(&self) -> ServiceResult<()> {
        if let Some(max) = self.quota.max_concurrent {
            let active = self
                .svc
                .runner
                .store
                .active_count(&self.owner)
                .map_err(ServiceError::internal)?;
            if active >= max {
                return Err(insert_failed(&self.owner, InsertError::TooManyActive(max)));
            }
        }
        Ok(())
    }

    /// Stores one checked job `id` (its uploads, if any, already under its directory; `source`
    /// says which: `spec` or `upload`), audits it, and starts it. A refusal removes its files.
    pub fn submit_one(
        &self,
        id: &str,
        p: &Parsed,
        source: &str,
    ) -> ServiceResult<Vec<crate::server::store::webhooks::WebhookRow>> {
        let row = self.row(id, p, source, None)?;
        let other = self.owner != self.caller.user;
        let detail = match (&row.0.name, other) {
            (Some(n), true) => format!("name={n} owner={}", self.owner),
            (Some(n), false) => format!("name={n}"),
            (None, true) => format!("owner={}", self.owner),
            (None, false) => String::new(),
        };
        let detail = Some(detail.as_str()).filter(|d| !d.is_empty());
        if let Err(e) = self.store(Group::None, &[row], "job.submit", id, detail) {
            if let Err(rm) = self.svc.runner.remove_files(id) {
                tracing::warn!(job_id = %id, "cannot remove the files of a refused job: {rm}");
            }
            return Err(e);
        }
        let hooks = match self.hooks("job", id, &p.hooks) {
            Ok(h) => h,
            Err(e) => {
                // The job goes with its hooks or not at all.
                if let Err(rm) = self.svc.runner.store.delete(id) {
                    tracing::warn!(job_id = %id, "cannot remove after its webhooks failed: {rm}");
                }
                if let Err(rm) = self.svc.runner.remove_files(id) {
                    tracing::warn!(job_id = %id, "cannot remove the files of a refused job: {rm}");
                }
                return Err(e);
            }
        };
        self.svc.runner.spawn(id.to_owned());
        Ok(hooks)
    }
}

pub use crate::server::scheduler::slots::DEFAULT_QUEUE;

/// Why a lone job must wait: the queue already holds `max_queued` jobs (503 over HTTP).
pub(crate) fn queue_full(svc: &Service) -> Option<String> {
    let depth = svc.runner.queue_depth();
    (depth >= svc.max_queued).then(|| format!("{depth} jobs are already waiting; try again later"))
}

/// Checks a submission against the owner's quota and the server's limits: a limit above a cap
/// or the server's maximum is refused, a limit not given gets the cap, else the server's
/// default; `"network": "host"` needs the owner's grant (403 otherwise).
pub(crate) fn apply_quota(
    sub: &mut Submission,
    q: &Quota,
    server: &ServerLimits,
) -> ServiceResult<()> {
    if sub.network == NetworkPolicy::Host && q.allow_host_network != Some(true) {
        return Err(ServiceError::forbidden(
            "network_forbidden",
            "network: \"host\" needs a grant from an admin (quota allow_host_network); \
             jobs get a private network by default",
        ));
    }
    apply_user_quota(&mut sub.limits, q)?;
    server
        .apply(&mut sub.limits)
        .map_err(ServiceError::over_quota)
}

/// Refuses a submission that names a destination the server may not fetch from (loopback,
/// private, link-local, ... unless allowed with --allow-fetch-from): 400 `forbidden_destination`.
/// The fetch checks again at every connection and redirect.
pub(crate) async fn check_destinations(limits: &ServerLimits, spec: &JobSpec) -> ServiceResult<()> {
    let Ok(job) = spec.validate() else {
        return Ok(());
    };
    limits
        .destinations
        .check_job(&job)
        .await
        .map_err(|(field, f)| {
            ServiceError::invalid("forbidden_destination", format!("{field}: {f}"))
        })
}

fn apply_user_quota(limits: &mut Limits, q: &Quota) -> ServiceResult<()> {
    fn cap<T: PartialOrd + Copy + std::fmt::Display>(
        field: &str,
        asked: &mut Option<T>,
        max: Option<T>,
    ) -> ServiceResult<()> {
        let Some(max) = max else { return Ok(()) };
        match *asked {
            Some(a) if a > max => Err(ServiceError::over_quota(format!(
                "limits.{field} is {a}; your quota allows at most {max}"
            ))),
            Some(_) => Ok(()),
            None => {
                *asked = Some(max);
                Ok(())
            }
        }
    }
    let mut timeout = limits.timeout.map(|d| d.as_secs_f64());
    cap("timeout", &mut timeout, q.max_timeout_secs)?;
    // A cap too large for a Duration is no cap at all (the server's maximum still applies).
    limits.timeout = timeout.map(|t| Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX));
    cap("memory_bytes", &mut limits.memory_bytes, q.max_memory_bytes)?;
    cap("cpu_percent", &mut limits.cpu_percent, q.max_cpu_percent)?;
    cap("pids", &mut limits.pids, q.max_pids)?;
    Ok(())
}

/// The owner of a submission (the caller, or for admins whoever `owner` names) and their quota.
pub(crate) fn owner_and_quota(
    store: &crate::server::store::Store,
    caller: &Caller,
    owner: Option<String>,
) -> ServiceResult<(String, Quota)> {
    let owner = match owner {
        Some(o) if o != caller.user => {
            require(caller, Action::Administer, "submit jobs for another user")?;
            o
        }
        _ => caller.user.clone(),
    };
    let owner_row = store.user(&owner).map_err(ServiceError::internal)?;
    if owner_row.as_ref().is_some_and(|u| u.disabled) {
        return Err(ServiceError::invalid(
            "bad_request",
            format!("owner: user {owner} is disabled"),
        ));
    }
    let is_admin = owner_row
        .as_ref()
        .is_some_and(|u| u.role == crate::server::store::accounts::Role::Admin)
        || (owner == caller.user && caller.may(Action::Administer));
    let mut quota = owner_row.map(|u| u.quota).unwrap_or_default();
    if is_admin {
        quota.allow_host_network = Some(true);
    }
    Ok((owner, quota))
}

/// The row of a new, queued job and its secrets as stored (only for jobs that will run).
pub(crate) fn new_job_row(
    id: &str,
    sub: &Submission,
    secrets: &BTreeMap<String, String>,
    owner: &str,
    source: &str,
    batch_id: Option<&str>,
) -> ServiceResult<(JobRow, Option<String>)> {
    let row = JobRow {
        id: id.to_owned(),
        name: sub.spec.name.clone(),
        status: match sub.scheduled_at {
            Some(t) if t > now() => JobStatus::Scheduled,
            _ => JobStatus::Queued,
        },
        source: source.into(),
        request_json: serde_json::to_string(sub).map_err(ServiceError::internal)?,
        run: sub.run,
        created_at: now(),
        updated_at: now(),
        started_at: None,
        finished_at: None,
        exit_code: None,
        signal: None,
        reason: None,
        error_code: None,
        artifact_sha256: None,
        artifact_size: None,
        commit_id: None,
        outcome_json: None,
        owner: owner.to_owned(),
        cpu_seconds: None,
        batch_id: batch_id.map(str::to_owned),
        workflow_id: None,
        workflow_pos: None,
        requires_json: None,
        pinned: false,
        collected_at: None,
        cached_from: None,
    };
    let secret_json = if secrets.is_empty() || !sub.run {
        None
    } else {
        Some(serde_json::to_string(secrets).map_err(ServiceError::internal)?)
    };
    Ok((row, secret_json))
}

/// The answer to a failed insert: the owner's quota of unfinished jobs is full (429), or the
/// database failed.
pub(crate) fn insert_failed(owner: &str, e: InsertError) -> ServiceError {
    match e {
        InsertError::TooManyActive(max) => ServiceError::new(
            Kind::TooManyJobs,
            "quota_exceeded",
            format!(
                "{owner} already has {max} unfinished jobs, the most their quota allows; wait \
                 for one to end"
            ),
        ),
        InsertError::Db(e) => ServiceError::internal(e),
    }
}

/// Why a batch or workflow (`what`) of `adding` jobs must wait: they would put more than
/// `max_queued` in the queue (each door answers it as "busy, try again later": HTTP 503).
pub(crate) fn group_busy(
    runner: &Runner,
    max_queued: usize,
    adding: usize,
    what: &str,
) -> Option<String> {
    let depth = runner.queue_depth();
    (depth + adding > max_queued).then(|| {
        format!("{depth} jobs are already waiting and this {what} adds {adding}; try again later")
    })
}

/// The audit detail of a submitted batch or workflow: `jobs=N[ name=NAME]`.
pub(crate) fn group_detail(jobs: usize, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("jobs={jobs} name={n}"),
        None => format!("jobs={jobs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refuses_what_is_over_it_and_fills_what_is_not_asked() {
        let q = Quota {
            max_memory_bytes: Some(1 << 30),
            max_pids: Some(64),
            ..Quota::default()
        };
        let mut l = Limits {
            pids: Some(32),
            ..Limits::default()
        };
        apply_user_quota(&mut l, &q).unwrap();
        assert_eq!(
            (l.pids, l.memory_bytes, l.timeout),
            (Some(32), Some(1 << 30), None)
        );
        let mut over = Limits {
            memory_bytes: Some(2 << 30),
            ..Limits::default()
        };
        match apply_user_quota(&mut over, &q) {
            Err(e) if e.kind == Kind::OverQuota => {
                assert!(e.message.contains("limits.memory_bytes"), "{}", e.message)
            }
            other => panic!("{other:?}"),
        }
    }
}
