//! One job's way through the runner, once it has a slot: pack (git and data), write the
//! manifest, record `packed`, unpack into the working directory, start the executor, stream the
//! log, and record the outcome. Every state change goes through [`Runner::record`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jobpack_core::exec::{Mount, RunHandle, RunRequest, RunStatus};
use tokio::sync::watch;

use crate::server::scheduler::queue::{Runner, Submission};
use crate::server::scheduler::usage::Sampler;
use crate::server::store::{Finish, JobRow, JobStatus};

impl Runner {
    pub(crate) async fn process(&self, id: &str, mut cancel: watch::Receiver<bool>) {
        let me = self;
        let stopped = move |_: &Self| async move {
            me.record(id, JobStatus::Stopped.as_str(), || {
                me.store
                    .finish(id, &Finish::early(JobStatus::Stopped, "cancelled", None))
            })
            .await;
        };
        let Ok(Some(row)) = self.store.get(id) else {
            return;
        };
        if !matches!(row.status, JobStatus::Queued | JobStatus::Scheduled) {
            // Cancelled (or recovered) before its task began.
            return;
        }
        let sub: Submission = match serde_json::from_str(&row.request_json) {
            Ok(s) => s,
            Err(e) => {
                return self
                    .fail(
                        id,
                        "bad_request",
                        &format!("stored request unreadable: {e}"),
                    )
                    .await;
            }
        };
        // A scheduled job waits for its time first (a cancel ends it; a restart resumes it).
        if let Some(at) = sub.scheduled_at {
            let wait = at - crate::server::store::now();
            if wait > 0.0 {
                if row.status != JobStatus::Scheduled {
                    self.record(id, JobStatus::Scheduled.as_str(), || {
                        self.store.set_status(id, JobStatus::Scheduled)
                    })
                    .await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs_f64(wait)) => {}
                    _ = cancelled(&mut cancel) => return stopped(self).await,
                }
                if self.closing.load(Ordering::SeqCst) {
                    return;
                }
            }
            self.record(id, JobStatus::Queued.as_str(), || {
                self.store.set_status(id, JobStatus::Queued)
            })
            .await;
        }
        // Wait for a slot of its queue, in priority order (or a cancel).
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::select! {
            p = self.slots.acquire(sub.queue.as_deref(), sub.priority) => Some(p),
            _ = cancelled(&mut cancel) => None,
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let Some(_permit) = permit else {
            stopped(self).await;
            return;
        };
        if self.closing.load(Ordering::SeqCst) {
            // Left queued: it resumes at the next start.
            return;
        }
        if row.run {
            // What the executor's start would wait for begins now, beside the pack (for the
            // local sandbox, the kernel's cgroup-move wait: a few milliseconds; it helps only a
            // start that follows within about that long). Not awaited.
            let executor = self.executor.clone();
            drop(tokio::task::spawn_blocking(move || executor.warm_up()));
        }
        // A job in a shared working directory starts there (the artifact's run.sh says so).
        let mut spec = sub.spec.clone();
        if let Some(d) = &sub.shared_dir {
            spec.command = in_dir(&d.path(), &spec.command);
        }
        let job = match spec.validate() {
            Ok(j) => j,
            Err(e) => return self.fail(id, "invalid_spec", &e.to_string()).await,
        };

        // Pack, unless this is a retry: that runs the artifact it has again.
        let dir = self.job_dir(id);
        let art = self.artifact_path(id);
        let retrying = self.store.attempt_count(id).unwrap_or(0) > 0 && art.exists();
        if !retrying {
            // Pack.
            self.record(id, JobStatus::Packing.as_str(), || {
                self.store.set_status(id, JobStatus::Packing)
            })
            .await;
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return self
                    .fail(
                        id,
                        "internal",
                        &format!("cannot create {}: {e}", dir.display()),
                    )
                    .await;
            }
            let upload = dir.join("upload");
            let code_dir = upload.join("code");
            let data_dir = upload.join("data");
            let stdin = upload.join(jobpack_core::manifest::STDIN_NAME);
            let inputs = jobpack_core::PackInputs {
                code_dir: code_dir.exists().then_some(code_dir),
                data_dir: data_dir.exists().then_some(data_dir),
                stdin: stdin.exists().then_some(stdin),
            };
            let packed = tokio::select! {
                r = self.packager.pack_job_with(&job, &inputs, Some(&art)) => r,
                _ = cancelled(&mut cancel) => return stopped(self).await,
            };
            let artifact = match packed {
                Ok(a) => a,
                Err(e) => {
                    return self
                        .fail(
                            id,
                            error_code(&e),
                            &format!("{e:#}", e = anyhow::Error::new(e)),
                        )
                        .await;
                }
            };
            let m = crate::server::metrics::get();
            for (kind, n) in [
                ("git", artifact.stats.git_bytes),
                ("data", artifact.stats.data_bytes),
            ] {
                m.fetched_bytes
                    .get_or_create(&crate::server::metrics::KindLabels { kind: kind.into() })
                    .inc_by(n);
            }
            tracing::info!(
                job_id = id,
                artifact_bytes = artifact.size,
                git_bytes = artifact.stats.git_bytes,
                data_bytes = artifact.stats.data_bytes,
                fetch_ms = artifact.stats.fetch_secs * 1e3,
                archive_ms = artifact.stats.archive_secs * 1e3,
                "job packed"
            );
            // The manifest beside the artifact, for the API (the artifact holds the same bytes).
            if let Err(e) = serde_json::to_vec_pretty(&artifact.manifest)
                .map_err(std::io::Error::other)
                .and_then(|b| std::fs::write(self.manifest_path(id), b))
            {
                return self
                    .fail(id, "internal", &format!("cannot save the manifest: {e}"))
                    .await;
            }
            // The signed provenance is stored in the same commit as `packed`.
            let provenance = self
                .packager
                .provenance(&artifact, &self.signing_key, Some(id));
            let provenance = match serde_json::to_vec(&provenance) {
                Ok(b) => b,
                Err(e) => {
                    return self
                        .fail(
                            id,
                            "internal",
                            &format!("cannot encode the provenance: {e}"),
                        )
                        .await;
                }
            };
            self.record(id, JobStatus::Packed.as_str(), || {
                self.store.set_packed(
                    id,
                    &artifact.sha256,
                    artifact.size,
                    artifact.commit.as_deref(),
                    &provenance,
                )
            })
            .await;
        }
        if !sub.run || self.closing.load(Ordering::SeqCst) {
            // Pack-only jobs end here; at shutdown a packed job waits for the next start.
            return;
        }
        if *cancel.borrow() {
            return stopped(self).await;
        }

