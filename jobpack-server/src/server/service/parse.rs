//! Reading a submission object, whatever the door: the job spec and the service's own keys
//! (`run`, `limits` and the gRPC job service's `maxCPU`/`maxMemory`/`maxIOBPS`, `network`,
//! `secret_env`/`secret_environment`, `owner`, `priority`, `queue`, `payload`, `working_dir`, `stdin`),
//! each checked for its type and range; the rules that need the server's settings come after
//! (`submit.rs`).

use std::collections::BTreeMap;

use jobpack_core::JobSpec;
use jobpack_core::exec::{Limits, NetworkPolicy};

use crate::server::scheduler::queue::Submission;
use crate::server::service::error::{ServiceError, ServiceResult};
use crate::server::service::webhooks::HookRequest;

/// A submission split into what is stored with the job and what is kept apart.
pub(crate) struct Parsed {
    pub sub: Submission,
    /// `secret_env` values: stored apart and only until the job ends.
    pub secrets: BTreeMap<String, String>,
    /// `owner`: an admin submitting for another user.
    pub owner: Option<String>,
    /// `callback_url` and `webhooks`: notified of this submission's events.
    pub hooks: Vec<HookRequest>,
}

/// A submission's `callback_url` (Judge0's name: `events` the end of the job, batch or
/// workflow, `finished`) and `webhooks: [{url, events, secret_ref, headers}]`, taken out of it.
/// The events and destinations are checked by the service (`webhooks::check_all`).
pub(crate) fn parse_hooks(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    finished: &str,
) -> Result<Vec<HookRequest>, String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hook {
        url: String,
        events: Option<Vec<String>>,
        secret_ref: Option<String>,
        #[serde(default)]
        headers: BTreeMap<String, String>,
    }
    let mut out = Vec::new();
    match obj.remove("callback_url") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(url)) => out.push(HookRequest {
            url,
            events: vec![finished.to_owned()],
            ..HookRequest::default()
        }),
        Some(other) => return Err(format!("callback_url: expected a URL, got {other}")),
    }
    if let Some(v) = obj.remove("webhooks").filter(|v| !v.is_null()) {
        let hooks: Vec<Hook> = serde_json::from_value(v).map_err(|e| format!("webhooks: {e}"))?;
        if hooks.len() + out.len() > MAX_HOOKS {
            return Err(format!("webhooks: at most {MAX_HOOKS} per submission"));
        }
        out.extend(hooks.into_iter().map(|h| HookRequest {
            url: h.url,
            events: h.events.unwrap_or_else(|| vec![finished.to_owned()]),
            headers: h.headers,
            secret_ref: h.secret_ref,
        }));
    }
    Ok(out)
}

/// Webhooks one submission may carry.
const MAX_HOOKS: usize = 8;

/// Largest secret value, and most secrets per job.
const MAX_SECRET_BYTES: usize = 64 * 1024;
const MAX_SECRETS: usize = 256;

fn parse_secrets(v: serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    let map: BTreeMap<String, String> = serde_json::from_value(v)
        .map_err(|e| format!("secret_env: expected an object of strings: {e}"))?;
    if map.len() > MAX_SECRETS {
        return Err(format!("secret_env: at most {MAX_SECRETS} secrets"));
    }
    for (k, v) in &map {
        jobpack_core::spec::check_env_name(k).map_err(|e| format!("secret_env: {e}"))?;
        if v.contains('\0') || v.len() > MAX_SECRET_BYTES {
            return Err(format!(
                "secret_env.{k}: values must be under {MAX_SECRET_BYTES} bytes without NUL"
            ));
        }
    }
    Ok(map)
}

