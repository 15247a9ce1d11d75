//! Retention and garbage collection: ended jobs' files (working directory, log, artifact) go
//! once they are older than `retain`, and/or, oldest first, while the data directory uses more
//! than `max_data_bytes`. A pinned job is never collected; an active one never touched. The
//! row stays, with `collected_at`, so history survives while bytes go.
//!
//! One job at a time, in an order a crash cannot break: its directories are renamed into
//! `trash/` (atomic), then the row is marked collected, then the trash is removed. A later run
//! first finishes what a killed one left in `trash/` (marks those jobs, removes their files), so
//! a read never finds a job half there: its files are all present, or it answers 410.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::server::store::{Store, now};

/// What retention keeps. Neither set: nothing is collected.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// Ended jobs older than this lose their files.
    pub retain: Option<Duration>,
    /// The most the data directory may use; over it, the longest-ended jobs go first.
    pub max_data_bytes: Option<u64>,
}

impl Retention {
    pub fn is_set(&self) -> bool {
        self.retain.is_some() || self.max_data_bytes.is_some()
    }
}

/// Where jobs' files are: the data directory, and the shared directory jobs work in (a cluster's)
/// when it is another.
#[derive(Debug, Clone)]
pub struct Roots {
    pub data_dir: PathBuf,
    pub work_root: PathBuf,
}

impl Roots {
    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.data_dir.as_path()];
        if self.work_root != self.data_dir {
            v.push(self.work_root.as_path());
        }
        v
    }
}

/// One job whose files went (or would, in a dry run).
#[derive(Debug, Clone, Serialize)]
pub struct CollectedJob {
    pub job_id: String,
    /// Disk its files used.
    pub bytes: u64,
    /// `age` (older than the retention) or `disk` (over the budget).
    pub reason: &'static str,
}

/// What a collection did.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub dry_run: bool,
    pub collected: Vec<CollectedJob>,
    pub freed_bytes: u64,
    /// What the data directory (and shared directory) used before.
    pub used_bytes: u64,
    /// Jobs a killed collection had left in `trash/`, finished now.
    pub recovered: usize,
}

/// What the last collection in this process measured, and what all of them freed (for
/// `/metrics`).
pub static USED_BYTES: AtomicU64 = AtomicU64::new(0);
pub static COLLECTED_BYTES: AtomicU64 = AtomicU64::new(0);

/// A job that just ended may still be writing its last files: never collected this soon.
const SETTLE: f64 = 2.0;

/// Collects what `policy` says may go; `busy(id)` says a job still has a task here (skipped).
/// Blocking (disk walks and removals): call it off the async threads.
pub fn collect(
    store: &Store,
    roots: &Roots,
    policy: &Retention,
    dry_run: bool,
    busy: &dyn Fn(&str) -> bool,
) -> anyhow::Result<GcReport> {
    let recovered = if dry_run { 0 } else { recover(store, roots)? };
    let used_bytes: u64 = roots.all().iter().map(|r| disk_usage(r)).sum();
    let mut report = GcReport {
        dry_run,
        collected: Vec::new(),
        freed_bytes: 0,
        used_bytes,
        recovered,
    };
    if !policy.is_set() {
        USED_BYTES.store(used_bytes, Ordering::Relaxed);
        return Ok(report);
    }
    let t = now();
    let old_before = policy.retain.map(|d| t - d.as_secs_f64());
    let mut used = used_bytes;
    for r in store.collectable(t - SETTLE)? {
        if busy(&r.id) {
            continue;
        }
        let ended = r.finished_at.unwrap_or(r.updated_at);
        let reason = if old_before.is_some_and(|b| ended < b) {
            "age"
        } else if policy.max_data_bytes.is_some_and(|max| used > max) {
            "disk"
        } else {
            // Oldest first: the rest are younger, and the budget is met.
            break;
        };
        let dirs = job_dirs(roots, &r.id);
        let bytes: u64 = dirs.iter().map(|d| job_usage(d)).sum();
        if !dry_run {
            remove_job_files(store, roots, &r.id)?;
        }
        used = used.saturating_sub(bytes);
        report.freed_bytes += bytes;
        report.collected.push(CollectedJob {
            job_id: r.id,
            bytes,
            reason,
        });
    }
    if !dry_run {
        USED_BYTES.store(used, Ordering::Relaxed);
        COLLECTED_BYTES.fetch_add(report.freed_bytes, Ordering::Relaxed);
    }
    Ok(report)
}

fn job_dirs(roots: &Roots, id: &str) -> Vec<PathBuf> {
    roots
        .all()
        .iter()
        .map(|r| r.join("jobs").join(id))
        .collect()
}

