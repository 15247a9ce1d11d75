//! The `/v1/jobs` operations (poem-openapi) and their response types: thin adapters over the
//! submission flow (`submit`), the uploads, downloads and logs modules, the store and the runner.
//! The error mapping is `problem`'s.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::BoxStream;
use poem::Body;
use poem::web::sse::Event;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Attachment, EventStream, Json};
use poem_openapi::{ApiRequest, ApiResponse, Object, OpenApi, Tags};

use crate::server::http::downloads::{Download, Packed, file_download, packed_json, tarball};
use crate::server::http::logs::{LogStreamName, LogText, StreamItem, log_events, log_text};
pub use crate::server::http::problem::{ApiError, Problem, Submitted};
use crate::server::http::problem::{ApiResult, internal, problem};
use crate::server::http::schema::{Documented, JobSubmissionDoc};
use crate::server::http::uploads::{UploadJob, store_uploads};
use crate::server::service::Service;
use crate::server::service::auth::require;
use crate::server::service::auth::{Action, Caller};
use crate::server::service::jobs::{self, visible_row};
use crate::server::service::ready;
use crate::server::service::submit::{Submitter, parse_submission, queue_full};
use crate::server::store::{JobRow, ListFilter, now};

#[derive(Tags)]
enum ApiTags {
    /// Jobs: submit, inspect, follow, cancel, delete, download.
    Jobs,
    /// Service health.
    Service,
}

pub(crate) use crate::server::store::rfc3339;

/// A job as the API shows it.
#[derive(Debug, Object)]
pub struct JobInfo {
    pub job_id: String,
    #[oai(nullable)]
    pub name: Option<String>,
    /// waiting (a workflow job whose requirements are not met yet), scheduled (until its
    /// `scheduled_at`), queued, packing, packed,
    /// running, completed, failed, stopped, timed_out, oom_killed, limit_exceeded, skipped (a
    /// workflow job whose requirements can no longer be met).
    pub status: String,
    /// Whether the job runs after packing (`false`: pack only).
    pub run: bool,
    /// `spec` or `upload`.
    pub source: String,
    pub created_at: String,
    pub updated_at: String,
    #[oai(nullable)]
    pub started_at: Option<String>,
    #[oai(nullable)]
    pub finished_at: Option<String>,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    #[oai(nullable)]
    pub signal: Option<i32>,
    #[oai(nullable)]
    pub reason: Option<String>,
    #[oai(nullable)]
    pub error_code: Option<String>,
    #[oai(nullable)]
    pub artifact_sha256: Option<String>,
    #[oai(nullable)]
    pub artifact_size: Option<i64>,
    #[oai(nullable)]
    pub commit: Option<String>,
    /// The user the job belongs to.
    pub owner: String,
    /// CPU seconds the run used, when measured.
    #[oai(nullable)]
    pub cpu_seconds: Option<f64>,
    /// The batch it belongs to, if any.
    #[oai(nullable)]
    pub batch_id: Option<String>,
    /// The workflow it belongs to, if any (its `name` is then its key in the workflow).
    #[oai(nullable)]
    pub workflow_id: Option<String>,
    /// The submission as accepted (spec, limits, network, run; secret_env values masked).
    pub request: serde_json::Value,
    /// The executor's outcome (times, peak memory, isolation), once finished.
    #[oai(nullable)]
    pub outcome: Option<serde_json::Value>,
    /// Kept by retention whatever its age (`POST /v1/jobs/{id}/pin`).
    pub pinned: bool,
    /// When retention removed its files (log, artifact, working directory); its record stays.
    #[oai(nullable)]
    pub collected_at: Option<String>,
    /// The earlier job whose results answered this one (`cache: true`).
    #[oai(nullable)]
    pub cached_from: Option<String>,
}

