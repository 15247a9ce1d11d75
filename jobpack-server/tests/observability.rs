//! What the server says about what it does: the JSON log of a real server run (`--log-format
//! json`, `JOBPACK_LOG=info`) read back line by line.

mod common;

use std::io::BufRead;

use common::{Launch, Server, call, wait_final};
use serde_json::{Value, json};

/// The server's stderr, read line by line as it comes (a full pipe would stop the server) until
/// the server ends.
fn log_lines(s: &mut Server) -> std::thread::JoinHandle<Vec<String>> {
    let stderr = s.stderr.take().unwrap();
    std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_log_has_each_request_and_every_state_change_of_a_job_with_its_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::launch(
        tmp.path(),
        Launch {
            args: &["--auth", "none", "--log-format", "json"],
            env: &[("JOBPACK_LOG", "info")],
            capture_stderr: true,
        },
    );
    let reader = log_lines(&mut s);
    let c = reqwest::Client::new();

    // The client's request id comes back, and is on the request's lines.
    let r = c
        .post(s.u("/v1/jobs"))
        .header("x-request-id", "client-req-42")
        .json(&json!({"command": "echo hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "client-req-42");
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    // An unusable id (spaces; it would go into logs and headers as it is) is replaced.
    let r = c
        .get(s.u(&format!("/v1/jobs/{id}")))
        .header("x-request-id", "not usable\tid")
        .send()
        .await
        .unwrap();
    let given = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        given.len() == 32 && given.bytes().all(|b| b.is_ascii_hexdigit()),
        "{given}"
    );
    // A request no route answers is logged with its status all the same.
    let (st, _) = call(&c, &s, "GET", "/v1/nowhere", None, None).await;
    assert_eq!(st, 404);

    drop(s);
    let lines = reader.join().unwrap();
    let events: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(!events.is_empty(), "no JSON lines in {lines:#?}");
    let request_id = |e: &Value| e["span"]["request_id"].as_str().map(str::to_owned);

    // The submission: its request line (method, path, status, duration, caller) and the
    // service's "job accepted" line, both in the client's request.
    let post = events
        .iter()
        .find(|e| e["message"] == "request" && e["method"] == "POST")
        .unwrap_or_else(|| panic!("no POST request line in {events:#?}"));
    assert_eq!(request_id(post).as_deref(), Some("client-req-42"), "{post}");
    assert_eq!(post["path"], "/v1/jobs");
    assert_eq!(post["status"], 201);
    assert!(post["duration_ms"].as_f64().unwrap() > 0.0, "{post}");
    assert_eq!(post["caller"], "local", "{post}");
    assert!(
        events.iter().any(|e| e["message"] == "job accepted"
            && e["job_id"] == id.as_str()
            && request_id(e).as_deref() == Some("client-req-42")),
        "{events:#?}"
    );
    // The job's reads carry its id; the replaced request id is the one logged.
    let gets: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "request" && e["job_id"] == id.as_str())
        .collect();
    assert!(
        gets.iter()
            .any(|e| request_id(e).as_deref() == Some(given.as_str())),
        "{gets:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "request" && e["path"] == "/v1/nowhere" && e["status"] == 404),
        "{events:#?}"
    );

    // Every state change of the job, in order, each with the stage it ended and how long that
    // took.
    let states: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "job state" && e["job_id"] == id.as_str())
        .collect();
    let seen: Vec<&str> = states
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        seen,
        ["packing", "packed", "running", "completed"],
        "{states:#?}"
    );
    let stages: Vec<&str> = states
        .iter()
        .map(|e| e["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        ["queued", "packing", "packed", "running"],
        "{states:#?}"
    );
    for e in &states {
        assert!(e["stage_ms"].as_f64().unwrap() >= 0.0, "{e}");
        assert_eq!(e["level"], "INFO", "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_authentication_is_logged_without_the_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::launch(
        tmp.path(),
        Launch {
            args: &["--log-format", "json"],
            env: &[("JOBPACK_LOG", "info")],
            capture_stderr: true,
        },
    );
    let reader = log_lines(&mut s);
    let c = reqwest::Client::new();
    let secret = "jp_not-a-real-token-0123456789";
    let (st, _) = call(&c, &s, "GET", "/v1/jobs", Some(secret), None).await;
    assert_eq!(st, 401);
    drop(s);
    let lines = reader.join().unwrap();
    let failed: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["message"] == "authentication failed")
        .collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    assert_eq!(failed[0]["level"], "WARN");
    assert_eq!(failed[0]["path"], "/v1/jobs");
    assert!(failed[0]["span"]["request_id"].is_string(), "{}", failed[0]);
    assert!(
        lines.iter().all(|l| !l.contains(secret)),
        "the token is in the log: {lines:#?}"
    );
    assert!(
        lines
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|e| e["message"] == "request" && e["status"] == 401),
        "{lines:#?}"
    );
}

