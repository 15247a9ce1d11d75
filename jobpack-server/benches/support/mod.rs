//! What the benchmarks share: starting the real server, and percentiles.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `jobpack serve` on 127.0.0.1:0 with its data in `data`, plus `args` and `env`;
/// returns the process and its URL (from its first line on stdout). `quiet` drops its stderr.
pub fn start_server(
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    quiet: bool,
) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobpack"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(if quiet {
            Stdio::null()
        } else {
            Stdio::inherit()
        })
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("jobpack listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, url)
}

/// The `p` quantile (0..=1) of `v`.
pub fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
