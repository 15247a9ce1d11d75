//! The code that runs in the sandbox's first process (pid 1 inside), right after `clone()`.
//!
//! Rules: never return, never allocate, never panic; only system calls on data the parent
//! prepared ([`Plan`]). A failure is reported as (stage, errno) on the report pipe, then `_exit`.
//!
//! System calls go through nix's safe wrappers (given `&CStr` paths they do not allocate), except
//! where nix has none or its wrapper would break these rules: `clone` and `execve` (nix's builds
//! a vector), `setresuid`/`setresgid`/`setgroups` (libc's wrappers signal every thread libc knows
//! of, threads of the parent that do not exist here), `capset`, `seccomp`, `close_range`, the
//! capability `prctl`s, the interface `ioctl`s and `dup2` onto a fixed number (nix's `dup2_raw`
//! does not check for failure). Each keeps a `// SAFETY:` comment.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::prctl;
use nix::sys::resource::setrlimit;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, chdir, pipe2, pivot_root, read, sethostname, setsid, write};

use super::{JOB_UID, MountOp, Plan};

pub(crate) const MSG_LEN: usize = 9;
pub(crate) const MSG_SETUP: u8 = b'E';
pub(crate) const MSG_EXEC: u8 = b'X';
pub(crate) const MSG_RUNNING: u8 = b'R';
pub(crate) const MSG_EXITED: u8 = b'S';
/// Flag in `MSG_EXITED`'s first word: a process of the job died of SIGXFSZ.
pub(crate) const EXIT_FILE_TOO_BIG: u32 = 1;

/// Stage numbers of the mount steps start here (stage = OP_BASE + index into `Plan::ops`).
pub(crate) const OP_BASE: u32 = 1000;

// Fixed stage numbers (see Plan::stage_name).
const ST_SYNC: u32 = 0;
const ST_CGROUPNS: u32 = 1;
const ST_PRIVATE: u32 = 2;
const ST_ROOT: u32 = 3;
const ST_PIVOT: u32 = 4;
const ST_DETACH: u32 = 5;
const ST_RO_ROOT: u32 = 6;
const ST_CHDIR: u32 = 7;
const ST_HOSTNAME: u32 = 8;
const ST_LO: u32 = 9;
const ST_RLIMIT: u32 = 10;
const ST_BOUNDING: u32 = 11;
const ST_AMBIENT: u32 = 12;
const ST_GROUPS: u32 = 13;
const ST_GID: u32 = 14;
const ST_UID: u32 = 15;
const ST_CAPS: u32 = 16;
const ST_NNP: u32 = 17;
const ST_SECCOMP: u32 = 18;
const ST_SIGNALS: u32 = 19;
const ST_FORK: u32 = 20;
const ST_PIPE: u32 = 21;
const ST_FDS: u32 = 22;

/// The fds the child starts with (in the parent's numbering).
#[derive(Clone, Copy)]
pub(crate) struct Fds {
    pub stdin: i32,
    pub stdout: i32,
    pub stderr: i32,
    pub sync: i32,
    pub report: i32,
}

// After `arrange_fds`: 0..2 are stdio, 3 the sync pipe, 4 the report pipe.
const SYNC_FD: i32 = 3;
const REPORT_FD: i32 = 4;
/// Where `BindNoFollow` keeps the source it opened, for the moment of the mount.
const MOUNT_FD: i32 = 5;
const MOUNT_FD_PATH: &std::ffi::CStr = c"/proc/self/fd/5";

