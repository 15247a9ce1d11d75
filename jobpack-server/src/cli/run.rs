//! `jobpack run SPEC|ARTIFACT.tar.gz [--timeout S] [--memory MB] [--cpu PERCENT] [--pids N]
//! [--network none|host] [--json]`: packs a spec (or takes an artifact), unpacks it, runs it in the
//! local sandbox, streams its log, and exits with the job's exit code. Ctrl-C cancels cleanly.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use jobpack_core::exec::{
    Executor, IsolationMode, Limits, LocalExecutor, LocalExecutorConfig, NetworkPolicy, Outcome,
    RunRequest,
};
use jobpack_core::{JobSpec, Packager, PackagerConfig};

use crate::client::LimitFlags;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A job spec (.json/.yaml, packed first), an artifact (.tar.gz) made by `jobpack pack`, or
    /// an unpacked artifact (a directory with run.sh, run in place).
    input: PathBuf,
    #[command(flatten)]
    limits: LimitFlags,
    /// Disk bandwidth limit in bytes per second (where the IO controller allows).
    #[arg(long)]
    io_bps: Option<u64>,
    /// Stop the job when its log exceeds this many MiB (status limit_exceeded).
    #[arg(long)]
    max_log_mb: Option<u64>,
    /// none: only loopback inside the sandbox; host: the host's network.
    #[arg(long, value_enum, default_value = "none")]
    network: Network,
    /// Extra environment variables (NAME=VALUE), repeatable.
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Secret environment variables (NAME=VALUE): masked as *** in the log.
    #[arg(long = "secret-env", value_name = "NAME=VALUE")]
    secret_env: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL on Ctrl-C.
    #[arg(long, default_value_t = 5.0)]
    grace: f64,
    /// Run without full isolation when the machine cannot provide it (reported, never silent).
    #[arg(long)]
    permissive: bool,
    /// Keep the unpacked job directory and log here instead of a temporary directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print the outcome as JSON on stdout (the log goes to stderr).
    #[arg(long)]
    json: bool,
    /// Build the artifact into an image (`jobpack build`) and run that instead of the sandbox.
    #[arg(long)]
    container: bool,
    /// With --container: the builder (default: docker if its engine answers, else podman, else
    /// buildah).
    #[arg(long, value_enum, env = "JOBPACK_BUILDER")]
    builder: Option<crate::cli::build::BuilderFlag>,
    /// Print the digest of the job's outputs at the end (`jobpack: outputs sha256:...` on
    /// stderr: the working directory walked as a receipt records it), in the sandbox and, with
    /// buildah, in the container, so the two can be compared.
    #[arg(long)]
    outputs: bool,
    #[command(flatten)]
    store: crate::cli::runtime::StoreFlag,
    /// Bind this tree as the job's root file system (`/usr`, `/etc`, ...) instead of the one
    /// the artifact's runtime_fs names in the store (or the host's).
    #[arg(long, conflicts_with = "container")]
    rootfs: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Network {
    None,
    Host,
}