/// Splits a submission object into the spec and the service's own keys.
pub(crate) fn parse_submission(
    mut v: serde_json::Value,
    allow_file_urls: bool,
) -> ServiceResult<Parsed> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ServiceError::invalid("bad_request", "the body must be a JSON object"))?;
    let bad = |code: &'static str, m: String| ServiceError::invalid(code, m);
    let run = match obj.remove("run") {
        None => true,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!("run: expected true or false, got {other}"),
            ));
        }
    };
    let mut limits: Limits = match obj.remove("limits") {
        None => Limits::default(),
        Some(l) => {
            serde_json::from_value(l).map_err(|e| bad("bad_request", format!("limits: {e}")))?
        }
    };
    seed_limits(obj, &mut limits).map_err(|m| bad("bad_request", m))?;
    match (obj.remove("cpuCores"), &limits.cpu_cores) {
        (None, _) | (Some(serde_json::Value::Null), _) => {}
        (Some(serde_json::Value::String(c)), None) => limits.cpu_cores = Some(c),
        (Some(_), Some(_)) => {
            return Err(bad(
                "bad_request",
                "give limits.cpu_cores or cpuCores, not both".into(),
            ));
        }
        (Some(other), None) => {
            return Err(bad(
                "bad_request",
                format!("cpuCores: expected a list like \"0-1\", got {other}"),
            ));
        }
    }
    if let Some(c) = &limits.cpu_cores {
        jobpack_core::exec::cgroup::check_cpu_cores(c)
            .map_err(|m| bad("bad_request", format!("limits.cpu_cores: {m}")))?;
    }
    if let Some(s) = obj.remove("secret_environment") {
        if obj.contains_key("secret_env") {
            return Err(bad(
                "bad_request",
                "give secret_env or secret_environment, not both".into(),
            ));
        }
        obj.insert("secret_env".into(), s);
    }
    let network: NetworkPolicy = match obj.remove("network") {
        None => NetworkPolicy::default(),
        Some(n) => {
            serde_json::from_value(n).map_err(|e| bad("bad_request", format!("network: {e}")))?
        }
    };
    let secrets = match obj.remove("secret_env") {
        None => BTreeMap::new(),
        Some(s) => parse_secrets(s).map_err(|m| bad("bad_request", m))?,
    };
    let priority = match obj.remove("priority") {
        None | Some(serde_json::Value::Null) => 0,
        Some(serde_json::Value::Number(n))
            if n.as_i64()
                .is_some_and(|p| (-MAX_PRIORITY..=MAX_PRIORITY).contains(&p)) =>
        {
            n.as_i64().unwrap_or_default() as i32
        }
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!(
                    "priority: expected an integer from -{MAX_PRIORITY} to {MAX_PRIORITY}, got {other}"
                ),
            ));
        }
    };
    let queue = match obj.remove("queue") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(q)) => {
            crate::server::store::accounts::check_name(&q, "queue name")
                .map_err(|m| bad("bad_request", format!("queue: {m}")))?;
            Some(q)
        }
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!("queue: expected a queue name, got {other}"),
            ));
        }
    };
    let payload = match obj.remove("payload") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) if p.to_string().len() <= MAX_PAYLOAD_BYTES => Some(p),
        Some(_) => {
            return Err(bad(
                "bad_request",
                format!("payload: at most {MAX_PAYLOAD_BYTES} bytes of JSON"),
            ));
        }
    };
    let scheduled_at = scheduled_at(obj).map_err(|m| bad("bad_request", m))?;
    let hooks = parse_hooks(obj, "job.finished").map_err(|m| bad("bad_webhook", m))?;
    let cache = match obj.remove("cache") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => b,
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!("cache: expected true or false, got {other}"),
            ));
        }
    };
    let retry = match obj.remove("retry") {
        None | Some(serde_json::Value::Null) => None,
        Some(r) => {
            let r: crate::server::scheduler::queue::RetryPolicy =
                serde_json::from_value(r).map_err(|e| bad("bad_request", format!("retry: {e}")))?;
            r.check().map_err(|m| bad("bad_request", m))?;
            Some(r)
        }
    };
    let stdin = match obj.remove("stdin") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) if t.len() <= MAX_STDIN_BYTES => Some(t),
        Some(serde_json::Value::String(_)) => {
            return Err(bad(
                "bad_request",
                format!(
                    "stdin: at most {MAX_STDIN_BYTES} bytes as text; upload a larger (or \
                     binary) input as the multipart part `stdin`"
                ),
            ));
        }
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!("stdin: expected text, got {other}"),
            ));
        }
    };
    let working_dir = match obj.remove("working_dir") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(w))
            if w.starts_with('/') && w.len() <= 4096 && !w.contains('\0') =>
        {
            Some(std::path::PathBuf::from(w))
        }
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!("working_dir: expected an absolute path, got {other}"),
            ));
        }
    };
    let owner = match obj.remove("owner") {
        None => None,
        Some(serde_json::Value::String(o)) => {
            crate::server::store::accounts::check_user_name(&o)
                .map_err(|m| bad("bad_request", format!("owner: {m}")))?;
            Some(o)
        }
        Some(other) => {
            return Err(bad(
                "bad_request",
                format!("owner: expected a user name, got {other}"),
            ));
        }
    };
    // Every unknown field at once, then serde's own check of the shape.
    jobpack_core::spec::check_fields(&v)
        .map_err(|m| bad("invalid_spec", format!("invalid job spec: {m}")))?;
    let spec: JobSpec = serde_json::from_value(v)
        .map_err(|e| bad("invalid_spec", format!("invalid job spec: {e}")))?;
    let job = spec.validate().map_err(|e| {
        let fields = e.field_errors().iter();
        let fields = fields.map(|f| (f.field.clone(), f.message.clone()));
        bad("invalid_spec", e.to_string()).with_fields(fields.collect())
    })?;
    if let Some(src) = &job.source
        && src.url.starts_with("file:")
        && !allow_file_urls
    {
        return Err(bad(
            "forbidden_url",
            format!(
                "git_url: file:// URLs are not allowed on this server: {}",
                src.url
            ),
        ));
    }
    Ok(Parsed {
        sub: Submission {
            spec,
            limits,
            network,
            run,
            secret_env: secrets
                .keys()
                .map(|k| (k.clone(), MASK.to_owned()))
                .collect(),
            priority,
            queue,
            payload,
            working_dir,
            shared_dir: None,
            scheduled_at,
            stdin,
            retry,
            cache,
        },
        secrets,
        owner,
        hooks,
    })
}

