//! Load through HTTP: `cargo bench -p jobpack-server --bench load` (as root for the sandbox;
//! otherwise the server runs with --permissive and the numbers say so).
//!
//! Starts the real `jobpack serve` on 127.0.0.1:0 with a temporary data directory, submits
//! `BENCH_JOBS` (default 200) trivial jobs from 16 concurrent clients, waits until all have
//! completed, and prints submitted-to-running latency (the server's own created_at and started_at)
//! p50/p99, the HTTP submit latency p50/p99, and completed jobs per second.

mod support;

use std::time::{Duration, Instant};

use support::{get_json, one_job_to_running_ms, pct, start_server, to_running_ms, wait_completed};

use serde_json::Value;

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let conc: usize = std::env::var("BENCH_CONCURRENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: a plain id query.
    let root = unsafe { libc::geteuid() } == 0;
    let conc_s = conc.to_string();
    let mut args = vec!["--max-concurrent", conc_s.as_str(), "--auth", "none"];
    if !root {
        args.push("--permissive");
    }
    let (mut child, url) = start_server(tmp.path(), &args, &[], false);
    let client = reqwest::Client::new();

    let t0 = Instant::now();
    let mut submit_ms = Vec::new();
    let mut ids = Vec::new();
    let body = serde_json::json!({"command": "echo ok"}).to_string();
    for chunk in (0..jobs).collect::<Vec<_>>().chunks(16) {
        let futs = chunk.iter().map(|_| {
            let (c, u, b) = (client.clone(), format!("{url}/v1/jobs"), body.clone());
            async move {
                let t = Instant::now();
                let r = c
                    .post(u)
                    .header("content-type", "application/json")
                    .body(b)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let v: Value = r.json().await.unwrap();
                (
                    t.elapsed().as_secs_f64() * 1e3,
                    v["job_id"].as_str().unwrap().to_owned(),
                )
            }
        });
        for (ms, id) in futures_util::future::join_all(futs).await {
            submit_ms.push(ms);
            ids.push(id);
        }
    }
    // Wait for all to finish.
    wait_completed(&client, &url, jobs, Duration::from_secs(600)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut to_running = Vec::new();
    for id in &ids {
        let v = get_json(&client, &format!("{url}/v1/jobs/{id}")).await;
        to_running.push(to_running_ms(&v));
    }
    // Unloaded: one job at a time, so the latency is the server's own, not the queue's.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(one_job_to_running_ms(&client, &url, &body).await);
    }
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "unloaded (one job at a time, 20 runs): submitted->running p50 {:.1} ms, p99 {:.1} ms",
        pct(&mut idle, 0.5),
        pct(&mut idle, 0.99)
    );
    println!(
        "burst of {jobs} trivial jobs, --max-concurrent {conc}, isolation {}: submitted->running (queueing included) p50 {:.1} ms, p99 {:.1} ms; \
         HTTP submit p50 {:.1} ms, p99 {:.1} ms; {:.1} jobs/s completed end to end",
        if root {
            "namespaces"
        } else {
            "none (not root)"
        },
        pct(&mut to_running, 0.5),
        pct(&mut to_running, 0.99),
        pct(&mut submit_ms, 0.5),
        pct(&mut submit_ms, 0.99),
        jobs as f64 / elapsed
    );
}
