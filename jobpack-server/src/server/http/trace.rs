//! The outermost middleware: every request gets a request id (the client's `X-Request-Id` if it
//! sent a usable one, else a new one), returned in the response's `X-Request-Id`, and one log
//! line when it is answered: method, path, status, duration, the caller (once authenticated),
//! the job it is about (from the path), and the id. Every line logged while it is served
//! carries the id too (a span).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

/// Who the request turned out to be from: the authentication middleware, inside this one,
/// fills it in.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<String>>>);

impl CallerSlot {
    pub fn set(&self, user: &str) {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(user.to_owned());
        }
    }

    fn get(&self) -> Option<String> {
        self.0.lock().ok().and_then(|s| s.clone())
    }
}

/// A client's request id is kept if it is 1-128 letters, digits, `-`, `_`, `.` or `:` (it goes
/// into logs and a header as it is); anything else is replaced.
fn usable(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The job a path is about: `/v1/jobs/{id}...`, `/jobs/{id}...`, `/api/v1/jobs/{id}...`.
fn job_of(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1/jobs/")
        .or_else(|| path.strip_prefix("/api/v1/jobs/"))
        .or_else(|| path.strip_prefix("/jobs/"))?;
    let id = rest.split('/').next()?;
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then_some(id)
}

pub async fn log_request<E: Endpoint>(ep: E, mut req: Request) -> poem::Result<Response> {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let caller = CallerSlot::default();
    req.extensions_mut().insert(caller.clone());
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let t0 = Instant::now();
    let span = tracing::info_span!("request", request_id = %id);
    let answered = ep.call(req).instrument(span.clone()).await;
    let mut resp = match answered {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    if let Ok(v) = poem::http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    // A submission's job id is on the service's "job accepted" line, in this request's span.
    let job = job_of(&path);
    let seconds = t0.elapsed().as_secs_f64();
    crate::server::metrics::get().request(&method, &path, resp.status().as_u16(), seconds);
    tracing::info!(
        parent: &span,
        method,
        path,
        status = resp.status().as_u16(),
        duration_ms = seconds * 1e3,
        caller = caller.get().as_deref(),
        job_id = job,
        "request"
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_and_job_paths() {
        assert!(usable("abc-123_x.y:z"));
        assert!(!usable(""));
        assert!(!usable("a b"));
        assert!(!usable("x\ny"));
        assert!(!usable(&"a".repeat(129)));
        let id = "0b3c1f0e-7a51-4c57-9d7e-4b3d2a1f0e9c";
        assert_eq!(job_of(&format!("/v1/jobs/{id}/logs")), Some(id));
        assert_eq!(job_of(&format!("/jobs/{id}")), Some(id));
        assert_eq!(job_of(&format!("/api/v1/jobs/{id}/status")), Some(id));
        assert_eq!(job_of("/v1/jobs"), None);
        assert_eq!(job_of("/v1/jobs/not%20an%20id"), None);
    }
}
