//! `jobpack rnx` (and an `rnx` link to the binary): the gRPC job service's command line (seed
//! 004): `run`, `status`, `list`, `stop`, `log`, with its flags (`--max-cpu`, `--max-memory` in
//! MB, `--max-iobps`, `--workflow`), its connection flags and `JOBLET_*` variables, its printed
//! blocks and its status words. `--server` names either door: an `http://` or `https://` URL is
//! the HTTP API ([`http`]), a bare `host:port` as the seed writes it is the gRPC door ([`grpc`]).
//! Both give the same views, printed here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::{Failure, Result, exit};

mod grpc;
mod http;

#[derive(Debug, Args)]
pub struct RnxArgs {
    /// The server: `host:port` for the gRPC door (as the seed), or an `http://` / `https://`
    /// URL for the HTTP API.
    #[arg(
        long,
        env = "JOBLET_SERVER",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    server: String,
    /// The client certificate (PEM); its CN is the user and its OU the role. Also
    /// `JOBLET_CERT_PATH`; on the gRPC door `certs/client-cert.pem` if it exists.
    #[arg(long, env = "JOBLET_CERT", global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's key (PKCS#8 PEM). Also `JOBLET_KEY_PATH`; on the gRPC door
    /// `certs/client-key.pem` if it exists.
    #[arg(long, env = "JOBLET_KEY", global = true)]
    key: Option<PathBuf>,
    /// The CA certificate to trust for the server. Also `JOBLET_CA_PATH`; on the gRPC door
    /// `certs/ca-cert.pem` if it exists.
    #[arg(long, env = "JOBLET_CA", global = true)]
    ca: Option<PathBuf>,
    /// An API token, where no client certificate is used (HTTP only).
    #[arg(long, env = "JOBPACK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: RnxCommand,
}

