//! rnx over a jobpack server's HTTP API (`--server http://...` or `https://...`).

use std::time::Duration;

use jobpack_core::status::joblet_word;
use serde_json::{Value, json};

use super::{JobView, RunRequest, WorkflowJobView, WorkflowView};
use crate::client::{Api, Conn, Failure, Result, exit};

pub(super) struct HttpDoor {
    pub api: Api,
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A job as `GET /v1/jobs/{id}` answers it, in rnx's view.
fn view(j: &Value) -> JobView {
    let limit = |key: &str| j["request"]["limits"][key].as_u64().unwrap_or(0);
    let command = match &j["request"]["spec"]["command"] {
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(" "),
        other => s(other),
    };
    let status = joblet_word(j["status"].as_str().unwrap_or("")).to_owned();
    JobView {
        id: s(&j["job_id"]),
        command,
        exit_code: if status == "STOPPED" {
            -1
        } else {
            j["exit_code"].as_i64().unwrap_or(0)
        },
        status,
        created: s(&j["created_at"]),
        started: s(&j["started_at"]),
        ended: s(&j["finished_at"]),
        max_cpu: limit("cpu_percent"),
        max_memory_mb: limit("memory_bytes") >> 20,
        max_iobps: limit("io_bps"),
        cpu_cores: s(&j["request"]["limits"]["cpu_cores"]),
        host_network: j["request"]["network"] == "host",
    }
}

fn workflow_view(w: &Value) -> WorkflowView {
    let jobs: Vec<WorkflowJobView> = w["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| WorkflowJobView {
            name: s(&j["name"]),
            status: joblet_word(j["status"].as_str().unwrap_or("")).to_owned(),
            id: s(&j["job_id"]),
            depends_on: j["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| s(&d["job"]))
                .collect(),
        })
        .collect();
    WorkflowView {
        id: s(&w["workflow_id"]),
        name: s(&w["name"]),
        status: s(&w["status"]).to_uppercase(),
        job_count: jobs.len(),
        jobs,
    }
}

impl HttpDoor {
    pub fn new(conn: &Conn) -> Result<HttpDoor> {
        Ok(HttpDoor {
            api: Api::new(conn)?,
        })
    }

    pub async fn run(&self, r: &RunRequest) -> Result<JobView> {
        let mut body = json!({"command": r.command});
        for (k, v) in [
            ("maxCPU", r.max_cpu.map(u64::from)),
            ("maxMemory", r.max_memory_mb),
            ("maxIOBPS", r.max_iobps),
        ] {
            if let Some(v) = v {
                body[k] = json!(v);
            }
        }
        if let Some(t) = &r.schedule {
            body["scheduledTime"] = json!(t);
        }
        if let Some(c) = &r.cpu_cores {
            body["cpuCores"] = json!(c);
        }
        let req = self
            .api
            .request(reqwest::Method::POST, "/v1/jobs")
            .header("content-type", "application/json")
            .body(body.to_string());
        let created = self.api.send_json(req).await?;
        let mut j = self.job(&s(&created["job_id"])).await?;
        // As accepted (it may have moved on already).
        j.status = joblet_word(created["status"].as_str().unwrap_or("")).to_owned();
        Ok(j)
    }

    pub async fn job(&self, id: &str) -> Result<JobView> {
        Ok(view(&self.api.get_json(&format!("/v1/jobs/{id}")).await?))
    }

    pub async fn jobs(&self) -> Result<Vec<JobView>> {
        let l = self.api.get_json("/v1/jobs?limit=1000").await?;
        Ok(l["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(view)
            .collect())
    }

    /// Cancels, then waits (a little past the grace) for the job to end.
    pub async fn stop(&self, id: &str) -> Result<JobView> {
        let r = self
            .api
            .request(reqwest::Method::POST, &format!("/v1/jobs/{id}/cancel"));
        self.api.send_json(r).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let j = self.job(id).await?;
            if !matches!(j.status.as_str(), "INITIALIZING" | "RUNNING")
                || tokio::time::Instant::now() > deadline
            {
                return Ok(j);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn log(&self, id: &str, follow: bool) -> Result<()> {
        if follow {
            let mut out = std::io::stdout();
            self.api.follow(id, &mut out).await?;
            return Ok(());
        }
        let r = self
            .api
            .request(reqwest::Method::GET, &format!("/v1/jobs/{id}/logs"));
        let text =
            self.api.send(r).await?.text().await.map_err(|e| {
                Failure::new(exit::UNREACHABLE, format!("cannot read the log: {e}"))
            })?;
        print!("{text}");
        Ok(())
    }

    pub async fn run_workflow(&self, text: Vec<u8>) -> Result<WorkflowView> {
        let r = self
            .api
            .request(reqwest::Method::POST, "/v1/workflows")
            .header("content-type", "application/yaml")
            .body(text);
        Ok(workflow_view(&self.api.send_json(r).await?))
    }

    pub async fn workflow(&self, id: &str) -> Result<WorkflowView> {
        Ok(workflow_view(
            &self.api.get_json(&format!("/v1/workflows/{id}")).await?,
        ))
    }

    pub async fn workflows(&self) -> Result<Vec<WorkflowView>> {
        let l = self.api.get_json("/v1/workflows?limit=1000").await?;
        Ok(l["workflows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(workflow_view)
            .collect())
    }
}
