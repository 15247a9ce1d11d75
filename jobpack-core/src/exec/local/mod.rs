//! [`LocalExecutor`]: runs a job directory on this machine, in the namespace sandbox with a cgroup
//! when it can, and otherwise (permissive mode only) in a process group with rlimits, saying so in
//! the outcome.
//!
//! A supervisor task owns each run: it waits for the job's first process, enforces the timeout and
//! the log cap, carries out cancel (SIGTERM to the whole job, SIGKILL to whatever is left after the
//! grace period), then reads the cgroup's usage, kills anything still in the cgroup, removes it,
//! and publishes the [`Outcome`].

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc, watch};

use super::cgroup::{self, Cgroup};
use super::logs::streams::Stream;
use super::logs::{LogStream, LogWriter};
use super::{
    ExecError, Executor, IsolationMode, IsolationReport, Limits, NetworkPolicy, Outcome, RunHandle,
    RunRequest, RunStatus, UsageSample,
};
use crate::io_error::io_err;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::Rlimits;

mod fallback;
mod launch;
mod supervise;

use fallback::start_fallback;
use launch::start_sandboxed;
use supervise::Supervisor;

/// How the local executor isolates jobs.
#[derive(Debug, Clone)]
pub struct LocalExecutorConfig {
    pub mode: IsolationMode,
    /// Try namespaces at all (`false`: always the process-group fallback, which strict mode
    /// refuses). For hosts known to forbid them.
    pub namespaces: bool,
    /// Where per-run scratch directories (the new root's mount point) go.
    pub runtime_dir: PathBuf,
    /// Where the cgroup filesystem is mounted.
    pub cgroup_root: PathBuf,
    /// The cgroup (relative to the root, per controller on v1) that jobs' cgroups go under.
    pub cgroup_parent: String,
    /// When running as root: the host uid and gid the job's uid 1000 maps to. The job directory is
    /// chowned to it so the job can write there. Unprivileged callers always map their own uid.
    pub job_host_uid: u32,
    /// A root filesystem to bind read-only instead of the host's `/usr`, `/etc`, `/bin`, ...
    pub rootfs: Option<PathBuf>,
    /// Size of the job's private `/tmp`, in MiB.
    pub tmp_size_mb: u64,
    /// RLIMIT_NOFILE when the request sets none.
    pub default_nofile: u64,
}

impl Default for LocalExecutorConfig {
    fn default() -> Self {
        LocalExecutorConfig {
            mode: IsolationMode::Strict,
            namespaces: true,
            runtime_dir: std::env::temp_dir().join("jobpack-run"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_parent: "jobpack".into(),
            job_host_uid: 2_000_000,
            rootfs: None,
            tmp_size_mb: 256,
            default_nofile: 1024,
        }
    }
}

/// Runs jobs on this machine.
///
/// A caller that calls [`Executor::warm_up`] ahead of its runs (the server, beside each job's
/// pack) decides when the kernel's cgroup-move wait begins; for one that never does (`jobpack
/// run`), each start begins it itself, once the job's cgroup is made.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    config: Arc<LocalExecutorConfig>,
    caller_warms_up: Arc<std::sync::atomic::AtomicBool>,
}

impl LocalExecutor {
    pub fn new(config: LocalExecutorConfig) -> Self {
        LocalExecutor {
            config: Arc::new(config),
            caller_warms_up: Arc::default(),
        }
    }

    pub fn config(&self) -> &LocalExecutorConfig {
        &self.config
    }
}

