//! The one I/O error every stage wraps: what was being done, to which path, and why. The
//! ground floor of the crate's errors (the stages' error types and [`crate::Error`] build on it).

use std::path::PathBuf;

/// A file system operation that failed: what was being done, to which path, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Attaches an action and a path to an I/O error; `?` turns it into any module error with an
/// `Io(#[from] IoError)` variant: `fs::create_dir(&p).map_err(io_err("create", &p))?`.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> IoError {
    let path = path.into();
    move |source| IoError {
        action,
        path,
        source,
    }
}
