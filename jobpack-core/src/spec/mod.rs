//! The job spec: what a user asks for (serde, JSON or YAML), and its validation.
//!
//! [`JobSpec`] is the raw request; [`JobSpec::validate`] turns it into a [`Job`], the only type the
//! pipeline stages accept. A `Job` that exists is a valid one: every value in it has been checked
//! here, once, at the edge. This module never touches the network or the disk (except
//! [`JobSpec::from_path`], which only reads the file it is given).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use url::Url;

use crate::runtime::RuntimeKind;

mod check;
use check::*;
pub use check::{check_env_name, normalise_rel_path, validate_git_url};

/// The base image used when a spec names none. It has `bash` and `python`, which is what most
/// research jobs need; pin your own with `base_image` for full reproducibility.
pub const DEFAULT_BASE_IMAGE: &str = "python:3.12-slim-bookworm";

/// Limits on the size of a spec, so that a hostile request cannot exhaust memory.
pub const MAX_DATA_ITEMS: usize = 256;
pub const MAX_ENV_VARS: usize = 1024;
pub const MAX_VALUE_LEN: usize = 64 * 1024;
pub const MAX_URL_LEN: usize = 4096;
pub const MAX_ARGV: usize = 4096;
pub const MAX_PATH_LEN: usize = 1024;

/// A job as submitted: the packager's `{git_url, commit_hash, data_url, command}` plus extensions.
///
/// Unknown fields are rejected. Use [`JobSpec::validate`] before anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// A human-readable name (`[A-Za-z0-9][A-Za-z0-9._-]*`, at most 128 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repository to fetch: https, http, ssh, git or file URL, or scp-like `user@host:path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// The exact commit: 40-hex SHA-1, 64-hex SHA-256, or an unambiguous abbreviation (7+ hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_hash: Option<String>,
    /// One data file (the original packager's field); the same as one entry in `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_url: Option<String>,
    /// Data files to download into `data/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DataSpec>,
    /// What to run: a string (run by `sh -c`) or an argv array (run directly).
    pub command: Command,
    /// Environment variables exported by `run.sh`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The image the Dockerfile builds `FROM` (a build arg can still override it); pin it with
    /// `name:tag@sha256:<digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    /// The install step: `auto` (default: detected from the code's files), `python`, `conda`,
    /// `node`, `rust`, `dockerfile` (the repository's own) or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Shell commands replacing the detected install step (run in the image, in `/job/code`,
    /// after the code is copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<Vec<String>>,
    /// The root file system the job runs on, `NAME@sha256:<digest>` (or `NAME`, pinned when
    /// packed): a runtime of the packer's store ([`crate::rootfs`]). The sandbox binds it as the
    /// job's `/usr`, `/etc`, ... and the Dockerfile builds from its image, so both run the same
    /// bytes. Without it the sandbox uses the host's and the Dockerfile `base_image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_fs: Option<String>,
}

