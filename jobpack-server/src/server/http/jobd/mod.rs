//! The `/jobs` door of the job daemon (`jobd`, seed 000) and the FastAPI job runner (seed 002):
//! their calls as their READMEs show them, over the same service as `/v1`. Uploads are a set of
//! files (`files`, `file`, `code_files`), `input_files`, or one archive (`archive`, or a lone
//! `.tar`/`.tar.gz`/`.tgz`/`.zip` file), with or without a `spec` part (the runner's spec or
//! jobpack's own; without one the code's `jobpack.yaml|json`, else its `run.sh`). The log stream
//! is the runner's: one `data:` line per log line, `event: stdout` or `event: stderr`, then
//! `event: end`.

mod spec;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::types::multipart::Upload;
use poem_openapi::{ApiResponse, Multipart, Object, OpenApi, Tags};

use crate::server::http::downloads::{Download, file_download, tarball};
use crate::server::http::jobs::{JobInfo, rfc3339};
use crate::server::http::logs::{LineEvent, LogText, log_lines, log_text};
use crate::server::http::problem::{ApiError, ApiResult, Submitted, internal, problem};
use crate::server::http::uploads::{UploadJob, store_uploads};
use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::ServiceError;
use crate::server::service::jobs::{self, visible_row};
use crate::server::service::submit::{Submitter, queue_full};
use crate::server::store::{JobRow, ListFilter};

#[derive(Tags)]
enum JobdTags {
    /// The job daemon's and the job runner's calls (`/jobs`), as their users know them.
    Jobd,
}

pub struct JobdApi {
    pub svc: Arc<Service>,
}

/// A job's uploads. A part with any other name is refused, naming it.
#[derive(Debug, Multipart)]
#[oai(deny_unknown_fields)]
pub struct JobdUpload {
    /// The runner's spec (`{"entry": "main.py", "args": [...], "timeout_sec": 60, "runtime":
    /// "python3.12", "net_policy": "none", "env": {...}}`) or jobpack's own submission (JSON).
    /// Without one, the code's `jobpack.yaml`/`jobpack.json`, else its `run.sh`, says what runs.
    spec: Option<String>,
    /// Files placed in `code/` (the job's working directory), or one archive of it.
    files: Vec<Upload>,
    /// The same as `files`.
    file: Vec<Upload>,
    /// The same as `files`.
    code_files: Vec<Upload>,
    /// Files placed in `data/` (`$JOBPACK_DATA_DIR`).
    input_files: Vec<Upload>,
    /// One `.tar`, `.tar.gz` or `.zip` holding the code.
    archive: Option<Upload>,
}

/// An accepted job.
#[derive(Debug, Object)]
pub struct JobdCreated {
    /// The job's id (also `job_id`).
    pub id: String,
    pub job_id: String,
    pub status: String,
}

/// A job in the list: its id and status.
#[derive(Debug, Object)]
pub struct JobdSummary {
    pub id: String,
    pub job_id: String,
    pub status: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub created_at: String,
}

/// A job's details: `id` and everything `/v1/jobs/{id}` shows.
#[derive(Debug, Object)]
pub struct JobdJob {
    pub id: String,
    #[oai(flatten)]
    pub job: JobInfo,
}

/// A job's status.
#[derive(Debug, Object)]
pub struct JobdStatus {
    pub id: String,
    pub job_id: String,
    pub status: String,
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    #[oai(nullable)]
    pub reason: Option<String>,
    pub updated_at: String,
}

#[derive(ApiResponse)]
pub enum LineStream {
    /// `text/event-stream`: `event: stdout|stderr` + `data: <line>` per log line, then
    /// `event: end` + `data: {"status": ..., "exit_code": ...}`.
    #[oai(status = 200)]
    Ok(LineEvents),
}

/// The events of the line stream, as the OpenAPI document describes each one.
#[derive(Debug, Object)]
#[oai(rename = "LogLineEvent")]
pub struct LineEventDoc {
    pub event: LineEventName,
    /// The line (for stdout and stderr), or `{"status": ..., "exit_code": ...}` (for end).
    pub data: String,
}

#[derive(Debug, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum LineEventName {
    Stdout,
    Stderr,
    End,
}

/// A `text/event-stream` body, documented as its events.
pub struct LineEvents(poem::Body);

impl poem_openapi::payload::Payload for LineEvents {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        <LineEventDoc as poem_openapi::types::Type>::schema_ref()
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        <LineEventDoc as poem_openapi::types::Type>::register(registry);
    }
}

impl poem::IntoResponse for LineEvents {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .content_type("text/event-stream")
            .header("Cache-Control", "no-cache")
            .body(self.0)
    }
}