/// Ends pid 1 (or the job before its exec) at once: no destructors, no atexit handlers.
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` has no preconditions; it is what a process after clone() may call.
    unsafe { libc::_exit(code) }
}

/// The report pipe, open at `REPORT_FD` from `arrange_fds` until pid 1 exits.
fn report_fd() -> BorrowedFd<'static> {
    // SAFETY: `arrange_fds` put the report pipe at REPORT_FD; nothing closes it before _exit.
    unsafe { BorrowedFd::borrow_raw(REPORT_FD) }
}

fn send(kind: u8, a: u32, v: i32) {
    let mut b = [0u8; MSG_LEN];
    b[0] = kind;
    b[1..5].copy_from_slice(&a.to_ne_bytes());
    b[5..9].copy_from_slice(&v.to_ne_bytes());
    // One write of 9 bytes to a pipe is atomic; if the parent is gone there is no one to tell.
    write(report_fd(), &b).ok();
}

fn fail_with(stage: u32, errno: i32) -> ! {
    send(MSG_SETUP, stage, errno);
    exit_now(126)
}

fn fail(stage: u32) -> ! {
    fail_with(stage, Errno::last_raw())
}

/// A nix result, or the stage's failure report.
trait OrFail<T> {
    fn or_fail(self, stage: u32) -> T;
}

impl<T> OrFail<T> for nix::Result<T> {
    fn or_fail(self, stage: u32) -> T {
        match self {
            Ok(v) => v,
            Err(e) => fail_with(stage, e as i32),
        }
    }
}

/// For the raw calls: a negative return is the stage's failure (errno says why).
macro_rules! check {
    ($stage:expr, $call:expr) => {
        if $call < 0 {
            fail($stage)
        }
    };
}

/// Moves the five fds to 0..=4 and closes every other fd (the parent's sockets, other jobs'
/// pipes) so nothing leaks into the sandbox.
fn arrange_fds(fds: Fds) {
    // First out of the way (>= 10), so the dup2s below cannot clobber each other.
    let mut high = [0i32; 5];
    for (i, fd) in [fds.stdin, fds.stdout, fds.stderr, fds.sync, fds.report]
        .into_iter()
        .enumerate()
    {
        // SAFETY: the parent opened these five fds for us; they stay open across clone().
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        high[i] = fcntl(fd, FcntlArg::F_DUPFD(10)).unwrap_or_else(|_| exit_now(125));
    }
    for (i, fd) in high.into_iter().enumerate() {
        // SAFETY: dup2 onto 0..=4, which nothing in this process owns; checked below.
        if unsafe { libc::dup2(fd, i as i32) } < 0 {
            exit_now(125);
        }
    }
    // SAFETY: close_range closes descriptors only; nothing here holds one above 4.
    if unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) } < 0 {
        for fd in 5..65536 {
            // SAFETY: as above; closing a number that is not open is a harmless EBADF.
            unsafe { libc::close(fd) };
        }
    }
    // The report pipe must not survive exec in the job.
    fcntl(report_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).or_fail(ST_FDS);
}

/// Binds `src` onto `dst` (recursively), then remounts the bind with `flags`.
fn bind(src: &CStr, dst: &CStr, flags: MsFlags, stage: u32) {
    let none = None::<&CStr>;
    mount(
        Some(src),
        dst,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .or_fail(stage);
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
    mount(none, dst, none, remount, none).or_fail(stage);
}

/// Binds the directory `opened` refers to onto `dst`, through `/proc/self/fd/MOUNT_FD`.
fn bind_fd(opened: OwnedFd, dst: &CStr, flags: MsFlags, stage: u32) {
    let at_mount_fd = if opened.as_raw_fd() == MOUNT_FD {
        opened
    } else {
        // SAFETY: MOUNT_FD is not open (arrange_fds closed everything above 4, and the
        // previous op's copy was dropped); the new descriptor is owned right away.
        let r = unsafe { libc::dup2(opened.as_raw_fd(), MOUNT_FD) };
        check!(stage, r);
        drop(opened);
        // SAFETY: dup2 succeeded: MOUNT_FD is open and nobody else owns it.
        unsafe { OwnedFd::from_raw_fd(MOUNT_FD) }
    };
    bind(MOUNT_FD_PATH, dst, flags, stage);
    drop(at_mount_fd);
}

fn mount_op(op: &MountOp, stage: u32) {
    let none = None::<&CStr>;
    match op {
        MountOp::Bind { src, dst, flags } => bind(src, dst, *flags, stage),
        MountOp::BindNoFollow { src, dst, flags } => {
            let how = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let opened = nix::fcntl::open(src.as_c_str(), how, Mode::empty()).or_fail(stage);
            bind_fd(opened, dst, *flags, stage);
        }
        MountOp::BindBeneath {
            root,
            rel,
            dst,
            flags,
        } => {
            use rustix::fs::{Mode as RMode, OFlags, ResolveFlags};
            let how = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
            let top = nix::fcntl::open(root.as_c_str(), how, Mode::empty()).or_fail(stage);
            let resolve =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            let oflags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
            let opened =
                match rustix::fs::openat2(&top, rel.as_c_str(), oflags, RMode::empty(), resolve) {
                    Ok(fd) => fd,
                    Err(e) => fail_with(stage, e.raw_os_error()),
                };
            drop(top);
            bind_fd(opened, dst, *flags, stage);
        }
        MountOp::Tmpfs { dst, data } => {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            mount(
                Some(c"tmpfs"),
                dst.as_c_str(),
                Some(c"tmpfs"),
                flags,
                Some(data.as_c_str()),
            )
            .or_fail(stage);
        }
        MountOp::Proc { dst } => {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some(c"proc"), dst.as_c_str(), Some(c"proc"), flags, none).or_fail(stage);
        }
    }
}

fn loopback_up() {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .or_fail(ST_LO);
    // SAFETY: ifreq is plain data (zero is a valid value); the two ioctls read and write the
    // flags of the interface it names, on a socket we own. nix has no wrapper for these.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        check!(
            ST_LO,
            libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr)
        );
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check!(
            ST_LO,
            libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr)
        );
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn drop_privileges(plan: &Plan) {
    // SAFETY (this block): prctl, setgroups, setresgid, setresuid and capset with constant
    // arguments or pointers to the local structs above; nix has no wrapper for the capability
    // calls, and its set*id wrappers are libc's, which would wait for threads that are not here.
    unsafe {
        for cap in 0..=plan.last_cap {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && Errno::last_raw() != libc::EINVAL
            {
                fail(ST_BOUNDING);
            }
        }
        let clear_all = libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong;
        check!(
            ST_AMBIENT,
            libc::prctl(libc::PR_CAP_AMBIENT, clear_all, 0, 0, 0)
        );
        // Raw system calls, not libc's wrappers: those broadcast the change to every thread libc
        // believes the process has (the parent's, copied by clone) and can wait forever.
        if plan.setgroups {
            let none = std::ptr::null::<libc::gid_t>();
            check!(ST_GROUPS, libc::syscall(libc::SYS_setgroups, 0usize, none));
        }
        check!(
            ST_GID,
            libc::syscall(libc::SYS_setresgid, JOB_UID, JOB_UID, JOB_UID)
        );
        check!(
            ST_UID,
            libc::syscall(libc::SYS_setresuid, JOB_UID, JOB_UID, JOB_UID)
        );
        let hdr = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let none = CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        };
        let data = [none, none];
        check!(
            ST_CAPS,
            libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr())
        );
    }
    prctl::set_no_new_privs().or_fail(ST_NNP);
}

fn install_seccomp(plan: &Plan) {
    // Insn is laid out as struct sock_filter (repr(C), the same four fields).
    let fprog = libc::sock_fprog {
        len: plan.filter.len() as u16,
        filter: plan.filter.as_ptr() as *mut libc::sock_filter,
    };
    const SECCOMP_SET_MODE_FILTER: u32 = 1;
    // SAFETY: the program the parent compiled, alive in the plan; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0u32,
            &fprog as *const libc::sock_fprog,
        )
    };
    check!(ST_SECCOMP, r);
}

/// Shows the sandbox's pid 1 as `jobpack-sandbox-init` and names its thread `jobpack-init`.
fn set_title(plan: &Plan) {
    retitle(plan.argv_area, plan.title.as_bytes(), c"jobpack-init");
}

/// Shows this process as `title` in `/proc/PID/cmdline` (and `ps`, `pgrep -f`): its argv strings
/// at `area` (from [`super::argv_area`], taken in the process this one is a copy of) are
/// overwritten in place, where the kernel reads `cmdline`; and names its thread `name`.
pub(super) fn retitle(area: (usize, usize), title: &[u8], name: &CStr) {
    let (start, len) = area;
    if start != 0 && len > 1 {
        let p = start as *mut u8;
        // SAFETY: `area` is the process's own argv strings (from /proc/self/stat), which this
        // copy of the address space owns and nothing in it reads again (a sandbox's pid 1, or the
        // spawner); `len` bytes are writable.
        unsafe {
            std::ptr::write_bytes(p, 0, len);
            std::ptr::copy_nonoverlapping(title.as_ptr(), p, title.len().min(len - 1));
        }
    }
    // Only a name for `ps`; a failure changes nothing else.
    prctl::set_name(name).ok();
}

/// Every signal's disposition back to the default. An ignored signal stays ignored across exec,
/// and the process pid 1 was cloned from ignores some (Rust's runtime ignores SIGPIPE, the
/// spawner a terminal's signals): the job starts as it would from a shell, and pid 1's own
/// SIGCHLD is not auto-reaped.
fn default_dispositions() {
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: SIG_DFL installs no handler; pid 1 has one thread and no handlers to race.
            unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) }.ok();
        }
    }
}

/// The raw wait status of a `WaitStatus` (what the parent decodes, as `wait4` gives it).
fn raw_status(s: WaitStatus) -> i32 {
    match s {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => sig as i32 | if core { 0x80 } else { 0 },
        _ => 0,
    }
}

/// What the job's process needs between its clone and its exec.
struct JobStart<'a> {
    plan: &'a Plan,
    old_mask: SigSet,
    exec_w: i32,
}

/// The job's process, from its clone to its exec: the signal mask it should have, a session of
/// its own, the exec; if that fails, its errno on the exec pipe and exit 127.
extern "C" fn job_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `JobStart` pid 1 passed to clone, alive while pid 1 waits for us.
    let start = unsafe { &*arg.cast::<JobStart<'_>>() };
    let plan = start.plan;
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&start.old_mask), None).ok();
    setsid().ok();
    // SAFETY: the plan's NUL-terminated pointer arrays into its own CStrings (alive for the
    // whole life of this process); nix's execve would allocate them anew.
    unsafe {
        let via_env = &plan.env_bash;
        if !via_env.candidates.is_empty() && super::shebang::runs_env_bash(&plan.exe) {
            for bash in &via_env.candidates {
                libc::execve(
                    bash.as_ptr(),
                    via_env.argv_ptrs.as_ptr(),
                    plan.envp_ptrs.as_ptr(),
                );
                if !super::shebang::try_next(Errno::last_raw()) {
                    break;
                }
            }
        }
        libc::execve(
            plan.exe.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
    }
    // SAFETY: pid 1's end of the exec pipe, open (and close-on-exec) until pid 1 closes it after
    // we are gone.
    let w = unsafe { BorrowedFd::borrow_raw(start.exec_w) };
    write(w, &Errno::last_raw().to_ne_bytes()).ok();
    exit_now(127);
}

/// pid 1 of the sandbox.
///
/// # Safety
/// Only in the child of the fork-like `clone()` in [`super::spawner::clone_here`] (called in
/// the server's process or in the spawner's).
pub(crate) unsafe fn main(plan: &Plan, fds: Fds) -> ! {
    arrange_fds(fds);
    default_dispositions();
    set_title(plan);
    // Wait until the parent has written our uid/gid maps.
    // SAFETY: arrange_fds put the sync pipe at SYNC_FD, owned by nobody else; closed on drop.
    let sync = unsafe { OwnedFd::from_raw_fd(SYNC_FD) };
    let mut b = [0u8; 1];
    if read(&sync, &mut b) != Ok(1) {
        fail(ST_SYNC);
    }

    let none = None::<&CStr>;
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    mount(none, c"/", none, private, none).or_fail(ST_PRIVATE);
    // The skeleton directory becomes a mount point of its own (pivot_root needs one).
    let root = plan.root.as_c_str();
    mount(Some(root), root, none, MsFlags::MS_BIND, none).or_fail(ST_ROOT);
    for (i, op) in plan.ops.iter().enumerate() {
        mount_op(op, OP_BASE + i as u32);
    }
    chdir(root).or_fail(ST_PIVOT);
    pivot_root(c".", c".").or_fail(ST_PIVOT);
    umount2(c".", MntFlags::MNT_DETACH).or_fail(ST_DETACH);
    chdir(c"/").or_fail(ST_DETACH);
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | plan.root_flags;
    mount(none, c"/", none, ro, none).or_fail(ST_RO_ROOT);
    chdir(plan.workdir.as_c_str()).or_fail(ST_CHDIR);
    sethostname(OsStr::from_bytes(plan.hostname.as_bytes())).or_fail(ST_HOSTNAME);
    if plan.lo_up {
        loopback_up();
    }
    for &(res, lim) in &plan.rlimits {
        setrlimit(res, lim, lim).or_fail(ST_RLIMIT);
    }
    // Wait until the parent has moved us into the job's cgroup, which it does while we build the
    // root above: the kernel's lock for that move may first wait for an RCU grace period (some
    // milliseconds). Nothing of the job runs before, and if the parent is gone, nothing runs.
    if read(&sync, &mut b) != Ok(1) {
        fail(ST_SYNC);
    }
    drop(sync);
    // A cgroup namespace rooted at the job's cgroup (now that we are in it).
    unshare(CloneFlags::CLONE_NEWCGROUP).or_fail(ST_CGROUPNS);
    drop_privileges(plan);

    // Signals pid 1 handles itself, synchronously.
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).or_fail(ST_SIGNALS);
    install_seccomp(plan);

    // A pipe that tells pid 1 whether the job's exec worked (it closes on success).
    let (exec_r, exec_w) = pipe2(OFlag::O_CLOEXEC).or_fail(ST_PIPE);
    let start = JobStart {
        plan,
        old_mask: old,
        exec_w: exec_w.as_raw_fd(),
    };
    // The job's process shares this one's memory until its exec (CLONE_VM | CLONE_VFORK: pid 1
    // waits meanwhile), on the stack the plan prepared: no copy of the address space (a copy of
    // the server's, as pid 1 is) is made only to be thrown away by the exec.
    // The top of the stack (it grows down), aligned as the ABI wants.
    let top = plan.job_stack.as_ptr_range().end as usize & !15;
    let stack = top as *mut libc::c_void;
    // SAFETY: `job_main` runs on its own stack (the plan's, unused by anything else) and only
    // makes system calls until it execs or exits; `start` outlives it, as this process is
    // suspended until then.
    let job = unsafe {
        libc::clone(
            job_main,
            stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(&start).cast_mut().cast::<libc::c_void>(),
        )
    };
    check!(ST_FORK, job);
    let job = Pid::from_raw(job);
    drop(exec_w);
    // pid 1 keeps no end of the job's output pipes: the log ends when the job's processes end.
    for fd in 0..=2 {
        // SAFETY: 0..=2 are the job's stdio from arrange_fds, owned by nobody else here.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let mut e = [0u8; 4];
    if read(&exec_r, &mut e) == Ok(4) {
        send(MSG_EXEC, 0, i32::from_ne_bytes(e));
        exit_now(127);
    }
    drop(exec_r);
    send(MSG_RUNNING, 0, 0);

    // Init loop: reap everything, forward termination signals to every process, and end when
    // the job's main process ends (taking every other process in the namespace with it).
    let everyone = Pid::from_raw(-1);
    let mut flags = 0u32;
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(everyone, Some(WaitPidFlag::WNOHANG)) {
                    let Some(pid) = status.pid() else { break };
                    if matches!(status, WaitStatus::Signaled(_, Signal::SIGXFSZ, _)) {
                        flags |= EXIT_FILE_TOO_BIG;
                    }
                    if pid == job {
                        kill(everyone, Signal::SIGKILL).ok();
                        send(MSG_EXITED, flags, raw_status(status));
                        exit_now(0);
                    }
                }
            }
            Ok(sig) => {
                kill(everyone, sig).ok();
            }
            Err(_) => {}
        }
    }
}
