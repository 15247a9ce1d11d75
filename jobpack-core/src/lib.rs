//! # jobpack-core
//!
//! Turns a job description — code (a git repository at an exact commit), data (URLs, optionally
//! pinned by sha256) and a command — into a byte-reproducible `.tar.gz` that `docker build`
//! accepts as its context: `Dockerfile`, `run.sh`, `code/`, `data/` and a `jobpack.json`
//! manifest at the top level. Same spec in, same bytes out, on any machine.
//!
//! It is a library: it never prints, never exits, and knows nothing of HTTP. The `jobpack` binary
//! (crate `jobpack-server`) and the HTTP service are thin layers over it.
//!
//! ```no_run
//! use jobpack_core::{JobSpec, Packager, PackagerConfig};
//!
//! # async fn demo() -> Result<(), jobpack_core::Error> {
//! let spec = JobSpec::from_json(r#"{
//!     "git_url": "https://github.com/octocat/Hello-World",
//!     "commit_hash": "7fd1a60b01f91b314f59955a4e4d4e80d8edf11d",
//!     "data": [{"url": "https://example.org/hw_200.csv"}],
//!     "command": "python main.py"
//! }"#)?;
//! let packager = Packager::new(PackagerConfig::default())?;
//! let artifact = packager.pack_to(&spec, "job.tar.gz".as_ref()).await?;
//! println!("{} sha256:{} commit {:?}", artifact.path.display(), artifact.sha256, artifact.commit);
//! # Ok(()) }
//! ```
//!
//! The pipeline, one module per stage: [`spec`] (validate) → [`source::git`] (fetch the commit)
//! ‖ [`fetch`] (download data) → [`render`] (templates, quoting) → [`manifest`] → [`archive`]
//! (deterministic tar + gzip), tied together by [`Packager`]. Running is [`exec`]: the
//! [`exec::Executor`] trait and the Linux sandbox behind [`exec::LocalExecutor`]. What was packed
//! is stated, signed, in [`attest`] (in-toto provenance in DSSE envelopes).

pub mod archive;
mod artifact_cache;
pub mod attest;
pub mod container;
pub mod egress;
mod error;
pub mod exec;
pub mod fetch;
mod io_error;
pub mod manifest;
mod pack;
pub mod progress;
pub mod render;
pub mod rootfs;
pub mod runtime;
pub mod source;
pub mod spec;
pub mod status;
pub mod tree;
pub mod workflow;

pub use archive::{
    ArchiveError, EntryKind, FileEntry, TreeArchiveError, UnpackError, UnpackLimits,
};
pub use error::{Error, IoError, Result};
pub use fetch::{DownloadOptions, FetchError};
pub use manifest::Manifest;
pub use pack::{Artifact, PackInputs, Packager, PackagerConfig, Prepared, unpack_job};
pub use progress::{Progress, ProgressFn, Stage};
pub use render::RenderError;
pub use runtime::{Runtime, RuntimeError, RuntimeKind};
pub use source::git::GitError;
pub use spec::{Command, DataSpec, Job, JobSpec, SpecError};
pub use status::JobStatus;
pub use workflow::{Workflow, WorkflowError};