        if sub.cache && !retrying {
            match self.answer_from_cache(id, &sub).await {
                Ok(true) => return,
                Ok(false) => {}
                // A cache that cannot answer is a miss: the job runs.
                Err(e) => tracing::warn!(job_id = %id, "result cache: {e:#}"),
            }
        }
        let handle = match self.start_run(id, &sub, &row).await {
            Ok(h) => h,
            Err((code, message)) => return self.fail(id, code, &message).await,
        };
        self.supervise(id, handle, &row, cancel).await;
    }

    /// Unpacks the artifact into a fresh working directory and starts the run: the same for the
    /// first run and for each retry. A failure is its error code and message.
    async fn start_run(
        &self,
        id: &str,
        sub: &Submission,
        row: &JobRow,
    ) -> Result<Arc<dyn RunHandle>, (&'static str, String)> {
        let work = self.work_dir(id);
        let began = std::time::Instant::now();
        let unpacked = match std::fs::remove_dir_all(&work) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => jobpack_core::unpack_job(&self.artifact_path(id), &work)
                .await
                .map_err(anyhow::Error::new),
        };
        if let Err(e) = unpacked {
            return Err(("unpack_failed", format!("{e:#}")));
        }
        // The uploaded files are in the artifact and now in the working directory: the upload's
        // own copy goes (one copy of an upload on disk, not three).
        match std::fs::remove_dir_all(self.job_dir(id).join("upload")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(job_id = %id, "cannot remove its upload directory: {e}");
            }
            _ => {}
        }
        let unpack_ms = began.elapsed().as_secs_f64() * 1e3;
        let mut req = self.run_request(id, sub);
        req.rootfs = self.runtime_taken(id)?;
        // Which run this is (1, 2, ... with a retry policy), for the job to see.
        let attempt = self.store.attempt_count(id).unwrap_or(0) + 1;
        req.env
            .insert("JOBPACK_ATTEMPT".into(), attempt.to_string());
        match self.dependency_dirs(row) {
            Ok(deps) => {
                req.mounts = deps
                    .into_iter()
                    .map(|(name, source)| Mount {
                        source,
                        target: format!("code/deps/{name}"),
                        read_only: true,
                    })
                    .collect();
            }
            Err(e) => {
                return Err((
                    "internal",
                    format!("cannot find the work of the jobs it requires: {e:#}"),
                ));
            }
        }
        if !sub.secret_env.is_empty() {
            let stored = self.store.secrets(id);
            match stored.map(|s| s.map(|s| serde_json::from_str::<BTreeMap<String, String>>(&s))) {
                Ok(Some(Ok(secrets))) => req.secret_env = secrets,
                Ok(None) => {
                    return Err((
                        "secrets_lost",
                        "the job's secret_env values are no longer stored; submit it again"
                            .to_owned(),
                    ));
                }
                Ok(Some(Err(e))) => {
                    return Err(("internal", format!("stored secrets unreadable: {e}")));
                }
                Err(e) => {
                    return Err(("internal", format!("cannot read the job's secrets: {e:#}")));
                }
            }
        }
        let began = std::time::Instant::now();
        match self.executor.start(req).await {
            Ok(h) => {
                let start_ms = began.elapsed().as_secs_f64() * 1e3;
                tracing::info!(job_id = id, attempt, unpack_ms, start_ms, "run started");
                Ok(Arc::from(h))
            }
            Err(e) => Err(("run_failed", format!("{:#}", anyhow::Error::new(e)))),
        }
    }

    /// The root file system of the job's artifact (its saved manifest says), `Host` if unknown.
    /// Only that field is decoded: the manifest's file list is skipped, not built.
    pub(crate) fn root_fs(&self, id: &str) -> jobpack_core::manifest::RootFsRecord {
        #[derive(serde::Deserialize)]
        struct RootFsOnly {
            #[serde(default)]
            runtime_fs: jobpack_core::manifest::RootFsRecord,
        }
        std::fs::read(self.manifest_path(id))
            .ok()
            .and_then(|b| serde_json::from_slice::<RootFsOnly>(&b).ok())
            .map(|m| m.runtime_fs)
            .unwrap_or_default()
    }

    /// The tree of the runtime the job's artifact names (the job is in the runtime table until
    /// [`Runner::runtime_released`]), `None` for the host's; an error if it is gone.
    fn runtime_taken(
        &self,
        id: &str,
    ) -> Result<Option<std::path::PathBuf>, (&'static str, String)> {
        use jobpack_core::manifest::RootFsRecord;
        let RootFsRecord::Runtime { name, digest, .. } = self.root_fs(id) else {
            return Ok(None);
        };
        let mut in_use = self
            .runtimes_in_use
            .lock()
            .map_err(|_| ("internal", "the runtime table is poisoned".to_owned()))?;
        let found = self.runtimes.as_ref().and_then(|s| {
            s.get(&name)
                .ok()
                .filter(|rt| rt.digest == digest)
                .map(|rt| s.tree(&rt))
        });
        let Some(tree) = found else {
            return Err((
                "runtime_missing",
                format!("the runtime {name}@{digest} is no longer installed on this server"),
            ));
        };
        in_use.insert(id.to_owned(), digest);
        Ok(Some(tree))
    }

    /// The job's run has ended: it no longer holds its runtime.
    pub(crate) fn runtime_released(&self, id: &str) {
        if let Ok(mut in_use) = self.runtimes_in_use.lock() {
            in_use.remove(id);
        }
    }

    /// The request of a job's run (the same at start and when attaching again).
    pub(crate) fn run_request(&self, id: &str, sub: &Submission) -> RunRequest {
        let mut req = RunRequest::new(self.work_dir(id), self.log_path(id));
        req.run_id = Some(id.to_owned());
        req.limits = sub.limits.clone();
        req.network = sub.network;
        req.shared_dirs.extend(sub.shared_dir.clone());
        req
    }

    /// Waits for a started run to end (cancelling it when asked) and records its outcome; a job
    /// whose `retry` policy asks for it runs again from its artifact after its backoff, each
    /// ended attempt kept ([`Runner::keep_attempt`]).
    pub(crate) async fn supervise(
        &self,
        id: &str,
        mut handle: Arc<dyn RunHandle>,
        row: &JobRow,
        mut cancel: watch::Receiver<bool>,
    ) {
        let sub: Option<Submission> = serde_json::from_str(&row.request_json).ok();
        let mut sampler = Sampler::new(self.usage);
        loop {
            if let Ok(mut live) = self.live.lock()
                && let Some(l) = live.get_mut(id)
            {
                l.log = Some(handle.logs());
            }
            self.record(id, JobStatus::Running.as_str(), || {
                self.store.set_status(id, JobStatus::Running)
            })
            .await;
            self.running.fetch_add(1, Ordering::Relaxed);
            sampler.begin();
            let mut wait = handle.wait();
            let mut stopping = false;
            let mut outcome = loop {
                tokio::select! {
                    o = &mut wait => break o,
                    _ = cancelled(&mut cancel), if !stopping => {
                        handle.cancel(self.grace);
                        stopping = true;
                    }
                    _ = sampler.due() => sampler.take(&self.store, id, &*handle).await,
                }
            };
            outcome.peaks = sampler.end_run();
            crate::server::metrics::get()
                .log_bytes
                .inc_by(outcome.log_bytes);
            tracing::info!(
                job_id = id,
                status = outcome.status.as_str(),
                exit_code = outcome.exit_code,
                wall_secs = outcome.wall_time_secs,
                cpu_secs = outcome.cpu_time_secs,
                peak_memory_bytes = outcome.peak_memory_bytes,
                peak_pids = outcome.peaks.and_then(|p| p.pids),
                log_bytes = outcome.log_bytes,
                "run ended"
            );
            self.running.fetch_sub(1, Ordering::Relaxed);
            self.runtime_released(id);
            if outcome.status == RunStatus::Stopped
                && self.closing.load(Ordering::SeqCst)
                && row.workflow_id.is_some()
            {
                // Stopped by the shutdown, not by a user: a workflow's job runs again at the
                // next start, so the workflow resumes where it was.
                self.record(id, JobStatus::Queued.as_str(), || {
                    self.store.set_status(id, JobStatus::Queued)
                })
                .await;
                return;
            }
            let status: JobStatus = outcome.status.into();
            let outcome_json = serde_json::to_string(&outcome).ok();
            let retry = sub.as_ref().and_then(|s| s.retry.as_ref()).filter(|p| {
                p.on.contains(&status) && !*cancel.borrow() && !self.closing.load(Ordering::SeqCst)
            });
            if let (Some(policy), Some(sub)) = (retry, &sub) {
                let ended = self.store.attempt_count(id).unwrap_or(0) + 1;
                if ended < i64::from(policy.max_attempts) {
                    if let Err(e) = self.keep_attempt(id, ended, &outcome, outcome_json.as_deref())
                    {
                        let m = format!("cannot keep attempt {ended}: {e:#}");
                        return self.fail(id, "internal", &m).await;
                    }
                    self.record(id, JobStatus::Queued.as_str(), || {
                        self.store.set_status(id, JobStatus::Queued)
                    })
                    .await;
                    tokio::select! {
                        _ = tokio::time::sleep(policy.delay(ended as u32 + 1)) => {}
                        _ = cancelled(&mut cancel) => {
                            return self.record(id, JobStatus::Stopped.as_str(), || {
                                self.store.finish(
                                    id,
                                    &Finish::early(JobStatus::Stopped, "cancelled", None),
                                )
                            })
                            .await;
                        }
                    }
                    if self.closing.load(Ordering::SeqCst) {
                        // Left queued: the next start runs the artifact again.
                        return;
                    }
                    handle = match self.start_run(id, sub, row).await {
                        Ok(h) => h,
                        Err((code, message)) => return self.fail(id, code, &message).await,
                    };
                    continue;
                }
            }
            // The signed receipt is stored in the same commit as the final state.
            let receipt = match &sub {
                Some(sub) => self
                    .receipt(id, sub, outcome_json.as_deref())
                    .await
                    .inspect_err(|e| tracing::warn!(job_id = %id, "no receipt: {e:#}"))
                    .ok(),
                None => None,
            };
            let end = Finish {
                status,
                exit_code: outcome.exit_code,
                signal: outcome.signal,
                reason: outcome.reason.as_deref(),
                error_code: None,
                outcome_json: outcome_json.as_deref(),
                cpu_seconds: outcome.cpu_time_secs,
                receipt: receipt.as_deref(),
            };
            self.record(id, outcome.status.as_str(), || self.store.finish(id, &end))
                .await;
            return;
        }
    }
}