#[derive(Debug, Subcommand)]
enum RnxCommand {
    /// Run a command as a job (or a workflow file with --workflow).
    Run {
        /// CPU limit, percent of one core.
        #[arg(long)]
        max_cpu: Option<u32>,
        /// Memory limit in MB.
        #[arg(long)]
        max_memory: Option<u64>,
        /// IO limit in bytes per second.
        #[arg(long)]
        max_iobps: Option<u64>,
        /// Pin the job to these CPUs (`0-1`, `2,3`).
        #[arg(long)]
        cpu_cores: Option<String>,
        /// Start at this time (RFC 3339 in UTC, `2026-12-01T09:30:00Z`).
        #[arg(long)]
        schedule: Option<String>,
        /// A workflow file (YAML) to run instead of a command.
        #[arg(long)]
        workflow: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// A job's status (or a workflow's with --workflow).
    Status {
        #[arg(long)]
        workflow: bool,
        id: String,
    },
    /// All jobs (or workflows with --workflow).
    List {
        #[arg(long)]
        workflow: bool,
    },
    /// Stop a running job: SIGTERM, then SIGKILL after the grace period.
    Stop { id: String },
    /// A job's output; followed until the job ends unless --follow=false.
    Log {
        #[arg(short = 'f', long, default_value_t = true, action = clap::ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        follow: bool,
        id: String,
    },
}

/// What `rnx run` asks for.
pub(super) struct RunRequest {
    pub command: Vec<String>,
    pub max_cpu: Option<u32>,
    pub max_memory_mb: Option<u64>,
    pub max_iobps: Option<u64>,
    pub cpu_cores: Option<String>,
    pub schedule: Option<String>,
}

/// A job as rnx prints it, from either door.
pub(super) struct JobView {
    pub id: String,
    pub command: String,
    /// The seed's word (`INITIALIZING`, `RUNNING`, `COMPLETED`, ...).
    pub status: String,
    /// When it was accepted (RFC 3339).
    pub created: String,
    pub started: String,
    pub ended: String,
    pub max_cpu: u64,
    pub max_memory_mb: u64,
    pub max_iobps: u64,
    pub cpu_cores: String,
    pub exit_code: i64,
    pub host_network: bool,
}

/// A workflow as rnx prints it.
pub(super) struct WorkflowView {
    pub id: String,
    pub name: String,
    pub status: String,
    /// How many jobs it has (a list may leave `jobs` empty).
    pub job_count: usize,
    pub jobs: Vec<WorkflowJobView>,
}

pub(super) struct WorkflowJobView {
    pub name: String,
    pub status: String,
    pub id: String,
    pub depends_on: Vec<String>,
}

/// The door `--server` names.
enum Door {
    Http(http::HttpDoor),
    Grpc(Box<grpc::GrpcDoor>),
}

/// A path flag, else the seed's `JOBLET_*_PATH` variable.
fn flag_or_env(flag: &Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.clone().or_else(|| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

impl Door {
    async fn open(a: &RnxArgs) -> Result<Door> {
        let cert = flag_or_env(&a.cert, "JOBLET_CERT_PATH");
        let key = flag_or_env(&a.key, "JOBLET_KEY_PATH");
        let ca = flag_or_env(&a.ca, "JOBLET_CA_PATH");
        if cert.is_some() != key.is_some() {
            return Err(Failure::new(
                exit::BAD_INPUT,
                "--cert and --key go together: give both or neither",
            ));
        }
        let server = a.server.trim();
        if server.starts_with("http://") || server.starts_with("https://") {
            let conn = super::Conn {
                server: server.to_owned(),
                token: a.token.clone(),
                ca_cert: ca,
                client_cert: cert,
                client_key: key,
                json: false,
            };
            return Ok(Door::Http(http::HttpDoor::new(&conn)?));
        }
        // The seed's defaults, where no path is given and they exist.
        let seed = |given: Option<PathBuf>, name: &str| {
            given.or_else(|| {
                let p = PathBuf::from("certs").join(name);
                p.exists().then_some(p)
            })
        };
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (Some(c), Some(k)),
            _ => (seed(None, "client-cert.pem"), seed(None, "client-key.pem")),
        };
        let tls = grpc::Tls {
            cert,
            key,
            ca: seed(ca, "ca-cert.pem"),
        };
        Ok(Door::Grpc(Box::new(
            grpc::GrpcDoor::connect(server, tls).await?,
        )))
    }

    /// The full job id `id` names (the HTTP API takes any unique prefix).
    async fn resolve(&mut self, id: &str) -> Result<String> {
        match self {
            Door::Http(d) => d.api.resolve(id).await,
            Door::Grpc(_) => Ok(id.trim().to_owned()),
        }
    }

    async fn run(&mut self, r: &RunRequest) -> Result<JobView> {
        match self {
            Door::Http(d) => d.run(r).await,
            Door::Grpc(d) => d.run(r).await,
        }
    }

    async fn job(&mut self, id: &str) -> Result<JobView> {
        match self {
            Door::Http(d) => d.job(id).await,
            Door::Grpc(d) => d.job(id).await,
        }
    }

    async fn jobs(&mut self) -> Result<Vec<JobView>> {
        match self {
            Door::Http(d) => d.jobs().await,
            Door::Grpc(d) => d.jobs().await,
        }
    }

    async fn stop(&mut self, id: &str) -> Result<JobView> {
        match self {
            Door::Http(d) => d.stop(id).await,
            Door::Grpc(d) => d.stop(id).await,
        }
    }

    /// Writes the log to stdout: all of it to the job's end with `follow`, else what there is.
    async fn log(&mut self, id: &str, follow: bool) -> Result<()> {
        match self {
            Door::Http(d) => d.log(id, follow).await,
            Door::Grpc(d) => d.log(id, follow).await,
        }
    }

    async fn run_workflow(&mut self, file: &str, text: Vec<u8>) -> Result<WorkflowView> {
        match self {
            Door::Http(d) => d.run_workflow(text).await,
            Door::Grpc(d) => d.run_workflow(file, text).await,
        }
    }

    async fn workflow(&mut self, id: &str) -> Result<WorkflowView> {
        match self {
            Door::Http(d) => d.workflow(id).await,
            Door::Grpc(d) => d.workflow(id).await,
        }
    }

    async fn workflows(&mut self) -> Result<Vec<WorkflowView>> {
        match self {
            Door::Http(d) => d.workflows().await,
            Door::Grpc(d) => d.workflows().await,
        }
    }
}

fn print_status(j: &JobView) {
    println!("Id: {}", j.id);
    println!("Command: {}", j.command);
    println!("Status: {}", j.status);
    println!("Started At: {}", j.started);
    println!("Ended At: {}", j.ended);
    println!("MaxCPU: {}", j.max_cpu);
    println!("MaxMemory: {}", j.max_memory_mb);
    println!("MaxIOBPS: {}", j.max_iobps);
    println!("CPUCores: {}", j.cpu_cores);
    println!("ExitCode: {}", j.exit_code);
}

fn print_workflow(w: &WorkflowView) {
    println!("Workflow: {}", w.id);
    println!("Name: {}", w.name);
    println!("Status: {}", w.status);
    for j in &w.jobs {
        println!(
            "  {} {} {} depends on: {}",
            j.name,
            j.status,
            j.id,
            if j.depends_on.is_empty() {
                "-".into()
            } else {
                j.depends_on.join(", ")
            }
        );
    }
}

pub async fn run_rnx(a: RnxArgs) -> Result<ExitCode> {
    let mut door = Door::open(&a).await?;
    match a.command {
        RnxCommand::Run {
            workflow: Some(file),
            ..
        } => {
            let text = std::fs::read(&file).map_err(|e| {
                Failure::new(
                    exit::BAD_INPUT,
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let w = door.run_workflow(&name, text).await?;
            println!("Workflow started:");
            println!("ID: {}", w.id);
            println!("Name: {}", w.name);
            println!("Jobs: {}", w.job_count);
        }
        RnxCommand::Run {
            max_cpu,
            max_memory,
            max_iobps,
            cpu_cores,
            schedule,
            workflow: None,
            command,
        } => {
            if command.is_empty() {
                return Err(Failure::new(
                    exit::BAD_INPUT,
                    "invalid command: the command is empty",
                ));
            }
            let req = RunRequest {
                command,
                max_cpu,
                max_memory_mb: max_memory,
                max_iobps,
                cpu_cores,
                schedule,
            };
            let j = door.run(&req).await?;
            println!("Job started:");
            println!("ID: {}", j.id);
            println!("Command: {}", req.command.join(" "));
            // As accepted (it may have moved on already).
            println!("Status: {}", j.status);
            println!("StartTime: {}", j.created);
            println!("MaxCPU: {}", j.max_cpu);
            println!("MaxMemory: {}", j.max_memory_mb);
            if let Some(t) = &req.schedule {
                println!("ScheduledTime: {t}");
            }
            println!(
                "Network: {}",
                if j.host_network {
                    "host (shared with system)"
                } else {
                    "none (a private network)"
                }
            );
        }
        RnxCommand::Status { workflow: true, id } => print_workflow(&door.workflow(&id).await?),
        RnxCommand::Status {
            workflow: false,
            id,
        } => {
            let id = door.resolve(&id).await?;
            print_status(&door.job(&id).await?);
        }
        RnxCommand::List { workflow: true } => {
            for w in door.workflows().await? {
                println!("{} {} {} jobs: {}", w.id, w.status, w.name, w.job_count);
            }
        }
        RnxCommand::List { workflow: false } => {
            for j in door.jobs().await? {
                println!(
                    "{} {} StartTime: {} Command: {}",
                    j.id, j.status, j.started, j.command
                );
            }
        }
        RnxCommand::Stop { id } => {
            let id = door.resolve(&id).await?;
            let j = door.stop(&id).await?;
            println!("Job stopped successfully:");
            println!("ID: {}", j.id);
            println!("Status: {}", j.status);
            println!("ExitCode: {}", j.exit_code);
            println!("EndTime: {}", j.ended);
        }
        RnxCommand::Log { follow, id } => {
            let id = door.resolve(&id).await?;
            if follow {
                println!("Logs for job {id} (Press Ctrl+C to exit if streaming):");
            }
            door.log(&id, follow).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
