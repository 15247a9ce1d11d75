//! The middleware every request passes first: the body size limit (413), at most so many
//! uploads at once (503), and the same JSON problem body for errors that never reached an
//! operation (unknown route, unreadable body, ...).

use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::{IntoResponse, Response};

use super::documents::Documents;

/// A request body reader that fails once more than `left` bytes have come (for bodies sent
/// without a Content-Length).
struct CappedBody<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CappedBody<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > self.left {
            let max = self.max;
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the request body is larger than {max} bytes"
            ))));
        }
        self.left -= n;
        r
    }
}

/// Oversized bodies up to this size are read and dropped before the 413 is sent.
const DRAIN_LIMIT: u64 = 64 << 20;

pub(crate) fn problem_response(status: StatusCode, message: String) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "busy",
        StatusCode::INSUFFICIENT_STORAGE => "insufficient_storage",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let body = serde_json::json!({"code": code, "message": message, "status": status.as_u16()});
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(body.to_string())
}

/// Enforces the body size limit (413 on a declared length over it; a capped reader otherwise) and
/// gives errors that never reached an operation (unknown route, unreadable body, ...) the same
/// JSON problem body the operations use.
pub(crate) async fn edge<E: poem::Endpoint>(
    ep: E,
    mut req: poem::Request,
    max_body: u64,
    uploads: Arc<tokio::sync::Semaphore>,
    documents: Arc<Documents>,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    // Uploads are spooled to disk part by part before a handler runs; only so many at once.
    let is_upload = req
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/"));
    let _upload_slot = if is_upload {
        match tokio::time::timeout(Duration::from_secs(30), uploads.acquire_owned()).await {
            Ok(Ok(p)) => Some(p),
            _ => {
                return Ok(problem_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many uploads are in progress; try again later".into(),
                ));
            }
        }
    } else {
        None
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > max_body => {
            // Read (and drop) a bounded amount of the body first: a client still sending would
            // otherwise see a broken pipe instead of this answer.
            if n <= DRAIN_LIMIT {
                let mut body = req.take_body().into_async_read();
                let _ = tokio::io::copy(&mut body, &mut tokio::io::sink()).await;
            }
            return Ok(problem_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is {n} bytes; this server takes at most {max_body}"),
            ));
        }
        Some(_) => {}
        None => {
            let body = req.take_body().into_async_read();
            req.set_body(poem::Body::from_async_read(CappedBody {
                inner: body,
                left: max_body,
                max: max_body,
            }));
        }
    }
    let resp = match ep.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(poem::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.is_success() || status.is_redirection() || is_json {
        return Ok(resp);
    }
    let text = resp.into_body().into_string().await.unwrap_or_default();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut out = problem_response(status, message);
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Ok(made) = documents.get().await
        && let Some(allow) = made.methods.allow(&path)
        && let Ok(v) = poem::http::HeaderValue::from_str(allow)
    {
        // RFC 9110: a 405 says which methods the resource has.
        out.headers_mut().insert(poem::http::header::ALLOW, v);
    }
    Ok(out)
}
