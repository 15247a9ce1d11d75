//! `jobpack workflow run|status|list|cancel`: workflows from the command line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{Api, Conn, Failure, Result, exit};

#[derive(Debug, clap::Subcommand)]
pub enum WorkflowCommand {
    /// Submit a workflow file (YAML or JSON: `name`, `jobs: {key: spec + requires}`); the server
    /// checks it whole before any job starts. Prints the workflow id.
    Run {
        file: PathBuf,
        /// Print each job's changes until every job has ended, then the table; exit 0 only if
        /// every job completed.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// A workflow's jobs: job id, name, status, exit code, dependencies (any unique prefix of
    /// its id will do).
    Status {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Workflows, newest first.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop a workflow's running jobs and skip those not started.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

async fn resolve(api: &Api, prefix: &str) -> Result<String> {
    api.resolve_listed(
        "/v1/workflows?limit=1000",
        "workflows",
        "workflow_id",
        prefix,
    )
    .await
}

fn cell(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_owned()
}

fn exit_cell(j: &Value) -> String {
    j["exit_code"]
        .as_i64()
        .map_or("-".into(), |c| c.to_string())
}

/// The table of a workflow's jobs.
fn table(w: &Value) -> String {
    let mut rows = vec![
        ["JOB ID", "NAME", "STATUS", "EXIT", "DEPENDENCIES"]
            .map(String::from)
            .to_vec(),
    ];
    for j in w["jobs"].as_array().into_iter().flatten() {
        let deps: Vec<String> = j["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| format!("{}:{}", cell(&d["job"]), cell(&d["status"])))
            .collect();
        rows.push(vec![
            j["job_id"]
                .as_str()
                .unwrap_or("")
                .get(..8)
                .unwrap_or("")
                .to_owned(),
            cell(&j["name"]),
            cell(&j["status"]),
            exit_cell(j),
            if deps.is_empty() {
                "-".into()
            } else {
                deps.join(",")
            },
        ]);
    }
    super::cmds::table(&rows)
}

fn summary(w: &Value) -> String {
    let jobs = w["jobs"].as_array().map_or(0, Vec::len);
    format!(
        "{}  {:<20}  {:<9}  {jobs} jobs",
        w["workflow_id"]
            .as_str()
            .unwrap_or("")
            .get(..8)
            .unwrap_or(""),
        w["name"].as_str().unwrap_or("-"),
        cell(&w["status"]),
    )
}

/// Prints every job's status changes until the workflow has ended, then its table; exit 0 only
/// if it completed.
async fn follow(api: &Api, id: &str) -> Result<ExitCode> {
    let mut seen: HashMap<String, String> = HashMap::new();
    loop {
        let w = api.get_json(&format!("/v1/workflows/{id}")).await?;
        for j in w["jobs"].as_array().into_iter().flatten() {
            let name = cell(&j["name"]);
            let status = cell(&j["status"]);
            if seen.get(&name) != Some(&status) {
                let mut line = format!("{name}: {status}");
                if let Some(c) = j["exit_code"].as_i64() {
                    line.push_str(&format!(" (exit {c})"));
                }
                if let Some(r) = j["reason"].as_str()
                    && status != "completed"
                {
                    line.push_str(&format!(": {r}"));
                }
                eprintln!("{line}");
                seen.insert(name, status);
            }
        }
        let status = w["status"].as_str().unwrap_or("");
        if !matches!(status, "queued" | "running") {
            if api.json {
                println!("{w}");
            } else {
                println!("workflow {id} {status}");
                print!("{}", table(&w));
            }
            return Ok(ExitCode::from(if status == "completed" {
                0
            } else {
                exit::FAILURE
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run_workflow(cmd: WorkflowCommand) -> Result<ExitCode> {
    match cmd {
        WorkflowCommand::Run {
            file,
            follow: f,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", file.display())))?;
            let req = api
                .request(Method::POST, "/v1/workflows")
                .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                .body(text);
            let w: Value = api.send_json(req).await?;
            let id = w["workflow_id"].as_str().unwrap_or_default().to_owned();
            if f {
                eprintln!(
                    "submitted workflow {id} ({} jobs)",
                    w["jobs"].as_array().map_or(0, Vec::len)
                );
                return follow(&api, &id).await;
            }
            if api.json {
                println!("{w}");
            } else {
                println!("{id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Status { id, conn } => {
            let api = Api::new(&conn)?;
            let id = resolve(&api, &id).await?;
            let w = api.get_json(&format!("/v1/workflows/{id}")).await?;
            if api.json {
                println!("{w}");
            } else {
                println!(
                    "workflow {id} {} {}",
                    w["name"].as_str().unwrap_or(""),
                    cell(&w["status"])
                );
                print!("{}", table(&w));
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::List { conn } => {
            let api = Api::new(&conn)?;
            let l = api.get_json("/v1/workflows").await?;
            if api.json {
                println!("{l}");
            } else {
                for w in l["workflows"].as_array().into_iter().flatten() {
                    println!("{}", summary(w));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Cancel { id, conn } => {
            let api = Api::new(&conn)?;
            let id = resolve(&api, &id).await?;
            let req = api.request(Method::POST, &format!("/v1/workflows/{id}/cancel"));
            let w: Value = api.send_json(req).await?;
            if api.json {
                println!("{w}");
            } else {
                println!("cancelling workflow {id}");
                print!("{}", table(&w));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
