//! The server's metrics, with the Prometheus project's client (`prometheus-client`): one
//! registry per process, observed where things happen (the request middleware, the runner's
//! state changes) and read at scrape time for what the store knows (jobs by status, the queue,
//! the disk). Served on `/metrics` (admins) and, with `--metrics-listen`, on a port of its own
//! without authentication (for a scraper on a private network).
//!
//! A ground floor of the server: it imports nothing of the server's.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    /// The path with ids replaced (`/v1/jobs/{id}/logs`), `other` for paths no door serves.
    pub route: String,
    /// `2xx`, `4xx`, ...
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    /// The state the job left: `queued` (the wait for a slot), `packing`, `packed` (unpack and
    /// the sandbox's start), `running`.
    pub stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FinishedLabels {
    pub status: String,
    /// `sandbox` or `slurm`.
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `git` or `data` (bytes fetched); `sse` or `grpc` (log streams).
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `delivered`, `retry` (failed, tried again later), `failed` (given up).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabels {
    pub user: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request durations: 0.5 ms to ~16 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Job stage and total durations: 1 ms to ~9 h.
fn job_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

pub struct Metrics {
    registry: Registry,
    pub http: Hist<HttpLabels>,
    pub stage: Hist<StageLabels>,
    pub job_total: Hist<StatusLabels>,
    pub finished: Family<FinishedLabels, Counter>,
    pub jobs: Family<StatusLabels, Gauge>,
    pub queue_depth: Gauge,
    pub running: Gauge,
    pub data_bytes: Gauge,
    pub data_free_bytes: Gauge,
    pub collected_bytes: Counter,
    pub log_bytes: Counter,
    pub fetched_bytes: Family<KindLabels, Counter>,
    pub streams: Family<KindLabels, Gauge>,
    pub webhook_deliveries: Family<ResultLabels, Counter>,
    pub user_running: Family<UserLabels, Gauge>,
}

/// This process's metrics.
pub fn get() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let mut m = Metrics {
            registry: Registry::default(),
            http: Family::new_with_constructor(request_buckets),
            stage: Family::new_with_constructor(job_buckets),
            job_total: Family::new_with_constructor(job_buckets),
            finished: Family::default(),
            jobs: Family::default(),
            queue_depth: Gauge::default(),
            running: Gauge::default(),
            data_bytes: Gauge::default(),
            data_free_bytes: Gauge::default(),
            collected_bytes: Counter::default(),
            log_bytes: Counter::default(),
            fetched_bytes: Family::default(),
            streams: Family::default(),
            webhook_deliveries: Family::default(),
            user_running: Family::default(),
        };
        m.registry.register(
            "jobpack_http_request_duration_seconds",
            "HTTP requests by method, route and status class, and how long each took",
            m.http.clone(),
        );
        m.registry.register(
            "jobpack_job_stage_duration_seconds",
            "How long jobs stayed in each state: queued (the wait for a slot), packing, packed \
             (unpack and the sandbox's start), running",
            m.stage.clone(),
        );
        m.registry.register(
            "jobpack_job_duration_seconds",
            "Jobs from their task's start (submission, or this process's start) to their end",
            m.job_total.clone(),
        );
        m.registry.register(
            "jobpack_jobs_finished",
            "Jobs that ended, by final status and backend",
            m.finished.clone(),
        );
        m.registry
            .register("jobpack_jobs", "Jobs by status, as stored", m.jobs.clone());
        m.registry.register(
            "jobpack_queue_depth",
            "Jobs waiting for a slot",
            m.queue_depth.clone(),
        );
        m.registry
            .register("jobpack_running", "Jobs running now", m.running.clone());
        m.registry.register(
            "jobpack_data_bytes",
            "Disk the data directory used at the last collection",
            m.data_bytes.clone(),
        );
        m.registry.register(
            "jobpack_collected_bytes",
            "Job files retention removed",
            m.collected_bytes.clone(),
        );
        m.registry.register(
            "jobpack_data_free_bytes",
            "Free space on the data directory's file system",
            m.data_free_bytes.clone(),
        );
        m.registry.register(
            "jobpack_log_bytes",
            "Log bytes jobs wrote (after masking), counted when each run ends",
            m.log_bytes.clone(),
        );
        m.registry.register(
            "jobpack_fetched_bytes",
            "Bytes packing received over the network: git transfers and data downloads",
            m.fetched_bytes.clone(),
        );
        m.registry.register(
            "jobpack_active_streams",
            "Log streams open now: SSE (HTTP) and gRPC",
            m.streams.clone(),
        );
        m.registry.register(
            "jobpack_webhook_deliveries",
            "Webhook delivery attempts by result",
            m.webhook_deliveries.clone(),
        );
        m.registry.register(
            "jobpack_user_running_jobs",
            "Jobs running now, by owner",
            m.user_running.clone(),
        );
        m
    })
}

