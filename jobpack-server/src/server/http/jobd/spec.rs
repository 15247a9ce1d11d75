//! The specs the `/jobs` door reads, turned into jobpack submissions: the FastAPI job runner's
//! (seed 002: `entry`, `args`, `timeout_sec`, `runtime`, `net_policy`, `env`), jobpack's own
//! (anything else), or none at all, when the uploaded code says what to run (a `jobpack.yaml` or
//! `jobpack.json` at its top, else a `run.sh` there).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::server::service::error::ServiceError;

/// The job runner's spec, exactly as its README gives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    /// The file to run, relative to the uploaded code.
    pub entry: String,
    #[serde(default)]
    pub args: Vec<String>,
    pub timeout_sec: Option<f64>,
    /// `python3.12`, `python3`, `node20`, ...: the interpreter and the artifact's base image.
    pub runtime: Option<String>,
    /// `none` (the default), or `host` (the caller's grant decides).
    pub net_policy: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// A name for the job (jobpack's; the seed has none).
    pub name: Option<String>,
}

fn invalid(m: impl Into<String>) -> ServiceError {
    ServiceError::invalid("invalid_spec", m)
}

/// A spec part (JSON) as a jobpack submission object: the runner's spec is translated (and its
/// `entry` returned, to check it was uploaded), anything else is taken as jobpack's own.
pub fn submission_of(spec: &str) -> Result<(Value, Option<String>), ServiceError> {
    let v: Value = serde_json::from_str(spec)
        .map_err(|e| ServiceError::invalid("bad_request", format!("spec: not JSON: {e}")))?;
    if v.get("entry").is_none() {
        return Ok((v, None));
    }
    let s: RunnerSpec =
        serde_json::from_value(v).map_err(|e| invalid(format!("invalid job spec: {e}")))?;
    let entry = jobpack_core::spec::normalise_rel_path(&s.entry)
        .map_err(|m| invalid(format!("entry: {m}")))?;
    Ok((translate(&s)?, Some(entry)))
}

/// The runner's spec as a submission: `entry` + `args` the command (an interpreter chosen by
/// `runtime` or by the entry's extension), `timeout_sec` the time limit, `net_policy` the
/// network, `env` the environment; a `pythonX.Y` or `nodeN` runtime also pins the base image.
pub fn translate(s: &RunnerSpec) -> Result<Value, ServiceError> {
    let entry = jobpack_core::spec::normalise_rel_path(&s.entry)
        .map_err(|m| invalid(format!("entry: {m}")))?;
    // The install step stays detected from the code (a `requirements.txt` is optional here).
    let (interpreter, base_image) = match s.runtime.as_deref() {
        Some(r) => runtime_of(r)?,
        None => (interpreter_for(&entry), None),
    };
    let mut command = Vec::new();
    match interpreter {
        Some(i) => {
            command.push(i.to_owned());
            command.push(entry.clone());
        }
        None => command.push(format!("./{entry}")),
    }
    command.extend(s.args.iter().cloned());
    let mut sub = json!({"command": command, "name": s.name.clone().unwrap_or(entry)});
    if !s.env.is_empty() {
        sub["env"] = json!(s.env);
    }
    if let Some(t) = s.timeout_sec {
        sub["limits"] = json!({"timeout": t});
    }
    match s.net_policy.as_deref() {
        None | Some("none") => {}
        Some("host") => sub["network"] = json!("host"),
        Some(other) => {
            return Err(invalid(format!(
                "net_policy: {other:?} is not one of none, host"
            )));
        }
    }
    if let Some(b) = base_image {
        sub["base_image"] = json!(b);
    }
    Ok(sub)
}

