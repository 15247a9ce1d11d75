//! Who runs next and where, on a real server: priorities (higher first, FIFO among equals),
//! named queues with their own concurrency, and shared working directories (inside an allowed
//! root, reached without links).

mod common;

use std::time::{Duration, Instant};

use common::{FINAL, Server, call};
use serde_json::{Value, json};

async fn submit(s: &Server, body: Value) -> String {
    let (st, v) = call(
        &reqwest::Client::new(),
        s,
        "POST",
        "/v1/jobs",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    v["job_id"].as_str().unwrap().to_owned()
}

async fn get(s: &Server, id: &str) -> Value {
    call(
        &reqwest::Client::new(),
        s,
        "GET",
        &format!("/v1/jobs/{id}"),
        None,
        None,
    )
    .await
    .1
}

async fn wait_final(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = get(s, id).await;
        if FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_priority_runs_first_and_a_queue_keeps_its_own_concurrency() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(
        &tmp.path().join("data"),
        &["--max-concurrent", "1", "--queue", "solo=1"],
    );
    // One job holds the only slot while the others are submitted.
    let blocker = submit(&s, json!({"command": "sleep 1.5"})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&s, &blocker).await["status"] != "running" {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let low = submit(&s, json!({"command": "true", "name": "low"})).await;
    let low2 = submit(
        &s,
        json!({"command": "true", "name": "low2", "priority": 0}),
    )
    .await;
    let high = submit(
        &s,
        json!({"command": "true", "name": "high", "priority": 10}),
    )
    .await;
    let mut started = Vec::new();
    for (name, id) in [("low", &low), ("low2", &low2), ("high", &high)] {
        let v = wait_final(&s, id).await;
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(
            v["request"]["priority"].as_i64().unwrap_or(0) == 10,
            name == "high"
        );
        started.push((v["started_at"].as_str().unwrap().to_owned(), name));
    }
    started.sort();
    let order: Vec<&str> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(order, ["high", "low", "low2"]);

    // A queue the server does not have is refused; one it has is recorded.
    let (st, v) = call(
        &reqwest::Client::new(),
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "true", "queue": "gpu"})),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("solo"), "{v}");
    let q = submit(&s, json!({"command": "true", "queue": "solo"})).await;
    let v = wait_final(&s, &q).await;
    assert_eq!(
        (v["status"].as_str(), v["request"]["queue"].as_str()),
        (Some("completed"), Some("solo"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_runs_in_an_allowed_working_directory_and_nowhere_else() {
    let tmp = tempfile::tempdir().unwrap();
    // Not under /tmp (the sandbox has its own) and without links in its path.
    let shared = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = std::fs::canonicalize(shared.path()).unwrap();
    let project = root.join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("Makefile"),
        "all:\n\techo built > result.txt\n",
    )
    .unwrap();
    if common::is_root() {
        // Writable by the jobs' host uid, as the README says to set it up.
        std::os::unix::fs::chown(&project, Some(2_000_000), Some(2_000_000)).unwrap();
    }
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    let allowed = root.display().to_string();
    let s = Server::start(&tmp.path().join("data"), &["--allowed-workdir", &allowed]);
    let id = submit(
        &s,
        json!({"command": ["sh", "-c", "pwd; ls"], "working_dir": project.display().to_string()}),
    )
    .await;
    let v = wait_final(&s, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    let (_, log) = call(
        &reqwest::Client::new(),
        &s,
        "GET",
        &format!("/v1/jobs/{id}/logs"),
        None,
        None,
    )
    .await;
    let log = log.as_str().unwrap().to_owned();
    assert!(
        log.contains(&project.display().to_string()) && log.contains("Makefile"),
        "{log}"
    );
    let id = submit(
        &s,
        json!({"command": "echo done > marker.txt", "working_dir": project.display().to_string()}),
    )
    .await;
    assert_eq!(wait_final(&s, &id).await["status"], "completed");
    assert_eq!(
        std::fs::read_to_string(project.join("marker.txt")).unwrap(),
        "done\n"
    );

    for (dir, want) in [
        ("/var".to_owned(), 403),
        (root.join("etc").display().to_string(), 400),
        (root.join("missing").display().to_string(), 400),
        (format!("{}/project/..", root.display()), 400),
    ] {
        let (st, v) = call(
            &reqwest::Client::new(),
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "true", "working_dir": dir})),
        )
        .await;
        assert_eq!(st, want, "{dir}: {v}");
    }
}

fn in_secs(secs: f64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs_f64(secs);
    humantime::format_rfc3339_millis(t).to_string()
}

fn unix(t: &str) -> f64 {
    humantime::parse_rfc3339(t)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A scheduled job waits (status `scheduled`, listed, cancellable), survives a restart of the
/// server, and starts within a second of its time.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_job_starts_on_time_survives_a_restart_and_can_be_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &[]);
    let c = reqwest::Client::new();
    let at = in_secs(4.0);
    let id = submit(&s, json!({"command": "true", "scheduled_at": at})).await;
    let cancel_me = submit(
        &s,
        json!({"command": "true", "scheduledTime": in_secs(30.0)}),
    )
    .await;
    let v = get(&s, &id).await;
    assert_eq!(v["status"], "scheduled", "{v}");
    let (_, l) = call(&c, &s, "GET", "/v1/jobs?status=scheduled", None, None).await;
    assert_eq!(l["total"], 2, "{l}");
    let (st, _) = call(
        &c,
        &s,
        "POST",
        &format!("/v1/jobs/{cancel_me}/cancel"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 202);
    assert_eq!(wait_final(&s, &cancel_me).await["status"], "stopped");
    // Restart the server while the job waits.
    drop(s);
    let s = Server::start(&data, &[]);
    assert_eq!(get(&s, &id).await["status"], "scheduled");
    let v = wait_final(&s, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    let late = unix(v["started_at"].as_str().unwrap()) - unix(&at);
    assert!(
        (0.0..1.0).contains(&late),
        "started {late:.3} s after its time: {v}"
    );
    // Bad times are refused.
    for bad in [
        json!("tomorrow"),
        json!("2026-12-01T09:30:00+02:00"),
        json!(12),
        json!(in_secs(400.0 * 86400.0)),
    ] {
        let (st, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "true", "scheduled_at": bad})),
        )
        .await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
}