impl From<JobRow> for JobInfo {
    fn from(r: JobRow) -> Self {
        JobInfo {
            job_id: r.id,
            name: r.name,
            status: r.status.as_str().into(),
            run: r.run,
            source: r.source,
            created_at: rfc3339(r.created_at),
            updated_at: rfc3339(r.updated_at),
            started_at: r.started_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
            exit_code: r.exit_code,
            signal: r.signal,
            reason: r.reason,
            error_code: r.error_code,
            artifact_sha256: r.artifact_sha256,
            artifact_size: r.artifact_size,
            commit: r.commit_id,
            owner: r.owner,
            cpu_seconds: r.cpu_seconds,
            batch_id: r.batch_id,
            workflow_id: r.workflow_id,
            request: serde_json::from_str(&r.request_json).unwrap_or_default(),
            outcome: r.outcome_json.and_then(|o| serde_json::from_str(&o).ok()),
            pinned: r.pinned,
            collected_at: r.collected_at.map(rfc3339),
            cached_from: r.cached_from,
        }
    }
}

/// The short status of a job.
#[derive(Debug, Object)]
pub struct JobStatus {
    pub job_id: String,
    pub status: String,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    #[oai(nullable)]
    pub reason: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Object)]
pub struct Created {
    pub job_id: String,
    pub status: String,
    /// The webhooks the submission carried (`callback_url`, `webhooks`), each with its secret,
    /// shown this once.
    #[oai(skip_serializing_if_is_none)]
    pub webhooks: Option<Vec<crate::server::http::webhooks::WebhookInfo>>,
}

#[derive(Debug, Object)]
pub struct JobList {
    pub jobs: Vec<JobInfo>,
    pub total: u64,
    pub limit: u32,
    pub offset: u32,
    /// The cursor of the next page (`after=`), when this page is full: keyset pagination, the
    /// same cost at any depth (a deep `offset` reads every row before it).
    #[oai(skip_serializing_if_is_none)]
    pub next: Option<String>,
}

#[derive(Debug, Object)]
pub struct Health {
    pub status: String,
    pub version: String,
    /// The limits a job gets when it asks for none (`defaults`) and the most it may ask for
    /// (`max`), before any per-user quota; `tarball_max_bytes` bounds one working-directory
    /// download.
    pub limits: serde_json::Value,
}

#[derive(ApiRequest)]
// poem-openapi's request enums hold their payload types as they are (no Box); one per request.
#[allow(clippy::large_enum_variant)]
pub enum CreateJob {
    /// A JSON job spec, plus optional `run` (default true), `limits` and `network`.
    Json(Json<Documented<JobSubmissionDoc>>),
    /// A spec with uploaded files.
    Multipart(UploadJob),
}

/// One readiness check's result.
#[derive(Debug, Object)]
pub struct ReadyCheck {
    pub ok: bool,
    /// What it found, or what is wrong.
    pub detail: String,
}

/// Whether the server can take and run jobs now, check by check (`store`, `disk`, `executor`).
#[derive(Debug, Object)]
pub struct Ready {
    /// `ready` or `not_ready`.
    pub status: String,
    pub checks: std::collections::BTreeMap<String, ReadyCheck>,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Every check passed.
    #[oai(status = 200)]
    Ready(Json<Ready>),
    /// A check failed (each says what it found).
    #[oai(status = 503)]
    NotReady(Json<Ready>),
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// The job is being stopped.
    #[oai(status = 202)]
    Accepted(Json<JobStatus>),
}

#[derive(ApiResponse)]
pub enum Deleted {
    /// The job and its files are gone.
    #[oai(status = 204)]
    Deleted,
}

pub struct JobsApi {
    pub svc: Arc<Service>,
}

