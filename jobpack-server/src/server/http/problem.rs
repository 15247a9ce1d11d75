//! The one mapping of every outcome to an HTTP status and a JSON problem body
//! (`{code, message, status}`), shared by every HTTP operation: `ApiError`, its constructors,
//! and `From<ServiceError>` (the service's kinds as statuses).

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::server::service::error::{Kind, ServiceError};

/// A problem: a stable machine-readable `code`, a human `message`, the HTTP `status`; for an
/// invalid spec also each invalid field (`errors`), which the message lists too.
#[derive(Debug, Object)]
pub struct Problem {
    pub code: String,
    pub message: String,
    pub status: u16,
    /// Absent when the problem is not about fields.
    #[oai(default, skip_serializing_if_is_empty)]
    pub errors: Vec<FieldProblem>,
}

/// One invalid field of a submission.
#[derive(Debug, Object)]
pub struct FieldProblem {
    /// Its path: `commit_hash`, `data[1].sha256`, `jobs[3].command`.
    pub field: String,
    pub message: String,
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
    /// The job's files were removed by retention (its record stays).
    #[oai(status = 410)]
    Gone(Json<Problem>),
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

/// The answer to a submission, whatever it submits (a job, a batch, a workflow).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, ApiResponse)]
#[oai(bad_request_handler = "bad_submission")]
pub enum Submitted<T: poem_openapi::types::ToJSON + Send + Sync> {
    /// Accepted: everything is stored; the jobs that can start are queued.
    #[oai(status = 201)]
    Created(Json<T>),
    /// The submission is invalid: the message names each problem at its path
    /// (`data[1].sha256: ...`, `jobs[3].command: ...`, `jobs.report.requires[0]: ...`); nothing
    /// was created.
    #[oai(status = 400)]
    BadRequest(Json<Problem>),
    /// Too many jobs are waiting; try again later.
    #[oai(status = 503)]
    Busy(Json<Problem>),
}

pub fn bad_submission<T: poem_openapi::types::ToJSON + Send + Sync>(
    err: poem::Error,
) -> Submitted<T> {
    Submitted::BadRequest(problem(400, "bad_request", err.to_string()))
}

pub(crate) fn problem(status: u16, code: &str, message: impl Into<String>) -> Json<Problem> {
    Json(Problem {
        code: code.into(),
        message: message.into(),
        status,
        errors: Vec::new(),
    })
}

pub fn bad_request(err: poem::Error) -> ApiError {
    ApiError::BadRequest(problem(400, "bad_request", err.to_string()))
}

/// The answer to a failure of the server itself: 507 when the disk (or SQLite's) is full, else
/// 500.
pub(crate) fn internal(e: impl Into<anyhow::Error>) -> ApiError {
    ServiceError::internal(e).into()
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The body of a service error, with its HTTP status.
pub(crate) fn problem_of(e: ServiceError) -> Json<Problem> {
    let mut p = problem(status_of(e.kind), &e.code, e.message);
    p.0.errors = e
        .fields
        .into_iter()
        .map(|(field, message)| FieldProblem { field, message })
        .collect();
    p
}

/// The one mapping of the service's kinds to HTTP statuses.
pub(crate) fn status_of(kind: Kind) -> u16 {
    match kind {
        Kind::Invalid => 400,
        Kind::Unauthenticated => 401,
        Kind::Forbidden => 403,
        Kind::NotFound => 404,
        Kind::Conflict => 409,
        Kind::Gone => 410,
        Kind::OverQuota => 422,
        Kind::TooManyJobs => 429,
        Kind::StorageFull => 507,
        Kind::Internal => 500,
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let kind = e.kind;
        let p = problem_of(e);
        match kind {
            Kind::Invalid => ApiError::BadRequest(p),
            Kind::Unauthenticated => ApiError::Unauthorized(p),
            Kind::Forbidden => ApiError::Forbidden(p),
            Kind::NotFound => ApiError::NotFound(p),
            Kind::Conflict => ApiError::Conflict(p),
            Kind::Gone => ApiError::Gone(p),
            Kind::OverQuota => ApiError::OverQuota(p),
            Kind::TooManyJobs => ApiError::TooManyJobs(p),
            Kind::StorageFull => ApiError::InsufficientStorage(p),
            Kind::Internal => ApiError::Internal(p),
        }
    }
}
