//! `jobpack rnx` (and an `rnx` link to the binary): the gRPC job service's command line (seed
//! 004), over a jobpack server's HTTP API: `run`, `status`, `list`, `stop`, `log`, with its
//! flags (`--max-cpu`, `--max-memory` in MB, `--max-iobps`, `--workflow`), its connection flags
//! and `JOBLET_*` variables, its printed blocks and its status words.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use jobpack_core::status::joblet_word;
use serde_json::{Value, json};

use super::{Api, Conn, Failure, Result, exit};

#[derive(Debug, Args)]
pub struct RnxArgs {
    /// The server (`https://host:8443`; HTTP or HTTPS).
    #[arg(
        long,
        env = "JOBLET_SERVER",
        default_value = "http://127.0.0.1:8000",
        global = true
    )]
    server: String,
    /// The client certificate (PEM); its CN is the user and its OU the role.
    #[arg(long, env = "JOBLET_CERT", requires = "key", global = true)]
    cert: Option<PathBuf>,
    /// The client certificate's key (PKCS#8 PEM).
    #[arg(long, env = "JOBLET_KEY", requires = "cert", global = true)]
    key: Option<PathBuf>,
    /// The CA certificate to trust for the server.
    #[arg(long, env = "JOBLET_CA", global = true)]
    ca: Option<PathBuf>,
    /// An API token, where no client certificate is used.
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

