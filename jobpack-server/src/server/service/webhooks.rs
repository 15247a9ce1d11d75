//! Webhooks: the rules of creating them (events, URL and its destination, extra headers,
//! who may make a server-wide one), signing by the Standard Webhooks scheme, and the two tasks
//! of the server: turning the store's event outbox into deliveries, and sending those with
//! retries. A slow receiver only slows its own delivery: nothing here is on the job path.
//!
//! Signature: `webhook-signature: v1,<base64 HMAC-SHA256("id.timestamp.body")>` with the secret
//! `whsec_<base64>`, `webhook-id` the delivery's id (the same on every attempt, for the
//! receiver's de-duplication), `webhook-timestamp` the attempt's Unix time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jobpack_core::egress::Destinations;

use crate::server::service::auth::{Action, Caller, require};
use crate::server::service::error::{ServiceError, ServiceResult};
use crate::server::store::webhooks::{Attempted, DeliveryRow, WebhookRow};
use crate::server::store::{JobRow, Store, now, rfc3339};

/// The events a webhook may ask for.
pub const EVENTS: &[&str] = &[
    "job.started",
    "job.finished",
    "batch.finished",
    "workflow.finished",
];

/// The server's webhook settings.
#[derive(Clone)]
pub struct WebhookSettings {
    /// Where deliveries may go (public addresses unless an admin allowed more).
    pub destinations: Arc<Destinations>,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// How long a failing delivery is retried before it is given up.
    pub retry_for: Duration,
    /// The first retry's delay; each next one doubles (with jitter), up to an hour.
    pub backoff: Duration,
}

/// A webhook as asked for (`POST /v1/webhooks`, or a submission's `webhooks`/`callback_url`).
#[derive(Debug, Clone, Default)]
pub struct HookRequest {
    pub url: String,
    pub events: Vec<String>,
    pub headers: BTreeMap<String, String>,
    /// Sign with the secret of this standing webhook of the caller's (instead of a new one).
    pub secret_ref: Option<String>,
}

const MAX_URL: usize = 2048;
/// The flag with which an admin allows more destinations for webhooks.
const ALLOW_FLAG: &str = "--allow-webhooks-to";
const MAX_HEADERS: usize = 16;
/// Headers a webhook's extra headers may not set: the signature's, and the transport's.
const RESERVED: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

fn bad(m: impl Into<String>) -> ServiceError {
    ServiceError::invalid("bad_webhook", m)
}

/// Checks what a webhook asks for, whoever it is for; `allowed` is the events its scope has.
fn check(req: &HookRequest, allowed: &[&str], settings: &WebhookSettings) -> ServiceResult<()> {
    if req.url.len() > MAX_URL {
        return Err(bad(format!("url: at most {MAX_URL} characters")));
    }
    let url = reqwest::Url::parse(&req.url).map_err(|e| bad(format!("url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "url: http or https only, not {}",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "url: no credentials in the URL; send them as an extra header",
        ));
    }
    let host = url.host_str().ok_or_else(|| bad("url: no host"))?;
    // A literal address is checked now; a name at each delivery, after it resolves.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        settings.destinations.check(host, ip).map_err(|f| {
            ServiceError::forbidden(
                "forbidden_destination",
                format!("url: {}", f.explain(ALLOW_FLAG)),
            )
        })?;
    }
    if req.events.is_empty() {
        return Err(bad(format!("events: name at least one of {allowed:?}")));
    }
    for e in &req.events {
        if !allowed.contains(&e.as_str()) {
            return Err(bad(format!("events: {e:?} is not one of {allowed:?}")));
        }
    }
    if req.headers.len() > MAX_HEADERS {
        return Err(bad(format!("headers: at most {MAX_HEADERS}")));
    }
    for (k, v) in &req.headers {
        let name_ok = !k.is_empty()
            && k.len() <= 128
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !name_ok || RESERVED.contains(&k.to_ascii_lowercase().as_str()) {
            return Err(bad(format!(
                "headers: {k:?} is not a header a webhook may set"
            )));
        }
        if v.len() > 4096 || v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(bad(format!(
                "headers: the value of {k} is not a header value"
            )));
        }
    }
    Ok(())
}

