//! What the benchmarks share: starting the real server, waiting for its jobs, and percentiles.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `jobpack serve` on 127.0.0.1:0 with its data in `data`, plus `args` and `env`;
/// returns the process and its URL (from its first line on stdout). `quiet` drops its stderr.
/// The binary is `JOBPACK_BIN` when set (scripts/bench.sh passes the release build, the one
/// users run: the bench profile's own build names its functions differently, so the release
/// build's code layout, jobpack-server/build.rs, does not apply to it), else this build's.
pub fn start_server(
    data: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    quiet: bool,
) -> (Child, String) {
    let bin = std::env::var_os("JOBPACK_BIN").unwrap_or(env!("CARGO_BIN_EXE_jobpack").into());
    let mut child = Command::new(bin)
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

/// A job's submitted -> running time in ms (the server's own `created_at` and `started_at`).
pub fn to_running_ms(job: &serde_json::Value) -> f64 {
    let t = |k: &str| {
        humantime::parse_rfc3339(job[k].as_str().expect("an RFC 3339 time"))
            .expect("rfc3339")
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    (t("started_at") - t("created_at")) * 1e3
}

/// GETs `url` and reads its JSON body.
pub async fn get_json(c: &reqwest::Client, url: &str) -> serde_json::Value {
    c.get(url).send().await.unwrap().json().await.unwrap()
}

/// Waits until the server at `url` has `n` completed jobs; panics after `within`.
pub async fn wait_completed(c: &reqwest::Client, url: &str, n: usize, within: std::time::Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let v = get_json(c, &format!("{url}/v1/jobs?status=completed&limit=1")).await;
        if v["total"].as_u64().unwrap_or(0) as usize == n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs did not all complete"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Submits `body` alone and waits for it: its submitted -> running time in ms.
pub async fn one_job_to_running_ms(c: &reqwest::Client, url: &str, body: &str) -> f64 {
    let r = c
        .post(format!("{url}/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    loop {
        let v: serde_json::Value = c
            .get(format!("{url}/v1/jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == "completed" {
            return to_running_ms(&v);
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}
