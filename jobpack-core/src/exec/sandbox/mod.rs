//! The Linux sandbox: a job's first process is created with `clone()` in new user, pid, mount,
//! ipc, uts (and, by policy, network) namespaces. That process (pid 1 inside) builds a new root
//! with pivot_root, drops to an unprivileged uid with no capabilities, sets `no_new_privs` and a
//! seccomp filter, then forks the job and stays as its init: it forwards SIGTERM and friends to
//! every process of the job, reaps orphans, and when the job's main process exits it kills what is
//! left and reports the exit status.
//!
//! Everything the child needs is computed here, in the parent, before `clone()`: the child of a
//! multi-threaded process may not allocate (another thread may have held the allocator's lock at
//! the moment of the clone), so it only makes system calls on ready data ([`child`]).
//!
//! Parent and child talk over pipes: a sync pipe (the parent writes the uid/gid maps and lets the
//! child build its root, moves it into its cgroup meanwhile, then lets it start the job) and a
//! report pipe (setup error, exec error, "running", final wait status; fixed-size messages, each
//! written at once).

use std::ffi::{CString, c_char};
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::statvfs::{FsFlags, statvfs};

use super::ExecError;
use super::Rlimits;
use crate::io_error::io_err;

mod child;
pub mod seccomp;
mod shebang;
pub(crate) mod skeleton;
mod spawn;
mod spawner;
mod wire;

pub(crate) use spawn::{IdMap, Report, spawn};
pub use spawner::start_spawner;

/// The uid and gid a job has inside its namespace.
pub const JOB_UID: u32 = 1000;

/// One mount of building the new root, in order. Paths are absolute host paths under the new
/// root (before pivot_root). Directories, files and symlinks they need were created by the parent.
#[derive(Debug)]
pub(crate) enum MountOp {
    /// Bind `src` onto `dst`, then remount the bind with `flags` (MS_RDONLY, MS_NOSUID, ...).
    Bind {
        src: CString,
        dst: CString,
        flags: MsFlags,
    },
    /// Like `Bind`, for a source the job side may have changed (a required job's working
    /// directory): the child opens `src` with `O_PATH | O_NOFOLLOW | O_DIRECTORY` (a symlink there
    /// is refused) and binds the directory it opened, through `/proc/self/fd`.
    BindNoFollow {
        src: CString,
        dst: CString,
        flags: MsFlags,
    },
    /// Like `BindNoFollow`, for `rel` beneath a trusted `root`: the child opens `root`
    /// (`O_PATH | O_NOFOLLOW | O_DIRECTORY`), then `rel` under it with `openat2(RESOLVE_BENEATH |
    /// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, and binds what it opened.
    BindBeneath {
        root: CString,
        rel: CString,
        dst: CString,
        flags: MsFlags,
    },
    Tmpfs {
        dst: CString,
        data: CString,
    },
    Proc {
        dst: CString,
    },
}

use super::SANDBOX_OWN_DIRS as RESERVED_TOP;

/// Everything the child needs, prepared before `clone()`.
pub(crate) struct Plan {
    pub root: CString,
    /// Flags for remounting the new root read-only (keeping the host mount's locked flags).
    pub root_flags: MsFlags,
    pub ops: Vec<MountOp>,
    /// A description of each op, for error messages (same index).
    pub op_names: Vec<String>,
    pub workdir: CString,
    pub hostname: CString,
    pub lo_up: bool,
    pub rlimits: Rlimits,
    pub setgroups: bool,
    pub last_cap: u32,
    pub filter: seccomp::Program,
    pub exe: CString,
    /// The process's argv strings (`arg_start`, length), overwritten in the child with `title`
    /// so that `/proc/1/cmdline` inside and `ps` outside show a sandbox init, not the server's
    /// command line. `(0, 0)` when unknown.
    pub argv_area: (usize, usize),
    pub title: CString,
    // The pointer arrays point into these; they must stay alive and unmoved.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    pub argv_ptrs: Vec<*const c_char>,
    pub envp_ptrs: Vec<*const c_char>,
    /// The stack the job's process runs on from its clone to its exec (it shares pid 1's memory
    /// until then), prepared here as pid 1 may not allocate.
    pub job_stack: Vec<u8>,
    /// `exe` started as its `#!/usr/bin/env bash` line would start it, when it has one.
    pub env_bash: shebang::EnvBash,
}

