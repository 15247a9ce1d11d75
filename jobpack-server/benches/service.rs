//! The server's rows of `scripts/bench.sh`, each beside a baseline measured in the same run:
//! `cargo bench -p jobpack-server --bench service` (as root for the sandbox).
//!
//! - idle RSS at start;
//! - `BENCH_JOBS` trivial jobs (`{"command":"true"}`) through HTTP from `BENCH_CLIENTS` clients,
//!   submit to all final: jobs/s, beside the same clients' `GET /v1/health` requests/s (what bare
//!   HTTP costs on this machine);
//! - submitted -> running when a slot is free (one job at a time), p50/p99;
//! - RSS after those jobs (and none lost: every one completed);
//! - `GET /v1/jobs?limit=100` at offset 0 and near the end, p50/p99, beside `GET /v1/health`;
//! - `BENCH_READERS` SSE readers of one noisy job: the server's peak RSS;
//! - `GET /v1/jobs?limit=100` with `BENCH_STORED` jobs stored (100,000; written into the store
//!   beforehand, as completed jobs, then served by a server started on it): at offset 0, at the
//!   last page by offset, and at the last page by the `after` cursor, p50/p99.
//!
//! `BENCH_SMOKE=1` (the test command's smoke run, in the debug build) makes every count tiny: it
//! checks that the bench runs, not how fast.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use support::{get_json, one_job_to_running_ms, pct, start_server, wait_completed};

fn env_or(name: &str, smoke: bool, small: usize, full: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { small } else { full })
}

