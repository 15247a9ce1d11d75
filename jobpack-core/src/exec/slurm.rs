//! The Slurm backend: the same [`Executor`] trait, with Slurm deciding where and when a job runs.
//!
//! A run is a directory in the shared directory (`<shared>/slurm/<run_id>/`) holding the batch
//! script, Slurm's output file, the Slurm job id and the exit status the script writes. `start`
//! writes the script and calls `sbatch --parsable` with the job's limits (`--time`, `--mem`,
//! `--cpus-per-task`), name, output file and working directory; the handle polls
//! `squeue` while the job is pending or running, then `scontrol show job` (or `sacct`) for its
//! final state, and tails the output file into the job's log. Cancel is `scancel --signal=TERM
//! --full`, then `scancel` after the grace period. [`Executor::attach`] finds a run again after a
//! restart of its supervisor from the job id file.
//!
//! The job's environment (secrets included) is passed to `sbatch`'s own environment with
//! `--export=ALL`, never written to the shared directory. The time limit is enforced to the
//! second by the script (`timeout`), Slurm's `--time` (whole minutes, rounded up, plus one) is
//! the scheduler's backstop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::logs::{LogWriter, Masker};
use super::{
    ExecError, Executor, IsolationReport, LogStream, Outcome, RunHandle, RunRequest, RunStatus,
};
use crate::error::io_err;

/// How to reach Slurm and where runs live.
#[derive(Debug, Clone)]
pub struct SlurmConfig {
    /// A directory every node sees at the same path (job directories and run files).
    pub shared_dir: PathBuf,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// Run `run.sh` inside jobpack's local sandbox on the node: the path of `jobpack` there.
    /// `None`: run it directly, confined by Slurm's own cgroups.
    pub sandbox: Option<PathBuf>,
    /// How often the handle asks Slurm for the job's state.
    pub poll: Duration,
    /// Extra environment for the Slurm commands (e.g. `SLURM_CONF`).
    pub env: BTreeMap<String, String>,
}

impl SlurmConfig {
    pub fn new(shared_dir: impl Into<PathBuf>) -> Self {
        SlurmConfig {
            shared_dir: shared_dir.into(),
            partition: None,
            account: None,
            sandbox: None,
            poll: Duration::from_millis(500),
            env: BTreeMap::new(),
        }
    }
}

pub struct SlurmExecutor {
    cfg: Arc<SlurmConfig>,
}

impl SlurmExecutor {
    /// Checks that the Slurm commands are installed and the controller answers.
    pub async fn connect(cfg: SlurmConfig) -> Result<SlurmExecutor, ExecError> {
        let shared = cfg.shared_dir.to_str().unwrap_or("");
        if shared.is_empty() || shared.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ExecError::Invalid(format!(
                "the shared directory {} must be a UTF-8 path without spaces (Slurm reads it \
                 from #SBATCH lines)",
                cfg.shared_dir.display()
            )));
        }
        std::fs::create_dir_all(cfg.shared_dir.join("slurm"))
            .map_err(io_err("create", cfg.shared_dir.join("slurm")))?;
        let cfg = Arc::new(cfg);
        slurm(&cfg, "sinfo", &["-h", "-o", "%P"], &BTreeMap::new()).await?;
        Ok(SlurmExecutor { cfg })
    }

    fn run_dir(&self, run_id: &str) -> PathBuf {
        self.cfg.shared_dir.join("slurm").join(run_id)
    }
}

fn slurm_err(what: String) -> ExecError {
    ExecError::Unavailable { what }
}

