//! A job's life when it runs unattended, through a real server: standard input (text and binary
//! uploads, byte for byte, recorded in the manifest), retention and garbage collection.

mod common;

use std::time::{Duration, Instant};

use common::{FINAL, Server, call, wait_final};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn log(c: &reqwest::Client, s: &Server, id: &str) -> Vec<u8> {
    let r = c.get(s.u(&format!("/v1/jobs/{id}/logs"))).send().await;
    r.unwrap().bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_reaches_the_job_byte_for_byte_and_the_manifest_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let c = reqwest::Client::new();

    // As text in the JSON submission.
    let text = "first line\nsecond line without a newline";
    let (code, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": ["cat"], "stdin": text})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    assert_eq!(
        wait_final(&c, &s, &format!("/v1/jobs/{id}")).await["status"],
        "completed"
    );
    assert_eq!(log(&c, &s, &id).await, text.as_bytes());
    let (_, m) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/manifest"),
        None,
        None,
    )
    .await;
    assert_eq!(
        m["stdin"]["sha256"],
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    assert_eq!(m["stdin"]["size"], text.len());
    // Kept as a file, never in the job's row: the job as shown does not carry it.
    let (_, j) = call(&c, &s, "GET", &format!("/v1/jobs/{id}"), None, None).await;
    assert!(j["request"].get("stdin").is_none(), "{j}");

    // Binary, as an uploaded part: every byte value, and NULs.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let digest = hex::encode(Sha256::digest(&bytes));
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "sha256sum; wc -c"}).to_string())
        .part(
            "stdin",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name("input.bin"),
        );
    let r = c
        .post(s.u("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        wait_final(&c, &s, &format!("/v1/jobs/{id}")).await["status"],
        "completed"
    );
    // sha256sum reads it all; wc then finds nothing left (one stdin, read once).
    assert_eq!(
        String::from_utf8(log(&c, &s, &id).await).unwrap(),
        format!("{digest}  -\n0\n")
    );
    let (_, m) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/manifest"),
        None,
        None,
    )
    .await;
    assert_eq!(m["stdin"]["sha256"], digest);
    // The artifact holds it, and its Dockerfile gives the container the same input.
    let art = c
        .get(s.u(&format!("/v1/jobs/{id}/artifact")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&art[..]));
    let mut found = (false, String::new(), String::new());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        match path.as_str() {
            "stdin" => found.0 = body == bytes,
            "run.sh" => found.1 = String::from_utf8(body).unwrap(),
            "Dockerfile" => found.2 = String::from_utf8(body).unwrap(),
            _ => {}
        }
    }
    assert!(found.0, "the artifact's stdin differs");
    assert!(found.1.contains("< \"$JOBPACK_ROOT/stdin\""), "{}", found.1);
    assert!(found.2.contains("run.sh stdin /job/"), "{}", found.2);

    // A job without stdin reads an empty input (never the server's).
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "wc -c"})),
    )
    .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(log(&c, &s, &id).await, b"0\n");

    // Refused: both forms at once, text over 1 MiB, not text.
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "cat", "stdin": "a"}).to_string())
        .part("stdin", reqwest::multipart::Part::bytes(b"b".to_vec()));
    let r = c
        .post(s.u("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for bad in [json!("x".repeat(1024 * 1024 + 1)), json!(42)] {
        let (code, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "cat", "stdin": bad})),
        )
        .await;
        assert_eq!(code, 400, "{v}");
    }
}

async fn submit(c: &reqwest::Client, s: &Server, body: Value) -> String {
    let (code, v) = call(c, s, "POST", "/v1/jobs", None, Some(&body)).await;
    assert_eq!(code, 201, "{v}");
    v["job_id"].as_str().unwrap().to_owned()
}

