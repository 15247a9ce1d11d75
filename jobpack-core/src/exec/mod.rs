//! Running a job: the [`Executor`] trait, what a run is asked to do ([`RunRequest`]) and what
//! came of it ([`Outcome`]).
//!
//! [`LocalExecutor`] runs a job directory (an unpacked artifact, or any directory with a `run.sh`)
//! on this Linux machine inside namespaces, a pivot_root'ed read-only root, cgroup limits, rlimits,
//! no capabilities, `no_new_privs` and a seccomp filter. A cluster backend implements the same
//! trait. This module never decides policy for its callers: isolation that cannot be applied is an
//! error in strict mode and is reported (never silently dropped) in permissive mode.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::io_error::IoError;

pub mod cgroup;
mod local;
pub mod logs;
#[cfg(target_os = "linux")]
mod sandbox;
mod slurm;

pub use local::{LocalExecutor, LocalExecutorConfig};
pub use logs::{LogReader, LogStream};
#[cfg(target_os = "linux")]
pub use sandbox::start_spawner;
pub use slurm::{SlurmConfig, SlurmExecutor};

/// Resource limits of one run. `None` means "no limit of this kind".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock time before the job is stopped (`timed_out`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Memory in bytes (cgroup); over it the kernel kills the job (`oom_killed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPU in percent of one core (100 = one core, 50 = half of one, 200 = two).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u32>,
    /// Number of processes/threads (cgroup pids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Disk read and write bandwidth in bytes/second, where the IO controller allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_bps: Option<u64>,
    /// Open files (RLIMIT_NOFILE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<u64>,
    /// Largest file the job may write (RLIMIT_FSIZE), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
    /// Log bytes captured before the job is stopped (`limit_exceeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_bytes: Option<u64>,
    /// Disk the job directory may use (allocated blocks, so a sparse file counts what it really
    /// takes), checked every [`DISK_CHECK_INTERVAL`]; over it the job is stopped
    /// (`limit_exceeded`). The local sandbox enforces it; so does a file count of
    /// [`MAX_DISK_ENTRIES`] (each file costs an inode and a check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_bytes: Option<u64>,
    /// CPUs the job may run on, as a cpuset list (`0-1`, `2,3`), through the cpuset controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<String>,
}

/// How often the disk use of a job with `limits.disk_bytes` is measured.
pub const DISK_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Most files and directories a job with `limits.disk_bytes` may have in its directory.
pub const MAX_DISK_ENTRIES: u64 = 200_000;

impl Limits {
    /// Whether any of these limits needs a cgroup (memory, CPU, pids, IO).
    pub fn needs_cgroup(&self) -> bool {
        self.memory_bytes.is_some()
            || self.cpu_percent.is_some()
            || self.pids.is_some()
            || self.io_bps.is_some()
            || self.cpu_cores.is_some()
    }
}

/// Top-level directories of the sandbox's root that are its own (system directories from the
/// host or a rootfs, the job, a fresh /tmp, /proc, /dev): no [`SharedDir`] may be under them.
pub const SANDBOX_OWN_DIRS: &[&str] = &[
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt", "job", "tmp", "proc",
    "dev",
];

/// The rlimits of a run: (resource, soft = hard limit), set in the sandbox's pid 1 or before the
/// fallback's exec.
pub(crate) type Rlimits = Vec<(nix::sys::resource::Resource, u64)>;

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<f64> = Option::deserialize(d)?;
        match v {
            Some(x) if x.is_finite() && x > 0.0 => Duration::try_from_secs_f64(x)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("timeout {x} is too large"))),
            Some(x) => Err(serde::de::Error::custom(format!(
                "timeout must be a positive number of seconds, got {x}"
            ))),
            None => Ok(None),
        }
    }
}

/// Whether the job may use the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicy {
    /// A private network namespace with only loopback.
    #[default]
    None,
    /// The host's network.
    Host,
}

/// What to do when the machine cannot isolate a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IsolationMode {
    /// Fail, naming what is missing.
    #[default]
    Strict,
    /// Run with what is available (at worst a process group and rlimits) and report it.
    Permissive,
}

