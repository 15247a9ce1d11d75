//! rnx over the gRPC door (`--server host:port`, as the seed's rnx): seed 004's
//! `joblet.JobletService` for jobs and `joblet.JobService` for workflows, over TLS with the
//! client certificate that names the caller.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use super::{JobView, RunRequest, WorkflowJobView, WorkflowView};
use crate::client::{Failure, Result, exit};
use crate::proto as pb;
use pb::job_service_client::JobServiceClient;
use pb::joblet_service_client::JobletServiceClient;

/// The certificate files for the connection.
pub(super) struct Tls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

pub(super) struct GrpcDoor {
    jobs: JobletServiceClient<Channel>,
    workflows: JobServiceClient<Channel>,
}

/// The seed's error codes as the client's exit codes; the server's message as it is.
fn failure(s: Status) -> Failure {
    let code = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => exit::BAD_INPUT,
        Code::Unauthenticated | Code::PermissionDenied => exit::DENIED,
        Code::NotFound => exit::NOT_FOUND,
        Code::FailedPrecondition | Code::AlreadyExists => exit::CONFLICT,
        Code::ResourceExhausted => exit::BUSY,
        Code::Unavailable => exit::UNREACHABLE,
        _ => exit::FAILURE,
    };
    Failure::new(code, format!("{} ({:?})", s.message(), s.code()))
}

fn read(p: &PathBuf) -> Result<Vec<u8>> {
    std::fs::read(p)
        .map_err(|e| Failure::new(exit::BAD_INPUT, format!("cannot read {}: {e}", p.display())))
}

/// The host of `host:port` (`[::1]:50051` gives `::1`), for checking the server's certificate.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn view(j: pb::Job) -> JobView {
    let mut command = vec![j.command];
    command.extend(j.args);
    JobView {
        id: j.id,
        command: command.join(" "),
        status: j.status,
        created: if j.start_time.is_empty() {
            humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
        } else {
            j.start_time.clone()
        },
        started: j.start_time,
        ended: j.end_time,
        max_cpu: j.max_cpu.max(0) as u64,
        max_memory_mb: j.max_memory.max(0) as u64,
        max_iobps: j.max_iobps.max(0) as u64,
        cpu_cores: j.cpu_cores,
        exit_code: i64::from(j.exit_code),
        // The gRPC door's jobs get the server's default: a private network.
        host_network: false,
    }
}

fn workflow_view(info: pb::WorkflowInfo, jobs: Vec<pb::WorkflowJob>) -> WorkflowView {
    WorkflowView {
        id: info.id,
        name: info.name,
        status: info.status.to_uppercase(),
        job_count: usize::try_from(info.total_jobs)
            .unwrap_or(0)
            .max(jobs.len()),
        jobs: jobs
            .into_iter()
            .map(|j| WorkflowJobView {
                name: j.job_name,
                status: j.status,
                id: j.job_id,
                depends_on: j.dependencies,
            })
            .collect(),
    }
}

impl GrpcDoor {
    pub async fn connect(addr: &str, tls: Tls) -> Result<GrpcDoor> {
        let bad = |m: String| Failure::new(exit::BAD_INPUT, m);
        let Some(ca) = &tls.ca else {
            return Err(bad(
                "the gRPC door is TLS only: give the server's CA with --ca (or JOBLET_CA_PATH, \
                 or certs/ca-cert.pem)"
                    .into(),
            ));
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .domain_name(host_of(addr));
        if let (Some(c), Some(k)) = (&tls.cert, &tls.key) {
            config = config.identity(Identity::from_pem(read(c)?, read(k)?));
        }
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| bad(format!("--server {addr:?} is not host:port: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .tls_config(config)
            .map_err(|e| bad(format!("cannot set up TLS: {e}")))?;
        let channel = endpoint.connect().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("cannot reach {addr}: {}", crate::client::innermost(&e)),
            )
        })?;
        Ok(GrpcDoor {
            jobs: JobletServiceClient::new(channel.clone()),
            workflows: JobServiceClient::new(channel),
        })
    }

