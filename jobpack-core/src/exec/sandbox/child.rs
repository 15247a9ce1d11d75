//! The code that runs in the sandbox's first process (pid 1 inside), right after `clone()`.
//!
//! Rules: never return, never allocate, never panic; only system calls on data the parent
//! prepared ([`Plan`]). A failure is reported as (stage, errno) on the report pipe, then `_exit`.

use std::ffi::c_char;

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

unsafe fn errno() -> i32 {
    unsafe { *libc::__errno_location() }
}

unsafe fn send(kind: u8, a: u32, v: i32) {
    let mut b = [0u8; MSG_LEN];
    b[0] = kind;
    b[1..5].copy_from_slice(&a.to_ne_bytes());
    b[5..9].copy_from_slice(&v.to_ne_bytes());
    unsafe { libc::write(REPORT_FD, b.as_ptr().cast(), MSG_LEN) };
}

unsafe fn fail(stage: u32) -> ! {
    unsafe {
        send(MSG_SETUP, stage, errno());
        libc::_exit(126)
    }
}

macro_rules! check {
    ($stage:expr, $call:expr) => {
        if $call < 0 {
            fail($stage)
        }
    };
}

/// Moves the five fds to 0..=4 and closes every other fd (the parent's sockets, other jobs'
/// pipes) so nothing leaks into the sandbox.
unsafe fn arrange_fds(fds: Fds) {
    unsafe {
        // First out of the way (>= 10), so the dup2s below cannot clobber each other.
        let mut high = [0i32; 5];
        for (i, fd) in [fds.stdin, fds.stdout, fds.stderr, fds.sync, fds.report]
            .into_iter()
            .enumerate()
        {
            high[i] = libc::fcntl(fd, libc::F_DUPFD, 10);
            if high[i] < 0 {
                libc::_exit(125);
            }
        }
        for (i, fd) in high.into_iter().enumerate() {
            if libc::dup2(fd, i as i32) < 0 {
                libc::_exit(125);
            }
        }
        if libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) < 0 {
            for fd in 5..65536 {
                libc::close(fd);
            }
        }
        // The report pipe must not survive exec in the job.
        if libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) < 0 {
            fail(ST_FDS);
        }
    }
}

/// Binds `src` onto `dst` (recursively), then remounts the bind with `flags`.
unsafe fn bind(src: *const c_char, dst: *const c_char, flags: libc::c_ulong, stage: u32) {
    let null = std::ptr::null::<c_char>();
    unsafe {
        check!(
            stage,
            libc::mount(
                src,
                dst,
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null()
            )
        );
        check!(
            stage,
            libc::mount(
                null,
                dst,
                null,
                libc::MS_BIND | libc::MS_REMOUNT | flags,
                std::ptr::null()
            )
        );
    }
}

unsafe fn mount_op(op: &MountOp, stage: u32) {
    unsafe {
        match op {
            MountOp::Bind { src, dst, flags } => bind(src.as_ptr(), dst.as_ptr(), *flags, stage),
            MountOp::BindNoFollow { src, dst, flags } => {
                let fd = libc::open(
                    src.as_ptr(),
                    libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
                );
                check!(stage, fd);
                check!(stage, libc::dup2(fd, MOUNT_FD));
                if fd != MOUNT_FD {
                    libc::close(fd);
                }
                bind(MOUNT_FD_PATH.as_ptr(), dst.as_ptr(), *flags, stage);
                libc::close(MOUNT_FD);
            }
            MountOp::Tmpfs { dst, data } => {
                check!(
                    stage,
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        dst.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        data.as_ptr().cast()
                    )
                );
            }
            MountOp::Proc { dst } => {
                check!(
                    stage,
                    libc::mount(
                        c"proc".as_ptr(),
                        dst.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null()
                    )
                );
            }
        }
    }
}

unsafe fn loopback_up() {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check!(ST_LO, fd);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as c_char;
        ifr.ifr_name[1] = b'o' as c_char;
        check!(ST_LO, libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr));
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check!(ST_LO, libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr));
        libc::close(fd);
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

unsafe fn drop_privileges(plan: &Plan) {
    unsafe {
        for cap in 0..=plan.last_cap {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0
                && errno() != libc::EINVAL
            {
                fail(ST_BOUNDING);
            }
        }
        check!(
            ST_AMBIENT,
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0
            )
        );
        // Raw system calls, not libc's wrappers: those broadcast the change to every thread libc
        // believes the process has (the parent's, copied by clone) and can wait forever.
        if plan.setgroups {
            check!(
                ST_GROUPS,
                libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) as i32
            );
        }
        check!(
            ST_GID,
            libc::syscall(libc::SYS_setresgid, JOB_UID, JOB_UID, JOB_UID) as i32
        );
        check!(
            ST_UID,
            libc::syscall(libc::SYS_setresuid, JOB_UID, JOB_UID, JOB_UID) as i32
        );
        let hdr = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        check!(
            ST_CAPS,
            libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) as i32
        );
        check!(ST_NNP, libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    }
}

