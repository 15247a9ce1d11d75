//! Starting a run in the namespace sandbox: the cgroup, the skeleton root, the plan, pid 1.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The process, its cgroup, its stdout and stderr, and a root directory of its own to remove
/// when it ends (a shared skeleton is not).
pub(super) type Started = (Proc, Option<Cgroup>, File, File, Option<std::path::PathBuf>);

/// How long building a sandbox may take before it is abandoned.
const SETUP_LIMIT: Duration = Duration::from_secs(30);

#[cfg(target_os = "linux")]
pub(super) async fn start_sandboxed(
    cfg: &Arc<LocalExecutorConfig>,
    req: &RunRequest,
    report: &mut IsolationReport,
    warm_up: bool,
) -> Result<Started, ExecError> {
    use crate::exec::sandbox::{self, IdMap, Plan, PlanInput, Report, skeleton};
    use std::path::Path;
    let strict = cfg.mode == IsolationMode::Strict;
    let needs_cgroup = req.limits.needs_cgroup();
    let (euid, egid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let is_root = euid == 0;
    let name = match &req.run_id {
        Some(id) => {
            // A named run may be a retry: clear what an earlier attempt of it left behind.
            let name = run_name(id)?;
            let stale = cfg.runtime_dir.join(&name);
            remove_tree(&stale).map_err(io_err("remove", &stale))?;
            if let Some(v) = cgroup::detect(&cfg.cgroup_root)
                && let Some(stale) = Cgroup::open(&cfg.cgroup_root, v, &cfg.cgroup_parent, &name)
            {
                stale.destroy()?;
            }
            name
        }
        None => unique_name(),
    };

    // The cgroup first, so the job is in it before it runs anything.
    let cgroup = match cgroup::detect(&cfg.cgroup_root) {
        Some(version) => {
            let dev = req.limits.io_bps.and_then(|_| block_device(&req.job_dir));
            match Cgroup::create(
                &cfg.cgroup_root,
                version,
                &cfg.cgroup_parent,
                &name,
                &req.limits,
                dev,
            ) {
                Ok((cg, applied)) => {
                    if req.limits.io_bps.is_some() && !applied.iter().any(|a| a == "io") {
                        report
                            .missing
                            .push("io limit: no block device found for the job directory".into());
                    }
                    report.cgroup = version.as_str().into();
                    report.cgroup_paths =
                        cg.paths().iter().map(|p| p.display().to_string()).collect();
                    report.cgroup_limits = applied;
                    Some(cg)
                }
                Err(e) if strict && (needs_cgroup || is_root) => return Err(e),
                Err(e) => {
                    report.missing.push(format!("cgroup: {e}"));
                    None
                }
            }
        }
        None if strict && needs_cgroup => {
            return Err(ExecError::IsolationUnavailable {
                what: format!(
                    "no usable cgroup v1 or v2 under {}",
                    cfg.cgroup_root.display()
                ),
            });
        }
        None => {
            report.missing.push("cgroup: none usable".into());
            None
        }
    };
    if report.cgroup.is_empty() {
        report.cgroup = "none".into();
    }
    if warm_up && cgroup.is_some() {
        warm_up_beside(&cfg.cgroup_root);
    }
    let cleanup_cg = |cg: &Option<Cgroup>| {
        if let Some(cg) = cg
            && let Err(e) = cg.destroy()
        {
            // The run failed to start; a named run's next attempt removes it first.
            tracing::warn!("cannot remove the cgroup of a run that did not start: {e}");
        }
    };

    let ids = if is_root {
        if let Err(e) = chown_tree(&req.job_dir, cfg.job_host_uid) {
            cleanup_cg(&cgroup);
            return Err(e);
        }
        IdMap {
            host_uid: cfg.job_host_uid,
            host_gid: cfg.job_host_uid,
        }
    } else {
        IdMap {
            host_uid: euid,
            host_gid: egid,
        }
    };
    let env = environment(req, "/tmp", sandbox::SANDBOX_PATH);
    let network_none = req.network == NetworkPolicy::None;
    let rootfs = req.rootfs.as_deref().or(cfg.rootfs.as_deref());
    let input = PlanInput {
        job_dir: &req.job_dir,
        root_dir: Path::new("/"),
        create_skeleton: false,
        rootfs,
        tmp_size_mb: cfg.tmp_size_mb,
        network_none,
        argv: &req.argv,
        env: &env,
        rlimits: rlimits(req, cfg),
        parent_is_root: is_root,
        mounts: &req.mounts,
        shared_dirs: &req.shared_dirs,
    };
    // The new root: this shape's shared skeleton, made by the first run that needs it. A run
    // with shared working directories (whose paths are the users') has one of its own instead,
    // removed when it ends, so skeletons do not pile up one per directory ever shared.
    let build = |tmp: &Path| {
        Plan::build(PlanInput {
            root_dir: tmp,
            create_skeleton: true,
            ..input.clone()
        })
        .map(drop)
    };
    let (root_dir, own_root) = if req.shared_dirs.is_empty() {
        let key = skeleton::key(rootfs.unwrap_or(Path::new("/")));
        (skeleton::ensure(&cfg.runtime_dir, &key, build), None)
    } else {
        let dir = cfg.runtime_dir.join(&name);
        let made = std::fs::create_dir_all(&dir)
            .map_err(|e| io_err("create", &dir)(e).into())
            .and_then(|()| build(&dir));
        (made.map(|()| dir.clone()), Some(dir))
    };
    let remove_own = |own: &Option<std::path::PathBuf>| {
        if let Some(d) = own
            && let Err(e) = remove_tree(d)
        {
            tracing::warn!("cannot remove {}: {e}", d.display());
        }
    };
    let plan = root_dir.and_then(|root_dir| {
        Plan::build(PlanInput {
            root_dir: &root_dir,
            ..input
        })
    });
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            cleanup_cg(&cgroup);
            remove_own(&own_root);
            return Err(e);
        }
    };
    // Spawn and wait for "running" (or a setup failure) on a blocking thread.
    let (plan, cgroup, result) = tokio::task::spawn_blocking(move || {
        let r = sandbox::spawn(&plan, ids, network_none, cgroup.as_ref()).and_then(|mut s| {
            match Report::read_within(&mut s.report, SETUP_LIMIT) {
                Some(Report::Running) => Ok(s),
                other => {
                    // Kill (if it is stuck) and reap our own child, not yet reaped.
                    let pid = nix::unistd::Pid::from_raw(s.pid);
                    if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                        nix::sys::wait::waitpid(pid, None).ok();
                    }
                    Err(match other {
                        Some(Report::SetupFailed { stage, errno }) => {
                            let source = std::io::Error::from_raw_os_error(errno);
                            let stage = plan.stage_name(stage);
                            if errno == libc::EPERM || errno == libc::EACCES {
                                ExecError::IsolationUnavailable {
                                    what: format!("sandbox setup failed at {stage}: {source}"),
                                }
                            } else {
                                ExecError::Setup { stage, source }
                            }
                        }
                        Some(Report::ExecFailed { errno }) => ExecError::Setup {
                            stage: format!("exec {}", plan.exe.to_string_lossy()),
                            source: std::io::Error::from_raw_os_error(errno),
                        },
                        _ => ExecError::Setup {
                            stage: "start the sandbox".into(),
                            source: std::io::Error::other(format!(
                                "its first process neither started the job nor reported an \
                                 error within {}s",
                                SETUP_LIMIT.as_secs()
                            )),
                        },
                    })
                }
            }
        });
        (plan, cgroup, r)
    })
    .await
    .map_err(|e| ExecError::Setup {
        stage: "start the sandbox".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    drop(plan);
    match result {
        Ok(s) => {
            report.level = "namespaces".into();
            report.namespaces = ["user", "pid", "mount", "ipc", "uts", "cgroup"]
                .into_iter()
                .map(String::from)
                .collect();
            if network_none {
                report.namespaces.push("net".into());
            }
            report.seccomp = true;
            report.no_new_privs = true;
            report.capabilities_dropped = true;
            report.uid = Some(sandbox::JOB_UID);
            Ok((
                Proc::Sandbox {
                    pid: s.pid,
                    report: s.report,
                },
                cgroup,
                s.stdout,
                s.stderr,
                own_root,
            ))
        }
        Err(e) => {
            cleanup_cg(&cgroup);
            remove_own(&own_root);
            Err(e)
        }
    }
}

/// Starts the kernel's wait for the move into a cgroup ([`cgroup::warm_up`]) on a thread of its
/// own, now that the job's cgroup directories and limits are written (every cgroup write waits
/// while it lasts): it then runs beside the root's plan, pid 1's clone and pid 1's mounts, and
/// the move of pid 1 into its cgroup a few milliseconds later does not wait again.
#[cfg(target_os = "linux")]
fn warm_up_beside(root: &std::path::Path) {
    let root = root.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("jobpack-cgroup".into())
        .spawn(move || warm_up_cgroups(&root));
    if let Err(e) = spawned {
        tracing::debug!("cgroup warm-up: no thread for it: {e}");
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) async fn start_sandboxed(
    _cfg: &Arc<LocalExecutorConfig>,
    _req: &RunRequest,
    _report: &mut IsolationReport,
    _warm_up: bool,
) -> Result<Started, ExecError> {
    Err(ExecError::IsolationUnavailable {
        what: format!("namespaces need Linux (this is {})", std::env::consts::OS),
    })
}
