//! The spawner: a small process forked as the server starts, before its runtime's threads and
//! heap exist, that clones each sandbox's pid 1 from itself instead of from the server.
//!
//! Cloning pid 1 from the server copies the server's page tables, and every page the server
//! writes afterwards (while pid 1 lives) takes a copy-on-write fault with a TLB shootdown across
//! the CPUs of its threads: about a tenth of a busy server's CPU. The spawner has one thread and a
//! few megabytes. It clones with `CLONE_PARENT`, so pid 1 is still the server's child: the server
//! writes the uid/gid maps, moves it into its cgroup, releases it and reaps it exactly as when it
//! cloned pid 1 itself ([`super::spawn`]). The spawner does the clone and nothing else.
//!
//! One request at a time (under a lock) over a Unix stream socket pair: a header (payload length,
//! clone flags) that carries the child's five fds as `SCM_RIGHTS`, then the [`Plan`], encoded;
//! the answer is pid 1's pid, or the clone's errno. The spawner exits when the server's end
//! closes and is killed when the thread that started it ends (`PR_SET_PDEATHSIG`); it stays in
//! the server's process group and ignores a terminal's signals. When it is gone, [`super::spawn`]
//! clones from the server as it did before there was a spawner.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::wire::{decode, encode, ulong};
use super::{Plan, child};
use crate::exec::ExecError;

/// The five fds a pid 1 starts with (see [`child::Fds`]).
const FDS: usize = 5;
/// A request larger than this is refused (argv and environment are bounded far below it).
const MAX_REQUEST: usize = 64 << 20;
/// How long the server waits for the spawner to take a request or answer it before it gives the
/// spawner up (a clone takes a millisecond; only a stopped or wedged spawner is this slow).
const ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// What became of a request to the spawner.
pub(crate) enum Asked {
    /// pid 1 runs (waiting to be released), the caller's child.
    Cloned(i32),
    /// The clone failed with this errno.
    Failed(i32),
    /// The spawner did not get the request (it is gone): nothing was cloned, and the caller may
    /// clone pid 1 itself. The spawner is given up.
    NotTaken,
    /// The request was sent but not answered (the spawner died or wedged): a pid 1 may exist
    /// with the request's fds, so the caller must not reuse them. The spawner is given up.
    Lost(std::io::Error),
}

/// The server's end of the spawner.
pub(crate) struct Spawner {
    sock: Mutex<UnixStream>,
    pid: i32,
    gone: AtomicBool,
}

static SPAWNER: OnceLock<Spawner> = OnceLock::new();

/// Starts the spawner, once per process; later calls do nothing. Call it while the process has a
/// single thread (first thing in `main`, before an async runtime): it forks. Without it, each
/// sandbox's pid 1 is cloned from the calling process, which is correct but costs a large
/// process more (see the module's text).
pub fn start_spawner() -> Result<(), ExecError> {
    if SPAWNER.get().is_some() {
        return Ok(());
    }
    if threads() != Some(1) {
        return Err(ExecError::Invalid(
            "the spawner must be started while the process has one thread".into(),
        ));
    }
    let setup = |e: std::io::Error| ExecError::Setup {
        stage: "start the spawner".into(),
        source: e,
    };
    let (ours, theirs) = UnixStream::pair().map_err(setup)?;
    let parent = std::process::id() as i32;
    // SAFETY: the process has one thread (checked above), so the child is an ordinary copy.
    match unsafe { nix::unistd::fork() }.map_err(|e| setup(e.into()))? {
        nix::unistd::ForkResult::Child => {
            drop(ours);
            serve(theirs, parent)
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(theirs);
            ours.set_read_timeout(Some(ANSWER_LIMIT)).map_err(setup)?;
            ours.set_write_timeout(Some(ANSWER_LIMIT)).map_err(setup)?;
            // Set once: the check above and this run on the process's only thread.
            SPAWNER
                .set(Spawner {
                    sock: Mutex::new(ours),
                    pid: child.as_raw(),
                    gone: AtomicBool::new(false),
                })
                .ok();
            Ok(())
        }
    }
}

/// The running spawner, if this process started one and it still answers.
pub(crate) fn get() -> Option<&'static Spawner> {
    SPAWNER.get().filter(|s| !s.gone.load(Ordering::Relaxed))
}

/// The number of threads of this process (`Threads:` of `/proc/self/status`).
fn threads() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
}

impl Spawner {
    /// Has the spawner clone pid 1 with `flags` (namespaces) and `fds` (in [`child::Fds`]'s
    /// order); see [`Asked`].
    pub(crate) fn clone_pid1(&self, plan: &Plan, flags: libc::c_ulong, fds: [RawFd; FDS]) -> Asked {
        let payload = encode(plan);
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&(payload.len() as u64).to_ne_bytes());
        header[8..].copy_from_slice(&ulong(flags).to_ne_bytes());
        // A poisoned lock only means another request's thread panicked; a request it left half
        // sent or unanswered has made that thread give the spawner up.
        let mut sock = self.sock.lock().unwrap_or_else(|p| p.into_inner());
        let sent = (|| -> std::io::Result<()> {
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let iov = [IoSlice::new(&header)];
            let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
            sock.write_all(&header[n..])?;
            sock.write_all(&payload)
        })();
        if let Err(e) = sent {
            // It cannot have cloned anything from a request it did not get whole.
            self.give_up(&e);
            return Asked::NotTaken;
        }
        let mut a = [0u8; 8];
        if let Err(e) = sock.read_exact(&mut a) {
            self.give_up(&e);
            return Asked::Lost(e);
        }
        let pid = i32::from_ne_bytes([a[0], a[1], a[2], a[3]]);
        let errno = i32::from_ne_bytes([a[4], a[5], a[6], a[7]]);
        if pid > 0 {
            Asked::Cloned(pid)
        } else {
            Asked::Failed(errno)
        }
    }

    /// Stops using the spawner: kills it (it is our child) and reaps it.
    fn give_up(&self, why: &std::io::Error) {
        if self.gone.swap(true, Ordering::Relaxed) {
            return;
        }
        tracing::warn!(error = %why, "the sandbox spawner stopped answering; pid 1 is cloned from the server from now on");
        let pid = nix::unistd::Pid::from_raw(self.pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).ok();
        // Our own child: reaped here (an error means it already was).
        nix::sys::wait::waitpid(pid, None).ok();
    }
}

