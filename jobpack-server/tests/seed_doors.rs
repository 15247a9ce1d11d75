//! The seeds' own calls, sent as their READMEs show them (with `curl`, only host and port
//! changed) to a real `jobpack serve` on 127.0.0.1: the FastAPI job runner's (seed 002) and the
//! job daemon's (seed 000), both at `/jobs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{FINAL, Server};
use serde_json::Value;

/// Runs `curl` with `args` (a seed's command line after `curl`), in `dir`; its stdout.
fn curl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl_status(dir: &Path, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(dir, &all);
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

async fn job(s: &Server, id: &str) -> Value {
    reqwest::get(s.u(&format!("/jobs/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_final(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = job(s, id).await;
        if FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "job {id} did not end: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const MAIN_PY: &str = r#"import os, sys
print("hello from main.py", flush=True)
print("a warning", file=sys.stderr, flush=True)
print("args:", " ".join(sys.argv[1:]), "EXAMPLE=" + os.environ.get("EXAMPLE", ""), flush=True)
with open("result.txt", "w") as f:
    f.write("42\n")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_job_runners_calls_work_as_its_readme_shows() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let host = s.u("");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("examples")).unwrap();
    std::fs::write(dir.join("examples/main.py"), MAIN_PY).unwrap();

    // The README's create request, verbatim.
    let url = format!("{host}/jobs");
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &url,
            "-F",
            r#"spec={"entry":"main.py","timeout_sec":20}"#,
            "-F",
            "code_files=@examples/main.py",
        ],
    );
    let v: Value = serde_json::from_str(&created).unwrap_or_else(|e| panic!("{e}: {created}"));
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(v["job_id"], v["id"]);
    assert_eq!(v["status"], "queued");

    // Tail logs (SSE), verbatim: it ends with `event: end`, stdout and stderr told apart.
    let sse = curl(dir, &["-N", &format!("{host}/jobs/{id}/logs/stream")]);
    assert!(
        sse.contains("event: stdout\ndata: hello from main.py\n"),
        "{sse}"
    );
    assert!(sse.contains("event: stderr\ndata: a warning\n"), "{sse}");
    let end = sse
        .rfind("event: end")
        .unwrap_or_else(|| panic!("no end: {sse}"));
    assert!(sse[end..].contains(r#""status":"completed""#), "{sse}");
    assert!(sse[end..].contains(r#""exit_code":0"#), "{sse}");

    // Status + metadata, the full log, the produced file.
    let v = wait_final(&s, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(v["id"], id.as_str());
    let log = curl(dir, &[&format!("{host}/jobs/{id}/logs")]);
    assert!(
        log.contains("hello from main.py") && log.contains("a warning"),
        "{log}"
    );
    let file = curl(dir, &[&format!("{host}/jobs/{id}/artifacts/result.txt")]);
    assert_eq!(file, "42\n");
    let (st, _) = curl_status(dir, &[&format!("{host}/jobs/{id}/artifacts/nothing.txt")]);
    assert_eq!(st, 404);
    // The /v1 door tells the streams apart too.
    let err = curl(dir, &[&format!("{host}/v1/jobs/{id}/logs?stream=stderr")]);
    assert_eq!(err, "a warning\n");
    let out = curl(dir, &[&format!("{host}/v1/jobs/{id}/logs?stream=stdout")]);
    assert!(out.starts_with("hello from main.py\nargs:"), "{out}");

    // The README's whole JobSpec example: args, runtime, net_policy, env.
    let spec = r#"spec={
  "entry": "main.py",
  "args": ["--foo", "bar"],
  "timeout_sec": 60,
  "runtime": "python3.12",
  "net_policy": "none",
  "env": {"EXAMPLE": "1"}
}"#;
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &url,
            "-F",
            spec,
            "-F",
            "code_files=@examples/main.py",
        ],
    );
    let id2 = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let v = wait_final(&s, &id2).await;
    assert_eq!(v["status"], "completed", "{v}");
    assert_eq!(
        v["request"]["spec"]["base_image"],
        "python:3.12-slim-bookworm"
    );
    let log = curl(dir, &[&format!("{host}/jobs/{id2}/logs")]);
    assert!(log.contains("args: --foo bar EXAMPLE=1"), "{log}");

    // What is refused, and named: an unknown spec field, an unknown part, an entry not uploaded.
    for (args, want) in [
        (
            vec![
                "-F",
                r#"spec={"entry":"main.py","timeout":20}"#,
                "-F",
                "code_files=@examples/main.py",
            ],
            "timeout",
        ),
        (
            vec![
                "-F",
                r#"spec={"entry":"main.py"}"#,
                "-F",
                "sources=@examples/main.py",
            ],
            "sources",
        ),
        (
            vec![
                "-F",
                r#"spec={"entry":"other.py"}"#,
                "-F",
                "code_files=@examples/main.py",
            ],
            "other.py",
        ),
    ] {
        let mut a = vec!["-X", "POST", url.as_str()];
        a.extend(args);
        let (st, body) = curl_status(dir, &a);
        assert_eq!(st, 400, "{body}");
        assert!(body.contains(want), "{want}: {body}");
    }
}

fn tar_gz(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, text, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append_data(&mut h, name, text.as_bytes()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_daemons_workflow_works_upload_status_logs_tarball_cancel_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let host = s.u("");
    let dir = tmp.path();
    // 1. An aggregate file (a tarball) without a spec: its run.sh is the job.
    let run = "echo building\nmkdir -p out && echo result > out/answer.txt\necho done >&2\n";
    std::fs::write(dir.join("job.tar.gz"), tar_gz(&[("run.sh", run, 0o755)])).unwrap();
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "file=@job.tar.gz",
        ],
    );
    let id =
        serde_json::from_str::<Value>(&created).unwrap_or_else(|e| panic!("{e}: {created}"))["id"]
            .as_str()
            .unwrap()
            .to_owned();
    // 3. Status and logs.
    let v = wait_final(&s, &id).await;
    assert_eq!(v["status"], "completed", "{v}");
    let st: Value =
        serde_json::from_str(&curl(dir, &[&format!("{host}/jobs/{id}/status")])).unwrap();
    assert_eq!(
        (st["id"].as_str(), st["status"].as_str()),
        (Some(id.as_str()), Some("completed"))
    );
    let log = curl(dir, &[&format!("{host}/jobs/{id}/logs")]);
    assert!(log.contains("building") && log.contains("done"), "{log}");
    // 5. The working directory as a tarball.
    curl(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs/{id}/tarball"),
            "-o",
            "out.tar.gz",
        ],
    );
    let bytes = std::fs::read(dir.join("out.tar.gz")).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let names: Vec<String> = ar
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("code/out/answer.txt")),
        "{names:?}"
    );

    // A set of files (files=, twice), one of them run.sh: a long job, listed, then cancelled.
    std::fs::write(dir.join("run.sh"), "echo started; sleep 60\n").unwrap();
    std::fs::write(dir.join("input.txt"), "x\n").unwrap();
    let created = curl(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "files=@run.sh",
            "-F",
            "files=@input.txt",
        ],
    );
    let long = serde_json::from_str::<Value>(&created).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    while job(&s, &long).await["status"] != "running" {
        assert!(Instant::now() < deadline, "{}", job(&s, &long).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list: Value = serde_json::from_str(&curl(dir, &[&format!("{host}/jobs")])).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && ids.contains(&long.as_str()),
        "{list}"
    );
    // 4. Cancel, then delete.
    let c: Value = serde_json::from_str(&curl(
        dir,
        &["-X", "POST", &format!("{host}/jobs/{long}/cancel")],
    ))
    .unwrap();
    assert_eq!(c["status"], "stopping");
    assert_eq!(wait_final(&s, &long).await["status"], "stopped");
    let (st, _) = curl_status(dir, &["-X", "POST", &format!("{host}/jobs/{long}/cancel")]);
    assert_eq!(st, 409);
    let d: Value = serde_json::from_str(&curl(
        dir,
        &["-X", "DELETE", &format!("{host}/jobs/{long}")],
    ))
    .unwrap();
    assert_eq!(d["status"], "deleted");
    let (st, _) = curl_status(dir, &[&format!("{host}/jobs/{long}")]);
    assert_eq!(st, 404);

    // Files without a spec or a run.sh are refused, and nothing is kept.
    let (st, body) = curl_status(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "files=@input.txt",
        ],
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("run.sh"), "{body}");
    let list: Value = serde_json::from_str(&curl(dir, &[&format!("{host}/jobs")])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Attacks: an entry that is a link out of the upload, and a huge jobpack.yaml.
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, "main.py", "/etc/passwd").unwrap();
    std::fs::write(
        dir.join("link.tar.gz"),
        b.into_inner().unwrap().finish().unwrap(),
    )
    .unwrap();
    let (st, body) = curl_status(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            r#"spec={"entry":"main.py"}"#,
            "-F",
            "archive=@link.tar.gz",
        ],
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("main.py"), "{body}");
    let big = "# padding\n".repeat(200_000);
    std::fs::write(
        dir.join("big.tar.gz"),
        tar_gz(&[("jobpack.yaml", &big, 0o644), ("run.sh", "true\n", 0o755)]),
    )
    .unwrap();
    let (st, body) = curl_status(
        dir,
        &[
            "-X",
            "POST",
            &format!("{host}/jobs"),
            "-F",
            "file=@big.tar.gz",
        ],
    );
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("at most"), "{body}");
    let list: Value = serde_json::from_str(&curl(dir, &[&format!("{host}/jobs")])).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "refused uploads leave no job: {list}"
    );
}