fn conn(a: &RnxArgs) -> Conn {
    Conn {
        server: a.server.clone(),
        token: a.token.clone(),
        ca_cert: a.ca.clone(),
        client_cert: a.cert.clone(),
        client_key: a.key.clone(),
        json: false,
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `command args...` of a job as the API shows it.
fn command_line(j: &Value) -> String {
    match &j["request"]["spec"]["command"] {
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(" "),
        other => s(other),
    }
}

fn limit(j: &Value, key: &str) -> u64 {
    j["request"]["limits"][key].as_u64().unwrap_or(0)
}

pub async fn run_rnx(a: RnxArgs) -> Result<ExitCode> {
    let api = Api::new(&conn(&a))?;
    match a.command {
        RnxCommand::Run {
            max_cpu,
            max_memory,
            max_iobps,
            cpu_cores,
            schedule,
            workflow,
            command,
        } => {
            if let Some(file) = workflow {
                let text = std::fs::read(&file).map_err(|e| {
                    Failure::new(
                        exit::BAD_INPUT,
                        format!("cannot read {}: {e}", file.display()),
                    )
                })?;
                let r = api
                    .request(reqwest::Method::POST, "/v1/workflows")
                    .header("content-type", "application/yaml")
                    .body(text);
                let w = api.send_json(r).await?;
                println!("Workflow started:");
                println!("ID: {}", s(&w["workflow_id"]));
                println!("Name: {}", s(&w["name"]));
                println!("Jobs: {}", w["jobs"].as_array().map_or(0, Vec::len));
                return Ok(ExitCode::SUCCESS);
            }
            if command.is_empty() {
                return Err(Failure::new(
                    exit::BAD_INPUT,
                    "invalid command: the command is empty",
                ));
            }
            let mut body = json!({"command": command});
            for (k, v) in [
                ("maxCPU", max_cpu.map(u64::from)),
                ("maxMemory", max_memory),
                ("maxIOBPS", max_iobps),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(t) = &schedule {
                body["scheduledTime"] = json!(t);
            }
            if let Some(c) = &cpu_cores {
                body["cpuCores"] = json!(c);
            }
            let r = api
                .request(reqwest::Method::POST, "/v1/jobs")
                .header("content-type", "application/json")
                .body(body.to_string());
            let created = api.send_json(r).await?;
            let id = s(&created["job_id"]);
            let j = api.get_json(&format!("/v1/jobs/{id}")).await?;
            println!("Job started:");
            println!("ID: {id}");
            println!("Command: {}", command.join(" "));
            // As accepted (it may have moved on already).
            println!(
                "Status: {}",
                joblet_word(created["status"].as_str().unwrap_or(""))
            );
            println!("StartTime: {}", s(&j["created_at"]));
            println!("MaxCPU: {}", limit(&j, "cpu_percent"));
            println!("MaxMemory: {}", limit(&j, "memory_bytes") >> 20);
            if let Some(t) = &schedule {
                println!("ScheduledTime: {t}");
            }
            println!(
                "Network: {}",
                if j["request"]["network"] == "host" {
                    "host (shared with system)"
                } else {
                    "none (a private network)"
                }
            );
        }
        RnxCommand::Status { workflow: true, id } => {
            let w = api.get_json(&format!("/v1/workflows/{id}")).await?;
            println!("Workflow: {}", s(&w["workflow_id"]));
            println!("Name: {}", s(&w["name"]));
            println!("Status: {}", s(&w["status"]).to_uppercase());
            for j in w["jobs"].as_array().into_iter().flatten() {
                let deps: Vec<String> = j["dependencies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| s(&d["job"]))
                    .collect();
                println!(
                    "  {} {} {} depends on: {}",
                    s(&j["name"]),
                    joblet_word(j["status"].as_str().unwrap_or("")),
                    s(&j["job_id"]),
                    if deps.is_empty() {
                        "-".into()
                    } else {
                        deps.join(", ")
                    }
                );
            }
        }
        RnxCommand::Status {
            workflow: false,
            id,
        } => {
            let id = api.resolve(&id).await?;
            let j = api.get_json(&format!("/v1/jobs/{id}")).await?;
            let word = joblet_word(j["status"].as_str().unwrap_or(""));
            println!("Id: {id}");
            println!("Command: {}", command_line(&j));
            println!("Status: {word}");
            println!("Started At: {}", s(&j["started_at"]));
            println!("Ended At: {}", s(&j["finished_at"]));
            println!("MaxCPU: {}", limit(&j, "cpu_percent"));
            println!("MaxMemory: {}", limit(&j, "memory_bytes") >> 20);
            println!("MaxIOBPS: {}", limit(&j, "io_bps"));
            println!("CPUCores: {}", s(&j["request"]["limits"]["cpu_cores"]));
            let code = if word == "STOPPED" {
                -1
            } else {
                j["exit_code"].as_i64().unwrap_or(0)
            };
            println!("ExitCode: {code}");
        }
        RnxCommand::List { workflow: true } => {
            let l = api.get_json("/v1/workflows?limit=1000").await?;
            for w in l["workflows"].as_array().into_iter().flatten() {
                println!(
                    "{} {} {} jobs: {}",
                    s(&w["workflow_id"]),
                    s(&w["status"]).to_uppercase(),
                    s(&w["name"]),
                    w["jobs"].as_array().map_or(0, Vec::len)
                );
            }
        }
        RnxCommand::List { workflow: false } => {
            let l = api.get_json("/v1/jobs?limit=1000").await?;
            for j in l["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{} {} StartTime: {} Command: {}",
                    s(&j["job_id"]),
                    joblet_word(j["status"].as_str().unwrap_or("")),
                    s(&j["started_at"]),
                    command_line(j)
                );
            }
        }
        RnxCommand::Stop { id } => {
            let id = api.resolve(&id).await?;
            let r = api.request(reqwest::Method::POST, &format!("/v1/jobs/{id}/cancel"));
            api.send_json(r).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            let j = loop {
                let j = api.get_json(&format!("/v1/jobs/{id}")).await?;
                let word = joblet_word(j["status"].as_str().unwrap_or(""));
                if !matches!(word, "INITIALIZING" | "RUNNING")
                    || tokio::time::Instant::now() > deadline
                {
                    break j;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let word = joblet_word(j["status"].as_str().unwrap_or(""));
            println!("Job stopped successfully:");
            println!("ID: {id}");
            println!("Status: {word}");
            let code = if word == "STOPPED" {
                -1
            } else {
                j["exit_code"].as_i64().unwrap_or(0)
            };
            println!("ExitCode: {code}");
            println!("EndTime: {}", s(&j["finished_at"]));
        }
        RnxCommand::Log { follow, id } => {
            let id = api.resolve(&id).await?;
            if follow {
                println!("Logs for job {id} (Press Ctrl+C to exit if streaming):");
                let mut out = std::io::stdout();
                api.follow(&id, &mut out).await?;
            } else {
                let r = api.request(reqwest::Method::GET, &format!("/v1/jobs/{id}/logs"));
                let text = api.send(r).await?.text().await.map_err(|e| {
                    Failure::new(exit::UNREACHABLE, format!("cannot read the log: {e}"))
                })?;
                print!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
