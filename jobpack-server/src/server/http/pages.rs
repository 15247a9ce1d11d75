//! The routes outside the OpenAPI service: file downloads with raw slashes, the dashboard's three
//! files, and the Prometheus metrics.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::Data;
use poem::{IntoResponse, Response, handler};

use crate::server::http::downloads;
use crate::server::http::edge::problem_response;
use crate::server::scheduler::queue;
use crate::server::service::auth;

/// `/v1/jobs/:id/files/*path`: the same as the OpenAPI operation, with raw slashes in the path.
#[handler]
pub(crate) async fn file_wildcard(
    poem::web::Path((id, path)): poem::web::Path<(String, String)>,
    Data(runner): Data<&Arc<queue::Runner>>,
    caller: auth::Caller,
) -> Response {
    match downloads::file_download(runner, &caller, &id, &path).await {
        Ok(d) => d.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Prometheus metrics of the whole service (admins only: they count every user's jobs).
/// The dashboard: three files built into the binary (no build step, no CDN), under a strict
/// Content-Security-Policy. It talks to `/v1` like any client.
#[handler]
pub(crate) fn ui(req: &poem::Request) -> Response {
    let (body, ctype) = match req.uri().path() {
        "/ui/app.js" => (
            include_str!("../../../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/ui/app.css" => (
            include_str!("../../../ui/app.css"),
            "text/css; charset=utf-8",
        ),
        _ => (
            include_str!("../../../ui/index.html"),
            "text/html; charset=utf-8",
        ),
    };
    Response::builder()
        .content_type(ctype)
        .header(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; frame-ancestors 'none'",
        )
        .header("X-Content-Type-Options", "nosniff")
        .header("Cache-Control", "no-cache")
        .body(body)
}

#[handler]
pub(crate) fn metrics(Data(runner): Data<&Arc<queue::Runner>>, caller: auth::Caller) -> Response {
    if !caller.may(auth::Action::Administer) {
        return problem_response(
            StatusCode::FORBIDDEN,
            format!("role {} may not read the metrics", caller.role),
        );
    }
    let mut out = String::new();
    out.push_str("# HELP jobpack_jobs Jobs by status.\n# TYPE jobpack_jobs gauge\n");
    for (status, n) in runner.store.counts(None).unwrap_or_default() {
        out.push_str(&format!("jobpack_jobs{{status=\"{status}\"}} {n}\n"));
    }
    out.push_str(
        "# HELP jobpack_queue_depth Jobs waiting for a slot.\n# TYPE jobpack_queue_depth gauge\n",
    );
    out.push_str(&format!("jobpack_queue_depth {}\n", runner.queue_depth()));
    out.push_str("# HELP jobpack_running Jobs running now.\n# TYPE jobpack_running gauge\n");
    out.push_str(&format!("jobpack_running {}\n", runner.running_count()));
    let (n, sum) = runner.store.durations().unwrap_or((0, 0.0));
    out.push_str("# HELP jobpack_job_duration_seconds Submission to end, finished jobs.\n");
    out.push_str("# TYPE jobpack_job_duration_seconds summary\n");
    out.push_str(&format!(
        "jobpack_job_duration_seconds_sum {sum}\njobpack_job_duration_seconds_count {n}\n"
    ));
    {
        use crate::server::service::retention::{COLLECTED_BYTES, USED_BYTES};
        use std::sync::atomic::Ordering::Relaxed;
        out.push_str(
            "# HELP jobpack_data_bytes Disk the data directory used at the last collection.\n\
             # TYPE jobpack_data_bytes gauge\n",
        );
        out.push_str(&format!(
            "jobpack_data_bytes {}\n",
            USED_BYTES.load(Relaxed)
        ));
        out.push_str(
            "# HELP jobpack_collected_bytes_total Job files retention removed.\n\
             # TYPE jobpack_collected_bytes_total counter\n",
        );
        out.push_str(&format!(
            "jobpack_collected_bytes_total {}\n",
            COLLECTED_BYTES.load(Relaxed)
        ));
    }
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(out)
}