/// `/metrics` read back with a Prometheus text parser after a few jobs: the histograms count
/// every request and every job stage, the counters every job's end; with `--metrics-listen` the
/// same metrics are on a port of their own without authentication.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_the_requests_and_the_jobs_stages_and_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::start(tmp.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let metrics_url = second_line(&mut s, "jobpack metrics listening on ");
    let c = reqwest::Client::new();
    let jobs = 3;
    for _ in 0..jobs {
        let (st, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "true"})),
        )
        .await;
        assert_eq!(st, 201, "{v}");
        let id = v["job_id"].as_str().unwrap().to_owned();
        let done = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    let r = c.get(s.u("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.headers()
    );
    let text = r.text().await.unwrap();
    let scrape = parse(&text);
    let post = [("method", "POST"), ("route", "/v1/jobs"), ("status", "2xx")];
    assert_eq!(
        histogram_count(&scrape, "jobpack_http_request_duration_seconds", &post),
        jobs as f64,
        "{text}"
    );
    for stage in ["queued", "packing", "packed", "running"] {
        assert_eq!(
            histogram_count(
                &scrape,
                "jobpack_job_stage_duration_seconds",
                &[("stage", stage)]
            ),
            jobs as f64,
            "{stage}: {text}"
        );
    }
    assert_eq!(
        histogram_count(
            &scrape,
            "jobpack_job_duration_seconds",
            &[("status", "completed")]
        ),
        jobs as f64,
        "{text}"
    );
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&scrape, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in {text}"))
    };
    assert_eq!(
        value(
            "jobpack_jobs_finished_total",
            &[("status", "completed"), ("backend", "sandbox")]
        ),
        jobs as f64
    );
    assert_eq!(
        value("jobpack_jobs", &[("status", "completed")]),
        jobs as f64
    );
    assert_eq!(value("jobpack_running", &[]), 0.0);

    // The metrics port: the same metrics, no token asked.
    let text = c
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        histogram_count(
            &parse(&text),
            "jobpack_job_stage_duration_seconds",
            &[("stage", "running")]
        ),
        jobs as f64,
        "{text}"
    );
    drop(s);

    // With token authentication: /metrics on the API is for admins, the metrics port open.
    let mut s = Server::launch(
        &tmp.path().join("tokens"),
        Launch {
            args: &["--metrics-listen", "127.0.0.1:0"],
            ..Launch::default()
        },
    );
    let metrics_url = second_line(&mut s, "jobpack metrics listening on ");
    let (st, _) = call(&c, &s, "GET", "/metrics", None, None).await;
    assert_eq!(st, 401);
    let r = c
        .get(format!("{metrics_url}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("jobpack_queue_depth"));
}

/// The server's next line on stdout, which must start with `prefix`: the rest of it.
fn second_line(s: &mut Server, prefix: &str) -> String {
    let mut line = String::new();
    s.stdout.read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected line {line:?}"))
        .to_owned()
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the counter or gauge `name` with these labels, if the scrape has it.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// Serves `app` on 127.0.0.1 (a free port) in the test's runtime, once it answers: its URL, and
/// the task to abort.
async fn serve_local(app: impl poem::Endpoint + 'static) -> (String, tokio::task::JoinHandle<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let at = addr.clone();
    let task = tokio::spawn(async move {
        let _ = poem::Server::new(poem::listener::TcpListener::bind(at))
            .run(app)
            .await;
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{addr} never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    (format!("http://{addr}"), task)
}

/// A histogram's count for the series with these labels: its `+Inf` bucket, checked against its
/// `_count`.
fn histogram_count(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matches = |l: &prometheus_parse::Labels| labels.iter().all(|(k, v)| l.get(k) == Some(*v));
    let inf = scrape
        .samples
        .iter()
        .filter(|x| x.metric == name && matches(&x.labels))
        .find_map(|x| match &x.value {
            prometheus_parse::Value::Histogram(b) => b
                .iter()
                .find(|h| h.less_than.is_infinite())
                .map(|h| h.count),
            _ => None,
        })
        .unwrap_or(0.0);
    let count = scrape
        .samples
        .iter()
        .filter(|x| x.metric == format!("{name}_count") && matches(&x.labels))
        .find_map(|x| match x.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => Some(v),
            _ => None,
        })
        .unwrap_or(0.0);
    assert_eq!(inf, count, "{name} {labels:?}: +Inf bucket vs _count");
    inf
}

/// A data file and a webhook receiver on 127.0.0.1 (poem, in the test's runtime): `GET /data.bin`
/// is `size` bytes; `POST /ok` answers 200, `POST /broken` 400 (not retried).
async fn side_server(size: usize) -> (String, tokio::task::JoinHandle<()>) {
    use poem::{Route, get, handler, post};
    #[handler]
    fn ok() -> &'static str {
        "ok"
    }
    #[handler]
    fn broken() -> poem::Response {
        poem::Response::builder()
            .status(poem::http::StatusCode::BAD_REQUEST)
            .body("no")
    }
    let body = vec![7u8; size];
    let app = Route::new()
        .at(
            "/data.bin",
            get(poem::endpoint::make_sync(move |_| body.clone())),
        )
        .at("/ok", post(ok))
        .at("/broken", post(broken));
    serve_local(app).await
}

/// The rest of the metrics: bytes fetched (data) and logged, open log streams (SSE), webhook
/// deliveries by result, the data directory's free space, running jobs per user; and a
/// delivery's log line carries its job's id.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_bytes_streams_deliveries_and_running_jobs_per_user() {
    let (side, side_task) = side_server(100_000).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut s = Server::launch(
        tmp.path(),
        Launch {
            args: &[
                "--auth",
                "none",
                "--log-format",
                "json",
                "--allow-webhooks-to",
                "127.0.0.1/32",
            ],
            env: &[("JOBPACK_LOG", "info")],
            capture_stderr: true,
        },
    );
    let reader = log_lines(&mut s);
    let c = reqwest::Client::new();
    let metric =
        |text: &str, name: &str, labels: &[(&str, &str)]| sample(&parse(text), name, labels);
    let scrape = || async {
        c.get(s.u("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };

    // A job that downloads 100,000 bytes, prints 6, and has two webhooks: one delivered, one
    // refused (given up at once).
    let (st, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({
            "command": "echo hello",
            "data": [{"url": format!("{side}/data.bin"), "path": "d.bin"}],
            "webhooks": [{"url": format!("{side}/ok"), "events": ["job.finished"]},
                         {"url": format!("{side}/broken"), "events": ["job.finished"]}],
        })),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let first = v["job_id"].as_str().unwrap().to_owned();
    let done = wait_final(&c, &s, &format!("/v1/jobs/{first}")).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A running job with a reader on its log stream.
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "echo started; sleep 60"})),
    )
    .await;
    let long = v["job_id"].as_str().unwrap().to_owned();
    let owner = v["owner"].as_str().map(str::to_owned);
    let stream = c
        .get(s.u(&format!("/v1/jobs/{long}/logs/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let text = loop {
        let text = scrape().await;
        let delivered = metric(
            &text,
            "jobpack_webhook_deliveries_total",
            &[("result", "delivered")],
        );
        let running = metric(&text, "jobpack_running", &[]);
        if delivered == Some(1.0) && running == Some(1.0) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        metric(&text, "jobpack_fetched_bytes_total", &[("kind", "data")]),
        Some(100_000.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "jobpack_log_bytes_total", &[]),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "jobpack_webhook_deliveries_total",
            &[("result", "failed")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "jobpack_active_streams", &[("kind", "sse")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "jobpack_data_free_bytes", &[]).unwrap() > 0.0,
        "{text}"
    );
    let (_, j) = call(&c, &s, "GET", &format!("/v1/jobs/{long}"), None, None).await;
    let owner = owner.unwrap_or_else(|| j["owner"].as_str().unwrap().to_owned());
    assert_eq!(
        metric(&text, "jobpack_user_running_jobs", &[("user", &owner)]),
        Some(1.0),
        "{text}"
    );

    // The stream closed and the job ended: both gone from the gauges.
    drop(stream);
    let (st, _) = call(
        &c,
        &s,
        "POST",
        &format!("/v1/jobs/{long}/cancel"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 202);
    wait_final(&c, &s, &format!("/v1/jobs/{long}")).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = scrape().await;
        let sse = metric(&text, "jobpack_active_streams", &[("kind", "sse")]);
        let user = metric(&text, "jobpack_user_running_jobs", &[("user", &owner)]);
        if sse == Some(0.0) && user.is_none() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    drop(s);
    side_task.abort();
    let lines: Vec<Value> = reader
        .join()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let deliveries: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "webhook delivery")
        .collect();
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");
    for d in &deliveries {
        assert_eq!(d["job_id"], first.as_str(), "{d}");
    }
    assert!(
        deliveries
            .iter()
            .any(|d| d["result"] == "failed" && d["level"] == "WARN"),
        "{deliveries:#?}"
    );
    let packed = lines
        .iter()
        .find(|l| l["message"] == "job packed" && l["job_id"] == first.as_str())
        .expect("a packed line");
    assert_eq!(packed["data_bytes"], 100_000, "{packed}");
}

/// An OTLP/HTTP collector on 127.0.0.1: every `POST /v1/traces` body is kept.
async fn collector() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    tokio::task::JoinHandle<()>,
) {
    use poem::{EndpointExt, Route, handler, post, web::Data};
    type Bodies = std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>;
    #[handler]
    fn traces(body: Vec<u8>, Data(bodies): Data<&Bodies>) -> &'static str {
        bodies.lock().unwrap().push(body);
        ""
    }
    let bodies: Bodies = Default::default();
    let app = Route::new()
        .at("/v1/traces", post(traces))
        .data(bodies.clone());
    let (url, task) = serve_local(app).await;
    (url, bodies, task)
}

/// One exported span: its name, ids, and string attributes.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attrs: std::collections::BTreeMap<String, String>,
    service: String,
}

