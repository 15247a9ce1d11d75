//! `jobpack batch submit|status|list|cancel`: batches from the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::{Api, Conn, Failure, Result, exit};

#[derive(Debug, clap::Subcommand)]
pub enum BatchCommand {
    /// Submit a batch file (YAML or JSON: `name`, `description`, `jobs: [spec, ...]`; each job
    /// takes the same keys as a single submission). Prints the batch id.
    Submit {
        file: PathBuf,
        /// Show the counters until every job has ended; exit 0 only if all completed.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// A batch's counters and jobs (any unique prefix of its id will do).
    Status {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Batches, newest first.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Stop every job of a batch that has not ended.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn counters(b: &Value) -> String {
    let n = |k: &str| b[k].as_u64().unwrap_or(0);
    format!(
        "{} {}/{} done: {} completed, {} failed, {} stopped, {} running, {} queued",
        b["status"].as_str().unwrap_or("?"),
        n("completed") + n("failed") + n("stopped"),
        n("total"),
        n("completed"),
        n("failed"),
        n("stopped"),
        n("running"),
        n("queued"),
    )
}

async fn resolve(api: &Api, prefix: &str) -> Result<String> {
    api.resolve_listed("/v1/batches?limit=1000", "batches", "batch_id", prefix)
        .await
}

/// Prints the counters every second until the batch has ended; exit 0 only if all completed.
async fn follow(api: &Api, id: &str) -> Result<ExitCode> {
    let mut last = String::new();
    loop {
        let b = api.get_json(&format!("/v1/batches/{id}?limit=0")).await?;
        let line = counters(&b);
        if line != last {
            eprintln!("{line}");
            last = line;
        }
        let status = b["status"].as_str().unwrap_or("");
        if !matches!(status, "queued" | "running") {
            if api.json {
                println!("{b}");
            }
            return Ok(ExitCode::from(if status == "completed" {
                0
            } else {
                exit::FAILURE
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub async fn run_batch(cmd: BatchCommand) -> Result<ExitCode> {
    match cmd {
        BatchCommand::Submit {
            file,
            follow: f,
            conn,
        } => {
            let api = Api::new(&conn)?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", file.display())))?;
            let body: Value = serde_norway::from_str(&text)
                .map_err(|e| Failure::new(exit::BAD_INPUT, format!("{}: {e}", file.display())))?;
            let req = api.request(Method::POST, "/v1/batches").json(&body);
            let b: Value = api.send_json(req).await?;
            let id = b["batch_id"].as_str().unwrap_or_default().to_owned();
            if f {
                eprintln!("submitted batch {id} ({} jobs)", b["total"]);
                return follow(&api, &id).await;
            }
            if api.json {
                println!("{b}");
            } else {
                println!("{id}");
            }
            Ok(ExitCode::SUCCESS)
        }
        BatchCommand::Status { id, conn } => {
            let api = Api::new(&conn)?;
            let id = resolve(&api, &id).await?;
            let b = api.get_json(&format!("/v1/batches/{id}")).await?;
            if api.json {
                println!("{b}");
                return Ok(ExitCode::SUCCESS);
            }
            println!("batch {id} {}", b["name"].as_str().unwrap_or(""));
            println!("{}", counters(&b));
            let mut rows = vec![["ID", "NAME", "STATUS", "EXIT"].map(String::from).to_vec()];
            for j in b["jobs"].as_array().into_iter().flatten() {
                rows.push(vec![
                    j["job_id"]
                        .as_str()
                        .unwrap_or("")
                        .get(..8)
                        .unwrap_or("")
                        .to_owned(),
                    j["name"].as_str().unwrap_or("-").to_owned(),
                    j["status"].as_str().unwrap_or("").to_owned(),
                    j["exit_code"]
                        .as_i64()
                        .map_or("-".into(), |c| c.to_string()),
                ]);
            }
            print!("{}", super::cmds::table(&rows));
            Ok(ExitCode::SUCCESS)
        }
        BatchCommand::List { conn } => {
            let api = Api::new(&conn)?;
            let l = api.get_json("/v1/batches").await?;
            if api.json {
                println!("{l}");
                return Ok(ExitCode::SUCCESS);
            }
            for b in l["batches"].as_array().into_iter().flatten() {
                println!(
                    "{}  {:<20}  {}",
                    b["batch_id"].as_str().unwrap_or("").get(..8).unwrap_or(""),
                    b["name"].as_str().unwrap_or("-"),
                    counters(b)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BatchCommand::Cancel { id, conn } => {
            let api = Api::new(&conn)?;
            let id = resolve(&api, &id).await?;
            let req = api.request(Method::POST, &format!("/v1/batches/{id}/cancel"));
            let b: Value = api.send_json(req).await?;
            if api.json {
                println!("{b}");
            } else {
                println!("stopping batch {id}: {}", counters(&b));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
