//! `jobpack`: the command-line front end over `jobpack-core` (see `jobpack_server::cli`).

fn main() -> std::process::ExitCode {
    jobpack_server::cli::main()
}
