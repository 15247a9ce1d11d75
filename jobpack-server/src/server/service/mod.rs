//! The rules every front door shares: who the caller is and what they may do (`auth`), the
//! server's default and maximum limits (`limits`), and the one submission flow for jobs, batches
//! and workflows (`submit`: validation, ownership, quota, secrets, destinations, one
//! transaction, audit).

pub mod activity;
pub mod auth;
pub mod batches;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod parse;
pub mod ready;
pub mod retention;
pub mod runtimes;
pub mod sign_in;
pub mod submit;
pub mod webhooks;
pub mod workdirs;
pub mod workflows;

use std::sync::Arc;

use crate::server::scheduler::queue::Runner;

/// The service every front door holds: the runner (and through it the store) and the settings
/// the rules read. A door is a thin adapter: it parses its protocol's request, calls the rules
/// with this, and maps the answer.
pub struct Service {
    pub runner: Arc<Runner>,
    /// The server's default and maximum job limits, and where jobs may fetch from.
    pub limits: limits::ServerLimits,
    /// The most jobs that may wait for a slot; a group that would pass it waits (503 over HTTP).
    pub max_queued: usize,
    /// Whether `file://` git URLs are allowed.
    pub allow_file_urls: bool,
    /// The shared working directories jobs may run in.
    pub workdirs: workdirs::Workdirs,
    /// Named queues and how many of each run at once (besides `default`).
    pub queues: std::collections::BTreeMap<String, usize>,
    /// The time limit of `/api/v1` command jobs that ask for none.
    pub command_timeout: Option<f64>,
    /// Failed password sign-ins, for throttling.
    pub sign_in: sign_in::SignInLimiter,
    /// Where webhooks may go, and how they are retried.
    pub webhooks: webhooks::WebhookSettings,
    /// Below this many free bytes on the data directory's file system, `/v1/ready` says no.
    pub ready_min_free_bytes: u64,
}
