//! The multi-user service over real HTTP and real TLS: the real `jobpack serve` binary on
//! 127.0.0.1:0, users and tokens made through its API and its `jobpack admin` command,
//! certificates made here with rcgen. Jobs run in the strict sandbox as root (CI); elsewhere the
//! server runs them with --permissive and says so.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{FINAL, Launch, Pki, Server, call, is_root, jobpack};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// The admin token the test servers start with (`JOBPACK_ADMIN_TOKEN`).
const ADMIN: &str = "jp_test-admin-token-0123456789abcdef";
/// A well-formed token nobody has.
const UNKNOWN: &str = "jp_0000000000000000000000000000000000000000000000000000000000000000";

fn token_server(data: &Path, extra: &[&str]) -> Server {
    Server::launch(
        data,
        Launch {
            args: extra,
            env: &[("JOBPACK_ADMIN_TOKEN", ADMIN)],
            capture_stderr: false,
        },
    )
}

async fn api(s: &Server, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (st, v) = call(
        &reqwest::Client::new(),
        s,
        method,
        path,
        Some(token),
        body.as_ref(),
    )
    .await;
    assert!((200..300).contains(&st), "{method} {path}: {st} {v}");
    v
}

/// Adds a user through the API and returns a new token of theirs.
async fn add_user(s: &Server, name: &str, role: &str, quota: Value) -> String {
    let u = api(
        s,
        "POST",
        "/v1/users",
        ADMIN,
        Some(json!({"name": name, "role": role, "quota": quota})),
    )
    .await;
    assert_eq!(u["role"], role);
    let t = api(
        s,
        "POST",
        &format!("/v1/users/{name}/tokens"),
        ADMIN,
        Some(json!({"name": "test"})),
    )
    .await;
    assert_eq!(t["user"], name);
    t["token"].as_str().unwrap().to_owned()
}

async fn submit(s: &Server, token: &str, body: Value) -> String {
    let v = api(s, "POST", "/v1/jobs", token, Some(body)).await;
    v["job_id"].as_str().unwrap().to_owned()
}

