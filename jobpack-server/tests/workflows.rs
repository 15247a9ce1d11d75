//! Workflows over real HTTP against the real server: jobs start when what they require has ended
//! as required, see its outputs at `deps/<name>/`, are skipped when it cannot be, are checked
//! whole before anything runs, stop and skip on cancel, and resume after a restart.

mod common;

use std::time::{Duration, Instant};

use common::{Server, is_root};
use serde_json::Value;

async fn submit(s: &Server, yaml: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.u("/v1/workflows"))
        .header("content-type", "application/yaml")
        .body(yaml.to_owned())
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    (st, r.json().await.unwrap())
}

async fn get(s: &Server, path: &str) -> Value {
    let (st, v) = common::call(&reqwest::Client::new(), s, "GET", path, None, None).await;
    assert_eq!(st, 200, "{path}: {v}");
    v
}

async fn post(s: &Server, path: &str) -> (u16, Value) {
    common::call(&reqwest::Client::new(), s, "POST", path, None, None).await
}

async fn started(s: &Server, yaml: &str) -> String {
    let (st, w) = submit(s, yaml).await;
    assert_eq!(st, 201, "{w}");
    w["workflow_id"].as_str().unwrap().to_owned()
}

/// Polls the workflow until `done` holds (at most two minutes).
async fn wait_for(s: &Server, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let w = get(s, &format!("/v1/workflows/{id}")).await;
        if done(&w) {
            return w;
        }
        assert!(Instant::now() < deadline, "never {what}: {w:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ended(s: &Server, id: &str) -> Value {
    wait_for(s, id, "ended", |w| {
        !matches!(w["status"].as_str(), Some("queued" | "running"))
    })
    .await
}

fn job<'a>(w: &'a Value, name: &str) -> &'a Value {
    w["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name} in {w:#}"))
}

fn job_status(w: &Value, name: &str) -> String {
    job(w, name)["status"].as_str().unwrap().to_owned()
}

