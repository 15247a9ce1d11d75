//! The gRPC door (seed 004): `joblet.JobletService` over mutual TLS 1.3, a thin adapter over
//! the same service as the HTTP doors. The caller is the client certificate's CN, its role the
//! OU (admin and viewer as the seed has them; submitter too); the seed's statuses
//! (INITIALIZING, RUNNING, COMPLETED, FAILED, STOPPED), its error codes and messages.
//! `GetJobLogs` sends the whole log so far, then live output, and closes when the job ends; a
//! client that does not keep up for [`SLOW_CLIENT`] is dropped rather than buffered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tonic::{Request, Response, Status};

use crate::server::http::jobs::rfc3339;
use crate::server::http::logs::{LogChunk, log_chunks};
use crate::server::scheduler::queue::Submission;
use crate::server::service::Service;
use crate::server::service::auth::{Action, Authenticator, Caller};
use crate::server::service::error::{Kind, ServiceError};
use crate::server::service::jobs::{self, visible_row};
use crate::server::service::submit::Submitter;
use crate::server::store::{JobRow, ListFilter};
use crate::server::tls::PeerIdentity;

pub use crate::proto as pb;

mod runtimes;
mod workflows;

use pb::joblet_service_server::{JobletService, JobletServiceServer};

/// A log reader that cannot hand over a chunk within this long is dropped.
const SLOW_CLIENT: Duration = Duration::from_secs(10);

/// The seed's message size limits: what the server receives, and sends, at most.
pub struct Limits {
    pub max_recv_bytes: usize,
    pub max_send_bytes: usize,
}

pub struct Door {
    svc: Arc<Service>,
    auth: Arc<Authenticator>,
}

/// The service, ready for tonic's server.
pub fn service(svc: Arc<Service>, auth: Arc<Authenticator>, limits: &Limits) -> Services {
    let door = Arc::new(Door { svc, auth });
    Services {
        joblet: JobletServiceServer::from_arc(door.clone())
            .max_decoding_message_size(limits.max_recv_bytes)
            .max_encoding_message_size(limits.max_send_bytes),
        jobs: pb::job_service_server::JobServiceServer::from_arc(door.clone())
            .max_decoding_message_size(limits.max_recv_bytes)
            .max_encoding_message_size(limits.max_send_bytes),
        runtimes: pb::runtime_service_server::RuntimeServiceServer::from_arc(door)
            .max_decoding_message_size(limits.max_recv_bytes)
            .max_encoding_message_size(limits.max_send_bytes),
    }
}

/// The door's services, `joblet.JobletService`, `joblet.JobService` and
/// `joblet.RuntimeService`, on one door.
pub struct Services {
    joblet: JobletServiceServer<Door>,
    jobs: pb::job_service_server::JobServiceServer<Door>,
    runtimes: pb::runtime_service_server::RuntimeServiceServer<Door>,
}

pub use jobpack_core::status::joblet_word as seed_status;

fn status_of(e: ServiceError) -> Status {
    match e.kind {
        Kind::Invalid | Kind::OverQuota => Status::invalid_argument(e.message),
        Kind::Unauthenticated => Status::unauthenticated(e.message),
        Kind::Forbidden => Status::permission_denied(e.message),
        Kind::NotFound | Kind::Gone => Status::not_found(e.message),
        Kind::Conflict => Status::failed_precondition(e.message),
        Kind::TooManyJobs | Kind::StorageFull => Status::resource_exhausted(e.message),
        Kind::Internal => Status::internal(e.message),
    }
}

/// A job in the seed's shape.
fn job_of(r: &JobRow) -> pb::Job {
    let sub: Option<Submission> = serde_json::from_str(&r.request_json).ok();
    let scheduled = sub
        .as_ref()
        .and_then(|s| s.scheduled_at)
        .map(rfc3339)
        .unwrap_or_default();
    let (command, args, env, secrets, limits) = match &sub {
        Some(s) => {
            let (command, args) = match &s.spec.command {
                jobpack_core::Command::Argv(v) => (
                    v.first().cloned().unwrap_or_default(),
                    v.iter().skip(1).cloned().collect(),
                ),
                jobpack_core::Command::Shell(c) => (c.clone(), Vec::new()),
            };
            (
                command,
                args,
                s.spec.env.clone().into_iter().collect(),
                s.secret_env.clone().into_iter().collect(),
                Some(s.limits.clone()),
            )
        }
        None => Default::default(),
    };
    let status = seed_status(r.status.as_str());
    let l = limits.unwrap_or_default();
    pb::Job {
        id: r.id.clone(),
        name: r.name.clone().unwrap_or_default(),
        command,
        args,
        max_cpu: l.cpu_percent.map_or(0, |c| c as i32),
        cpu_cores: l.cpu_cores.clone().unwrap_or_default(),
        max_memory: l.memory_bytes.map_or(0, |m| (m >> 20) as i32),
        max_iobps: l.io_bps.map_or(0, |b| b.min(i32::MAX as u64) as i32),
        status: status.into(),
        start_time: r.started_at.map(rfc3339).unwrap_or_default(),
        end_time: r.finished_at.map(rfc3339).unwrap_or_default(),
        exit_code: if status == "STOPPED" {
            -1
        } else {
            r.exit_code.unwrap_or(0)
        },
        scheduled_time: scheduled,
        runtime: sub
            .as_ref()
            .and_then(|s| s.spec.runtime_fs.clone())
            .unwrap_or_default(),
        environment: env,
        secret_environment: secrets,
    }
}

