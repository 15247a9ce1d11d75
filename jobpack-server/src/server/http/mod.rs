//! The HTTP front door: the `/v1` operations (poem-openapi, one file per resource), the request
//! and response shapes the OpenAPI document shows, uploads, downloads and logs, the one mapping
//! of service errors to HTTP statuses (`problem`), the edge middleware (body limits, upload
//! slots, 405 with `Allow`), and the dashboard pages. Each operation parses, calls the service,
//! and maps its answer.

pub mod accounts;
pub mod activity;
pub mod attempts;
pub mod attest;
pub mod auth;
pub mod batches;
pub mod docs;
pub mod documents;
pub mod downloads;
pub mod edge;
pub mod jobd;
pub mod jobrunner;
pub mod jobs;
pub mod logs;
pub mod pages;
pub mod problem;
pub mod runtimes;
pub mod schema;
pub mod trace;
pub mod uploads;
pub mod usage;
pub mod webhooks;
pub mod workflows;
