//! What the JSON request bodies of `POST /v1/jobs` and `POST /v1/batches` look like, for the
//! OpenAPI document: a job submission is a job spec plus the service's keys. The server reads
//! these bodies itself (`submit::parse_submission`), so that every problem keeps the code and the
//! message it has always had (`invalid_spec: data[1].sha256: ...`); these types only describe
//! them. A contract test checks that they name exactly the fields the spec and `Limits` take.

use std::borrow::Cow;
use std::collections::HashMap;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseFromJSON, ParseResult, ToJSON, Type};
use poem_openapi::{Enum, Object};
use serde_json::Value;

/// A job submission: the job spec (`git_url` + `commit_hash`, data, `command`, ...) and the
/// service's own keys (`run`, `limits`, `network`, `secret_env`, `owner`).
#[derive(Debug, Object)]
#[oai(rename = "JobSubmission", deny_unknown_fields)]
pub struct JobSubmissionDoc {
    /// A name for the job and its artifact.
    pub name: Option<String>,
    /// A git repository (https, http, ssh, git or file URL, or `user@host:path`).
    pub git_url: Option<String>,
    /// The commit: 40 hex digits, or an unambiguous abbreviation (7+).
    pub commit_hash: Option<String>,
    /// One data file (the same as one `data` entry).
    pub data_url: Option<String>,
    /// Files downloaded into `data/`.
    pub data: Option<Vec<DataItemDoc>>,
    /// A string run by `sh -c`, or an argv array run directly.
    pub command: CommandDoc,
    /// Variables exported by `run.sh`.
    pub env: Option<HashMap<String, String>>,
    /// The Dockerfile's default `BASE_IMAGE`.
    pub base_image: Option<String>,
    /// auto, python, conda, node, rust, dockerfile or none.
    pub runtime: Option<String>,
    /// Install commands replacing the detected ones.
    pub install: Option<Vec<String>>,
    /// The root file system to run on: `NAME@sha256:<digest>` of a runtime this server has
    /// (`GET /v1/runtimes`), or `NAME` (pinned when packed). Not with `base_image`.
    pub runtime_fs: Option<String>,
    /// Run after packing (default true); false: pack only.
    pub run: Option<bool>,
    /// Resource limits; each one not given gets the quota's cap or the server's default.
    pub limits: Option<LimitsDoc>,
    /// `none` (default) or `host` (a grant).
    pub network: Option<NetworkDoc>,
    /// Variables given to the job and masked in its log; never stored after the job ends.
    pub secret_env: Option<HashMap<String, String>>,
    /// Admins: the user the job belongs to.
    pub owner: Option<String>,
    /// Higher runs first among the jobs waiting in its queue (default 0; the earliest first
    /// among equals).
    #[oai(validator(minimum(value = "-1000000"), maximum(value = "1000000")))]
    pub priority: Option<i32>,
    /// A named queue of this server (`default` when not given), with its own concurrency.
    pub queue: Option<String>,
    /// Free JSON kept with the job and returned as it was (64 KiB at most).
    pub payload: Option<serde_json::Value>,
    /// When to start: an RFC 3339 time in UTC (`2026-12-01T09:30:00Z`, at most a year ahead);
    /// the job is `scheduled` until then (cancellable; a restart keeps it).
    pub scheduled_at: Option<String>,
    /// The gRPC job service's name for `scheduled_at`.
    #[oai(rename = "scheduledTime")]
    pub scheduled_time: Option<String>,
    /// The gRPC job service's name for `limits.cpu_cores`.
    #[oai(rename = "cpuCores")]
    pub cpu_cores: Option<String>,
    /// The gRPC job service's name for `limits.cpu_percent` (0: not set).
    #[oai(rename = "maxCPU", validator(minimum(value = "0")))]
    pub max_cpu: Option<u32>,
    /// The gRPC job service's `limits.memory_bytes`, in MiB (0: not set).
    #[oai(rename = "maxMemory", validator(minimum(value = "0")))]
    pub max_memory: Option<u32>,
    /// The gRPC job service's `limits.io_bps` (0: not set).
    #[oai(rename = "maxIOBPS", validator(minimum(value = "0")))]
    pub max_iobps: Option<u64>,
    /// The gRPC job service's name for `secret_env`.
    pub secret_environment: Option<HashMap<String, String>>,
    /// A host directory to run in, inside one the server allows (`--allowed-workdir`; 403
    /// otherwise): bound read-write at the same path, the command starts there.
    pub working_dir: Option<String>,
    /// The command's standard input as text (1 MiB at most; larger or binary input as the
    /// multipart part `stdin`), packed as the artifact's `stdin` and recorded in its manifest
    /// by sha256.
    #[oai(validator(max_length = 1048576))]
    pub stdin: Option<String>,
    /// Run again from its artifact when it ends in one of `on`: `{max_attempts, backoff_secs,
    /// on}` (`on` default `[failed, timed_out, oom_killed]`).
    pub retry: Option<RetryDoc>,
    /// Answer from an earlier completed job's results (outputs, log, receipt) when its
    /// artifact, runtime, limits and network are the same; never for a job with secrets.
    pub cache: Option<bool>,
    /// Notified (signed, as the standing webhooks) when the job ends: Judge0's name.
    pub callback_url: Option<String>,
    /// Webhooks for this job's events (`job.started`, `job.finished`; default the end).
    #[oai(validator(max_items = 8))]
    pub webhooks: Option<Vec<SubmissionWebhookDoc>>,
}