impl Executor for LocalExecutor {
    fn start(&self, req: RunRequest) -> BoxFuture<'_, Result<Box<dyn RunHandle>, ExecError>> {
        async move {
            let warm_up = !self
                .caller_warms_up
                .load(std::sync::atomic::Ordering::Relaxed);
            let h = start(self.config.clone(), req, warm_up).await?;
            Ok(Box::new(h) as Box<dyn RunHandle>)
        }
        .boxed()
    }

    fn warm_up(&self) {
        self.caller_warms_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if self.config.namespaces {
            warm_up_cgroups(&self.config.cgroup_root);
        }
    }

    /// Its runtime directory takes a new file, and in strict mode a cgroup hierarchy is there.
    fn ready(&self) -> Result<(), String> {
        let dir = &self.config.runtime_dir;
        std::fs::create_dir_all(dir)
            .and_then(|()| tempfile::Builder::new().prefix(".ready-").tempfile_in(dir))
            .map_err(|e| {
                format!(
                    "its runtime directory {} is not writable: {e}",
                    dir.display()
                )
            })?;
        if self.config.mode == IsolationMode::Strict
            && cgroup::detect(&self.config.cgroup_root).is_none()
        {
            return Err(format!(
                "no usable cgroup v1 or v2 under {} (strict isolation needs one)",
                self.config.cgroup_root.display()
            ));
        }
        Ok(())
    }

    fn reap(&self, run_id: &str) -> Result<bool, ExecError> {
        let name = run_name(run_id)?;
        let mut found = false;
        if let Some(version) = cgroup::detect(&self.config.cgroup_root)
            && let Some(cg) = Cgroup::open(
                &self.config.cgroup_root,
                version,
                &self.config.cgroup_parent,
                &name,
            )
        {
            found = true;
            cg.destroy()?;
        }
        let dir = self.config.runtime_dir.join(&name);
        found |= remove_tree(&dir).map_err(io_err("remove", &dir))?;
        Ok(found)
    }
}

/// A running local job.
pub struct LocalHandle {
    logs: LogStream,
    outcome: watch::Receiver<Option<Outcome>>,
    cancel: mpsc::UnboundedSender<Duration>,
    /// Reads its cgroup, when it has one.
    probe: Option<cgroup::Probe>,
}

impl RunHandle for LocalHandle {
    fn logs(&self) -> LogStream {
        self.logs.clone()
    }

    fn wait(&self) -> BoxFuture<'static, Outcome> {
        super::wait_for_outcome(self.outcome.clone())
    }

    fn cancel(&self, grace: Duration) {
        let _ = self.cancel.send(grace);
    }

    fn sample(&self) -> Option<UsageSample> {
        self.probe.as_ref()?.sample()
    }
}

/// How the job's first process is to be signalled and waited for.
enum Proc {
    /// pid 1 of the sandbox (signals are forwarded to all of the job by it).
    Sandbox { pid: i32, report: File },
    /// Leader of a process group (fallback).
    Group { pid: i32 },
}

impl Proc {
    fn pid(&self) -> i32 {
        match self {
            Proc::Sandbox { pid, .. } | Proc::Group { pid } => *pid,
        }
    }
}

fn validate(req: &RunRequest) -> Result<(), ExecError> {
    if !req.job_dir.is_dir() {
        return Err(ExecError::Invalid(format!(
            "the job directory {} does not exist",
            req.job_dir.display()
        )));
    }
    if req.argv.first().is_none_or(|a| a.is_empty()) {
        return Err(ExecError::Invalid("the command is empty".into()));
    }
    for k in req.env.keys().chain(req.secret_env.keys()) {
        crate::spec::check_env_name(k).map_err(|m| ExecError::Invalid(format!("env {k}: {m}")))?;
    }
    for m in &req.mounts {
        crate::spec::normalise_rel_path(&m.target)
            .map_err(|e| ExecError::Invalid(format!("mount target {:?}: {e}", m.target)))?;
        if !m.source.is_dir() {
            return Err(ExecError::Invalid(format!(
                "mount source {} is not a directory",
                m.source.display()
            )));
        }
    }
    let nul = |s: &String| s.contains('\0');
    if req.argv.iter().any(nul) || req.env.values().any(nul) || req.secret_env.values().any(nul) {
        return Err(ExecError::Invalid(
            "NUL bytes in the command or environment".into(),
        ));
    }
    Ok(())
}

