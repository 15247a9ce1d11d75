//! The crate's error type: one enum that the stage errors roll up into, so a caller can match on
//! what went wrong (bad spec, git, download, template, archive) and show one clear line.

use std::path::PathBuf;

pub use crate::archive::ArchiveError;
pub use crate::fetch::FetchError;
pub use crate::render::RenderError;
pub use crate::runtime::RuntimeError;
pub use crate::source::git::GitError;
pub use crate::spec::SpecError;

/// Everything that can go wrong while packing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A marker file of the code (apt.txt, ...) cannot be used, or the runtime the spec asks
    /// for does not match the code.
    #[error("runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// An artifact could not be unpacked into its job directory (a refused entry, a limit, I/O).
    #[error(transparent)]
    Unpack(#[from] crate::archive::UnpackError),
    /// The spec is valid but asks for something this packager's policy forbids.
    #[error("{0}")]
    Policy(String),
    /// A local file system operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A worker task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Shorthand for the crate's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