// SAFETY: the raw pointers only point into the CStrings owned by the same Plan, which are never
// mutated; a Plan is built on one thread and read (not mutated) by the child after clone().
unsafe impl Send for Plan {}

/// What the sandbox needs to know to build a plan.
#[derive(Clone)]
pub(crate) struct PlanInput<'a> {
    pub job_dir: &'a Path,
    /// The host directory that becomes the new root's mount point: a [`skeleton`] directory.
    pub root_dir: &'a Path,
    /// Make the skeleton's directories, links and device mount points in `root_dir` (once per
    /// skeleton), or take them as made.
    pub create_skeleton: bool,
    /// A root filesystem to use instead of the host's `/usr`, `/etc`, ... (bound read-only).
    pub rootfs: Option<&'a Path>,
    pub tmp_size_mb: u64,
    pub network_none: bool,
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    pub rlimits: Rlimits,
    pub parent_is_root: bool,
    /// Host directories bound inside the job directory (their mount points exist).
    pub mounts: &'a [crate::exec::Mount],
    /// Host directories bound read-write at their own path.
    pub shared_dirs: &'a [crate::exec::SharedDir],
}

fn cstr(s: impl AsRef<[u8]>, what: &str) -> Result<CString, ExecError> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| ExecError::Invalid(format!("{what} contains a NUL byte")))
}

fn path_c(p: &Path) -> Result<CString, ExecError> {
    use std::os::unix::ffi::OsStrExt;
    cstr(p.as_os_str().as_bytes(), &p.display().to_string())
}

/// The NULL-terminated pointer array `execve` takes, into `v` (which must outlive it, unmoved).
fn pointers(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Where this process's argv strings are (fields 48 and 49 of `/proc/self/stat`), read once:
/// they never move, and every plan needs them.
fn argv_area() -> (usize, usize) {
    static AREA: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *AREA.get_or_init(read_argv_area)
}

fn read_argv_area() -> (usize, usize) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0, 0);
    };
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return (0, 0);
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let (Some(start), Some(end)) = (
        f.get(48 - 3).and_then(|v| v.parse::<usize>().ok()),
        f.get(49 - 3).and_then(|v| v.parse::<usize>().ok()),
    ) else {
        return (0, 0);
    };
    if end > start {
        (start, end - start)
    } else {
        (0, 0)
    }
}

/// Mount flags of the mount `path` is on that a bind remount in a user namespace must keep.
fn locked_flags(path: &Path) -> MsFlags {
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let mut out = MsFlags::empty();
    for (st_flag, ms_flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if st.flags().contains(st_flag) {
            out |= ms_flag;
        }
    }
    out
}

/// The system directories bound from the host (or a runtime), or recreated as its links.
const SYSTEM_DIRS: [&str; 9] = [
    "usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt",
];
/// The host's character devices bound into the sandbox's `/dev`, where the host has them.
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Bytes of stack for the job's process between its clone and its exec (a few calls deep).
const JOB_STACK: usize = 64 << 10;

