//! The crate's error type: one enum that the stage errors roll up into, so a caller can match on
//! what went wrong (bad spec, git, download, template, archive) and show one clear line.

pub use crate::archive::ArchiveError;
pub use crate::fetch::FetchError;
pub use crate::io_error::IoError;
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
    /// The spec's `runtime_fs` is not installed, not the pinned one, or the store is damaged.
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs::RootfsError),
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
