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

use super::logs::streams::Stream;
use super::logs::{LogWriter, Masker};
use super::{
    ExecError, Executor, IsolationReport, LogStream, Outcome, RunHandle, RunRequest, RunStatus,
};
use crate::io_error::io_err;

mod handle;
pub use handle::SlurmHandle;

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
            if let Some(r) = &req.rootfs {
                cmd.extend(["--rootfs".into(), r.display().to_string()]);
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
    fn backend(&self) -> &'static str {
        "slurm"
    }

    fn start(&self, req: RunRequest) -> BoxFuture<'_, Result<Box<dyn RunHandle>, ExecError>> {
        async move {
            if !req.job_dir.is_dir() {
                return Err(ExecError::Invalid(format!(
                    "the job directory {} does not exist",
                    req.job_dir.display()
                )));
            }
            if req.rootfs.is_some() && self.cfg.sandbox.is_none() {
                return Err(ExecError::Invalid(
                    "a job with a runtime_fs needs jobpack's sandbox on the node \
                     (--slurm-sandbox): plain Slurm would run it on the node's own root"
                        .into(),
                ));
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
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &dir)(e).into());
                }
                _ => {}
            }
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
            // A job Slurm no longer knows makes scancel fail too: that is logged, not fatal.
            let status = std::process::Command::new("scancel")
                .arg(job_id.trim())
                .envs(&self.cfg.env)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => tracing::warn!("scancel {} while reaping: {s}", job_id.trim()),
                Err(e) => tracing::warn!("cannot run scancel while reaping: {e}"),
            }
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

#[cfg(test)]
mod tests {
    use super::handle::*;
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
