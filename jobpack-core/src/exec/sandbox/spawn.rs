//! Starting the sandbox from the parent's side: the pipes, the fork-like `clone()` into new
//! namespaces, the uid/gid maps and the cgroup before the child is let go, and pid 1's reports.

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::spawner::{self, Asked};
use super::{JOB_UID, Plan, child};
use crate::exec::ExecError;
use crate::exec::cgroup::Cgroup;
use crate::io_error::io_err;

/// A started sandbox.
pub(crate) struct Spawned {
    /// pid 1 of the job's namespace, as the host sees it.
    pub pid: i32,
    pub stdout: File,
    pub stderr: File,
    /// Messages from pid 1 (see [`Report`]).
    pub report: File,
}

/// What pid 1 reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    SetupFailed {
        stage: u32,
        errno: i32,
    },
    ExecFailed {
        errno: i32,
    },
    Running,
    /// The job's main process ended with this wait status; `file_too_big`: some process of the
    /// job was killed by SIGXFSZ (it wrote past RLIMIT_FSIZE).
    Exited {
        status: i32,
        file_too_big: bool,
    },
}

impl Report {
    /// Waits at most `limit` for a message; `None` at EOF or when the time is up.
    pub(crate) fn read_within(f: &mut File, limit: std::time::Duration) -> Option<Report> {
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(limit).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        Self::read(f)
    }

    /// Reads one message; `None` at EOF.
    pub(crate) fn read(f: &mut File) -> Option<Report> {
        let mut b = [0u8; child::MSG_LEN];
        f.read_exact(&mut b).ok()?;
        let a = u32::from_ne_bytes([b[1], b[2], b[3], b[4]]);
        let v = i32::from_ne_bytes([b[5], b[6], b[7], b[8]]);
        Some(match b[0] {
            child::MSG_SETUP => Report::SetupFailed { stage: a, errno: v },
            child::MSG_EXEC => Report::ExecFailed { errno: v },
            child::MSG_RUNNING => Report::Running,
            _ => Report::Exited {
                status: v,
                file_too_big: a & child::EXIT_FILE_TOO_BIG != 0,
            },
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| ExecError::Setup {
        stage: "create a pipe".into(),
        source: e.into(),
    })
}

/// The host ids a job's uid/gid 1000 map to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdMap {
    pub host_uid: u32,
    pub host_gid: u32,
}

/// Creates the sandbox and starts pid 1 in it. Blocking (call from a blocking thread). The job
/// does not run until pid 1 reports `Running`, which the caller reads from `report`.
pub(crate) fn spawn(
    plan: &Plan,
    ids: IdMap,
    network_none: bool,
    cgroup: Option<&Cgroup>,
) -> Result<Spawned, ExecError> {
    use std::os::fd::AsRawFd;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (sync_r, sync_w) = pipe()?;
    let (rep_r, rep_w) = pipe()?;
    let devnull = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io_err("open", "/dev/null"))?;
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if network_none {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let child_fds = [devnull.into(), out_w, err_w, sync_r, rep_w];
    // From the spawner when there is one (it answers with pid 1's pid: our child all the same),
    // else cloned from this process.
    let bits = flags.bits() as libc::c_ulong;
    let asked = spawner::get().map(|s| {
        let raw = child_fds.each_ref().map(|f| f.as_raw_fd());
        s.clone_pid1(plan, bits, raw)
    });
    let cloned = match asked {
        Some(Asked::Cloned(pid)) => Ok(pid),
        Some(Asked::Failed(errno)) => Err(errno),
        Some(Asked::Lost(source)) => {
            return Err(ExecError::Setup {
                stage: "have the sandbox spawner clone pid 1".into(),
                source,
            });
        }
        None | Some(Asked::NotTaken) => spawner::clone_here(plan, bits, &child_fds),
    };
    let pid = cloned.map_err(|errno| ExecError::IsolationUnavailable {
        what: format!(
            "cannot create namespaces (clone: {})",
            std::io::Error::from_raw_os_error(errno)
        ),
    })?;
    drop(child_fds);

    let kill_child = |e: ExecError| {
        // Our own child, not yet reaped: the pid cannot have been reused.
        let pid = Pid::from_raw(pid);
        if kill(pid, Signal::SIGKILL).is_ok() {
            // Reaped here; an error would mean it already was.
            waitpid(pid, None).ok();
        }
        e
    };
    let write_proc = |name: &str, text: String| {
        let path = PathBuf::from(format!("/proc/{pid}/{name}"));
        std::fs::write(&path, text).map_err(|source| ExecError::Setup {
            stage: format!("write {}", path.display()),
            source,
        })
    };
    let setup = (|| {
        if !plan.setgroups {
            write_proc("setgroups", "deny".into())?;
        }
        write_proc("uid_map", format!("{JOB_UID} {} 1\n", ids.host_uid))?;
        write_proc("gid_map", format!("{JOB_UID} {} 1\n", ids.host_gid))?;
        // "g": pid 1 builds the root while we move it into its cgroup (the move may wait for an
        // RCU grace period); "c": the move is done, pid 1 may start the job.
        let mut f = File::from(sync_w);
        let release = |f: &mut File, what: &[u8]| {
            std::io::Write::write_all(f, what).map_err(|source| ExecError::Setup {
                stage: "release the sandbox".into(),
                source,
            })
        };
        release(&mut f, b"g")?;
        if let Some(cg) = cgroup {
            cg.add(pid)?;
        }
        release(&mut f, b"c")
    })();
    if let Err(e) = setup {
        return Err(kill_child(e));
    }
    Ok(Spawned {
        pid,
        stdout: File::from(out_r),
        stderr: File::from(err_r),
        report: File::from(rep_r),
    })
}