impl Metrics {
    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.push_str("# EOF\n");
        }
        out
    }

    /// One answered request.
    pub fn request(&self, method: &str, path: &str, status: u16, seconds: f64) {
        self.http
            .get_or_create(&HttpLabels {
                method: method.to_owned(),
                route: route(path, status),
                status: format!("{}xx", status / 100),
            })
            .observe(seconds);
    }
}

/// Counts an open log stream of `kind` (`sse`, `grpc`) in `jobpack_active_streams` until dropped.
pub struct StreamGuard(KindLabels);

impl StreamGuard {
    pub fn new(kind: &str) -> StreamGuard {
        let labels = KindLabels {
            kind: kind.to_owned(),
        };
        get().streams.get_or_create(&labels).inc();
        StreamGuard(labels)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        get().streams.get_or_create(&self.0).dec();
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A path as a route label: ids and file paths replaced, so the label's values stay few; a path
/// outside the server's doors (a scanner's) is `other`.
pub fn route(path: &str, status: u16) -> String {
    const DOORS: [&str; 7] = [
        "/v1/", "/jobs", "/api/v1/", "/metrics", "/ui/", "/docs", "/openapi",
    ];
    if path == "/" {
        return path.into();
    }
    if !DOORS.iter().any(|d| path.starts_with(d)) {
        return "other".into();
    }
    let mut out = Vec::new();
    for seg in path.split('/').skip(1) {
        if out.len() >= 6 {
            return "other".into();
        }
        let id_like = seg.len() >= 8 && seg.bytes().any(|b| b.is_ascii_digit());
        out.push(if id_like { "{id}" } else { seg });
        if seg == "files" {
            out.push("{path}");
            break;
        }
    }
    // Unknown names (an unmatched 404) must not become labels either.
    let plain = |s: &&str| {
        s.chars()
            .all(|c| c.is_ascii_lowercase() || "_-.{}".contains(c))
    };
    if status == 404 && !out.iter().all(plain) {
        return "other".into();
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::route;

    #[test]
    fn routes_keep_few_values() {
        let id = "0b3c1f0e-7a51-4c57-9d7e-4b3d2a1f0e9c";
        assert_eq!(route("/v1/jobs", 201), "/v1/jobs");
        assert_eq!(
            route(&format!("/v1/jobs/{id}/logs"), 200),
            "/v1/jobs/{id}/logs"
        );
        assert_eq!(
            route(&format!("/v1/jobs/{id}/files/a/b/c.txt"), 200),
            "/v1/jobs/{id}/files/{path}"
        );
        assert_eq!(route(&format!("/jobs/{id}"), 200), "/jobs/{id}");
        assert_eq!(route("/wp-admin/x.php", 404), "other");
        assert_eq!(route("/v1/NoSuchThing", 404), "other");
        assert_eq!(route("/v1/a/b/c/d/e/f/g", 200), "other");
    }
}
