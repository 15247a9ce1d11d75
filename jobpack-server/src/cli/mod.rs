//! The `jobpack` commands: the clap command line and its dispatch to `pack`, `run`, `build`,
//! `serve`, `admin` and the client commands. Only this layer prints and picks exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::{client, server};

pub mod admin;
pub mod build;
pub mod pack;
pub mod run;
pub mod runtime;
pub mod verify;

/// Turn a job spec into a reproducible, runnable artifact.
#[derive(Debug, Parser)]
#[command(name = "jobpack", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Pack a spec (JSON or YAML) into a byte-reproducible .tar.gz Docker build context.
    Pack(pack::PackArgs),
    /// Run a spec or an artifact in the local sandbox (or, with --container, as an image),
    /// streaming its log; exits with its exit code.
    Run(run::RunArgs),
    /// Build an artifact into an OCI image with docker, podman or buildah; prints the image id.
    Build(build::BuildArgs),
    /// Serve the HTTP API (jobs, logs, downloads) with an embedded SQLite database.
    Serve(server::ServeArgs),
    /// Run the jobs a `jobpack serve --inline-worker false` (INLINE_WORKER=0) accepts, from
    /// the same data directory (takes serve's options; several workers may run).
    Worker(server::ServeArgs),
    /// Manage users, API tokens, quotas; read the audit log (on the server's database).
    Admin(admin::AdminArgs),
    /// Submit a spec, a directory or an archive to a server (--follow: stream its log and exit
    /// with its exit code).
    Submit(client::SubmitArgs),
    /// A job's status (any unique prefix of its id will do).
    Status(client::StatusArgs),
    /// Jobs on the server, newest first.
    List(client::ListArgs),
    /// A job's log (-f: follow it live until the job ends).
    Logs(client::LogsArgs),
    /// Stop a job (SIGTERM, then SIGKILL after the server's grace period).
    Cancel(client::CancelArgs),
    /// Delete a job and its files.
    Rm(client::RmArgs),
    /// Download a job's artifact (default), working-directory tarball, or one file.
    Download(client::DownloadArgs),
    /// Batches: submit a file of jobs, follow their counters, list, cancel.
    #[command(subcommand)]
    Batch(client::BatchCommand),
    /// Workflows: run a file of jobs that require each other, follow it, see its jobs, cancel.
    #[command(subcommand)]
    Workflow(client::WorkflowCommand),
    /// The gRPC job service's command line (`rnx run|status|list|stop|log`), against a jobpack
    /// server; an `rnx` link to this binary is the same.
    Rnx(client::RnxArgs),
    /// Runtimes: root file systems pinned by digest for a spec's runtime_fs (build from
    /// Debian's packages, import a tarball or OCI layout, list, info, rm, test).
    Runtime(runtime::RuntimeArgs),
    /// Signing keys for provenance (`generate`).
    #[command(subcommand)]
    Key(verify::KeyCommand),
    /// Check an artifact against its signed provenance (signature, then the artifact's sha256).
    Verify(verify::VerifyArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

/// Exit code for a spec that cannot be read or is invalid (the caller must fix their input).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for any other failure.
pub const EXIT_FAILURE: u8 = 1;

/// Parses the command line and runs the command; the process's exit code.
pub fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    // Called as `rnx` (a link to this binary): `jobpack rnx ...`.
    let called_rnx = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .is_some_and(|n| n == "rnx");
    if called_rnx {
        args.insert(1, "rnx".into());
    }
    server::apply_env_aliases();
    if let Err(err) = server::apply_config_file(&args) {
        eprintln!("error: {err:#}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let cli = Cli::parse_from(&args);
    let result = match cli.command {
        Commands::Pack(args) => pack::run(args),
        Commands::Run(args) => run::run(args),
        Commands::Build(args) => build::run(args),
        Commands::Serve(args) => server::run(args),
        Commands::Worker(args) => server::worker::run(args),
        Commands::Admin(args) => admin::run(args),
        Commands::Runtime(a) => runtime::run(a),
        Commands::Key(c) => verify::key(c),
        Commands::Verify(a) => verify::run(a),
        Commands::Submit(a) => return client::block_on(client::run_submit(a)),
        Commands::Status(a) => return client::block_on(client::run_status(a)),
        Commands::List(a) => return client::block_on(client::run_list(a)),
        Commands::Logs(a) => return client::block_on(client::run_logs(a)),
        Commands::Cancel(a) => return client::block_on(client::run_cancel(a)),
        Commands::Rm(a) => return client::block_on(client::run_rm(a)),
        Commands::Download(a) => return client::block_on(client::run_download(a)),
        Commands::Batch(c) => return client::block_on(client::run_batch(c)),
        Commands::Workflow(c) => return client::block_on(client::run_workflow(c)),
        Commands::Rnx(a) => return client::block_on(client::run_rnx(a)),
        Commands::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "jobpack",
                &mut std::io::stdout(),
            );
            return ExitCode::SUCCESS;
        }
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {err:#}");
            let bad_input = err.chain().any(|e| {
                e.downcast_ref::<jobpack_core::SpecError>().is_some()
                    || matches!(
                        e.downcast_ref::<server::store::accounts::AccountError>(),
                        Some(e) if !matches!(e, server::store::accounts::AccountError::Db(_))
                    )
                    || matches!(
                        e.downcast_ref::<jobpack_core::Error>(),
                        Some(jobpack_core::Error::Spec(_))
                    )
            });
            ExitCode::from(if bad_input {
                EXIT_BAD_INPUT
            } else {
                EXIT_FAILURE
            })
        }
    }
}
