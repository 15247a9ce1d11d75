//! The service's answer when it refuses or fails: a [`Kind`] (what each front door maps to its
//! own status: HTTP in `http::problem`, gRPC later), a stable machine-readable `code`, and a
//! message that says what was wrong and what to do.

use std::borrow::Cow;

/// What kind of refusal or failure, independent of any protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request is malformed or the spec invalid (HTTP 400).
    Invalid,
    /// No or bad credentials (401).
    Unauthenticated,
    /// The caller's role or grants do not allow it (403).
    Forbidden,
    /// No such thing, or one the caller may not see (404).
    NotFound,
    /// Not in a state that allows it (409).
    Conflict,
    /// Asks for more than the owner's quota or the server's maximum (422).
    OverQuota,
    /// The owner has as many unfinished jobs as their quota allows (429).
    TooManyJobs,
    /// The server's disk is full: nothing was stored (507).
    StorageFull,
    /// It was there, and retention removed it (410).
    Gone,
    /// The server failed (500).
    Internal,
}

/// A refusal or failure of the service.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ServiceError {
    pub kind: Kind,
    pub code: Cow<'static, str>,
    pub message: String,
    /// Each invalid field and what is wrong with it (a spec's), for a form to show beside it.
    pub fields: Vec<(String, String)>,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn new(kind: Kind, code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            code: code.into(),
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// The same error, naming each invalid field.
    pub fn with_fields(mut self, fields: Vec<(String, String)>) -> Self {
        self.fields = fields;
        self
    }

    /// 400-like: `code` names the rule (`bad_request`, `invalid_spec`, `forbidden_destination`).
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, "not_found", message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }

    /// The files of a job that retention collected.
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(Kind::Gone, "collected", message)
    }

    pub fn over_quota(message: impl Into<String>) -> Self {
        Self::new(Kind::OverQuota, "over_quota", message)
    }

    /// A failure of the server itself: `StorageFull` when the disk (or SQLite's) is full.
    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        let e: anyhow::Error = e.into();
        if is_disk_full(&e) {
            return Self::new(
                Kind::StorageFull,
                "insufficient_storage",
                format!("the server's disk is full; try again later ({e:#})"),
            );
        }
        Self::new(Kind::Internal, "internal", format!("{e:#}"))
    }
}

/// Whether an error comes from a full disk: the store's `Full`, SQLite's SQLITE_FULL or
/// ENOSPC/EDQUOT anywhere in its chain.
pub fn is_disk_full(e: &anyhow::Error) -> bool {
    use crate::server::store::StoreError;
    e.chain().any(|c| {
        if let Some(s) = c.downcast_ref::<StoreError>() {
            return matches!(s, StoreError::Full(_));
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
