//! `/v1/jobs/{id}/usage`: what a job used while it ran (CPU, memory, processes, IO, sampled
//! from its cgroup every interval), as a series, and its peaks.

use std::sync::Arc;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use crate::server::http::jobs::rfc3339;
use crate::server::http::problem::ApiResult;
use crate::server::service::Service;
use crate::server::service::auth::Caller;
use crate::server::service::jobs;

#[derive(Tags)]
enum UsageTags {
    /// Usage: a job's resources over time.
    Usage,
}

/// One sample.
#[derive(Debug, Object)]
pub struct UsagePointInfo {
    /// When it was taken (RFC 3339).
    pub at: String,
    /// The same, in milliseconds since the epoch.
    pub at_ms: i64,
    /// CPU time of all its processes so far, in seconds.
    pub cpu_seconds: f64,
    /// Cores used since the previous sample (1.0: one core all the time); null for a run's first.
    #[oai(nullable)]
    pub cpu_cores: Option<f64>,
    #[oai(nullable)]
    pub memory_bytes: Option<u64>,
    #[oai(nullable)]
    pub pids: Option<u64>,
    /// Bytes read and written so far.
    #[oai(nullable)]
    pub io_read_bytes: Option<u64>,
    #[oai(nullable)]
    pub io_write_bytes: Option<u64>,
}

/// The highest values seen.
#[derive(Debug, Object)]
pub struct UsagePeaksInfo {
    pub samples: u64,
    #[oai(nullable)]
    pub cpu_cores: Option<f64>,
    #[oai(nullable)]
    pub memory_bytes: Option<u64>,
    #[oai(nullable)]
    pub pids: Option<u64>,
    #[oai(nullable)]
    pub io_read_bytes: Option<u64>,
    #[oai(nullable)]
    pub io_write_bytes: Option<u64>,
}

/// A job's usage series.
#[derive(Debug, Object)]
pub struct UsageInfo {
    pub job_id: String,
    pub status: String,
    /// The server's milliseconds between samples (a run that reached the bound per job has
    /// every second sample dropped and the step doubled each time); null: it does not sample.
    #[oai(nullable)]
    pub interval_ms: Option<u64>,
    /// Oldest first.
    pub samples: Vec<UsagePointInfo>,
    /// The run's peaks when it ended (the outcome's), else those of the samples so far; null
    /// when nothing was sampled (a job shorter than one interval, or no cgroup).
    #[oai(nullable)]
    pub peaks: Option<UsagePeaksInfo>,
}

pub struct UsageApi {
    pub svc: Arc<Service>,
}

#[OpenApi(tag = "UsageTags::Usage")]
impl UsageApi {
    /// A job's CPU, memory, processes and IO over time, sampled from its cgroup while it ran.
    #[oai(path = "/jobs/:id/usage", method = "get")]
    async fn usage(&self, caller: Caller, id: Path<String>) -> ApiResult<Json<UsageInfo>> {
        let u = jobs::usage(&self.svc, &caller, &id)?;
        Ok(Json(UsageInfo {
            job_id: u.job.id,
            status: u.job.status.as_str().to_owned(),
            interval_ms: u.interval.map(|d| d.as_millis() as u64),
            samples: u
                .points
                .into_iter()
                .map(|p| UsagePointInfo {
                    at: rfc3339(p.at_ms as f64 / 1e3),
                    at_ms: p.at_ms,
                    cpu_seconds: p.sample.cpu_nanos as f64 / 1e9,
                    cpu_cores: p.cpu_cores,
                    memory_bytes: p.sample.memory_bytes,
                    pids: p.sample.pids,
                    io_read_bytes: p.sample.io_read_bytes,
                    io_write_bytes: p.sample.io_write_bytes,
                })
                .collect(),
            peaks: u.peaks.map(|p| UsagePeaksInfo {
                samples: p.samples,
                cpu_cores: p.cpu_cores,
                memory_bytes: p.memory_bytes,
                pids: p.pids,
                io_read_bytes: p.io_read_bytes,
                io_write_bytes: p.io_write_bytes,
            }),
        }))
    }
}
