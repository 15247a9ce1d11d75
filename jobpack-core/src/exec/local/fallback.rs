//! Starting a run without the sandbox (permissive mode only): a process group with rlimits.

use std::fs::File;

use super::*;

/// The fallback: a process group with rlimits, in the job directory, on the host.
pub(super) async fn start_fallback(
    cfg: &LocalExecutorConfig,
    req: &RunRequest,
) -> Result<(Proc, File, File), ExecError> {
    use std::os::unix::process::CommandExt;
    let host_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let home = req.job_dir.display().to_string();
    let mut cmd = std::process::Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .current_dir(&req.job_dir)
        .env_clear()
        .envs(environment(req, &home, &host_path))
        .env("TMPDIR", std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let limits = rlimits(req, cfg);
    // SAFETY: between fork and exec only setrlimit runs (async-signal-safe, no allocation);
    // `limits` is only read.
    unsafe {
        cmd.pre_exec(move || {
            for &(res, lim) in &limits {
                setrlimit(res, lim, lim)?;
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| ExecError::Setup {
        stage: format!("start {}", req.argv[0]),
        source,
    })?;
    let stdout = File::from(std::os::fd::OwnedFd::from(
        child.stdout.take().expect("piped"),
    ));
    let stderr = File::from(std::os::fd::OwnedFd::from(
        child.stderr.take().expect("piped"),
    ));
    let pid = child.id() as i32;
    // The supervisor reaps it with wait4 (for its resource usage); std's handle is not used again.
    drop(child);
    Ok((Proc::Group { pid }, stdout, stderr))
}