/// A retry policy.
#[derive(Debug, Object)]
#[oai(rename = "Retry", deny_unknown_fields)]
pub struct RetryDoc {
    /// Runs in all, the first included (1 to 20).
    #[oai(validator(minimum(value = "1"), maximum(value = "20")))]
    pub max_attempts: u32,
    /// The wait before the second run; each next waits twice as long (an hour at most).
    #[oai(validator(minimum(value = "0"), maximum(value = "3600")))]
    pub backoff_secs: Option<f64>,
    /// Statuses that are retried: failed, timed_out, oom_killed, limit_exceeded.
    pub on: Option<Vec<String>>,
}

/// A webhook a submission carries.
#[derive(Debug, Object)]
#[oai(rename = "SubmissionWebhook", deny_unknown_fields)]
pub struct SubmissionWebhookDoc {
    pub url: String,
    pub events: Option<Vec<String>>,
    /// Sign with the secret of this standing webhook of yours (else a new secret, returned in
    /// the answer).
    pub secret_ref: Option<String>,
    /// Extra headers sent with each delivery.
    pub headers: Option<HashMap<String, String>>,
}

/// One data file.
#[derive(Debug, Object)]
#[oai(rename = "DataItem", deny_unknown_fields)]
pub struct DataItemDoc {
    /// An http(s) URL.
    pub url: String,
    /// The expected sha256 (64 hex digits).
    pub sha256: Option<String>,
    /// Where it goes under `data/`.
    pub path: Option<String>,
}

/// The command of a job, documented as `oneOf: [string, array of strings]` (which
/// poem-openapi's derived unions cannot say without also saying `type: object`).
pub type CommandDoc = Documented<CommandSchema>;

/// The schema of [`CommandDoc`]; never a value.
#[derive(Debug)]
pub enum CommandSchema {}

impl Type for CommandSchema {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "Command".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("A string run by `sh -c`, or an argv array run directly."),
            one_of: vec![
                <String as Type>::schema_ref(),
                <Vec<String> as Type>::schema_ref(),
            ],
            ..MetaSchema::ANY
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

/// A job's resource limits.
#[derive(Debug, Object)]
#[oai(rename = "Limits", deny_unknown_fields)]
pub struct LimitsDoc {
    /// Seconds of wall-clock time.
    #[oai(validator(minimum(value = "0", exclusive)))]
    pub timeout: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Percent of one core.
    pub cpu_percent: Option<u32>,
    pub pids: Option<u64>,
    pub io_bps: Option<u64>,
    pub nofile: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub log_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    /// CPUs to run on, a cpuset list (`0-1`, `2,3`) of this machine's online CPUs.
    #[oai(validator(pattern = "^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$", max_length = 256))]
    pub cpu_cores: Option<String>,
}

/// A job's network.
#[derive(Debug, Enum)]
#[oai(rename = "Network", rename_all = "snake_case")]
pub enum NetworkDoc {
    None,
    Host,
}

/// A batch: jobs submitted together.
#[derive(Debug, Object)]
#[oai(rename = "BatchSubmission", deny_unknown_fields)]
pub struct BatchSubmissionDoc {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Admins: the user the batch belongs to.
    pub owner: Option<String>,
    #[oai(validator(min_items = 1, max_items = 10000))]
    pub jobs: Vec<JobSubmissionDoc>,
    /// The `retry` of every job that has none of its own.
    pub retry: Option<RetryDoc>,
    /// Notified (signed) when the batch ends.
    pub callback_url: Option<String>,
    /// Webhooks for the batch's end and its jobs' events.
    #[oai(validator(max_items = 8))]
    pub webhooks: Option<Vec<SubmissionWebhookDoc>>,
}

/// A JSON body documented as `D` and read as it came (by the server's own parser).
#[derive(Debug)]
pub struct Documented<D>(pub Value, pub std::marker::PhantomData<D>);

impl<D: Type> Type for Documented<D> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        D::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        D::schema_ref()
    }

    fn register(registry: &mut Registry) {
        D::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<D: Type + Send + Sync> ParseFromJSON for Documented<D> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        Ok(Documented(
            value.unwrap_or_default(),
            std::marker::PhantomData,
        ))
    }
}