fn environment(req: &RunRequest, home: &str, path: &str) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert("PATH".into(), path.into());
    env.insert("HOME".into(), home.into());
    env.insert("TMPDIR".into(), "/tmp".into());
    env.insert("LANG".into(), "C.UTF-8".into());
    for (k, v) in req.env.iter().chain(req.secret_env.iter()) {
        env.insert(k.clone(), v.clone());
    }
    env.into_iter().collect()
}

fn rlimits(req: &RunRequest, cfg: &LocalExecutorConfig) -> Rlimits {
    let mut out = vec![(Resource::RLIMIT_CORE, 0)];
    // Never above the current hard limit: raising it needs a privilege root may not have.
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(_, hard)| hard);
    let nofile = req.limits.nofile.unwrap_or(cfg.default_nofile).min(hard);
    out.push((Resource::RLIMIT_NOFILE, nofile));
    if let Some(f) = req.limits.file_size_bytes {
        out.push((Resource::RLIMIT_FSIZE, f));
    }
    out
}

/// The block device under `path`, for IO throttling: the whole disk when it is a partition.
fn block_device(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{maj}:{min}"));
    if sys.join("partition").exists() {
        let parent = std::fs::read_to_string(sys.join("../dev")).ok()?;
        let (a, b) = parent.trim().split_once(':')?;
        return Some((a.parse().ok()?, b.parse().ok()?));
    }
    sys.exists().then_some((maj, min))
}

fn chown_tree(dir: &Path, uid: u32) -> Result<(), ExecError> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid)).map_err(io_err("chown", dir))?;
    for e in std::fs::read_dir(dir).map_err(io_err("read directory", dir))? {
        let e = e.map_err(io_err("read directory", dir))?;
        let p = e.path();
        let ft = e.file_type().map_err(io_err("stat", &p))?;
        if ft.is_dir() {
            chown_tree(&p, uid)?;
        } else {
            std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).map_err(io_err("chown", &p))?;
        }
    }
    Ok(())
}

/// Creates the mount point `rel` inside `job_dir` (and its parents), refusing to go through a
/// symlink or a file: the job directory holds the job's own files, which must not redirect a
/// mount elsewhere on the host.
fn mount_point(job_dir: &Path, rel: &str) -> Result<PathBuf, ExecError> {
    let rel = crate::spec::normalise_rel_path(rel)
        .map_err(|e| ExecError::Invalid(format!("mount target {rel:?}: {e}")))?;
    let mut p = job_dir.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(ExecError::Invalid(format!(
                    "mount target {rel}: {} is a symlink or a file in the job directory",
                    p.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&p).map_err(io_err("create", &p))?;
            }
            Err(e) => return Err(io_err("stat", &p)(e).into()),
        }
    }
    Ok(p)
}

/// Removes a run's directory tree (`remove_dir_all` does not follow the job's symlinks); one
/// that is not there is not an error. Returns whether it was there.
fn remove_tree(dir: &Path) -> std::io::Result<bool> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`cgroup::warm_up`], best effort: only a few milliseconds of the next start are at stake.
fn warm_up_cgroups(root: &Path) {
    if let Err(e) = cgroup::warm_up(root) {
        tracing::debug!("cgroup warm-up: {e}");
    }
}

/// The cgroup and scratch directory name of a named run.
fn run_name(run_id: &str) -> Result<String, ExecError> {
    let ok = !run_id.is_empty()
        && run_id.len() <= 128
        && run_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !ok {
        return Err(ExecError::Invalid(format!(
            "run_id must be 1-128 letters, digits or '-', got {run_id:?}"
        )));
    }
    Ok(format!("run-{run_id}"))
}

fn unique_name() -> String {
    format!("job-{}", uuid::Uuid::new_v4().simple())
}