#[OpenApi(tag = "ApiTags::Jobs")]
impl JobsApi {
    /// Submit a job: pack it, then (unless `"run": false`) run it in the sandbox.
    #[oai(path = "/jobs", method = "post")]
    async fn create(&self, caller: Caller, body: CreateJob) -> ApiResult<Submitted<Created>> {
        require(&caller, Action::Submit, "submit jobs")?;
        if let Some(why) = queue_full(&self.svc) {
            return Ok(Submitted::Busy(problem(503, "busy", why)));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let (mut parsed, upload) = match body {
            CreateJob::Json(Json(Documented(v, _))) => {
                (parse_submission(v, self.svc.allow_file_urls)?, None)
            }
            CreateJob::Multipart(up) => {
                let v: serde_json::Value = serde_json::from_str(&up.spec).map_err(|e| {
                    ApiError::BadRequest(problem(
                        400,
                        "bad_request",
                        format!("spec: not JSON: {e}"),
                    ))
                })?;
                (parse_submission(v, self.svc.allow_file_urls)?, Some(up))
            }
        };
        let submitter = Submitter::new(&self.svc, &caller, parsed.owner.clone())?;
        submitter.check(&mut parsed).await?;
        submitter.has_room()?;
        let source = match upload {
            Some(up) => {
                store_uploads(&self.svc.runner, &id, &parsed.sub, up).await?;
                "upload"
            }
            None => "spec",
        };
        let hooks = submitter.submit_one(&id, &parsed, source)?;
        Ok(Submitted::Created(Json(Created {
            job_id: id,
            status: jobpack_core::JobStatus::Queued.as_str().into(),
            webhooks: (!hooks.is_empty()).then(|| {
                hooks
                    .into_iter()
                    .map(|w| crate::server::http::webhooks::info(w, true))
                    .collect()
            }),
        })))
    }

    /// List jobs, newest first.
    #[oai(path = "/jobs", method = "get")]
    // Each query parameter is an argument in poem-openapi.
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        caller: Caller,
        status: Query<Option<String>>,
        name: Query<Option<String>>,
        /// Only this user's jobs (admins; others always see only their own).
        owner: Query<Option<String>>,
        /// Only jobs whose id starts with this (how clients resolve short ids).
        #[oai(validator(pattern = "^[0-9a-fA-F-]*$", max_length = 36))]
        id_prefix: Query<Option<String>>,
        /// Only the jobs of this batch.
        batch_id: Query<Option<String>>,
        /// Only the jobs of this workflow.
        workflow_id: Query<Option<String>>,
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
        /// Only the jobs after this cursor (a previous page's `next`): keyset pagination.
        #[oai(validator(max_length = 128))]
        after: Query<Option<String>>,
    ) -> ApiResult<Json<JobList>> {
        require(&caller, Action::Read, "read jobs")?;
        let after = match after.0.as_deref() {
            None => None,
            Some(c) => Some(crate::server::store::parse_cursor(c).ok_or_else(|| {
                ApiError::BadRequest(problem(
                    400,
                    "bad_request",
                    format!("after: {c:?} is not a cursor from a listing's `next`"),
                ))
            })?),
        };
        if let Some(p) = &id_prefix.0
            && !p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        {
            return Err(ApiError::BadRequest(problem(
                400,
                "bad_request",
                format!("id_prefix: only hex digits and '-', got {p:?}"),
            )));
        }
        let f = ListFilter {
            owner: caller.owner_filter().or(owner.0),
            id_prefix: id_prefix.0,
            batch_id: batch_id.0,
            workflow_id: workflow_id.0,
            status: status.0,
            name: name.0,
            limit: limit.0,
            offset: offset.0,
            after,
        };
        let (rows, total) = self.svc.runner.store.list(&f).map_err(internal)?;
        let next = (rows.len() == f.limit as usize)
            .then(|| rows.last().map(crate::server::store::cursor_of))
            .flatten();
        Ok(Json(JobList {
            jobs: rows.into_iter().map(JobInfo::from).collect(),
            total,
            limit: f.limit,
            offset: f.offset,
            next,
        }))
    }

