//! Authentication at the HTTP door: the middleware that asks the service's [`Authenticator`] who
//! sent a request (its `Authorization` header, its connection's client certificate), puts the
//! [`Caller`] into the request, or answers 401 for a path that is not public.

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{FromRequest, IntoResponse, Request, RequestBody, Response};

use crate::server::service::auth::{Authenticator, Caller};
use crate::server::tls::PeerIdentity;

impl<'a> FromRequest<'a> for Caller {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            poem::Error::from_string("authentication required", StatusCode::UNAUTHORIZED)
        })
    }
}

/// Paths anyone may fetch: liveness and readiness, the API description, the dashboard's static files.
fn is_public(path: &str) -> bool {
    path == "/v1/health"
        || path == "/v1/ready"
        || path == "/openapi.json"
        || path == "/docs"
        || path.starts_with("/docs/")
        || path == "/"
        || path.starts_with("/ui/")
        || path.starts_with("/openapi/")
        || path == "/api/v1/health"
        || path == "/api/v1/auth/token"
}

fn unauthorized(message: String) -> Response {
    let body = serde_json::json!({"code": "unauthorized", "message": message, "status": 401});
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header("WWW-Authenticate", "Bearer realm=\"jobpack\"")
        .content_type("application/json")
        .body(body.to_string())
}

/// Middleware: puts the `Caller` into the request, or answers 401 for protected paths.
pub async fn authenticate<E: poem::Endpoint>(
    ep: E,
    mut req: Request,
    auth: Arc<Authenticator>,
) -> poem::Result<Response> {
    let header = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    match auth.identify(header, PeerIdentity::of(&req).as_ref()) {
        Ok(caller) => {
            if let Some(slot) = req.extensions().get::<super::trace::CallerSlot>() {
                slot.set(&caller.user);
            }
            req.extensions_mut().insert(caller);
        }
        Err(why) if !is_public(req.uri().path()) => {
            // What was wrong, never the credential itself.
            tracing::warn!(path = req.uri().path(), reason = %why, "authentication failed");
            return Ok(unauthorized(why));
        }
        Err(_) => {}
    }
    ep.call(req).await.map(IntoResponse::into_response)
}