fn parse_env(items: &[String], flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            let (k, v) = i
                .split_once('=')
                .with_context(|| format!("{flag} {i:?}: expected NAME=VALUE"))?;
            jobpack_core::spec::check_env_name(k)
                .map_err(|m| anyhow::anyhow!("{flag} {k}: {m}"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn is_artifact(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar") {
        return true;
    }
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// The process exit code for an outcome: the job's own, 128+signal, 124 for a time-out (as
/// timeout(1)), 130 for a cancel — the same mapping `jobpack submit --follow` uses.
pub fn exit_code(o: &Outcome) -> u8 {
    crate::client::job_exit_code(o.status.as_str(), o.exit_code, o.signal)
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let env = parse_env(&args.env, "--env")?;
    let secret_env = parse_env(&args.secret_env, "--secret-env")?;
    if !(args.grace.is_finite() && args.grace >= 0.0) {
        bail!("--grace must be a non-negative number of seconds");
    }
    let timeout = match args.limits.timeout {
        Some(t) if t.is_finite() && t > 0.0 => Some(
            Duration::try_from_secs_f64(t)
                .map_err(|_| anyhow::anyhow!("--timeout {t} is too large"))?,
        ),
        Some(t) => bail!("--timeout must be a positive number of seconds, got {t}"),
        None => None,
    };
    let (_tmp, work) = match &args.keep {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            (None, dir.clone())
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("jobpack-run-")
                .tempdir()
                .context("cannot create a temporary directory")?;
            let p = t.path().to_path_buf();
            (Some(t), p)
        }
    };
    let executor = LocalExecutor::new(LocalExecutorConfig {
        mode: if args.permissive {
            IsolationMode::Permissive
        } else {
            IsolationMode::Strict
        },
        ..LocalExecutorConfig::default()
    });
    // One job, one thread of async work: no worker threads to start and switch between.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let in_place = args.input.is_dir();
        // A spec is packed here (beside the run's job directory); an artifact or a directory
        // is taken as it is.
        let job = if in_place || is_artifact(&args.input) {
            None
        } else {
            Some(JobSpec::from_path(&args.input)?.validate()?)
        };
        let packer = || -> anyhow::Result<Packager> {
            Ok(Packager::new(PackagerConfig {
                cache_dir: crate::cli::pack::default_cache_dir(),
                runtimes: Some(args.store.dir()),
                artifact_cache: true,
                ..PackagerConfig::default()
            })?)
        };
        let out = work.join("artifact.tar.gz");
        let cannot_pack = || format!("cannot pack {}", args.input.display());
        let network = match args.network {
            Network::None => NetworkPolicy::None,
            Network::Host => NetworkPolicy::Host,
        };
        let limits = Limits {
            timeout,
            memory_bytes: args.limits.memory_bytes(),
            cpu_percent: args.limits.cpu,
            pids: args.limits.pids,
            io_bps: args.io_bps,
            log_bytes: args.max_log_mb.map(|m| m.saturating_mul(1 << 20)),
            ..Limits::default()
        };
        if args.container {
            if !env.is_empty() || !secret_env.is_empty() {
                bail!("--env and --secret-env are for the sandbox; a container takes the spec's env");
            }
            let builder = jobpack_core::container::Builder::detect(args.builder.map(Into::into))?;
            let art = match &job {
                Some(job) => {
                    packer()?.pack_job(job, Some(&out)).await.with_context(cannot_pack)?;
                    out
                }
                None => args.input.clone(),
            };
            let store = args.store.clone();
            let code = tokio::task::spawn_blocking(move || {
                crate::cli::build::run_container(&builder, &art, &limits, network, &store, args.outputs)
            })
            .await??;
            eprintln!("jobpack: the container exited with {code}");
            return Ok(ExitCode::from(code));
        }
        // An unpacked artifact (a directory with run.sh) runs where it is.
        let job_dir = if in_place {
            args.input.clone()
        } else {
            let job_dir = work.join("job");
            std::fs::create_dir_all(&job_dir)
                .with_context(|| format!("cannot create {}", job_dir.display()))?;
            if std::fs::read_dir(&job_dir)?.next().is_some() {
                bail!("{} is not empty: give --keep an empty or new directory", job_dir.display());
            }
            match &job {
                Some(job) => {
                    let inputs = jobpack_core::PackInputs::default();
                    packer()?
                        .prepare(job, &inputs, &out, &job_dir)
                        .await
                        .with_context(cannot_pack)?;
                }
                None => {
                    jobpack_core::unpack_job(&args.input, &job_dir)
                        .await
                        .with_context(|| format!("cannot unpack {}", args.input.display()))?;
                }
            }
            job_dir
        };

        let mut req = RunRequest::new(&job_dir, work.join("job.log"));
        // Without --keep the log is in a temporary directory, removed at the end: not synced.
        req.log_sync = args.keep.is_some();
        req.rootfs = match &args.rootfs {
            Some(r) => Some(r.clone()),
            None => crate::cli::runtime::tree_for(&job_dir, &args.store)?.map(|(_, tree)| tree),
        };
        req.env = env;
        req.secret_env = secret_env;
        req.network = network;
        req.limits = limits;
        let handle = executor.start(req).await.context("cannot start the job")?;

        // The log, to stdout (stderr with --json), until the job's output ends.
        let mut reader = handle.logs().reader();
        let to_stderr = args.json;
        // The first write that failed, if one did: the job runs on either way.
        let pump = tokio::spawn(async move {
            while let Ok(Some(chunk)) = reader.next_chunk(64 * 1024).await {
                let r = if to_stderr {
                    std::io::stderr().write_all(&chunk)
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&chunk).and_then(|_| out.flush())
                };
                if let Err(e) = r {
                    return Some(e);
                }
            }
            None
        });
        let grace = Duration::from_secs_f64(args.grace);
        let mut wait = handle.wait();
        let mut interrupts = 0;
        let outcome = loop {
            tokio::select! {
                o = &mut wait => break o,
                _ = tokio::signal::ctrl_c() => {
                    interrupts += 1;
                    if interrupts == 1 {
                        eprintln!("\njobpack: cancelling (SIGTERM, then SIGKILL after {:.1}s; Ctrl-C again to kill now)", grace.as_secs_f64());
                        handle.cancel(grace);
                    } else {
                        handle.cancel(Duration::ZERO);
                    }
                }
            }
        };
        // A reader that went away (`| head`) is the user's choice; any other failure (a full
        // disk behind a redirect) means the output they asked for is cut short: said, and not
        // a success.
        let log_lost = match pump.await {
            Ok(Some(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
            Ok(Some(e)) => {
                let to = if to_stderr { "stderr" } else { "stdout" };
                eprintln!("jobpack: cannot write the job's log to {to}: {e}");
                true
            }
            Ok(None) => false,
            Err(e) => {
                eprintln!("jobpack: the log writer failed: {e}");
                true
            }
        };
        let outputs = if args.outputs || args.json {
            crate::cli::build::outputs_line(&job_dir, args.outputs)
        } else {
            None
        };
        if args.json {
            let mut v = serde_json::to_value(&outcome)?;
            if let Some(d) = &outputs {
                v["outputs_sha256"] = serde_json::json!(d);
            }
            println!("{v}");
        } else {
            let detail = outcome.reason.as_deref().unwrap_or("exit 0");
            eprintln!(
                "jobpack: {} ({detail}) in {:.2}s, isolation: {}{}",
                outcome.status.as_str(),
                outcome.wall_time_secs,
                outcome.isolation.level,
                if outcome.isolation.missing.is_empty() {
                    String::new()
                } else {
                    format!(" (missing: {})", outcome.isolation.missing.join("; "))
                }
            );
        }
        match exit_code(&outcome) {
            0 if log_lost => Ok(ExitCode::from(crate::client::exit::FAILURE)),
            code => Ok(ExitCode::from(code)),
        }
    })
}
