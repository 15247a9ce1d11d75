//! Supervising a started run to its end: timeout, cancel, log cap, disk quota, then usage,
//! cleanup and the outcome.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::*;

pub(super) struct Supervisor {
    pub(super) proc_: Option<Proc>,
    pub(super) cgroup: Option<Cgroup>,
    pub(super) root_dir: Option<PathBuf>,
    pub(super) writer: LogWriter,
    pub(super) threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    pub(super) timeout: Option<Duration>,
    pub(super) limits: Limits,
    pub(super) job_dir: PathBuf,
    pub(super) started: Instant,
    pub(super) report: IsolationReport,
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
    use crate::exec::sandbox::Report;
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
    // wait4, not nix's waitpid: it also gives the child's resource usage (nix has no wait4).
    let mut status = 0;
    // SAFETY: rusage is plain data; zero is a valid value.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: wait4 on our own child into valid out-pointers.
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
    pub(super) async fn run(
        mut self,
        mut cancel_rx: mpsc::UnboundedReceiver<Duration>,
        cap_hit: Arc<Notify>,
        outcome: watch::Sender<Option<Outcome>>,
    ) {
        let proc_ = self.proc_.take().expect("set at start");
        let pid = proc_.pid();
        let sandboxed = matches!(proc_, Proc::Sandbox { .. });
        // Our child (not reaped until `wait_exit` returns) or its process group; a failure
        // means it is already gone.
        let signal = move |sig: Signal| {
            let target = Pid::from_raw(if sandboxed { pid } else { -pid });
            kill(target, sig).ok();
        };
        let mut exit = tokio::task::spawn_blocking(move || wait_exit(proc_));
        let deadline = self.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut kill_at: Option<tokio::time::Instant> = None;
        let mut why: Option<RunStatus> = None;
        // Which limit a `limit_exceeded` ran into, said as the reason.
        let mut exceeded: Option<String> = None;
        let mut disk_tick = tokio::time::interval(crate::exec::DISK_CHECK_INTERVAL);
        disk_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let disk_limit = self.limits.disk_bytes;
        let far = tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86400);

        let exited = loop {
            tokio::select! {
                e = &mut exit => break e.ok(),
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() && why.is_none() => {
                    why = Some(RunStatus::TimedOut);
                    signal(Signal::SIGTERM);
                    kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                g = cancel_rx.recv(), if why.is_none() => {
                    if let Some(grace) = g {
                        why = Some(RunStatus::Stopped);
                        signal(Signal::SIGTERM);
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
                        crate::tree::Tree::open(&dir)?.usage(max, crate::exec::MAX_DISK_ENTRIES)
                    })
                    .await;
                    let over = match used {
                        Ok(Ok(u)) if u.bytes > max => Some(format!(
                            "limits.disk_bytes: its directory used more than {max} bytes of disk"
                        )),
                        Ok(Ok(u)) if u.entries > crate::exec::MAX_DISK_ENTRIES => Some(format!(
                            "limits.disk_bytes: its directory holds more than {} files",
                            crate::exec::MAX_DISK_ENTRIES
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
                    signal(Signal::SIGKILL);
                    if let Some(cg) = &self.cgroup
                        && let Err(e) = cg.kill_all()
                    {
                        // The cgroup is emptied again when it is removed, below.
                        tracing::warn!("cannot kill what is left in the job's cgroup: {e}");
                    }
                }
            }
        };

        // Whatever is left of the job goes now: the rest of its process group in the fallback;
        // in the sandbox pid 1 already took its namespace down; the cgroup catches any escapee.
        if !sandboxed {
            signal(Signal::SIGKILL);
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
        // Every thread is joined, the ones after a panicked one too.
        let panicked = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .map(|t| t.join())
                .filter(Result::is_err)
                .count()
        })
        .await;
        if !matches!(panicked, Ok(0)) {
            cleanup_errors.push("a log capture thread panicked".to_owned());
        }
        self.writer.close();
        if let Some(d) = &self.root_dir
            && let Err(e) = remove_tree(d)
        {
            cleanup_errors.push(format!("cannot remove {}: {e}", d.display()));
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
            log_error: self.writer.error(),
            queued_secs: None,
            peaks: None,
            isolation: self.report.clone(),
        };
        let _ = outcome.send(Some(o));
    }
}