/// Runs a Slurm command; its stdout. A missing command or a controller that does not answer
/// are clear errors.
async fn slurm(
    cfg: &SlurmConfig,
    program: &str,
    args: &[&str],
    job_env: &BTreeMap<String, String>,
) -> Result<String, ExecError> {
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .envs(&cfg.env)
        .stdin(std::process::Stdio::null());
    if !job_env.is_empty() {
        // sbatch passes its own environment to the job (--export=ALL): only what the job gets.
        // Slurm's own settings (SLURM_CONF, ...) stay: sbatch needs them to find the cluster.
        let slurm_vars = std::env::vars().filter(|(k, _)| k.starts_with("SLURM_"));
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(slurm_vars)
            .envs(&cfg.env)
            .envs(job_env);
    }
    let out = c.output().await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            slurm_err(format!(
                "{program} is not installed (install Slurm's client commands, e.g. Debian's \
                 slurm-client, and point SLURM_CONF at the cluster's slurm.conf)"
            ))
        } else {
            slurm_err(format!("cannot run {program}: {e}"))
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let hint = if err.contains("Unable to contact slurm controller")
            || err.contains("Connection refused")
            || err.contains("Socket timed out")
        {
            " (is slurmctld running and SLURM_CONF pointing at its slurm.conf?)"
        } else {
            ""
        };
        return Err(slurm_err(format!(
            "{program} {} failed: {err}{hint}",
            args.join(" ")
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A value for the batch script: a shell word.
fn sh(s: &str) -> Result<String, ExecError> {
    crate::render::shell_quote(s).map_err(ExecError::Invalid)
}

fn sh_path(p: &Path) -> Result<String, ExecError> {
    sh(p.to_str()
        .ok_or_else(|| ExecError::Invalid(format!("{} is not UTF-8", p.display())))?)
}

/// The batch script of a run.
fn batch_script(
    cfg: &SlurmConfig,
    req: &RunRequest,
    run_id: &str,
    run_dir: &Path,
    grace: Duration,
) -> Result<String, ExecError> {
    let mut s = String::from("#!/bin/bash\n");
    let mut directive = |k: &str, v: String| {
        if v.contains('\n') {
            return Err(ExecError::Invalid(format!("--{k} holds a newline")));
        }
        s.push_str(&format!("#SBATCH --{k}={v}\n"));
        Ok(())
    };
    directive("job-name", format!("jobpack-{run_id}"))?;
    directive("output", run_dir.join("slurm.out").display().to_string())?;
    directive("chdir", req.job_dir.display().to_string())?;
    directive("export", "ALL".into())?;
    if let Some(t) = req.limits.timeout {
        // Whole minutes, rounded up, and one more: the script's `timeout` is the precise limit.
        directive("time", (t.as_secs().div_ceil(60) + 1).to_string())?;
    }
    if let Some(m) = req.limits.memory_bytes {
        directive("mem", format!("{}M", m.div_ceil(1 << 20).max(1)))?;
    }
    if let Some(c) = req.limits.cpu_percent {
        directive("cpus-per-task", c.div_ceil(100).max(1).to_string())?;
    }
    if let Some(p) = &cfg.partition {
        directive("partition", p.clone())?;
    }
    if let Some(a) = &cfg.account {
        directive("account", a.clone())?;
    }
    let mut cmd: Vec<String> = Vec::new();
    if let Some(t) = req.limits.timeout {
        cmd.extend([
            "timeout".into(),
            "--signal=TERM".into(),
            format!("--kill-after={}", grace.as_secs().max(1)),
            format!("{:.3}", t.as_secs_f64()),
        ]);
    }
    match &cfg.sandbox {
        Some(jobpack) => {
            cmd.push(jobpack.display().to_string());
            cmd.extend(["run".into(), req.job_dir.display().to_string()]);
            if let Some(p) = req.limits.pids {
                cmd.extend(["--pids".into(), p.to_string()]);
            }
            if req.network == super::NetworkPolicy::Host {
                cmd.extend(["--network".into(), "host".into()]);
            }
        }
        None => cmd.extend(req.argv.iter().cloned()),
    }
    let cmd = cmd
        .iter()
        .map(|a| sh(a))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    let status = sh_path(&run_dir.join("exit_status"))?;
    s.push_str(&format!(
        "# Generated by jobpack for run {run_id}: runs the job, then records its exit status.\n\
         cd {dir} || exit 1\n\
         {cmd} &\n\
         child=$!\n\
         trap 'kill -TERM $child 2>/dev/null' TERM INT\n\
         wait $child; status=$?\n\
         while kill -0 $child 2>/dev/null; do wait $child; status=$?; done\n\
         echo $status > {status}.tmp && mv {status}.tmp {status}\n\
         exit $status\n",
        dir = sh_path(&req.job_dir)?,
    ));
    Ok(s)
}

impl Executor for SlurmExecutor {
    fn start(&self, req: RunRequest) -> BoxFuture<'_, Result<Box<dyn RunHandle>, ExecError>> {
        async move {
            if !req.job_dir.is_dir() {
                return Err(ExecError::Invalid(format!(
                    "the job directory {} does not exist",
                    req.job_dir.display()
                )));
            }
            if !req.mounts.is_empty() {
                return Err(ExecError::Invalid(
                    "the Slurm backend cannot mount directories into a job (workflow deps/): \
                     run workflows with the local executor"
                        .into(),
                ));
            }
            let run_id = req
                .run_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let dir = self.run_dir(&run_id);
            // A retry of a named run starts clean.
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let script = batch_script(&self.cfg, &req, &run_id, &dir, Duration::from_secs(5))?;
            let script_path = dir.join("job.sbatch");
            std::fs::write(&script_path, script).map_err(io_err("write", &script_path))?;
            let mut env = req.env.clone();
            env.extend(req.secret_env.clone());
            env.insert("HOME".into(), req.job_dir.display().to_string());
            let out = slurm(
                &self.cfg,
                "sbatch",
                &["--parsable", &script_path.display().to_string()],
                &env,
            )
            .await?;
            let job_id = out.trim().split(';').next().unwrap_or("").to_owned();
            if job_id.is_empty() || !job_id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(slurm_err(format!("sbatch printed no job id: {out:?}")));
            }
            let id_file = dir.join("slurm_job_id");
            std::fs::write(&id_file, &job_id).map_err(io_err("write", &id_file))?;
            Ok(
                Box::new(SlurmHandle::spawn(self.cfg.clone(), req, dir, job_id)?)
                    as Box<dyn RunHandle>,
            )
        }
        .boxed()
    }

    /// Cancels the run's Slurm job if it is still there and removes its run directory.
    fn reap(&self, run_id: &str) -> Result<bool, ExecError> {
        let dir = self.run_dir(run_id);
        if !dir.exists() {
            return Ok(false);
        }
        if let Ok(job_id) = std::fs::read_to_string(dir.join("slurm_job_id")) {
            let _ = std::process::Command::new("scancel")
                .arg(job_id.trim())
                .envs(&self.cfg.env)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        std::fs::remove_dir_all(&dir).map_err(io_err("remove", &dir))?;
        Ok(true)
    }

    fn attach(
        &self,
        req: RunRequest,
    ) -> BoxFuture<'_, Result<Option<Box<dyn RunHandle>>, ExecError>> {
        async move {
            let Some(run_id) = req.run_id.clone() else {
                return Ok(None);
            };
            let dir = self.run_dir(&run_id);
            let Ok(job_id) = std::fs::read_to_string(dir.join("slurm_job_id")) else {
                return Ok(None);
            };
            let job_id = job_id.trim().to_owned();
            Ok(Some(
                Box::new(SlurmHandle::spawn(self.cfg.clone(), req, dir, job_id)?)
                    as Box<dyn RunHandle>,
            ))
        }
        .boxed()
    }
}

/// A job in Slurm, followed by a task.
pub struct SlurmHandle {
    logs: LogStream,
    outcome: watch::Receiver<Option<Outcome>>,
    cfg: Arc<SlurmConfig>,
    job_id: String,
    cancelled: Arc<AtomicBool>,
}

/// Slurm's view of a job.
#[derive(Debug, Clone, PartialEq)]
struct JobInfo {
    state: String,
    /// `ExitCode=N:S`: the batch script's exit code and signal.
    exit: Option<(i32, i32)>,
    /// Seconds from submission to start, and of running, as Slurm recorded them (scontrol).
    queued_secs: Option<f64>,
    run_secs: Option<f64>,
}

/// Seconds since the epoch of a Slurm timestamp (`2026-11-23T16:50:01`, the controller's local
/// time: only differences between two of them are used).
fn slurm_time(t: &str) -> Option<i64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut hms = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// `RunTime=[D-]HH:MM:SS` in seconds.
fn slurm_duration(t: &str) -> Option<f64> {
    let (days, hms) = match t.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().ok()?, rest),
        None => (0.0, t),
    };
    let mut p = hms.split(':').map(|x| x.parse::<f64>().ok());
    let (h, m, s) = (p.next()??, p.next()??, p.next()??);
    Some(days * 86_400.0 + h * 3600.0 + m * 60.0 + s)
}