impl Door {
    /// The caller of a request: its client certificate (CN user, OU role).
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let peer: SocketAddr = req
            .remote_addr()
            .unwrap_or_else(|| ([0, 0, 0, 0], 0).into());
        let identity = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| PeerIdentity::from_der(peer, c)));
        let Some(identity) = identity else {
            return Err(Status::unauthenticated(
                "failed to extract client role: no TLS information found",
            ));
        };
        self.auth
            .identify(None, Some(&identity))
            .map_err(Status::unauthenticated)
    }

    fn allow(caller: &Caller, action: Action, operation: &str) -> Result<(), Status> {
        if caller.may(action) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "role {} is not allowed to perform operation {operation}",
                caller.role
            )))
        }
    }

    fn row(&self, caller: &Caller, id: &str) -> Result<JobRow, Status> {
        visible_row(&self.svc.runner, caller, id).map_err(|e| match e.kind {
            Kind::NotFound => Status::not_found(format!("job not found: {id}")),
            _ => status_of(e),
        })
    }
}

#[tonic::async_trait]
impl JobletService for Door {
    async fn run_job(
        &self,
        req: Request<pb::RunJobReq>,
    ) -> Result<Response<pb::RunJobRes>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Submit, "run_job")?;
        let r = req.into_inner();
        if r.command.trim().is_empty() {
            return Err(Status::invalid_argument(
                "invalid command: the command is empty",
            ));
        }
        if r.max_cpu < 0 || r.max_memory < 0 || r.max_iobps < 0 {
            return Err(Status::invalid_argument(
                "invalid limits: they cannot be negative",
            ));
        }
        if let Some(total) = machine_memory_mb()
            && u64::from(r.max_memory.unsigned_abs()) > total
        {
            return Err(Status::invalid_argument(format!(
                "job creation failed: maxMemory {} MB exceeds system limits ({total} MB)",
                r.max_memory
            )));
        }
        let mut argv = vec![r.command.clone()];
        argv.extend(r.args.iter().cloned());
        let mut limits = serde_json::Map::new();
        if r.max_cpu > 0 {
            limits.insert("cpu_percent".into(), r.max_cpu.into());
        }
        if r.max_memory > 0 {
            limits.insert(
                "memory_bytes".into(),
                (u64::from(r.max_memory.unsigned_abs()) << 20).into(),
            );
        }
        if r.max_iobps > 0 {
            limits.insert("io_bps".into(), r.max_iobps.into());
        }
        if !r.cpu_cores.is_empty() {
            limits.insert("cpu_cores".into(), r.cpu_cores.clone().into());
        }
        let mut sub = serde_json::json!({"command": argv, "limits": limits, "env": r.environment});
        if !r.secret_environment.is_empty() {
            sub["secret_env"] = serde_json::json!(r.secret_environment);
        }
        if !r.name.is_empty() {
            sub["name"] = serde_json::json!(r.name);
        }
        if !r.scheduled_time.is_empty() {
            sub["scheduled_at"] = serde_json::json!(r.scheduled_time);
        }
        if !r.callback_url.is_empty() {
            sub["callback_url"] = serde_json::json!(r.callback_url);
        }
        if !r.stdin.is_empty() {
            sub["stdin"] = serde_json::json!(r.stdin);
        }
        if !r.runtime.is_empty() {
            sub["runtime_fs"] = serde_json::json!(r.runtime);
        }
        if let Some(p) = &r.retry {
            let mut retry = serde_json::json!({
                "max_attempts": p.max_attempts,
                "backoff_secs": p.backoff_secs,
            });
            if !p.on.is_empty() {
                retry["on"] = serde_json::json!(p.on);
            }
            sub["retry"] = retry;
        }
        let submitter = Submitter::new(&self.svc, &caller, None).map_err(status_of)?;
        let mut parsed = submitter.parse(sub).map_err(status_of)?;
        submitter.check(&mut parsed).await.map_err(status_of)?;
        submitter.has_room().map_err(status_of)?;
        let id = uuid::Uuid::new_v4().to_string();
        submitter
            .submit_one(&id, &parsed, "spec")
            .map_err(status_of)?;
        let row = self.row(&caller, &id)?;
        Ok(Response::new(pb::RunJobRes {
            job: Some(job_of(&row)),
        }))
    }

    async fn get_job_status(
        &self,
        req: Request<pb::GetJobStatusReq>,
    ) -> Result<Response<pb::GetJobStatusRes>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Read, "get_job_status")?;
        let row = self.row(&caller, &req.get_ref().id)?;
        Ok(Response::new(pb::GetJobStatusRes {
            job: Some(job_of(&row)),
        }))
    }

    async fn stop_job(
        &self,
        req: Request<pb::StopJobReq>,
    ) -> Result<Response<pb::StopJobRes>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Cancel, "stop_job")?;
        let id = req.get_ref().id.clone();
        let r = self.row(&caller, &id)?;
        let not_running = || {
            Status::failed_precondition(format!(
                "job is not running: {id} (current status: {})",
                seed_status(r.status.as_str())
            ))
        };
        match jobs::cancel(&self.svc, &caller, &id) {
            Ok(_) => {}
            Err(e) if e.kind == Kind::Conflict => return Err(not_running()),
            Err(e) => return Err(status_of(e)),
        }
        // SIGTERM, then SIGKILL after the grace: wait for the end, a little past the grace.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let row = loop {
            let now = self.row(&caller, &id)?;
            if crate::server::scheduler::queue::row_is_final(&now)
                || tokio::time::Instant::now() > deadline
            {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let job = job_of(&row);
        Ok(Response::new(pb::StopJobRes {
            id,
            status: job.status,
            end_time: job.end_time,
            exit_code: job.exit_code,
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::EmptyRequest>,
    ) -> Result<Response<pb::Jobs>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Read, "list_jobs")?;
        let filter = ListFilter {
            owner: caller.owner_filter(),
            limit: 10_000,
            ..ListFilter::default()
        };
        let (rows, _) = self
            .svc
            .runner
            .store
            .list(&filter)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::Jobs {
            jobs: rows.iter().map(job_of).collect(),
        }))
    }

    type GetJobLogsStream = BoxStream<'static, Result<pb::DataChunk, Status>>;

    async fn get_job_logs(
        &self,
        req: Request<pb::GetJobLogsReq>,
    ) -> Result<Response<Self::GetJobLogsStream>, Status> {
        let caller = self.caller(&req)?;
        Self::allow(&caller, Action::Read, "get_job_logs")?;
        let pb::GetJobLogsReq { id, no_follow } = req.into_inner();
        self.row(&caller, &id)?;
        // With noFollow, the output so far: up to the log's length now.
        let until = if no_follow {
            let path = self.svc.runner.log_path(&id);
            Some(match tokio::fs::metadata(&path).await {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(Status::internal(format!("cannot read the log: {e}"))),
            })
        } else {
            None
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::DataChunk, Status>>(16);
        let mut chunks = log_chunks(self.svc.runner.clone(), id, 0, 64 * 1024);
        let open = crate::server::metrics::StreamGuard::new("grpc");
        tokio::spawn(async move {
            let _open = open;
            while until != Some(0) {
                let Some(LogChunk::Data { start, mut bytes }) = chunks.next().await else {
                    break;
                };
                let last = until.is_some_and(|u| start + bytes.len() as u64 >= u);
                if let Some(u) = until {
                    bytes.truncate(u.saturating_sub(start) as usize);
                }
                let sent = tokio::time::timeout(
                    SLOW_CLIENT,
                    tx.send(Ok(pb::DataChunk { payload: bytes })),
                );
                match sent.await {
                    Ok(Ok(())) if !last => {}
                    // Done, gone, or too slow: a slow reader is dropped, nothing is buffered.
                    _ => return,
                }
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(stream.boxed()))
    }
}

/// The machine's memory, in MiB (for refusing a limit above it).
fn machine_memory_mb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024)
}

/// Serves the door on `listener` with `tls` (TLS 1.3, client certificates) until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    services: Services,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => {
                        if tx.send(Ok::<_, std::io::Error>(s)).await.is_err() {
                            // The server is shutting down: the connection is dropped.
                        }
                    }
                    Ok(Err(e)) => tracing::warn!("gRPC TLS handshake with {peer} refused: {e}"),
                    Err(_) => {}
                }
            });
        }
    });
    let incoming = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let r = tonic::transport::Server::builder()
        .add_service(services.joblet)
        .add_service(services.jobs)
        .add_service(services.runtimes)
        .serve_with_incoming_shutdown(incoming, stop)
        .await;
    accept.abort();
    r.map_err(|e| anyhow::anyhow!("the gRPC door failed: {e}"))
}