/// Moves a job's directories into `trash/`, marks it collected, then removes the trash.
fn remove_job_files(store: &Store, roots: &Roots, id: &str) -> anyhow::Result<()> {
    for root in roots.all() {
        let (from, trash) = (root.join("jobs").join(id), root.join("trash"));
        std::fs::create_dir_all(&trash)?;
        let to = trash.join(id);
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A killed run left one there already: the older copy goes first.
            Err(_) if to.exists() => {
                std::fs::remove_dir_all(&to)?;
                std::fs::rename(&from, &to)?;
            }
            Err(e) => return Err(anyhow::anyhow!("cannot move {}: {e}", from.display())),
        }
    }
    store.set_collected(id)?;
    for root in roots.all() {
        remove_all(&root.join("trash").join(id))?;
    }
    Ok(())
}

/// Finishes what a killed collection left in `trash/`: each job there is marked collected and
/// its files removed. Returns how many jobs that was.
fn recover(store: &Store, roots: &Roots) -> anyhow::Result<usize> {
    let mut ids = std::collections::BTreeSet::new();
    for root in roots.all() {
        let trash = root.join("trash");
        let entries = match std::fs::read_dir(&trash) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", trash.display())),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Job ids only; anything else there is not ours to remove.
            if uuid::Uuid::parse_str(&name).is_ok() {
                ids.insert(name);
            }
        }
    }
    for id in &ids {
        store.set_collected(id)?;
        for root in roots.all() {
            remove_all(&root.join("trash").join(id))?;
        }
    }
    Ok(ids.len())
}

fn remove_all(p: &Path) -> std::io::Result<()> {
    // std's remove_dir_all does not follow symbolic links a job left in its directory.
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The disk a directory uses (allocated blocks), measured through [`jobpack_core::tree::Tree`]:
/// relative to open directory handles, never following a link, so a running job that swaps a
/// directory of its tree for a link to elsewhere cannot make other files count as its own. The
/// jobs under `jobs/` are measured one by one, so one that cannot be (nested past the tree's
/// depth limit) is left out and said, not the whole total lost.
pub fn disk_usage(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(root) else {
        return 0;
    };
    let mut total = 0u64;
    for e in entries.flatten() {
        // The root's own entries are the server's (database, jobs/, trash/, ...).
        let (path, meta) = match e.metadata() {
            Ok(m) => (e.path(), m),
            Err(_) => continue,
        };
        let bytes = if meta.is_dir() && e.file_name() == "jobs" {
            std::fs::read_dir(&path)
                .map(|jobs| jobs.flatten().map(|j| job_usage(&j.path())).sum())
                .unwrap_or(0)
        } else if meta.is_dir() {
            job_usage(&path)
        } else {
            meta.blocks().saturating_mul(512)
        };
        total = total.saturating_add(bytes);
    }
    total
}

/// The disk one job's directory uses ([`disk_usage`]'s way, for a single tree).
fn job_usage(dir: &Path) -> u64 {
    match jobpack_core::tree::Tree::open(dir).and_then(|t| t.usage(u64::MAX, u64::MAX)) {
        Ok(u) => u.bytes,
        Err(jobpack_core::tree::TreeError::NotFound { .. }) => 0,
        Err(e) => {
            tracing::warn!("retention: cannot measure {}: {e}", dir.display());
            0
        }
    }
}

impl Roots {
    /// The runner's data and work directories.
    pub fn of(runner: &crate::server::scheduler::queue::Runner) -> Roots {
        Roots {
            data_dir: runner.data_dir.clone(),
            work_root: runner.work_root.clone(),
        }
    }
}

/// Runs the collector every `interval` (the first time at once) until the task is dropped,
/// skipping jobs that still have a task here; prints what each run freed.
pub fn spawn_periodic(
    runner: std::sync::Arc<crate::server::scheduler::queue::Runner>,
    policy: Retention,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (r, p) = (runner.clone(), policy.clone());
            let done = tokio::task::spawn_blocking(move || {
                collect(&r.store, &Roots::of(&r), &p, false, &|id| r.is_live(id))
            })
            .await;
            match done {
                Ok(Ok(rep)) if !rep.collected.is_empty() || rep.recovered > 0 => tracing::info!(
                    "retention: removed the files of {} jobs ({} bytes){}",
                    rep.collected.len(),
                    rep.freed_bytes,
                    if rep.recovered > 0 {
                        format!(
                            ", and finished {} left by an interrupted run",
                            rep.recovered
                        )
                    } else {
                        String::new()
                    }
                ),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!("retention: {e:#}"),
                Err(e) => tracing::error!("retention: the collector failed: {e}"),
            }
            tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
        }
    })
}
