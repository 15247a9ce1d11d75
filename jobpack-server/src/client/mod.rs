//! The `jobpack` client commands (`submit`, `status`, `list`, `logs`, `cancel`, `rm`,
//! `download`): a thin HTTP client of a jobpack server. This module holds what they share: the
//! connection flags, error-to-exit-code mapping, job id prefixes, and following a log over SSE.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

mod batch;
mod cmds;
mod rnx;
mod submit;
mod workflow;

pub use batch::{BatchCommand, run_batch};
pub use cmds::{
    CancelArgs, DownloadArgs, ListArgs, LogsArgs, RmArgs, StatusArgs, run_cancel, run_download,
    run_list, run_logs, run_rm, run_status,
};
pub use rnx::{RnxArgs, run_rnx};
pub use submit::{SubmitArgs, run_submit};
pub use workflow::{WorkflowCommand, run_workflow};

/// Where the server is and how to prove who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// The server's URL.
    #[arg(long, env = "JOBPACK_SERVER", default_value = "http://127.0.0.1:8000")]
    pub server: String,
    /// API token (`jobpack admin token create`); not needed with a client certificate or on a
    /// server started with --auth none.
    #[arg(long, env = "JOBPACK_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A PEM CA certificate to trust for the server, besides the system's.
    #[arg(long, env = "JOBPACK_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// A PEM client certificate for mutual TLS (with --client-key).
    #[arg(long, env = "JOBPACK_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The PKCS#8 PEM key of --client-cert.
    #[arg(long, env = "JOBPACK_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Print the server's JSON instead of tables and messages.
    #[arg(long)]
    pub json: bool,
}

