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
pub const SPEC_FIELDS: [&str; 10] = [
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
            base_image: Some(self.base_image.clone()),
            runtime: self.runtime.map(|k| k.as_str().to_owned()),
            install: self.install.clone(),
        }
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

fn check_name(name: &str, errs: &mut Errors) {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        errs.push(
            "name",
            format!(
                "must be 1-128 characters of letters, digits, '.', '_' or '-', starting with a \
                 letter or digit; got {name:?}"
            ),
        );
    }
}

fn check_git_url(url: &str, errs: &mut Errors) -> Option<String> {
    validate_git_url(url)
        .map_err(|msg| errs.push("git_url", msg))
        .ok()
}

/// Accepts `https`, `http`, `ssh`, `git` and `file` URLs and scp-like `user@host:path`; says what
/// is wrong otherwise.
pub fn validate_git_url(url: &str) -> Result<String, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("longer than {MAX_URL_LEN} characters"));
    }
    if url.is_empty() || has_control(url) || url.contains(char::is_whitespace) {
        return Err(format!(
            "must be a non-empty URL without spaces or control characters; got {url:?}"
        ));
    }
    if url.starts_with('-') {
        return Err(format!("must not start with '-'; got {url:?}"));
    }
    match Url::parse(url) {
        Ok(u) => match u.scheme() {
            "https" | "http" | "ssh" | "git" if u.host_str().is_none_or(str::is_empty) => {
                Err(format!("has no host; got {url:?}"))
            }
            "https" | "http" | "ssh" | "git" | "file" => Ok(url.to_owned()),
            other => Err(format!(
                "unsupported scheme {other:?}: use https, http, ssh, git or file (or user@host:path)"
            )),
        },
        Err(_) if is_scp_like(url) => Ok(url.to_owned()),
        Err(e) => Err(format!("not a valid URL ({e}); got {url:?}")),
    }
}

