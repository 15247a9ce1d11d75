//! The one mapping of every outcome to an HTTP status and a JSON problem body
//! (`{code, message, status}`), shared by every HTTP operation: `ApiError`, its constructors, and
//! the permission check that answers 403.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::server::scheduler::queue::Runner;
use crate::server::service::auth::{Action, Caller};
use crate::server::store::JobRow;

/// A problem: a stable machine-readable `code`, a human `message`, the HTTP `status`.
#[derive(Debug, Object)]
pub struct Problem {
    pub code: String,
    pub message: String,
    pub status: u16,
}

/// Every error an operation can answer with.
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_request")]
pub enum ApiError {
    /// The request is malformed or the spec is invalid.
    #[oai(status = 400)]
    BadRequest(Json<Problem>),
    /// No or invalid credentials (a token, or a client certificate).
    #[oai(status = 401)]
    Unauthorized(Json<Problem>),
    /// The caller's role may not do this.
    #[oai(status = 403)]
    Forbidden(Json<Problem>),
    /// No such job (or one of another user).
    #[oai(status = 404)]
    NotFound(Json<Problem>),
    /// The job is not in a state that allows this.
    #[oai(status = 409)]
    Conflict(Json<Problem>),
    /// The request asks for more than the caller's quota allows.
    #[oai(status = 422)]
    OverQuota(Json<Problem>),
    /// The caller has as many unfinished jobs as their quota allows; try again later.
    #[oai(status = 429)]
    TooManyJobs(Json<Problem>),
    /// The body's content type is not one this operation reads.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<Problem>),
    /// The server failed; the message says what.
    #[oai(status = 500)]
    Internal(Json<Problem>),
    /// The server's disk is full: nothing was stored; try again once space is freed.
    #[oai(status = 507)]
    InsufficientStorage(Json<Problem>),
}

pub(crate) fn problem(status: u16, code: &str, message: impl Into<String>) -> Json<Problem> {
    Json(Problem {
        code: code.into(),
        message: message.into(),
        status,
    })
}

pub fn bad_request(err: poem::Error) -> ApiError {
    ApiError::BadRequest(problem(400, "bad_request", err.to_string()))
}

/// The answer to a failure of the server itself: 507 when the disk (or SQLite's) is full, else
/// 500.
pub(crate) fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    let e: anyhow::Error = e.into();
    if is_disk_full(&e) {
        return ApiError::InsufficientStorage(problem(
            507,
            "insufficient_storage",
            format!("the server's disk is full; try again later ({e:#})"),
        ));
    }
    ApiError::Internal(problem(500, "internal", format!("{e:#}")))
}

/// Whether an error comes from a full disk: the store's `Full`, SQLite's SQLITE_FULL or
/// ENOSPC/EDQUOT anywhere in its chain.
pub(crate) fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        if let Some(s) = c.downcast_ref::<crate::server::store::StoreError>() {
            return matches!(s, crate::server::store::StoreError::Full(_));
        }
        if let Some(s) = c.downcast_ref::<rusqlite::Error>() {
            return s.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            );
        }
        false
    })
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// 403 unless the caller's role allows `action`.
pub(crate) fn require(caller: &Caller, action: Action, what: &str) -> ApiResult<()> {
    if caller.may(action) {
        return Ok(());
    }
    Err(ApiError::Forbidden(problem(
        403,
        "forbidden",
        format!("role {} may not {what}", caller.role),
    )))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(problem(404, "not_found", format!("no job {id}")))
}

/// The job `id` if `caller` may read it; another user's job is "not found", as a missing one.
pub(crate) fn visible_row(runner: &Runner, caller: &Caller, id: &str) -> ApiResult<JobRow> {
    require(caller, Action::Read, "read jobs")?;
    runner
        .store
        .get(id)
        .map_err(internal)?
        .filter(|r| caller.sees(&r.owner))
        .ok_or_else(|| not_found(id))
}