/// One SSE event: every line of `data` (split at CR or LF, so job output cannot forge a field
/// or end the event early) its own `data:` field; an empty line still an event.
fn sse_frame(event: &str, data: &str) -> String {
    let mut s = format!("event: {event}\n");
    for line in data.split(['\n', '\r']) {
        s.push_str("data: ");
        s.push_str(line);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// `frames`, with a comment line every 15 s while nothing else comes; ends with `frames`.
fn with_keep_alive(
    frames: impl futures_util::Stream<Item = String> + Send + 'static,
) -> BoxStream<'static, String> {
    let tick = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(15),
        Duration::from_secs(15),
    );
    futures_util::stream::unfold(
        (frames.boxed(), tick),
        |(mut frames, mut tick)| async move {
            tokio::select! {
                f = frames.next() => f.map(|f| (f, (frames, tick))),
                _ = tick.tick() => Some((": keep-alive\n\n".to_owned(), (frames, tick))),
            }
        },
    )
    .boxed()
}

#[derive(ApiResponse)]
pub enum JobdAccepted {
    /// The job is being stopped.
    #[oai(status = 200)]
    Ok(Json<JobdStatus>),
}

#[derive(ApiResponse)]
pub enum JobdDeleted {
    /// The job, its files and its log are gone.
    #[oai(status = 200)]
    Ok(Json<JobdStatus>),
}

fn status_of(r: &JobRow) -> JobdStatus {
    JobdStatus {
        id: r.id.clone(),
        job_id: r.id.clone(),
        status: r.status.as_str().into(),
        exit_code: r.exit_code,
        reason: r.reason.clone(),
        updated_at: rfc3339(r.updated_at),
    }
}

impl JobdApi {
    fn row(&self, caller: &Caller, id: &str) -> ApiResult<JobRow> {
        Ok(visible_row(&self.svc.runner, caller, id)?)
    }
}