/// `user@host:path`, as git accepts for ssh.
fn is_scp_like(url: &str) -> bool {
    let Some((userhost, path)) = url.split_once(':') else {
        return false;
    };
    let host = userhost.rsplit('@').next().unwrap_or(userhost);
    !path.is_empty()
        && !host.is_empty()
        && !userhost.contains('/')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn check_commit(commit: &str, errs: &mut Errors) -> Option<CommitRef> {
    let c = commit.to_ascii_lowercase();
    if !is_hex(&c) || c.is_empty() {
        errs.push(
            "commit_hash",
            format!("must be hexadecimal (a commit id, not a branch or tag name); got {commit:?}"),
        );
        return None;
    }
    match c.len() {
        40 | 64 => Some(CommitRef::Full(c)),
        7..=39 => Some(CommitRef::Abbreviated(c)),
        n => {
            errs.push(
                "commit_hash",
                format!(
                    "must be 40 (SHA-1) or 64 (SHA-256) hex digits, or an abbreviation of at \
                     least 7; got {n} digits"
                ),
            );
            None
        }
    }
}

fn check_data(field: &str, item: &DataSpec, errs: &mut Errors) -> Option<DataItem> {
    let url_field = if field == "data_url" {
        field.to_owned()
    } else {
        format!("{field}.url")
    };
    let mut ok = true;
    let url = if item.url.len() > MAX_URL_LEN {
        errs.push(&url_field, format!("longer than {MAX_URL_LEN} characters"));
        None
    } else {
        match Url::parse(&item.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            Ok(u) => {
                errs.push(
                    &url_field,
                    format!(
                        "only http and https URLs with a host can be downloaded; got scheme {:?}",
                        u.scheme()
                    ),
                );
                None
            }
            Err(e) => {
                errs.push(
                    &url_field,
                    format!("not a valid URL ({e}); got {:?}", item.url),
                );
                None
            }
        }
    };
    let sha256 = match &item.sha256 {
        Some(h) => {
            let h = h.to_ascii_lowercase();
            if h.len() != 64 || !is_hex(&h) {
                errs.push(
                    format!("{field}.sha256"),
                    format!("must be 64 hex digits, got {} characters", h.len()),
                );
                ok = false;
            }
            Some(h)
        }
        None => None,
    };
    let path = match &item.path {
        Some(p) => match normalise_rel_path(p) {
            Ok(p) => Some(p),
            Err(msg) => {
                errs.push(format!("{field}.path"), msg);
                None
            }
        },
        None => url.as_ref().map(default_data_name),
    };
    match (url, path) {
        (Some(url), Some(path)) if ok => Some(DataItem { url, sha256, path }),
        _ => None,
    }
}

/// The file name a download gets when the spec gives no `path`: the URL's last path segment,
/// with anything but `[A-Za-z0-9._-]` replaced by `_`; `data` when that leaves nothing usable.
fn default_data_name(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or("");
    let name: String = last
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.chars().all(|c| c == '.') {
        "data".to_owned()
    } else {
        name
    }
}

/// Normalises a relative path: `/`-separated, no empty, `.` or `..` components, not absolute, no
/// control characters or backslashes. Returns a message saying what is wrong otherwise.
pub fn normalise_rel_path(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.len() > MAX_PATH_LEN {
        return Err(format!("longer than {MAX_PATH_LEN} bytes"));
    }
    if p.starts_with('/') {
        return Err(format!("must be relative, got absolute path {p:?}"));
    }
    if has_control(p) || p.contains('\\') {
        return Err(format!(
            "must not contain control characters or backslashes; got {p:?}"
        ));
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => continue,
            ".." => return Err(format!("must not contain '..'; got {p:?}")),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(format!("names no file; got {p:?}"));
    }
    Ok(parts.join("/"))
}

fn check_data_paths(items: &[(String, DataSpec)], data: &[DataItem], errs: &mut Errors) {
    // Only meaningful when every item validated; otherwise indices would not line up.
    if items.len() != data.len() {
        return;
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for ((field, _), d) in items.iter().zip(data) {
        if let Some(prev) = seen.insert(&d.path, field) {
            errs.push(
                field.clone(),
                format!(
                    "writes data/{} which {prev} writes too: give one of them a distinct `path`",
                    d.path
                ),
            );
        }
    }
    for ((field, _), d) in items.iter().zip(data) {
        let dir = format!("{}/", d.path);
        if let Some((other, _)) = seen
            .range(dir.as_str()..)
            .next()
            .filter(|(k, _)| k.starts_with(&dir))
        {
            errs.push(
                field.clone(),
                format!(
                    "data/{} is a file but data/{other} needs it to be a directory",
                    d.path
                ),
            );
        }
    }
}

fn check_command(command: &Command, errs: &mut Errors) -> Option<Command> {
    match command {
        Command::Shell(s) => {
            if s.trim().is_empty() {
                errs.push("command", "must not be empty");
            } else if s.len() > MAX_VALUE_LEN {
                errs.push("command", format!("longer than {MAX_VALUE_LEN} bytes"));
            } else if s.contains('\0') {
                errs.push("command", "must not contain NUL bytes");
            } else {
                return Some(command.clone());
            }
        }
        Command::Argv(argv) => {
            if argv.first().is_none_or(|a| a.is_empty()) {
                errs.push(
                    "command",
                    "argv must be non-empty with a non-empty program name",
                );
                return None;
            }
            let mut ok = true;
            let mut total = 0;
            for (i, a) in argv.iter().enumerate() {
                total += a.len();
                if a.contains('\0') {
                    errs.push(format!("command[{i}]"), "must not contain NUL bytes");
                    ok = false;
                }
            }
            if total > MAX_VALUE_LEN {
                errs.push(
                    "command",
                    format!("longer than {MAX_VALUE_LEN} bytes in all"),
                );
                ok = false;
            }
            if ok {
                return Some(command.clone());
            }
        }
    }
    None
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`; values: no NUL (a shell cannot carry it).
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "not a valid variable name (letters, digits and '_', not starting with a digit); \
             got {name:?}"
        ))
    }
}

fn check_env(env: &BTreeMap<String, String>, errs: &mut Errors) {
    if env.len() > MAX_ENV_VARS {
        errs.push(
            "env",
            format!("at most {MAX_ENV_VARS} variables, got {}", env.len()),
        );
        return;
    }
    for (k, v) in env {
        if let Err(msg) = check_env_name(k) {
            errs.push(format!("env.{k}"), msg);
        } else if v.contains('\0') {
            errs.push(format!("env.{k}"), "value must not contain NUL bytes");
        } else if v.len() > MAX_VALUE_LEN {
            errs.push(
                format!("env.{k}"),
                format!("value longer than {MAX_VALUE_LEN} bytes"),
            );
        }
    }
}

/// A container image reference: `[registry/]name[:tag][@sha256:digest]`.
/// Install commands: each a non-empty shell command line without NUL (it is rendered into the
/// Dockerfile as one JSON string, so newlines and quotes are safe).
fn check_install(cmds: &[String], errs: &mut Errors) {
    if cmds.is_empty() || cmds.len() > 64 {
        errs.push(
            "install",
            "give 1 to 64 commands, or leave install out".to_owned(),
        );
    }
    for (i, c) in cmds.iter().enumerate() {
        if c.trim().is_empty() || c.contains('\0') || c.len() > 8192 {
            errs.push(
                format!("install[{i}]"),
                "a command is non-empty, at most 8192 bytes, without NUL".to_owned(),
            );
        }
    }
}

fn check_image(img: &str, errs: &mut Errors) {
    let ok = !img.is_empty()
        && img.len() <= 512
        && img.as_bytes()[0].is_ascii_alphanumeric()
        && img.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        });
    if !ok {
        errs.push(
            "base_image",
            format!(
                "not an image reference like `debian:bookworm` or `name@sha256:<digest>`; \
                 got {img:?}"
            ),
        );
    }
}

#[cfg(test)]
mod tests;
