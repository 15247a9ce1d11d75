//! Batches over real HTTP against the real server: all-or-nothing creation, live counters that
//! stay exact while hundreds of jobs change state at once, cancel, and ownership.

mod common;

use std::time::{Duration, Instant};

use common::{Launch, Server};
use serde_json::{Value, json};

const ADMIN: &str = "jp_batch-test-admin-token-0123456789";

async fn call(
    s: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    common::call(
        &reqwest::Client::new(),
        s,
        method,
        path,
        token,
        body.as_ref(),
    )
    .await
}

fn counted(b: &Value) -> u64 {
    ["queued", "running", "completed", "failed", "stopped"]
        .iter()
        .map(|k| b[*k].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_jobs_complete_with_exact_counters() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-concurrent", "4"]);
    let jobs: Vec<Value> = (0..500)
        .map(|i| json!({"name": format!("t{i}"), "command": "true"}))
        .collect();
    let t0 = Instant::now();
    let (st, b) = call(
        &s,
        "POST",
        "/v1/batches",
        None,
        Some(json!({"name": "suite", "description": "500 trivial jobs", "jobs": jobs})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!((b["total"].as_u64(), counted(&b)), (Some(500), 500));
    assert_eq!(b["name"], "suite");
    let id = b["batch_id"].as_str().unwrap().to_owned();

    // While the jobs run, every reading adds up to 500 and `completed` never goes back.
    let mut last_completed = 0;
    let mut readings = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let done = loop {
        let (_, b) = call(&s, "GET", &format!("/v1/batches/{id}?limit=0"), None, None).await;
        readings += 1;
        assert_eq!(counted(&b), 500, "{b}");
        let completed = b["completed"].as_u64().unwrap();
        assert!(completed >= last_completed, "completed went back: {b}");
        last_completed = completed;
        assert_eq!(b["failed"], 0, "{b}");
        if b["status"] == "completed" {
            break b;
        }
        if b["running"].as_u64().unwrap() > 0 {
            assert_eq!(b["status"], "running");
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "500 jobs in {:.1} s ({readings} counter readings, all exact)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(done["completed"], 500);
    assert!(
        done["started_at"].is_string() && done["finished_at"].is_string(),
        "{done}"
    );
    assert_eq!(done["jobs"], json!([]));

    // The member jobs: through the batch and through /v1/jobs?batch_id=.
    let (_, full) = call(
        &s,
        "GET",
        &format!("/v1/batches/{id}?limit=10000"),
        None,
        None,
    )
    .await;
    let members = full["jobs"].as_array().unwrap();
    assert_eq!(members.len(), 500);
    let mut names: Vec<&str> = members
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    names.sort_by_key(|n| n[1..].parse::<u32>().unwrap());
    assert_eq!(names, (0..500).map(|i| format!("t{i}")).collect::<Vec<_>>());
    assert!(
        members
            .iter()
            .all(|j| j["status"] == "completed" && j["batch_id"] == id.as_str())
    );
    let (_, l) = call(
        &s,
        "GET",
        &format!("/v1/jobs?batch_id={id}&status=completed&limit=1"),
        None,
        None,
    )
    .await;
    assert_eq!(l["total"], 500);
    let (_, all) = call(&s, "GET", "/v1/batches", None, None).await;
    assert_eq!(all["batches"][0]["batch_id"], id.as_str());
    assert_eq!(all["batches"][0]["completed"], 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_bad_job_rejects_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    for (body, needle) in [
        (
            json!({"jobs": [{"command": "true"}, {"command": "true", "bogus": 1}, {"command": "true"}]}),
            "jobs[1]",
        ),
        (
            json!({"jobs": [{"command": "true"}, {"git_url": "ftp://x/y", "commit_hash": "abc1234", "command": "x"}]}),
            "jobs[1]",
        ),
        (
            json!({"jobs": [{"command": "true", "limits": {"timeout": "soon"}}]}),
            "jobs[0]",
        ),
        (json!({"jobs": []}), "jobs"),
        (json!({"name": "x"}), "jobs"),
        (
            json!({"jobs": [{"command": "true"}], "color": "red"}),
            "color",
        ),
    ] {
        let (st, v) = call(&s, "POST", "/v1/batches", None, Some(body.clone())).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{needle}: {v}"
        );
    }
    // Nothing was created.
    let (_, l) = call(&s, "GET", "/v1/jobs", None, None).await;
    assert_eq!(l["total"], 0);
    let (_, b) = call(&s, "GET", "/v1/batches", None, None).await;
    assert_eq!(b["batches"], json!([]));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_batch_stops_every_unfinished_job() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-concurrent", "2"]);
    let mut jobs = vec![json!({"command": "true"})];
    jobs.extend((0..5).map(|_| json!({"command": "sleep 60"})));
    let (st, b) = call(&s, "POST", "/v1/batches", None, Some(json!({"jobs": jobs}))).await;
    assert_eq!(st, 201, "{b}");
    let id = b["batch_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = call(&s, "GET", &format!("/v1/batches/{id}"), None, None).await;
        // Two jobs hold the two slots (which two is up to the scheduler).
        if b["running"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, b) = call(&s, "POST", &format!("/v1/batches/{id}/cancel"), None, None).await;
    assert_eq!(st, 202, "{b}");
    assert!(b["cancelled_at"].is_string());
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = loop {
        let (_, b) = call(&s, "GET", &format!("/v1/batches/{id}"), None, None).await;
        if b["queued"] == 0 && b["running"] == 0 {
            break b;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every sleeper is stopped; the `true` job may have completed before the cancel.
    let stopped = b["stopped"].as_u64().unwrap();
    let completed = b["completed"].as_u64().unwrap();
    assert!(
        stopped >= 5 && stopped + completed == 6 && b["failed"] == 0,
        "{b}"
    );
    assert_eq!(b["status"], "stopped");
    for j in b["jobs"].as_array().unwrap() {
        if j["request"]["spec"]["command"] == "sleep 60" {
            assert_eq!(j["status"], "stopped", "{j}");
        }
    }
    assert!(b["finished_at"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_belong_to_their_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::launch(
        &tmp.path().join("data"),
        Launch {
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            ..Launch::default()
        },
    );
    let mut tokens = Vec::new();
    for (name, role) in [
        ("alice", "submitter"),
        ("bob", "submitter"),
        ("vic", "viewer"),
    ] {
        let (st, _) = call(
            &s,
            "POST",
            "/v1/users",
            Some(ADMIN),
            Some(json!({"name": name, "role": role})),
        )
        .await;
        assert_eq!(st, 201);
        let (_, t) = call(
            &s,
            "POST",
            &format!("/v1/users/{name}/tokens"),
            Some(ADMIN),
            Some(json!({})),
        )
        .await;
        tokens.push(t["token"].as_str().unwrap().to_owned());
    }
    let (alice, bob, vic) = (&tokens[0], &tokens[1], &tokens[2]);
    let body = json!({"name": "mine", "jobs": [{"command": "true", "run": false}]});
    let (st, b) = call(&s, "POST", "/v1/batches", Some(alice), Some(body.clone())).await;
    assert_eq!(st, 201, "{b}");
    let id = b["batch_id"].as_str().unwrap().to_owned();
    assert_eq!(b["owner"], "alice");
    let (st, _) = call(&s, "POST", "/v1/batches", Some(vic), Some(body)).await;
    assert_eq!(st, 403);
    for (method, path) in [
        ("GET", format!("/v1/batches/{id}")),
        ("POST", format!("/v1/batches/{id}/cancel")),
    ] {
        let (st, _) = call(&s, method, &path, Some(bob), None).await;
        assert_eq!(st, 404, "bob {method} {path}");
    }
    let (_, l) = call(&s, "GET", "/v1/batches", Some(bob), None).await;
    assert_eq!(l["batches"], json!([]));
    let (_, l) = call(
        &s,
        "GET",
        &format!("/v1/jobs?batch_id={id}"),
        Some(bob),
        None,
    )
    .await;
    assert_eq!(l["total"], 0);
    let (st, b) = call(&s, "GET", &format!("/v1/batches/{id}"), Some(ADMIN), None).await;
    assert_eq!((st, b["owner"].as_str()), (200, Some("alice")));
    let (st, _) = call(&s, "GET", "/v1/batches", None, None).await;
    assert_eq!(st, 401);
}
