//! Workflow scheduling through HTTP: `cargo bench -p jobpack-server --bench workflow` (as root
//! for the sandbox; otherwise the server runs with --permissive and the numbers say so).
//!
//! Submits a chain of `BENCH_CHAIN` (default 50) trivial jobs, each requiring the one before, and
//! prints the hand-off latency (a job's start minus its requirement's finish, from the server's
//! own timestamps) p50/p99 and the chain's wall time per job; then a fan-out/fan-in of
//! `BENCH_FAN` (default 32) jobs between one root and one sink, and its wall time against the same
//! number of jobs submitted as a plain batch (the ratio is the cost of the dependencies).

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{pct, start_server};

fn secs(t: &Value) -> f64 {
    let st = humantime::parse_rfc3339(t.as_str().expect("a timestamp")).expect("rfc3339");
    st.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn env_or(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

async fn until_ended(c: &reqwest::Client, url: &str) -> Value {
    loop {
        let v: Value = c.get(url).send().await.unwrap().json().await.unwrap();
        if !matches!(v["status"].as_str(), Some("queued" | "running")) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_json(c: &reqwest::Client, url: &str, content_type: &str, body: String) -> Value {
    c.post(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn run_workflow(c: &reqwest::Client, url: &str, yaml: String) -> (Value, f64) {
    let t0 = Instant::now();
    let w = post_json(c, &format!("{url}/v1/workflows"), "application/yaml", yaml).await;
    let id = w["workflow_id"].as_str().expect("created").to_owned();
    let w = until_ended(c, &format!("{url}/v1/workflows/{id}")).await;
    assert_eq!(w["status"], "completed", "{w:#}");
    (w, t0.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let chain = env_or("BENCH_CHAIN", 50);
    let fan = env_or("BENCH_FAN", 32);
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: a plain id query.
    let root = unsafe { libc::geteuid() } == 0;
    let mut args = vec!["--max-concurrent", "4", "--auth", "none"];
    if !root {
        args.push("--permissive");
    }
    let (mut child, url) = start_server(tmp.path(), &args, &[], false);
    let c = reqwest::Client::new();

    // A chain: every job waits for the one before.
    let mut yaml = String::from("jobs:\n  j0: {command: 'true'}\n");
    for i in 1..chain {
        yaml.push_str(&format!(
            "  j{i}: {{command: 'true', requires: [j{}]}}\n",
            i - 1
        ));
    }
    let (w, wall) = run_workflow(&c, &url, yaml).await;
    let jobs = w["jobs"].as_array().unwrap();
    let mut handoff: Vec<f64> = jobs
        .windows(2)
        .map(|p| (secs(&p[1]["started_at"]) - secs(&p[0]["finished_at"])) * 1000.0)
        .collect();
    println!(
        "chain of {chain}: {wall:.2}s wall, {:.1} ms/job; hand-off (requirement finished -> \
         dependant running) p50 {:.1} ms, p99 {:.1} ms",
        wall * 1000.0 / chain as f64,
        pct(&mut handoff, 0.5),
        pct(&mut handoff, 0.99)
    );

    // Fan-out/fan-in against a batch of as many independent jobs.
    let mut yaml = String::from("jobs:\n  root: {command: 'true'}\n");
    for i in 0..fan {
        yaml.push_str(&format!("  m{i}: {{command: 'true', requires: [root]}}\n"));
    }
    let all: Vec<String> = (0..fan).map(|i| format!("m{i}")).collect();
    yaml.push_str(&format!(
        "  sink: {{command: 'true', requires: [{}]}}\n",
        all.join(", ")
    ));
    let (_, fan_wall) = run_workflow(&c, &url, yaml).await;
    let jobs: Vec<Value> = (0..fan + 2)
        .map(|_| serde_json::json!({"command": "true"}))
        .collect();
    let t0 = Instant::now();
    let body = serde_json::json!({"jobs": jobs}).to_string();
    let b = post_json(&c, &format!("{url}/v1/batches"), "application/json", body).await;
    let bid = b["batch_id"].as_str().expect("created");
    let b = until_ended(&c, &format!("{url}/v1/batches/{bid}?limit=0")).await;
    assert_eq!(b["status"], "completed", "{b}");
    let batch_wall = t0.elapsed().as_secs_f64();
    println!(
        "fan-out/fan-in of {} jobs: {fan_wall:.2}s; the same number as a batch: {batch_wall:.2}s; \
         ratio {:.2}",
        fan + 2,
        fan_wall / batch_wall
    );
    if !root {
        println!("(not root: jobs ran without the sandbox, --permissive)");
    }
    let _ = child.kill();
    let _ = child.wait();
}
