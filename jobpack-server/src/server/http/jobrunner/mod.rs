//! The JobRunner's door (seed 003) at `/api/v1`: the OAuth2 password grant, shell-command jobs
//! (argv, working directory, env, payload, queue, priority), batches with counters in its words,
//! per-user stats, and admin-only users, over the same service as `/v1`.

mod shapes;

use std::sync::Arc;

use poem::web::RemoteAddr;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Form, Json};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::server::http::accounts::account_error;
use crate::server::http::problem::{ApiError, ApiResult, Submitted, internal, problem};
use crate::server::service::Service;
use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::batches::{self, Accepted, BatchRequest};
use crate::server::service::error::ServiceError;
use crate::server::service::jobs::visible_row;
use crate::server::service::sign_in;
use crate::server::service::submit::{Submitter, queue_full};
use crate::server::store::ListFilter;
use crate::server::store::accounts::{Quota, Role};
use shapes::*;

#[derive(Tags)]
enum RunnerTags {
    /// The JobRunner's calls (`/api/v1`), as its users know them.
    JobRunner,
}

pub struct JobRunnerApi {
    pub svc: Arc<Service>,
}

#[derive(Debug, Object)]
pub struct HealthOut {
    pub status: String,
}

#[derive(ApiResponse)]
pub enum Created<T: poem_openapi::types::ToJSON + Send + Sync> {
    #[oai(status = 201)]
    Created(Json<T>),
}

/// The most of each stream `GET /api/v1/jobs/{id}/logs` returns (its last bytes).
const MAX_LOG: u64 = 1 << 20;

impl JobRunnerApi {
    fn jobs(
        &self,
        caller: &Caller,
        batch_id: Option<String>,
        limit: u32,
        offset: u32,
    ) -> ApiResult<Vec<JobOut>> {
        require(caller, Action::Read, "read jobs")?;
        let filter = ListFilter {
            owner: caller.owner_filter(),
            batch_id,
            limit,
            offset,
            ..ListFilter::default()
        };
        let (rows, _) = self.svc.runner.store.list(&filter).map_err(internal)?;
        Ok(rows.into_iter().map(JobOut::from).collect())
    }

    fn batch(&self, caller: &Caller, id: &str) -> ApiResult<BatchOut> {
        let b = batches::visible(&self.svc, caller, id)?;
        let c = self
            .svc
            .runner
            .store
            .batch_counters(&b.id)
            .map_err(internal)?;
        Ok(BatchOut::new(b, c))
    }

    /// A command job's submission object, with this door's defaults.
    fn submission(&self, j: &CommandJob) -> serde_json::Value {
        j.submission(
            self.svc.workdirs.default.as_deref(),
            self.svc.command_timeout,
        )
    }
}

fn default_limit() -> u32 {
    100
}