/// The interpreter and base image of a runner `runtime`.
fn runtime_of(r: &str) -> Result<(Option<&'static str>, Option<String>), ServiceError> {
    let version = |rest: &str| {
        (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
            .then(|| rest.to_owned())
    };
    if let Some(rest) = r.strip_prefix("python") {
        let v = rest.strip_prefix('3').map(|x| format!("3{x}"));
        return match (rest, v.as_deref().and_then(version)) {
            ("" | "3", _) => Ok((Some("python3"), None)),
            (_, Some(v)) => Ok((Some("python3"), Some(format!("python:{v}-slim-bookworm")))),
            _ => Err(invalid(format!("runtime: {r:?} is not pythonX.Y"))),
        };
    }
    if let Some(rest) = r.strip_prefix("node") {
        return match (rest, version(rest)) {
            ("", _) => Ok((Some("node"), None)),
            (_, Some(v)) => Ok((Some("node"), Some(format!("node:{v}-bookworm-slim")))),
            _ => Err(invalid(format!("runtime: {r:?} is not nodeN"))),
        };
    }
    match r {
        "bash" => Ok((Some("bash"), None)),
        "sh" => Ok((Some("sh"), None)),
        _ => Err(invalid(format!(
            "runtime: {r:?} is not one of pythonX.Y, python3, nodeN, node, bash, sh"
        ))),
    }
}

/// The interpreter for an entry by its extension (`None`: run it as a program).
fn interpreter_for(entry: &str) -> Option<&'static str> {
    let ext = Path::new(entry).extension()?.to_str()?;
    Some(match ext {
        "py" => "python3",
        "sh" => "sh",
        "bash" => "bash",
        "js" | "mjs" | "cjs" => "node",
        "rb" => "ruby",
        "pl" => "perl",
        "R" | "r" => "Rscript",
        _ => return None,
    })
}

/// The largest `jobpack.yaml|json` read from an upload.
const MAX_SPEC_FILE: u64 = 1 << 20;

/// What uploaded code without a spec runs: its own `jobpack.yaml|yml|json` (a spec without
/// `git_url`), else `run.sh` at its top. `code` is the uploaded code directory.
pub fn from_code(code: &Path) -> Result<Value, ServiceError> {
    for name in ["jobpack.yaml", "jobpack.yml", "jobpack.json"] {
        let p = code.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() && m.len() > MAX_SPEC_FILE => {
                return Err(invalid(format!(
                    "{name}: {} bytes; a spec file is at most {MAX_SPEC_FILE}",
                    m.len()
                )));
            }
            Ok(m) if m.is_file() => {
                let spec = jobpack_core::JobSpec::from_path(&p)
                    .map_err(|e| invalid(format!("{name}: {e}")))?;
                if spec.git_url.is_some() {
                    return Err(invalid(format!(
                        "{name}: git_url: the code is the upload; leave git_url out"
                    )));
                }
                return serde_json::to_value(spec).map_err(ServiceError::internal);
            }
            _ => {}
        }
    }
    match std::fs::symlink_metadata(code.join("run.sh")) {
        Ok(m) if m.is_file() => Ok(json!({"command": ["sh", "run.sh"], "name": "run.sh"})),
        _ => Err(ServiceError::invalid(
            "bad_request",
            "no spec: give a spec part, or upload code with a jobpack.yaml, jobpack.json or \
             run.sh at its top",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_spec_becomes_a_submission() {
        let (v, entry) = submission_of(
            r#"{"entry": "main.py", "args": ["--foo", "bar"], "timeout_sec": 60,
                "runtime": "python3.12", "net_policy": "none", "env": {"EXAMPLE": "1"}}"#,
        )
        .unwrap();
        assert_eq!(entry.as_deref(), Some("main.py"));
        assert_eq!(v["command"], json!(["python3", "main.py", "--foo", "bar"]));
        assert_eq!(v["limits"]["timeout"], json!(60.0));
        assert_eq!(v["env"]["EXAMPLE"], "1");
        assert_eq!(v["base_image"], "python:3.12-slim-bookworm");
        assert!(v.get("network").is_none());
        let (v, _) = submission_of(r#"{"entry":"main.py","timeout_sec":20}"#).unwrap();
        assert_eq!(v["command"], json!(["python3", "main.py"]));
        let (v, _) = submission_of(r#"{"entry":"tool"}"#).unwrap();
        assert_eq!(v["command"], json!(["./tool"]));
        // jobpack's own submissions pass as they are.
        let (v, entry) = submission_of(r#"{"command": "ls"}"#).unwrap();
        assert_eq!((v, entry), (json!({"command": "ls"}), None));
        for bad in [
            r#"{"entry":"main.py","timeout":20}"#,
            r#"{"entry":"../x.py"}"#,
            r#"{"entry":"main.py","net_policy":"internet"}"#,
            r#"{"entry":"main.py","runtime":"cobol"}"#,
            r#"{"entry":"main.py","runtime":"python3.x"}"#,
            "not json",
        ] {
            assert!(submission_of(bad).is_err(), "{bad}");
        }
    }
}
