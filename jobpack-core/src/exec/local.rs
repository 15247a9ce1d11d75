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
use super::logs::{LogStream, LogWriter};
use super::{
    ExecError, Executor, IsolationMode, IsolationReport, Limits, NetworkPolicy, Outcome, RunHandle,
    RunRequest, RunStatus,
};
use crate::error::io_err;

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
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    config: Arc<LocalExecutorConfig>,
}

impl LocalExecutor {
    pub fn new(config: LocalExecutorConfig) -> Self {
        LocalExecutor {
            config: Arc::new(config),
        }
    }

    pub fn config(&self) -> &LocalExecutorConfig {
        &self.config
    }
}

impl Executor for LocalExecutor {
    fn start(&self, req: RunRequest) -> BoxFuture<'_, Result<Box<dyn RunHandle>, ExecError>> {
        async move {
            let h = start(self.config.clone(), req).await?;
            Ok(Box::new(h) as Box<dyn RunHandle>)
        }
        .boxed()
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
        if dir.exists() {
            found = true;
            std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        }
        Ok(found)
    }
}

/// A running local job.
pub struct LocalHandle {
    logs: LogStream,
    outcome: watch::Receiver<Option<Outcome>>,
    cancel: mpsc::UnboundedSender<Duration>,
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

fn rlimits(
    req: &RunRequest,
    cfg: &LocalExecutorConfig,
) -> Vec<(libc::__rlimit_resource_t, libc::rlimit)> {
    let lim = |n: u64| libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    let mut out = vec![(libc::RLIMIT_CORE, lim(0))];
    // Never above the current hard limit: raising it needs a privilege root may not have.
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit into a valid struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
    let nofile = req
        .limits
        .nofile
        .unwrap_or(cfg.default_nofile)
        .min(cur.rlim_max);
    out.push((libc::RLIMIT_NOFILE, lim(nofile)));
    if let Some(f) = req.limits.file_size_bytes {
        out.push((libc::RLIMIT_FSIZE, lim(f)));
    }
    out
}

/// The block device under `path`, for IO throttling: the whole disk when it is a partition.
fn block_device(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (maj, min) = (libc::major(dev) as u64, libc::minor(dev) as u64);
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

async fn start(cfg: Arc<LocalExecutorConfig>, req: RunRequest) -> Result<LocalHandle, ExecError> {
    validate(&req)?;
    for m in &req.mounts {
        mount_point(&req.job_dir, &m.target)?;
    }
    let started = Instant::now();
    let (writer, stream) = LogWriter::create(&req.log_path, req.limits.log_bytes)
        .map_err(io_err("create the log", &req.log_path))?;

    let mut report = IsolationReport::default();
    let needs_cgroup = req.limits.needs_cgroup();
    let strict = cfg.mode == IsolationMode::Strict;

    let proc_and_cgroup = if cfg!(target_os = "linux") && cfg.namespaces {
        match start_sandboxed(&cfg, &req, &mut report).await {
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
    let t_out = writer.capture(stdout, on_cap.clone());
    let t_err = writer.capture(stderr, on_cap);

    let (outcome_tx, outcome_rx) = watch::channel(None);
    let (cancel_tx, cancel_rx) = mpsc::unbounded_channel();
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
    })
}

type Started = (Proc, Option<Cgroup>, File, File, Option<PathBuf>);

/// How long building a sandbox may take before it is abandoned.
const SETUP_LIMIT: Duration = Duration::from_secs(30);

#[cfg(target_os = "linux")]
async fn start_sandboxed(
    cfg: &Arc<LocalExecutorConfig>,
    req: &RunRequest,
    report: &mut IsolationReport,
) -> Result<Started, ExecError> {
    use super::sandbox::{self, IdMap, Plan, PlanInput, Report};
    let strict = cfg.mode == IsolationMode::Strict;
    let needs_cgroup = req.limits.needs_cgroup();
    // SAFETY: plain id queries.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let is_root = euid == 0;
    let name = match &req.run_id {
        Some(id) => {
            // A named run may be a retry: clear what an earlier attempt of it left behind.
            let name = run_name(id)?;
            let _ = std::fs::remove_dir_all(cfg.runtime_dir.join(&name));
            if let Some(v) = cgroup::detect(&cfg.cgroup_root)
                && let Some(stale) = Cgroup::open(&cfg.cgroup_root, v, &cfg.cgroup_parent, &name)
            {
                stale.destroy()?;
            }
            name
        }
        None => unique_name(),
    };

    // The cgroup first, so the job is in it before it runs anything.
    let cgroup = match cgroup::detect(&cfg.cgroup_root) {
        Some(version) => {
            let dev = req.limits.io_bps.and_then(|_| block_device(&req.job_dir));
            match Cgroup::create(
                &cfg.cgroup_root,
                version,
                &cfg.cgroup_parent,
                &name,
                &req.limits,
                dev,
            ) {
                Ok((cg, applied)) => {
                    if req.limits.io_bps.is_some() && !applied.iter().any(|a| a == "io") {
                        report
                            .missing
                            .push("io limit: no block device found for the job directory".into());
                    }
                    report.cgroup = version.as_str().into();
                    report.cgroup_paths =
                        cg.paths().iter().map(|p| p.display().to_string()).collect();
                    report.cgroup_limits = applied;
                    Some(cg)
                }
                Err(e) if strict && (needs_cgroup || is_root) => return Err(e),
                Err(e) => {
                    report.missing.push(format!("cgroup: {e}"));
                    None
                }
            }
        }
        None if strict && needs_cgroup => {
            return Err(ExecError::IsolationUnavailable {
                what: format!(
                    "no usable cgroup v1 or v2 under {}",
                    cfg.cgroup_root.display()
                ),
            });
        }
        None => {
            report.missing.push("cgroup: none usable".into());
            None
        }
    };
    if report.cgroup.is_empty() {
        report.cgroup = "none".into();
    }
    let cleanup_cg = |cg: &Option<Cgroup>| {
        if let Some(cg) = cg {
            let _ = cg.destroy();
        }
    };

    let ids = if is_root {
        if let Err(e) = chown_tree(&req.job_dir, cfg.job_host_uid) {
            cleanup_cg(&cgroup);
            return Err(e);
        }
        IdMap {
            host_uid: cfg.job_host_uid,
            host_gid: cfg.job_host_uid,
        }
    } else {
        IdMap {
            host_uid: euid,
            host_gid: egid,
        }
    };
    let root_dir = cfg.runtime_dir.join(&name);
    if let Err(e) = std::fs::create_dir_all(&root_dir) {
        cleanup_cg(&cgroup);
        return Err(io_err("create", &root_dir)(e).into());
    }
    let env = environment(req, "/tmp", sandbox::SANDBOX_PATH);
    let network_none = req.network == NetworkPolicy::None;
    let plan = Plan::build(PlanInput {
        job_dir: &req.job_dir,
        root_dir: &root_dir,
        rootfs: cfg.rootfs.as_deref(),
        tmp_size_mb: cfg.tmp_size_mb,
        network_none,
        argv: &req.argv,
        env: &env,
        rlimits: rlimits(req, cfg),
        parent_is_root: is_root,
        mounts: &req.mounts,
    });
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            cleanup_cg(&cgroup);
            let _ = std::fs::remove_dir_all(&root_dir);
            return Err(e);
        }
    };
    // Spawn and wait for "running" (or a setup failure) on a blocking thread.
    let (plan, cgroup, result) = tokio::task::spawn_blocking(move || {
        let r = sandbox::spawn(&plan, ids, network_none, cgroup.as_ref()).and_then(|mut s| {
            match Report::read_within(&mut s.report, SETUP_LIMIT) {
                Some(Report::Running) => Ok(s),
                other => {
                    // SAFETY: kill (if it is stuck) and reap our own child.
                    unsafe {
                        libc::kill(s.pid, libc::SIGKILL);
                        libc::waitpid(s.pid, std::ptr::null_mut(), 0);
                    }
                    Err(match other {
                        Some(Report::SetupFailed { stage, errno }) => {
                            let source = std::io::Error::from_raw_os_error(errno);
                            let stage = plan.stage_name(stage);
                            if errno == libc::EPERM || errno == libc::EACCES {
                                ExecError::IsolationUnavailable {
                                    what: format!("sandbox setup failed at {stage}: {source}"),
                                }
                            } else {
                                ExecError::Setup { stage, source }
                            }
                        }
                        Some(Report::ExecFailed { errno }) => ExecError::Setup {
                            stage: format!("exec {}", plan.exe.to_string_lossy()),
                            source: std::io::Error::from_raw_os_error(errno),
                        },
                        _ => ExecError::Setup {
                            stage: "start the sandbox".into(),
                            source: std::io::Error::other(format!(
                                "its first process neither started the job nor reported an \
                                 error within {}s",
                                SETUP_LIMIT.as_secs()
                            )),
                        },
                    })
                }
            }
        });
        (plan, cgroup, r)
    })
    .await
    .map_err(|e| ExecError::Setup {
        stage: "start the sandbox".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    drop(plan);
    match result {
        Ok(s) => {
            report.level = "namespaces".into();
            report.namespaces = ["user", "pid", "mount", "ipc", "uts", "cgroup"]
                .into_iter()
                .map(String::from)
                .collect();
            if network_none {
                report.namespaces.push("net".into());
            }
            report.seccomp = true;
            report.no_new_privs = true;
            report.capabilities_dropped = true;
            report.uid = Some(sandbox::JOB_UID);
            Ok((
                Proc::Sandbox {
                    pid: s.pid,
                    report: s.report,
                },
                cgroup,
                s.stdout,
                s.stderr,
                Some(root_dir),
            ))
        }
        Err(e) => {
            cleanup_cg(&cgroup);
            let _ = std::fs::remove_dir_all(&root_dir);
            Err(e)
        }
    }
}

#[cfg(not(target_os = "linux"))]
async fn start_sandboxed(
    _cfg: &Arc<LocalExecutorConfig>,
    _req: &RunRequest,
    _report: &mut IsolationReport,
) -> Result<Started, ExecError> {
    Err(ExecError::IsolationUnavailable {
        what: format!("namespaces need Linux (this is {})", std::env::consts::OS),
    })
}

/// The fallback: a process group with rlimits, in the job directory, on the host.
async fn start_fallback(
    cfg: &LocalExecutorConfig,
    req: &RunRequest,
) -> Result<(Proc, File, File), ExecError> {
    use std::os::unix::process::CommandExt;
    let host_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let home = req.job_dir.display().to_string();
    let mut cmd = std::process::Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .current_dir(&req.job_dir)
        .env_clear()
        .envs(environment(req, &home, &host_path))
        .env("TMPDIR", std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let limits = rlimits(req, cfg);
    // SAFETY: setrlimit is async-signal-safe; `limits` is only read.
    unsafe {
        cmd.pre_exec(move || {
            for (res, lim) in &limits {
                if libc::setrlimit(*res, lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ExecError::Setup {
        stage: format!("start {}", req.argv[0]),
        source,
    })?;
    let stdout = File::from(std::os::fd::OwnedFd::from(
        child.stdout.take().expect("piped"),
    ));
    let stderr = File::from(std::os::fd::OwnedFd::from(
        child.stderr.take().expect("piped"),
    ));
    let pid = child.id() as i32;
    // The supervisor reaps it with wait4 (for its resource usage); std's handle is not used again.
    drop(child);
    Ok((Proc::Group { pid }, stdout, stderr))
}

struct Supervisor {
    proc_: Option<Proc>,
    cgroup: Option<Cgroup>,
    root_dir: Option<PathBuf>,
    writer: LogWriter,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    timeout: Option<Duration>,
    limits: Limits,
    job_dir: PathBuf,
    started: Instant,
    report: IsolationReport,
}

/// What `wait4` said about the job's first process.
struct Exit {
    /// The job's wait status (from pid 1's report in the sandbox, or wait4 in the fallback).
    status: Option<i32>,
    /// A process of the job was killed for writing past RLIMIT_FSIZE.
    file_too_big: bool,
    rusage: libc::rusage,
}

/// The next message from pid 1: `Some(Some((status, file_too_big)))` for the job's exit,
/// `Some(None)` for anything else, `None` at the end.
#[cfg(target_os = "linux")]
fn next_report(f: &mut File) -> Option<Option<(i32, bool)>> {
    use super::sandbox::Report;
    Report::read(f).map(|r| match r {
        Report::Exited {
            status,
            file_too_big,
        } => Some((status, file_too_big)),
        _ => None,
    })
}

#[cfg(not(target_os = "linux"))]
fn next_report(_f: &mut File) -> Option<Option<(i32, bool)>> {
    None
}

fn wait_exit(proc_: Proc) -> Exit {
    let pid = proc_.pid();
    let mut job_status = None;
    if let Proc::Sandbox { mut report, .. } = proc_ {
        while let Some(r) = next_report(&mut report) {
            if let Some(s) = r {
                job_status = Some(s);
            }
        }
    }
    // SAFETY: wait4 on our own child into valid out-pointers.
    let mut status = 0;
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    // In the sandbox, pid 1's own status is not the job's: without a report, pid 1 was killed.
    let file_too_big = job_status.is_some_and(|(_, f)| f)
        || (libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXFSZ);
    let status = job_status.map(|(s, _)| s).or(Some(status));
    Exit {
        status,
        file_too_big,
        rusage,
    }
}

impl Supervisor {
    async fn run(
        mut self,
        mut cancel_rx: mpsc::UnboundedReceiver<Duration>,
        cap_hit: Arc<Notify>,
        outcome: watch::Sender<Option<Outcome>>,
    ) {
        let proc_ = self.proc_.take().expect("set at start");
        let pid = proc_.pid();
        let sandboxed = matches!(proc_, Proc::Sandbox { .. });
        let signal = move |sig: i32| {
            // SAFETY: kill(2) on our child or its group.
            unsafe {
                if sandboxed {
                    libc::kill(pid, sig)
                } else {
                    libc::kill(-pid, sig)
                }
            };
        };
        let mut exit = tokio::task::spawn_blocking(move || wait_exit(proc_));
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut why: Option<RunStatus> = None;
        // Which limit a `limit_exceeded` ran into, said as the reason.
        let mut exceeded: Option<String> = None;
        let mut disk_tick = tokio::time::interval(super::DISK_CHECK_INTERVAL);
        disk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let disk_limit = self.limits.disk_bytes;
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86400);

        let exited = loop {
            tokio::select! {
                e = &mut exit => break e.ok(),
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && why.is_none() => {
                    why = Some(RunStatus::TimedOut);
                    signal(libc::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                g = cancel_rx.recv(), if why.is_none() => {
                    if let Some(grace) = g {
                        why = Some(RunStatus::Stopped);
                        signal(libc::SIGTERM);
                        kill_at = Some(tokio::time::Instant::now() + grace);
                    }
                }
                _ = cap_hit.notified(), if why.is_none() => {
                    why = Some(RunStatus::LimitExceeded);
                    exceeded = Some(format!(
                        "limits.log_bytes: wrote more than {} bytes of log",
                        self.limits.log_bytes.unwrap_or_default()
                    ));
                    kill_at = Some(tokio::time::Instant::now());
                }
                _ = disk_tick.tick(), if disk_limit.is_some() && why.is_none() => {
                    let max = disk_limit.unwrap_or(u64::MAX);
                    let dir = self.job_dir.clone();
                    let used = tokio::task::spawn_blocking(move || {
                        crate::tree::Tree::open(&dir)?.usage(max, super::MAX_DISK_ENTRIES)
                    })
                    .await;
                    let over = match used {
                        Ok(Ok(u)) if u.bytes > max => Some(format!(
                            "limits.disk_bytes: its directory used more than {max} bytes of disk"
                        )),
                        Ok(Ok(u)) if u.entries > super::MAX_DISK_ENTRIES => Some(format!(
                            "limits.disk_bytes: its directory holds more than {} files",
                            super::MAX_DISK_ENTRIES
                        )),
                        Ok(Err(crate::tree::TreeError::TooDeep { .. })) => Some(format!(
                            "limits.disk_bytes: its directory nests more than {} levels deep",
                            crate::tree::MAX_DEPTH
                        )),
                        // Unmeasurable this time (a directory vanished mid-walk): next tick.
                        _ => None,
                    };
                    if over.is_some() {
                        why = Some(RunStatus::LimitExceeded);
                        exceeded = over;
                        kill_at = Some(tokio::time::Instant::now());
                    }
                }
                _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                    kill_at = None;
                    signal(libc::SIGKILL);
                    if let Some(cg) = &self.cgroup {
                        let _ = cg.kill_all();
                    }
                }
            }
        };

        // Whatever is left of the job goes now: the rest of its process group in the fallback;
        // in the sandbox pid 1 already took its namespace down; the cgroup catches any escapee.
        if !sandboxed {
            signal(libc::SIGKILL);
        }
        let usage = self.cgroup.as_ref().map(|c| c.usage());
        let mut cleanup_errors = Vec::new();
        if let Some(cg) = self.cgroup.take() {
            let res = tokio::task::spawn_blocking(move || cg.destroy()).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => cleanup_errors.push(e.to_string()),
                Err(e) => cleanup_errors.push(e.to_string()),
            }
        }
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        self.writer.close();
        if let Some(d) = &self.root_dir {
            let _ = std::fs::remove_dir_all(d);
        }

        let (wait_status, rusage, file_too_big) = match exited {
            Some(e) => (e.status, Some(e.rusage), e.file_too_big),
            None => (None, None, false),
        };
        let (exit_code, sig) = match wait_status {
            Some(s) if libc::WIFEXITED(s) => (Some(libc::WEXITSTATUS(s)), None),
            Some(s) if libc::WIFSIGNALED(s) => (None, Some(libc::WTERMSIG(s))),
            _ => (None, None),
        };
        // SIGXFSZ is how RLIMIT_FSIZE stops a process: seen by pid 1 for an orphan, as the
        // job's own signal, or as a shell's `128 + SIGXFSZ` for a command it ran.
        let xfsz =
            file_too_big || sig == Some(libc::SIGXFSZ) || exit_code == Some(128 + libc::SIGXFSZ);
        if why.is_none() && xfsz && self.limits.file_size_bytes.is_some() {
            why = Some(RunStatus::LimitExceeded);
            exceeded = Some(format!(
                "limits.file_size_bytes: a process wrote past {} bytes in one file (SIGXFSZ)",
                self.limits.file_size_bytes.unwrap_or_default()
            ));
        }
        let oom = usage.is_some_and(|u| u.oom_kills > 0);
        let status = match why {
            Some(w) => w,
            None if exit_code == Some(0) => RunStatus::Completed,
            None if oom => RunStatus::OomKilled,
            None => RunStatus::Failed,
        };
        let mut reason = match status {
            RunStatus::Completed => None,
            RunStatus::Failed => Some(match (exit_code, sig) {
                (Some(c), _) => format!("exited with status {c}"),
                (_, Some(s)) => format!("killed by signal {s}"),
                _ => "ended without an exit status".into(),
            }),
            RunStatus::Stopped => Some("cancelled".into()),
            RunStatus::TimedOut => Some(format!(
                "ran longer than {:.1}s",
                self.timeout.unwrap_or_default().as_secs_f64()
            )),
            RunStatus::OomKilled => Some("killed for using more memory than its limit".into()),
            RunStatus::LimitExceeded => Some(
                exceeded
                    .take()
                    .unwrap_or_else(|| "wrote more log than its limit".into()),
            ),
        };
        if let Some(u) = usage
            && u.pids_refused > 0
            && status != RunStatus::Completed
        {
            let r = reason.get_or_insert_default();
            r.push_str(&format!(
                " ({} forks refused by the pids limit, limits.pids={})",
                u.pids_refused,
                self.limits.pids.unwrap_or_default()
            ));
        }
        if !cleanup_errors.is_empty() {
            let r = reason.get_or_insert_default();
            r.push_str(&format!("; cleanup: {}", cleanup_errors.join("; ")));
        }
        let ru_cpu = rusage.map(|r| {
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(r.ru_utime) + t(r.ru_stime)
        });
        let o = Outcome {
            status,
            exit_code,
            signal: sig,
            reason,
            wall_time_secs: self.started.elapsed().as_secs_f64(),
            cpu_time_secs: usage
                .and_then(|u| u.cpu_nanos)
                .map(|n| n as f64 / 1e9)
                .or(ru_cpu),
            peak_memory_bytes: usage
                .and_then(|u| u.memory_peak)
                .or_else(|| rusage.map(|r| r.ru_maxrss as u64 * 1024)),
            log_bytes: self.writer.len(),
            log_error: self
                .writer
                .lost()
                .map(|(n, e)| format!("{n} bytes of output were lost: {e}")),
            queued_secs: None,
            isolation: self.report.clone(),
        };
        let _ = outcome.send(Some(o));
    }
}