/// One data file: where to get it, optionally its expected sha256 and where to put it under `data/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// The command of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Command {
    /// Run by `sh -c`.
    Shell(String),
    /// Run directly, without a shell.
    Argv(Vec<String>),
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (run by `sh -c`) or an array of strings (argv)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Command, E> {
                Ok(Command::Shell(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Command, E> {
                Ok(Command::Shell(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    if argv.len() == MAX_ARGV {
                        return Err(de::Error::custom(format!(
                            "command has more than {MAX_ARGV} arguments"
                        )));
                    }
                    argv.push(arg);
                }
                Ok(Command::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// One thing wrong with a spec: the field (as a path, e.g. `data[1].sha256`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// A spec that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The document is not valid JSON/YAML or does not have the spec's shape (unknown field, ...).
    #[error("cannot parse the job spec ({format}): {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    /// The spec file could not be read.
    #[error("cannot read the job spec {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The spec parsed but some fields are not valid; every problem is listed.
    #[error("invalid job spec: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl SpecError {
    /// The field-level problems, if the spec parsed.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            SpecError::Invalid(e) => e,
            _ => &[],
        }
    }
}

/// The fields of a spec (a test checks them against `JobSpec`'s own).
pub const SPEC_FIELDS: [&str; 11] = [
    "name",
    "git_url",
    "commit_hash",
    "data_url",
    "data",
    "command",
    "env",
    "base_image",
    "runtime",
    "install",
    "runtime_fs",
];

const DATA_FIELDS: [&str; 3] = ["url", "sha256", "path"];

/// `Err` naming every unknown field of a spec object at once (and the fields a spec has).
pub fn check_fields(v: &serde_json::Value) -> Result<(), String> {
    let unknown = unknown_fields(v);
    if unknown.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{}; a spec has {}",
        unknown.join(", "),
        SPEC_FIELDS.join(", ")
    ))
}

/// Every key of a spec object (and of its `data` entries, as ``sha` in data[1]``) that no spec
/// has, each as it is reported.
fn unknown_fields(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(obj) = v.as_object() else {
        return out;
    };
    for k in obj.keys() {
        if !SPEC_FIELDS.contains(&k.as_str()) {
            out.push(format!("unknown field `{k}`"));
        }
    }
    if let Some(serde_json::Value::Array(items)) = obj.get("data") {
        for (i, item) in items.iter().enumerate() {
            if let Some(o) = item.as_object() {
                for k in o.keys() {
                    if !DATA_FIELDS.contains(&k.as_str()) {
                        out.push(format!("unknown field `{k}` in data[{i}]"));
                    }
                }
            }
        }
    }
    out
}

impl JobSpec {
    /// Parses a JSON spec.
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let parse = |message: String| SpecError::Parse {
            format: "JSON",
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
        check_fields(&value).map_err(parse)?;
        serde_json::from_value(value).map_err(|e| parse(e.to_string()))
    }

    /// Parses a YAML spec.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        let parse = |message: String| SpecError::Parse {
            format: "YAML",
            message,
        };
        // The keys are checked on a generic value; the spec itself is read from the text, so
        // YAML's plain scalars keep reading as strings (`commit_hash: 1234567`).
        if let Ok(value) = serde_norway::from_str::<serde_json::Value>(text) {
            check_fields(&value).map_err(parse)?;
        }
        serde_norway::from_str(text).map_err(|e| parse(e.to_string()))
    }

    /// Reads a spec file: `.json` is JSON, `.yaml`/`.yml` is YAML, anything else is JSON if it
    /// starts with `{` and YAML otherwise.
    pub fn from_path(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.display().to_string(),
            source,
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Self::from_json(&text),
            Some("yaml" | "yml") => Self::from_yaml(&text),
            _ if text.trim_start().starts_with('{') => Self::from_json(&text),
            _ => Self::from_yaml(&text),
        }
    }

    /// Checks every field and returns the validated [`Job`], or every problem found.
    pub fn validate(&self) -> Result<Job, SpecError> {
        let mut errs = Errors::default();

        if let Some(name) = &self.name {
            check_name(name, &mut errs);
        }

        let source = match (&self.git_url, &self.commit_hash) {
            (Some(url), Some(commit)) => {
                let url = check_git_url(url, &mut errs);
                let commit = check_commit(commit, &mut errs);
                url.zip(commit)
                    .map(|(url, commit)| GitSource { url, commit })
            }
            (Some(_), None) => {
                errs.push(
                    "commit_hash",
                    "required with git_url: give the exact commit to pack",
                );
                None
            }
            (None, Some(_)) => {
                errs.push(
                    "git_url",
                    "required with commit_hash: give the repository URL",
                );
                None
            }
            (None, None) => None,
        };

        let mut data = Vec::new();
        let items: Vec<(String, DataSpec)> = self
            .data_url
            .iter()
            .map(|u| {
                let spec = DataSpec {
                    url: u.clone(),
                    sha256: None,
                    path: None,
                };
                ("data_url".to_owned(), spec)
            })
            .chain(
                self.data
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (format!("data[{i}]"), d.clone())),
            )
            .collect();
        if items.len() > MAX_DATA_ITEMS {
            errs.push(
                "data",
                format!("at most {MAX_DATA_ITEMS} data files, got {}", items.len()),
            );
        } else {
            for (field, item) in &items {
                if let Some(d) = check_data(field, item, &mut errs) {
                    data.push(d);
                }
            }
            check_data_paths(&items, &data, &mut errs);
        }

        let command = check_command(&self.command, &mut errs);
        check_env(&self.env, &mut errs);

        let base_image = match &self.base_image {
            Some(img) => {
                check_image(img, &mut errs);
                img.clone()
            }
            None => DEFAULT_BASE_IMAGE.to_owned(),
        };
        let runtime = match self.runtime.as_deref().map(RuntimeKind::parse) {
            None => None,
            Some(Ok(k)) => k,
            Some(Err(e)) => {
                errs.push("runtime", e);
                None
            }
        };
        if let Some(cmds) = &self.install {
            check_install(cmds, &mut errs);
        }
        let runtime_fs = match self
            .runtime_fs
            .as_deref()
            .map(crate::rootfs::RuntimeRef::parse)
        {
            None => None,
            Some(Ok(r)) => {
                if self.base_image.is_some() {
                    errs.push(
                        "runtime_fs",
                        "runtime_fs and base_image both choose the image; the runtime's image is \
                         the base: leave base_image out"
                            .to_owned(),
                    );
                }
                Some(r)
            }
            Some(Err(e)) => {
                errs.push("runtime_fs", e.to_string());
                None
            }
        };

        if !errs.0.is_empty() {
            return Err(SpecError::Invalid(errs.0));
        }
        Ok(Job {
            name: self.name.clone(),
            source,
            data,
            command: command.unwrap_or_else(|| self.command.clone()),
            env: self.env.clone(),
            base_image,
            runtime,
            install: self.install.clone(),
            runtime_fs,
        })
    }
}

