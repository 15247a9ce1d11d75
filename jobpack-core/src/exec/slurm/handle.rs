//! A submitted Slurm job as a [`RunHandle`]: polling `squeue`/`scontrol`/`sacct` for its state,
//! tailing its output file into the job's log, and its outcome.

use super::*;

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
pub(super) struct JobInfo {
    pub(super) state: String,
    /// `ExitCode=N:S`: the batch script's exit code and signal.
    pub(super) exit: Option<(i32, i32)>,
    /// Seconds from submission to start, and of running, as Slurm recorded them (scontrol).
    pub(super) queued_secs: Option<f64>,
    pub(super) run_secs: Option<f64>,
}

/// Seconds since the epoch of a Slurm timestamp (`2026-11-23T16:50:01`, the controller's local
/// time: only differences between two of them are used).
pub(super) fn slurm_time(t: &str) -> Option<i64> {
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
pub(super) fn slurm_duration(t: &str) -> Option<f64> {
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

pub(super) const ACTIVE: &[&str] = &[
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
    pub(super) fn spawn(
        cfg: Arc<SlurmConfig>,
        req: RunRequest,
        dir: PathBuf,
        job_id: String,
    ) -> Result<SlurmHandle, ExecError> {
        let (writer, stream) = LogWriter::create(&req.log_path, req.limits.log_bytes)
            .map_err(io_err("create the log", &req.log_path))?;
        writer.set_sync(req.log_sync);
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
pub(super) fn pump(
    out: &Path,
    offset: &mut u64,
    masker: &mut Masker,
    writer: &LogWriter,
    last: bool,
) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(out)
        && f.seek(SeekFrom::Start(*offset)).is_ok()
    {
        // What was read before an error is kept; the next poll reads on from there.
        if let Err(e) = f.read_to_end(&mut buf) {
            tracing::debug!("reading {}: {e}", out.display());
        }
    }
    *offset += buf.len() as u64;
    let mut masked = Vec::with_capacity(buf.len());
    masker.push(&buf, &mut masked);
    if last {
        masker.finish(&mut masked);
    }
    masked.is_empty() || writer.append(&masked, Stream::Stdout).unwrap_or(false)
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
    let mut cap_cancel_sent = false;
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
        if !pump(&out_file, &mut offset, &mut masker, &writer, false) {
            over_cap = true;
        }
        if over_cap && !cap_cancel_sent {
            // Over the log cap: the job is cancelled, asked again at the next poll if that fails.
            match slurm(&cfg, "scancel", &[&job_id], &none).await {
                Ok(_) => cap_cancel_sent = true,
                Err(e) => tracing::warn!("cannot cancel Slurm job {job_id} over its log cap: {e}"),
            }
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
        log_error: writer.error(),
        queued_secs: queued,
        peaks: None,
        isolation: IsolationReport {
            level: format!("slurm job {job_id}"),
            cgroup: "slurm".into(),
            ..IsolationReport::default()
        },
    }));
}

/// Maps Slurm's final state and the script's exit status onto jobpack's statuses.
pub(super) fn outcome_of(
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
        crate::exec::wait_for_outcome(self.outcome.clone())
    }

    fn cancel(&self, grace: Duration) {
        self.cancelled.store(true, Ordering::SeqCst);
        let (cfg, id) = (self.cfg.clone(), self.job_id.clone());
        tokio::spawn(async move {
            let none = BTreeMap::new();
            if let Err(e) = slurm(&cfg, "scancel", &["--signal=TERM", "--full", &id], &none).await {
                tracing::warn!("cannot send SIGTERM to Slurm job {id}: {e}");
            }
            tokio::time::sleep(grace).await;
            // After the grace period; a job that has ended in it makes this fail, harmlessly.
            if let Err(e) = slurm(&cfg, "scancel", &[&id], &none).await {
                tracing::debug!("scancel {id} after the grace period: {e}");
            }
        });
    }
}