    /// One job.
    #[oai(path = "/jobs/:id", method = "get")]
    async fn get(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobInfo>> {
        Ok(Json(self.row(&caller, &id)?.into()))
    }

    /// A job's status.
    #[oai(path = "/jobs/:id/status", method = "get")]
    async fn status(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobStatus>> {
        let r = self.row(&caller, &id)?;
        Ok(Json(JobStatus {
            job_id: r.id,
            status: r.status.as_str().into(),
            exit_code: r.exit_code,
            reason: r.reason,
            updated_at: rfc3339(r.updated_at),
        }))
    }

    /// The log so far, as plain text: from byte `offset`, or the last `tail` bytes, of both
    /// streams as the job wrote them or of one (`stream=stdout|stderr`; `offset` and `tail` count
    /// bytes of the whole log). Streamed from the file (seek, then read only what is returned), so
    /// a huge log costs no memory.
    #[oai(path = "/jobs/:id/logs", method = "get")]
    async fn logs(
        &self,
        caller: Caller,
        id: Path<String>,
        #[oai(validator(minimum(value = "0"), maximum(value = "9223372036854775807")))]
        offset: Query<Option<u64>>,
        #[oai(validator(minimum(value = "0"), maximum(value = "9223372036854775807")))] tail: Query<
            Option<u64>,
        >,
        /// Only this stream's bytes.
        stream: Query<Option<LogStreamName>>,
    ) -> ApiResult<LogText> {
        self.files(&caller, &id)?;
        let start = |len: u64| match (offset.0, tail.0) {
            (Some(o), _) => o.min(len),
            (None, Some(t)) => len.saturating_sub(t),
            (None, None) => 0,
        };
        let only = stream.0.map(LogStreamName::stream);
        log_text(self.svc.runner.log_path(&id), start, only).await
    }

    /// The log as Server-Sent Events: history then live, each event's id its byte offset
    /// (`Last-Event-ID` resumes there), and `event: end` with the final status and exit code.
    #[oai(path = "/jobs/:id/logs/stream", method = "get")]
    async fn stream(
        &self,
        caller: Caller,
        id: Path<String>,
        #[oai(name = "Last-Event-ID")] last_event_id: Header<Option<String>>,
        #[oai(validator(minimum(value = "0"), maximum(value = "9223372036854775807")))]
        offset: Query<Option<u64>>,
    ) -> ApiResult<EventStream<BoxStream<'static, StreamItem>>> {
        self.files(&caller, &id)?;
        let start = last_event_id
            .0
            .as_deref()
            .and_then(|v| v.trim().parse().ok())
            .or(offset.0)
            .unwrap_or(0);
        let stream = log_events(self.svc.runner.clone(), id.0.clone(), start);
        Ok(EventStream::new(stream)
            .keep_alive(Duration::from_secs(15))
            .to_event(|item| {
                let data = if item.status.is_some() {
                    serde_json::json!({"status": item.status, "exit_code": item.exit_code})
                } else {
                    serde_json::json!({"text": item.text})
                };
                let ev = Event::message(data.to_string()).id(item.offset.to_string());
                if item.status.is_some() {
                    ev.event_type("end")
                } else {
                    ev
                }
            }))
    }

    /// Stop a job: SIGTERM to all of it, SIGKILL after the grace period. 409 if it has ended.
    #[oai(path = "/jobs/:id/cancel", method = "post")]
    async fn cancel(&self, caller: Caller, id: Path<String>) -> ApiResult<Accepted> {
        let r = jobs::cancel(&self.svc, &caller, &id)?;
        Ok(Accepted::Accepted(Json(JobStatus {
            job_id: r.id,
            status: "stopping".into(),
            exit_code: None,
            reason: None,
            updated_at: rfc3339(now()),
        })))
    }

    /// Pin a job: retention never removes its files. Answers the job.
    #[oai(path = "/jobs/:id/pin", method = "post")]
    async fn pin(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobInfo>> {
        Ok(Json(jobs::pin(&self.svc, &caller, &id, true)?.into()))
    }

    /// Unpin a job: retention may remove its files again. Answers the job.
    #[oai(path = "/jobs/:id/pin", method = "delete")]
    async fn unpin(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobInfo>> {
        Ok(Json(jobs::pin(&self.svc, &caller, &id, false)?.into()))
    }

    /// Delete a job: cancel it if it runs, then remove its files and its record.
    #[oai(path = "/jobs/:id", method = "delete")]
    async fn delete(&self, caller: Caller, id: Path<String>) -> ApiResult<Deleted> {
        jobs::delete(&self.svc, &caller, &id).await?;
        Ok(Deleted::Deleted)
    }

    /// The packed `.tar.gz` (a Docker build context); ETag is its sha256.
    #[oai(path = "/jobs/:id/artifact", method = "get")]
    async fn artifact(&self, caller: Caller, id: Path<String>) -> ApiResult<Download> {
        let r = self.files(&caller, &id)?;
        let Some(sha) = r.artifact_sha256 else {
            return Err(ApiError::Conflict(problem(
                409,
                "not_packed",
                format!("job {} is not packed yet ({})", r.id, r.status),
            )));
        };
        let f = tokio::fs::File::open(self.svc.runner.artifact_path(&id))
            .await
            .map_err(|e| jobs::file_error(&id, e))?;
        Ok(Download::Ok(
            Attachment::new(Body::from_async_read(f)).filename(format!("{}.tar.gz", r.id)),
            Some(format!("\"{sha}\"")),
        ))
    }

    /// The manifest of the packed artifact (`jobpack.json`: resolved commit, data hashes, every
    /// file's sha256). 409 until the job is packed.
    #[oai(path = "/jobs/:id/manifest", method = "get")]
    async fn manifest(
        &self,
        caller: Caller,
        id: Path<String>,
    ) -> ApiResult<Json<serde_json::Value>> {
        packed_json(&self.svc.runner, &caller, &id, Packed::Manifest).await
    }

    /// The job's working directory after the run, as `.tar.gz`.
    #[oai(path = "/jobs/:id/tarball", method = "get")]
    async fn tarball_get(&self, caller: Caller, id: Path<String>) -> ApiResult<Download> {
        tarball(&self.svc, &caller, &id).await
    }

    /// The job's working directory after the run, as `.tar.gz` (POST, as the job daemon had it).
    #[oai(path = "/jobs/:id/tarball", method = "post")]
    async fn tarball_post(&self, caller: Caller, id: Path<String>) -> ApiResult<Download> {
        tarball(&self.svc, &caller, &id).await
    }

    /// One file the job produced: `path` inside its working directory, URL-encoded
    /// (`code%2Fout.txt`); `/v1/jobs/{id}/files/code/out.txt` works too.
    #[oai(path = "/jobs/:id/files/:path", method = "get")]
    async fn file(
        &self,
        caller: Caller,
        id: Path<String>,
        path: Path<String>,
    ) -> ApiResult<Download> {
        file_download(&self.svc.runner, &caller, &id, &path).await
    }

    /// Liveness.
    #[oai(path = "/health", method = "get", tag = "ApiTags::Service")]
    async fn health(&self) -> Json<Health> {
        Json(Health {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            limits: serde_json::to_value(&self.svc.limits).unwrap_or_default(),
        })
    }

    /// Readiness: the store takes a write, the data directory's disk has room above the floor
    /// (`--ready-min-free-mb`), the executor can start runs. 503 when any check fails.
    #[oai(path = "/ready", method = "get", tag = "ApiTags::Service")]
    async fn ready(&self) -> poem::Result<ReadyResponse> {
        let svc = self.svc.clone();
        let r = tokio::task::spawn_blocking(move || ready::readiness(&svc))
            .await
            .map_err(poem::error::InternalServerError)?;
        let body = Ready {
            status: if r.ready { "ready" } else { "not_ready" }.into(),
            checks: r
                .checks
                .into_iter()
                .map(|(k, c)| {
                    (
                        k,
                        ReadyCheck {
                            ok: c.ok,
                            detail: c.detail,
                        },
                    )
                })
                .collect(),
        };
        Ok(if r.ready {
            ReadyResponse::Ready(Json(body))
        } else {
            ReadyResponse::NotReady(Json(body))
        })
    }
}

fn default_limit() -> u32 {
    100
}

impl JobsApi {
    fn row(&self, caller: &Caller, id: &str) -> ApiResult<JobRow> {
        Ok(visible_row(&self.svc.runner, caller, id)?)
    }

    /// The row of a job whose files are read: 410 once retention removed them.
    fn files(&self, caller: &Caller, id: &str) -> ApiResult<JobRow> {
        Ok(jobs::files_row(&self.svc.runner, caller, id)?)
    }
}

/// A job as `GET /v1/jobs/{id}` answers it, as JSON (a webhook's `data`).
pub(crate) fn job_json(r: &JobRow) -> Option<serde_json::Value> {
    use poem_openapi::types::ToJSON;
    JobInfo::from(r.clone()).to_json()
}