/// The gRPC job service's names for limits (`maxCPU` percent, `maxMemory` MiB, `maxIOBPS`
/// bytes/s), taken out of a submission into `limits`; 0 means "not set", as there. Given twice
/// (also in `limits`) is an error.
fn seed_limits(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    limits: &mut Limits,
) -> Result<(), String> {
    for (key, ours) in [
        ("maxCPU", "cpu_percent"),
        ("maxMemory", "memory_bytes"),
        ("maxIOBPS", "io_bps"),
    ] {
        let Some(v) = obj.remove(key) else { continue };
        let n = v
            .as_u64()
            .ok_or_else(|| format!("{key}: expected a whole number >= 0, got {v}"))?;
        if n == 0 {
            continue;
        }
        let taken = match ours {
            "cpu_percent" => limits
                .cpu_percent
                .replace(u32::try_from(n).map_err(|_| format!("{key}: {n} is too large"))?)
                .is_some(),
            "memory_bytes" => limits
                .memory_bytes
                .replace(
                    n.checked_mul(1 << 20)
                        .ok_or(format!("{key}: {n} is too large"))?,
                )
                .is_some(),
            _ => limits.io_bps.replace(n).is_some(),
        };
        if taken {
            return Err(format!("give limits.{ours} or {key}, not both"));
        }
    }
    Ok(())
}

/// `scheduled_at` (or the gRPC job service's `scheduledTime`): an RFC 3339 time in UTC
/// (`2026-12-01T09:30:00Z`), at most a year ahead; a time past means now.
fn scheduled_at(
    obj: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Option<f64>, String> {
    let (key, v) = match (obj.remove("scheduled_at"), obj.remove("scheduledTime")) {
        (Some(_), Some(_)) => return Err("give scheduled_at or scheduledTime, not both".into()),
        (Some(v), None) => ("scheduled_at", v),
        (None, Some(v)) => ("scheduledTime", v),
        (None, None) => return Ok(None),
    };
    let text = match &v {
        serde_json::Value::Null => return Ok(None),
        serde_json::Value::String(t) if t.is_empty() => return Ok(None),
        serde_json::Value::String(t) => t.clone(),
        other => return Err(format!("{key}: expected an RFC 3339 time, got {other}")),
    };
    let t = humantime::parse_rfc3339(&text).map_err(|e| {
        format!("{key}: {text:?} is not an RFC 3339 time in UTC (2026-12-01T09:30:00Z): {e}")
    })?;
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| format!("{key}: {text:?} is before 1970"))?
        .as_secs_f64();
    if secs > crate::server::store::now() + 366.0 * 86400.0 {
        return Err(format!("{key}: {text:?} is more than a year ahead"));
    }
    Ok(Some(secs))
}

/// The range of `priority`, and the largest `payload`.
const MAX_PRIORITY: i64 = 1_000_000;
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The largest `stdin` given as text in a JSON submission.
pub(crate) const MAX_STDIN_BYTES: usize = 1024 * 1024;

/// What secret values are replaced with wherever the API shows them.
pub(crate) const MASK: &str = "***";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_split_into_spec_service_keys_and_secrets() {
        let p = parse_submission(
            serde_json::json!({"command": "true", "run": false, "network": "none",
                               "secret_env": {"TOKEN": "s3cret"}, "limits": {"pids": 8}}),
            false,
        )
        .unwrap();
        assert!(!p.sub.run);
        assert_eq!(p.sub.limits.pids, Some(8));
        assert_eq!(p.secrets["TOKEN"], "s3cret");
        assert_eq!(p.sub.secret_env["TOKEN"], MASK, "only the names are stored");
        // The gRPC job service's names: maxCPU, maxMemory (MiB), maxIOBPS, secret_environment.
        let p = parse_submission(
            serde_json::json!({"command": "true", "maxCPU": 50, "maxMemory": 512, "maxIOBPS": 0,
                               "secret_environment": {"K": "v"}}),
            false,
        )
        .unwrap();
        assert_eq!(
            (
                p.sub.limits.cpu_percent,
                p.sub.limits.memory_bytes,
                p.sub.limits.io_bps
            ),
            (Some(50), Some(512 << 20), None)
        );
        assert_eq!(p.secrets["K"], "v");
        let both =
            serde_json::json!({"command": "x", "maxMemory": 1, "limits": {"memory_bytes": 1}});
        assert!(parse_submission(both, false).is_err());
        for bad in [
            serde_json::json!({"command": "true", "run": "yes"}),
            serde_json::json!({"command": "true", "secret_env": {"1X": "v"}}),
            serde_json::json!({"command": "true", "frobnicate": 1}),
            serde_json::json!({"git_url": "file:///etc", "commit_hash": "a".repeat(40),
                               "command": "x"}),
        ] {
            assert!(parse_submission(bad.clone(), false).is_err(), "{bad}");
        }
    }
}
