//! `jobpack serve` driven over real HTTP: the real binary on 127.0.0.1:0 with a temporary data
//! directory, a git daemon and a data server on 127.0.0.1. Jobs run in the strict sandbox as root
//! (CI); elsewhere the server is started with --permissive and says so.

mod common;
#[path = "../../jobpack-core/tests/support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Write};

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FINAL, Server, is_root};
use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post_json(s: &Server, body: &Value) -> (u16, Value) {
    let r = client()
        .post(s.u("/v1/jobs"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get_text(s: &Server, path: &str) -> String {
    client()
        .get(s.u(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn get_json(s: &Server, path: &str) -> (u16, Value) {
    let r = client().get(s.u(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn wait_status(s: &Server, id: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, v) = get_json(s, &format!("/v1/jobs/{id}")).await;
        let st = v["status"].as_str().unwrap_or("").to_owned();
        if want.contains(&st.as_str()) {
            return v;
        }
        assert!(
            !FINAL.contains(&st.as_str()) || want.iter().any(|w| FINAL.contains(w)),
            "job {id} ended as {st}: {v}"
        );
        assert!(Instant::now() < deadline, "job {id} stuck in {st}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn submit(s: &Server, body: Value) -> String {
    let (st, v) = post_json(s, &body).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["status"], "queued");
    v["job_id"].as_str().unwrap().to_owned()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
}

fn tar_gz_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().display().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (p, b)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_git_spec_goes_through_the_whole_lifecycle() {
    let tmp = tempfile::tempdir().unwrap();
    let repos = tmp.path().join("repos");
    let fx = fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let data = DataServer::start().await;
    let url = data.route("/hw.csv", Route::Bytes(Arc::new(b"a,b\n1,2\n".to_vec())));
    let s = Server::start(&tmp.path().join("data"), &[]);

    let id = submit(
        &s,
        json!({"git_url": daemon.url("app.git"), "commit_hash": fx.commits[0], "data_url": url,
               "command": "cat hello.txt \"$JOBPACK_DATA_DIR/hw.csv\"; echo made > out.txt",
               "limits": {"timeout": 60, "memory_bytes": 268435456}}),
    )
    .await;
    let v = wait_status(&s, &id, &["completed"]).await;
    assert_eq!(v["job_id"], id.as_str());
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["commit"], fx.commits[0].as_str());
    for k in ["created_at", "updated_at", "started_at", "finished_at"] {
        assert!(v[k].as_str().is_some_and(|t| t.ends_with('Z')), "{k}: {v}");
    }
    let sha = v["artifact_sha256"].as_str().unwrap().to_owned();
    let (_, st) = get_json(&s, &format!("/v1/jobs/{id}/status")).await;
    assert_eq!(st["status"], "completed");

    let log = get_text(&s, &format!("/v1/jobs/{id}/logs")).await;
    assert_eq!(log, "hello from commit 0\na,b\n1,2\n");
    let tail = get_text(&s, &format!("/v1/jobs/{id}/logs?tail=4")).await;
    assert_eq!(tail, "1,2\n");

    // The artifact: ETag is its sha256, its manifest names the commit, it is a build context.
    let r = client()
        .get(s.u(&format!("/v1/jobs/{id}/artifact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"].to_str().unwrap(), format!("\"{sha}\""));
    let bytes = r.bytes().await.unwrap();
    assert_eq!(sha256(&bytes), sha);
    let entries = tar_gz_entries(&bytes);
    let manifest: Value =
        serde_json::from_slice(&entries.iter().find(|(p, _)| p == "jobpack.json").unwrap().1)
            .unwrap();
    assert_eq!(manifest["source"]["commit"], fx.commits[0].as_str());
    for f in manifest["files"].as_array().unwrap() {
        if f["type"] == "file" {
            let (_, b) = entries
                .iter()
                .find(|(p, _)| p == f["path"].as_str().unwrap())
                .unwrap();
            assert_eq!(f["sha256"].as_str().unwrap(), sha256(b));
        }
    }

    // The working directory after the run, by GET and POST, and one file of it.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = client()
            .request(method, s.u(&format!("/v1/jobs/{id}/tarball")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let entries = tar_gz_entries(&r.bytes().await.unwrap());
        let out = entries.iter().find(|(p, _)| p == "code/out.txt").unwrap();
        assert_eq!(out.1, b"made\n");
    }
    let r = client()
        .get(s.u(&format!("/v1/jobs/{id}/files/code/out.txt")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "made\n");

    // Listing with filters and metrics.
    let (_, l) = get_json(&s, "/v1/jobs?status=completed&limit=10").await;
    assert_eq!(l["total"], 1);
    assert_eq!(l["jobs"][0]["job_id"], id.as_str());
    let (_, l) = get_json(&s, "/v1/jobs?status=failed").await;
    assert_eq!(l["total"], 0);
    let m = get_text(&s, "/metrics").await;
    assert!(m.contains("jobpack_jobs{status=\"completed\"} 1"), "{m}");
    let (st, spec) = get_json(&s, "/openapi.json").await;
    assert_eq!(st, 200);
    assert_eq!(spec["servers"][0]["url"], "/v1");
    assert!(
        spec["paths"]["/jobs/{id}/logs/stream"].is_object(),
        "{spec}"
    );
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_run_and_hostile_archives_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let spec = json!({"command": "sh main.sh"}).to_string();
    let form = reqwest::multipart::Form::new()
        .text("spec", spec.clone())
        .part(
            "code_files",
            reqwest::multipart::Part::bytes(b"cat ../data/in.txt; echo ran".to_vec())
                .file_name("main.sh"),
        )
        .part(
            "input_files",
            reqwest::multipart::Part::bytes(b"input data\n".to_vec()).file_name("in.txt"),
        );
    let r = client()
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
    let v = wait_status(&s, &id, &["completed"]).await;
    assert_eq!(v["source"], "upload");
    let log = get_text(&s, &format!("/v1/jobs/{id}/logs")).await;
    assert_eq!(log, "input data\nran\n");

    // One archive holding the job: tar.gz and zip.
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        Default::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_size(13);
    h.set_mode(0o644);
    b.append_data(&mut h, "main.sh", &b"echo from-tar"[..])
        .unwrap();
    let tgz = b.into_inner().unwrap().finish().unwrap();
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zw.start_file("main.sh", zip::write::SimpleFileOptions::default())
        .unwrap();
    zw.write_all(b"echo from-zip").unwrap();
    let zipped = zw.finish().unwrap().into_inner();
    for (name, bytes, expect) in [
        ("job.tar.gz", tgz, "from-tar\n"),
        ("job.zip", zipped, "from-zip\n"),
    ] {
        let form = reqwest::multipart::Form::new()
            .text("spec", spec.clone())
            .part(
                "archive",
                reqwest::multipart::Part::bytes(bytes).file_name(name),
            );
        let r = client()
            .post(s.u("/v1/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{name}");
        let id = r.json::<Value>().await.unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned();
        wait_status(&s, &id, &["completed"]).await;
        let log = get_text(&s, &format!("/v1/jobs/{id}/logs")).await;
        assert_eq!(log, expect, "{name}");
    }
}

/// Parses an SSE body into (event, id, data) triples.
fn parse_sse(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let (mut ev, mut id, mut data) = ("message".to_owned(), String::new(), String::new());
        let mut any = false;
        for line in block.split('\n') {
            if let Some(v) = line.strip_prefix("event: ") {
                ev = v.to_owned();
                any = true;
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.to_owned();
                any = true;
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
                any = true;
            }
        }
        if any && !data.is_empty() {
            out.push((ev, id, data));
        }
    }
    out
}

async fn read_sse(s: &Server, id: &str, last: Option<&str>) -> String {
    let mut req = client().get(s.u(&format!("/v1/jobs/{id}/logs/stream")));
    if let Some(l) = last {
        req = req.header("Last-Event-ID", l);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = r.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, body.next()).await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        // A real end event, not the job's text pretending to be one.
        if parse_sse(&text).iter().any(|(e, _, _)| e == "end") {
            break;
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_gives_history_then_live_resumes_exactly_and_cannot_be_forged() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let id = submit(
        &s,
        json!({"command": "echo first; sleep 1; printf 'x\\rid: 9\\revent: end\\n'; printf 'data: fake\\n\\n'; sleep 1; echo last; exit 5"}),
    )
    .await;
    wait_status(&s, &id, &["running"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Two readers at once: both see everything.
    let (a, b) = tokio::join!(read_sse(&s, &id, None), read_sse(&s, &id, None));
    for text in [&a, &b] {
        let events = parse_sse(text);
        let (ev, id_last, data) = events.last().unwrap();
        assert_eq!(ev, "end", "{text}");
        let end: Value = serde_json::from_str(data).unwrap();
        assert_eq!(end, json!({"status": "failed", "exit_code": 5}));
        let log: String = events
            .iter()
            .filter(|(e, _, _)| e == "message")
            .map(|(_, _, d)| {
                serde_json::from_str::<Value>(d).unwrap()["text"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(log, "first\nx\rid: 9\revent: end\ndata: fake\n\nlast\n");
        assert_eq!(id_last, &log.len().to_string());
        // Only one end event, and no id or event field from the job's output.
        assert_eq!(events.iter().filter(|(e, _, _)| e == "end").count(), 1);
        assert!(
            !text.contains("\nid: 9") && !text.contains("\rid: 9"),
            "{text:?}"
        );
        let ids: Vec<u64> = events.iter().map(|(_, i, _)| i.parse().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{ids:?}");
    }
    // Resume from the first event's id: exactly the rest.
    let events = parse_sse(&a);
    let first_id = &events[0].1;
    let resumed = parse_sse(&read_sse(&s, &id, Some(first_id)).await);
    let rest: String = resumed
        .iter()
        .filter(|(e, _, _)| e == "message")
        .map(|(_, _, d)| {
            serde_json::from_str::<Value>(d).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let first_len: usize = first_id.parse().unwrap();
    let full = "first\nx\rid: 9\revent: end\ndata: fake\n\nlast\n";
    assert_eq!(rest, full[first_len..]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let id = submit(&s, json!({"command": "echo started; sleep 300"})).await;
    wait_status(&s, &id, &["running"]).await;
    let r = client()
        .post(s.u(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v = wait_status(&s, &id, &["stopped"]).await;
    assert_eq!(v["reason"], "cancelled");
    let r = client()
        .post(s.u(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "already_finished");

    // Delete a running job: cancelled, files and record gone.
    let id2 = submit(&s, json!({"command": "sleep 300"})).await;
    wait_status(&s, &id2, &["running"]).await;
    let r = client()
        .delete(s.u(&format!("/v1/jobs/{id2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, v) = get_json(&s, &format!("/v1/jobs/{id2}")).await;
    assert_eq!(st, 404);
    assert_eq!(v["code"], "not_found");
    assert!(!s.data.join("jobs").join(&id2).exists());
    // A queued job is cancelled before it ever runs.
    let r = client()
        .delete(s.u(&format!("/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_keeps_every_job() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &["--max-concurrent", "1"]);
    let packed = submit(&s, json!({"command": "true", "run": false})).await;
    wait_status(&s, &packed, &["packed"]).await;
    let done = submit(&s, json!({"command": "echo done"})).await;
    wait_status(&s, &done, &["completed"]).await;
    let running = submit(&s, json!({"command": "echo before-crash; sleep 301.25"})).await;
    wait_status(&s, &running, &["running"]).await;
    let queued = submit(&s, json!({"command": "echo resumed"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, q) = get_json(&s, &format!("/v1/jobs/{queued}")).await;
    assert_eq!(q["status"], "queued");
    let log_before =
        std::fs::read_to_string(data.join("jobs").join(&running).join("job.log")).unwrap();
    assert_eq!(log_before, "before-crash\n");
    // What a pack cut short by the crash leaves behind, planted by hand: gone after the restart.
    std::fs::create_dir_all(data.join("work/jobpack-pack-stale")).unwrap();
    let stale_tmp = data
        .join("jobs")
        .join(&queued)
        .join(".jobpack-artifact-x.tmp");
    std::fs::create_dir_all(stale_tmp.parent().unwrap()).unwrap();
    std::fs::write(&stale_tmp, b"half").unwrap();
    s.kill();

    let s = Server::start(&data, &["--max-concurrent", "1"]);
    let (_, l) = get_json(&s, "/v1/jobs").await;
    assert_eq!(l["total"], 4);
    let v = wait_status(&s, &running, &["failed"]).await;
    assert_eq!(v["reason"], "server restarted");
    if is_root() {
        // The crashed server's sandbox was reaped: nothing of the job is left on the host.
        assert_eq!(
            host_procs_with("301.25"),
            Vec::<u32>::new(),
            "the orphaned job survived"
        );
    }
    let log = get_text(&s, &format!("/v1/jobs/{running}/logs")).await;
    assert_eq!(log, "before-crash\n", "logs kept");
    wait_status(&s, &queued, &["completed"]).await;
    assert!(!data.join("work/jobpack-pack-stale").exists());
    assert!(!stale_tmp.exists());
    let (_, v) = get_json(&s, &format!("/v1/jobs/{packed}")).await;
    assert_eq!(v["status"], "packed");
    let r = client()
        .get(s.u(&format!("/v1/jobs/{packed}/artifact")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, v) = get_json(&s, &format!("/v1/jobs/{done}")).await;
    assert_eq!(v["status"], "completed");
    // No artifact temp file was left half-written.
    for e in std::fs::read_dir(data.join("jobs").join(&running)).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!n.starts_with(".jobpack-artifact-"), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_4xx_problem_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-body-mb", "1"]);
    let post_raw = |body: Vec<u8>, ct: &'static str| {
        let url = s.u("/v1/jobs");
        async move {
            let r = client()
                .post(url)
                .header("content-type", ct)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let cases: Vec<(&str, (u16, Value), u16, &str)> = vec![
        (
            "malformed JSON",
            post_raw(b"{\"command\":".to_vec(), "application/json").await,
            400,
            "bad_request",
        ),
        (
            "unknown field",
            post_json(&s, &json!({"command": "x", "comand": "y"})).await,
            400,
            "invalid_spec",
        ),
        (
            "bad commit",
            post_json(
                &s,
                &json!({"git_url": "https://h/r", "commit_hash": "main", "command": "x"}),
            )
            .await,
            400,
            "invalid_spec",
        ),
        (
            "file url",
            post_json(
                &s,
                &json!({"git_url": "file:///etc", "commit_hash": "0123456", "command": "x"}),
            )
            .await,
            400,
            "forbidden_url",
        ),
        (
            "bad limits",
            post_json(&s, &json!({"command": "x", "limits": {"memory": 1}})).await,
            400,
            "bad_request",
        ),
        (
            "bad run",
            post_json(&s, &json!({"command": "x", "run": "yes"})).await,
            400,
            "bad_request",
        ),
        (
            "not an object",
            post_json(&s, &json!(["command"])).await,
            400,
            "bad_request",
        ),
        (
            "oversized body",
            post_raw(vec![b' '; 2 << 20], "application/json").await,
            413,
            "too_large",
        ),
        (
            "unknown id",
            get_json(&s, "/v1/jobs/does-not-exist").await,
            404,
            "not_found",
        ),
        (
            "unknown id logs",
            get_json(&s, "/v1/jobs/does-not-exist/logs").await,
            404,
            "not_found",
        ),
        (
            "unknown route",
            get_json(&s, "/v1/nothing").await,
            404,
            "not_found",
        ),
    ];
    for (name, (status, body), want, code) in cases {
        assert_eq!(status, want, "{name}: {body}");
        assert_eq!(body["code"], code, "{name}: {body}");
        assert_eq!(body["status"], want, "{name}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {body}"
        );
        // An invalid spec also names each invalid field, for a form to show beside it.
        if name == "bad commit" {
            assert_eq!(body["errors"][0]["field"], "commit_hash", "{body}");
            assert!(
                body["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("hexadecimal")
            );
        } else {
            assert!(body.get("errors").is_none(), "{name}: {body}");
        }
    }

    // A traversal archive: refused, nothing kept.
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_old_mut().name[..13].copy_from_slice(b"../escape.txt");
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"x"[..]).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "true"}).to_string())
        .part(
            "archive",
            reqwest::multipart::Part::bytes(b.into_inner().unwrap()).file_name("evil.tar"),
        );
    let r = client()
        .post(s.u("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "bad_upload");
    assert!(v["message"].as_str().unwrap().contains("'..'"), "{v}");
    let (_, l) = get_json(&s, "/v1/jobs").await;
    assert_eq!(l["total"], 0, "nothing half-created");
    assert_eq!(std::fs::read_dir(s.data.join("jobs")).unwrap().count(), 0);
    assert!(!s.data.join("escape.txt").exists() && !s.data.join("jobs/escape.txt").exists());

    // A pack that fails (unknown commit) is a failed job with a stable code, not a 5xx.
    let repos = tmp.path().join("repos");
    fixture_repo(&repos, "app", true);
    let daemon = GitDaemon::start(&repos);
    let id = submit(
        &s,
        json!({"git_url": daemon.url("app.git"), "commit_hash": "0123456789abcdef0123456789abcdef01234567", "command": "x"}),
    )
    .await;
    let v = wait_status(&s, &id, &["failed"]).await;
    assert_eq!(v["error_code"], "unknown_commit", "{v}");
}

#[test]
fn a_config_file_is_read_below_flags_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-config");
    let cfg = tmp.path().join("jobpack.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nmax_concurrent = 2\n",
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobpack"))
        .args(["serve", "--config", cfg.to_str().unwrap(), "--permissive"])
        .env_remove("JOBPACK_DATA_DIR")
        .env_remove("JOBPACK_LISTEN")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        line.starts_with("jobpack listening on http://127.0.0.1:"),
        "{line}"
    );
    assert!(
        data.join("jobpack.db").exists(),
        "data_dir from the config file not used"
    );

    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nmax_concurent = 2\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jobpack"))
        .args(["serve", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid config file") && err.contains("max_concurent"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_running_jobs_and_keeps_queued_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut s = Server::start(&data, &["--max-concurrent", "1"]);
    let running = submit(&s, json!({"command": "sleep 302.75"})).await;
    wait_status(&s, &running, &["running"]).await;
    let queued = submit(&s, json!({"command": "echo later"})).await;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        host_procs_with("302.75"),
        Vec::<u32>::new(),
        "a job outlived the server"
    );
    let s = Server::start(&data, &["--max-concurrent", "1"]);
    let (_, v) = get_json(&s, &format!("/v1/jobs/{running}")).await;
    assert_eq!(v["status"], "stopped", "{v}");
    wait_status(&s, &queued, &["completed"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_pages_by_cursor_as_by_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    for _ in 0..7 {
        let (st, v) = post_json(&s, &json!({"command": "true", "run": false})).await;
        assert_eq!(st, 201, "{v}");
    }
    let ids = |l: &Value| -> Vec<String> {
        l["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["job_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, all) = get_json(&s, "/v1/jobs?limit=100").await;
    assert!(
        all["next"].is_null(),
        "a page that is not full has no next: {all}"
    );
    let want = ids(&all);
    assert_eq!(want.len(), 7);
    // Three pages of three by cursor: the same jobs in the same order as by offset.
    let mut got = Vec::new();
    let mut path = "/v1/jobs?limit=3".to_owned();
    for page in 0..3 {
        let (st, l) = get_json(&s, &path).await;
        assert_eq!(st, 200, "{l}");
        assert_eq!(l["total"], 7);
        let (_, by_offset) = get_json(&s, &format!("/v1/jobs?limit=3&offset={}", page * 3)).await;
        assert_eq!(ids(&l), ids(&by_offset), "page {page}");
        got.extend(ids(&l));
        match l["next"].as_str() {
            Some(c) => path = format!("/v1/jobs?limit=3&after={}", c.replace('/', "%2F")),
            None => assert_eq!(page, 2, "only the last page has no next"),
        }
    }
    assert_eq!(got, want);
    for bad in ["x", "1.5", "nan/abc", "1.5/../../etc", "1.5/zz"] {
        let (st, v) = get_json(&s, &format!("/v1/jobs?after={bad}")).await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
}

/// `(pid, name)` of each child of `ppid` (from /proc: `stat`'s fourth field).
fn children_of(ppid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let parent = stat[close + 2..].split(' ').nth(1);
        if parent.and_then(|p| p.parse().ok()) == Some(ppid) {
            out.push((pid, stat[open + 1..close].to_owned()));
        }
    }
    out
}

/// A `/proc/PID/status` field (`RssAnon`, `PPid`, ...), its first number.
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(&format!("{field}:")))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The process group of `pid`.
fn pgid(pid: u32) -> i32 {
    // SAFETY: getpgid only reads.
    unsafe { libc::getpgid(pid as i32) }
}

/// Gone, or a zombie nobody has reaped yet: not running.
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
        .unwrap_or(true)
}

fn spawner_of(s: &Server) -> u32 {
    let kids = children_of(s.child.id());
    kids.iter()
        .find(|(_, n)| n == "jobpack-spawner")
        .unwrap_or_else(|| panic!("no jobpack-spawner among the server's children: {kids:?}"))
        .0
}

#[tokio::test(flavor = "multi_thread")]
async fn each_pid_1_comes_from_the_small_spawner_and_is_still_the_servers_child() {
    if !is_root() {
        println!("skipped: the sandbox (and its spawner's pid 1s) needs root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let server = s.child.id();
    let spawner = spawner_of(&s);
    // In the server's process group: what stops the group stops it, and the pid 1s it makes.
    assert_eq!(pgid(spawner), pgid(server));
    let cmd = "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -1; echo started; sleep 60";
    let id = submit(&s, json!({"command": cmd})).await;
    wait_status(&s, &id, &["running"]).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pid1 = loop {
        let log = get_text(&s, &format!("/v1/jobs/{id}/logs")).await;
        let init = children_of(server)
            .into_iter()
            .find(|(_, n)| n == "jobpack-init");
        if let (Some((pid, _)), true) = (init, log.contains("started")) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pid 1 or no output: {log:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // pid 1 is the server's child (the server reaps it and reads its usage), in its group...
    assert_eq!(status_field(pid1, "PPid"), Some(server.into()));
    assert_eq!(pgid(pid1), pgid(server));
    // ...but a copy of the spawner's small address space, not of the server's.
    let (init_kb, spawner_kb, server_kb) = (
        status_field(pid1, "RssAnon").unwrap(),
        status_field(spawner, "RssAnon").unwrap(),
        status_field(server, "RssAnon").unwrap(),
    );
    println!(
        "anonymous memory: pid 1 {init_kb} kB, spawner {spawner_kb} kB, server {server_kb} kB"
    );
    assert!(
        spawner_kb + 1024 < server_kb,
        "the two are told apart only if they differ"
    );
    assert!(
        init_kb <= spawner_kb + 1024,
        "pid 1 {init_kb} kB, spawner {spawner_kb} kB"
    );
    // The job starts as from a shell: no signal blocked, none of the standard ones ignored (the
    // server's runtime ignores SIGPIPE, the spawner a terminal's signals; real-time ones are
    // libc's own), so `yes` ends quietly at its closed pipe.
    let log = get_text(&s, &format!("/v1/jobs/{id}/logs")).await;
    let mask = |name: &str| {
        let line = log
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{log}"));
        u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
    };
    assert_eq!(mask("SigBlk:"), 0, "{log}");
    assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{log}");
    assert!(log.contains("\ny\nstarted\n"), "{log}");
    assert!(!log.contains("Broken pipe"), "{log}");
    // Cancelled, pid 1 is reaped by the server; the spawner stays for the next job.
    let r = client()
        .post(s.u(&format!("/v1/jobs/{id}/cancel")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    wait_status(&s, &id, &["stopped"]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !children_of(server).iter().all(|(p, _)| *p != pid1) {
        assert!(Instant::now() < deadline, "pid 1 {pid1} was not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!ended(spawner));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_its_spawner_the_server_still_runs_jobs_and_the_spawner_dies_with_it() {
    if !is_root() {
        println!("skipped: the sandbox's spawner is exercised as root");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let spawner = spawner_of(&s);
    // Signals from a terminal (the server's group) do not end it.
    // SAFETY: signals to a process this test's server started.
    unsafe { libc::kill(spawner as i32, libc::SIGINT) };
    unsafe { libc::kill(spawner as i32, libc::SIGTERM) };
    let id = submit(&s, json!({"command": "echo one"})).await;
    let v = wait_status(&s, &id, FINAL).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert!(!ended(spawner));
    // Killed: the next job finds it gone, the server reaps it and clones pid 1 itself.
    unsafe { libc::kill(spawner as i32, libc::SIGKILL) };
    for word in ["two", "three"] {
        let id = submit(&s, json!({"command": format!("echo {word}")})).await;
        let v = wait_status(&s, &id, FINAL).await;
        assert_eq!(v["status"], "completed", "{v}");
        assert_eq!(
            get_text(&s, &format!("/v1/jobs/{id}/logs")).await,
            format!("{word}\n")
        );
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{spawner}")).exists(),
        "not reaped"
    );

    // Stopped (wedged): the job that asked fails after the spawner's time limit, saying so (a
    // pid 1 may hold its pipes: they are not reused), the spawner is killed and reaped, and the
    // next job runs.
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let spawner = spawner_of(&s);
    unsafe { libc::kill(spawner as i32, libc::SIGSTOP) };
    let id = submit(&s, json!({"command": "echo never"})).await;
    let v = wait_status(&s, &id, FINAL).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert!(v.to_string().contains("spawner"), "{v}");
    assert!(
        !std::path::Path::new(&format!("/proc/{spawner}")).exists(),
        "not reaped"
    );
    let id = submit(&s, json!({"command": "echo after"})).await;
    let v = wait_status(&s, &id, FINAL).await;
    assert_eq!(v["status"], "completed", "{v}");
    drop(s);

    // A new server's spawner ends when the server is killed alone (not its group).
    let data = tempfile::tempdir().unwrap();
    let mut s = Server::start(data.path(), &[]);
    let spawner = spawner_of(&s);
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ended(spawner) {
        assert!(Instant::now() < deadline, "the spawner outlived its server");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
