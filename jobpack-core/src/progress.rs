//! Progress events a [`crate::Packager`] emits while it works, for callers that want to show them.
//!
//! Events are plain data; the library never draws anything. The CLI turns them into progress bars
//! on a terminal, the server may turn them into job status updates.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// Bytes one pack received over the network: git transfers and data downloads (a cached
/// repository or data file adds nothing); and how long fetching and archiving took.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct PackStats {
    pub git_bytes: u64,
    pub data_bytes: u64,
    /// The git checkout and the downloads (at the same time), in seconds.
    pub fetch_secs: f64,
    /// Writing the `.tar.gz`, in seconds.
    pub archive_secs: f64,
}

#[derive(Default)]
struct Tally {
    git_last: u64,
    downloads: HashMap<usize, u64>,
    fetched: PackStats,
}

/// Passes every event on to `inner`, and counts the bytes its git transfer and download events
/// report: each counter is cumulative within one transfer, and one that goes down started anew
/// (the full fetch after a refused shallow one, a submodule, a retried download).
pub(crate) fn counting(inner: ProgressFn) -> (ProgressFn, impl Fn() -> PackStats) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let grow = |last: &mut u64, now: u64| {
        let added = if now < *last { now } else { now - *last };
        *last = now;
        added
    };
    let t = tally.clone();
    let f: ProgressFn = Arc::new(move |p: Progress| {
        if let Ok(mut t) = t.lock() {
            let t = &mut *t;
            match &p {
                Progress::GitTransfer { received_bytes, .. } => {
                    t.fetched.git_bytes += grow(&mut t.git_last, *received_bytes as u64);
                }
                Progress::Download {
                    index, downloaded, ..
                } => {
                    let last = t.downloads.entry(*index).or_default();
                    t.fetched.data_bytes += grow(last, *downloaded);
                }
                _ => {}
            }
        }
        inner(p);
    });
    let read = move || tally.lock().map(|t| t.fetched).unwrap_or_default();
    (f, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_adds_each_transfer_once_and_restarts_when_a_counter_goes_down() {
        let seen = Arc::new(Mutex::new(0usize));
        let s = seen.clone();
        let (f, read) = counting(Arc::new(move |_| *s.lock().unwrap() += 1));
        let git = |b| Progress::GitTransfer {
            received_objects: 0,
            total_objects: 0,
            received_bytes: b,
        };
        let dl = |index, downloaded| Progress::Download {
            index,
            path: "x".into(),
            downloaded,
            total: None,
        };
        for p in [
            git(100),
            git(250),
            git(40),
            git(90),
            dl(0, 10),
            dl(1, 5),
            dl(0, 30),
            dl(0, 7),
        ] {
            f(p);
        }
        f(Progress::Stage { stage: Stage::Done });
        // git: 250 (first fetch) + 90 (second); data: 30 + 7 (a retry) for #0, 5 for #1.
        let got = read();
        assert_eq!((got.git_bytes, got.data_bytes), (340, 42));
        assert_eq!(*seen.lock().unwrap(), 9, "every event is passed on");
    }
}