/// The spawner's life: requests until the server's end closes.
fn serve(sock: UnixStream, parent: i32) -> ! {
    use nix::sys::signal::Signal;
    let quit = |code| -> ! {
        // SAFETY: `_exit` ends this process without running the server's destructors or atexit
        // handlers, which belong to the server.
        unsafe { libc::_exit(code) }
    };
    // Die with the thread that forked us; if it is already gone, now.
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != parent
    {
        quit(0);
    }
    // Not a second `jobpack serve` to `ps` or `pgrep -f`.
    child::retitle(super::argv_area(), b"jobpack-spawner", c"jobpack-spawner");
    // In the server's process group still (what kills the group kills pid 1s too), but a
    // terminal's signals are for the server, which decides; pid 1 puts every disposition back
    // to the default (`child::main`).
    for sig in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN is no handler; nothing else in this process touches dispositions.
        unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) }.ok();
    }
    let sock_fd = sock.as_raw_fd();
    let null = nix::fcntl::open(
        c"/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    );
    for fd in 0..3 {
        if let Ok(null) = &null
            && fd != sock_fd
        {
            // SAFETY: dup2 onto stdio: the server's terminal or pipes are not ours to hold open.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    drop(null);
    // Everything else the server had open at the fork (none of it is ours).
    for (lo, hi) in [(3, sock_fd - 1), (sock_fd + 1, i32::MAX)] {
        if lo <= hi {
            // SAFETY: closes descriptors only; `sock` is outside both ranges.
            unsafe { libc::syscall(libc::SYS_close_range, lo as u32, hi as u32, 0u32) };
        }
    }
    let mut sock = sock;
    loop {
        let Some((flags, fds, payload)) = receive(&mut sock) else {
            quit(0)
        };
        // pid 1 is made the server's child (our parent's), which reaps it.
        let flags = flags | libc::CLONE_PARENT as libc::c_ulong;
        let answer = match decode(&payload) {
            Some(plan) => clone_here(&plan, flags, &fds),
            None => Err(libc::EINVAL),
        };
        drop(fds);
        let (pid, errno) = match answer {
            Ok(pid) => (pid, 0),
            Err(errno) => (0, errno),
        };
        let mut a = [0u8; 8];
        a[..4].copy_from_slice(&pid.to_ne_bytes());
        a[4..].copy_from_slice(&errno.to_ne_bytes());
        if sock.write_all(&a).is_err() {
            quit(0);
        }
    }
}

/// One request: clone flags, the five fds (owned now), the encoded plan. `None` at the end of
/// the stream or on a malformed request (the server sent it; the spawner stops).
fn receive(sock: &mut UnixStream) -> Option<(libc::c_ulong, Vec<OwnedFd>, Vec<u8>)> {
    let mut header = [0u8; 16];
    let mut space = nix::cmsg_space!([RawFd; FDS]);
    let (got, fds) = {
        let mut iov = [IoSliceMut::new(&mut header)];
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .ok()?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().ok()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: the kernel just installed these descriptors in this process for us.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (msg.bytes, fds)
    };
    if got == 0 || fds.len() != FDS {
        return None;
    }
    sock.read_exact(&mut header[got..]).ok()?;
    let len = u64::from_ne_bytes(header[..8].try_into().ok()?) as usize;
    #[allow(clippy::useless_conversion)]
    let flags = libc::c_ulong::try_from(u64::from_ne_bytes(header[8..].try_into().ok()?)).ok()?;
    if len > MAX_REQUEST {
        return None;
    }
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload).ok()?;
    Some((flags, fds, payload))
}

/// Clones pid 1 from this process with `flags` (namespaces; the spawner adds `CLONE_PARENT`).
/// Returns the pid, or the clone's errno.
pub(super) fn clone_here(plan: &Plan, flags: libc::c_ulong, fds: &[OwnedFd]) -> Result<i32, i32> {
    let [stdin, stdout, stderr, sync, report] = fds else {
        return Err(libc::EINVAL);
    };
    let fds = child::Fds {
        stdin: stdin.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        sync: sync.as_raw_fd(),
        report: report.as_raw_fd(),
    };
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM): the child gets a copy of this address
    // space and runs `child::main`, which never returns and makes only system calls on `plan`.
    // Raw: nix's `clone` wants a new stack (CLONE_VM-style), and `fork` cannot take namespaces.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: we are the child; see child::main.
        unsafe { child::main(plan, fds) }
    }
    if pid < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(pid as i32)
}
