//! Signed provenance of every artifact, checked by a tool that is not this project's code
//! (Python's securesystemslib, the Secure Systems Lab's DSSE implementation, from PyPI into .venv
//! by `scripts/setup.sh --tests`) with only the public key: the server's (`/v1/keys`,
//! `/v1/jobs/{id}/provenance`) and `jobpack pack --attest`'s; a one-byte change to the artifact,
//! the envelope or the key fails, there and in `jobpack verify`.

mod common;
#[path = "../../jobpack-core/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{FINAL, Server, call, jobpack, statement, wait_final};
use serde_json::{Value, json};

/// securesystemslib's verdict on `envelope` for `artifact` with the key in `pem` (`keyid`).
fn sslib(py: &Path, envelope: &Path, pem: &Path, keyid: &str, artifact: &Path) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/attest/verify.py");
    let out = Command::new(py)
        .arg(script)
        .args([envelope, pem])
        .arg(keyid)
        .arg(artifact)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.trim_end().ends_with("OK"),
        text,
    )
}

/// The bytes `path` answers.
async fn body(c: &reqwest::Client, s: &Server, path: &str) -> Vec<u8> {
    let r = c.get(s.u(path)).send().await.unwrap();
    r.bytes().await.unwrap().to_vec()
}

/// The server's first public key, written to `dir/server.pub`: (its path, its keyid).
async fn server_key(c: &reqwest::Client, s: &Server, dir: &Path) -> (PathBuf, String) {
    let (_, keys) = call(c, s, "GET", "/v1/keys", None, None).await;
    let pem = dir.join("server.pub");
    std::fs::write(&pem, keys["keys"][0]["public_key_pem"].as_str().unwrap()).unwrap();
    (pem, keys["keys"][0]["keyid"].as_str().unwrap().to_owned())
}