#[OpenApi(tag = "JobdTags::Jobd")]
impl JobdApi {
    /// Create a job from uploaded files (or one archive) and queue it.
    #[oai(path = "/jobs", method = "post")]
    async fn create(&self, caller: Caller, up: JobdUpload) -> ApiResult<Submitted<JobdCreated>> {
        require(&caller, Action::Submit, "submit jobs")?;
        if let Some(why) = queue_full(&self.svc) {
            return Ok(Submitted::Busy(problem(503, "busy", why)));
        }
        let mut code: Vec<Upload> = Vec::new();
        code.extend(up.files);
        code.extend(up.file);
        code.extend(up.code_files);
        let mut archive = up.archive;
        if archive.is_none()
            && code.len() == 1
            && code[0]
                .file_name()
                .is_some_and(jobpack_core::archive::is_archive_name)
        {
            archive = code.pop();
        }
        if code.is_empty() && archive.is_none() {
            return Err(ApiError::BadRequest(problem(
                400,
                "bad_upload",
                "no code: upload files (files, file or code_files) or one archive",
            )));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let uploads = UploadJob::new(code, up.input_files, archive);
        let runner = &self.svc.runner;
        let submitter = Submitter::new(&self.svc, &caller, None)?;
        // With a spec, every check comes before the upload is stored; without one, the stored
        // code says what runs, and the checks follow (a refusal removes what was stored).
        let mut entry = None;
        let mut parsed = match &up.spec {
            Some(s) => {
                let (sub, e) = spec::submission_of(s)?;
                entry = e;
                let mut p = submitter.parse(sub)?;
                if p.owner.is_some() {
                    return Err(
                        ServiceError::invalid("bad_request", "owner: not on this door").into(),
                    );
                }
                submitter.check(&mut p).await?;
                p
            }
            None => {
                let mut p = submitter.parse(serde_json::json!({"command": "true"}))?;
                submitter.limit(&mut p)?;
                p
            }
        };
        submitter.has_room()?;
        store_uploads(runner, &id, &parsed.sub, uploads).await?;
        let refuse = |e: ServiceError| -> ApiError {
            if let Err(rm) = runner.remove_files(&id) {
                tracing::warn!(job_id = %id, "cannot remove a refused upload: {rm}");
            }
            e.into()
        };
        let code_dir = runner.job_dir(&id).join("upload").join("code");
        if up.spec.is_none() {
            let derived = spec::from_code(&code_dir).map_err(refuse)?;
            parsed = submitter.parse(derived).map_err(refuse)?;
            submitter.check(&mut parsed).await.map_err(refuse)?;
        }
        if let Some(entry) = entry {
            // A regular file reached without any link (the upload may hold links).
            let (dir, rel) = (code_dir.clone(), entry.clone());
            let is_file = tokio::task::spawn_blocking(move || {
                jobpack_core::tree::Tree::open(&dir)
                    .and_then(|t| t.open_file(&rel))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            if !is_file {
                return Err(refuse(ServiceError::invalid(
                    "invalid_spec",
                    format!("entry: {entry} is not among the uploaded files"),
                )));
            }
        }
        submitter.submit_one(&id, &parsed, "upload")?;
        Ok(Submitted::Created(Json(JobdCreated {
            id: id.clone(),
            job_id: id,
            status: jobpack_core::JobStatus::Queued.as_str().into(),
        })))
    }

    /// Every job's id and status, newest first (the caller's own; admins and viewers see all).
    #[oai(path = "/jobs", method = "get")]
    async fn list(&self, caller: Caller) -> ApiResult<Json<Vec<JobdSummary>>> {
        require(&caller, Action::Read, "read jobs")?;
        let filter = ListFilter {
            owner: caller.owner_filter(),
            limit: 10_000,
            ..ListFilter::default()
        };
        let (rows, _) = self.svc.runner.store.list(&filter).map_err(internal)?;
        Ok(Json(
            rows.into_iter()
                .map(|r| JobdSummary {
                    id: r.id.clone(),
                    job_id: r.id,
                    status: r.status.as_str().into(),
                    name: r.name,
                    created_at: rfc3339(r.created_at),
                })
                .collect(),
        ))
    }

    /// A job's details.
    #[oai(path = "/jobs/:id", method = "get")]
    async fn get(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobdJob>> {
        let r = self.row(&caller, &id)?;
        Ok(Json(JobdJob {
            id: r.id.clone(),
            job: r.into(),
        }))
    }

    /// A job's current status.
    #[oai(path = "/jobs/:id/status", method = "get")]
    async fn status(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobdStatus>> {
        Ok(Json(status_of(&self.row(&caller, &id)?)))
    }

    /// The log so far, as plain text (stdout and stderr as the job wrote them).
    #[oai(path = "/jobs/:id/logs", method = "get")]
    async fn logs(&self, caller: Caller, id: Path<String>) -> ApiResult<LogText> {
        self.row(&caller, &id)?;
        log_text(self.svc.runner.log_path(&id), |_| 0, None).await
    }

    /// The log as Server-Sent Events, line by line: `event: stdout` or `event: stderr` with the
    /// line as `data:`, history then live, and `event: end` (data: the final status and exit
    /// code as JSON) when the job has ended. A comment line every 15 s keeps it open.
    #[oai(path = "/jobs/:id/logs/stream", method = "get")]
    async fn stream(&self, caller: Caller, id: Path<String>) -> ApiResult<LineStream> {
        self.row(&caller, &id)?;
        let lines = log_lines(self.svc.runner.clone(), id.0.clone());
        let frames = with_keep_alive(lines.map(|e| {
            match e {
                LineEvent::Line(stream, line) => sse_frame(stream.as_str(), &line),
                LineEvent::End(r) => sse_frame(
                    "end",
                    &serde_json::json!({"status": r.status.as_str(), "exit_code": r.exit_code})
                        .to_string(),
                ),
            }
        }));
        Ok(LineStream::Ok(LineEvents(poem::Body::from_bytes_stream(
            frames.map(Ok::<_, std::io::Error>),
        ))))
    }

    /// Stop a running (or queued) job: SIGTERM to all of it, SIGKILL after the grace period.
    #[oai(path = "/jobs/:id/cancel", method = "post")]
    async fn cancel(&self, caller: Caller, id: Path<String>) -> ApiResult<JobdAccepted> {
        let mut s = status_of(&jobs::cancel(&self.svc, &caller, &id)?);
        s.status = "stopping".into();
        Ok(JobdAccepted::Ok(Json(s)))
    }

    /// Remove a job: stopped if it runs, then its files, log and record.
    #[oai(path = "/jobs/:id", method = "delete")]
    async fn delete(&self, caller: Caller, id: Path<String>) -> ApiResult<JobdDeleted> {
        let mut s = status_of(&self.row(&caller, &id)?);
        jobs::delete(&self.svc, &caller, &id).await?;
        s.status = "deleted".into();
        Ok(JobdDeleted::Ok(Json(s)))
    }

    /// A tarball (`.tar.gz`) of the job's working directory: how a job's results are fetched.
    #[oai(path = "/jobs/:id/tarball", method = "post")]
    async fn tarball(&self, caller: Caller, id: Path<String>) -> ApiResult<Download> {
        tarball(&self.svc, &caller, &id).await
    }

    /// A file the job produced: `filename` in its working directory (`code/`, where it ran), or
    /// at the top of the job directory.
    #[oai(path = "/jobs/:id/artifacts/:filename", method = "get")]
    async fn artifact(
        &self,
        caller: Caller,
        id: Path<String>,
        filename: Path<String>,
    ) -> ApiResult<Download> {
        if filename.contains('/') || filename.0 == ".." || filename.0 == "." {
            return Err(ApiError::BadRequest(problem(
                400,
                "bad_request",
                format!("filename: {:?} is not a file name", filename.0),
            )));
        }
        let runner = &self.svc.runner;
        match file_download(runner, &caller, &id, &format!("code/{}", filename.0)).await {
            Err(ApiError::NotFound(_)) => file_download(runner, &caller, &id, &filename).await,
            other => other,
        }
    }
}
