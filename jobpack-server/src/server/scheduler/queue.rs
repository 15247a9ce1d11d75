//! The queue: every accepted job gets a task that waits for one of `max_concurrent` slots, then
//! goes through `pipeline.rs` (pack with `jobpack-core`'s `Packager`, unpack, run with the
//! executor), recording each state change in the store. No packing or sandbox logic lives here:
//! it only sequences the library's calls and keeps what the API needs (cancel switches, live
//! logs).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobpack_core::exec::{Executor, Limits, LogStream, NetworkPolicy, RunHandle};
use jobpack_core::{JobSpec, Packager};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::server::store::documents::Doc;
use crate::server::store::{Finish, JobRow, JobStatus, Store, is_final};

/// What a job asks for, as stored (`request_json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    pub spec: JobSpec,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub network: NetworkPolicy,
    pub run: bool,
    /// The names of the job's secrets, each with the value `***`: the values are kept apart
    /// (`Store::secrets`) and only until the job ends.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Higher runs first among the jobs waiting in its queue (default 0; FIFO among equals).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,
    /// The named queue it waits in (`None`: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Free JSON the submitter attached, kept and returned as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// A shared host directory the job runs in (under one an admin allowed): bound read-write
    /// at the same path, and the command starts there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// When the job starts (seconds since the epoch): `scheduled` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<f64>,
    /// `working_dir` as the allowed root it is under and the path beneath it (for the mount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_dir: Option<jobpack_core::exec::SharedDir>,
    /// The command's standard input, as text: written to the job's `upload/stdin` when it is
    /// stored (as an uploaded `stdin` part is), never into its row. Packed as the artifact's
    /// `stdin`.
    #[serde(default, skip_serializing)]
    pub stdin: Option<String>,
    /// Run again from its artifact when it ends in one of `on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Answer from an earlier completed job's results when its artifact, runtime, limits and
    /// network are the same (never for a job with secrets).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
}

/// `retry: {max_attempts, backoff_secs, on}`: a job that ends in one of `on` runs again from its
/// artifact (never packed again), up to `max_attempts` runs in all, waiting `backoff_secs`
/// before the second, twice that before the third, and so on (an hour at most). A cancel stops
/// it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff_secs: f64,
    #[serde(default = "RetryPolicy::default_on")]
    pub on: Vec<JobStatus>,
}

impl RetryPolicy {
    /// The statuses a retry may follow.
    pub const RETRYABLE: &[JobStatus] = &[
        JobStatus::Failed,
        JobStatus::TimedOut,
        JobStatus::OomKilled,
        JobStatus::LimitExceeded,
    ];
    pub const MAX_ATTEMPTS: u32 = 20;

    fn default_on() -> Vec<JobStatus> {
        vec![JobStatus::Failed, JobStatus::TimedOut, JobStatus::OomKilled]
    }