fn exported(bodies: &[Vec<u8>]) -> Vec<Exported> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    use prost::Message;
    let text = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| {
        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => s.clone(),
            Some(V::IntValue(i)) => i.to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        };
        (kv.key.clone(), v)
    };
    let mut out = Vec::new();
    for b in bodies {
        let req = ExportTraceServiceRequest::decode(b.as_slice()).expect("an OTLP protobuf body");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| {
                    r.attributes
                        .iter()
                        .map(text)
                        .find(|(k, _)| k == "service.name")
                })
                .map(|(_, v)| v)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Exported {
                        name: s.name.clone(),
                        trace: s.trace_id.clone(),
                        id: s.span_id.clone(),
                        parent: s.parent_span_id.clone(),
                        attrs: s.attributes.iter().map(text).collect(),
                        service: service.clone(),
                    });
                }
            }
        }
    }
    out
}

/// `--otlp-endpoint`: the request, the job under it, and the library's pack, unpack and
/// sandbox start under the job reach a collector on 127.0.0.1 as one trace; a collector that is
/// not there costs the jobs nothing; an endpoint that is not an http(s) URL is refused at start.
#[tokio::test(flavor = "multi_thread")]
async fn spans_reach_an_otlp_collector_with_the_job_under_its_request() {
    let (url, bodies, task) = collector().await;
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::launch(
        &tmp.path().join("a"),
        Launch {
            args: &["--auth", "none", "--otlp-endpoint", &url],
            env: &[("OTEL_BSP_SCHEDULE_DELAY", "200")],
            ..Launch::default()
        },
    );
    let c = reqwest::Client::new();
    let r = c
        .post(s.u("/v1/jobs"))
        .header("x-request-id", "otlp-req-1")
        .json(&json!({"command": "echo traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = wait_final(&c, &s, &format!("/v1/jobs/{id}")).await;
    assert_eq!(done["status"], "completed", "{done}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let spans = loop {
        let spans = exported(&bodies.lock().unwrap());
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        if ["request", "job", "pack", "unpack", "sandbox start"]
            .iter()
            .all(|n| names.contains(n))
        {
            break spans;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans so far: {names:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let one = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.attrs.get("job_id").is_none_or(|j| *j == id))
            .unwrap_or_else(|| panic!("no {name} span: {spans:#?}"))
            .clone()
    };
    let request = spans
        .iter()
        .find(|s| {
            s.name == "request"
                && s.attrs.get("request_id").map(String::as_str) == Some("otlp-req-1")
        })
        .unwrap_or_else(|| panic!("no span of the client's request: {spans:#?}"));
    let job = one("job");
    assert_eq!(job.attrs["job_id"], id);
    assert_eq!(
        job.parent, request.id,
        "the job is a child of the request that submitted it"
    );
    for child in ["pack", "unpack", "sandbox start"] {
        let c = one(child);
        assert_eq!(
            c.parent, job.id,
            "{child} is a child of the job: {spans:#?}"
        );
        assert_eq!(c.trace, request.trace, "{child}: one trace");
    }
    assert_eq!(request.service, "jobpack");
    drop(s);
    task.abort();

    // No collector there: jobs run all the same.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let s = Server::start(&tmp.path().join("b"), &["--otlp-endpoint", &closed]);
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "true"})),
    )
    .await;
    let done = wait_final(
        &c,
        &s,
        &format!("/v1/jobs/{}", v["job_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
    drop(s);

    let (code, _, err) = common::jobpack(&[
        "serve",
        "--data-dir",
        tmp.path().join("c").to_str().unwrap(),
        "--otlp-endpoint",
        "ftp://collector:4318",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--otlp-endpoint"), "{err}");
}