    pub async fn run(&mut self, r: &RunRequest) -> Result<JobView> {
        let int = |what: &str, v: Option<u64>| {
            i32::try_from(v.unwrap_or(0)).map_err(|_| {
                Failure::new(
                    exit::BAD_INPUT,
                    format!("invalid limits: {what} is too large"),
                )
            })
        };
        let req = pb::RunJobReq {
            command: r.command[0].clone(),
            args: r.command[1..].to_vec(),
            max_cpu: int("--max-cpu", r.max_cpu.map(u64::from))?,
            max_memory: int("--max-memory", r.max_memory_mb)?,
            max_iobps: int("--max-iobps", r.max_iobps)?,
            cpu_cores: r.cpu_cores.clone().unwrap_or_default(),
            scheduled_time: r.schedule.clone().unwrap_or_default(),
            ..Default::default()
        };
        let res = self.jobs.run_job(req).await.map_err(failure)?.into_inner();
        res.job
            .map(view)
            .ok_or_else(|| Failure::new(exit::FAILURE, "the server's answer had no job"))
    }

    pub async fn job(&mut self, id: &str) -> Result<JobView> {
        let req = pb::GetJobStatusReq { id: id.to_owned() };
        let res = self
            .jobs
            .get_job_status(req)
            .await
            .map_err(failure)?
            .into_inner();
        res.job
            .map(view)
            .ok_or_else(|| Failure::new(exit::FAILURE, "the server's answer had no job"))
    }

    pub async fn jobs(&mut self) -> Result<Vec<JobView>> {
        let res = self
            .jobs
            .list_jobs(pb::EmptyRequest {})
            .await
            .map_err(failure)?;
        Ok(res.into_inner().jobs.into_iter().map(view).collect())
    }

    /// StopJob answers once the job has ended (the server waits out the grace).
    pub async fn stop(&mut self, id: &str) -> Result<JobView> {
        let req = pb::StopJobReq { id: id.to_owned() };
        let r = self.jobs.stop_job(req).await.map_err(failure)?.into_inner();
        let mut j = self.job(&r.id).await?;
        (j.status, j.ended, j.exit_code) = (r.status, r.end_time, i64::from(r.exit_code));
        Ok(j)
    }

    pub async fn log(&mut self, id: &str, follow: bool) -> Result<()> {
        let req = pb::GetJobLogsReq {
            id: id.to_owned(),
            no_follow: !follow,
        };
        let mut stream = self
            .jobs
            .get_job_logs(req)
            .await
            .map_err(failure)?
            .into_inner();
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = stream.message().await.map_err(failure)? {
            out.write_all(&chunk.payload)?;
            out.flush()?;
        }
        Ok(())
    }

    pub async fn run_workflow(&mut self, file: &str, text: Vec<u8>) -> Result<WorkflowView> {
        let req = pb::RunWorkflowRequest {
            workflow: file.to_owned(),
            yaml_content: text,
        };
        let r = self
            .workflows
            .run_workflow(req)
            .await
            .map_err(failure)?
            .into_inner();
        self.workflow(&r.workflow_id).await
    }

    pub async fn workflow(&mut self, id: &str) -> Result<WorkflowView> {
        let req = pb::GetWorkflowStatusRequest {
            workflow_id: id.to_owned(),
        };
        let r = self
            .workflows
            .get_workflow_status(req)
            .await
            .map_err(failure)?
            .into_inner();
        Ok(workflow_view(r.workflow.unwrap_or_default(), r.jobs))
    }

    pub async fn workflows(&mut self) -> Result<Vec<WorkflowView>> {
        let r = self
            .workflows
            .list_workflows(pb::ListWorkflowsRequest {})
            .await
            .map_err(failure)?
            .into_inner();
        Ok(r.workflows
            .into_iter()
            .map(|w| workflow_view(w, Vec::new()))
            .collect())
    }
}
