//! The JobRunner's request and answer bodies (seed 003), and their translation: a command job
//! to a jobpack submission, a stored job to the JobRunner's job, batch counters in its words
//! (waiting, running, failed, passed).

use std::collections::BTreeMap;

use poem_openapi::Object;
use serde_json::{Value, json};

use crate::server::http::jobs::rfc3339;
use crate::server::scheduler::queue::Submission;
use crate::server::store::JobRow;
use crate::server::store::batches::{BatchRow, Counters};

/// A shell-command job, as the JobRunner's README shows it.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(rename = "CommandJob", deny_unknown_fields)]
pub struct CommandJob {
    pub name: Option<String>,
    /// The program and its arguments (argv; no shell).
    #[oai(validator(min_items = 1, max_items = 4096))]
    pub command: Vec<String>,
    /// Where it runs: a directory inside one the server allows (`ALLOWED_WORKDIRS`); default
    /// `DEFAULT_WORKING_DIR`, else the job's own directory.
    pub working_dir: Option<String>,
    #[oai(default)]
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Free JSON, kept and returned verbatim.
    pub payload: Option<Value>,
    /// A named queue of the server (default `default`).
    pub queue: Option<String>,
    /// Higher runs first (default 0).
    pub priority: Option<i32>,
    /// jobpack: a URL notified (signed, Standard Webhooks) when the job ends.
    pub callback_url: Option<String>,
    /// jobpack: `{max_attempts, backoff_secs, on}`, as on `/v1/jobs`.
    pub retry: Option<Value>,
}

impl CommandJob {
    /// The jobpack submission of this job: its argv, env, time limit (`timeout`: the door's
    /// default when set), queue, priority, payload and working directory.
    pub fn submission(&self, default_dir: Option<&std::path::Path>, timeout: Option<f64>) -> Value {
        let mut v = json!({"command": self.command, "env": self.env});
        let obj = v.as_object_mut().expect("an object");
        if let Some(n) = &self.name {
            obj.insert("name".into(), json!(n));
        }
        let dir = self
            .working_dir
            .clone()
            .or_else(|| default_dir.map(|d| d.display().to_string()));
        if let Some(d) = dir {
            obj.insert("working_dir".into(), json!(d));
        }
        for (k, val) in [
            ("payload", self.payload.clone()),
            ("queue", self.queue.clone().map(Value::from)),
            ("priority", self.priority.map(Value::from)),
            ("callback_url", self.callback_url.clone().map(Value::from)),
            ("retry", self.retry.clone()),
        ] {
            if let Some(val) = val {
                obj.insert(k.into(), val);
            }
        }
        if let Some(t) = timeout {
            obj.insert("limits".into(), json!({"timeout": t}));
        }
        v
    }
}

/// A batch, as the JobRunner's README shows it.
#[derive(Debug, Object)]
#[oai(rename = "CommandBatch", deny_unknown_fields)]
pub struct CommandBatch {
    pub name: Option<String>,
    pub description: Option<String>,
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub jobs: Vec<CommandJob>,
    /// jobpack: a URL notified (signed, Standard Webhooks) when the batch ends (the seed's
    /// "webhook notifications for batch completion").
    pub callback_url: Option<String>,
}

/// What became of a command job.
#[derive(Debug, Object)]
pub struct JobResult {
    #[oai(nullable)]
    pub exit_code: Option<i32>,
    #[oai(nullable)]
    pub reason: Option<String>,
}

/// A job, in the JobRunner's shape (plus jobpack's status).
#[derive(Debug, Object)]
#[oai(rename = "CommandJobInfo")]
pub struct JobOut {
    pub id: String,
    #[oai(nullable)]
    pub name: Option<String>,
    pub command: Value,
    #[oai(nullable)]
    pub working_dir: Option<String>,
    pub env: BTreeMap<String, String>,
    #[oai(nullable)]
    pub payload: Option<Value>,
    pub queue: String,
    pub priority: i32,
    /// jobpack's status (queued, running, completed, failed, ...).
    pub status: String,
    /// The JobRunner's word for it: waiting, running, failed or passed.
    pub state: String,
    pub result: JobResult,
    #[oai(nullable)]
    pub batch_id: Option<String>,
    pub owner: String,
    pub created_at: String,
    #[oai(nullable)]
    pub started_at: Option<String>,
    #[oai(nullable)]
    pub finished_at: Option<String>,
}

