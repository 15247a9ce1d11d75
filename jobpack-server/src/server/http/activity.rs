//! `/v1/activity`: the service minute by minute (jobs ended by status, jobs waiting and running
//! at each minute's end), for the dashboard's overview.

use std::collections::BTreeMap;
use std::sync::Arc;

use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi, Tags};

use crate::server::http::jobs::rfc3339;
use crate::server::http::problem::ApiResult;
use crate::server::service::Service;
use crate::server::service::activity;
use crate::server::service::auth::Caller;

#[derive(Tags)]
enum ActivityTags {
    /// Activity: what the service did, minute by minute.
    Activity,
}

/// One minute.
#[derive(Debug, Object)]
pub struct MinuteInfo {
    /// Its end (RFC 3339); the last minute's counts are as of now.
    pub at: String,
    /// Jobs that ended in it, by final status.
    pub ended: BTreeMap<String, u64>,
    /// Jobs created and not yet running (waiting, queued, packing) at its end.
    pub waiting: u64,
    /// Jobs running at its end.
    pub running: u64,
}

#[derive(Debug, Object)]
pub struct ActivityInfo {
    /// Oldest first; the last is the current minute.
    pub minutes: Vec<MinuteInfo>,
    /// More jobs were active in the window than one answer reads (200,000): the counts are
    /// of those read.
    pub partial: bool,
}

pub struct ActivityApi {
    pub svc: Arc<Service>,
}

#[OpenApi(tag = "ActivityTags::Activity")]
impl ActivityApi {
    /// The last `minutes` minutes (default 60, at most 1440) of the caller's jobs (everyone's
    /// for admins and viewers).
    #[oai(path = "/activity", method = "get")]
    async fn activity(
        &self,
        caller: Caller,
        #[oai(validator(minimum(value = "1"), maximum(value = "1440")))] minutes: Query<
            Option<u32>,
        >,
    ) -> ApiResult<Json<ActivityInfo>> {
        let svc = self.svc.clone();
        let n = minutes.0.unwrap_or(60);
        let a = tokio::task::spawn_blocking(move || activity::activity(&svc, &caller, n))
            .await
            .map_err(crate::server::http::problem::internal)??;
        Ok(Json(ActivityInfo {
            minutes: a
                .minutes
                .into_iter()
                .map(|m| MinuteInfo {
                    at: rfc3339(m.end),
                    ended: m.ended,
                    waiting: m.waiting,
                    running: m.running,
                })
                .collect(),
            partial: a.partial,
        }))
    }
}