/// A validated job: what the pipeline stages accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub name: Option<String>,
    /// Where the code comes from; `None` when the caller supplies the code directory itself.
    pub source: Option<GitSource>,
    pub data: Vec<DataItem>,
    pub command: Command,
    pub env: BTreeMap<String, String>,
    pub base_image: String,
    /// The runtime the spec asks for (`None`: detect it).
    pub runtime: Option<RuntimeKind>,
    /// Install commands replacing the detected ones.
    pub install: Option<Vec<String>>,
    /// The runtime root file system; the packager pins its digest and makes `base_image` its
    /// image.
    pub runtime_fs: Option<crate::rootfs::RuntimeRef>,
}

/// A repository and the commit to take from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub url: String,
    pub commit: CommitRef,
}

/// The commit as given: a full object id, or an abbreviation that must resolve unambiguously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitRef {
    /// 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
    Full(String),
    /// Fewer hex digits (lowercase), resolved after a full fetch.
    Abbreviated(String),
}

impl CommitRef {
    pub fn as_str(&self) -> &str {
        match self {
            CommitRef::Full(s) | CommitRef::Abbreviated(s) => s,
        }
    }
}

/// One validated data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataItem {
    pub url: Url,
    /// Expected sha256, lowercase hex.
    pub sha256: Option<String>,
    /// Path under `data/`, `/`-separated, normalised, never escaping `data/`.
    pub path: String,
}

impl Job {
    /// The normalised spec recorded in the manifest: `data_url` folded into `data` with its path,
    /// defaults filled in, and the commit replaced by the resolved one.
    pub fn normalised_spec(&self, resolved_commit: Option<&str>) -> JobSpec {
        JobSpec {
            name: self.name.clone(),
            git_url: self.source.as_ref().map(|s| s.url.clone()),
            commit_hash: self
                .source
                .as_ref()
                .map(|s| resolved_commit.unwrap_or(s.commit.as_str()).to_owned()),
            data_url: None,
            data: self
                .data
                .iter()
                .map(|d| DataSpec {
                    url: d.url.to_string(),
                    sha256: d.sha256.clone(),
                    path: Some(d.path.clone()),
                })
                .collect(),
            command: self.command.clone(),
            env: self.env.clone(),
            // A runtime's image is the base: the spec names the runtime only (it validates
            // again as it was given).
            base_image: self.runtime_fs.is_none().then(|| self.base_image.clone()),
            runtime: self.runtime.map(|k| k.as_str().to_owned()),
            install: self.install.clone(),
            runtime_fs: self.runtime_fs.as_ref().map(|r| r.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
