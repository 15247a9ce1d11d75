//! A job's resources over time (`GET /v1/jobs/{id}/usage`): a real server samples the real
//! cgroup of a sandboxed job (so: root, as in CI) while it holds memory, runs processes and
//! spins; the series is there while it runs, its peaks are kept in the outcome, another user
//! cannot read it, it is bounded per job, and it goes with the job. And the service's activity
//! minute by minute (`GET /v1/activity`), from the jobs' own times.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Launch, Server, call, is_root, jobpack};
use serde_json::{Value, json};

const ADMIN: &str = "jp_usage-test-admin-token-0123456789";

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    println!("SKIPPED {test}: sampling reads the job's cgroup, which the sandbox makes as root");
    true
}

async fn get(s: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    call(&reqwest::Client::new(), s, "GET", path, token, None).await
}

async fn new_user(s: &Server, name: &str) -> String {
    let c = reqwest::Client::new();
    let body = json!({"name": name, "role": "submitter"});
    let (st, v) = call(&c, s, "POST", "/v1/users", Some(ADMIN), Some(&body)).await;
    assert_eq!(st, 201, "{v}");
    let path = format!("/v1/users/{name}/tokens");
    let (st, v) = call(
        &c,
        s,
        "POST",
        &path,
        Some(ADMIN),
        Some(&json!({"name": "t"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    v["token"].as_str().unwrap().to_owned()
}

async fn submit(s: &Server, token: &str, command: &str) -> String {
    let c = reqwest::Client::new();
    let body = json!({"command": command});
    let (st, v) = call(&c, s, "POST", "/v1/jobs", Some(token), Some(&body)).await;
    assert_eq!(st, 201, "{v}");
    v["job_id"].as_str().unwrap().to_owned()
}

async fn wait_final(s: &Server, token: &str, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = get(s, &format!("/v1/jobs/{id}"), Some(token)).await;
        if common::FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "never ended: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rows_of(data: &Path, id: &str) -> i64 {
    let db = rusqlite::Connection::open(data.join("jobpack.db")).unwrap();
    db.query_row(
        "SELECT count(*) FROM job_usage WHERE job_id = ?1",
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

/// 80 MB held, three extra processes, a 4 s CPU spin.
const BUSY: &str = "sleep 30 & a=$!; sleep 30 & b=$!; sleep 30 & c=$!\n\
    python3 -c 'import time\nb = bytearray(80 << 20)\nt = time.time()\nwhile time.time() - t < 4: pass'\n\
    kill $a $b $c";

#[tokio::test(flavor = "multi_thread")]
async fn a_running_jobs_usage_is_sampled_kept_with_its_peaks_and_private() {
    if skip_unless_root("a_running_jobs_usage_is_sampled_kept_with_its_peaks_and_private") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::launch(
        &data,
        Launch {
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            ..Launch::default()
        },
    );
    let alice = new_user(&s, "alice").await;
    let bob = new_user(&s, "bob").await;
    let id = submit(&s, &alice, BUSY).await;
    let path = format!("/v1/jobs/{id}/usage");

    // While it runs: points arrive, a second apart.
    let deadline = Instant::now() + Duration::from_secs(60);
    let live = loop {
        let (st, v) = get(&s, &path, Some(&alice)).await;
        assert_eq!(st, 200, "{v}");
        if v["status"] == "running" && v["samples"].as_array().unwrap().len() >= 2 {
            break v;
        }
        assert!(
            !common::FINAL.contains(&v["status"].as_str().unwrap()),
            "ended before two samples: {v}"
        );
        assert!(Instant::now() < deadline, "no samples while running: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(live["interval_ms"], 1000, "{live}");
    assert!(live["peaks"]["samples"].as_u64().unwrap() >= 2, "{live}");

    // Another user's job's usage is not found (as the job is); no token: 401.
    let (st, v) = get(&s, &path, Some(&bob)).await;
    assert_eq!(st, 404, "{v}");
    let (st, _) = get(&s, &path, None).await;
    assert_eq!(st, 401);
    let (st, _) = get(
        &s,
        "/v1/jobs/00000000-0000-0000-0000-000000000000/usage",
        Some(ADMIN),
    )
    .await;
    assert_eq!(st, 404);

    let job = wait_final(&s, &alice, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    let (st, u) = get(&s, &path, Some(&alice)).await;
    assert_eq!(st, 200);
    let samples = u["samples"].as_array().unwrap();
    assert!(samples.len() >= 3, "a 4 s run sampled every second: {u}");
    let at: Vec<i64> = samples
        .iter()
        .map(|p| p["at_ms"].as_i64().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "oldest first: {at:?}");
    let cpu: Vec<f64> = samples
        .iter()
        .map(|p| p["cpu_seconds"].as_f64().unwrap())
        .collect();
    assert!(
        cpu.windows(2).all(|w| w[0] <= w[1]),
        "CPU only grows: {cpu:?}"
    );
    assert!(samples[0]["cpu_cores"].is_null());
    let busiest = samples
        .iter()
        .filter_map(|p| p["cpu_cores"].as_f64())
        .fold(0.0, f64::max);
    assert!(busiest > 0.5, "a spinning process uses a core: {u}");
    let peaks = &u["peaks"];
    assert!(peaks["memory_bytes"].as_u64().unwrap() >= 80 << 20, "{u}");
    assert!(
        peaks["pids"].as_u64().unwrap() >= 5,
        "bash, three sleeps, python: {u}"
    );
    assert_eq!(peaks["cpu_cores"].as_f64(), Some(busiest), "{u}");
    // The outcome keeps the same peaks.
    let kept = &job["outcome"]["peaks"];
    assert_eq!(kept["memory_bytes"], peaks["memory_bytes"], "{job}");
    assert_eq!(kept["pids"], peaks["pids"], "{job}");
    assert_eq!(
        kept["samples"].as_u64().unwrap(),
        samples.len() as u64,
        "{job}"
    );

    // Gone with the job.
    assert_eq!(rows_of(&data, &id), samples.len() as i64);
    let c = reqwest::Client::new();
    let (st, _) = call(
        &c,
        &s,
        "DELETE",
        &format!("/v1/jobs/{id}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = get(&s, &path, Some(&alice)).await;
    assert_eq!(st, 404);
    assert_eq!(
        rows_of(&data, &id),
        0,
        "the samples are deleted with the job"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_samples_stay_bounded_and_still_span_its_run() {
    if skip_unless_root("a_jobs_samples_stay_bounded_and_still_span_its_run") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Every 100 ms, at most 8: a 3 s run is thinned three times and keeps its whole span.
    let s = Server::start(
        &tmp.path().join("a"),
        &["--usage-interval-ms", "100", "--usage-max-samples", "8"],
    );
    let c = reqwest::Client::new();
    let body = json!({"command": "sleep 3"});
    let (_, v) = call(&c, &s, "POST", "/v1/jobs", None, Some(&body)).await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let job = common::wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "completed", "{job}");
    let (_, u) = get(&s, &format!("/v1/jobs/{id}/usage"), None).await;
    let samples = u["samples"].as_array().unwrap();
    assert!(
        (4..=8).contains(&samples.len()),
        "bounded at 8, thinned to half: {u}"
    );
    assert_eq!(u["interval_ms"], 100, "the server's step: {u}");
    let at: Vec<i64> = samples
        .iter()
        .map(|p| p["at_ms"].as_i64().unwrap())
        .collect();
    assert!(
        at[at.len() - 1] - at[at.len() - 2] >= 350,
        "the step doubled twice: {at:?}"
    );
    let first = samples[0]["at_ms"].as_f64().unwrap() / 1e3;
    let last = samples.last().unwrap()["at_ms"].as_f64().unwrap() / 1e3;
    assert!(last - first >= 2.0, "the samples still span the run: {u}");
    assert!(
        u["peaks"]["samples"].as_u64().unwrap() > 8,
        "every sample counted: {u}"
    );
    drop(s);

    // 0: no sampling at all.
    let s = Server::start(&tmp.path().join("b"), &["--usage-interval-ms", "0"]);
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "sleep 1.5"})),
    )
    .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    let job = common::wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert!(job["outcome"]["peaks"].is_null(), "{job}");
    let (_, u) = get(&s, &format!("/v1/jobs/{id}/usage"), None).await;
    assert!(
        u["interval_ms"].is_null() && u["samples"] == json!([]) && u["peaks"].is_null(),
        "{u}"
    );
}

#[test]
fn a_bound_below_two_samples_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("d");
    let (code, _, err) = jobpack(&[
        "serve",
        "--data-dir",
        data.to_str().unwrap(),
        "--usage-max-samples",
        "1",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--usage-max-samples"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn activity_counts_ended_waiting_and_running_jobs_by_minute_per_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::launch(
        &tmp.path().join("data"),
        Launch {
            args: &["--max-concurrent", "1"],
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            ..Launch::default()
        },
    );
    let alice = new_user(&s, "alice").await;
    let bob = new_user(&s, "bob").await;
    let mut ended = Vec::new();
    for cmd in ["true", "true", "true", "exit 3"] {
        ended.push(submit(&s, &alice, cmd).await);
    }
    for id in &ended {
        wait_final(&s, &alice, id).await;
    }
    // One running (the only slot), one waiting behind it.
    let long = submit(&s, &alice, "sleep 60").await;
    let behind = submit(&s, &alice, "true").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&s, &format!("/v1/jobs/{long}"), Some(&alice)).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "the long job never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, a) = get(&s, "/v1/activity?minutes=5", Some(&alice)).await;
    assert_eq!(st, 200, "{a}");
    let minutes = a["minutes"].as_array().unwrap();
    assert_eq!(minutes.len(), 5, "{a}");
    let total = |status: &str| {
        minutes
            .iter()
            .map(|m| m["ended"][status].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!((total("completed"), total("failed")), (3, 1), "{a}");
    let now = minutes.last().unwrap();
    assert_eq!(
        (now["running"].as_u64(), now["waiting"].as_u64()),
        (Some(1), Some(1)),
        "{a}"
    );
    assert_eq!(a["partial"], false);
    // The admin sees the same jobs; bob, who has none, sees none of alice's.
    let (_, all) = get(&s, "/v1/activity?minutes=5", Some(ADMIN)).await;
    assert_eq!(all["minutes"], a["minutes"]);
    let (_, theirs) = get(&s, "/v1/activity?minutes=5", Some(&bob)).await;
    for m in theirs["minutes"].as_array().unwrap() {
        assert!(
            m["ended"] == json!({}) && m["running"] == 0 && m["waiting"] == 0,
            "{theirs}"
        );
    }
    // Bounds: 1 to 1440 minutes; no token: 401.
    for bad in ["0", "1441", "x"] {
        let (st, v) = get(&s, &format!("/v1/activity?minutes={bad}"), Some(&alice)).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_eq!(get(&s, "/v1/activity", None).await.0, 401);
    let (_, a) = get(&s, "/v1/activity", Some(&alice)).await;
    assert_eq!(a["minutes"].as_array().unwrap().len(), 60);
    let c = reqwest::Client::new();
    for id in [&long, &behind] {
        call(
            &c,
            &s,
            "POST",
            &format!("/v1/jobs/{id}/cancel"),
            Some(&alice),
            None,
        )
        .await;
    }
}