/// A new secret: `whsec_` + base64 of 24 random bytes.
pub fn new_secret() -> ServiceResult<String> {
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).map_err(|e| ServiceError::internal(anyhow::anyhow!("{e}")))?;
    Ok(format!("whsec_{}", B64.encode(b)))
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with `secret` (`whsec_...`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let raw = secret.strip_prefix("whsec_").unwrap_or(secret);
    let key_bytes = B64.decode(raw).unwrap_or_else(|_| raw.as_bytes().to_vec());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", B64.encode(tag.as_ref()))
}

/// The events a webhook of `scope` may ask for.
pub fn events_of(scope: &str) -> &'static [&'static str] {
    match scope {
        "job" => &EVENTS[..2],
        "batch" => &["job.started", "job.finished", "batch.finished"],
        "workflow" => &["job.started", "job.finished", "workflow.finished"],
        _ => EVENTS,
    }
}

/// Creates a webhook for `caller`: standing (`user`, or `server` for admins), or for the
/// submission `target` (`job`/`batch`/`workflow`). Returns it with its secret.
pub fn create(
    store: &Store,
    settings: &WebhookSettings,
    caller: &Caller,
    owner: &str,
    req: &HookRequest,
    scope: &str,
    target: Option<&str>,
) -> ServiceResult<WebhookRow> {
    require(caller, Action::Submit, "create webhooks")?;
    if scope == "server" {
        require(caller, Action::Administer, "create server-wide webhooks")?;
    }
    check(req, events_of(scope), settings)?;
    let secret = match &req.secret_ref {
        Some(r) => {
            store
                .webhook(r)
                .map_err(ServiceError::internal)?
                .filter(|w| w.owner == owner && matches!(w.scope.as_str(), "user" | "server"))
                .ok_or_else(|| bad(format!("secret_ref: no standing webhook {r} of {owner}")))?
                .secret
        }
        None => new_secret()?,
    };
    let w = WebhookRow {
        id: uuid::Uuid::new_v4().to_string(),
        owner: owner.to_owned(),
        scope: scope.to_owned(),
        target_id: target.map(str::to_owned),
        url: req.url.clone(),
        events: req.events.clone(),
        secret,
        headers: req.headers.clone(),
        created_at: now(),
    };
    store.insert_webhook(&w).map_err(ServiceError::internal)?;
    Ok(w)
}

/// Checks a submission's webhooks before anything is stored.
pub fn check_all(
    reqs: &[HookRequest],
    scope: &str,
    settings: &WebhookSettings,
) -> ServiceResult<()> {
    for r in reqs {
        check(r, events_of(scope), settings)?;
    }
    Ok(())
}

/// Shows a job as its `GET` answers it.
pub type JobView = Box<dyn Fn(&JobRow) -> Option<serde_json::Value> + Send + Sync>;
/// Shows a batch or a workflow (by id) as its `GET` answers it.
pub type GroupView = Box<dyn Fn(&Store, &str) -> Option<serde_json::Value> + Send + Sync>;

/// How the server shows what an event is about (the same JSON as its `GET`).
pub struct Renderers {
    pub job: JobView,
    pub batch: GroupView,
    pub workflow: GroupView,
}

