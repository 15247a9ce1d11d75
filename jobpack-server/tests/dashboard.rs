//! The dashboard in a real browser: Debian's headless Chromium driven by chromedriver (WebDriver,
//! through fantoccini) against the real server on 127.0.0.1. Log in with a token, submit a job,
//! watch its log lines arrive live until `completed`, download its artifact, cancel and delete a
//! running job, filter the table; submit through the form (and see the server's message beside a
//! bad commit), watch a job's CPU and memory charts fill while it runs, a workflow's graph and a
//! batch's timeline, the last hour's overview; and an accessibility check of every page with
//! axe-core (vendored from npm in `tests/vendor/axe-core`). Screenshots are kept as test outputs.
//! Without chromium and chromedriver (`scripts/setup.sh --tests` installs them) the test says so
//! and skips.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Launch, Server};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const ADMIN: &str = "jp_dashboard-test-admin-token-0123";
const CHROMIUM: &str = "/usr/bin/chromium";
const DRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver and the browsers it starts, in a process group of their own, ended whole.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group chromedriver leads.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver() -> (Driver, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(DRIVER)
        .process_group(0)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Driver(child), port)
}

async fn browser(port: u16, profile: &Path, downloads: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                     format!("--user-data-dir={}", profile.display())],
            "prefs": {"download.default_directory": downloads.display().to_string(),
                      "download.prompt_for_download": false},
        },
    });
    let caps = caps.as_object().unwrap().clone().into_iter().collect();
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// Polls `f` until it gives `Some`, for at most `secs`.
async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text content of the element with this id (visible or not, scrolled or not).
async fn content_of(c: &Client, id: &str) -> String {
    let v = c
        .execute(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : '';",
            vec![json!(id)],
        )
        .await;
    v.ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A server with the admin token, chromedriver and a browser (downloads into `tmp/downloads`);
/// `None`, said, without chromium and chromedriver.
struct Session {
    tmp: tempfile::TempDir,
    s: Server,
    _driver: Driver,
    c: Client,
}

async fn session() -> Option<Session> {
    if !Path::new(CHROMIUM).exists() || !Path::new(DRIVER).exists() {
        println!(
            "SKIPPED: {CHROMIUM} or {DRIVER} is missing (`scripts/setup.sh --tests` installs chromium and \
             chromium-driver)"
        );
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::launch(
        &tmp.path().join("data"),
        Launch {
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            ..Launch::default()
        },
    );
    let downloads = tmp.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let (driver, port) = start_driver();
    let c = browser(port, &tmp.path().join("profile"), &downloads).await;
    Some(Session {
        tmp,
        s,
        _driver: driver,
        c,
    })
}

/// Logs in with the admin token.
async fn log_in(c: &Client, s: &Server) {
    c.goto(&s.u("/")).await.unwrap();
    let token = c.wait().for_element(Locator::Css("#token")).await.unwrap();
    token.send_keys(ADMIN).await.unwrap();
    c.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(20, "the user name", || async {
        text_of(c, "#me").await.contains("admin").then_some(())
    })
    .await;
}

async fn api(s: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    common::call(
        &reqwest::Client::new(),
        s,
        method,
        path,
        Some(ADMIN),
        body.as_ref(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_headless_chromium() {
    let Some(Session { tmp, s, _driver, c }) = session().await else {
        return;
    };
    let downloads = tmp.path().join("downloads");
    log_in(&c, &s).await;

    // Submit a job from the page; it opens the job's page.
    let spec = r#"{"name": "from-the-browser", "command": "for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.5; done; echo made > out.txt"}"#;
    for summary in ["#new-job > summary", "#advanced > summary"] {
        c.find(Locator::Css(summary))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
    c.execute(
        "document.getElementById('new-spec').value = arguments[0];",
        vec![json!(spec)],
    )
    .await
    .unwrap();
    c.find(Locator::Css("#submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let id = until(20, "the job page", || async {
        let url = c.current_url().await.ok()?;
        url.fragment()?.strip_prefix("/jobs/").map(str::to_owned)
    })
    .await;

    // Its log lines appear while it runs, then it completes with all of them.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let live = loop {
        let status = text_of(&c, "#job-status").await;
        let log = content_of(&c, "log").await;
        if log.contains("line 1") && status == "running" {
            break log;
        }
        seen.push(format!("{status}: {log:?}"));
        assert!(
            Instant::now() < deadline,
            "no live log line while running: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !live.contains("line 8"),
        "the log arrived only at the end: {live}"
    );
    until(60, "completed", || async {
        (text_of(&c, "#job-status").await == "completed").then_some(())
    })
    .await;
    let want: String = (1..=8).map(|i| format!("line {i}\n")).collect();
    let log = until(20, "the whole log", || async {
        let log = c
            .execute("return document.getElementById('log').textContent;", vec![])
            .await
            .ok()?;
        let log = log.as_str()?.to_owned();
        (log == want).then_some(log)
    })
    .await;
    assert_eq!(log, want);
    until(20, "the manifest and the run's signed receipt", || async {
        let m = text_of(&c, "#manifest").await;
        (m.contains("spec digest") && m.contains("receipt: signed by")).then_some(())
    })
    .await;
    assert!(text_of(&c, "#spec").await.contains("from-the-browser"));
    let png = c.screenshot().await.unwrap();
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-job-page.png");
    std::fs::write(&shot, &png).unwrap();
    println!("screenshot of the job page: {}", shot.display());
    assert!(png.starts_with(b"\x89PNG"));

    // Download the artifact: the file the browser saves is the artifact, byte for byte.
    let (_, job) = api(&s, "GET", &format!("/v1/jobs/{id}"), None).await;
    let sha = job["artifact_sha256"].as_str().unwrap().to_owned();
    c.find(Locator::Css("#dl-artifact"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let saved = downloads.join(format!("{id}.tar.gz"));
    let bytes = until(30, "the downloaded artifact", || async {
        let b = std::fs::read(&saved).ok()?;
        (b.len() as u64 == job["artifact_size"].as_u64()?).then_some(b)
    })
    .await;
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        sha
    );

    // Cancel a running job from its page.
    let (_, created) = api(
        &s,
        "POST",
        "/v1/jobs",
        Some(json!({"name": "long", "command": "echo waiting; sleep 60"})),
    )
    .await;
    let long = created["job_id"].as_str().unwrap().to_owned();
    c.goto(&s.u(&format!("/#/jobs/{long}"))).await.unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = content_of(&c, "job-status").await;
        let log = content_of(&c, "log").await;
        if status == "running" && log.contains("waiting") {
            break;
        }
        seen.push(format!("{status}: {log:?}"));
        assert!(
            Instant::now() < deadline,
            "the long job never showed running: {seen:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.find(Locator::Css("#cancel"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(30, "stopped", || async {
        (text_of(&c, "#job-status").await == "stopped").then_some(())
    })
    .await;
    // Pin it from its page: retention keeps it; the button then unpins.
    c.find(Locator::Css("#pin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(20, "pinned", || async {
        let (_, j) = api(&s, "GET", &format!("/v1/jobs/{long}"), None).await;
        (j["pinned"] == true && text_of(&c, "#pin").await == "Unpin").then_some(())
    })
    .await;

    // The table: every job with its status colour; the filter narrows it.
    c.goto(&s.u("/#/")).await.unwrap();
    let rows = until(20, "the job table", || async {
        let rows = c.find_all(Locator::Css("#jobs tbody tr")).await.ok()?;
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 2);
    assert!(
        c.find(Locator::Css("#jobs .status-completed"))
            .await
            .is_ok()
    );
    assert!(c.find(Locator::Css("#jobs .status-stopped")).await.is_ok());
    let filter = c.find(Locator::Css("#filter")).await.unwrap();
    if let Err(e) = filter.select_by_value("stopped").await {
        panic!("cannot choose a status in the filter: {e}");
    }
    until(20, "the filtered table", || async {
        let rows = c.find_all(Locator::Css("#jobs tbody tr")).await.ok()?;
        let first = rows.first()?.attr("data-id").await.ok()??;
        (rows.len() == 1 && first == long).then_some(())
    })
    .await;

    // Delete it from its page (after the confirmation dialog): gone from the server.
    c.goto(&s.u(&format!("/#/jobs/{long}"))).await.unwrap();
    until(20, "the job page", || async {
        (text_of(&c, "#job-status").await == "stopped").then_some(())
    })
    .await;
    c.find(Locator::Css("#delete"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.accept_alert().await.unwrap();
    until(20, "the deletion", || async {
        let (st, _) = api(&s, "GET", &format!("/v1/jobs/{long}"), None).await;
        (st == 404).then_some(())
    })
    .await;

    // A batch shows a progress bar of its ended jobs.
    let jobs: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("b{i}"), "command": "sleep 1"}))
        .collect();
    let (st, _) = api(
        &s,
        "POST",
        "/v1/batches",
        Some(json!({"name": "nightly", "jobs": jobs})),
    )
    .await;
    assert_eq!(st, 201);
    c.goto(&s.u("/#/")).await.unwrap();
    let seen = std::sync::Mutex::new(Vec::new());
    until(60, "a full batch progress bar", || async {
        let v = c
            .execute(
                "const p = document.querySelector('#batches progress'); \
                 return p ? [p.value, p.max, p.parentElement.textContent] : null;",
                vec![],
            )
            .await
            .ok()?;
        let (value, max) = (v[0].as_f64()?, v[1].as_f64()?);
        seen.lock().unwrap().push(value);
        (value == 3.0 && max == 3.0 && v[2].as_str()?.contains("3/3")).then_some(())
    })
    .await;
    assert!(text_of(&c, "#batches").await.contains("nightly"));
    println!("batch progress bar values seen: {:?}", seen.lock().unwrap());

    // A workflow shows its jobs in order with their statuses; a skipped one says so.
    let (st, _) = api(
        &s,
        "POST",
        "/v1/workflows",
        Some(json!({"name": "pipe", "jobs": {
            "fetch": {"command": "exit 2"},
            "report": {"command": "echo never", "requires": ["fetch"]},
        }})),
    )
    .await;
    assert_eq!(st, 201);
    until(60, "the workflow's final badges", || async {
        let t = text_of(&c, "#workflows").await;
        (t.contains("pipe") && t.contains("fetch: failed (2)") && t.contains("report: skipped"))
            .then_some(())
    })
    .await;
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-jobs-page.png");
    std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot of the jobs page: {}", shot.display());

    // Password sign-in (the JobRunner's users), status cards, and the batch gallery: a segmented
    // bar per batch and its member jobs with "View logs".
    let (st, v) = api(
        &s,
        "POST",
        "/api/v1/users",
        Some(
            json!({"email": "ana@example.com", "password": "a long password", "role": "submitter"}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    c.find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let email = c.wait().for_element(Locator::Css("#email")).await.unwrap();
    email.send_keys("ana@example.com").await.unwrap();
    c.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys("a long password")
        .await
        .unwrap();
    c.find(Locator::Css("#signin"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(20, "the signed-in user", || async {
        text_of(&c, "#me")
            .await
            .contains("ana@example.com")
            .then_some(())
    })
    .await;
    // ana's batch, submitted by her own session (the dashboard's token is hers now).
    let token: String = c
        .execute("return sessionStorage.getItem('jobpack-token');", vec![])
        .await
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let (st, v) = common::call(
        &reqwest::Client::new(),
        &s,
        "POST",
        "/api/v1/job-batches",
        Some(&token),
        Some(&json!({"name": "ui-suite", "jobs": [
            {"name": "t1", "command": ["sh", "-c", "echo t1 ok"]},
            {"name": "t2", "command": ["sh", "-c", "echo t2 broke >&2; exit 1"]},
            {"name": "t3", "command": ["sh", "-c", "echo t3 ok"]}
        ]})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    until(60, "a finished segmented bar", || async {
        let v = c
            .execute(
                "const b = document.querySelector('#gallery .gallery-item .seg'); if (!b) return null; \
                 return [...b.children].map(s => [s.className, s.dataset.count, s.style.width]);",
                vec![],
            )
            .await
            .ok()?;
        let parts = v.as_array()?;
        let count = |k: &str| {
            parts
                .iter()
                .find(|p| p[0] == format!("seg-{k}"))
                .and_then(|p| p[1].as_str()?.parse::<u32>().ok())
        };
        (count("passed")? == 2 && count("failed")? == 1 && count("waiting")? == 0).then_some(())
    })
    .await;
    until(20, "status cards", || async {
        let v = c
            .execute(
                "return Object.fromEntries([...document.querySelectorAll('#cards .n')] \
                 .map(e => [e.dataset.k, e.textContent]));",
                vec![],
            )
            .await
            .ok()?;
        (v["passed"] == "2" && v["failed"] == "1" && v["total"] == "3").then_some(())
    })
    .await;
    c.find(Locator::Css("#gallery .gallery-item .title"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until(20, "the member jobs", || async {
        let t = text_of(&c, "#gallery .members").await;
        (t.contains("t1") && t.contains("t2") && t.contains("t3")).then_some(())
    })
    .await;
    let buttons = c
        .find_all(Locator::Css("#gallery .members .view-logs"))
        .await
        .unwrap();
    let names = text_of(&c, "#gallery .members").await;
    let t2 = names.lines().position(|l| l.contains("t2")).unwrap_or(0);
    buttons[t2.min(buttons.len() - 1)].click().await.unwrap();
    until(20, "a job's logs", || async {
        let t = text_of(&c, "#runner-log").await;
        t.contains("broke").then_some(())
    })
    .await;
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-batch-gallery.png");
    std::fs::write(&shot, c.screenshot().await.unwrap()).unwrap();
    println!("screenshot of the batch gallery: {}", shot.display());
    c.close().await.unwrap();
}

/// Saves a screenshot of the page as a test output.
async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{name}.png"));
    std::fs::write(&path, &png).unwrap();
    println!("screenshot of {name}: {}", path.display());
}

/// The vendored axe-core, checked against the digest its README pins.
fn axe_source() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vendor/axe-core");
    let js = std::fs::read(dir.join("axe.min.js")).unwrap();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&js));
    assert!(
        readme.contains(&digest),
        "axe.min.js is not the file its README pins"
    );
    String::from_utf8(js).unwrap()
}

/// Runs axe-core on the page as it is; fails on any serious or critical violation, prints the
/// rest.
async fn check_accessibility(c: &Client, axe: &str, page: &str) {
    c.execute(&format!("{axe}\n;return true;"), vec![])
        .await
        .unwrap();
    let found = c
        .execute_async(
            "const done = arguments[arguments.length - 1]; \
             axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => \
               ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))) \
               .catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));",
            vec![],
        )
        .await
        .unwrap();
    let all = found.as_array().cloned().unwrap_or_default();
    let serious: Vec<&Value> = all
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .collect();
    println!(
        "axe-core on the {page} page: {} violations, {} serious or critical: {all:#?}",
        all.len(),
        serious.len()
    );
    assert!(serious.is_empty(), "the {page} page: {serious:#?}");
}

/// How many of an SVG's marks there are (points, nodes, bars).
async fn count(c: &Client, css: &str) -> usize {
    c.execute(
        "return document.querySelectorAll(arguments[0]).length;",
        vec![json!(css)],
    )
    .await
    .ok()
    .and_then(|v| v.as_u64())
    .unwrap_or(0) as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboards_form_charts_graph_timeline_and_accessibility() {
    // Every part kept to the end (the server's data is in `tmp`).
    let Some(Session {
        tmp: _tmp,
        s,
        _driver,
        c,
    }) = session().await
    else {
        return;
    };
    let axe = axe_source();
    c.goto(&s.u("/")).await.unwrap();
    c.wait().for_element(Locator::Css("#token")).await.unwrap();
    check_accessibility(&c, &axe, "login").await;
    log_in(&c, &s).await;

    // The form: a bad commit gets the server's own message beside the commit field.
    c.find(Locator::Css("#new-job > summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let fill = |id: &'static str, value: &'static str| {
        let c = c.clone();
        async move {
            c.execute(
                "const e = document.getElementById(arguments[0]); e.value = arguments[1];",
                vec![json!(id), json!(value)],
            )
            .await
            .unwrap();
        }
    };
    fill("f-name", "from-the-form").await;
    fill("f-git_url", "https://example.com/repo.git").await;
    fill("f-commit_hash", "main").await;
    let submit = || async {
        c.find(Locator::Css("#submit-form"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    };
    submit().await;
    let message = until(20, "the commit's message", || async {
        let m = content_of(&c, "e-commit_hash").await;
        (!m.is_empty()).then_some(m)
    })
    .await;
    assert!(message.contains("hexadecimal"), "{message}");
    let invalid = c
        .execute(
            "return document.getElementById('f-commit_hash').getAttribute('aria-invalid');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(invalid, "true");
    assert_eq!(
        content_of(&c, "form-error").await,
        "",
        "the message is at its field"
    );
    c.execute(
        "document.getElementById('job-form').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    shot(&c, "form-validation").await;
    check_accessibility(&c, &axe, "jobs (with the form)").await;

    // A job from the form: its charts get points while it runs.
    fill("f-git_url", "").await;
    fill("f-commit_hash", "").await;
    fill(
        "f-command",
        "python3 -c 'import time\nb = bytearray(60 << 20)\nt = time.time()\nwhile time.time() - t < 6: pass'",
    )
    .await;
    fill("f-memory", "512").await;
    fill("f-timeout", "120").await;
    submit().await;
    let id = until(20, "the job page", || async {
        let url = c.current_url().await.ok()?;
        url.fragment()?.strip_prefix("/jobs/").map(str::to_owned)
    })
    .await;
    let (_, job) = api(&s, "GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(job["name"], "from-the-form", "{job}");
    assert_eq!(job["request"]["limits"]["memory_bytes"], 512 << 20, "{job}");
    if common::is_root() {
        until(40, "charts with points while the job runs", || async {
            let status = content_of(&c, "job-status").await;
            let (cpu, mem) = (
                count(&c, "#chart-cpu circle.pt").await,
                count(&c, "#chart-mem circle.pt").await,
            );
            (status == "running" && cpu >= 1 && mem >= 2).then_some(())
        })
        .await;
        c.execute(
            "document.getElementById('usage-title').scrollIntoView();",
            vec![],
        )
        .await
        .unwrap();
        shot(&c, "job-usage").await;
        until(60, "completed with its peaks", || async {
            let p = content_of(&c, "peaks").await;
            (content_of(&c, "job-status").await == "completed" && p.contains("Peaks over"))
                .then_some(())
        })
        .await;
    } else {
        println!("SKIPPED the charts' points: not root, so jobs have no cgroup to sample");
    }
    check_accessibility(&c, &axe, "job").await;

    // A workflow's graph: one node per job in its status's colour, an edge per requirement.
    let (st, w) = api(
        &s,
        "POST",
        "/v1/workflows",
        Some(json!({"name": "graph", "jobs": {
            "fetch": {"command": "true"},
            "build": {"command": "exit 2", "requires": ["fetch"]},
            "publish": {"command": "true", "requires": ["build"]},
            "report": {"command": "true", "requires": [{"build": "failed"}]},
        }})),
    )
    .await;
    assert_eq!(st, 201, "{w}");
    let wid = w["workflow_id"].as_str().unwrap().to_owned();
    let wpath = format!("/v1/workflows/{wid}");
    let statuses = until(60, "the workflow's end", || async {
        let (_, w) = api(&s, "GET", &wpath, None).await;
        let jobs = w["jobs"].as_array()?.clone();
        jobs.iter()
            .all(|j| common::FINAL.contains(&j["status"].as_str().unwrap_or("")))
            .then_some(jobs)
    })
    .await;
    c.goto(&s.u(&format!("/#/workflows/{wid}"))).await.unwrap();
    let nodes = until(20, "the graph's final colours", || async {
        let v = c
            .execute(
                "return [...document.querySelectorAll('#dag g.node')].map(g => ({name: g.dataset.job, \
                 status: g.dataset.status, fill: g.querySelector('rect').getAttribute('fill'), \
                 want: Charts.STATUS_COLOR[g.dataset.status]}));",
                vec![],
            )
            .await
            .ok()?;
        let v = v.as_array()?.clone();
        (v.len() == 4 && v.iter().all(|n| n["status"] != "waiting")).then_some(v)
    })
    .await;
    for j in &statuses {
        let n = nodes
            .iter()
            .find(|n| n["name"] == j["name"])
            .unwrap_or_else(|| panic!("no node for {j}: {nodes:#?}"));
        assert_eq!(n["status"], j["status"], "{nodes:#?}");
        assert_eq!(n["fill"], n["want"], "{nodes:#?}");
    }
    let by = |name: &str| nodes.iter().find(|n| n["name"] == name).unwrap()["status"].clone();
    assert_eq!(
        [by("fetch"), by("build"), by("publish"), by("report")],
        ["completed", "failed", "skipped", "completed"]
    );
    let fills: std::collections::BTreeSet<String> = nodes
        .iter()
        .map(|n| n["fill"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fills.len(),
        3,
        "completed, failed and skipped differ: {nodes:#?}"
    );
    assert_eq!(count(&c, "#dag path.edge").await, 3);
    let labels = c
        .execute(
            "return [...document.querySelectorAll('#dag .edge-label')].map(t => t.textContent).sort();",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(labels, json!(["completed", "completed", "failed"]));
    assert_eq!(count(&c, "#wf-timeline g.bar").await, 4);
    shot(&c, "workflow-graph").await;
    check_accessibility(&c, &axe, "workflow").await;
    // A click on a node opens its job.
    c.find(Locator::Css("#dag g.node[data-job='build']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let build_id = statuses.iter().find(|j| j["name"] == "build").unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    until(20, "the build job's page", || async {
        let url = c.current_url().await.ok()?;
        (url.fragment()? == format!("/jobs/{build_id}")).then_some(())
    })
    .await;

    // A batch's timeline: a bar per job, each with its run.
    let jobs: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("part-{i}"), "command": "sleep 1"}))
        .collect();
    let (st, b) = api(
        &s,
        "POST",
        "/v1/batches",
        Some(json!({"name": "timeline", "jobs": jobs})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    let bid = b["batch_id"].as_str().unwrap().to_owned();
    c.goto(&s.u(&format!("/#/batches/{bid}"))).await.unwrap();
    until(60, "three runs on the timeline", || async {
        let done = content_of(&c, "batch-status").await == "completed";
        (done && count(&c, "#batch-timeline g.bar rect.run").await == 3).then_some(())
    })
    .await;
    assert_eq!(count(&c, "#batch-timeline g.bar").await, 3);
    shot(&c, "batch-timeline").await;
    check_accessibility(&c, &axe, "batch").await;

    // The overview: every job that ended this hour is in the bars.
    let (_, listed) = api(&s, "GET", "/v1/jobs?limit=200", None).await;
    let ended = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| common::FINAL.contains(&j["status"].as_str().unwrap()))
        .count();
    c.goto(&s.u("/#/")).await.unwrap();
    until(30, "the overview's bars", || async {
        let v = c
            .execute(
                "const e = document.getElementById('activity-ended'); return e && e.dataset.total;",
                vec![],
            )
            .await
            .ok()?;
        (v.as_str()?.parse::<usize>().ok()? == ended).then_some(())
    })
    .await;
    assert!(count(&c, "#activity-queue circle.pt").await >= 60);
    shot(&c, "overview").await;
    check_accessibility(&c, &axe, "jobs").await;
    c.close().await.unwrap();
}