/// Resolves when the job's cancel switch is set (never, if its sender is gone without it).
async fn cancelled(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A stable error code for a pack failure.
fn error_code(e: &jobpack_core::Error) -> &'static str {
    use jobpack_core::Error as E;
    match e {
        E::Spec(_) => "invalid_spec",
        E::Git(
            jobpack_core::GitError::UnknownCommit { .. } | jobpack_core::GitError::Ambiguous { .. },
        ) => "unknown_commit",
        E::Git(jobpack_core::GitError::AuthRequired { .. }) => "auth_required",
        E::Git(jobpack_core::GitError::Unreachable { .. }) => "repository_unreachable",
        E::Git(jobpack_core::GitError::Forbidden { .. }) => "forbidden_destination",
        E::Git(_) => "git_failed",
        E::Fetch(jobpack_core::FetchError::HashMismatch { .. }) => "data_hash_mismatch",
        E::Fetch(jobpack_core::FetchError::Forbidden { .. }) => "forbidden_destination",
        E::Fetch(_) => "download_failed",
        E::Policy(_) => "forbidden",
        E::Runtime(_) => "invalid_runtime",
        E::Rootfs(_) => "runtime_unavailable",
        _ => "pack_failed",
    }
}

/// `command`, started in `dir` (a shared working directory): `cd -- DIR && ...`.
pub(crate) fn in_dir(
    dir: &std::path::Path,
    command: &jobpack_core::Command,
) -> jobpack_core::Command {
    let q = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let d = q(&dir.to_string_lossy());
    jobpack_core::Command::Shell(match command {
        jobpack_core::Command::Shell(s) => format!("cd -- {d} && {s}"),
        jobpack_core::Command::Argv(argv) => {
            let args: Vec<String> = argv.iter().map(|a| q(a)).collect();
            format!("cd -- {d} && exec {}", args.join(" "))
        }
    })
}

/// Writes `bytes` to `path` through a temporary file renamed over it (a crash leaves either
/// nothing or all of it), creating its directory.
pub(crate) fn write_new(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut f = tempfile::NamedTempFile::new_in(dir)?;
    f.write_all(bytes)?;
    f.as_file().sync_all()?;
    f.persist(path).map_err(|e| e.error)?;
    Ok(())
}
