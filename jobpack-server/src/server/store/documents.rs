//! A job's signed statements, stored with the state they belong to: the provenance with
//! `packed` ([`Store::set_packed`]), the receipt of its last run with the final state
//! ([`Store::finish`]). One transaction each, so a crash never leaves a job `packed` without its
//! provenance, nor a receipt for a run whose end was not recorded.
//!
//! Why not files beside the artifact (as before migration 0015): each was a temporary file, an
//! `fsync` (on ext4 without a journal, of the file, its inode and its new parent directory) and
//! a rename per job, ~3% of the whole machine's CPU under a load of trivial jobs and most of a
//! millisecond of each job's time; a row costs a page or two in the WAL.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Cached, Store, StoreResult};

/// Which statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Doc {
    /// The artifact's signed provenance (a DSSE envelope, JSON).
    Provenance,
    /// The signed receipt of the job's last run (a DSSE envelope, JSON).
    Receipt,
}

impl Doc {
    pub fn as_str(self) -> &'static str {
        match self {
            Doc::Provenance => "provenance",
            Doc::Receipt => "receipt",
        }
    }
}

/// Stores (or replaces: a retry's run has a receipt of its own) `kind` of job `id`, inside the
/// caller's transaction.
pub(super) fn put(c: &Connection, id: &str, kind: Doc, body: &[u8]) -> rusqlite::Result<()> {
    c.exec_cached(
        "INSERT OR REPLACE INTO job_documents (job_id, kind, body) VALUES (?1, ?2, ?3)",
        params![id, kind.as_str(), body],
    )
    .map(drop)
}

/// Removes every statement of job `id`.
pub(super) fn remove(c: &Connection, id: &str) -> rusqlite::Result<()> {
    c.exec_cached("DELETE FROM job_documents WHERE job_id = ?1", [id])
        .map(drop)
}

impl Store {
    /// `kind` of job `id`, if stored.
    pub fn document(&self, id: &str, kind: Doc) -> StoreResult<Option<Vec<u8>>> {
        self.with(|c| {
            c.row_cached(
                "SELECT body FROM job_documents WHERE job_id = ?1 AND kind = ?2",
                params![id, kind.as_str()],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Whether job `id` has `kind` stored (without reading it).
    pub fn has_document(&self, id: &str, kind: Doc) -> StoreResult<bool> {
        self.with(|c| {
            c.row_cached(
                "SELECT EXISTS (SELECT 1 FROM job_documents WHERE job_id = ?1 AND kind = ?2)",
                params![id, kind.as_str()],
                |r| r.get(0),
            )
        })
    }
}
