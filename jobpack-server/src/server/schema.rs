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
