//! Progress events a [`crate::Packager`] emits while it works, for callers that want to show them.
//!
//! Events are plain data; the library never draws anything. The CLI turns them into progress bars
//! on a terminal, the server may turn them into job status updates.

use std::sync::Arc;

/// A pipeline stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Fetching the code and downloading data (concurrently).
    Fetching,
    /// Rendering `run.sh` and the `Dockerfile`.
    Rendering,
    /// Writing the `.tar.gz`.
    Archiving,
    /// The artifact is in place.
    Done,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// The pipeline entered a stage.
    Stage { stage: Stage },
    /// Git transfer progress (objects and bytes received so far).
    GitTransfer {
        received_objects: usize,
        total_objects: usize,
        received_bytes: usize,
    },
    /// The commit's tree is being written out.
    Checkout { files: usize },
    /// A data download advanced. `total` is the server's Content-Length, if it sent one.
    Download {
        index: usize,
        path: String,
        downloaded: u64,
        total: Option<u64>,
    },
    /// The archive writer advanced (uncompressed bytes written so far, out of `total`).
    Archive { written: u64, total: u64 },
    /// The artifact came from the artifact cache (`hit`), or was packed and kept there (`note`
    /// says why it could not be).
    ArtifactCache { hit: bool, note: Option<String> },
}

/// Where progress events go. Called from several threads; must be cheap.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A sink that drops every event.
pub fn ignore() -> ProgressFn {
    Arc::new(|_| {})
}