/// Turns the outbox's events into deliveries (a batch's or workflow's end too, when its last
/// job ends). Returns how many events it took.
pub fn dispatch(store: &Store, render: &Renderers) -> anyhow::Result<usize> {
    let events = store.job_events(100)?;
    // Events no webhook wants leave the outbox together, in one transaction at the end.
    let mut unwanted = Vec::new();
    for ev in &events {
        let mut out = Vec::new();
        if let Some(job) = store.get(&ev.job_id)? {
            let subjects = [
                ("job", Some(job.id.as_str())),
                ("batch", job.batch_id.as_deref()),
                ("workflow", job.workflow_id.as_deref()),
            ];
            let hooks = store.webhooks_for(&job.owner, &subjects)?;
            if hooks.is_empty() {
                // Nothing to send: no status object to render.
                unwanted.push(ev.seq);
                continue;
            }
            let mut wanted: Vec<(String, String, serde_json::Value)> = Vec::new();
            if let Some(data) = (render.job)(&job) {
                wanted.push((ev.event.clone(), job.id.clone(), data));
            }
            if ev.event == "job.finished" {
                for (event, column, id, f) in [
                    ("batch.finished", "batch_id", &job.batch_id, &render.batch),
                    (
                        "workflow.finished",
                        "workflow_id",
                        &job.workflow_id,
                        &render.workflow,
                    ),
                ] {
                    if let Some(id) = id
                        && store.group_finished(column, id)?
                        && let Some(data) = f(store, id)
                    {
                        wanted.push((event.to_owned(), id.clone(), data));
                    }
                }
            }
            for (event, subject, data) in &wanted {
                let body = serde_json::json!({
                    "type": event,
                    "timestamp": rfc3339(ev.at),
                    "data": data,
                })
                .to_string();
                for h in hooks.iter().filter(|h| h.events.iter().any(|e| e == event)) {
                    out.push((
                        format!("msg_{}", uuid::Uuid::new_v4().simple()),
                        h.id.clone(),
                        event.clone(),
                        subject.clone(),
                        body.clone(),
                    ));
                }
            }
        }
        if out.is_empty() {
            unwanted.push(ev.seq);
        } else {
            store.enqueue_deliveries(ev.seq, &out)?;
        }
    }
    store.drop_job_events(&unwanted)?;
    Ok(events.len())
}

/// The delay before retry number `attempt` (1, 2, ...): `base * 2^(attempt-1)`, up to an hour,
/// then plus or minus a fifth at random.
fn backoff(base: Duration, attempt: i64) -> f64 {
    let exp = base.as_secs_f64() * 2f64.powi((attempt - 1).clamp(0, 30) as i32);
    let d = exp.min(3600.0);
    let mut b = [0u8; 2];
    let r = if getrandom::fill(&mut b).is_ok() {
        f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    d * (0.8 + 0.4 * r)
}

/// Sends one delivery and says what became of it.
async fn attempt(
    http: &reqwest::Client,
    store: &Store,
    settings: &WebhookSettings,
    d: &DeliveryRow,
) -> anyhow::Result<()> {
    let Some(hook) = store.webhook(&d.webhook_id)? else {
        let fate = Attempted::Failed {
            code: None,
            error: "the webhook was deleted",
        };
        store.record_attempt(&d.id, &fate)?;
        observe(d, &fate);
        return Ok(());
    };
    let ts = now() as i64;
    let mut req = http
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sign(&hook.secret, &d.id, ts, &d.body))
        .timeout(settings.timeout)
        .body(d.body.clone());
    for (k, v) in &hook.headers {
        req = req.header(k, v);
    }
    // A literal address is checked here (the resolver checks names when it connects).
    let literal = reqwest::Url::parse(&hook.url).ok().and_then(|u| {
        let h = u
            .host_str()?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        h.parse::<std::net::IpAddr>().ok().map(|ip| (h, ip))
    });
    // Err((refused by the destination policy, why)).
    let sent = match literal.map(|(h, ip)| settings.destinations.check(&h, ip)) {
        Some(Err(f)) => Err((true, f.explain(ALLOW_FLAG))),
        _ => req.send().await.map_err(|e| {
            if let Some(f) = jobpack_core::egress::forbidden_in(&e) {
                return (true, f.explain(ALLOW_FLAG));
            }
            let mut cause: &dyn std::error::Error = &e;
            while let Some(s) = cause.source() {
                cause = s;
            }
            if e.is_timeout() {
                (false, format!("timed out after {:?}", settings.timeout))
            } else {
                (false, cause.to_string())
            }
        }),
    };
    let give_up_at = d.created_at + settings.retry_for.as_secs_f64();
    let retry = |code: Option<u16>, error: String| {
        let next_at = now() + backoff(settings.backoff, d.attempts + 1);
        (code, error, (next_at <= give_up_at).then_some(next_at))
    };
    // (code, error, retry at): no error: delivered.
    let (code, error, next_at) = match sent {
        Ok(resp) => {
            let code = resp.status().as_u16();
            if resp.status().is_success() {
                (Some(code), String::new(), None)
            } else if code == 429 || resp.status().is_server_error() {
                retry(Some(code), format!("the receiver answered {code}"))
            } else {
                let error = format!("the receiver answered {code}; not retried");
                (Some(code), error, None)
            }
        }
        Err((true, e)) => (None, e, None),
        Err((false, e)) => retry(None, e),
    };
    let fate = match (code, error.is_empty(), next_at) {
        (Some(code), true, _) => Attempted::Delivered { code },
        (_, _, Some(next_at)) => Attempted::Retry {
            next_at,
            code,
            error: &error,
        },
        _ => Attempted::Failed {
            code,
            error: &error,
        },
    };
    store.record_attempt(&d.id, &fate)?;
    observe(d, &fate);
    Ok(())
}

