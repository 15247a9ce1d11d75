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

use std::ffi::{CStr, CString};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::mount::MsFlags;
use nix::sys::resource::Resource;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

use super::{MountOp, Plan, child};
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
    if nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_err()
        || nix::unistd::getppid().as_raw() != parent
    {
        quit(0);
    }
    IN_SPAWNER.store(true, Ordering::Relaxed);
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

/// Clones pid 1 from this process, with `CLONE_PARENT` when it is the spawner. Returns the pid,
/// or the clone's errno.
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
    // From the spawner, pid 1 is made the server's child (the spawner's parent).
    let parent = if IN_SPAWNER.load(Ordering::Relaxed) {
        libc::CLONE_PARENT as libc::c_ulong
    } else {
        0
    };
    // SAFETY: a fork-like clone (no new stack, no CLONE_VM): the child gets a copy of this address
    // space and runs `child::main`, which never returns and makes only system calls on `plan`.
    // Raw: nix's `clone` wants a new stack (CLONE_VM-style), and `fork` cannot take namespaces.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | parent | libc::SIGCHLD as libc::c_ulong,
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

/// Set in the spawner's process (by `serve`).
static IN_SPAWNER: AtomicBool = AtomicBool::new(false);

/// Resources a plan's rlimits may name (decoded by their number).
const RESOURCES: [Resource; 8] = [
    Resource::RLIMIT_CORE,
    Resource::RLIMIT_NOFILE,
    Resource::RLIMIT_FSIZE,
    Resource::RLIMIT_NPROC,
    Resource::RLIMIT_AS,
    Resource::RLIMIT_CPU,
    Resource::RLIMIT_STACK,
    Resource::RLIMIT_MEMLOCK,
];

/// What the child reads of a plan, as bytes (the names of its ops stay with the server).
fn encode(p: &Plan) -> Vec<u8> {
    let mut o = Out(Vec::with_capacity(4096));
    o.c(&p.root);
    o.u64(ulong(p.root_flags.bits()));
    o.u64(p.ops.len() as u64);
    for op in &p.ops {
        match op {
            MountOp::Bind { src, dst, flags } => {
                o.u64(0);
                o.c(src);
                o.c(dst);
                o.u64(ulong(flags.bits()));
            }
            MountOp::BindNoFollow { src, dst, flags } => {
                o.u64(1);
                o.c(src);
                o.c(dst);
                o.u64(ulong(flags.bits()));
            }
            MountOp::BindBeneath {
                root,
                rel,
                dst,
                flags,
            } => {
                o.u64(2);
                o.c(root);
                o.c(rel);
                o.c(dst);
                o.u64(ulong(flags.bits()));
            }
            MountOp::Tmpfs { dst, data } => {
                o.u64(3);
                o.c(dst);
                o.c(data);
            }
            MountOp::Proc { dst } => {
                o.u64(4);
                o.c(dst);
            }
        }
    }
    o.c(&p.workdir);
    o.c(&p.hostname);
    o.u64(p.lo_up.into());
    o.u64(p.rlimits.len() as u64);
    for &(res, lim) in &p.rlimits {
        o.u64(res as i64 as u64);
        o.u64(lim);
    }
    o.u64(p.setgroups.into());
    o.u64(p.last_cap.into());
    o.u64(p.filters.len() as u64);
    for prog in &p.filters {
        o.u64(prog.len() as u64);
        for i in prog {
            o.u64(u64::from(i.code) | u64::from(i.jt) << 16 | u64::from(i.jf) << 24);
            o.u64(i.k.into());
        }
    }
    o.c(&p.exe);
    o.u64(p.argv_area.0 as u64);
    o.u64(p.argv_area.1 as u64);
    o.c(&p.title);
    for list in [&p._argv, &p._envp] {
        o.u64(list.len() as u64);
        for c in list {
            o.c(c);
        }
    }
    o.u64(p.job_stack.len() as u64);
    o.0
}

/// The plan `encode` wrote; `None` if the bytes are not one.
fn decode(b: &[u8]) -> Option<Plan> {
    let mut i = In(b);
    let root = i.c()?;
    let root_flags = i.flags()?;
    let mut ops = Vec::new();
    for _ in 0..i.count()? {
        ops.push(match i.u64()? {
            0 => MountOp::Bind {
                src: i.c()?,
                dst: i.c()?,
                flags: i.flags()?,
            },
            1 => MountOp::BindNoFollow {
                src: i.c()?,
                dst: i.c()?,
                flags: i.flags()?,
            },
            2 => MountOp::BindBeneath {
                root: i.c()?,
                rel: i.c()?,
                dst: i.c()?,
                flags: i.flags()?,
            },
            3 => MountOp::Tmpfs {
                dst: i.c()?,
                data: i.c()?,
            },
            4 => MountOp::Proc { dst: i.c()? },
            _ => return None,
        });
    }
    let workdir = i.c()?;
    let hostname = i.c()?;
    let lo_up = i.u64()? != 0;
    let mut rlimits = Vec::new();
    for _ in 0..i.count()? {
        let n = i.u64()?;
        let res = *RESOURCES.iter().find(|r| **r as i64 as u64 == n)?;
        rlimits.push((res, i.u64()?));
    }
    let setgroups = i.u64()? != 0;
    let last_cap = u32::try_from(i.u64()?).ok()?;
    let mut filters = Vec::new();
    for _ in 0..i.count()? {
        let mut prog = Vec::new();
        for _ in 0..i.count()? {
            let w = i.u64()?;
            prog.push(seccompiler::sock_filter {
                code: w as u16,
                jt: (w >> 16) as u8,
                jf: (w >> 24) as u8,
                k: u32::try_from(i.u64()?).ok()?,
            });
        }
        filters.push(prog);
    }
    let exe = i.c()?;
    let argv_area = (i.u64()? as usize, i.u64()? as usize);
    let title = i.c()?;
    let mut lists = [Vec::new(), Vec::new()];
    for list in &mut lists {
        for _ in 0..i.count()? {
            list.push(i.c()?);
        }
    }
    let [argv, envp] = lists;
    let job_stack = vec![0; usize::try_from(i.u64()?).ok()?.min(16 << 20)];
    if !i.0.is_empty() {
        return None;
    }
    Some(Plan {
        root,
        root_flags,
        ops,
        op_names: Vec::new(),
        workdir,
        hostname,
        lo_up,
        rlimits,
        setgroups,
        last_cap,
        filters,
        exe,
        argv_area,
        title,
        argv_ptrs: super::pointers(&argv),
        envp_ptrs: super::pointers(&envp),
        _argv: argv,
        _envp: envp,
        job_stack,
    })
}