/// A host directory shown inside the job directory for the run (a workflow job's `deps/<name>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The host directory.
    pub source: PathBuf,
    /// Where it appears, relative to the job directory (`deps/setup`). Missing directories are
    /// created; a path through a symlink or a file is refused.
    pub target: String,
    /// Read-only in the sandbox. Without the sandbox (permissive fallback) the directory is
    /// linked instead, writable, and the isolation report says so.
    pub read_only: bool,
}

/// One run of a job.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The job directory; bound read-write at `/job` and the working directory of the command.
    pub job_dir: PathBuf,
    /// The command, run from `job_dir`. Default `["./run.sh"]`.
    pub argv: Vec<String>,
    /// Environment variables, on top of a minimal clean environment.
    pub env: BTreeMap<String, String>,
    /// Like `env`, but their values are masked (`***`) in the captured log.
    pub secret_env: BTreeMap<String, String>,
    pub limits: Limits,
    pub network: NetworkPolicy,
    /// Where the log file goes (created, truncated).
    pub log_path: PathBuf,
    /// Sync the log to disk when the job's output ends, so that it survives a crash of the
    /// machine (default). `false` for a log that is removed once the run is over (`jobpack run`
    /// without `--keep`): the sync waits for the disk to flush its cache, for nothing.
    pub log_sync: bool,
    /// A stable name for this run (letters, digits, `-`), used for its cgroup and scratch
    /// directory so that [`Executor::reap`] can find what a crashed supervisor left behind.
    /// `None`: a fresh random name.
    pub run_id: Option<String>,
    /// Host directories to show inside the job directory.
    pub mounts: Vec<Mount>,
    /// Host directories shown read-write at their own path (a shared working directory).
    pub shared_dirs: Vec<SharedDir>,
    /// A root file system (a runtime's tree, [`crate::rootfs::Store::tree`]) bound read-only
    /// as the job's `/usr`, `/etc`, `/bin`, ... instead of the executor's default (the host's).
    pub rootfs: Option<PathBuf>,
}

/// A host directory a job works in, shown at the same path in the sandbox, read-write: `rel`
/// under `root` (`.` for `root` itself). `root` is trusted (an admin allowed it); `rel` is
/// resolved beneath it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` at the moment of the
/// mount, so a link another job planted there leads nowhere. Without the sandbox (permissive
/// fallback) the job simply runs on the host, where the directory is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedDir {
    pub root: PathBuf,
    pub rel: String,
}

impl SharedDir {
    /// The directory's path (on the host, and in the sandbox).
    pub fn path(&self) -> PathBuf {
        if self.rel == "." {
            self.root.clone()
        } else {
            self.root.join(&self.rel)
        }
    }
}

impl RunRequest {
    /// A request to run `job_dir/run.sh` with default limits, logging to `log_path`.
    pub fn new(job_dir: impl Into<PathBuf>, log_path: impl Into<PathBuf>) -> Self {
        RunRequest {
            job_dir: job_dir.into(),
            argv: vec!["./run.sh".into()],
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            limits: Limits::default(),
            network: NetworkPolicy::None,
            log_path: log_path.into(),
            log_sync: true,
            run_id: None,
            mounts: Vec::new(),
            shared_dirs: Vec::new(),
            rootfs: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Exited with status 0.
    Completed,
    /// Exited non-zero or was killed by a signal it did not ask for.
    Failed,
    /// Stopped by `cancel`.
    Stopped,
    /// Stopped because it ran past its timeout.
    TimedOut,
    /// Killed by the kernel for using more memory than its limit.
    OomKilled,
    /// Stopped because it wrote more log than its limit.
    LimitExceeded,
}

impl RunStatus {
    /// The name, the same as the job status it ends in.
    pub fn as_str(self) -> &'static str {
        crate::JobStatus::from(self).as_str()
    }
}

impl From<RunStatus> for crate::JobStatus {
    fn from(r: RunStatus) -> crate::JobStatus {
        use crate::JobStatus as J;
        match r {
            RunStatus::Completed => J::Completed,
            RunStatus::Failed => J::Failed,
            RunStatus::Stopped => J::Stopped,
            RunStatus::TimedOut => J::TimedOut,
            RunStatus::OomKilled => J::OomKilled,
            RunStatus::LimitExceeded => J::LimitExceeded,
        }
    }
}

/// Which protections were actually in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IsolationReport {
    /// `"namespaces"` (full sandbox) or `"none"` (process group and rlimits only).
    pub level: String,
    /// Namespaces created (`user`, `pid`, `mount`, `ipc`, `uts`, `cgroup`, `net`).
    pub namespaces: Vec<String>,
    /// `"v1"`, `"v2"` or `"none"`.
    pub cgroup: String,
    /// Limits the cgroup enforced (`memory`, `cpu`, `pids`, `io`).
    pub cgroup_limits: Vec<String>,
    pub seccomp: bool,
    pub no_new_privs: bool,
    pub capabilities_dropped: bool,
    /// The uid the job ran as inside its namespace, if it was switched.
    pub uid: Option<u32>,
    /// The job's cgroup directories (removed when the run ends).
    pub cgroup_paths: Vec<String>,
    /// What could not be applied, and why (permissive mode).
    pub missing: Vec<String>,
}