/// The search path inside the sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Plan {
    pub(crate) fn build(input: PlanInput<'_>) -> Result<Plan, ExecError> {
        let root = input.root_dir;
        let mut ops = Vec::new();
        let mut names = Vec::new();
        let under = |rel: &str| root.join(rel.trim_start_matches('/'));
        let mut push = |op: MountOp, name: String| {
            ops.push(op);
            names.push(name);
        };
        // The skeleton of the new root is made here, on the host: inside the namespace the first
        // process still has the host's uid, which is unmapped there, so it could not create files.
        let create = input.create_skeleton;
        let mkdir = |p: &Path| -> Result<(), ExecError> {
            if create {
                std::fs::create_dir_all(p).map_err(io_err("create", p))?;
            }
            Ok(())
        };
        let symlink = |target: &Path, p: &Path| -> Result<(), ExecError> {
            if create {
                std::os::unix::fs::symlink(target, p).map_err(io_err("create symlink", p))?;
            }
            Ok(())
        };
        let touch = |p: &Path| -> Result<(), ExecError> {
            if create {
                File::create(p).map(drop).map_err(io_err("create", p))?;
            }
            Ok(())
        };
        let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;

        // System directories: from the configured rootfs, or the host's, read-only. Merged-/usr
        // hosts have symlinks for bin, lib, ...: recreate those as symlinks.
        let sys_root = input.rootfs.unwrap_or(Path::new("/"));
        for name in SYSTEM_DIRS {
            let host = sys_root.join(name);
            let Ok(meta) = std::fs::symlink_metadata(&host) else {
                continue;
            };
            let dst = under(name);
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host).map_err(io_err("read link", &host))?;
                symlink(&target, &dst)?;
            } else if meta.is_dir() {
                mkdir(&dst)?;
                push(
                    MountOp::Bind {
                        src: path_c(&host)?,
                        dst: path_c(&dst)?,
                        flags: ro | locked_flags(&host),
                    },
                    format!("bind {} read-only at /{name}", host.display()),
                );
            }
        }

        // The job directory, writable.
        let job = under("job");
        mkdir(&job)?;
        push(
            MountOp::Bind {
                src: path_c(input.job_dir)?,
                dst: path_c(&job)?,
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | locked_flags(input.job_dir),
            },
            format!("bind {} at /job", input.job_dir.display()),
        );

        // Directories shown inside it (a workflow job's deps), after it, so on top of it.
        for m in input.mounts {
            let rel = crate::spec::normalise_rel_path(&m.target)
                .map_err(|e| ExecError::Invalid(format!("mount target {:?}: {e}", m.target)))?;
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | locked_flags(&m.source);
            if m.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            push(
                MountOp::BindNoFollow {
                    src: path_c(&m.source)?,
                    dst: path_c(&job.join(&rel))?,
                    flags,
                },
                format!(
                    "bind {} at /job/{rel}{}",
                    m.source.display(),
                    if m.read_only { " read-only" } else { "" }
                ),
            );
        }

        // Shared working directories, at their own path (mount points in the skeleton).
        for d in input.shared_dirs {
            let at = d.path();
            let top = at
                .components()
                .nth(1)
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            if !at.is_absolute() || top.as_deref().is_none_or(|t| RESERVED_TOP.contains(&t)) {
                return Err(ExecError::Invalid(format!(
                    "shared directory {}: must be an absolute path outside /{}",
                    at.display(),
                    RESERVED_TOP.join(", /")
                )));
            }
            let dst = under(&at.to_string_lossy());
            mkdir(&dst)?;
            push(
                MountOp::BindBeneath {
                    root: path_c(&d.root)?,
                    rel: cstr(&d.rel, "a shared directory")?,
                    dst: path_c(&dst)?,
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | locked_flags(&at),
                },
                format!("bind {} read-write at {}", at.display(), at.display()),
            );
        }

        let tmp = under("tmp");
        mkdir(&tmp)?;
        push(
            MountOp::Tmpfs {
                dst: path_c(&tmp)?,
                data: cstr(
                    format!("mode=1777,size={}m", input.tmp_size_mb),
                    "tmpfs options",
                )?,
            },
            "mount tmpfs at /tmp".into(),
        );

        let proc_dir = under("proc");
        mkdir(&proc_dir)?;
        push(
            MountOp::Proc {
                dst: path_c(&proc_dir)?,
            },
            "mount a fresh /proc".into(),
        );

        // A minimal /dev: a few character devices bound from the host, the usual symlinks, shm.
        let dev = under("dev");
        mkdir(&dev)?;
        for node in DEV_NODES {
            let host = Path::new("/dev").join(node);
            if !host.exists() {
                continue;
            }
            let dst = dev.join(node);
            touch(&dst)?;
            push(
                MountOp::Bind {
                    src: path_c(&host)?,
                    dst: path_c(&dst)?,
                    flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | locked_flags(&host),
                },
                format!("bind /dev/{node}"),
            );
        }
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            symlink(Path::new(target), &dev.join(name))?;
        }
        let shm = dev.join("shm");
        mkdir(&shm)?;
        push(
            MountOp::Tmpfs {
                dst: path_c(&shm)?,
                data: cstr("mode=1777,size=64m", "tmpfs options")?,
            },
            "mount tmpfs at /dev/shm".into(),
        );

        // The program: a path is taken as is (relative to /job), a bare name searched on PATH
        // in the sandbox's view (the same /usr as the host, or the rootfs).
        let prog = input
            .argv
            .first()
            .ok_or_else(|| ExecError::Invalid("the command is empty".into()))?;
        let exe = if prog.contains('/') {
            let on_host = if prog.starts_with('/') {
                sys_root.join(prog.trim_start_matches('/'))
            } else {
                input.job_dir.join(prog)
            };
            if !prog.starts_with("/job/") && std::fs::symlink_metadata(&on_host).is_err() {
                return Err(ExecError::NoProgram {
                    dir: input.job_dir.to_path_buf(),
                    program: prog.clone(),
                });
            }
            prog.clone()
        } else {
            SANDBOX_PATH
                .split(':')
                .map(|d| format!("{d}/{prog}"))
                .find(|p| sys_root.join(p.trim_start_matches('/')).exists())
                .ok_or_else(|| ExecError::NoProgram {
                    dir: PathBuf::from(SANDBOX_PATH),
                    program: prog.clone(),
                })?
        };

        let argv: Vec<CString> = input
            .argv
            .iter()
            .map(|a| cstr(a, "an argument"))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = input
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}"), "an environment variable"))
            .collect::<Result<_, _>>()?;
        let argv_ptrs = pointers(&argv);
        let envp_ptrs = pointers(&envp);
        let exe = cstr(exe, "program")?;
        let env_bash = shebang::EnvBash::new(&exe, &argv, &envp);
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40);
        let filter = seccomp::build().map_err(|e| ExecError::Setup {
            stage: "compile the seccomp filter".into(),
            source: std::io::Error::other(e),
        })?;
        Ok(Plan {
            root: path_c(root)?,
            root_flags: MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | locked_flags(root),
            ops,
            op_names: names,
            workdir: cstr("/job", "workdir")?,
            hostname: cstr("jobpack", "hostname")?,
            lo_up: input.network_none,
            rlimits: input.rlimits,
            setgroups: input.parent_is_root,
            last_cap,
            filter,
            exe,
            argv_area: argv_area(),
            title: cstr("jobpack-sandbox-init", "title")?,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
            job_stack: vec![0; JOB_STACK],
            env_bash,
        })
    }

    /// The name of a setup stage reported by the child.
    pub(crate) fn stage_name(&self, stage: u32) -> String {
        let fixed = [
            "wait for the parent",
            "enter a cgroup namespace",
            "make mounts private",
            "mount the new root",
            "pivot_root",
            "detach the old root",
            "remount / read-only",
            "enter /job",
            "set the hostname",
            "bring up loopback",
            "set rlimits",
            "drop the capability bounding set",
            "clear ambient capabilities",
            "drop supplementary groups",
            "switch gid",
            "switch uid",
            "clear capabilities",
            "set no_new_privs",
            "install the seccomp filter",
            "block signals",
            "fork the job",
            "create a pipe",
            "arrange file descriptors",
        ];
        match stage {
            s if (s as usize) < fixed.len() => fixed[s as usize].to_owned(),
            s if s >= child::OP_BASE => self
                .op_names
                .get((s - child::OP_BASE) as usize)
                .cloned()
                .unwrap_or_else(|| format!("mount step {s}")),
            s => format!("stage {s}"),
        }
    }
}
