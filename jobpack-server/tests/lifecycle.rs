//! A job's life when it runs unattended, through a real server: standard input (text and binary
//! uploads, byte for byte, recorded in the manifest), retention and garbage collection.

mod common;

use std::time::{Duration, Instant};

use common::{FINAL, Server, call};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

async fn wait_final(c: &reqwest::Client, s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, v) = call(c, s, "GET", &format!("/v1/jobs/{id}"), None, None).await;
        if FINAL.contains(&v["status"].as_str().unwrap_or("")) {
            return v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn log(c: &reqwest::Client, s: &Server, id: &str) -> Vec<u8> {
    let r = c.get(s.u(&format!("/v1/jobs/{id}/logs"))).send().await;
    r.unwrap().bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn stdin_reaches_the_job_byte_for_byte_and_the_manifest_records_it() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&tmp.path().join("data"), &[]);
    let c = reqwest::Client::new();

    // As text in the JSON submission.
    let text = "first line\nsecond line without a newline";
    let (code, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": ["cat"], "stdin": text})),
    )
    .await;
    assert_eq!(code, 201, "{v}");
    let id = v["job_id"].as_str().unwrap().to_owned();
    assert_eq!(wait_final(&c, &s, &id).await["status"], "completed");
    assert_eq!(log(&c, &s, &id).await, text.as_bytes());
    let (_, m) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/manifest"),
        None,
        None,
    )
    .await;
    assert_eq!(
        m["stdin"]["sha256"],
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    assert_eq!(m["stdin"]["size"], text.len());

    // Binary, as an uploaded part: every byte value, and NULs.
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let digest = hex::encode(Sha256::digest(&bytes));
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "sha256sum; wc -c"}).to_string())
        .part(
            "stdin",
            reqwest::multipart::Part::bytes(bytes.clone()).file_name("input.bin"),
        );
    let r = c
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
    assert_eq!(wait_final(&c, &s, &id).await["status"], "completed");
    // sha256sum reads it all; wc then finds nothing left (one stdin, read once).
    assert_eq!(
        String::from_utf8(log(&c, &s, &id).await).unwrap(),
        format!("{digest}  -\n0\n")
    );
    let (_, m) = call(
        &c,
        &s,
        "GET",
        &format!("/v1/jobs/{id}/manifest"),
        None,
        None,
    )
    .await;
    assert_eq!(m["stdin"]["sha256"], digest);
    // The artifact holds it, and its Dockerfile gives the container the same input.
    let art = c
        .get(s.u(&format!("/v1/jobs/{id}/artifact")))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&art[..]));
    let mut found = (false, String::new(), String::new());
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().display().to_string();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        match path.as_str() {
            "stdin" => found.0 = body == bytes,
            "run.sh" => found.1 = String::from_utf8(body).unwrap(),
            "Dockerfile" => found.2 = String::from_utf8(body).unwrap(),
            _ => {}
        }
    }
    assert!(found.0, "the artifact's stdin differs");
    assert!(found.1.contains("< \"$JOBPACK_ROOT/stdin\""), "{}", found.1);
    assert!(found.2.contains("COPY jobpack.json run.sh stdin /job/"));

    // A job without stdin reads an empty input (never the server's).
    let (_, v) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "wc -c"})),
    )
    .await;
    let id = v["job_id"].as_str().unwrap().to_owned();
    wait_final(&c, &s, &id).await;
    assert_eq!(log(&c, &s, &id).await, b"0\n");

    // Refused: both forms at once, text over 1 MiB, not text.
    let form = reqwest::multipart::Form::new()
        .text("spec", json!({"command": "cat", "stdin": "a"}).to_string())
        .part("stdin", reqwest::multipart::Part::bytes(b"b".to_vec()));
    let r = c
        .post(s.u("/v1/jobs"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for bad in [json!("x".repeat(1024 * 1024 + 1)), json!(42)] {
        let (code, v) = call(
            &c,
            &s,
            "POST",
            "/v1/jobs",
            None,
            Some(&json!({"command": "cat", "stdin": bad})),
        )
        .await;
        assert_eq!(code, 400, "{v}");
    }
}