/// A `c_ulong` (flags) as the wire's u64 (the same type on 64-bit Linux, wider on 32-bit).
#[allow(clippy::useless_conversion)]
fn ulong(v: libc::c_ulong) -> u64 {
    u64::from(v)
}

struct Out(Vec<u8>);

impl Out {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_ne_bytes());
    }
    fn c(&mut self, c: &CStr) {
        self.u64(c.to_bytes().len() as u64);
        self.0.extend_from_slice(c.to_bytes());
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }
    /// A length that the rest of the input can hold (each item takes at least 8 bytes).
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.u64()?).ok()?;
        (n <= self.0.len() / 8).then_some(n)
    }
    #[allow(clippy::useless_conversion)]
    fn flags(&mut self) -> Option<MsFlags> {
        Some(MsFlags::from_bits_retain(self.u64()?.try_into().ok()?))
    }
    fn c(&mut self) -> Option<CString> {
        let n = usize::try_from(self.u64()?).ok()?;
        CString::new(self.take(n)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::sandbox::PlanInput;
    use crate::exec::{Mount, SharedDir};

    /// A plan with one op of each kind, a few rlimits and the real seccomp filters.
    fn a_plan(dir: &std::path::Path) -> Plan {
        let (job, root) = (dir.join("job"), dir.join("root"));
        for d in [&job, &root] {
            std::fs::create_dir_all(d).unwrap();
        }
        Plan::build(PlanInput {
            job_dir: &job,
            root_dir: &root,
            create_skeleton: true,
            rootfs: None,
            tmp_size_mb: 64,
            network_none: true,
            argv: &["sh".into(), "-c".into(), "echo 'a b' \"$X\"".into()],
            env: &[("X".into(), "é=1".into()), ("PATH".into(), "/bin".into())],
            rlimits: vec![(Resource::RLIMIT_CORE, 0), (Resource::RLIMIT_NOFILE, 1024)],
            parent_is_root: true,
            mounts: &[Mount {
                source: dir.to_path_buf(),
                target: "deps/a".into(),
                read_only: true,
            }],
            // Outside the sandbox's own directories (/tmp is one); never opened here.
            shared_dirs: &[SharedDir {
                root: "/srv/jobpack-spawner-test".into(),
                rel: "w".into(),
            }],
        })
        .unwrap()
    }

    #[test]
    fn a_plan_crosses_to_the_spawner_whole() {
        let dir = tempfile::tempdir().unwrap();
        let plan = a_plan(dir.path());
        let bytes = encode(&plan);
        let back = decode(&bytes).expect("a plan's own bytes decode");
        // Everything pid 1 reads came across (the encoding covers every field it reads).
        assert_eq!(encode(&back), bytes);
        assert_eq!(back.root, plan.root);
        assert_eq!(back.ops.len(), plan.ops.len());
        assert!(
            matches!(back.ops.iter().find(|o| matches!(o, MountOp::BindBeneath { .. })),
            Some(MountOp::BindBeneath { rel, .. }) if rel.as_bytes() == b"w")
        );
        assert_eq!(back.rlimits, plan.rlimits);
        assert_eq!(back.filters, plan.filters);
        assert!(!back.filters.is_empty());
        assert_eq!(back._argv, plan._argv);
        assert_eq!(back._envp, plan._envp);
        assert_eq!(back.job_stack.len(), plan.job_stack.len());
        // The pointer arrays point into the decoded plan's own strings, NULL-terminated.
        assert_eq!(back.argv_ptrs.len(), back._argv.len() + 1);
        assert!(back.argv_ptrs.last().unwrap().is_null());
        for (p, c) in back.argv_ptrs.iter().zip(&back._argv) {
            assert_eq!(*p, c.as_ptr());
        }
    }

    #[test]
    fn a_cut_or_padded_plan_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode(&a_plan(dir.path()));
        for n in 0..bytes.len() {
            assert!(
                decode(&bytes[..n]).is_none(),
                "cut at {n} of {}",
                bytes.len()
            );
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(decode(&padded).is_none());
        // A count larger than the input could hold is refused before anything is allocated.
        let mut huge = bytes.clone();
        let ops_at = 8 + plan_root_len(&bytes) + 8;
        huge[ops_at..ops_at + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
        assert!(decode(&huge).is_none());
        // A string with a NUL inside is not a C string.
        let mut nul = bytes;
        nul[8] = 0;
        assert!(decode(&nul).is_none());
    }

    /// The length of the root path, the first field.
    fn plan_root_len(bytes: &[u8]) -> usize {
        u64::from_ne_bytes(bytes[..8].try_into().unwrap()) as usize
    }
}
