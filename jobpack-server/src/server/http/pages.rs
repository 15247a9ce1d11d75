//! The routes outside the OpenAPI service: file downloads with raw slashes, the dashboard's
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
/// The dashboard: its files built into the binary (no build step, no CDN), under a strict
/// Content-Security-Policy. It talks to `/v1` like any client.
#[handler]
pub(crate) fn ui(req: &poem::Request) -> Response {
    let (body, ctype) = match req.uri().path() {
        "/ui/app.js" => (
            include_str!("../../../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/ui/charts.js" => (
            include_str!("../../../ui/charts.js"),
            "text/javascript; charset=utf-8",
        ),
        "/ui/form.js" => (
            include_str!("../../../ui/form.js"),
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
    metrics_response(runner)
}

/// The metrics as a scrape reads them: what the store knows read now, then every metric.
pub(crate) fn metrics_response(runner: &queue::Runner) -> Response {
    use crate::server::service::retention::{COLLECTED_BYTES, USED_BYTES};
    use std::sync::atomic::Ordering::Relaxed;
    let m = crate::server::metrics::get();
    for (status, n) in runner.store.counts(None).unwrap_or_default() {
        m.jobs
            .get_or_create(&crate::server::metrics::StatusLabels { status })
            .set(n as i64);
    }
    m.queue_depth.set(runner.queue_depth() as i64);
    m.running.set(runner.running_count() as i64);
    m.data_bytes.set(USED_BYTES.load(Relaxed) as i64);
    if let Ok(free) = crate::server::service::ready::free_bytes(&runner.data_dir) {
        m.data_free_bytes.set(free as i64);
    }
    // Only the owners running jobs now: one whose jobs ended is gone from the family.
    m.user_running.clear();
    for (user, n) in runner.store.running_by_owner().unwrap_or_default() {
        m.user_running
            .get_or_create(&crate::server::metrics::UserLabels { user })
            .set(n as i64);
    }
    let collected = COLLECTED_BYTES.load(Relaxed);
    m.collected_bytes
        .inc_by(collected.saturating_sub(m.collected_bytes.get()));
    Response::builder()
        .content_type(crate::server::metrics::CONTENT_TYPE)
        .body(m.encode())
}

/// `--metrics-listen`: the metrics alone, without authentication, on a port of their own; the
/// line `jobpack metrics listening on http://ADDR` follows the others on stdout.
pub(crate) async fn serve_metrics(
    at: std::net::SocketAddr,
    runner: Arc<queue::Runner>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
    use anyhow::Context;
    use poem::listener::{Acceptor, Listener, TcpListener};
    let listener = TcpListener::bind(at)
        .into_acceptor()
        .await
        .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
    let local = listener
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .context("the metrics listener has no address")?;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        if writeln!(out, "jobpack metrics listening on http://{local}")
            .and_then(|_| out.flush())
            .is_err()
        {
            eprintln!("jobpack: metrics listening on http://{local}");
        }
    }
    let app = poem::Route::new().at(
        "/metrics",
        poem::get(poem::endpoint::make_sync(move |_| {
            metrics_response(&runner)
        })),
    );
    Ok(tokio::spawn(async move {
        poem::Server::new_with_acceptor(listener)
            .run_with_graceful_shutdown(
                app,
                async move {
                    stop.wait_for(|s| *s).await.ok();
                },
                Some(std::time::Duration::from_secs(1)),
            )
            .await
    }))
}
