//! Webhooks through a real server and a real receiver on 127.0.0.1 that checks signatures with
//! its own code (Python's `standardwebhooks`, the Standard Webhooks project's library, from
//! PyPI into .venv by `scripts/setup.sh --tests`): once per event, retries with growing gaps,
//! durable across a restart, a batch's end, redelivery, and the destination policy.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, call, wait_final};
use serde_json::{Value, json};

/// The receiver process, stopped on drop (a panic included).
struct Receiver {
    child: Child,
    port: u16,
    secrets: PathBuf,
    log: PathBuf,
}

impl Receiver {
    fn start(py: &Path, dir: &Path, port: u16) -> Receiver {
        let (secrets, log) = (dir.join("secrets.txt"), dir.join("received.jsonl"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let mut child = Command::new(py)
            .arg(script)
            .arg(port.to_string())
            .arg(&secrets)
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Receiver {
            child,
            port,
            secrets,
            log,
        }
    }

    fn trust(&self, secret: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.secrets)
            .unwrap();
        writeln!(f, "{secret}").unwrap();
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self, path: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["path"] == path)
            .collect()
    }

    /// Waits until `path` got `n` requests, then a little longer, and returns them all.
    fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.received(path).len() < n {
            assert!(
                Instant::now() < deadline,
                "{path}: {:?}",
                self.received(path)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // Nothing more should come.
        std::thread::sleep(Duration::from_millis(1500));
        self.received(path)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn deliveries(c: &reqwest::Client, s: &Server, hook: &str) -> Vec<Value> {
    let (code, v) = call(
        c,
        s,
        "GET",
        &format!("/v1/webhooks/{hook}/deliveries"),
        None,
        None,
    )
    .await;
    assert_eq!(code, 200, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

const ALLOW: &[&str] = &[
    "--allow-webhooks-to",
    "127.0.0.1/32",
    "--webhook-backoff",
    "500ms",
    "--webhook-timeout",
    "2s",
];

#[tokio::test(flavor = "multi_thread")]
async fn signed_deliveries_arrive_once_retry_with_growing_gaps_and_follow_batches() {
    let Some(py) = common::venv_python("standardwebhooks") else {
        println!("SKIPPED: .venv has no standardwebhooks (scripts/setup.sh --tests installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&py, tmp.path(), free_port());
    let s = Server::start(&tmp.path().join("data"), ALLOW);
    let c = reqwest::Client::new();

    // A standing webhook, with an extra header for the receiver's own auth.
    let (code, hook) = call(
        &c,
        &s,
        "POST",
        "/v1/webhooks",
        None,
        Some(&json!({"url": rx.url("/ok"), "events": ["job.finished"],
                     "headers": {"X-Receiver-Token": "let-me-in"}})),
    )
    .await;
    assert_eq!(code, 201, "{hook}");
    let secret = hook["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"));
    rx.trust(secret);
    let hook_id = hook["webhook_id"].as_str().unwrap().to_owned();
    let (_, shown) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/webhooks/{hook_id}"),
        None,
        None,
    )
    .await;
    assert!(
        shown.get("secret").is_none(),
        "the secret is shown once: {shown}"
    );

    // A job with a callback to a receiver that fails twice.
    let (code, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "echo hi", "callback_url": rx.url("/flaky")})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    let callback = &v["webhooks"][0];
    rx.trust(callback["secret"].as_str().unwrap());
    let done = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;

    let ok = rx.wait_for("/ok", 1);
    assert_eq!(ok.len(), 1, "{ok:?}");
    let r = &ok[0];
    assert_eq!(r["verified"], true, "{r}");
    assert_eq!(r["extra"], "let-me-in");
    assert_eq!(r["body"]["type"], "job.finished");
    assert_eq!(r["body"]["data"]["job_id"], id.as_str());
    assert_eq!(r["body"]["data"]["status"], "completed");
    assert_eq!(r["body"]["data"]["finished_at"], done["finished_at"]);

    let flaky = rx.wait_for("/flaky", 3);
    assert_eq!(flaky.len(), 3, "{flaky:?}");
    assert!(
        flaky
            .iter()
            .all(|r| r["verified"] == true && r["id"] == flaky[0]["id"])
    );
    let t: Vec<f64> = flaky.iter().map(|r| r["time"].as_f64().unwrap()).collect();
    assert!(t[2] - t[1] > t[1] - t[0], "gaps must grow: {t:?}");
    let d = deliveries(&c, &s, callback["webhook_id"].as_str().unwrap()).await;
    assert_eq!(
        (
            &d[0]["status"],
            &d[0]["attempts"],
            &d[0]["last_response_code"]
        ),
        (&json!("delivered"), &json!(3), &json!(200)),
        "{d:?}"
    );

    // Redelivery on request: the same webhook-id again.
    let d = deliveries(&c, &s, &hook_id).await;
    assert_eq!(
        (d.len(), &d[0]["status"]),
        (1, &json!("delivered")),
        "{d:?}"
    );
    let did = d[0]["delivery_id"].as_str().unwrap();
    let r = c
        .post(s.u(&format!(
            "/v1/webhooks/{hook_id}/deliveries/{did}/redeliver"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let ok = rx.wait_for("/ok", 2);
    assert_eq!(ok.len(), 2);
    assert_eq!(ok[1]["id"], ok[0]["id"]);

    // A batch's end: once, when its last job ends.
    let (code, bh) = call(
        &c,
        &s,
        "POST",
        "/v1/webhooks",
        None,
        Some(
            &json!({"url": rx.url("/batch"), "events": ["batch.finished"],
                     "secret_ref": hook_id}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{bh}");
    assert_eq!(
        bh["secret"], secret,
        "secret_ref signs with the same secret"
    );
    let (code, b) = call(
        &c,
        &s,
        "POST",
        "/v1/batches",
        None,
        Some(
            &json!({"jobs": [{"command": "sleep 0.3"}, {"command": "sleep 1"}],
                     "callback_url": rx.url("/batch-callback")}),
        ),
    )
    .await;
    assert_eq!(code, 201, "{b}");
    rx.trust(b["webhooks"][0]["secret"].as_str().unwrap());
    let bid = b["batch_id"].as_str().unwrap();
    wait_final(&c, &s, &format!("/v1/batches/{bid}")).await;
    let got = rx.wait_for("/batch", 1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"]["type"], "batch.finished");
    assert_eq!(got[0]["body"]["data"]["batch_id"], bid);
    assert_eq!(got[0]["verified"], true);
    let got = rx.wait_for("/batch-callback", 1);
    assert_eq!(
        (got.len(), &got[0]["verified"]),
        (1, &json!(true)),
        "{got:?}"
    );

    // A workflow file's own webhooks, signed with a standing webhook's secret.
    let file = format!(
        "name: wf\nwebhooks:\n  - url: {}\n    events: [workflow.finished]\n    secret_ref: {hook_id}\n\
         jobs:\n  a:\n    command: \"true\"\n  b:\n    command: \"true\"\n    requires:\n      - a: COMPLETED\n",
        rx.url("/workflow")
    );
    let r = c
        .post(s.u("/v1/workflows"))
        .header("content-type", "application/yaml")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let wid = r.json::<Value>().await.unwrap()["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = rx.wait_for("/workflow", 1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["verified"], true);
    assert_eq!(got[0]["body"]["type"], "workflow.finished");
    assert_eq!(got[0]["body"]["data"]["workflow_id"], wid.as_str());
    assert_eq!(got[0]["body"]["data"]["status"], "completed");
}

/// How many events the outbox (`job_events`) has ever been given: its AUTOINCREMENT counter.
fn events_ever(data: &std::path::Path) -> i64 {
    let db = rusqlite::Connection::open(data.join("jobpack.db")).unwrap();
    db.query_row(
        "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'job_events'), 0)",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// With no webhook at all, a job's start and end are not written to the outbox (nothing would
/// read them but to delete them); once one exists, they are, for every job.
#[tokio::test(flavor = "multi_thread")]
async fn the_outbox_holds_events_only_while_a_webhook_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = Server::start(&data, ALLOW);
    let c = reqwest::Client::new();
    let (_, job) = common::run_job(&c, &s, &json!({"command": "true"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(events_ever(&data), 0);

    let body = json!({"url": format!("http://127.0.0.1:{}/none", free_port()),
                      "events": ["job.finished"]});
    let (code, hook) = call(&c, &s, "POST", "/v1/webhooks", None, Some(&body)).await;
    assert_eq!(code, 201, "{hook}");
    // Which webhooks want an event is decided when it is sent, as before.
    let (_, job) = common::run_job(&c, &s, &json!({"command": "true"})).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(events_ever(&data), 2, "job.started and job.finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delivery_waits_out_a_receiver_down_across_a_server_restart() {
    let Some(py) = common::venv_python("standardwebhooks") else {
        println!("SKIPPED: .venv has no standardwebhooks (scripts/setup.sh --tests installs it)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let port = free_port();
    let c = reqwest::Client::new();
    let s = Server::start(&data, ALLOW);
    let url = format!("http://127.0.0.1:{port}/ok");
    let (_, hook) = call(
        &c,
        &s,
        "POST",
        "/v1/webhooks",
        None,
        Some(&json!({"url": url, "events": ["job.finished"]})),
    )
    .await;
    let hook_id = hook["webhook_id"].as_str().unwrap().to_owned();
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "true"})),
    )
    .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    // Refused connections, retried: pending, with the error recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let d = deliveries(&c, &s, &hook_id).await;
        if d.first().is_some_and(|d| d["attempts"].as_i64() >= Some(1)) {
            break d;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d[0]["status"], "pending", "{d:?}");
    assert!(!d[0]["last_error"].is_null(), "{d:?}");
    drop(s);

    let rx = Receiver::start(&py, tmp.path(), port);
    rx.trust(hook["secret"].as_str().unwrap());
    let s = Server::start(&data, ALLOW);
    let got = rx.wait_for("/ok", 1);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["verified"], true);
    assert_eq!(got[0]["body"]["data"]["job_id"], id.as_str());
    let d = deliveries(&c, &s, &hook_id).await;
    assert_eq!(d[0]["status"], "delivered", "{d:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_and_private_receivers_are_refused_unless_an_admin_allows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &["--webhook-backoff", "100ms"]);
    let c = reqwest::Client::new();
    for url in [
        "http://127.0.0.1:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest",
    ] {
        let (code, v) = call(
            &c,
            &s,
            "POST",
            "/v1/webhooks",
            None,
            Some(&json!({"url": url, "events": ["job.finished"]})),
        )
        .await;
        assert_eq!(code, 403, "{url}: {v}");
        assert_eq!(v["code"], "forbidden_destination");
        let (code, _) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "true", "callback_url": url})),
        )
        .await;
        assert_eq!(code, 403, "{url}");
    }
    // Bad input: a scheme, an event, a header that would forge the signature.
    for body in [
        json!({"url": "ftp://example.org/", "events": ["job.finished"]}),
        json!({"url": "https://example.org/", "events": ["job.exploded"]}),
        json!({"url": "https://example.org/", "events": []}),
        json!({"url": "https://example.org/", "events": ["job.finished"],
               "headers": {"webhook-signature": "v1,forged"}}),
        json!({"url": "https://user:pw@example.org/", "events": ["job.finished"]}),
        json!({"url": "https://example.org/", "events": ["job.finished"], "scope": "server",
               "surprise": 1}),
    ] {
        let (code, v) = call(&c, &s, "POST", "/v1/webhooks", None, Some(&body)).await;
        assert_eq!(code, 400, "{body}: {v}");
    }
    // A name that resolves to loopback passes creation, and is refused when it is delivered.
    let (code, hook) = call(
        &c,
        &s,
        "POST",
        "/v1/webhooks",
        None,
        Some(&json!({"url": "http://localhost:9/hook", "events": ["job.finished"]})),
    )
    .await;
    assert_eq!(code, 201, "{hook}");
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "true"})),
    )
    .await;
    wait_final(
        &c,
        &s,
        &format!("/v1/jobs/{}", v["job_id"].as_str().unwrap()),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = deliveries(&c, &s, hook["webhook_id"].as_str().unwrap()).await;
        if let Some(d) = d.first().filter(|d| d["status"] == "failed") {
            assert!(
                d["last_error"].as_str().unwrap().contains("not allowed"),
                "{d}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