unsafe fn install_seccomp(plan: &Plan) {
    unsafe {
        for prog in &plan.filters {
            let fprog = libc::sock_fprog {
                len: prog.len() as u16,
                filter: prog.as_ptr() as *mut libc::sock_filter,
            };
            check!(
                ST_SECCOMP,
                libc::syscall(
                    libc::SYS_seccomp,
                    1u32, // SECCOMP_SET_MODE_FILTER
                    0u32,
                    &fprog as *const libc::sock_fprog
                ) as i32
            );
        }
    }
}

/// Shows the sandbox's pid 1 as `jobpack-sandbox-init` (its argv strings, our copy of them after
/// clone, are overwritten in place; the kernel reads `cmdline` from there) and names the thread.
unsafe fn set_title(plan: &Plan) {
    unsafe {
        let (start, len) = plan.argv_area;
        if start != 0 && len > 1 {
            let p = start as *mut u8;
            std::ptr::write_bytes(p, 0, len);
            let t = plan.title.as_bytes();
            std::ptr::copy_nonoverlapping(t.as_ptr(), p, t.len().min(len - 1));
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"jobpack-init".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
    }
}

/// pid 1 of the sandbox.
///
/// # Safety
/// Only in the child of the fork-like `clone()` in [`super::spawn`].
pub(crate) unsafe fn main(plan: &Plan, fds: Fds) -> ! {
    unsafe {
        arrange_fds(fds);
        set_title(plan);
        // Wait until the parent has written our uid/gid maps and moved us into the cgroup.
        let mut b = [0u8; 1];
        if libc::read(SYNC_FD, b.as_mut_ptr().cast(), 1) != 1 {
            fail(ST_SYNC);
        }
        libc::close(SYNC_FD);
        // A cgroup namespace rooted at the job's cgroup (now that we are in it).
        check!(ST_CGROUPNS, libc::unshare(libc::CLONE_NEWCGROUP));

        let null = std::ptr::null::<c_char>();
        check!(
            ST_PRIVATE,
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null()
            )
        );
        // The skeleton directory becomes a mount point of its own (pivot_root needs one).
        check!(
            ST_ROOT,
            libc::mount(
                plan.root.as_ptr(),
                plan.root.as_ptr(),
                null,
                libc::MS_BIND,
                std::ptr::null()
            )
        );
        for (i, op) in plan.ops.iter().enumerate() {
            mount_op(op, OP_BASE + i as u32);
        }
        check!(ST_PIVOT, libc::chdir(plan.root.as_ptr()));
        check!(
            ST_PIVOT,
            libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as i32
        );
        check!(ST_DETACH, libc::umount2(c".".as_ptr(), libc::MNT_DETACH));
        check!(ST_DETACH, libc::chdir(c"/".as_ptr()));
        check!(
            ST_RO_ROOT,
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | plan.root_flags,
                std::ptr::null()
            )
        );
        check!(ST_CHDIR, libc::chdir(plan.workdir.as_ptr()));
        check!(
            ST_HOSTNAME,
            libc::sethostname(plan.hostname.as_ptr(), plan.hostname.as_bytes().len())
        );
        if plan.lo_up {
            loopback_up();
        }
        for (res, lim) in &plan.rlimits {
            check!(ST_RLIMIT, libc::setrlimit(*res, lim));
        }
        drop_privileges(plan);

        // Signals pid 1 handles itself, synchronously.
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::sigaddset(&mut set, s);
        }
        check!(
            ST_SIGNALS,
            libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old)
        );
        install_seccomp(plan);

        // A pipe that tells pid 1 whether the job's exec worked (it closes on success).
        let mut exec_pipe = [0i32; 2];
        check!(
            ST_PIPE,
            libc::pipe2(exec_pipe.as_mut_ptr(), libc::O_CLOEXEC)
        );
        let job = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        check!(ST_FORK, job as i32);
        if job == 0 {
            libc::close(exec_pipe[0]);
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            libc::setsid();
            libc::execve(
                plan.exe.as_ptr(),
                plan.argv_ptrs.as_ptr(),
                plan.envp_ptrs.as_ptr(),
            );
            let e = errno().to_ne_bytes();
            libc::write(exec_pipe[1], e.as_ptr().cast(), 4);
            libc::_exit(127);
        }
        let job = job as i32;
        libc::close(exec_pipe[1]);
        // pid 1 keeps no end of the job's output pipes: the log ends when the job's processes end.
        libc::close(0);
        libc::close(1);
        libc::close(2);
        let mut e = [0u8; 4];
        if libc::read(exec_pipe[0], e.as_mut_ptr().cast(), 4) == 4 {
            send(MSG_EXEC, 0, i32::from_ne_bytes(e));
            libc::_exit(127);
        }
        libc::close(exec_pipe[0]);
        send(MSG_RUNNING, 0, 0);

        // Init loop: reap everything, forward termination signals to every process, and end when
        // the job's main process ends (taking every other process in the namespace with it).
        let mut flags = 0u32;
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig == libc::SIGCHLD {
                loop {
                    let mut status = 0;
                    let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
                    if r <= 0 {
                        break;
                    }
                    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXFSZ {
                        flags |= EXIT_FILE_TOO_BIG;
                    }
                    if r == job {
                        libc::kill(-1, libc::SIGKILL);
                        send(MSG_EXITED, flags, status);
                        libc::_exit(0);
                    }
                }
            } else if sig > 0 {
                libc::kill(-1, sig);
            }
        }
    }
}