async fn job_info(cfg: &SlurmConfig, job_id: &str) -> Option<JobInfo> {
    // While pending or running: squeue. Afterwards: scontrol (kept MinJobAge), then sacct.
    let none = BTreeMap::new();
    if let Ok(out) = slurm(cfg, "scontrol", &["show", "job", "-o", job_id], &none).await {
        let field = |k: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_owned)
        };
        if let Some(state) = field("JobState=") {
            let exit = field("ExitCode=").and_then(|e| {
                let (c, s) = e.split_once(':')?;
                Some((c.parse().ok()?, s.parse().ok()?))
            });
            let time = |k: &str| field(k).and_then(|t| slurm_time(&t));
            let queued_secs = match (time("SubmitTime="), time("StartTime=")) {
                (Some(a), Some(b)) if b >= a => Some((b - a) as f64),
                _ => None,
            };
            let run_secs = field("RunTime=").and_then(|t| slurm_duration(&t));
            return Some(JobInfo {
                state,
                exit,
                queued_secs,
                run_secs,
            });
        }
    }
    let out = slurm(
        cfg,
        "sacct",
        &["-j", job_id, "-n", "-X", "-P", "-o", "State,ExitCode"],
        &none,
    )
    .await
    .ok()?;
    let line = out.lines().next()?;
    let (state, exit) = line.split_once('|')?;
    let exit = exit
        .split_once(':')
        .and_then(|(c, s)| Some((c.parse().ok()?, s.parse().ok()?)));
    Some(JobInfo {
        state: state.split_whitespace().next()?.to_owned(),
        exit,
        queued_secs: None,
        run_secs: None,
    })
}