#[OpenApi(prefix_path = "/api/v1", tag = "RunnerTags::JobRunner")]
impl JobRunnerApi {
    /// Readiness probe.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<HealthOut> {
        Json(HealthOut {
            status: "ok".into(),
        })
    }

    /// The OAuth2 password grant: form `username`, `password` (and `grant_type=password`).
    /// Answers a bearer JWT valid on every door for `expires_in` seconds; a disabled user's
    /// sessions stop at once. Failed sign-ins are throttled per user and address (429).
    #[oai(path = "/auth/token", method = "post")]
    async fn token(&self, form: Form<TokenForm>, addr: &RemoteAddr) -> ApiResult<Json<TokenOut>> {
        if form.grant_type.as_deref().is_some_and(|g| g != "password") {
            return Err(ApiError::BadRequest(problem(
                400,
                "unsupported_grant_type",
                "grant_type: only \"password\" is supported",
            )));
        }
        let ip = addr.as_socket_addr().map(|a| a.ip());
        let svc = self.svc.clone();
        let (user, pass) = (form.username.clone(), form.password.clone());
        let signed = tokio::task::spawn_blocking(move || {
            sign_in::sign_in(&svc.runner.store, &svc.sign_in, &user, &pass, ip)
        })
        .await
        .map_err(internal)?;
        let (session, user) = signed?;
        self.svc
            .runner
            .store
            .audit(&user.name, "user.sign_in", Some(&user.name), None);
        Ok(Json(TokenOut {
            access_token: session.access_token,
            token_type: "bearer".into(),
            expires_in: session.expires_in,
        }))
    }

    /// Submit a shell-command job.
    #[oai(path = "/jobs", method = "post")]
    async fn create(&self, caller: Caller, body: Json<CommandJob>) -> ApiResult<Submitted<JobOut>> {
        require(&caller, Action::Submit, "submit jobs")?;
        if let Some(why) = queue_full(&self.svc) {
            return Ok(Submitted::Busy(problem(503, "busy", why)));
        }
        let submitter = Submitter::new(&self.svc, &caller, None)?;
        let mut parsed = submitter.parse(self.submission(&body))?;
        submitter.check(&mut parsed).await?;
        submitter.has_room()?;
        let id = uuid::Uuid::new_v4().to_string();
        submitter.submit_one(&id, &parsed, "spec")?;
        let row = visible_row(&self.svc.runner, &caller, &id)?;
        Ok(Submitted::Created(Json(row.into())))
    }

    /// Jobs, newest first (the caller's own; admins and viewers see all), optionally of one
    /// batch.
    #[oai(path = "/jobs", method = "get")]
    async fn list(
        &self,
        caller: Caller,
        batch_id: Query<Option<String>>,
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
    ) -> ApiResult<Json<Vec<JobOut>>> {
        Ok(Json(self.jobs(&caller, batch_id.0, limit.0, offset.0)?))
    }

    /// Per-user aggregates: the caller's (admins and viewers: every user's).
    #[oai(path = "/jobs/stats", method = "get")]
    async fn stats(&self, caller: Caller) -> ApiResult<Json<Vec<UserStats>>> {
        require(&caller, Action::Read, "read stats")?;
        let store = &self.svc.runner.store;
        let users = match caller.owner_filter() {
            Some(me) => vec![me],
            None => store.owners().map_err(internal)?,
        };
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            let counts = store.counts(Some(&u)).map_err(internal)?;
            out.push(UserStats::new(u, &counts));
        }
        Ok(Json(out))
    }

    /// A job.
    #[oai(path = "/jobs/:id", method = "get")]
    async fn get(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<JobOut>> {
        Ok(Json(visible_row(&self.svc.runner, &caller, &id)?.into()))
    }

    /// A job's stdout and stderr, apart (the last MiB of each).
    #[oai(path = "/jobs/:id/logs", method = "get")]
    async fn logs(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<LogsOut>> {
        visible_row(&self.svc.runner, &caller, &id)?;
        let path = self.svc.runner.log_path(&id);
        let read = tokio::task::spawn_blocking(move || split_log(&path))
            .await
            .map_err(internal)?
            .map_err(internal)?;
        Ok(Json(LogsOut {
            job_id: id.0,
            stdout: read.0,
            stderr: read.1,
            truncated: read.2,
        }))
    }

    /// Submit a batch of command jobs; every job is checked before any is stored.
    #[oai(path = "/job-batches", method = "post")]
    async fn create_batch(
        &self,
        caller: Caller,
        body: Json<CommandBatch>,
    ) -> ApiResult<Submitted<BatchOut>> {
        let body = body.0;
        let req = BatchRequest {
            name: body.name,
            description: body.description,
            owner: None,
            jobs: body.jobs.iter().map(|j| self.submission(j)).collect(),
            hooks: body
                .callback_url
                .iter()
                .map(|u| crate::server::service::webhooks::HookRequest {
                    url: u.clone(),
                    events: vec!["batch.finished".into()],
                    ..Default::default()
                })
                .collect(),
            retry: None,
        };
        match batches::submit(&self.svc, &caller, req).await? {
            Accepted::Created(b, _) => Ok(Submitted::Created(Json(self.batch(&caller, &b.id)?))),
            Accepted::Busy(why) => Ok(Submitted::Busy(problem(503, "busy", why))),
        }
    }

    /// Batches, newest first, with their counters.
    #[oai(path = "/job-batches", method = "get")]
    async fn list_batches(
        &self,
        caller: Caller,
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
    ) -> ApiResult<Json<Vec<BatchOut>>> {
        require(&caller, Action::Read, "read batches")?;
        let store = &self.svc.runner.store;
        let owner = caller.owner_filter();
        let rows = store
            .batches(owner.as_deref(), limit.0, offset.0)
            .map_err(internal)?;
        let mut out = Vec::with_capacity(rows.len());
        for b in rows {
            let c = store.batch_counters(&b.id).map_err(internal)?;
            out.push(BatchOut::new(b, c));
        }
        Ok(Json(out))
    }

    /// A batch and its counters.
    #[oai(path = "/job-batches/:id", method = "get")]
    async fn get_batch(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<BatchOut>> {
        Ok(Json(self.batch(&caller, &id)?))
    }

    /// A batch's member jobs.
    #[oai(path = "/job-batches/:id/jobs", method = "get")]
    async fn batch_jobs(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<Vec<JobOut>>> {
        let b = self.batch(&caller, &id)?;
        Ok(Json(self.jobs(&caller, Some(b.id), 10_000, 0)?))
    }

    /// Users (admins).
    #[oai(path = "/users", method = "get")]
    async fn users(&self, caller: Caller) -> ApiResult<Json<Vec<UserOut>>> {
        require(&caller, Action::Administer, "manage users")?;
        let users = self.svc.runner.store.users().map_err(internal)?;
        Ok(Json(users.into_iter().map(user_out).collect()))
    }

    /// Add a user with an email (their login name), password and role (admins).
    #[oai(path = "/users", method = "post")]
    async fn add_user(&self, caller: Caller, body: Json<NewUserIn>) -> ApiResult<Created<UserOut>> {
        require(&caller, Action::Administer, "manage users")?;
        let role = match body.role.as_str() {
            "user" => Role::Submitter,
            r => r
                .parse::<Role>()
                .map_err(|e| ServiceError::invalid("bad_request", format!("role: {e}")))?,
        };
        let pw = body.password.clone();
        let hash = tokio::task::spawn_blocking(move || sign_in::hash_password(&pw))
            .await
            .map_err(internal)??;
        let store = &self.svc.runner.store;
        store
            .add_user(&body.email, role, &Quota::default())
            .map_err(account_error)?;
        store
            .set_password_hash(&body.email, Some(&hash))
            .map_err(account_error)?;
        store.audit(
            &caller.user,
            "user.add",
            Some(&body.email),
            Some(&format!("role={role}")),
        );
        let u = store
            .user(&body.email)
            .map_err(internal)?
            .ok_or_else(|| internal(anyhow::anyhow!("the new user is gone")))?;
        Ok(Created::Created(Json(user_out(u))))
    }
}

fn user_out(u: crate::server::store::accounts::UserRow) -> UserOut {
    UserOut {
        id: u.name.clone(),
        email: u.name,
        role: u.role.to_string(),
        is_active: !u.disabled,
        created_at: crate::server::http::jobs::rfc3339(u.created_at),
    }
}

/// The last [`MAX_LOG`] bytes of each stream of the log at `path`, and whether either was cut.
fn split_log(path: &std::path::Path) -> std::io::Result<(String, String, bool)> {
    use jobpack_core::exec::logs::streams::{Stream, StreamRuns};
    use std::io::{Read, Seek};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((String::new(), String::new(), false));
        }
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let runs = StreamRuns::read(path)?;
    let mut out = [Vec::new(), Vec::new()];
    let mut cut = false;
    for want in [Stream::Stdout, Stream::Stderr] {
        let mine = runs.segments_of(0, len, want);
        // From the end backwards, at most MAX_LOG bytes.
        let mut left = MAX_LOG;
        let mut parts = Vec::new();
        for &(a, b) in mine.iter().rev() {
            if left == 0 {
                cut = true;
                break;
            }
            let take = (b - a).min(left);
            cut |= take < b - a;
            parts.push((b - take, b));
            left -= take;
        }
        let buf = &mut out[usize::from(want == Stream::Stderr)];
        for (a, b) in parts.into_iter().rev() {
            f.seek(std::io::SeekFrom::Start(a))?;
            let mut chunk = vec![0u8; (b - a) as usize];
            f.read_exact(&mut chunk)?;
            buf.extend_from_slice(&chunk);
        }
    }
    let [o, e] = out;
    Ok((
        String::from_utf8_lossy(&o).into_owned(),
        String::from_utf8_lossy(&e).into_owned(),
        cut,
    ))
}
