//! `jobpack serve` with `INLINE_WORKER=0` and two `jobpack worker` processes on its data
//! directory: 50 jobs, one worker killed with SIGKILL while it runs jobs; every job reaches a
//! final status and none runs twice at once (each job takes a lock directory in a shared working
//! directory and fails loudly if it is already there).

mod common;
#[path = "../../jobpack-core/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{FINAL, Server, call};
use serde_json::{Value, json};
use support::GroupChild;

fn worker(data: &std::path::Path, allowed: &str) -> GroupChild {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobpack"));
    cmd.args(["worker", "--data-dir"])
        .arg(data)
        .args([
            "--max-concurrent",
            "3",
            "--grace",
            "0.5",
            "--allowed-workdir",
            allowed,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !common::is_root() {
        cmd.arg("--permissive");
    }
    let mut w = GroupChild::spawn(&mut cmd).unwrap();
    let mut line = String::new();
    BufReader::new(w.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("jobpack worker "), "{line:?}");
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_run_every_job_once_and_recover_a_killed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let shared = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = std::fs::canonicalize(shared.path()).unwrap();
    if common::is_root() {
        std::os::unix::fs::chown(&root, Some(2_000_000), Some(2_000_000)).unwrap();
    }
    let allowed = root.display().to_string();
    let s = Server::launch(
        &data,
        common::Launch {
            args: &["--auth", "none", "--allowed-workdir", &allowed],
            env: &[("INLINE_WORKER", "0")],
            capture_stderr: false,
        },
    );
    let c = reqwest::Client::new();
    // Without a worker nothing runs.
    let mut ids = Vec::new();
    for n in 0..50 {
        let cmd = format!(
            "mkdir lock.{n} || {{ echo TWICE; exit 99; }}; sleep 0.3; echo {n} >> runs.txt; \
             rmdir lock.{n}"
        );
        let body = json!({"command": cmd, "name": format!("j{n}"), "working_dir": allowed});
        let (st, v) = call(&c, &s, "POST", "/v1/jobs", None, Some(&body)).await;
        assert_eq!(st, 201, "{v}");
        ids.push(v["job_id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{}", ids[0]), None, None).await;
    assert_eq!(v["status"], "queued", "no worker yet: {v}");

    let mut w1 = worker(&data, &allowed);
    let _w2 = worker(&data, &allowed);
    // Kill the first worker (the process alone, not its sandboxes) once jobs run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, l) = call(&c, &s, "GET", "/v1/jobs?status=running", None, None).await;
        if l["total"].as_u64().unwrap_or(0) >= 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{l}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SAFETY: a signal to the worker process we started.
    unsafe { libc::kill(w1.0.id() as i32, libc::SIGKILL) };
    w1.0.wait().unwrap();

    // Every job ends: completed, or failed because its worker was lost mid-run.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rows: Vec<Value> = Vec::new();
    for id in &ids {
        loop {
            let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{id}"), None, None).await;
            if FINAL.contains(&v["status"].as_str().unwrap_or("")) {
                rows.push(v);
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never ended: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let lost = rows
        .iter()
        .filter(|v| v["error_code"] == "worker_lost")
        .count();
    let completed = rows.iter().filter(|v| v["status"] == "completed").count();
    assert_eq!(completed + lost, 50, "{rows:#?}");
    assert!(
        rows.iter().all(|v| v["exit_code"] != 99),
        "a job ran twice at once: {rows:#?}"
    );
    let runs = std::fs::read_to_string(root.join("runs.txt")).unwrap();
    let mut seen: Vec<&str> = runs.lines().collect();
    let n = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), n, "a job ran twice: {runs}");
    // A job lost mid-run may have finished its work before its sandbox was reaped.
    assert!(
        completed <= n && n <= completed + lost,
        "{completed} {lost} {runs}"
    );
    // A lost job's log is still served (the worker wrote it to the shared data directory).
    let (_, log) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{}/logs", ids[49]),
        None,
        None,
    )
    .await;
    assert!(log.is_string(), "{log}");
}