fn verify(artifact: &Path, envelope: &Path, key: &Path) -> (i32, String) {
    let (code, out, err) = jobpack(&[
        "verify",
        artifact.to_str().unwrap(),
        "--provenance",
        envelope.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    (code, format!("{out}{err}"))
}

/// A copy of `src` with byte `at` flipped.
fn flipped(src: &Path, at: usize, to: &Path) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 1;
    std::fs::write(to, b).unwrap();
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread")]
async fn provenance_is_signed_verifiable_by_securesystemslib_and_tamper_evident() {
    let Some(py) = common::venv_python("securesystemslib, cryptography") else {
        println!("SKIPPED: .venv has no securesystemslib (scripts/setup.sh --tests installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = Server::start(&d.join("data"), &[]);
    let c = reqwest::Client::new();
    let (code, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "echo hi", "stdin": "in", "run": false})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (_, j) = call(&c, &s, "GET", &format!("/v1/jobs/{id}"), None, None).await;
        if FINAL.contains(&j["status"].as_str().unwrap_or("")) || j["status"] == "packed" {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (_, keys) = call(&c, &s, "GET", "/v1/keys", None, None).await;
    let key = &keys["keys"][0];
    let keyid = key["keyid"].as_str().unwrap();
    let pem = d.join("server.pub");
    std::fs::write(&pem, key["public_key_pem"].as_str().unwrap()).unwrap();
    assert!(
        key["public_key_pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );
    let (code, env) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/provenance"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200, "{env}");
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    assert_eq!(env["signatures"][0]["keyid"], keyid);
    let envelope = d.join("job.intoto.json");
    std::fs::write(&envelope, env.to_string()).unwrap();
    let bytes = body(&c, &s, &format!("/v1/jobs/{id}/artifact")).await;
    let artifact = d.join("artifact.tar.gz");
    std::fs::write(&artifact, &bytes).unwrap();

    // What it says: the artifact's digest, the materials, the builder.
    let st = statement(&env);
    assert_eq!(st["subject"][0]["digest"]["sha256"], job["artifact_sha256"]);
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(deps.iter().any(|d| d["name"] == "templates"), "{deps:?}");
    assert!(deps.iter().any(|d| d["name"] == "stdin"), "{deps:?}");
    assert_eq!(
        st["predicate"]["runDetails"]["metadata"]["invocationId"],
        id.as_str()
    );

    // Verified by securesystemslib and by jobpack verify, with the public key only.
    let (ok, why) = sslib(&py, &envelope, &pem, keyid, &artifact);
    assert!(ok, "{why}");
    let (code, out) = verify(&artifact, &envelope, &pem);
    assert_eq!(code, 0, "{out}");

    // One byte off anywhere fails: the artifact, the envelope's payload, the key.
    let bad_artifact = flipped(&artifact, bytes.len() / 2, &d.join("bad.tar.gz"));
    assert!(!sslib(&py, &envelope, &pem, keyid, &bad_artifact).0);
    assert_eq!(verify(&bad_artifact, &envelope, &pem).0, 1);
    let mut bad_env = env.clone();
    let payload = bad_env["payload"].as_str().unwrap().to_owned();
    use base64::Engine;
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(payload)
        .unwrap();
    raw[20] ^= 1;
    bad_env["payload"] = json!(base64::engine::general_purpose::STANDARD.encode(raw));
    let bad_envelope = d.join("bad.intoto.json");
    std::fs::write(&bad_envelope, bad_env.to_string()).unwrap();
    assert!(!sslib(&py, &bad_envelope, &pem, keyid, &artifact).0);
    assert_eq!(verify(&artifact, &bad_envelope, &pem).0, 1);
    let (code, other_id, err) = jobpack(&[
        "key",
        "generate",
        "--out",
        d.join("other").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let other = d.join("other.pub");
    assert!(!sslib(&py, &envelope, &other, other_id.trim(), &artifact).0);
    assert_eq!(verify(&artifact, &envelope, &other).0, 1);
}

#[test]
fn jobpack_pack_attest_writes_an_envelope_others_verify() {
    let Some(py) = common::venv_python("securesystemslib, cryptography") else {
        println!("SKIPPED: .venv has no securesystemslib (scripts/setup.sh --tests installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (code, keyid, err) = jobpack(&["key", "generate", "--out", d.join("me").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let key = d.join("me.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::write(
        d.join("spec.json"),
        r#"{"name": "attested", "command": "echo hi"}"#,
    )
    .unwrap();
    let (artifact, envelope) = (d.join("a.tar.gz"), d.join("a.intoto.jsonl"));
    let (code, _, err) = jobpack(&[
        "pack",
        d.join("spec.json").to_str().unwrap(),
        "--no-cache",
        "-o",
        artifact.to_str().unwrap(),
        "--attest",
        envelope.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (ok, why) = sslib(&py, &envelope, &d.join("me.pub"), keyid.trim(), &artifact);
    assert!(ok, "{why}");
    let (code, out) = verify(&artifact, &envelope, &d.join("me.pub"));
    assert_eq!(code, 0, "{out}");
    // The private key file names its public key too.
    assert_eq!(verify(&artifact, &envelope, &key).0, 0);
    // --attest without a key is refused before anything is packed.
    let (code, _, err) = jobpack(&[
        "pack",
        d.join("spec.json").to_str().unwrap(),
        "--attest",
        d.join("x.jsonl").to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_job_has_a_signed_receipt_of_its_log_outputs_and_outcome() {
    let Some(py) = common::venv_python("securesystemslib, cryptography") else {
        println!("SKIPPED: .venv has no securesystemslib (scripts/setup.sh --tests installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = Server::start(&d.join("data"), &[]);
    let c = reqwest::Client::new();
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "echo result > out.txt; echo done", "limits": {"pids": 64}})),
    )
    .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    // Not run yet: 409; the receipt once the run has ended (it is stored with the final status,
    // which may come between the two reads).
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let (_, j) = call(&c, &s, "GET", &format!("/v1/jobs/{id}"), None, None).await;
        if FINAL.contains(&j["status"].as_str().unwrap_or("")) {
            break j;
        }
        let (code, v) = call(&c, &s, "GET", &format!("/v1/jobs/{id}/receipt"), None, None).await;
        assert!(
            code == 409 || (code == 200 && v["payload"].is_string()),
            "{code} {v}"
        );
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(job["status"], "completed");
    let (code, env) = call(&c, &s, "GET", &format!("/v1/jobs/{id}/receipt"), None, None).await;
    assert_eq!(code, 200, "{env}");
    let st = statement(&env);
    let subject = |name: &str| {
        st["subject"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| s["digest"]["sha256"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        subject("artifact").as_deref(),
        job["artifact_sha256"].as_str()
    );
    let log = body(&c, &s, &format!("/v1/jobs/{id}/logs")).await;
    assert_eq!(
        subject("log").unwrap(),
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&log))
    );
    assert!(subject("outputs").is_some());
    let p = &st["predicate"];
    assert_eq!(p["outcome"]["status"], "completed", "{p}");
    assert_eq!(p["outcome"]["exit_code"], 0);
    assert_eq!(p["backend"], "sandbox");
    assert_eq!(p["limits"]["pids"], 64);
    assert!(!p["host"]["kernel"].as_str().unwrap().is_empty());
    assert!(p["started_at"].is_string() && p["finished_at"].is_string());

    // Checked by securesystemslib and jobpack verify with the server's public key.
    let (pem, keyid) = server_key(&c, &s, d).await;
    let keyid = keyid.as_str();
    let receipt = d.join("receipt.json");
    std::fs::write(&receipt, env.to_string()).unwrap();
    let art = body(&c, &s, &format!("/v1/jobs/{id}/artifact")).await;
    let artifact = d.join("a.tar.gz");
    std::fs::write(&artifact, &art).unwrap();
    let (ok, why) = sslib(&py, &receipt, &pem, keyid, &artifact);
    assert!(ok, "{why}");
    let (code, out, err) = jobpack(&[
        "verify",
        artifact.to_str().unwrap(),
        "--receipt",
        receipt.to_str().unwrap(),
        "--key",
        pem.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let other = flipped(&artifact, 100, &d.join("other.tar.gz"));
    let (code, _, _) = jobpack(&[
        "verify",
        other.to_str().unwrap(),
        "--receipt",
        receipt.to_str().unwrap(),
        "--key",
        pem.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
}

/// The provenance and the receipt are rows committed with `packed` and with the final state (no
/// file, no temporary file left beside the artifact); a job an older server wrote them for as
/// files still answers them.
#[tokio::test(flavor = "multi_thread")]
async fn statements_are_stored_with_their_state_and_an_older_servers_files_still_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &[]);
    let c = reqwest::Client::new();
    let (id, job) = common::run_job(&c, &s, &json!({"command": "echo result > out.txt"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    let served = |what: &'static str| {
        let (c, s, id) = (&c, &s, &id);
        async move { body(c, s, &format!("/v1/jobs/{id}/{what}")).await }
    };
    let (provenance, receipt) = (served("provenance").await, served("receipt").await);
    let job_dir = data.join("jobs").join(&id);
    let names: Vec<String> = std::fs::read_dir(&job_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("intoto") || n.starts_with(".tmp")),
        "{names:?}"
    );
    let stored = |kind: &str| -> Vec<u8> {
        let db = rusqlite::Connection::open(data.join("jobpack.db")).unwrap();
        db.query_row(
            "SELECT body FROM job_documents WHERE job_id = ?1 AND kind = ?2",
            [id.as_str(), kind],
            |r| r.get(0),
        )
        .unwrap()
    };
    // (Served as parsed and written again: the same JSON, not always the same bytes.)
    let json = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
    assert_eq!(json(&stored("provenance")), json(&provenance));
    assert_eq!(json(&stored("receipt")), json(&receipt));
    assert_eq!(
        statement(&json(&receipt))["subject"][0]["digest"]["sha256"],
        job["artifact_sha256"]
    );

    // A job from before migration 0015: no rows, the envelopes in files beside the artifact.
    let data = s.kill();
    {
        let db = rusqlite::Connection::open(data.join("jobpack.db")).unwrap();
        let n = db
            .execute("DELETE FROM job_documents WHERE job_id = ?1", [&id])
            .unwrap();
        assert_eq!(n, 2);
    }
    std::fs::write(job_dir.join("provenance.intoto.json"), &provenance).unwrap();
    std::fs::write(job_dir.join("receipt.intoto.json"), &receipt).unwrap();
    let s = Server::start(&data, &[]);
    assert_eq!(
        body(&c, &s, &format!("/v1/jobs/{id}/provenance")).await,
        provenance
    );
    assert_eq!(
        body(&c, &s, &format!("/v1/jobs/{id}/receipt")).await,
        receipt
    );
    // Neither at all: the job's provenance is gone (410), its receipt never was (404).
    for (what, code) in [("provenance", 410), ("receipt", 404)] {
        std::fs::remove_file(job_dir.join(format!("{what}.intoto.json"))).unwrap();
        let (got, v) = call(&c, &s, "GET", &format!("/v1/jobs/{id}/{what}"), None, None).await;
        assert_eq!(got, code, "{what}: {v}");
    }
}

/// `jobpack` off the async threads (the data server answers on them meanwhile).
async fn jobpack_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        jobpack(&a)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_rebuild_packs_the_recorded_materials_again_and_names_the_first_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repo = support::fixture_repo(d, "repo", true);
    let ds = support::DataServer::start().await;
    ds.serve_git(d);
    let data = ds.route(
        "/table.csv",
        support::Route::Bytes(std::sync::Arc::new(b"a,b\n1,2\n".to_vec())),
    );
    let spec = json!({
        "name": "rebuildable",
        "git_url": ds.git_url("repo.git"),
        "commit_hash": repo.commits[1],
        "data": [{"url": data}],
        "command": "cat ../data/table.csv",
    });
    std::fs::write(d.join("spec.json"), spec.to_string()).unwrap();
    std::fs::write(d.join("in.txt"), "standard input\n").unwrap();
    let p = |x: &str| d.join(x).display().to_string();
    let (code, _, err) = jobpack_async(vec![
        "key".into(),
        "generate".into(),
        "--out".into(),
        p("k"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = jobpack_async(
        [
            "pack",
            &p("spec.json"),
            "--cache-dir",
            &p("cache1"),
            "-o",
            &p("a.tar.gz"),
            "--stdin",
            &p("in.txt"),
            "--attest",
            &p("a.intoto.jsonl"),
            "--key",
            &p("k.key"),
        ]
        .map(String::from)
        .to_vec(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let verify = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "verify",
            &p("a.tar.gz"),
            "--provenance",
            &p("a.intoto.jsonl"),
            "--key",
            &p("k.pub"),
        ]
        .map(String::from)
        .to_vec();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The same materials, a fresh cache: the same bytes.
    let (code, out, err) = jobpack_async(verify(&["--rebuild"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rebuilt: identical"), "{out}");
    // The data changed at its URL: the rebuild differs (or is refused by the pinned sha256).
    ds.route(
        "/table.csv",
        support::Route::Bytes(std::sync::Arc::new(b"a,b\n1,3\n".to_vec())),
    );
    let (code, out, err) = jobpack_async(verify(&["--rebuild"])).await;
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("table.csv") || err.contains("sha256"), "{err}");
    // Without --rebuild the signature and the subject still verify.
    assert_eq!(jobpack_async(verify(&[])).await.0, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_rerun_repeats_a_deterministic_run_and_names_the_file_that_differs() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let s = Server::start(&d.join("data"), &[]);
    let c = reqwest::Client::new();
    let (pem, _) = server_key(&c, &s, d).await;
    let mut results = Vec::new();
    for (name, command) in [
        (
            "steady",
            "echo result > out.txt; mkdir -p sub; echo same > sub/f; echo done",
        ),
        (
            "clock",
            "echo fixed > out.txt; date +%s%N > stamp.txt; echo done",
        ),
    ] {
        let (_, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"name": name, "command": command, "limits": {"pids": 64}})),
        )
        .await;
        let id = v["job_id"].as_str().unwrap().to_owned();
        let j = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
        assert_eq!(j["status"], "completed", "{j}");
        let (_, env) = call(&c, &s, "GET", &format!("/v1/jobs/{id}/receipt"), None, None).await;
        let receipt = d.join(format!("{name}.receipt.json"));
        std::fs::write(&receipt, env.to_string()).unwrap();
        let art = body(&c, &s, &format!("/v1/jobs/{id}/artifact")).await;
        let artifact = d.join(format!("{name}.tar.gz"));
        std::fs::write(&artifact, &art).unwrap();
        let mut args: Vec<String> = [
            "verify",
            artifact.to_str().unwrap(),
            "--rerun",
            receipt.to_str().unwrap(),
            "--key",
            pem.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec();
        if !common::is_root() {
            args.push("--permissive".into());
        }
        results.push(jobpack_async(args).await);
    }
    let (code, out, err) = &results[0];
    assert_eq!(*code, 0, "{out}{err}");
    assert!(out.contains("rerun: the same log and outputs"), "{out}");
    let (code, out, err) = &results[1];
    assert_eq!(*code, 1, "{out}{err}");
    assert!(err.contains("differs: code/stamp.txt"), "{err}");
    assert!(
        !err.contains("out.txt"),
        "only the clock's file differs: {err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_result_cache_answers_an_identical_job_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let c = reqwest::Client::new();
    let run = |body: Value| {
        let (c, s) = (&c, &s);
        async move {
            let (code, v) = call(c, s, "POST", "/v1/jobs", None, Some(&body)).await;
            assert_eq!(code, 201, "{v}");
            let id = v["job_id"].as_str().unwrap().to_owned();
            wait_final(c, s, &format!("/v1/jobs/{id}")).await
        }
    };
    let log = |id: String| {
        let (c, s) = (&c, &s);
        async move {
            c.get(s.u(&format!("/v1/jobs/{id}/logs")))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    // The clock makes a real second run differ: an identical log means it was not run again.
    let body = json!({"command": "date +%s%N; date +%s%N > when.txt", "cache": true,
                      "limits": {"pids": 64}});
    let a = run(body.clone()).await;
    assert!(a["cached_from"].is_null(), "{a}");
    let b = run(body.clone()).await;
    let (aid, bid) = (a["job_id"].as_str().unwrap(), b["job_id"].as_str().unwrap());
    assert_eq!(b["status"], "completed");
    assert_eq!(b["cached_from"], aid, "{b}");
    assert_eq!(log(bid.to_owned()).await, log(aid.to_owned()).await);
    let file = |id: &str| s.u(&format!("/v1/jobs/{id}/files/code/when.txt"));
    let fa = c.get(file(aid)).send().await.unwrap().text().await.unwrap();
    let fb = c.get(file(bid)).send().await.unwrap().text().await.unwrap();
    assert_eq!(fa, fb);
    let (_, ra) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{aid}/receipt"),
        None,
        None,
    )
    .await;
    let (_, rb) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{bid}/receipt"),
        None,
        None,
    )
    .await;
    assert_eq!(ra, rb, "the source's receipt");

    // Any difference is a miss: a limit, the input, no opt-in, secrets.
    for other in [
        json!({"command": "date +%s%N; date +%s%N > when.txt", "cache": true, "limits": {"pids": 65}}),
        json!({"command": "date +%s%N; date +%s%N > when.txt", "cache": true, "limits": {"pids": 64},
               "stdin": "x"}),
        json!({"command": "date +%s%N; date +%s%N > when.txt", "limits": {"pids": 64}}),
        json!({"command": "date +%s%N; date +%s%N > when.txt", "cache": true, "limits": {"pids": 64},
               "secret_env": {"TOKEN": "s3cret"}}),
    ] {
        let j = run(other.clone()).await;
        assert!(j["cached_from"].is_null(), "{other}: {j}");
        let jid = j["job_id"].as_str().unwrap().to_owned();
        assert_ne!(log(jid.clone()).await, log(aid.to_owned()).await);
        if j["artifact_sha256"] == a["artifact_sha256"] {
            // The same artifact run for real: a source from now on, like `a`.
            let (code, _) = call(&c, &s, "DELETE", &format!("/v1/jobs/{jid}"), None, None).await;
            assert_eq!(code, 204);
        }
    }
    // The sources deleted: none is left (a cached copy, `b`, is never one).
    let (code, _) = call(&c, &s, "DELETE", &format!("/v1/jobs/{aid}"), None, None).await;
    assert_eq!(code, 204);
    let d = run(body).await;
    assert!(d["cached_from"].is_null(), "{d}");
}