/// The JobRunner's word for a status.
pub fn state_of(status: &str) -> &'static str {
    match status {
        "running" => "running",
        "completed" => "passed",
        "failed" | "timed_out" | "oom_killed" | "limit_exceeded" | "stopped" | "skipped" => {
            "failed"
        }
        _ => "waiting",
    }
}

impl From<JobRow> for JobOut {
    fn from(r: JobRow) -> Self {
        let sub: Option<Submission> = serde_json::from_str(&r.request_json).ok();
        let (command, env, payload, queue, priority, working_dir) = match sub {
            Some(s) => (
                serde_json::to_value(&s.spec.command).unwrap_or_default(),
                s.spec.env.clone(),
                s.payload,
                s.queue.unwrap_or_else(|| "default".into()),
                s.priority,
                s.working_dir.map(|w| w.display().to_string()),
            ),
            None => (
                Value::Null,
                BTreeMap::new(),
                None,
                "default".into(),
                0,
                None,
            ),
        };
        let status = r.status.as_str();
        JobOut {
            id: r.id,
            name: r.name,
            command,
            working_dir,
            env,
            payload,
            queue,
            priority,
            status: status.into(),
            state: state_of(status).into(),
            result: JobResult {
                exit_code: r.exit_code,
                reason: r.reason,
            },
            batch_id: r.batch_id,
            owner: r.owner,
            created_at: rfc3339(r.created_at),
            started_at: r.started_at.map(rfc3339),
            finished_at: r.finished_at.map(rfc3339),
        }
    }
}

/// A batch with its live counters in the JobRunner's words.
#[derive(Debug, Object)]
#[oai(rename = "CommandBatchInfo")]
pub struct BatchOut {
    pub id: String,
    #[oai(nullable)]
    pub name: Option<String>,
    #[oai(nullable)]
    pub description: Option<String>,
    pub owner: String,
    pub total: u64,
    pub waiting: u64,
    pub running: u64,
    pub failed: u64,
    pub passed: u64,
    pub created_at: String,
    #[oai(nullable)]
    pub started_at: Option<String>,
    #[oai(nullable)]
    pub finished_at: Option<String>,
}

impl BatchOut {
    pub fn new(b: BatchRow, c: Counters) -> Self {
        BatchOut {
            id: b.id,
            name: b.name,
            description: b.description,
            owner: b.owner,
            total: c.total,
            waiting: c.queued,
            running: c.running,
            failed: c.failed + c.stopped,
            passed: c.completed,
            created_at: rfc3339(b.created_at),
            started_at: c.started_at.map(rfc3339),
            finished_at: c.finished_at.map(rfc3339),
        }
    }
}

/// One user's jobs, in the JobRunner's words.
#[derive(Debug, Object)]
pub struct UserStats {
    pub user: String,
    pub total: u64,
    pub waiting: u64,
    pub running: u64,
    pub failed: u64,
    pub passed: u64,
}

impl UserStats {
    pub fn new(user: String, counts: &[(String, u64)]) -> Self {
        let mut s = UserStats {
            user,
            total: 0,
            waiting: 0,
            running: 0,
            failed: 0,
            passed: 0,
        };
        for (status, n) in counts {
            s.total += n;
            match state_of(status) {
                "running" => s.running += n,
                "passed" => s.passed += n,
                "failed" => s.failed += n,
                _ => s.waiting += n,
            }
        }
        s
    }
}

/// A user, in the JobRunner's shape.
#[derive(Debug, Object)]
#[oai(rename = "RunnerUser")]
pub struct UserOut {
    pub id: String,
    pub email: String,
    pub role: String,
    pub is_active: bool,
    pub created_at: String,
}

/// A new user: email (their login name), password and role.
#[derive(Debug, Object)]
#[oai(rename = "RunnerNewUser", deny_unknown_fields)]
pub struct NewUserIn {
    pub email: String,
    pub password: String,
    /// admin, submitter (also `user`) or viewer.
    pub role: String,
}

/// The OAuth2 password grant's answer.
#[derive(Debug, Object)]
pub struct TokenOut {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// The OAuth2 password grant's form.
#[derive(Debug, Object, serde::Deserialize)]
pub struct TokenForm {
    pub grant_type: Option<String>,
    pub username: String,
    pub password: String,
    pub scope: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

/// A job's output, each stream apart (the last `MAX_LOG` bytes of each).
#[derive(Debug, Object)]
pub struct LogsOut {
    pub job_id: String,
    pub stdout: String,
    pub stderr: String,
    /// Whether a stream was longer than what is shown.
    pub truncated: bool,
}