/// One reading of a running job's cgroup: CPU and IO so far, memory and processes now. A field
/// is `None` where its controller is not there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct UsageSample {
    /// CPU time (user + system) of all its processes so far.
    pub cpu_nanos: u64,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// The highest values a run's usage samples saw (kept in its [`Outcome`] by whoever sampled it,
/// as the server's runner does).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct UsagePeaks {
    /// Samples taken.
    pub samples: u64,
    /// The most CPU used between two samples, in cores (1.0 = one core all the time).
    pub cpu_cores: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// Bytes read and written in all (the last sample's counters).
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

impl UsagePeaks {
    /// Takes in `now`, `elapsed` after the previous sample `before`; returns the cores used
    /// between the two (`None` without a previous sample or time between them).
    pub fn add(
        &mut self,
        before: Option<&UsageSample>,
        now: &UsageSample,
        elapsed: Duration,
    ) -> Option<f64> {
        let max = |a: Option<u64>, b: Option<u64>| a.max(b);
        self.samples += 1;
        self.memory_bytes = max(self.memory_bytes, now.memory_bytes);
        self.pids = max(self.pids, now.pids);
        self.io_read_bytes = max(self.io_read_bytes, now.io_read_bytes);
        self.io_write_bytes = max(self.io_write_bytes, now.io_write_bytes);
        if let Some(b) = before
            && !elapsed.is_zero()
        {
            let cores =
                now.cpu_nanos.saturating_sub(b.cpu_nanos) as f64 / elapsed.as_nanos() as f64;
            self.cpu_cores = Some(self.cpu_cores.map_or(cores, |c| c.max(cores)));
            return Some(cores);
        }
        None
    }
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub status: RunStatus,
    /// The exit code, if the job exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it, if it was killed.
    pub signal: Option<i32>,
    /// A human-readable reason for anything but `completed`.
    pub reason: Option<String>,
    pub wall_time_secs: f64,
    /// CPU time (user + system) of all the job's processes, when a cgroup measured it.
    pub cpu_time_secs: Option<f64>,
    /// Peak memory of the job's cgroup, in bytes, when measured.
    pub peak_memory_bytes: Option<u64>,
    /// Log bytes captured (after masking).
    pub log_bytes: u64,
    /// Output that could not be written to the log (a full disk), and why: the job went on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
    /// Seconds the job waited in a cluster scheduler's queue before it ran (cluster backends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_secs: Option<f64>,
    /// The peaks of its usage samples, when it was sampled while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peaks: Option<UsagePeaks>,
    pub isolation: IsolationReport,
}

impl Outcome {
    /// A run that ended without a real outcome (its supervisor died).
    pub fn failed(reason: &str) -> Outcome {
        Outcome {
            status: RunStatus::Failed,
            exit_code: None,
            signal: None,
            reason: Some(reason.into()),
            wall_time_secs: 0.0,
            cpu_time_secs: None,
            peak_memory_bytes: None,
            log_bytes: 0,
            log_error: None,
            queued_secs: None,
            peaks: None,
            isolation: IsolationReport::default(),
        }
    }
}

