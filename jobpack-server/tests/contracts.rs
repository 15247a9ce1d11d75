//! The API's contract as a whole: a snapshot of `/openapi.json` (an accidental change of an
//! endpoint, field or status fails here: review it, then accept the new snapshot with
//! `INSTA_UPDATE=always cargo test -p jobpack-server --test contracts`), and the refusal of input
//! that would otherwise be silently ignored.

mod common;

use common::{Server, call};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_what_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let c = reqwest::Client::new();
    // The main document, and the seeds' doors' documents of their own.
    for (path, snapshot) in [
        ("/openapi.json", "openapi"),
        ("/openapi/jobd.json", "openapi_jobd"),
        ("/openapi/jobrunner.json", "openapi_jobrunner"),
    ] {
        let (st, spec) = call(&c, &s, "GET", path, None, None).await;
        assert_eq!(st, 200, "{path}");
        insta::assert_snapshot!(snapshot, serde_json::to_string_pretty(&spec).unwrap());
    }
}

/// The method table comes from the documents, which are made at their first use: a 405 as the
/// server's first request names the methods of its route, on every door.
#[tokio::test(flavor = "multi_thread")]
async fn a_405_before_any_document_was_asked_for_names_the_methods() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let c = reqwest::Client::new();
    for (method, path, allow) in [
        ("PATCH", "/v1/jobs", "GET, POST"),
        ("PUT", "/jobs/abc", "DELETE, GET"),
        ("DELETE", "/metrics", "GET"),
    ] {
        let r = c
            .request(method.parse().unwrap(), s.u(path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{method} {path}");
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_fields_are_refused_not_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let c = reqwest::Client::new();
    // A misnamed multipart part (files= instead of code_files=) is a 400 naming it.
    for name in ["files", "file"] {
        let form = reqwest::multipart::Form::new()
            .text("spec", json!({"command": "ls"}).to_string())
            .part(
                name,
                reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("x.sh"),
            );
        let r = c
            .post(s.u("/v1/jobs"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["message"].as_str().unwrap().contains(name), "{v}");
    }
    // A quota with a misspelt key is refused, and the quota is left as it was.
    let body = json!({"max_concurrent": 3});
    let (st, v) = call(&c, &s, "PUT", "/v1/users/local/quota", None, Some(&body)).await;
    assert!(st == 200 || st == 404, "{st} {v}");
    let bad = json!({"max_concurent": 1});
    let (st, v) = call(&c, &s, "PUT", "/v1/users/local/quota", None, Some(&bad)).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("max_concurent"),
        "{v}"
    );
    // A name must be a JSON string: `false` is not the user "false", 12 not the label "12".
    let bad = json!({"name": false, "role": "viewer"});
    let (st, v) = call(&c, &s, "POST", "/v1/users", None, Some(&bad)).await;
    assert_eq!(st, 400, "{v}");
    let (st, _) = call(&c, &s, "GET", "/v1/users/false", None, None).await;
    assert_eq!(st, 404);
    let bad = json!({"name": 12});
    let (st, v) = call(&c, &s, "POST", "/v1/users/local/tokens", None, Some(&bad)).await;
    assert_eq!(st, 400, "{v}");
    // A time limit too large for the server's clock is a 400, not a crash.
    let huge = json!({"command": "true", "limits": {"timeout": 1.7e307}});
    let (st, v) = call(&c, &s, "POST", "/v1/jobs", None, Some(&huge)).await;
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("too large"), "{v}");
    let (st, _) = call(&c, &s, "GET", "/v1/health", None, None).await;
    assert_eq!(st, 200);
    // Every object a request body takes says so in the document.
    let (_, doc) = call(&c, &s, "GET", "/openapi.json", None, None).await;
    for name in [
        "JobSubmission",
        "Limits",
        "DataItem",
        "BatchSubmission",
        "NewUser",
        "Quota",
    ] {
        let schema = &doc["components"]["schemas"][name];
        assert_eq!(schema["additionalProperties"], json!(false), "{name}");
    }
}

/// The documented submission names exactly the fields the library's `JobSpec` and `Limits` take
/// (a struct literal of each, so a new field fails to compile here until it is documented).
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_submission_matches_the_spec_and_limits() {
    use jobpack_core::exec::Limits;
    use jobpack_core::{Command, DataSpec, JobSpec};
    let spec = JobSpec {
        name: Some("n".into()),
        git_url: Some("https://example.org/r.git".into()),
        commit_hash: Some("a".repeat(40)),
        data_url: Some("https://example.org/d".into()),
        data: vec![DataSpec {
            url: "https://example.org/d".into(),
            sha256: None,
            path: None,
        }],
        command: Command::Shell("true".into()),
        env: [("A".to_owned(), "b".to_owned())].into(),
        base_image: Some("debian".into()),
        runtime: Some("none".into()),
        install: Some(vec!["make".into()]),
        runtime_fs: Some("python-3.11-bookworm".into()),
    };
    let limits = Limits {
        timeout: Some(std::time::Duration::from_secs(1)),
        memory_bytes: Some(1),
        cpu_percent: Some(1),
        pids: Some(1),
        io_bps: Some(1),
        nofile: Some(1),
        file_size_bytes: Some(1),
        log_bytes: Some(1),
        disk_bytes: Some(1),
        cpu_cores: Some("0".into()),
    };
    let keys = |v: serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    let mut want = keys(serde_json::to_value(&spec).unwrap());
    want.extend(
        [
            "cpuCores",
            "limits",
            "maxCPU",
            "maxIOBPS",
            "maxMemory",
            "network",
            "owner",
            "payload",
            "priority",
            "queue",
            "run",
            "scheduledTime",
            "scheduled_at",
            "secret_env",
            "secret_environment",
            "stdin",
            "callback_url",
            "webhooks",
            "retry",
            "cache",
            "working_dir",
        ]
        .map(String::from),
    );
    want.sort();

    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let (_, doc) = call(
        &reqwest::Client::new(),
        &s,
        "GET",
        "/openapi.json",
        None,
        None,
    )
    .await;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(keys(schemas["JobSubmission"]["properties"].clone()), want);
    assert_eq!(
        keys(schemas["Limits"]["properties"].clone()),
        keys(serde_json::to_value(&limits).unwrap())
    );
    assert_eq!(
        keys(schemas["DataItem"]["properties"].clone()),
        ["path", "sha256", "url"]
    );
}