    /// Checks the numbers and statuses.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=Self::MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(format!(
                "retry.max_attempts: from 1 to {}, got {}",
                Self::MAX_ATTEMPTS,
                self.max_attempts
            ));
        }
        if !(self.backoff_secs.is_finite() && (0.0..=3600.0).contains(&self.backoff_secs)) {
            return Err("retry.backoff_secs: from 0 to 3600".into());
        }
        if let Some(s) = self.on.iter().find(|s| !Self::RETRYABLE.contains(s)) {
            return Err(format!(
                "retry.on: {s} cannot be retried (failed, timed_out, oom_killed, limit_exceeded)"
            ));
        }
        Ok(())
    }

    /// The wait before run number `next` (2, 3, ...).
    pub fn delay(&self, next: u32) -> std::time::Duration {
        let f = 2f64.powi(next.saturating_sub(2).min(30) as i32);
        std::time::Duration::from_secs_f64((self.backoff_secs * f).min(3600.0))
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// A job that has a task: how to stop it and, once it runs, its log.
pub(crate) struct Live {
    pub(crate) cancel: watch::Sender<bool>,
    pub(crate) log: Option<LogStream>,
    /// The state it was last recorded in, and when (the log's stage durations).
    pub(crate) stage: (String, std::time::Instant),
    /// When its task began (the metrics' total duration).
    pub(crate) born: std::time::Instant,
}

/// How many jobs run at once (in all, and per named queue), and how long a cancelled one gets.
pub struct RunnerOptions {
    pub max_concurrent: usize,
    /// Named queues and their own concurrency.
    pub queues: BTreeMap<String, usize>,
    /// Whether accepted jobs run in this process; `false`: `jobpack worker` processes claim
    /// them from the store.
    pub inline: bool,
    /// Between SIGTERM and SIGKILL when a job is cancelled.
    pub grace: Duration,
    /// Signs each artifact's provenance.
    pub signing_key: Arc<jobpack_core::attest::Key>,
    /// How running jobs are sampled.
    pub usage: super::usage::UsageOptions,
}

pub struct Runner {
    pub store: Store,
    pub(crate) packager: Packager,
    pub(crate) executor: Arc<dyn Executor>,
    pub(crate) data_dir: PathBuf,
    /// Where job working directories go: the data directory, or a cluster's shared directory.
    pub(crate) work_root: PathBuf,
    pub(crate) slots: Arc<super::slots::Slots>,
    pub(crate) live: Mutex<HashMap<String, Live>>,
    pub(crate) waiting: AtomicUsize,
    pub(crate) running: AtomicUsize,
    /// Set at shutdown: no job starts a new stage after this.
    pub(crate) closing: std::sync::atomic::AtomicBool,
    pub(crate) grace: Duration,
    /// Whether accepted jobs run here (else a worker process claims them).
    pub(crate) inline: bool,
    /// Held while a workflow's waiting jobs are being decided (`workflows.rs`).
    pub(crate) workflow_lock: Mutex<()>,
    /// Signs each artifact's provenance (the server's key, in its data directory).
    pub signing_key: Arc<jobpack_core::attest::Key>,
    /// The runtime store (`None` if it cannot be opened: a job naming a runtime then fails).
    pub runtimes: Option<jobpack_core::rootfs::Store>,
    /// The runtime (digest) of each job running on one now: one in use is never removed.
    pub(crate) runtimes_in_use: Mutex<HashMap<String, String>>,
    /// Jobs ended since the allocator last gave memory back ([`Runner::spawn_memory_trim`]).
    pub(crate) trim_due: std::sync::atomic::AtomicBool,
    pub(crate) usage: super::usage::UsageOptions,
}

impl Runner {
    pub fn new(
        store: Store,
        packager: Packager,
        executor: Arc<dyn Executor>,
        data_dir: PathBuf,
        work_root: Option<PathBuf>,
        opts: RunnerOptions,
    ) -> Arc<Runner> {
        let RunnerOptions {
            max_concurrent,
            queues,
            inline,
            grace,
            signing_key,
            usage,
        } = opts;
        let runtimes = packager.config().runtimes.as_ref().and_then(|dir| {
            jobpack_core::rootfs::Store::open(dir)
                .map_err(|e| tracing::warn!("the runtime store is unusable: {e}"))
                .ok()
        });
        Arc::new(Runner {
            store,
            packager,
            executor,
            work_root: work_root.unwrap_or_else(|| data_dir.clone()),
            data_dir,
            slots: super::slots::Slots::new(max_concurrent, &queues),
            live: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            grace,
            inline,
            workflow_lock: Mutex::new(()),
            signing_key,
            runtimes,
            runtimes_in_use: Mutex::new(HashMap::new()),
            trim_due: std::sync::atomic::AtomicBool::new(false),
            usage,
        })
    }

    /// The directory of a job's files.
    pub fn job_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("jobs").join(id)
    }

    pub fn artifact_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("artifact.tar.gz")
    }

    /// A job's signed statement (a DSSE envelope, JSON): the provenance, or the receipt of its
    /// last run. From the store; a job packed by an older server has it as a file beside its
    /// artifact instead. `NotFound` if it has none (not packed, or not run, yet).
    pub fn document(&self, id: &str, kind: Doc) -> std::io::Result<Vec<u8>> {
        match self.store.document(id, kind) {
            Ok(Some(body)) => Ok(body),
            Ok(None) => std::fs::read(self.legacy_document_path(id, kind)),
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Whether the job has `kind` (see [`Runner::document`]).
    pub fn has_document(&self, id: &str, kind: Doc) -> bool {
        self.store.has_document(id, kind).unwrap_or(false)
            || self.legacy_document_path(id, kind).exists()
    }

    /// Where a server before migration 0015 wrote `kind` of job `id`.
    fn legacy_document_path(&self, id: &str, kind: Doc) -> PathBuf {
        self.job_dir(id).join(match kind {
            Doc::Provenance => "provenance.intoto.json",
            Doc::Receipt => "receipt.intoto.json",
        })
    }

    /// The packed manifest (`jobpack.json` of the artifact), as JSON.
    pub fn manifest_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("manifest.json")
    }

    pub fn work_dir(&self, id: &str) -> PathBuf {
        self.work_root.join("jobs").join(id).join("work")
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("job.log")
    }

    /// The log of an earlier attempt (1, 2, ...) of a job that was retried.
    pub fn attempt_log_path(&self, id: &str, n: i64) -> PathBuf {
        self.job_dir(id).join(format!("attempt-{n}.log"))
    }

    /// Jobs waiting for a slot.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Jobs that have a task here (waiting for a slot, packing or running).
    pub fn task_count(&self) -> usize {
        self.live.lock().map(|l| l.len()).unwrap_or(0)
    }

    pub fn running_count(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }

    /// After a restart: jobs that were running are failed (their process is gone) except a
    /// workflow's, which run again (the workflow resumes); jobs that were queued, packing or
    /// packed-to-run are started again, and workflows decide their waiting jobs.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        for id in self.store.ids_with_status(JobStatus::Running)? {
            let Some(row) = self.store.get(&id)? else {
                continue;
            };
            // A cluster job outlives the server: follow it again.
            if let Ok(sub) = serde_json::from_str::<Submission>(&row.request_json) {
                let req = self.run_request(&id, &sub);
                match self.executor.attach(req).await {
                    Ok(Some(handle)) => {
                        tracing::info!(job_id = %id, "attached again to its run");
                        self.task(id.clone(), Some((Arc::from(handle), row)));
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(job_id = %id, "cannot attach to its run: {e}"),
                }
            }
            // Whatever the dead server's sandbox left running goes first.
            let reaped = self.executor.reap(&id);
            if let Err(e) = reaped {
                tracing::warn!(job_id = %id, "could not clean up what the previous run left: {e}");
            }
            if row.workflow_id.is_some() {
                self.store.set_status(&id, JobStatus::Queued)?;
            } else {
                self.store.finish(
                    &id,
                    &Finish::early(
                        JobStatus::Failed,
                        "server restarted",
                        Some("server_restarted"),
                    ),
                )?;
            }
        }
        // All ids first: a job spawned here moves on to `packing` at once and must not be
        // found again by a later status's query (it would get a second task).
        let mut resume = Vec::new();
        for status in [
            JobStatus::Scheduled,
            JobStatus::Queued,
            JobStatus::Packing,
            JobStatus::Packed,
        ] {
            for id in self.store.ids_with_status(status)? {
                resume.push((status, id));
            }
        }
        for (status, id) in resume {
            let Some(job) = self.store.get(&id)? else {
                continue;
            };
            if status == JobStatus::Packed && !job.run {
                continue;
            }
            // A pack cut short leaves its temporary artifact behind; it is never served
            // (no sha256 is recorded for it) and is removed here.
            if let Ok(entries) = std::fs::read_dir(self.job_dir(&id)) {
                for e in entries.flatten() {
                    if e.file_name()
                        .to_string_lossy()
                        .starts_with(".jobpack-artifact-")
                        && let Err(err) = std::fs::remove_file(e.path())
                    {
                        tracing::warn!("cannot remove {}: {err}", e.path().display());
                    }
                }
            }
            if status != JobStatus::Scheduled {
                self.store.set_status(&id, JobStatus::Queued)?;
            }
            self.spawn(id);
        }
        // A job may have ended just before the crash, with its dependants not yet decided.
        for w in self.store.workflows_waiting()? {
            self.advance(&w);
        }
        Ok(())
    }

    /// Starts the task of an accepted (stored, `queued`) job; without an inline worker, a
    /// `jobpack worker` claims it from the store instead.
    pub fn spawn(self: &Arc<Self>, id: String) {
        if self.inline {
            self.task(id, None);
        }
    }

    /// Runs a job this worker process claimed.
    pub fn run_claimed(self: &Arc<Self>, id: String) {
        self.task(id, None);
    }

    /// The task of a job (with its cancel switch): from its queue slot on, or, for a run an
    /// executor already has (found again after a restart), from its supervision on.
    fn task(self: &Arc<Self>, id: String, attached: Option<(Arc<dyn RunHandle>, JobRow)>) {
        let (tx, rx) = watch::channel(false);
        if let Ok(mut live) = self.live.lock() {
            live.insert(
                id.clone(),
                Live {
                    cancel: tx,
                    log: None,
                    // Its task begins with the job waiting (or, found again, running).
                    stage: (
                        if attached.is_some() {
                            "running"
                        } else {
                            "queued"
                        }
                        .to_owned(),
                        std::time::Instant::now(),
                    ),
                    born: std::time::Instant::now(),
                },
            );
        }
        let me = self.clone();
        // Every line and span of its way through the runner is in it (a child of the request
        // that submitted it, if one did).
        let span = tracing::info_span!("job", job_id = %id);
        let run = async move {
            match attached {
                None => me.process(&id, rx).await,
                Some((handle, row)) => me.supervise(&id, handle, &row, rx).await,
            }
            if let Ok(mut live) = me.live.lock() {
                live.remove(&id);
            }
            me.trim_due.store(true, Ordering::Relaxed);
            // The end of a workflow's job may let others start (or skip them). At shutdown the
            // workflow is left as it is and resumes at the next start.
            if !me.closing.load(Ordering::SeqCst)
                && let Ok(Some(row)) = me.store.get(&id)
                && let Some(w) = row.workflow_id
            {
                me.advance(&w);
            }
        };
        tokio::spawn(tracing::Instrument::instrument(run, span));
    }

    /// Asks a job to stop. Returns false if it has no task (it is final).
    pub fn cancel(&self, id: &str) -> bool {
        match self.live.lock() {
            Ok(live) => live
                .get(id)
                .map(|l| l.cancel.send(true).is_ok())
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// On shutdown: stops the jobs that are running (they end `stopped`) and waits for them, at
    /// most `limit`. Queued and packing jobs are left as they are and resume at the next start.
    pub async fn shutdown(&self, limit: Duration) {
        self.closing.store(true, Ordering::SeqCst);
        let ids: Vec<String> = self
            .live
            .lock()
            .map(|l| l.keys().cloned().collect())
            .unwrap_or_default();
        for id in ids {
            if matches!(self.store.get(&id), Ok(Some(r)) if r.status == JobStatus::Running) {
                self.cancel(&id);
            }
        }
        let deadline = tokio::time::Instant::now() + limit;
        while self.running_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server is shutting down (long downloads stop).
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// Whether the job still has a task.
    pub fn is_live(&self, id: &str) -> bool {
        self.live
            .lock()
            .map(|l| l.contains_key(id))
            .unwrap_or(false)
    }

    /// The job's log: live while it runs, from the file afterwards, `None` before it ran.
    pub fn log(&self, id: &str) -> Option<LogStream> {
        if let Ok(live) = self.live.lock()
            && let Some(l) = live.get(id)
        {
            // A job with a task reads its live log, and none before its run has started: the
            // file may already exist then, but reading it as finished would end the stream early.
            return l.log.clone();
        }
        let path = self.log_path(id);
        path.exists().then(|| LogStream::finished(path))
    }

    pub(crate) async fn fail(&self, id: &str, code: &str, reason: &str) {
        self.record(id, JobStatus::Failed.as_str(), || {
            self.store
                .finish(id, &Finish::early(JobStatus::Failed, reason, Some(code)))
        })
        .await;
    }

    /// Runs a state change until the store has it: a full disk or a locked database delays it,
    /// never drops it (the job's row, its quota slot and its streams all wait on it). Failures
    /// are reported on stderr, the first and then every minute. At shutdown it gives up after
    /// a few tries; the next start then recovers the job from the state that was recorded.
    pub(crate) async fn record(
        &self,
        id: &str,
        what: &str,
        mut f: impl FnMut() -> crate::server::store::StoreResult<()>,
    ) {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0u32;
        let mut last_report: Option<tokio::time::Instant> = None;
        loop {
            match f() {
                Ok(()) => {
                    if tries > 0 {
                        tracing::info!(job_id = %id, "{what} recorded after {tries} failed tries");
                    }
                    self.log_state(id, what);
                    return;
                }
                Err(e) => {
                    tries += 1;
                    if last_report.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        last_report = Some(tokio::time::Instant::now());
                        tracing::warn!(job_id = %id, "cannot record {what} yet (retrying): {e:#}");
                    }
                    if self.closing.load(Ordering::SeqCst) && tries >= 5 {
                        tracing::error!(job_id = %id, "{what} not recorded before shutdown: {e:#}");
                        return;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Between two usage samples of a running job (`None`: not sampled).
    pub fn usage_interval(&self) -> Option<std::time::Duration> {
        self.usage.interval
    }

    /// Removes a job's files.
    pub fn remove_files(&self, id: &str) -> std::io::Result<()> {
        // And whatever the executor keeps of its run (a cluster's run directory).
        if let Err(e) = self.executor.reap(id) {
            tracing::warn!(job_id = %id, "cannot remove what its run left: {e}");
        }
        for dir in [self.job_dir(id), self.work_root.join("jobs").join(id)] {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A job row's final-or-not state, for the API.
pub fn row_is_final(r: &JobRow) -> bool {
    is_final(r.status, r.run)
}

impl Runner {
    /// Every `every`, once no job is in progress and some ended since the last time, hands the
    /// allocator's free memory back to the system (glibc keeps what a burst of jobs freed:
    /// without this the server's RSS stays at its peak). Never on a job's own path.
    pub fn spawn_memory_trim(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let idle = me.live.lock().map(|l| l.is_empty()).unwrap_or(false);
                if idle && me.trim_due.swap(false, Ordering::Relaxed) {
                    give_back_memory();
                }
            }
        })
    }
}

/// Hands the allocator's free memory back to the system.
pub(crate) fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