/// Why a run could not start or be supervised.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(
        "isolation is not available here: {what}; run as root, enable user namespaces, or use permissive mode"
    )]
    IsolationUnavailable { what: String },
    #[error("the job directory {} has no {program}", dir.display())]
    NoProgram { dir: PathBuf, program: String },
    #[error("invalid run request: {0}")]
    Invalid(String),
    #[error("sandbox setup failed at {stage}: {source}")]
    Setup {
        stage: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {action} failed for {}", path.display())]
    Cgroup {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("running jobs in a sandbox needs Linux (this is {0})")]
    Unsupported(&'static str),
    /// The cluster scheduler cannot be used (its commands are missing, its controller is down).
    #[error("the scheduler is not available: {what}")]
    Unavailable { what: String },
}

/// A running job.
pub trait RunHandle: Send + Sync {
    /// The job's log: `.reader()` gives the whole history first, then live output until the job
    /// ends; `.reader_at(offset)` resumes from a byte offset.
    fn logs(&self) -> LogStream;
    /// Waits for the job to end. May be called from several tasks; all get the same outcome.
    fn wait(&self) -> futures_util::future::BoxFuture<'static, Outcome>;
    /// Asks the job to stop: SIGTERM to all of it, then after `grace` SIGKILL to whatever is left.
    /// Returns at once; `wait` reports `stopped`.
    fn cancel(&self, grace: Duration);
    /// Its resources now (a few small reads of its cgroup; `None` when nothing measures them,
    /// or once it has ended). Sampled every second by the server.
    fn sample(&self) -> Option<UsageSample> {
        None
    }
}

/// `RunHandle::wait` of a handle whose follower task sends the outcome on a watch channel.
pub(crate) fn wait_for_outcome(
    mut rx: tokio::sync::watch::Receiver<Option<Outcome>>,
) -> futures_util::future::BoxFuture<'static, Outcome> {
    Box::pin(async move {
        loop {
            if let Some(o) = rx.borrow_and_update().clone() {
                return o;
            }
            if rx.changed().await.is_err() {
                return rx.borrow().clone().unwrap_or_else(|| {
                    Outcome::failed("the job's supervisor ended without an outcome")
                });
            }
        }
    })
}

/// Something that runs jobs: the local sandbox, or a cluster backend.
pub trait Executor: Send + Sync {
    /// What runs the jobs, for run receipts: `sandbox` (the local one) or `slurm`.
    fn backend(&self) -> &'static str {
        "sandbox"
    }

    /// Starts a run. Errors here mean the job never started.
    fn start(
        &self,
        req: RunRequest,
    ) -> futures_util::future::BoxFuture<'_, Result<Box<dyn RunHandle>, ExecError>>;

    /// A run is about to start (blocking, best effort, up to a few milliseconds; call it off the
    /// async threads and do not wait for it): whatever `start` would wait for, begun early. The
    /// local sandbox starts the kernel's cgroup-move wait ([`cgroup::warm_up`]). Nothing by
    /// default.
    fn warm_up(&self) {}

    /// Whether it can start runs now, as a readiness check asks (blocking, quick): `Err` says
    /// what is missing.
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    /// Kills and removes whatever is left of run `run_id` after its supervisor died (a server
    /// crash). Returns whether anything was found. Blocking.
    fn reap(&self, run_id: &str) -> Result<bool, ExecError> {
        let _ = run_id;
        Ok(false)
    }

    /// Finds run `req.run_id` again after its supervisor restarted (a cluster job outlives the
    /// server): a handle that follows it to its end, as `start`'s would. `None`: nothing to
    /// attach to (the local sandbox's jobs die with their supervisor).
    fn attach(
        &self,
        req: RunRequest,
    ) -> futures_util::future::BoxFuture<'_, Result<Option<Box<dyn RunHandle>>, ExecError>> {
        let _ = req;
        Box::pin(async { Ok(None) })
    }
}
