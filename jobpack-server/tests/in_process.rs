//! The service built in-process (`server::build`) and called without a socket: the same routes,
//! middleware and runner as `jobpack serve`, a job submitted and run to its end.

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use poem::Endpoint;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: jobpack_server::server::ServeArgs,
}

async fn call(
    app: &jobpack_server::server::App,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Vec<u8>) {
    let mut req = poem::Request::builder()
        .method(method.parse().unwrap())
        .uri(path.parse().unwrap());
    if body.is_some() {
        req = req.content_type("application/json");
    }
    let req = match body {
        Some(b) => req.body(b.to_string()),
        None => req.finish(),
    };
    let resp = app.endpoint.call(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().into_vec().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_service_runs_a_job_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut argv = vec![
        "jobpack-serve".to_owned(),
        "--data-dir".to_owned(),
        data.display().to_string(),
        "--auth".to_owned(),
        "none".to_owned(),
    ];
    if !common::is_root() {
        println!("note: not root, so the job runs with --permissive (no sandbox)");
        argv.push("--permissive".into());
    }
    let args = Args::parse_from(argv);
    let app = jobpack_server::server::build(&args.serve).await.unwrap();

    let (st, body) = call(&app, "GET", "/v1/health", None).await;
    assert_eq!(st, 200);
    let health: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");

    let (st, body) = call(
        &app,
        "POST",
        "/v1/jobs",
        Some(json!({"command": "echo in-process"})),
    )
    .await;
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let id = serde_json::from_slice::<Value>(&body).unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = call(&app, "GET", &format!("/v1/jobs/{id}"), None).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        if v["status"] == "completed" {
            break;
        }
        assert!(
            !common::FINAL.contains(&v["status"].as_str().unwrap()),
            "{v}"
        );
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, log) = call(&app, "GET", &format!("/v1/jobs/{id}/logs"), None).await;
    assert_eq!(log, b"in-process\n");
    // The edge answers for routes no operation has, with the same problem body.
    let (st, body) = call(&app, "GET", "/v1/nothing-here", None).await;
    assert_eq!(st, 404);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["code"],
        "not_found"
    );
    app.runner.shutdown(Duration::from_secs(5)).await;
}