async fn log(s: &Server, w: &Value, name: &str) -> String {
    let id = job(w, name)["job_id"].as_str().unwrap();
    reqwest::get(s.u(&format!("/v1/jobs/{id}/logs")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const DIAMOND: &str = r#"
name: diamond
jobs:
  report:
    command: "cat deps/left/out.txt deps/right/out.txt"
    requires: [left, {right: completed}]
  left:
    command: "cat deps/setup/seed.txt > out.txt && echo L >> out.txt && echo $(date +%s%N) > t"
    requires: [setup]
  right:
    command: "cat deps/setup/seed.txt > out.txt && echo R >> out.txt; if touch deps/setup/x 2>/dev/null; then echo WROTE; fi"
    requires: [{setup: completed}]
  setup:
    command: "echo seed > seed.txt"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_diamond_runs_in_order_and_passes_outputs_along() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-concurrent", "4"]);
    let (st, w) = submit(&s, DIAMOND).await;
    assert_eq!(st, 201, "{w}");
    assert_eq!(w["name"], "diamond");
    // The file's order, each with its dependencies; only `setup` may start at once.
    let names: Vec<&str> = w["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["report", "left", "right", "setup"]);
    for n in ["report", "left", "right"] {
        assert_eq!(job_status(&w, n), "waiting", "{w:#}");
    }
    let deps = &job(&w, "report")["dependencies"];
    assert_eq!(deps[0]["job"], "left");
    assert_eq!(deps[0]["status"], "completed");
    assert_eq!(deps[0]["job_id"], job(&w, "left")["job_id"]);
    assert_eq!(deps[1]["job"], "right");

    let id = w["workflow_id"].as_str().unwrap().to_owned();
    let w = ended(&s, &id).await;
    assert_eq!(w["status"], "completed", "{w:#}");
    assert!(w["finished_at"].is_string(), "{w}");
    for j in w["jobs"].as_array().unwrap() {
        assert_eq!(j["exit_code"], 0, "{j}");
    }
    // Each job started after everything it requires had finished (RFC 3339 UTC, same length).
    for j in w["jobs"].as_array().unwrap() {
        for d in j["dependencies"].as_array().unwrap() {
            let dep = job(&w, d["job"].as_str().unwrap());
            assert!(
                j["started_at"].as_str().unwrap() >= dep["finished_at"].as_str().unwrap(),
                "{} started before {} finished: {w:#}",
                j["name"],
                dep["name"]
            );
        }
    }
    assert_eq!(log(&s, &w, "report").await, "seed\nL\nseed\nR\n");
    if is_root() {
        assert_eq!(
            log(&s, &w, "right").await,
            "",
            "deps/ must be read-only in the sandbox"
        );
    } else {
        println!("note: not root, so deps/ are links and not read-only (checked in CI as root)");
    }
    // The jobs are jobs like any other: listed by workflow, with their workflow id.
    let l = get(&s, &format!("/v1/jobs?workflow_id={id}")).await;
    assert_eq!(l["total"], 4);
    assert!(
        l["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["workflow_id"] == id.as_str())
    );
    let l = get(&s, "/v1/workflows").await;
    assert_eq!(l["workflows"][0]["workflow_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_requirement_skips_its_dependants_and_the_rest_still_run() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-concurrent", "4"]);
    let id = started(
        &s,
        r#"
jobs:
  broken: {command: "echo partial > part.txt; exit 3"}
  needs-broken: {command: "echo must-not-run", requires: [broken]}
  needs-that: {command: "echo must-not-run", requires: [needs-broken]}
  cleanup-after-skip: {command: "echo cleaned", requires: [{needs-broken: ended}]}
  on-failure: {command: "cat deps/broken/part.txt", requires: [{broken: failed}]}
  always: {command: "echo always", requires: [{broken: ended}]}
  unrelated: {command: "echo unrelated"}
"#,
    )
    .await;
    let w = ended(&s, &id).await;
    assert_eq!(w["status"], "failed", "{w:#}");
    let broken = job(&w, "broken");
    assert_eq!(
        (broken["status"].as_str(), broken["exit_code"].as_i64()),
        (Some("failed"), Some(3))
    );
    for n in ["needs-broken", "needs-that"] {
        let j = job(&w, n);
        assert_eq!(j["status"], "skipped", "{w:#}");
        assert!(j["exit_code"].is_null() && j["started_at"].is_null(), "{j}");
        assert_eq!(log(&s, &w, n).await, "", "{n} ran");
    }
    assert_eq!(
        job(&w, "needs-broken")["reason"],
        "required broken to be completed, but it ended failed"
    );
    assert_eq!(
        job(&w, "needs-that")["reason"],
        "required needs-broken to be completed, but it ended skipped"
    );
    for n in ["cleanup-after-skip", "on-failure", "always", "unrelated"] {
        assert_eq!(job_status(&w, n), "completed", "{n}: {w:#}");
    }
    assert_eq!(log(&s, &w, "on-failure").await, "partial\n");
    // A skipped job is reported as such by the job API too.
    let skipped = job(&w, "needs-broken")["job_id"].as_str().unwrap();
    let j = get(&s, &format!("/v1/jobs/{skipped}")).await;
    assert_eq!(
        (j["status"].as_str(), j["error_code"].as_str()),
        (Some("skipped"), Some("requirement_unmet"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_workflows_are_refused_before_any_job_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let cases: &[(&str, &[&str])] = &[
        (
            "jobs:\n  a: {command: x, requires: [c]}\n  b: {command: x, requires: [a]}\n  c: {command: x, requires: [b]}\n  d: {command: x}\n",
            &["jobs.a.requires: a cycle: a -> c -> b -> a"],
        ),
        (
            "jobs:\n  a: {command: x}\n  b: {command: x, requires: [a, nope]}\n",
            &["jobs.b.requires[1]: unknown job \"nope\""],
        ),
        (
            "jobs:\n  a: {command: x, requires: [{b: finished}]}\n  b: {command: x}\n",
            &["jobs.a.requires[0]: unknown status \"finished\""],
        ),
        (
            "jobs:\n  ok: {command: x}\n  bad: {git_url: 'ftp://example.com/r', commit_hash: abcdef1, command: x}\n  \
             limits: {command: x, limits: {timeout: -1}}\n  pack: {command: x, run: false}\n  \
             named: {command: x, name: other}\n",
            &[
                "jobs.bad: ",
                "git_url",
                "jobs.limits: limits:",
                "jobs.pack.run:",
                "jobs.named.name:",
            ],
        ),
        ("jobs: {}\n", &["jobs: expected a non-empty mapping"]),
        ("not: [valid\n", &["(file): not YAML or JSON"]),
    ];
    for (yaml, expected) in cases {
        let (st, v) = submit(&s, yaml).await;
        assert_eq!(st, 400, "{yaml}: {v}");
        let msg = v["message"].as_str().unwrap();
        for e in *expected {
            assert!(msg.contains(e), "{e:?} not in {msg:?}");
        }
        if !yaml.contains("not: [") {
            assert_eq!(v["code"], "invalid_workflow", "{v}");
        }
    }
    // Nothing was stored, nothing ran.
    assert_eq!(get(&s, "/v1/jobs").await["total"], 0);
    assert_eq!(
        get(&s, "/v1/workflows").await["workflows"],
        serde_json::json!([])
    );
    // JSON is a workflow file too.
    let (st, w) = submit(
        &s,
        r#"{"jobs": {"b": {"command": "true", "requires": ["a"]}, "a": {"command": "true"}}}"#,
    )
    .await;
    assert_eq!(st, 201, "{w}");
    let w = ended(&s, w["workflow_id"].as_str().unwrap()).await;
    assert_eq!(w["status"], "completed", "{w:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_workflow_stops_running_jobs_and_skips_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-concurrent", "4"]);
    let id = started(
        &s,
        r#"
jobs:
  long: {command: "sleep 300"}
  also-long: {command: "sleep 300"}
  next: {command: "echo no", requires: [long]}
  then: {command: "echo no", requires: [{next: ended}]}
  waiting-cancelled: {command: "echo no", requires: [also-long]}
  after-that: {command: "echo no", requires: [waiting-cancelled]}
"#,
    )
    .await;
    let w = wait_for(&s, &id, "running both", |w| {
        job_status(w, "long") == "running" && job_status(w, "also-long") == "running"
    })
    .await;
    assert_eq!(w["status"], "running");

    // One waiting job cancelled alone: stopped, and what requires it is skipped.
    let one = job(&w, "waiting-cancelled")["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, v) = post(&s, &format!("/v1/jobs/{one}/cancel")).await;
    assert_eq!(st, 202, "{v}");
    let w = wait_for(&s, &id, "after-that skipped", |w| {
        job_status(w, "after-that") == "skipped"
    })
    .await;
    assert_eq!(job_status(&w, "waiting-cancelled"), "stopped");
    assert_eq!(job_status(&w, "long"), "running", "the rest goes on");

    let (st, v) = post(&s, &format!("/v1/workflows/{id}/cancel")).await;
    assert_eq!(st, 202, "{v}");
    assert!(v["cancelled_at"].is_string(), "{v}");
    let t0 = Instant::now();
    let w = ended(&s, &id).await;
    println!("workflow stopped {:?} after cancel", t0.elapsed());
    assert_eq!(w["status"], "stopped", "{w:#}");
    assert_eq!(job_status(&w, "long"), "stopped");
    assert_eq!(job_status(&w, "also-long"), "stopped");
    for n in ["next", "then"] {
        let j = job(&w, n);
        assert_eq!(j["status"], "skipped", "{w:#}");
        assert_eq!(j["reason"], "the workflow was cancelled");
    }
    // Cancelling again changes nothing.
    let (st, _) = post(&s, &format!("/v1/workflows/{id}/cancel")).await;
    assert_eq!(st, 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_workflow_resumes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, &["--max-concurrent", "2"]);
    let id = started(
        &s,
        r#"
name: resumable
jobs:
  early: {command: "echo early > early.txt"}
  slow:
    command: "sleep 2.5 && cat deps/early/early.txt > slow.txt && echo slow >> slow.txt"
    requires: [early]
  last: {command: "cat deps/slow/slow.txt", requires: [slow]}
"#,
    )
    .await;
    let w = wait_for(&s, &id, "slow running", |w| {
        job_status(w, "slow") == "running"
    })
    .await;
    let early_started = job(&w, "early")["started_at"].clone();

    // A crash: the running job's process dies with the server.
    s.kill();
    let s = Server::start(&data, &["--max-concurrent", "2"]);
    let w = wait_for(&s, &id, "slow running again", |w| {
        job_status(w, "slow") == "running"
    })
    .await;
    assert_eq!(job_status(&w, "last"), "waiting");

    // A clean shutdown (SIGTERM) mid-run: the job is stopped, and runs again at the next start.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let mut s = s;
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    drop(s);
    let s = Server::start(&data, &["--max-concurrent", "2"]);
    let w = ended(&s, &id).await;
    assert_eq!(w["status"], "completed", "{w:#}");
    assert_eq!(
        job(&w, "early")["started_at"],
        early_started,
        "a job that had completed is not run again"
    );
    assert_eq!(log(&s, &w, "last").await, "early\nslow\n");
}

#[test]
fn the_cli_runs_a_workflow_and_shows_its_table() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--max-concurrent", "4"]);
    let file = tmp.path().join("wf.yaml");
    std::fs::write(&file, DIAMOND).unwrap();
    let env = [("JOBPACK_SERVER", s.url.as_str())];
    let f = file.to_str().unwrap();
    let (code, out, err) =
        common::jobpack_in(tmp.path(), &["workflow", "run", f, "--follow"], &env);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("setup: completed (exit 0)"), "{err}");
    let header = out.lines().nth(1).unwrap_or_default();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["JOB", "ID", "NAME", "STATUS", "EXIT", "DEPENDENCIES"],
        "{out}"
    );
    let report = out.lines().find(|l| l.contains(" report ")).unwrap();
    let cells: Vec<&str> = report.split_whitespace().collect();
    assert_eq!(
        cells[1..],
        ["report", "completed", "0", "left:completed,right:completed"],
        "{out}"
    );

    // status by a prefix of the id, and the same table.
    let id = out
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let (code, st, err) = common::jobpack_in(tmp.path(), &["workflow", "status", &id[..8]], &env);
    assert_eq!(code, 0, "{err}");
    assert!(
        st.starts_with(&format!("workflow {id} diamond completed\n")),
        "{st}"
    );
    assert!(st.contains(report), "{st}");
    let (code, l, _) = common::jobpack_in(tmp.path(), &["workflow", "list"], &env);
    assert_eq!(code, 0);
    assert!(l.contains(&id[..8]) && l.contains("diamond"), "{l}");

    // An invalid file: exit 2 with the problem's path, nothing started.
    std::fs::write(&file, "jobs:\n  a: {command: x, requires: [b]}\n").unwrap();
    let (code, _, err) = common::jobpack_in(tmp.path(), &["workflow", "run", f], &env);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("jobs.a.requires[0]: unknown job \"b\""),
        "{err}"
    );

    // A failing workflow exits non-zero with --follow.
    std::fs::write(
        &file,
        "jobs:\n  a: {command: 'exit 4'}\n  b: {command: x, requires: [a]}\n",
    )
    .unwrap();
    let (code, out, err) = common::jobpack_in(tmp.path(), &["workflow", "run", f, "-f"], &env);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("b: skipped: required a to be completed, but it ended failed"),
        "{err}"
    );
}