const ACTIVE: &[&str] = &[
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
];

impl SlurmHandle {
    fn spawn(
        cfg: Arc<SlurmConfig>,
        req: RunRequest,
        dir: PathBuf,
        job_id: String,
    ) -> Result<SlurmHandle, ExecError> {
        let (writer, stream) = LogWriter::create(&req.log_path, req.limits.log_bytes)
            .map_err(io_err("create the log", &req.log_path))?;
        let (tx, rx) = watch::channel(None);
        let cancelled = Arc::new(AtomicBool::new(false));
        let h = SlurmHandle {
            logs: stream,
            outcome: rx,
            cfg: cfg.clone(),
            job_id: job_id.clone(),
            cancelled: cancelled.clone(),
        };
        let secrets: Vec<Vec<u8>> = req
            .secret_env
            .values()
            .map(|v| v.as_bytes().to_vec())
            .collect();
        tokio::spawn(follow(
            cfg, req, dir, job_id, writer, secrets, cancelled, tx,
        ));
        Ok(h)
    }
}

/// Appends what is new in Slurm's output file to the log; false once the log cap is hit.
fn pump(out: &Path, offset: &mut u64, masker: &mut Masker, writer: &LogWriter, last: bool) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(out)
        && f.seek(SeekFrom::Start(*offset)).is_ok()
    {
        let _ = f.read_to_end(&mut buf);
    }
    *offset += buf.len() as u64;
    let mut masked = Vec::with_capacity(buf.len());
    masker.push(&buf, &mut masked);
    if last {
        masker.finish(&mut masked);
    }
    masked.is_empty() || writer.append(&masked).unwrap_or(false)
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    cfg: Arc<SlurmConfig>,
    req: RunRequest,
    dir: PathBuf,
    job_id: String,
    writer: LogWriter,
    secrets: Vec<Vec<u8>>,
    cancelled: Arc<AtomicBool>,
    tx: watch::Sender<Option<Outcome>>,
) {
    let out_file = dir.join("slurm.out");
    let mut offset = 0u64;
    let mut masker = Masker::new(&secrets);
    let submitted = Instant::now();
    let mut started: Option<Instant> = None;
    let mut over_cap = false;
    let none = BTreeMap::new();
    let mut misses = 0;
    let info = loop {
        let state = slurm(&cfg, "squeue", &["-h", "-j", &job_id, "-o", "%T"], &none)
            .await
            .map(|s| s.trim().to_owned());
        match state.as_deref() {
            Ok(s) if ACTIVE.contains(&s) => {
                misses = 0;
                if s != "PENDING" && started.is_none() {
                    started = Some(Instant::now());
                }
            }
            _ => {
                // Gone from the queue (or the controller did not answer): the final state?
                match job_info(&cfg, &job_id).await {
                    Some(i) if !ACTIVE.contains(&i.state.as_str()) => break Some(i),
                    Some(_) => {}
                    None => {
                        // Forgotten by Slurm (MinJobAge passed while the server was down, no
                        // accounting): the exit status the script wrote still says how it ended.
                        if let Some(code) = std::fs::read_to_string(dir.join("exit_status"))
                            .ok()
                            .and_then(|s| s.trim().parse::<i32>().ok())
                        {
                            let state = if code == 0 { "COMPLETED" } else { "FAILED" };
                            break Some(JobInfo {
                                state: state.into(),
                                exit: Some((code, 0)),
                                queued_secs: None,
                                run_secs: None,
                            });
                        }
                    }
                }
                // Only a controller that answers but no longer knows the job counts towards
                // giving up; while it does not answer at all, the job may well still run.
                if state.is_ok() {
                    misses += 1;
                    if misses > 120 {
                        break None;
                    }
                }
            }
        }
        if !pump(&out_file, &mut offset, &mut masker, &writer, false) && !over_cap {
            over_cap = true;
            let _ = slurm(&cfg, "scancel", &[&job_id], &none).await;
        }
        tokio::time::sleep(cfg.poll).await;
    };
    // The node may write the last lines just before the job leaves the queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    if !pump(&out_file, &mut offset, &mut masker, &writer, true) {
        over_cap = true;
    }
    writer.close();
    let exit_status: Option<i32> = std::fs::read_to_string(dir.join("exit_status"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    // What the poll saw, else (a job shorter than a poll) what Slurm recorded, to the second.
    let wall = started
        .map(|s| s.elapsed().as_secs_f64())
        .or_else(|| info.as_ref().and_then(|i| i.run_secs))
        .unwrap_or(0.0);
    let queued = started
        .map(|s| (s - submitted).as_secs_f64())
        .or_else(|| info.as_ref().and_then(|i| i.queued_secs));
    let (status, exit_code, signal, reason) = outcome_of(
        info.as_ref(),
        exit_status,
        cancelled.load(Ordering::SeqCst),
        over_cap,
        req.limits.timeout.is_some(),
    );
    let _ = tx.send(Some(Outcome {
        status,
        exit_code,
        signal,
        reason,
        wall_time_secs: wall,
        cpu_time_secs: None,
        peak_memory_bytes: None,
        log_bytes: writer.len(),
        log_error: writer
            .lost()
            .map(|(n, e)| format!("{n} bytes of output were lost: {e}")),
        queued_secs: queued,
        isolation: IsolationReport {
            level: format!("slurm job {job_id}"),
            cgroup: "slurm".into(),
            ..IsolationReport::default()
        },
    }));
}

/// Maps Slurm's final state and the script's exit status onto jobpack's statuses.
fn outcome_of(
    info: Option<&JobInfo>,
    exit_status: Option<i32>,
    cancelled: bool,
    over_cap: bool,
    had_timeout: bool,
) -> (RunStatus, Option<i32>, Option<i32>, Option<String>) {
    let Some(info) = info else {
        return (
            RunStatus::Failed,
            None,
            None,
            Some("Slurm no longer knows the job and it left no exit status".into()),
        );
    };
    let code = exit_status.or(info.exit.map(|(c, _)| c));
    let state = info.state.as_str();
    if over_cap {
        return (
            RunStatus::LimitExceeded,
            code,
            None,
            Some("the log exceeded its limit".into()),
        );
    }
    if cancelled || state.starts_with("CANCELLED") {
        return (RunStatus::Stopped, code, None, Some("cancelled".into()));
    }
    match state {
        "OUT_OF_MEMORY" => (
            RunStatus::OomKilled,
            code,
            Some(9),
            Some("Slurm: the job ran out of memory (OUT_OF_MEMORY)".into()),
        ),
        "TIMEOUT" | "DEADLINE" => (
            RunStatus::TimedOut,
            code,
            None,
            Some(format!("Slurm: the job reached its time limit ({state})")),
        ),
        _ if had_timeout && code == Some(124) => (
            RunStatus::TimedOut,
            code,
            None,
            Some("the job reached its time limit".into()),
        ),
        "COMPLETED" if code == Some(0) => (RunStatus::Completed, Some(0), None, None),
        _ => (
            RunStatus::Failed,
            code,
            info.exit.map(|(_, s)| s).filter(|s| *s != 0),
            Some(match code {
                Some(c) => format!("exited with status {c} (Slurm: {state})"),
                None => format!("Slurm: {state}"),
            }),
        ),
    }
}

impl RunHandle for SlurmHandle {
    fn logs(&self) -> LogStream {
        self.logs.clone()
    }

    fn wait(&self) -> BoxFuture<'static, Outcome> {
        super::wait_for_outcome(self.outcome.clone())
    }

    fn cancel(&self, grace: Duration) {
        self.cancelled.store(true, Ordering::SeqCst);
        let (cfg, id) = (self.cfg.clone(), self.job_id.clone());
        tokio::spawn(async move {
            let none = BTreeMap::new();
            let _ = slurm(&cfg, "scancel", &["--signal=TERM", "--full", &id], &none).await;
            tokio::time::sleep(grace).await;
            let _ = slurm(&cfg, "scancel", &[&id], &none).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: &str, code: i32) -> JobInfo {
        JobInfo {
            state: state.into(),
            exit: Some((code, 0)),
            queued_secs: None,
            run_secs: None,
        }
    }

    #[test]
    fn slurm_times_and_durations_parse() {
        let a = slurm_time("2026-11-23T16:50:01").unwrap();
        assert_eq!(
            slurm_time("2026-11-24T00:00:02").unwrap() - a,
            7 * 3600 + 9 * 60 + 61
        );
        assert_eq!(slurm_time("1970-01-01T00:00:00"), Some(0));
        assert_eq!(slurm_time("2000-03-01T00:00:00"), Some(951_868_800));
        assert_eq!(slurm_time("Unknown"), None);
        assert_eq!(slurm_duration("00:01:24"), Some(84.0));
        assert_eq!(slurm_duration("1-02:00:00"), Some(93_600.0));
    }

    #[test]
    fn slurm_states_map_onto_jobpack_statuses() {
        let s = |i: JobInfo, exit: Option<i32>, cancelled: bool| {
            outcome_of(Some(&i), exit, cancelled, false, true).0
        };
        assert_eq!(
            s(info("COMPLETED", 0), Some(0), false),
            RunStatus::Completed
        );
        assert_eq!(s(info("FAILED", 3), Some(3), false), RunStatus::Failed);
        assert_eq!(
            outcome_of(Some(&info("FAILED", 3)), Some(3), false, false, true).1,
            Some(3)
        );
        assert_eq!(
            s(info("OUT_OF_MEMORY", 0), None, false),
            RunStatus::OomKilled
        );
        assert_eq!(s(info("TIMEOUT", 0), None, false), RunStatus::TimedOut);
        assert_eq!(
            s(info("FAILED", 124), Some(124), false),
            RunStatus::TimedOut
        );
        assert_eq!(s(info("CANCELLED", 0), None, false), RunStatus::Stopped);
        assert_eq!(s(info("COMPLETED", 0), Some(143), true), RunStatus::Stopped);
        assert_eq!(s(info("NODE_FAIL", 0), None, false), RunStatus::Failed);
        assert_eq!(
            outcome_of(None, None, false, false, false).0,
            RunStatus::Failed
        );
    }

    #[test]
    fn the_batch_script_carries_limits_and_quotes_everything() {
        let mut cfg = SlurmConfig::new("/shared");
        cfg.partition = Some("debug".into());
        let mut req = RunRequest::new("/shared/jobs/a b/work", "/data/job.log");
        req.limits.timeout = Some(Duration::from_secs(90));
        req.limits.memory_bytes = Some(64 << 20);
        req.limits.cpu_percent = Some(150);
        req.argv = vec!["./run.sh".into(), "it's".into()];
        let s = batch_script(
            &cfg,
            &req,
            "r1",
            Path::new("/shared/slurm/r1"),
            Duration::from_secs(5),
        )
        .unwrap();
        for line in [
            "#SBATCH --time=3\n",
            "#SBATCH --mem=64M\n",
            "#SBATCH --cpus-per-task=2\n",
            "#SBATCH --partition=debug\n",
            "#SBATCH --chdir=/shared/jobs/a b/work\n",
            "#SBATCH --output=/shared/slurm/r1/slurm.out\n",
            "cd '/shared/jobs/a b/work' || exit 1\n",
            "timeout '--signal=TERM' '--kill-after=5' 90.000 ./run.sh \"it's\" &\n",
        ] {
            assert!(s.contains(line), "{line:?} not in\n{s}");
        }
    }
}