/// `warm_up`: begin the cgroup-move wait once the cgroup is made (see [`LocalExecutor`]).
#[tracing::instrument(level = "info", name = "sandbox start", skip_all)]
async fn start(
    cfg: Arc<LocalExecutorConfig>,
    req: RunRequest,
    warm_up: bool,
) -> Result<LocalHandle, ExecError> {
    validate(&req)?;
    for m in &req.mounts {
        mount_point(&req.job_dir, &m.target)?;
    }
    let started = Instant::now();
    let (writer, stream) = LogWriter::create(&req.log_path, req.limits.log_bytes)
        .map_err(io_err("create the log", &req.log_path))?;
    writer.set_sync(req.log_sync);

    let mut report = IsolationReport::default();
    let needs_cgroup = req.limits.needs_cgroup();
    let strict = cfg.mode == IsolationMode::Strict;

    let proc_and_cgroup = if cfg!(target_os = "linux") && cfg.namespaces {
        match start_sandboxed(&cfg, &req, &mut report, warm_up).await {
            Ok(x) => Some(x),
            Err(e @ ExecError::IsolationUnavailable { .. }) if !strict => {
                report.missing.push(e.to_string());
                None
            }
            Err(e) => return Err(e),
        }
    } else if strict {
        return Err(if cfg!(target_os = "linux") {
            ExecError::IsolationUnavailable {
                what: "namespaces are disabled in this executor's configuration".into(),
            }
        } else {
            ExecError::Unsupported(std::env::consts::OS)
        });
    } else {
        report
            .missing
            .push("namespaces disabled by configuration".into());
        None
    };

    let (proc_, cgroup, stdout, stderr, root_dir) = match proc_and_cgroup {
        Some(x) => x,
        None => {
            if needs_cgroup {
                report
                    .missing
                    .push("cgroup limits (memory, cpu, pids, io) are not enforced".into());
            }
            // No mount namespace: no other root file system either.
            if let Some(r) = &req.rootfs {
                return Err(ExecError::Invalid(format!(
                    "the job asks for the root file system {} but this machine cannot run the \
                     sandbox ({}): it would run on the host's",
                    r.display(),
                    report.missing.join("; ")
                )));
            }
            // No mount namespace: each mount becomes a link to its source (writable).
            for m in &req.mounts {
                let at = mount_point(&req.job_dir, &m.target)?;
                std::fs::remove_dir(&at).map_err(io_err("replace", &at))?;
                std::os::unix::fs::symlink(&m.source, &at).map_err(io_err("link", &at))?;
                if m.read_only {
                    report.missing.push(format!(
                        "read-only mount {}: linked, writable, without the sandbox",
                        m.target
                    ));
                }
            }
            let (p, out, err) = start_fallback(&cfg, &req).await?;
            report.level = "none".into();
            report.cgroup = "none".into();
            (p, None, out, err, None)
        }
    };

    let secrets: Vec<Vec<u8>> = req
        .secret_env
        .values()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    writer.set_secrets(&secrets);
    let cap_hit = Arc::new(Notify::new());
    let on_cap: Arc<dyn Fn() + Send + Sync> = {
        let n = cap_hit.clone();
        Arc::new(move || n.notify_one())
    };
    let t_out = writer.capture(stdout, Stream::Stdout, on_cap.clone());
    let t_err = writer.capture(stderr, Stream::Stderr, on_cap);

    let (outcome_tx, outcome_rx) = watch::channel(None);
    let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
    let probe = cgroup.as_ref().map(Cgroup::probe);
    let sup = Supervisor {
        proc_: Some(proc_),
        cgroup,
        root_dir,
        writer,
        threads: vec![t_out, t_err],
        timeout: req.limits.timeout,
        limits: req.limits.clone(),
        job_dir: req.job_dir.clone(),
        started,
        report,
    };
    tokio::spawn(sup.run(cancel_rx, cap_hit, outcome_tx));
    Ok(LocalHandle {
        logs: stream,
        outcome: outcome_rx,
        cancel: cancel_tx,
        probe,
    })
}