/// Exit codes of the client commands (besides the job's own with `submit --follow`).
pub mod exit {
    pub const FAILURE: u8 = 1;
    /// The input is invalid (a local spec, or the server said 400/422).
    pub const BAD_INPUT: u8 = 2;
    /// No such job (or an id prefix that matches none or several).
    pub const NOT_FOUND: u8 = 3;
    /// 401/403: credentials missing or wrong, or the role may not.
    pub const DENIED: u8 = 4;
    /// The server cannot be reached.
    pub const UNREACHABLE: u8 = 5;
    /// 409: the job is not in a state that allows this (ended, not packed yet).
    pub const CONFLICT: u8 = 6;
    /// 429/503: over quota or the queue is full; try later.
    pub const BUSY: u8 = 7;
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::new(exit::FAILURE, format!("{e:#}"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::new(exit::FAILURE, e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

/// Runs a client command on a fresh runtime and turns its failure into a message and an exit code.
pub fn block_on<F>(f: F) -> ExitCode
where
    F: std::future::Future<Output = Result<ExitCode>>,
{
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Failure::from)
        .and_then(|rt| rt.block_on(f));
    match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// A connection to a jobpack server.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    pub json: bool,
}

impl Api {
    pub fn new(conn: &Conn) -> Result<Api> {
        let base = conn.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::new(
                exit::BAD_INPUT,
                format!("--server must be an http:// or https:// URL, got {base:?}"),
            ));
        }
        let bad = |what: &str, p: &PathBuf, e: &dyn std::fmt::Display| {
            Failure::new(exit::BAD_INPUT, format!("{what} {}: {e}", p.display()))
        };
        let mut b = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(p) = &conn.ca_cert {
            let pem = std::fs::read(p).map_err(|e| bad("cannot read", p, &e))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| bad("not a PEM certificate:", p, &e))?;
            b = b.add_root_certificate(cert);
        }
        if let (Some(c), Some(k)) = (&conn.client_cert, &conn.client_key) {
            let cert = std::fs::read(c).map_err(|e| bad("cannot read", c, &e))?;
            let key = std::fs::read(k).map_err(|e| bad("cannot read", k, &e))?;
            let id = reqwest::Identity::from_pkcs8_pem(&cert, &key)
                .map_err(|e| bad("not a PEM certificate and PKCS#8 key:", c, &e))?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| Failure::new(exit::FAILURE, format!("cannot set up HTTP: {e}")))?;
        Ok(Api {
            http,
            base,
            token: conn.token.clone().filter(|t| !t.is_empty()),
            json: conn.json,
        })
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends a request; a non-2xx answer becomes a `Failure` with the server's message.
    pub async fn send(&self, r: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = r.send().await.map_err(|e| {
            Failure::new(
                exit::UNREACHABLE,
                format!("cannot reach {}: {}", self.base, innermost(&e)),
            )
        })?;
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        let code = match status {
            400 | 413 | 415 | 422 => exit::BAD_INPUT,
            401 | 403 => exit::DENIED,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            429 | 503 => exit::BUSY,
            _ => exit::FAILURE,
        };
        Err(Failure::new(code, format!("{message} (HTTP {status})")))
    }

    /// Sends a request and reads the JSON answer.
    pub async fn send_json(&self, r: reqwest::RequestBuilder) -> Result<Value> {
        self.send(r)
            .await?
            .json()
            .await
            .map_err(|e| Failure::new(exit::FAILURE, format!("the server's answer: {e}")))
    }

    pub async fn get_json(&self, path: &str) -> Result<Value> {
        self.send_json(self.request(reqwest::Method::GET, path))
            .await
    }

    /// The full id of the job `id_or_prefix` names (any unique prefix of a job id will do).
    pub async fn resolve(&self, id_or_prefix: &str) -> Result<String> {
        let p = id_or_prefix.trim();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(Failure::new(
                exit::BAD_INPUT,
                format!("{p:?} is not a job id or id prefix"),
            ));
        }
        if p.len() == 36 {
            return Ok(p.to_ascii_lowercase());
        }
        let l = self
            .get_json(&format!(
                "/v1/jobs?id_prefix={}&limit=5",
                p.to_ascii_lowercase()
            ))
            .await?;
        let ids: Vec<&str> = l["jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|j| j["job_id"].as_str()).collect())
            .unwrap_or_default();
        match (ids.as_slice(), l["total"].as_u64().unwrap_or(0)) {
            ([one], 1) => Ok((*one).to_owned()),
            (_, 0) => Err(Failure::new(
                exit::NOT_FOUND,
                format!("no job id starts with {p}"),
            )),
            (_, n) => Err(Failure::new(
                exit::NOT_FOUND,
                format!(
                    "{p} is ambiguous: {n} jobs match ({}{}); give more of the id",
                    ids.join(", "),
                    if n as usize > ids.len() { ", ..." } else { "" }
                ),
            )),
        }
    }

    /// The full id among those `list_path` lists (`{key: [{id_key: ...}]}`) that starts with
    /// `prefix` (batches, workflows: fewer than jobs, so listed whole).
    pub async fn resolve_listed(
        &self,
        list_path: &str,
        key: &str,
        id_key: &str,
        prefix: &str,
    ) -> Result<String> {
        let what = key.trim_end_matches('s');
        let l = self.get_json(list_path).await?;
        let ids: Vec<String> = l[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b[id_key].as_str())
            .filter(|i| i.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        match ids.as_slice() {
            [one] if !prefix.is_empty() => Ok(one.clone()),
            [] | [_] => Err(Failure::new(
                exit::NOT_FOUND,
                format!("no {what} id starts with {prefix:?}"),
            )),
            _ => Err(Failure::new(
                exit::NOT_FOUND,
                format!(
                    "{prefix} is ambiguous: {} {key} match; give more of the id",
                    ids.len()
                ),
            )),
        }
    }

    /// Writes a job's log to `out` from the SSE stream until the job ends, reconnecting with
    /// `Last-Event-ID` when the connection drops (each event id is a byte offset, so nothing is
    /// repeated or lost). Returns the final status and exit code.
    pub async fn follow(&self, id: &str, out: &mut dyn Write) -> Result<(String, Option<i32>)> {
        let path = format!("/v1/jobs/{id}/logs/stream");
        let mut last_id: Option<String> = None;
        let mut attempts = 0u32;
        loop {
            let mut r = self.request(reqwest::Method::GET, &path);
            if let Some(l) = &last_id {
                r = r.header("Last-Event-ID", l);
            }
            match self.send(r).await {
                Ok(resp) => {
                    let mut events = resp.bytes_stream().eventsource();
                    while let Some(ev) = events.next().await {
                        let Ok(ev) = ev else { break };
                        attempts = 0;
                        if !ev.id.is_empty() {
                            last_id = Some(ev.id.clone());
                        }
                        let data: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                        if ev.event == "end" {
                            let status = data["status"].as_str().unwrap_or("unknown").to_owned();
                            let code = data["exit_code"].as_i64().map(|c| c as i32);
                            return Ok((status, code));
                        }
                        if let Some(t) = data["text"].as_str() {
                            out.write_all(t.as_bytes())?;
                            out.flush()?;
                        }
                    }
                }
                // The server may be restarting: try again for a while.
                Err(f) if f.code == exit::UNREACHABLE => {}
                Err(f) => return Err(f),
            }
            attempts += 1;
            if attempts > 60 {
                return Err(Failure::new(
                    exit::UNREACHABLE,
                    format!("lost the log stream of {id} and could not get it back"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250 * u64::from(attempts.min(8)))).await;
        }
    }
}

/// The exit code that stands for a job's end, as `jobpack run` gives it: the job's own, 124 for
/// a time-out, 130 for a cancel, 128+signal, else 1.
pub fn job_exit_code(status: &str, exit_code: Option<i32>, signal: Option<i32>) -> u8 {
    use jobpack_core::JobStatus as S;
    match (status.parse::<S>().ok(), exit_code, signal) {
        (Some(S::TimedOut), _, _) => 124,
        (Some(S::Stopped), _, _) => 130,
        (Some(S::Packed), _, _) => 0,
        (_, Some(c), _) => u8::try_from(c).unwrap_or(1),
        (_, None, Some(s)) => u8::try_from(128 + s).unwrap_or(137),
        _ => 1,
    }
}

/// The resource limit flags of `jobpack run` and `jobpack submit`.
#[derive(Debug, clap::Args)]
pub struct LimitFlags {
    /// Stop the job after this many seconds (status timed_out).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Memory limit in MiB (status oom_killed when exceeded).
    #[arg(long)]
    pub memory: Option<u64>,
    /// CPU limit in percent of one core (50 = half a core, 200 = two cores).
    #[arg(long)]
    pub cpu: Option<u32>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub pids: Option<u64>,
}

impl LimitFlags {
    pub fn memory_bytes(&self) -> Option<u64> {
        self.memory.map(|m| m.saturating_mul(1 << 20))
    }
}

/// The innermost cause of an error: what happened (refused, TLS, DNS, ...).
pub fn innermost<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = e;
    while let Some(s) = cause.source() {
        cause = s;
    }
    cause
}