/// One attempt's log line and count: delivered (info), to be retried or given up (warnings).
fn observe(d: &DeliveryRow, fate: &Attempted<'_>) {
    let (result, code, error) = match fate {
        Attempted::Delivered { code } => ("delivered", Some(*code), ""),
        Attempted::Retry { code, error, .. } => ("retry", *code, *error),
        Attempted::Failed { code, error } => ("failed", *code, *error),
    };
    crate::server::metrics::get()
        .webhook_deliveries
        .get_or_create(&crate::server::metrics::ResultLabels {
            result: result.to_owned(),
        })
        .inc();
    // A job's events carry its id as job_id, like every line about a job.
    let job_id = d.event.starts_with("job.").then_some(d.subject_id.as_str());
    let attempt = d.attempts + 1;
    if result == "delivered" {
        tracing::info!(delivery_id = %d.id, webhook_id = %d.webhook_id, event = %d.event,
            subject_id = %d.subject_id, job_id, attempt, result, code, "webhook delivery");
    } else {
        tracing::warn!(delivery_id = %d.id, webhook_id = %d.webhook_id, event = %d.event,
            subject_id = %d.subject_id, job_id, attempt, result, code, error, "webhook delivery");
    }
}

/// The server's webhook task: every quarter second, new events become deliveries and due
/// deliveries are sent (eight at once at most), until dropped.
pub fn spawn(
    store: Store,
    settings: WebhookSettings,
    render: Renderers,
) -> tokio::task::JoinHandle<()> {
    let client = {
        let settings = settings.clone();
        move || {
            reqwest::Client::builder()
                .dns_resolver(settings.destinations.resolver())
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(settings.timeout)
                .build()
        }
    };
    let render = Arc::new(render);
    // The HTTP client (its TLS library, the system's CA certificates) is made at the first
    // delivery, not at start: most servers never send one.
    let mut http: Option<reqwest::Client> = None;
    tokio::spawn(async move {
        loop {
            let (s, r) = (store.clone(), render.clone());
            match tokio::task::spawn_blocking(move || dispatch(&s, &r)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "webhooks: cannot queue deliveries")
                }
                Err(e) => tracing::error!(error = %e, "webhooks: the dispatch task failed"),
            }
            let lease = settings.timeout.as_secs_f64() + 5.0;
            match store.claim_deliveries(8, lease) {
                Ok(due) if due.is_empty() => {}
                Ok(due) => {
                    let http = match &mut http {
                        Some(h) => h,
                        None => match client() {
                            Ok(h) => http.insert(h),
                            Err(e) => {
                                // Claimed but not sent: each is claimed again when its lease
                                // ends, and sent then.
                                tracing::error!(error = %format!("{e:#}"),
                                    "webhooks: cannot make the HTTP client");
                                tokio::time::sleep(Duration::from_millis(250)).await;
                                continue;
                            }
                        },
                    };
                    let sends = due.iter().map(|d| attempt(http, &store, &settings, d));
                    for (d, r) in due.iter().zip(futures_util::future::join_all(sends).await) {
                        if let Err(e) = r {
                            tracing::error!(delivery_id = %d.id, error = %format!("{e:#}"),
                                "webhook delivery not recorded");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "webhooks: cannot read deliveries")
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}
