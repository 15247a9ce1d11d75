//! `jobpack`: the command-line front end over `jobpack-core`.
//!
//! Only this binary uses `anyhow`, prints, and picks exit codes; the library does neither.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_cmd;
mod pack_cmd;
mod run_cmd;
mod server;

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
    Pack(pack_cmd::PackArgs),
    /// Run a spec or an artifact in the local sandbox, streaming its log; exits with its exit code.
    Run(run_cmd::RunArgs),
    /// Serve the HTTP API (jobs, logs, downloads) with an embedded SQLite database.
    Serve(server::ServeArgs),
    /// Manage users, API tokens, quotas; read the audit log (on the server's database).
    Admin(admin_cmd::AdminArgs),
}

/// Exit code for a spec that cannot be read or is invalid (the caller must fix their input).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code for any other failure.
pub const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let Err(err) = server::apply_config_file(&args) {
        eprintln!("error: {err:#}");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Commands::Pack(args) => pack_cmd::run(args),
        Commands::Run(args) => run_cmd::run(args),
        Commands::Serve(args) => server::run(args),
        Commands::Admin(args) => admin_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line: the error and its causes, outermost first.
            eprintln!("error: {err:#}");
            let bad_input = err.chain().any(|e| {
                e.downcast_ref::<jobpack_core::SpecError>().is_some()
                    || matches!(
                        e.downcast_ref::<server::accounts::AccountError>(),
                        Some(e) if !matches!(e, server::accounts::AccountError::Db(_))
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