async fn status_of(c: &reqwest::Client, s: &Server, path: &str) -> u16 {
    c.get(s.u(path)).send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_files_keeps_rows_pinned_jobs_and_running_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &["--retain", "1s", "--gc-interval", "1s"]);
    let c = reqwest::Client::new();
    let old = submit(
        &c,
        &s,
        json!({"command": "echo old > out.txt; echo logged"}),
    )
    .await;
    let pinned = submit(&c, &s, json!({"command": "echo kept"})).await;
    let (code, v) = call(
        &c,
        &s,
        "POST",
        &format!("/v1/jobs/{pinned}/pin"),
        None,
        None,
    )
    .await;
    assert_eq!((code, &v["pinned"]), (200, &json!(true)), "{v}");
    let running = submit(&c, &s, json!({"command": "sleep 60"})).await;
    let done = wait_final(&c, &s, &format!("/v1/jobs/{old}")).await;
    wait_final(&c, &s, &format!("/v1/jobs/{pinned}")).await;

    // Collected within a few seconds of the retention (and the settle time).
    let deadline = Instant::now() + Duration::from_secs(30);
    let v = loop {
        let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{old}"), None, None).await;
        if !v["collected_at"].is_null() {
            break v;
        }
        assert!(Instant::now() < deadline, "never collected: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The record stays as it was; the bytes are gone and say so.
    for k in [
        "status",
        "exit_code",
        "artifact_sha256",
        "finished_at",
        "request",
    ] {
        assert_eq!(v[k], done[k], "{k}");
    }
    assert!(!data.join("jobs").join(&old).exists());
    for p in [
        "logs",
        "artifact",
        "manifest",
        "provenance",
        "receipt",
        "tarball",
        "files/out.txt",
    ] {
        assert_eq!(
            status_of(&c, &s, &format!("/v1/jobs/{old}/{p}")).await,
            410,
            "{p}"
        );
    }
    // Its signed statements (stored in the database, not in its directory) went with the files.
    let db = rusqlite::Connection::open(data.join("jobpack.db")).unwrap();
    let docs: i64 = db
        .query_row(
            "SELECT count(*) FROM job_documents WHERE job_id = ?1",
            [&old],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(docs, 0);
    // The pinned job and the running one are untouched.
    let (_, p) = call(&c, &s, "GET", &format!("/v1/jobs/{pinned}"), None, None).await;
    assert!(p["collected_at"].is_null(), "{p}");
    assert_eq!(log(&c, &s, &pinned).await, b"kept\n");
    let (_, r) = call(&c, &s, "GET", &format!("/v1/jobs/{running}"), None, None).await;
    assert_eq!(r["status"], "running", "{r}");
    assert!(r["collected_at"].is_null());
    // Unpinned, it goes too.
    let (code, _) = call(
        &c,
        &s,
        "DELETE",
        &format!("/v1/jobs/{pinned}/pin"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{pinned}"), None, None).await;
        if !v["collected_at"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "never collected: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    call(
        &c,
        &s,
        "POST",
        &format!("/v1/jobs/{running}/cancel"),
        None,
        None,
    )
    .await;
}

fn gc(data: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec![
        "admin",
        "gc",
        "--json",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let (code, out, err) = common::jobpack(&all);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ids(rep: &Value) -> Vec<String> {
    rep["collected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["job_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_budget_removes_oldest_first_dry_run_changes_nothing_and_a_killed_run_is_finished() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &[]);
    let c = reqwest::Client::new();
    let mut jobs = Vec::new();
    for _ in 0..3 {
        // Each leaves 400 kB of real blocks in its working directory.
        let id = submit(
            &c,
            &s,
            json!({"command": "head -c 400000 /dev/urandom > big"}),
        )
        .await;
        assert_eq!(
            wait_final(&c, &s, &format!("/v1/jobs/{id}")).await["status"],
            "completed"
        );
        jobs.push(id);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = gc(&data, &["--dry-run"])["used_bytes"].as_u64().unwrap();
    // One byte over the budget: the oldest job alone goes.
    let budget = format!("{}", (used - 1) as f64 / 1e9);
    let dry = gc(&data, &["--dry-run", "--max-data-gb", &budget]);
    assert_eq!(ids(&dry), vec![jobs[0].clone()], "{dry}");
    assert!(dry["freed_bytes"].as_u64().unwrap() >= 400_000);
    assert!(
        data.join("jobs").join(&jobs[0]).exists(),
        "a dry run removed files"
    );
    let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{}", jobs[0]), None, None).await;
    assert!(v["collected_at"].is_null());

    let rep = gc(&data, &["--max-data-gb", &budget]);
    assert_eq!(ids(&rep), vec![jobs[0].clone()], "{rep}");
    assert!(!data.join("jobs").join(&jobs[0]).exists());
    assert!(data.join("jobs").join(&jobs[1]).exists());
    let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{}", jobs[0]), None, None).await;
    assert!(!v["collected_at"].is_null(), "{v}");

    // A collection killed after moving a job's files to the trash, before marking it: reads
    // answer 410 or what there is (never 500), and the next run finishes the job.
    std::fs::create_dir_all(data.join("trash")).unwrap();
    std::fs::rename(
        data.join("jobs").join(&jobs[1]),
        data.join("trash").join(&jobs[1]),
    )
    .unwrap();
    for p in ["artifact", "manifest", "logs", "tarball", "files/big"] {
        let code = status_of(&c, &s, &format!("/v1/jobs/{}/{p}", jobs[1])).await;
        assert!(code < 500, "{p}: {code}");
    }
    assert_eq!(
        status_of(&c, &s, &format!("/v1/jobs/{}/artifact", jobs[1])).await,
        410
    );
    let rep = gc(&data, &["--retain", "1000d"]);
    assert_eq!(rep["recovered"], 1, "{rep}");
    assert!(!data.join("trash").join(&jobs[1]).exists());
    let (_, v) = call(&c, &s, "GET", &format!("/v1/jobs/{}", jobs[1]), None, None).await;
    assert!(!v["collected_at"].is_null(), "{v}");
    // The newest is untouched throughout.
    assert_eq!(
        status_of(&c, &s, &format!("/v1/jobs/{}/artifact", jobs[2])).await,
        200
    );
    // Nothing to go by is refused, not guessed.
    let (code, _, err) = common::jobpack(&["admin", "gc", "--data-dir", data.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("--retain"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_run_the_artifact_again_keep_each_attempt_and_stop_on_cancel() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &[]);
    let c = reqwest::Client::new();

    // Fails twice, then succeeds: three attempts, three logs, completed.
    let id = submit(
        &c,
        &s,
        json!({"command": "echo attempt $JOBPACK_ATTEMPT; test $JOBPACK_ATTEMPT -ge 3",
               "retry": {"max_attempts": 5, "backoff_secs": 0.2}}),
    )
    .await;
    let v = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(v["status"], "completed", "{v}");
    let (_, a) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/attempts"),
        None,
        None,
    )
    .await;
    let a = a["attempts"].as_array().unwrap().clone();
    let statuses: Vec<&str> = a.iter().map(|a| a["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["failed", "failed", "completed"], "{a:?}");
    for (n, at) in a.iter().enumerate() {
        let url = at["log_url"].as_str().unwrap();
        let text = c.get(s.u(url)).send().await.unwrap().text().await.unwrap();
        assert_eq!(text, format!("attempt {}\n", n + 1), "{url}");
    }
    assert_eq!(a[0]["exit_code"], 1);
    // Growing waits between attempts (0.2 s, then 0.4 s at least).
    let t = |x: &Value, k: &str| humantime::parse_rfc3339(x[k].as_str().unwrap()).unwrap();
    let gap = |i: usize| {
        t(&a[i + 1], "started_at")
            .duration_since(t(&a[i], "finished_at"))
            .unwrap()
    };
    assert!(gap(0) >= Duration::from_millis(150) && gap(1) >= Duration::from_millis(350));
    // Never packed again: the artifact was written before the first run began.
    let art = data.join("jobs").join(&id).join("artifact.tar.gz");
    let written = std::fs::metadata(&art).unwrap().modified().unwrap();
    assert!(
        written <= t(&a[0], "started_at"),
        "the artifact was written again"
    );

    // Out of attempts: the last status stays.
    let id = submit(
        &c,
        &s,
        json!({"command": "false", "retry": {"max_attempts": 2, "on": ["failed"]}}),
    )
    .await;
    assert_eq!(
        wait_final(&c, &s, &format!("/v1/jobs/{id}")).await["status"],
        "failed"
    );
    let (_, a) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/attempts"),
        None,
        None,
    )
    .await;
    assert_eq!(a["attempts"].as_array().unwrap().len(), 2, "{a}");

    // A cancel during the backoff ends it: stopped, no further attempt.
    let id = submit(
        &c,
        &s,
        json!({"command": "false", "retry": {"max_attempts": 5, "backoff_secs": 60}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, a) = call(
            &c,
            &s,
            "GET",
            &format!("/v1/jobs/{id}/attempts"),
            None,
            None,
        )
        .await;
        if a["attempts"].as_array().unwrap().len() == 2 {
            assert_eq!(a["attempts"][1]["status"], "queued", "{a}");
            break;
        }
        assert!(Instant::now() < deadline, "{a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, _) = call(&c, &s, "POST", &format!("/v1/jobs/{id}/cancel"), None, None).await;
    assert_eq!(code, 202);
    let v = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(v["status"], "stopped", "{v}");
    let (_, a) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/attempts"),
        None,
        None,
    )
    .await;
    assert_eq!(a["attempts"].as_array().unwrap().len(), 2, "{a}");

    // A workflow's dependant waits for the last attempt.
    let file = "jobs:\n  flaky:\n    command: \"echo try $JOBPACK_ATTEMPT; test $JOBPACK_ATTEMPT -ge 2\"\n    \
                retry: {max_attempts: 3, backoff_secs: 0.2}\n  after:\n    command: \"echo after\"\n    \
                requires:\n      - flaky: COMPLETED\n";
    let r = c
        .post(s.u("/v1/workflows"))
        .header("content-type", "application/yaml")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let w = r.json::<Value>().await.unwrap();
    let wid = w["workflow_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let w = loop {
        let (_, w) = call(&c, &s, "GET", &format!("/v1/workflows/{wid}"), None, None).await;
        if w["status"] != "running" && w["status"] != "queued" {
            break w;
        }
        assert!(Instant::now() < deadline, "{w}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(w["status"], "completed", "{w}");
    let job = |name: &str| {
        w["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (_, flaky) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{}", job("flaky")),
        None,
        None,
    )
    .await;
    let (_, after) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{}", job("after")),
        None,
        None,
    )
    .await;
    assert!(
        t(&after, "started_at") >= t(&flaky, "finished_at"),
        "{flaky}\n{after}"
    );
    let (_, a) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{}/attempts", job("flaky")),
        None,
        None,
    )
    .await;
    assert_eq!(a["attempts"].as_array().unwrap().len(), 2, "{a}");

    // A batch's default policy, for the jobs without their own.
    let (code, b) = call(
        &c,
        &s,
        "POST",
        "/v1/batches",
        None,
        Some(&json!({"retry": {"max_attempts": 3, "backoff_secs": 0.1},
                     "jobs": [{"command": "test $JOBPACK_ATTEMPT -ge 2"},
                              {"command": "false", "retry": {"max_attempts": 1}}]})),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    let bid = b["batch_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = loop {
        let (_, b) = call(&c, &s, "GET", &format!("/v1/batches/{bid}"), None, None).await;
        if FINAL.contains(&b["status"].as_str().unwrap_or("")) {
            break b;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let jobs = b["jobs"].as_array().unwrap();
    let (_, a0) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{}/attempts", jobs[0]["job_id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    let (_, a1) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{}/attempts", jobs[1]["job_id"].as_str().unwrap()),
        None,
        None,
    )
    .await;
    assert_eq!(a0["attempts"].as_array().unwrap().len(), 2, "{a0}");
    assert_eq!(a0["attempts"][1]["status"], "completed");
    assert_eq!(a1["attempts"].as_array().unwrap().len(), 1, "{a1}");

    // Bad policies are refused.
    for retry in [
        json!({"max_attempts": 0}),
        json!({"max_attempts": 3, "on": ["stopped"]}),
        json!({"max_attempts": 3, "backoff_secs": -1}),
        json!({"max_attempts": 3, "surprise": true}),
    ] {
        let (code, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "true", "retry": retry})),
        )
        .await;
        assert_eq!(code, 400, "{retry}: {v}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_gives_stdin_retries_and_a_callback_and_follows_every_attempt() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let input = tmp.path().join("input.txt");
    std::fs::write(&input, "from a file\n").unwrap();
    let url = s.u("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jobpack"))
            .args(["submit", "--server", &url, "--follow", "--stdin"])
            .arg(&input)
            .args(["--retry", "3", "--retry-backoff", "0.1", "--"])
            .args([
                "sh",
                "-c",
                "cat; echo attempt $JOBPACK_ATTEMPT; test $JOBPACK_ATTEMPT -ge 2",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The follow went on through the retry, to the last attempt's end.
    assert_eq!(
        stdout,
        "from a file\nattempt 1\nfrom a file\nattempt 2\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A callback to a loopback address is refused by the server's destination policy.
    let url = s.u("");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_jobpack"))
            .args([
                "submit",
                "--server",
                &url,
                "--callback-url",
                "http://127.0.0.1:9/hook",
            ])
            .args(["--", "true"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