/// Resident and peak resident memory of `pid`, in MB.
fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// `n` requests made by `clients` concurrent clients, each `make(i)`; the rate per second.
async fn rate<F, Fut>(n: usize, clients: usize, make: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let t0 = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (make, next) = (make.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    make(i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

async fn get_ms(c: &reqwest::Client, url: &str, n: usize) -> (f64, f64) {
    let mut ms = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = c.get(url).send().await.unwrap();
        assert!(r.status().is_success(), "{url}: {}", r.status());
        r.bytes().await.unwrap();
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    (pct(&mut ms, 0.5), pct(&mut ms, 0.99))
}

fn row(what: &str, value: String, baseline: String, ratio: String) {
    println!("| {what} | {value} | {baseline} | {ratio} |");
}

#[tokio::main]
async fn main() {
    let smoke = std::env::var_os("BENCH_SMOKE").is_some();
    let jobs = env_or("BENCH_JOBS", smoke, 20, 2000);
    let clients = env_or("BENCH_CLIENTS", smoke, 4, 10);
    let readers = env_or("BENCH_READERS", smoke, 5, 200);
    let tmp = tempfile::tempdir().unwrap();
    // SAFETY: a plain id query.
    let root = unsafe { libc::geteuid() } == 0;
    let mut args = vec!["--auth", "none", "--max-queued", "100000"];
    if !root {
        args.push("--permissive");
    }
    let (child, url) = start_server(tmp.path(), &args, &[], true);
    // Stopped however main ends, a panic included: the bench leaves nothing running.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            if let Err(e) = self.0.kill() {
                eprintln!("bench: cannot stop the server: {e}");
            }
            if let Err(e) = self.0.wait() {
                eprintln!("bench: cannot reap the server: {e}");
            }
        }
    }
    let server = Stop(child);
    let pid = server.0.id();
    let c = reqwest::Client::new();
    println!(
        "server rows ({}; isolation {})",
        if smoke {
            "smoke run: tiny counts"
        } else {
            "full run"
        },
        if root {
            "namespaces"
        } else {
            "none (not root)"
        }
    );
    println!("| what | jobpack | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle, _) = rss_mb(pid);
    row(
        "server RSS at start",
        format!("{idle:.1} MB"),
        "goal 15 MB".into(),
        format!("{:.2}x of the goal", idle / 15.0),
    );

    // Bare HTTP: the same clients asking /v1/health.
    let health = format!("{url}/v1/health");
    let (c2, h2) = (c.clone(), health.clone());
    let http_rate = rate(jobs, clients, move |_| {
        let (c, h) = (c2.clone(), h2.clone());
        async move {
            c.get(h).send().await.unwrap().bytes().await.unwrap();
        }
    })
    .await;

    // Trivial jobs, submit to all final.
    let t0 = Instant::now();
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c2, u2, ids2) = (c.clone(), format!("{url}/v1/jobs"), ids.clone());
    rate(jobs, clients, move |_| {
        let (c, u, ids) = (c2.clone(), u2.clone(), ids2.clone());
        async move {
            let r = c
                .post(u)
                .header("content-type", "application/json")
                .body(r#"{"command":"true"}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: Value = r.json().await.unwrap();
            ids.lock()
                .unwrap()
                .push(v["job_id"].as_str().unwrap().to_owned());
        }
    })
    .await;
    wait_completed(&c, &url, jobs, Duration::from_secs(1800)).await;
    let job_rate = jobs as f64 / t0.elapsed().as_secs_f64();
    row(
        &format!("{jobs} trivial jobs through HTTP, {clients} clients, submit to all final"),
        format!("{job_rate:.1} jobs/s"),
        format!("{http_rate:.0} GET /v1/health per s"),
        format!("{:.3}x", job_rate / http_rate),
    );
    assert_eq!(ids.lock().unwrap().len(), jobs, "a job was lost");
    // The server gives memory back once it has been idle for a moment (every 2 s).
    tokio::time::sleep(Duration::from_millis(if smoke { 500 } else { 3000 })).await;
    let (after, _) = rss_mb(pid);
    row(
        &format!("server RSS after {jobs} jobs (all completed, 3 s idle)"),
        format!("{after:.1} MB"),
        format!("{idle:.1} MB at start"),
        format!("{:.2}x", after / idle),
    );

    // Submitted -> running with a free slot.
    let n = if smoke { 5 } else { 50 };
    let mut lat = Vec::new();
    for _ in 0..n {
        lat.push(one_job_to_running_ms(&c, &url, r#"{"command":"true"}"#).await);
    }
    let (hp50, hp99) = get_ms(&c, &health, 50).await;
    row(
        "submitted -> running, a slot free (p50 / p99)",
        format!("{:.1} / {:.1} ms", pct(&mut lat, 0.5), pct(&mut lat, 0.99)),
        format!("GET /v1/health {hp50:.1} / {hp99:.1} ms"),
        format!("{:.1}x (p50)", pct(&mut lat, 0.5) / hp50.max(0.001)),
    );

    // Listing at the start and near the end.
    let stored = jobs + n;
    let deep = stored.saturating_sub(100);
    let (l0, l0_99) = get_ms(&c, &format!("{url}/v1/jobs?limit=100"), 30).await;
    let (ld, ld_99) = get_ms(&c, &format!("{url}/v1/jobs?limit=100&offset={deep}"), 30).await;
    row(
        &format!("GET /v1/jobs?limit=100, {stored} stored: offset 0 / offset {deep} (p50, p99)"),
        format!("{l0:.1}, {l0_99:.1} / {ld:.1}, {ld_99:.1} ms"),
        format!("GET /v1/health {hp50:.1} ms"),
        format!(
            "{:.1}x / {:.1}x",
            l0 / hp50.max(0.001),
            ld / hp50.max(0.001)
        ),
    );

    // Many SSE readers of one noisy job.
    let r = c
        .post(format!("{url}/v1/jobs"))
        .header("content-type", "application/json")
        .body(
            serde_json::json!({"command": "sleep 1; for i in $(seq 1 20000); do echo line $i of a noisy job; done; sleep 1"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (before_peak, _) = rss_mb(pid);
    let sse: Vec<_> = (0..readers)
        .map(|_| {
            let (c, u) = (c.clone(), format!("{url}/v1/jobs/{id}/logs/stream"));
            tokio::spawn(async move {
                let r = c.get(u).send().await.unwrap();
                let mut s = r.bytes_stream();
                let mut n = 0usize;
                while let Some(Ok(b)) = s.next().await {
                    n += b.len();
                }
                n
            })
        })
        .collect();
    // The server's resident memory, sampled while the readers read.
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (stop, peak_kb) = (
        std::sync::Arc::new(AtomicBool::new(false)),
        std::sync::Arc::new(AtomicU64::new(0)),
    );
    let (stop2, peak2) = (stop.clone(), peak_kb.clone());
    let watch = tokio::spawn(async move {
        while !stop2.load(Ordering::Relaxed) {
            peak2.fetch_max((rss_mb(pid).0 * 1024.0) as u64, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut bytes = 0;
    for t in sse {
        bytes += t.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    watch.await.unwrap();
    let peak = peak_kb.load(Ordering::Relaxed) as f64 / 1024.0;
    row(
        &format!(
            "{readers} SSE readers of one noisy job ({} MB sent)",
            bytes >> 20
        ),
        format!("peak RSS {peak:.1} MB"),
        format!("{before_peak:.1} MB before"),
        format!("{:.2}x", peak / before_peak.max(0.001)),
    );
    drop(server);

    // Listing with many jobs stored: a store filled beforehand, served by a server of its own.
    let stored = env_or("BENCH_STORED", smoke, 2_000, 100_000);
    let big = tempfile::tempdir().unwrap();
    seed_store(&big.path().join("jobpack.db"), stored);
    let (child, url) = start_server(big.path(), &args, &[], true);
    let _server = Stop(child);
    let (h50, _) = get_ms(&c, &format!("{url}/v1/health"), 30).await;
    let list = format!("{url}/v1/jobs?limit=100");
    let (l0, l0_99) = get_ms(&c, &list, 30).await;
    let last = stored.saturating_sub(100);
    let (ld, ld_99) = get_ms(&c, &format!("{list}&offset={last}"), 30).await;
    // The cursor of the page before the last one, from the listing itself.
    let page = get_json(&c, &format!("{list}&offset={}", last.saturating_sub(100))).await;
    let next = page["next"].as_str().expect("a next cursor").to_owned();
    let (lc, lc_99) = get_ms(&c, &format!("{list}&after={next}"), 30).await;
    row(
        &format!(
            "GET /v1/jobs?limit=100, {stored} stored: offset 0 / offset {last} / `after` at \
             the same depth (p50, p99)"
        ),
        format!("{l0:.1}, {l0_99:.1} / {ld:.1}, {ld_99:.1} / {lc:.1}, {lc_99:.1} ms"),
        format!("GET /v1/health {h50:.1} ms"),
        format!(
            "p99 {:.1} ms at most (goal 20 ms)",
            l0_99.max(ld_99).max(lc_99)
        ),
    );
}

/// Fills a new store with `n` completed jobs of one owner, a second apart, in transactions of
/// 5,000 (what the server would have written after serving them).
fn seed_store(db: &std::path::Path, n: usize) {
    use jobpack_server::server::store::{Group, JobRow, JobStatus, Store};
    let store = Store::open(db).unwrap();
    let t0 = jobpack_server::server::store::now() - n as f64;
    let row = |i: usize| JobRow {
        id: uuid::Uuid::new_v4().to_string(),
        name: None,
        status: JobStatus::Completed,
        source: "bench".into(),
        request_json: r#"{"spec":{"command":"true"},"run":true}"#.into(),
        run: true,
        created_at: t0 + i as f64,
        updated_at: t0 + i as f64 + 0.5,
        started_at: Some(t0 + i as f64 + 0.1),
        finished_at: Some(t0 + i as f64 + 0.5),
        exit_code: Some(0),
        signal: None,
        reason: None,
        error_code: None,
        artifact_sha256: Some("0".repeat(64)),
        artifact_size: Some(1024),
        commit_id: None,
        outcome_json: None,
        owner: "local".into(),
        cpu_seconds: Some(0.01),
        batch_id: None,
        workflow_id: None,
        workflow_pos: None,
        requires_json: None,
        pinned: false,
        collected_at: None,
        cached_from: None,
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let rows: Vec<_> = chunk.iter().map(|&i| (row(i), None)).collect();
        store.insert_all(Group::None, &rows, None, None).unwrap();
    }
}
