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
    let (st, spec) = call(
        &reqwest::Client::new(),
        &s,
        "GET",
        "/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(st, 200);
    insta::assert_snapshot!("openapi", serde_json::to_string_pretty(&spec).unwrap());
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
}