async fn wait_for(s: &Server, token: &str, id: &str, want: &[&str]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let v = api(s, "GET", &format!("/v1/jobs/{id}"), token, None).await;
        let st = v["status"].as_str().unwrap_or("").to_owned();
        if want.contains(&st.as_str()) {
            return v;
        }
        assert!(
            !FINAL.contains(&st.as_str()),
            "job {id} ended as {st}, not {want:?}: {v}"
        );
        assert!(Instant::now() < deadline, "job {id} stuck in {st}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_checks_the_role_and_the_owner() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[]);
    let alice = add_user(&s, "alice", "submitter", json!({})).await;
    let vera = add_user(&s, "vera", "viewer", json!({})).await;
    // A belongs to alice (a submitter); V to vera (a viewer, so an admin submits it for her).
    let a = submit(
        &s,
        &alice,
        json!({"command": "echo a > out.txt; echo log-a"}),
    )
    .await;
    let v = submit(
        &s,
        ADMIN,
        json!({"command": "echo v > out.txt; echo log-v", "owner": "vera"}),
    )
    .await;
    assert_eq!(
        wait_for(&s, ADMIN, &a, &["completed"]).await["owner"],
        "alice"
    );
    assert_eq!(
        wait_for(&s, ADMIN, &v, &["completed"]).await["owner"],
        "vera"
    );

    let callers: [(&str, Option<&str>); 5] = [
        ("anonymous", None),
        ("unknown token", Some(UNKNOWN)),
        ("admin", Some(ADMIN)),
        ("submitter", Some(&alice)),
        ("viewer", Some(&vera)),
    ];
    // Each row: method, path, body, the status for each caller above (in that order).
    let mut rows: Vec<(&str, String, Option<Value>, [u16; 5])> = vec![
        ("GET", "/v1/health".into(), None, [200, 200, 200, 200, 200]),
        (
            "GET",
            "/openapi.json".into(),
            None,
            [200, 200, 200, 200, 200],
        ),
        ("GET", "/v1/me".into(), None, [401, 401, 200, 200, 200]),
        ("GET", "/v1/jobs".into(), None, [401, 401, 200, 200, 200]),
        (
            "POST",
            "/v1/jobs".into(),
            Some(json!({"command": "true", "run": false})),
            [401, 401, 201, 201, 403],
        ),
        (
            "POST",
            "/v1/jobs".into(),
            Some(json!({"command": "true", "run": false, "owner": "vera"})),
            [401, 401, 201, 403, 403],
        ),
    ];
    // Reading a job: admins and viewers see both (viewers read everything, as seeds 003 and
    // 004 have it); a submitter sees their own, and another's is 404.
    for (job, own_a) in [(&a, 200), (&v, 404)] {
        for p in [
            "",
            "/status",
            "/logs",
            "/logs/stream",
            "/artifact",
            "/tarball",
            "/files/code%2Fout.txt",
            "/files/code/out.txt",
        ] {
            rows.push((
                "GET",
                format!("/v1/jobs/{job}{p}"),
                None,
                [401, 401, 200, own_a, 200],
            ));
        }
        rows.push((
            "POST",
            format!("/v1/jobs/{job}/tarball"),
            None,
            [401, 401, 200, own_a, 200],
        ));
        // Cancelling an ended job is 409 for whoever may cancel it; viewers may not cancel.
        let cancel_a = if own_a == 200 { 409 } else { 404 };
        rows.push((
            "POST",
            format!("/v1/jobs/{job}/cancel"),
            None,
            [401, 401, 409, cancel_a, 403],
        ));
    }
    rows.extend([
        ("GET", "/v1/stats".into(), None, [401, 401, 200, 200, 200]),
        (
            "GET",
            "/v1/stats?user=alice".into(),
            None,
            [401, 401, 200, 200, 403],
        ),
        (
            "GET",
            "/v1/stats?user=vera".into(),
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            "GET",
            "/v1/stats/users".into(),
            None,
            [401, 401, 200, 403, 403],
        ),
        ("GET", "/v1/users".into(), None, [401, 401, 200, 403, 403]),
        (
            "POST",
            "/v1/users".into(),
            Some(json!({"name": "carol", "role": "viewer"})),
            [401, 401, 201, 403, 403],
        ),
        (
            "GET",
            "/v1/users/carol".into(),
            None,
            [401, 401, 200, 403, 403],
        ),
        (
            "PUT",
            "/v1/users/carol/quota".into(),
            Some(json!({"max_concurrent": 3})),
            [401, 401, 200, 403, 403],
        ),
        (
            "POST",
            "/v1/users/carol/tokens".into(),
            Some(json!({"name": "t"})),
            [401, 401, 201, 403, 403],
        ),
        ("GET", "/v1/tokens".into(), None, [401, 401, 200, 403, 403]),
        (
            "POST",
            "/v1/users/carol/disable".into(),
            None,
            [401, 401, 200, 403, 403],
        ),
        (
            "POST",
            "/v1/users/carol/enable".into(),
            None,
            [401, 401, 200, 403, 403],
        ),
        (
            "DELETE",
            "/v1/tokens/no-such-token".into(),
            None,
            [401, 401, 404, 403, 403],
        ),
        ("GET", "/v1/audit".into(), None, [401, 401, 200, 403, 403]),
        ("GET", "/metrics".into(), None, [401, 401, 200, 403, 403]),
    ]);

    let c = reqwest::Client::new();
    let mut wrong = Vec::new();
    let mut cells = 0;
    for (method, path, body, want) in &rows {
        for ((who, token), want) in callers.iter().zip(want) {
            let (got, resp) = call(&c, &s, method, path, *token, body.as_ref()).await;
            cells += 1;
            if got != *want {
                wrong.push(format!(
                    "{who:>13} {method} {path}: {got} (want {want}) {resp}"
                ));
            }
            // Every refusal is a JSON problem naming its reason.
            let code = match got {
                401 => Some("unauthorized"),
                403 => Some("forbidden"),
                404 => Some("not_found"),
                _ => None,
            };
            if let Some(code) = code
                && resp["code"] != code
            {
                wrong.push(format!("{who:>13} {method} {path}: body {resp}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    println!("{cells} role x endpoint cells checked");

    // Another user's job answers exactly like a job that does not exist.
    let (_, other) = call(&c, &s, "GET", &format!("/v1/jobs/{v}"), Some(&alice), None).await;
    let (_, missing) = call(&c, &s, "GET", "/v1/jobs/nope", Some(&alice), None).await;
    assert_eq!(
        other["message"].as_str().unwrap().replace(&v, "ID"),
        missing["message"].as_str().unwrap().replace("nope", "ID")
    );

    // Delete: viewers may not; a submitter may delete only their own; admins anyone's.
    for (who, token, job, want) in [
        ("anonymous", None, &a, 401),
        ("viewer", Some(vera.as_str()), &v, 403),
        ("submitter", Some(alice.as_str()), &v, 404),
        ("submitter", Some(alice.as_str()), &a, 204),
        ("admin", Some(ADMIN), &v, 204),
    ] {
        let (got, resp) = call(&c, &s, "DELETE", &format!("/v1/jobs/{job}"), token, None).await;
        assert_eq!(got, want, "{who} DELETE {job}: {resp}");
    }
    for job in [&a, &v] {
        let (got, _) = call(&c, &s, "GET", &format!("/v1/jobs/{job}"), Some(ADMIN), None).await;
        assert_eq!(got, 404);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_never_reach_each_others_jobs() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[]);
    let alice = add_user(&s, "alice", "submitter", json!({})).await;
    let bob = add_user(&s, "bob", "submitter", json!({})).await;
    let job = submit(
        &s,
        &alice,
        json!({"name": "long", "command": "echo started > out.txt; echo started; sleep 60",
               "limits": {"timeout": 120}}),
    )
    .await;
    let mine = submit(&s, &bob, json!({"command": "echo bob"})).await;
    wait_for(&s, &alice, &job, &["running"]).await;
    let c = reqwest::Client::new();

    // Bob cannot read, follow, download, cancel or delete it: all 404, as if it did not exist.
    for (method, p) in [
        ("GET", ""),
        ("GET", "/status"),
        ("GET", "/logs"),
        ("GET", "/logs/stream"),
        ("GET", "/artifact"),
        ("GET", "/tarball"),
        ("POST", "/tarball"),
        ("GET", "/files/code/out.txt"),
        ("POST", "/cancel"),
        ("DELETE", ""),
    ] {
        let (st, v) = call(
            &c,
            &s,
            method,
            &format!("/v1/jobs/{job}{p}"),
            Some(&bob),
            None,
        )
        .await;
        assert_eq!(st, 404, "bob {method} {p}: {v}");
    }
    // ... and it is still running, untouched.
    let v = api(&s, "GET", &format!("/v1/jobs/{job}"), &alice, None).await;
    assert_eq!(v["status"], "running");

    // Listings: each sees their own only, whatever the filter asks for; admins see all.
    let l = api(&s, "GET", "/v1/jobs", &bob, None).await;
    assert_eq!(l["total"], 1, "{l}");
    assert_eq!(l["jobs"][0]["job_id"], mine.as_str());
    let l = api(&s, "GET", "/v1/jobs?owner=alice", &bob, None).await;
    assert_eq!(l["total"], 1, "{l}");
    assert_eq!(l["jobs"][0]["owner"], "bob");
    let l = api(&s, "GET", "/v1/jobs?owner=alice", ADMIN, None).await;
    assert_eq!(l["total"], 1, "{l}");
    assert_eq!(l["jobs"][0]["job_id"], job.as_str());
    let l = api(&s, "GET", "/v1/jobs", ADMIN, None).await;
    assert_eq!(l["total"], 2, "{l}");

    // Alice follows her job live, then cancels it.
    let resp = c
        .get(s.u(&format!("/v1/jobs/{job}/logs/stream")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(30), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("started"),
        "{first:?}"
    );
    drop(body);
    let (st, _) = call(
        &c,
        &s,
        "POST",
        &format!("/v1/jobs/{job}/cancel"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, 202);
    wait_for(&s, &alice, &job, &["stopped"]).await;
    wait_for(&s, &bob, &mine, &["completed"]).await;
    let (st, _) = call(
        &c,
        &s,
        "DELETE",
        &format!("/v1/jobs/{job}"),
        Some(&alice),
        None,
    )
    .await;
    assert_eq!(st, 204);

    // The audit log says who did what, and nothing of bob's refused attempts.
    let log = api(&s, "GET", "/v1/audit", ADMIN, None).await;
    let entries: Vec<(String, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("alice", "job.submit", job.as_str()),
        ("bob", "job.submit", mine.as_str()),
        ("alice", "job.cancel", job.as_str()),
        ("alice", "job.delete", job.as_str()),
        ("admin", "user.add", "alice"),
    ] {
        assert!(
            entries
                .iter()
                .any(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()) == want),
            "{want:?} not in {entries:?}"
        );
    }
    assert!(
        !entries
            .iter()
            .any(|(a, b, _)| a == "bob" && b != "job.submit"),
        "{entries:?}"
    );
    let only_job = api(&s, "GET", &format!("/v1/audit?target={job}"), ADMIN, None).await;
    assert_eq!(only_job.as_array().unwrap().len(), 3, "{only_job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_tokens_and_disabled_users_are_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = token_server(&data, &[]);
    let c = reqwest::Client::new();
    let t1 = add_user(&s, "tim", "submitter", json!({})).await;
    let me = api(&s, "GET", "/v1/me", &t1, None).await;
    assert_eq!(
        me,
        json!({"user": "tim", "role": "submitter", "auth": "token", "quota": {}})
    );

    // Revoked over the API.
    let tokens = api(&s, "GET", "/v1/tokens?user=tim", ADMIN, None).await;
    let id = tokens[0]["token_id"].as_str().unwrap().to_owned();
    assert!(tokens[0]["last_used_at"].is_string(), "{tokens}");
    assert!(tokens[0].get("token").is_none() && tokens[0].get("hash").is_none());
    let (st, _) = call(
        &c,
        &s,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, v) = call(&c, &s, "GET", "/v1/me", Some(&t1), None).await;
    assert_eq!(st, 401, "{v}");

    // Made and revoked with `jobpack admin` on the database of the running server.
    let d = data.to_str().unwrap();
    let (code, out, err) = jobpack(&["admin", "--data-dir", d, "token", "create", "tim", "--json"]);
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let t2 = created["token"].as_str().unwrap().to_owned();
    let id2 = created["token_id"].as_str().unwrap().to_owned();
    assert_eq!(api(&s, "GET", "/v1/me", &t2, None).await["user"], "tim");
    let (code, out, err) = jobpack(&["admin", "--data-dir", d, "token", "revoke", &id2[..8]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id2), "{out}");
    let (st, _) = call(&c, &s, "GET", "/v1/me", Some(&t2), None).await;
    assert_eq!(st, 401);

    // Disabling a user stops all their tokens; enabling brings them back.
    let t3 = api(&s, "POST", "/v1/users/tim/tokens", ADMIN, Some(json!({}))).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, err) = jobpack(&["admin", "--data-dir", d, "user", "disable", "tim"]);
    assert_eq!(code, 0, "{err}");
    let (st, v) = call(&c, &s, "GET", "/v1/me", Some(&t3), None).await;
    assert_eq!(st, 401);
    assert!(v["message"].as_str().unwrap().contains("disabled"), "{v}");
    let (code, _, _) = jobpack(&["admin", "--data-dir", d, "user", "enable", "tim"]);
    assert_eq!(code, 0);
    assert_eq!(api(&s, "GET", "/v1/me", &t3, None).await["user"], "tim");

    // Bad input to `jobpack admin` is exit code 2 with a reason.
    let (code, _, err) = jobpack(&[
        "admin",
        "--data-dir",
        d,
        "user",
        "add",
        "x y",
        "--role",
        "viewer",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid user name"), "{err}");
    let (code, _, err) = jobpack(&[
        "admin",
        "--data-dir",
        d,
        "user",
        "add",
        "tim",
        "--role",
        "viewer",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, _, err) = jobpack(&[
        "admin",
        "--data-dir",
        d,
        "user",
        "add",
        "z",
        "--role",
        "root",
    ]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = jobpack(&["admin", "--data-dir", d, "user", "list", "--json"]);
    assert_eq!(code, 0);
    let users: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "tim"]);
    let (code, out, _) = jobpack(&["admin", "--data-dir", d, "audit", "--target", "tim"]);
    assert_eq!(code, 0);
    for action in ["user.add", "user.disable", "user.enable"] {
        assert!(out.contains(action), "{out}");
    }

    // Tokens are stored hashed: no token is anywhere in the database files.
    drop(s);
    let mut db = Vec::new();
    for f in ["jobpack.db", "jobpack.db-wal"] {
        if let Ok(b) = std::fs::read(data.join(f)) {
            db.extend(b);
        }
    }
    assert!(!db.is_empty());
    for t in [ADMIN, &t1, &t2, &t3] {
        assert!(
            !db.windows(t.len()).any(|w| w == t.as_bytes()),
            "token found in the database"
        );
    }
}

/// Reads a child's stderr on a thread, line by line.
fn lines_of(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_start_prints_an_admin_token_once_and_auth_none_stays_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let launch = || {
        Server::launch(
            &data,
            Launch {
                capture_stderr: true,
                ..Launch::default()
            },
        )
    };
    let mut s = launch();
    let rx = lines_of(s.stderr.take().unwrap());
    let token = loop {
        let line = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        if line.starts_with("jp_") {
            break line;
        }
    };
    let me = api(&s, "GET", "/v1/me", &token, None).await;
    assert_eq!(me["user"], "admin");
    assert_eq!(me["role"], "admin");
    s.kill();
    // The second start prints no token; the first one still works.
    let mut s = launch();
    let rx = lines_of(s.stderr.take().unwrap());
    assert_eq!(
        api(&s, "GET", "/v1/me", &token, None).await["user"],
        "admin"
    );
    s.kill();
    let printed: Vec<String> = rx.try_iter().collect();
    assert!(!printed.iter().any(|l| l.contains("jp_")), "{printed:?}");

    // --auth none: only on loopback unless forced.
    let d = data.to_str().unwrap();
    let (code, _, err) = jobpack(&[
        "serve",
        "--auth",
        "none",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        d,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("--insecure-public"), "{err}");
    let s = Server::start(&data, &[]);
    let me = api(&s, "GET", "/v1/me", "anything", None).await;
    assert_eq!(me["user"], "local");
    let (st, me) = call(&reqwest::Client::new(), &s, "GET", "/v1/me", None, None).await;
    assert_eq!((st, me["auth"].as_str()), (200, Some("none")));
}

fn tls_client(ca_pem: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()]);
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pkcs8_pem(cert.as_bytes(), key.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_takes_the_role_from_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new("jobpack test CA");
    let stranger = Pki::new("some other CA");
    let (cert, key) = pki.leaf(&["127.0.0.1", "localhost"], "jobpack server", &[], true);
    let dir = tmp.path();
    std::fs::write(dir.join("server.pem"), &cert).unwrap();
    std::fs::write(dir.join("server.key"), &key).unwrap();
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert_f, key_f, ca_f) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let tls_args = [
        "--tls-cert",
        cert_f.as_str(),
        "--tls-key",
        key_f.as_str(),
        "--tls-client-ca",
        ca_f.as_str(),
    ];
    let s = token_server(&dir.join("data"), &tls_args);
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);

    let admin_id = pki.leaf(&[], "ops", &["admin"], false);
    let viewer_id = pki.leaf(&[], "vera", &["viewer"], false);
    let submitter_id = pki.leaf(&[], "sam", &["submitter"], false);
    let no_role_id = pki.leaf(&[], "nobody", &["sales"], false);
    let foreign_id = stranger.leaf(&[], "mallory", &["admin"], false);
    let admin = tls_client(&pki.ca_pem, Some(&admin_id));
    let viewer = tls_client(&pki.ca_pem, Some(&viewer_id));
    let submitter = tls_client(&pki.ca_pem, Some(&submitter_id));
    let no_role = tls_client(&pki.ca_pem, Some(&no_role_id));
    let anonymous = tls_client(&pki.ca_pem, None);

    let (st, me) = call(&admin, &s, "GET", "/v1/me", None, None).await;
    assert_eq!(
        (st, &me),
        (
            200,
            &json!({"user": "ops", "role": "admin", "auth": "certificate", "quota": {}})
        )
    );
    let (st, me) = call(&viewer, &s, "GET", "/v1/me", None, None).await;
    assert_eq!(
        (st, me["user"].as_str(), me["role"].as_str()),
        (200, Some("vera"), Some("viewer"))
    );

    // The certificate's role decides: a viewer may read but not submit; submitters own what they
    // submit; the admin sees everything.
    let job = json!({"command": "echo over tls", "run": false});
    let (st, v) = call(&viewer, &s, "POST", "/v1/jobs", None, Some(&job)).await;
    assert_eq!(st, 403, "{v}");
    let (st, v) = call(&submitter, &s, "POST", "/v1/jobs", None, Some(&job)).await;
    assert_eq!(st, 201, "{v}");
    let sams = v["job_id"].as_str().unwrap().to_owned();
    let (st, v) = call(
        &admin,
        &s,
        "POST",
        "/v1/jobs",
        None,
        Some(&json!({"command": "true", "run": false, "owner": "vera"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    let veras = v["job_id"].as_str().unwrap().to_owned();
    // A viewer reads everyone's jobs (and may act on none).
    let (_, l) = call(&viewer, &s, "GET", "/v1/jobs", None, None).await;
    assert_eq!(l["total"], 2, "{l}");
    let (st, _) = call(&viewer, &s, "GET", &format!("/v1/jobs/{sams}"), None, None).await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &viewer,
        &s,
        "POST",
        &format!("/v1/jobs/{veras}/cancel"),
        None,
        None,
    )
    .await;
    assert_eq!(st, 403);
    let (_, l) = call(&admin, &s, "GET", "/v1/jobs", None, None).await;
    assert_eq!(l["total"], 2, "{l}");
    let (st, _) = call(&admin, &s, "GET", "/v1/users", None, None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&viewer, &s, "GET", "/v1/users", None, None).await;
    assert_eq!(st, 403);

    // A certificate whose OU is no role is refused; so is a caller with neither certificate nor
    // token; a token works over TLS without a certificate.
    let (st, v) = call(&no_role, &s, "GET", "/v1/me", None, None).await;
    assert_eq!(st, 401, "{v}");
    let (st, _) = call(&anonymous, &s, "GET", "/v1/me", None, None).await;
    assert_eq!(st, 401);
    let (st, me) = call(&anonymous, &s, "GET", "/v1/me", Some(ADMIN), None).await;
    assert_eq!((st, me["auth"].as_str()), (200, Some("token")));

    // A certificate from another CA: the handshake is refused, no HTTP answer at all.
    let foreign = tls_client(&pki.ca_pem, Some(&foreign_id));
    let r = foreign.get(s.u("/v1/health")).send().await;
    assert!(r.is_err(), "a foreign certificate got an answer: {r:?}");
    // Plain HTTP to the TLS port gets nothing either.
    let plain = s.url.replacen("https://", "http://", 1);
    let r = reqwest::Client::new()
        .get(format!("{plain}/v1/health"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(r.as_ref().map_or(true, |r| r.status() != 200), "{r:?}");
    // Disabling the user a certificate names refuses the certificate.
    let sam = json!({"name": "sam", "role": "submitter"});
    let (st, _) = call(&anonymous, &s, "POST", "/v1/users", Some(ADMIN), Some(&sam)).await;
    assert_eq!(st, 201);
    let (st, _) = call(
        &anonymous,
        &s,
        "POST",
        "/v1/users/sam/disable",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(&submitter, &s, "GET", "/v1/me", None, None).await;
    assert_eq!(st, 401);
    drop(s);

    // With --tls-require-client-cert, a connection without a certificate is refused too.
    let mut args = tls_args.to_vec();
    args.push("--tls-require-client-cert");
    let s = token_server(&dir.join("data"), &args);
    assert!(anonymous.get(s.u("/v1/health")).send().await.is_err());
    let (st, _) = call(&admin, &s, "GET", "/v1/health", None, None).await;
    assert_eq!(st, 200);
}

/// Every file of a .tar.gz, concatenated (to search for a value).
fn tar_gz_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut all = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        all.extend(e.path().unwrap().display().to_string().into_bytes());
        e.read_to_end(&mut all).unwrap();
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_appear_in_responses_logs_artifacts_or_manifests() {
    const SECRET: &str = "s3cr3t-VALUE-42";
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = token_server(&data, &["--max-concurrent", "1"]);
    let alice = add_user(&s, "alice", "submitter", json!({})).await;
    // A job that proves it got the value without printing it, then prints it (masked).
    let body = json!({
        "name": "secretive",
        "command": "case \"$API_KEY\" in s3cr3t-*-42) echo value-ok;; esac; \
                    echo \"key=$API_KEY\"; printf '%s' \"$API_KEY\" | wc -c",
        "env": {"PLAIN": "visible"},
        "secret_env": {"API_KEY": SECRET},
    });
    let id = submit(&s, &alice, body.clone()).await;
    let v = wait_for(&s, &alice, &id, &["completed"]).await;
    let c = reqwest::Client::new();
    let mut seen = String::new();
    assert_eq!(v["request"]["secret_env"], json!({"API_KEY": "***"}), "{v}");
    let log = api(&s, "GET", &format!("/v1/jobs/{id}/logs"), &alice, None).await;
    let log = log.as_str().unwrap().to_owned();
    assert_eq!(log, "value-ok\nkey=***\n15\n");
    for p in ["", "/status", "/logs", "/logs/stream"] {
        let (_, v) = call(
            &c,
            &s,
            "GET",
            &format!("/v1/jobs/{id}{p}"),
            Some(&alice),
            None,
        )
        .await;
        seen.push_str(&v.to_string());
    }
    for p in ["/v1/jobs", "/v1/audit", "/v1/stats"] {
        let (_, v) = call(&c, &s, "GET", p, Some(ADMIN), None).await;
        seen.push_str(&v.to_string());
    }
    assert!(!seen.contains(SECRET), "{seen}");
    // The artifact (with its manifest and run.sh) and the working directory after the run.
    for p in ["/artifact", "/tarball"] {
        let r = c
            .get(s.u(&format!("/v1/jobs/{id}{p}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let files = tar_gz_bytes(&r.bytes().await.unwrap());
        assert!(
            String::from_utf8_lossy(&files).contains("visible"),
            "{p}: the plain env should be there"
        );
        assert!(
            !files.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{p}"
        );
    }
    // On disk: the job's log, artifact and manifest.
    let job_dir = data.join("jobs").join(&id);
    let log_file = std::fs::read(job_dir.join("job.log")).unwrap();
    let art = tar_gz_bytes(&std::fs::read(job_dir.join("artifact.tar.gz")).unwrap());
    let manifest = std::fs::read(job_dir.join("work/jobpack.json")).unwrap();
    for (what, b) in [
        ("log", &log_file),
        ("artifact", &art),
        ("manifest", &manifest),
    ] {
        assert!(
            !b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{what}"
        );
    }

    // A queued job keeps its secret across a restart (nothing is lost), and the value is
    // forgotten once the job has ended.
    let blocker = submit(&s, &alice, json!({"command": "sleep 30"})).await;
    wait_for(&s, &alice, &blocker, &["running"]).await;
    let queued = submit(&s, &alice, body).await;
    let s = {
        s.kill();
        token_server(&data, &["--max-concurrent", "2"])
    };
    wait_for(&s, &alice, &queued, &["completed"]).await;
    let log = api(&s, "GET", &format!("/v1/jobs/{queued}/logs"), &alice, None).await;
    assert_eq!(log.as_str().unwrap(), "value-ok\nkey=***\n15\n");
    // A pack-only job (it ends at `packed`) needs no secret: none is in the database's files,
    // the WAL included, while the server runs on.
    let packed = submit(
        &s,
        &alice,
        json!({"command": "true", "run": false, "secret_env": {"API_KEY": SECRET}}),
    )
    .await;
    wait_for(&s, &alice, &packed, &["packed"]).await;
    for f in ["jobpack.db", "jobpack.db-wal"] {
        let b = std::fs::read(data.join(f)).unwrap_or_default();
        assert!(
            !b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "{f} still holds the secret of a job that has ended"
        );
    }
    drop(s);
    let db = rusqlite_count_secrets(&data);
    assert_eq!(db, 0, "secrets of ended jobs are deleted");
}

/// Rows left in the job_secrets table.
fn rusqlite_count_secrets(data: &Path) -> i64 {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             print(c.execute('SELECT COUNT(*) FROM job_secrets').fetchone()[0])",
        )
        .arg(data.join("jobpack.db"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_refuse_what_is_over_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let s = token_server(&tmp.path().join("data"), &[]);
    let q = add_user(
        &s,
        "quinn",
        "submitter",
        json!({"max_concurrent": 1, "max_memory_bytes": 268435456u64, "max_timeout_secs": 60.0,
               "max_cpu_percent": 100, "max_pids": 64}),
    )
    .await;
    let c = reqwest::Client::new();
    for (limits, field) in [
        (json!({"memory_bytes": 536870912u64}), "memory_bytes"),
        (json!({"timeout": 120}), "timeout"),
        (json!({"cpu_percent": 200}), "cpu_percent"),
        (json!({"pids": 1000}), "pids"),
    ] {
        let body = json!({"command": "true", "limits": limits});
        let (st, v) = call(&c, &s, "POST", "/v1/jobs", Some(&q), Some(&body)).await;
        assert_eq!(st, 422, "{v}");
        assert_eq!(v["code"], "over_quota");
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    // Nothing asked: the caps apply (and are shown), and the server's defaults fill the limits
    // the quota does not cap; within the caps: accepted.
    let burn = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo burnt; sleep 20";
    let id = submit(&s, &q, json!({"command": burn})).await;
    let v = api(&s, "GET", &format!("/v1/jobs/{id}"), &q, None).await;
    assert_eq!(
        v["request"]["limits"],
        json!({"timeout": 60.0, "memory_bytes": 268435456u64, "cpu_percent": 100, "pids": 64,
               "nofile": 4096, "file_size_bytes": 4294967296u64, "log_bytes": 268435456u64,
               "disk_bytes": 8589934592u64})
    );
    // One unfinished job is the most quinn may have: the next waits for it (429).
    let small = json!({"command": "true", "limits": {"memory_bytes": 134217728u64}});
    let (st, v) = call(&c, &s, "POST", "/v1/jobs", Some(&q), Some(&small)).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(v["code"], "quota_exceeded");
    // Others are not affected.
    let other = submit(&s, ADMIN, json!({"command": "true", "run": false})).await;
    wait_for(&s, ADMIN, &other, &["packed"]).await;
    // Once it ends, quinn may submit again.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !api(&s, "GET", &format!("/v1/jobs/{id}/logs"), &q, None)
        .await
        .as_str()
        .unwrap()
        .contains("burnt")
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, _) = call(
        &c,
        &s,
        "POST",
        &format!("/v1/jobs/{id}/cancel"),
        Some(&q),
        None,
    )
    .await;
    assert_eq!(st, 202);
    wait_for(&s, &q, &id, &["stopped"]).await;
    let second = submit(&s, &q, small).await;
    wait_for(&s, &q, &second, &["completed"]).await;

    // Per-user stats: counts by status and the CPU time used.
    let st = api(&s, "GET", "/v1/stats", &q, None).await;
    assert_eq!(st["user"], "quinn");
    assert_eq!(st["jobs"], json!({"completed": 1, "stopped": 1}));
    assert_eq!(
        (st["total"].as_u64(), st["active"].as_u64()),
        (Some(2), Some(0))
    );
    if is_root() {
        assert!(st["cpu_seconds"].as_f64().unwrap() > 0.05, "{st}");
    } else {
        println!(
            "note: not root, no cgroup measures CPU time: cpu_seconds is {}",
            st["cpu_seconds"]
        );
    }
    let all = api(&s, "GET", "/v1/stats/users", ADMIN, None).await;
    let users: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["admin", "quinn"]);
    // A quota changed by an admin applies to the next submission.
    api(
        &s,
        "PUT",
        "/v1/users/quinn/quota",
        ADMIN,
        Some(json!({"max_memory_bytes": 1048576})),
    )
    .await;
    let (st, _) = call(
        &c,
        &s,
        "POST",
        "/v1/jobs",
        Some(&q),
        Some(&json!({"command": "true", "limits": {"memory_bytes": 134217728u64}})),
    )
    .await;
    assert_eq!(st, 422);
}