const ADMIN: &str = "jp_test-admin-token-0123456789abcdef";

/// `curl` with a JSON body and a bearer token; the status and the JSON answer.
fn curl_json(dir: &Path, method: &str, url: &str, token: &str, body: &str) -> (u16, Value) {
    let auth = format!("Authorization: Bearer {token}");
    let mut args = vec!["-X", method, url, "-H", &auth];
    if !body.is_empty() {
        args.extend(["-H", "Content-Type: application/json", "-d", body]);
    }
    let (st, text) = curl_status(dir, &args);
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_job_runners_password_grant_jobs_batches_stats_and_users() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let shared = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = std::fs::canonicalize(shared.path()).unwrap();
    let project = root.join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("Makefile"),
        "all:\n\techo built in $$(pwd) BUILD_MODE=$$BUILD_MODE\n",
    )
    .unwrap();
    let allowed = root.display().to_string();
    let s = Server::launch(
        &dir.join("data"),
        common::Launch {
            args: &[],
            env: &[
                ("JOBPACK_ADMIN_TOKEN", ADMIN),
                ("ALLOWED_WORKDIRS", &allowed),
            ],
            capture_stderr: false,
        },
    );
    let api = s.u("/api/v1");
    let (st, h) = curl_status(dir, &[&format!("{api}/health")]);
    assert_eq!(st, 200, "{h}");

    // Users are admin-only; the seed's shape: email, password, role.
    let (st, v) = curl_json(
        dir,
        "POST",
        &format!("{api}/users"),
        ADMIN,
        r#"{"email": "admin@example.com", "password": "correct horse battery", "role": "admin"}"#,
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        (v["email"].as_str(), v["role"].as_str()),
        (Some("admin@example.com"), Some("admin"))
    );
    let (st, _) = curl_json(
        dir,
        "POST",
        &format!("{api}/users"),
        ADMIN,
        r#"{"email": "dev@example.com", "password": "another good one", "role": "user"}"#,
    );
    assert_eq!(st, 201);

    // The OAuth2 password grant.
    let grant = |user: &str, pass: &str| {
        curl_status(
            dir,
            &[
                "-X",
                "POST",
                &format!("{api}/auth/token"),
                "-d",
                &format!("username={user}"),
                "-d",
                &format!("password={pass}"),
                "-d",
                "grant_type=password",
            ],
        )
    };
    let (st, body) = grant("admin@example.com", "correct horse battery");
    assert_eq!(st, 200, "{body}");
    let t: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["token_type"], "bearer");
    assert_eq!(t["expires_in"], 3600);
    let token = t["access_token"].as_str().unwrap().to_owned();
    let (_, dev) = grant("dev@example.com", "another good one");
    let dev_token = serde_json::from_str::<Value>(&dev).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    // The JWT works on every door.
    let (st, me) = curl_json(dir, "GET", &s.u("/v1/me"), &token, "");
    assert_eq!(
        (st, me["user"].as_str()),
        (200, Some("admin@example.com")),
        "{me}"
    );
    let (st, _) = curl_json(dir, "GET", &format!("{api}/users"), &dev_token, "");
    assert_eq!(st, 403, "a submitter may not list users");

    // The README's job body verbatim: its working_dir is not allowed here, so 403 ...
    let body = r#"{
	"name": "linux-build",
	"command": ["make", "-f", "Makefile", "all"],
	"working_dir": "/workspace/project",
	"env": {"BUILD_MODE": "release"},
	"payload": {"note": "nightly regression"}
}"#;
    let (st, v) = curl_json(dir, "POST", &format!("{api}/jobs"), &token, body);
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["code"], "working_dir_forbidden");
    // ... and with a directory inside the allowed one it runs there.
    let body = body.replace("/workspace/project", &project.display().to_string());
    let (st, v) = curl_json(dir, "POST", &format!("{api}/jobs"), &token, &body);
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    assert_eq!(
        v["payload"],
        serde_json::json!({"note": "nightly regression"})
    );
    assert_eq!(
        v["command"],
        serde_json::json!(["make", "-f", "Makefile", "all"])
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let (_, j) = curl_json(dir, "GET", &format!("{api}/jobs/{id}"), &token, "");
        if j["state"] != "waiting" && j["state"] != "running" {
            break j;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (done["state"].as_str(), done["result"]["exit_code"].as_i64()),
        (Some("passed"), Some(0)),
        "{done}"
    );
    let (_, logs) = curl_json(dir, "GET", &format!("{api}/jobs/{id}/logs"), &token, "");
    let built = format!("built in {} BUILD_MODE=release", project.display());
    assert!(logs["stdout"].as_str().unwrap().contains(&built), "{logs}");

    // The README's batch body verbatim; its counters in the seed's words; the batch_id filter.
    let batch = r#"{
	"name": "nightly-ui-suite",
	"description": "500 chromium tests",
	"jobs": [
		{"name": "test-1", "command": ["pytest", "tests/test_1.py"]},
		{"name": "test-2", "command": ["pytest", "tests/test_2.py"]}
	]
}"#;
    let (st, b) = curl_json(
        dir,
        "POST",
        &format!("{api}/job-batches"),
        &dev_token,
        batch,
    );
    assert_eq!(st, 201, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["total"].as_u64()),
        (Some("nightly-ui-suite"), Some(2))
    );
    let bid = b["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    let b = loop {
        let (_, b) = curl_json(
            dir,
            "GET",
            &format!("{api}/job-batches/{bid}"),
            &dev_token,
            "",
        );
        if b["failed"].as_u64().unwrap() + b["passed"].as_u64().unwrap() == 2 {
            break b;
        }
        assert!(Instant::now() < deadline, "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        (b["waiting"].as_u64(), b["running"].as_u64()),
        (Some(0), Some(0)),
        "{b}"
    );
    let (_, jobs) = curl_json(
        dir,
        "GET",
        &format!("{api}/jobs?batch_id={bid}"),
        &dev_token,
        "",
    );
    let names: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{jobs}");
    assert!(names.contains(&"test-1") && names.contains(&"test-2"));
    let (_, members) = curl_json(
        dir,
        "GET",
        &format!("{api}/job-batches/{bid}/jobs"),
        &dev_token,
        "",
    );
    assert_eq!(members.as_array().unwrap().len(), 2);

    // Per-user aggregates: a submitter sees their own, an admin every user's.
    let (_, mine) = curl_json(dir, "GET", &format!("{api}/jobs/stats"), &dev_token, "");
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(
        (mine[0]["user"].as_str(), mine[0]["total"].as_u64()),
        (Some("dev@example.com"), Some(2))
    );
    let (_, all) = curl_json(dir, "GET", &format!("{api}/jobs/stats"), &token, "");
    assert!(all.as_array().unwrap().len() >= 2, "{all}");

    // Wrong passwords: 401, then throttled; a disabled user's session stops at once.
    let (st, _) = grant("dev@example.com", "wrong password!");
    assert_eq!(st, 401);
    for _ in 0..5 {
        grant("dev@example.com", "wrong password!");
    }
    let (st, body) = grant("dev@example.com", "another good one");
    assert_eq!(st, 429, "{body}");
    let (st, _) = curl_json(
        dir,
        "POST",
        &s.u("/v1/users/dev@example.com/disable"),
        ADMIN,
        "",
    );
    assert_eq!(st, 200);
    let (st, _) = curl_json(dir, "GET", &format!("{api}/jobs"), &dev_token, "");
    assert_eq!(st, 401);

    // `jobpack admin`: a user with a password (one line of stdin), and key rotation: a session
    // survives one rotation, not two.
    let data = dir.join("data");
    let admin = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut c = Command::new(env!("CARGO_BIN_EXE_jobpack"))
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(&data)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    admin(
        &[
            "user",
            "add",
            "ops@example.com",
            "--role",
            "viewer",
            "--password",
        ],
        "ops password 1\n",
    );
    let (st, body) = grant("ops@example.com", "ops password 1");
    assert_eq!(st, 200, "{body}");
    admin(&["user", "passwd", "ops@example.com"], "ops password 2\n");
    assert_eq!(grant("ops@example.com", "ops password 1").0, 401);
    assert_eq!(grant("ops@example.com", "ops password 2").0, 200);
    admin(&["jwt", "rotate"], "");
    let (st, _) = curl_json(dir, "GET", &format!("{api}/jobs"), &token, "");
    assert_eq!(st, 200, "one rotation: the session stays valid");
    admin(&["jwt", "rotate"], "");
    let (st, _) = curl_json(dir, "GET", &format!("{api}/jobs"), &token, "");
    assert_eq!(st, 401, "two rotations: its key is gone");
    // jobpack's additions on this door: a retry policy, and callbacks under the destination
    // policy (loopback refused here).
    let (st, v) = curl_json(
        dir,
        "POST",
        &format!("{api}/jobs"),
        ADMIN,
        r#"{"command": ["sh", "-c", "test $JOBPACK_ATTEMPT -ge 2"],
            "retry": {"max_attempts": 2, "backoff_secs": 0.1}}"#,
    );
    assert_eq!(st, 201, "{v}");
    let rid = v["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, j) = curl_json(dir, "GET", &format!("{api}/jobs/{rid}"), ADMIN, "");
        if j["state"] == "passed" {
            break;
        }
        assert!(Instant::now() < deadline, "{j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, a) = curl_json(
        dir,
        "GET",
        &s.u(&format!("/v1/jobs/{rid}/attempts")),
        ADMIN,
        "",
    );
    assert_eq!(a["attempts"].as_array().map(Vec::len), Some(2), "{a}");
    for (path, body) in [
        (
            "jobs",
            r#"{"command": ["true"], "callback_url": "http://127.0.0.1:9/"}"#,
        ),
        (
            "job-batches",
            r#"{"jobs": [{"command": ["true"]}], "callback_url": "http://127.0.0.1:9/"}"#,
        ),
    ] {
        let (st, v) = curl_json(dir, "POST", &format!("{api}/{path}"), ADMIN, body);
        assert_eq!(st, 403, "{path}: {v}");
    }
}