impl<D: Type + Send + Sync> ToJSON for Documented<D> {
    fn to_json(&self) -> Option<Value> {
        Some(self.0.clone())
    }
}

/// A JSON string and nothing else. poem-openapi's `String` also takes `false` or `12` and makes
/// them text; account requests must not (a user named "false" by accident). `R` says what the
/// string looks like in the OpenAPI document; the server's own check still gives the message.
#[derive(Debug, Clone)]
pub struct Text<R>(pub String, std::marker::PhantomData<R>);

/// The documented form of a [`Text`].
pub trait TextRule: Send + Sync + 'static {
    const NAME: &'static str;
    const PATTERN: Option<&'static str>;
    const MAX_LENGTH: usize;
}

/// A user name: 1-64 characters of A-Z a-z 0-9 . _ @ -, starting with a letter or digit.
#[derive(Debug, Clone)]
pub enum UserNameRule {}
impl TextRule for UserNameRule {
    const NAME: &'static str = "UserName";
    const PATTERN: Option<&'static str> = Some("^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$");
    const MAX_LENGTH: usize = 64;
}

/// A free-form label.
#[derive(Debug, Clone)]
pub enum LabelRule {}
impl TextRule for LabelRule {
    const NAME: &'static str = "Label";
    const PATTERN: Option<&'static str> = None;
    const MAX_LENGTH: usize = 256;
}

impl<R: TextRule> Type for Text<R> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        R::NAME.into()
    }

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            pattern: R::PATTERN.map(str::to_string),
            max_length: Some(R::MAX_LENGTH),
            ..MetaSchema::new("string")
        }))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<R: TextRule> ParseFromJSON for Text<R> {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value {
            Some(Value::String(s)) if s.chars().count() <= R::MAX_LENGTH => {
                Ok(Text(s, std::marker::PhantomData))
            }
            Some(Value::String(_)) => Err(poem_openapi::types::ParseError::custom(format!(
                "at most {} characters",
                R::MAX_LENGTH
            ))),
            other => Err(poem_openapi::types::ParseError::expected_type(
                other.unwrap_or_default(),
            )),
        }
    }
}

impl<R: TextRule> ToJSON for Text<R> {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}

/// The OpenAPI document as served: every object a request body takes is closed
/// (`additionalProperties: false`), as the server reads them (an unknown key is a 400 that names
/// it). poem-openapi's `deny_unknown_fields` does not say so in the schema.
pub fn close_request_objects(mut doc: Value) -> Value {
    let mut names = Vec::new();
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for op in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in op.values_mut() {
                let content = op.pointer_mut("/requestBody/content");
                for media in content.and_then(Value::as_object_mut).into_iter().flatten() {
                    if let Some(s) = media.1.get_mut("schema") {
                        close(s, &mut names);
                    }
                }
            }
        }
    }
    let mut done = std::collections::HashSet::new();
    while let Some(name) = names.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        let mut found = Vec::new();
        if let Some(s) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            close(s, &mut found);
        }
        names.extend(found);
    }
    doc
}

/// Closes `schema` if it is an object with properties, and every object inside it; the names of
/// the components it refers to go to `refs`.
fn close(schema: &mut Value, refs: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/components/schemas/"))
            {
                refs.push(name.to_string());
            }
            if map.get("type").and_then(Value::as_str) == Some("object")
                && map.contains_key("properties")
                && !map.contains_key("additionalProperties")
            {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (key, v) in map.iter_mut() {
                if key != "additionalProperties" {
                    close(v, refs);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| close(v, refs)),
        _ => {}
    }
}
